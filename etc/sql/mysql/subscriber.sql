-- geosip subscriber table (auth_db). Generated from geosip-store's subscriber::schema; keep identical.
-- ha1_*: lowercase hex of H(username:domain:password) per digest algorithm (RFC 7616);
-- password: plaintext, NULL unless [auth] store_plaintext = true.
-- enabled: a disabled subscriber cannot authenticate. attrs: JSON object of string values.
-- created, updated: unix seconds.

CREATE TABLE IF NOT EXISTS subscriber (
    username VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    domain VARCHAR(253) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    ha1_md5 VARCHAR(32) CHARACTER SET ascii NOT NULL DEFAULT '',
    ha1_sha256 VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    ha1_sha512_256 VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    password VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    attrs TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (username, domain),
    KEY subscriber_domain_idx (domain, username)
) ENGINE=InnoDB;
