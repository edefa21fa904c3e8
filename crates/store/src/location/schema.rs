//! The `location` table DDL per SQL dialect. `etc/sql/<dialect>/location.sql` is exactly
//! [`sql_file`] (a test compares them), so DBAs can create the schema by hand.

/// SQL dialects with their own DDL and placeholders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL ≥ 12.
    Postgres,
    /// MySQL ≥ 8 / MariaDB ≥ 10.5.
    MySql,
}

impl Dialect {
    /// Directory name under `etc/sql/`.
    pub fn dir(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }
}

/// The statements that create the location table and its index (idempotent).
pub fn statements(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
        Dialect::MySql => MYSQL,
    }
}

/// The text of `etc/sql/<dialect>/location.sql`.
pub fn sql_file(dialect: Dialect) -> String {
    let mut s = String::from(
        "-- geosip location table (usrloc). Generated from geosip-store's location::schema; keep identical.\n\
         -- bkey: binding identity inside the AOR, 'c:<contact>' or 'i:<+sip.instance>;<reg-id>'.\n\
         -- expires: unix seconds; last_modified: unix milliseconds; q: per mille.\n\n",
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
    "CREATE TABLE IF NOT EXISTS location (
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
)",
    "CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires)",
];

const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS location (
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
)",
    "CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires)",
];

const MYSQL: &[&str] = &["CREATE TABLE IF NOT EXISTS location (
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
) ENGINE=InnoDB"];
