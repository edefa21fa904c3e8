-- geosip p_usrloc cluster tables. Generated from geosip-p-usrloc's cluster module; keep identical.
-- location_cluster: one row per location database (Kamailio p_usrloc's locdb).
--   id: group id (spares: 0); no: number of the database in its group;
--   status: 1 on, 0 off (the watcher brings it back), 2 maintenance (drained, left alone);
--   errors: errors counted by all nodes; failover: unix seconds of the last failover or
--   return (written but not read until failover + expire_window_s); spare: 1 = spare;
--   rg: risk group (databases that fail together).
-- location_layout: the sets of groups users were placed over, newest = highest version;
--   group_ids: comma-separated; created: unix seconds; finished: migration done (0 = no).

CREATE TABLE IF NOT EXISTS location_cluster (
    id BIGINT NOT NULL,
    no BIGINT NOT NULL,
    url VARCHAR(512) NOT NULL,
    status BIGINT NOT NULL DEFAULT 1,
    errors BIGINT NOT NULL DEFAULT 0,
    failover BIGINT NOT NULL DEFAULT 0,
    spare BIGINT NOT NULL DEFAULT 0,
    rg BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (id, no)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS location_layout (
    version BIGINT NOT NULL PRIMARY KEY,
    group_ids VARCHAR(1024) NOT NULL,
    created BIGINT NOT NULL,
    finished BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB;
