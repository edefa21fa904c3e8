-- geosip location table (usrloc). Generated from geosip-store's location::schema; keep identical.
-- bkey: binding identity inside the AOR, 'c:<contact>' or 'i:<+sip.instance>;<reg-id>'.
-- expires: unix seconds; last_modified: unix milliseconds; q: per mille.

CREATE TABLE IF NOT EXISTS location (
    aor TEXT NOT NULL,
    bkey TEXT NOT NULL,
    ruid VARCHAR(32) NOT NULL,
    contact TEXT NOT NULL,
    expires BIGINT NOT NULL,
    q BIGINT NOT NULL DEFAULT 1000,
    callid TEXT NOT NULL,
    cseq BIGINT NOT NULL,
    received VARCHAR(64) NOT NULL DEFAULT '',
    socket VARCHAR(64) NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL,
    instance TEXT NOT NULL,
    reg_id BIGINT NOT NULL DEFAULT 0,
    flags BIGINT NOT NULL DEFAULT 0,
    last_modified BIGINT NOT NULL,
    server_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, bkey)
);

CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires);
