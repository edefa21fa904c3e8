-- geosip location table (usrloc). Generated from geosip-store's location::schema; keep identical.
-- bkey: binding identity inside the AOR, 'c:<contact>' or 'i:<+sip.instance>;<reg-id>'.
-- expires: unix seconds; last_modified: unix milliseconds; q: per mille.

CREATE TABLE IF NOT EXISTS location (
    aor VARBINARY(255) NOT NULL,
    bkey VARBINARY(1100) NOT NULL,
    ruid VARCHAR(32) CHARACTER SET ascii NOT NULL,
    contact VARBINARY(1024) NOT NULL,
    expires BIGINT NOT NULL,
    q BIGINT NOT NULL DEFAULT 1000,
    callid VARBINARY(255) NOT NULL,
    cseq BIGINT NOT NULL,
    received VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    socket VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    path BLOB NOT NULL,
    user_agent VARBINARY(255) NOT NULL,
    instance VARBINARY(255) NOT NULL,
    reg_id BIGINT NOT NULL DEFAULT 0,
    flags BIGINT NOT NULL DEFAULT 0,
    last_modified BIGINT NOT NULL,
    server_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, bkey),
    KEY location_expires_idx (expires)
) ENGINE=InnoDB;
