-- geosip subscriber table (auth_db). Generated from geosip-store's subscriber::schema; keep identical.
-- ha1_*: lowercase hex of H(username:domain:password) per digest algorithm (RFC 7616);
-- password: plaintext, NULL unless [auth] store_plaintext = true.
-- enabled: a disabled subscriber cannot authenticate. attrs: JSON object of string values.
-- created, updated: unix seconds.

CREATE TABLE IF NOT EXISTS subscriber (
    username TEXT NOT NULL,
    domain TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL DEFAULT '',
    ha1_sha256 TEXT NOT NULL DEFAULT '',
    ha1_sha512_256 TEXT NOT NULL DEFAULT '',
    password TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    attrs TEXT NOT NULL DEFAULT '{}',
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (username, domain)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS subscriber_domain_idx ON subscriber (domain, username);
