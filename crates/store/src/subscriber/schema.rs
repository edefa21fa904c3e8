//! The `subscriber` table DDL per SQL dialect. `etc/sql/<dialect>/subscriber.sql` is exactly
//! [`sql_file`] (a test compares them), so DBAs can create the schema by hand.

use crate::location::schema::Dialect;

/// The statements that create the subscriber table and its index (idempotent).
pub fn statements(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
        Dialect::MySql => MYSQL,
    }
}

/// The text of `etc/sql/<dialect>/subscriber.sql`.
pub fn sql_file(dialect: Dialect) -> String {
    let mut s = String::from(
        "-- geosip subscriber table (auth_db). Generated from geosip-store's subscriber::schema; keep identical.\n\
         -- ha1_*: lowercase hex of H(username:domain:password) per digest algorithm (RFC 7616);\n\
         -- password: plaintext, NULL unless [auth] store_plaintext = true.\n\
         -- enabled: a disabled subscriber cannot authenticate. attrs: JSON object of string values.\n\
         -- created, updated: unix seconds.\n\n",
    );
    for st in statements(dialect) {
        s.push_str(st);
        s.push_str(";\n\n");
    }
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS subscriber (
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
) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS subscriber_domain_idx ON subscriber (domain, username)",
];

const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS subscriber (
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
)",
    "CREATE INDEX IF NOT EXISTS subscriber_domain_idx ON subscriber (domain, username)",
];

const MYSQL: &[&str] = &["CREATE TABLE IF NOT EXISTS subscriber (
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
) ENGINE=InnoDB"];
