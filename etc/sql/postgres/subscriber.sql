-- geosip subscriber table (auth_db). Generated from geosip-store's subscriber::schema; keep identical.
-- ha1_*: lowercase hex of H(username:domain:password) per digest algorithm (RFC 7616);
-- password: plaintext, NULL unless [auth] store_plaintext = true.
-- enabled: a disabled subscriber cannot authenticate. attrs: JSON object of string values.
-- created, updated: unix seconds.

CREATE TABLE IF NOT EXISTS subscriber (
    username VARCHAR(64) NOT NULL,
    domain VARCHAR(253) NOT NULL,
    ha1_md5 VARCHAR(32) NOT NULL DEFAULT '',
    ha1_sha256 VARCHAR(64) NOT NULL DEFAULT '',
    ha1_sha512_256 VARCHAR(64) NOT NULL DEFAULT '',
    password VARCHAR(128),
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    attrs TEXT NOT NULL DEFAULT '{}',
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (username, domain)
);

CREATE INDEX IF NOT EXISTS subscriber_domain_idx ON subscriber (domain, username);
