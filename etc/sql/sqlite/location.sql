-- geosip location table (usrloc). Generated from geosip-store's location::schema; keep identical.
-- bkey: binding identity inside the AOR, 'c:<contact>' or 'i:<+sip.instance>;<reg-id>'.
-- expires: unix seconds; last_modified: unix milliseconds; q: per mille.

CREATE TABLE IF NOT EXISTS location (
    aor BLOB NOT NULL,
    bkey BLOB NOT NULL,
    ruid TEXT NOT NULL,
    contact BLOB NOT NULL,
    expires INTEGER NOT NULL,
    q INTEGER NOT NULL DEFAULT 1000,
    callid BLOB NOT NULL,
    cseq INTEGER NOT NULL,
    received TEXT NOT NULL DEFAULT '',
    socket TEXT NOT NULL DEFAULT '',
    path BLOB NOT NULL,
    user_agent BLOB NOT NULL,
    instance BLOB NOT NULL,
    reg_id INTEGER NOT NULL DEFAULT 0,
    flags INTEGER NOT NULL DEFAULT 0,
    last_modified INTEGER NOT NULL,
    server_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aor, bkey)
);

CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires);
