//! The subscriber table (Kamailio `subscriber`, used by auth_db): who may authenticate, with the
//! HA1 of each digest algorithm, an enabled flag and per-subscriber attributes for scripts.
//!
//! This layer stores and fetches rows; it does not hash passwords or validate names (that is
//! `geosip-auth`'s job, so the CLI, the RPCs and imports all go through one set of rules). The
//! schema limits in [`limits`] are enforced here too, so a row that does not fit is refused
//! with [`StoreError::InvalidValue`] by every backend alike.
//!
//! Backends: SQL only (embedded SQLite, PostgreSQL, MySQL/MariaDB), through the same pools as
//! the location table. [`SubscriberStore`] routes reads to an optional read-only replica and
//! writes to the master.

pub mod schema;
pub mod sql;
mod sync_remote;
mod sync_sqlite;

use crate::{StoreConfig, StoreError, StoreResult, StoreUrl};

pub use sql::SqlSubscribers;

/// Longest values the schemas accept (bytes).
pub mod limits {
    /// Username (the user part of the AOR).
    pub const USERNAME: usize = 64;
    /// Domain (also the digest realm).
    pub const DOMAIN: usize = 253;
    /// Plaintext password, when stored.
    pub const PASSWORD: usize = 128;
    /// Attributes, as JSON text.
    pub const ATTRS: usize = 4096;
}

/// One subscriber row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberRow {
    /// User part of the AOR (case-sensitive, RFC 3261 §19.1.4).
    pub username: String,
    /// Domain, lowercase; also the digest realm of the subscriber.
    pub domain: String,
    /// Lowercase hex MD5 of `username:domain:password` (empty = algorithm not provisioned).
    pub ha1_md5: String,
    /// Lowercase hex SHA-256 of `username:domain:password`.
    pub ha1_sha256: String,
    /// Lowercase hex SHA-512/256 of `username:domain:password`.
    pub ha1_sha512_256: String,
    /// Plaintext password; `None` unless the operator asked for it to be kept.
    pub password: Option<String>,
    /// A disabled subscriber cannot authenticate.
    pub enabled: bool,
    /// Attributes for routing scripts: a JSON object of string values (`{}` when none).
    pub attrs: String,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Last change, unix seconds.
    pub updated: i64,
}

impl SubscriberRow {
    /// Refuses values longer than the schema allows (every backend alike).
    pub fn check_limits(&self) -> StoreResult<()> {
        let over = |what: &str, len: usize, max: usize| {
            Err(StoreError::InvalidValue(format!(
                "{what} is {len} bytes, at most {max} allowed"
            )))
        };
        if self.username.len() > limits::USERNAME {
            return over("username", self.username.len(), limits::USERNAME);
        }
        if self.domain.len() > limits::DOMAIN {
            return over("domain", self.domain.len(), limits::DOMAIN);
        }
        if let Some(p) = &self.password
            && p.len() > limits::PASSWORD
        {
            return over("password", p.len(), limits::PASSWORD);
        }
        if self.attrs.len() > limits::ATTRS {
            return over("attrs", self.attrs.len(), limits::ATTRS);
        }
        for h in [&self.ha1_md5, &self.ha1_sha256, &self.ha1_sha512_256] {
            if h.len() > 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StoreError::InvalidValue(
                    "an HA1 is not hex of at most 64 digits".into(),
                ));
            }
        }
        Ok(())
    }
}

/// True when `e` is a primary-key violation (the subscriber already exists).
pub fn is_duplicate(e: &StoreError) -> bool {
    match e {
        StoreError::Sql(sqlx::Error::Database(d)) => d.is_unique_violation(),
        _ => false,
    }
}

/// The subscriber table of a node: writes go to the master, reads to the read-only replica when
/// one is configured (the replica is never written and its schema is not created by us).
#[derive(Debug)]
pub struct SubscriberStore {
    master: SqlSubscribers,
    replica: Option<SqlSubscribers>,
}

impl SubscriberStore {
    /// Builds the pools (connected lazily). `master.url` is the master; `replica_url`, when
    /// given, serves every read. Only SQL URLs are accepted. Call it within a tokio runtime
    /// context (`Handle::enter`): PostgreSQL and MySQL pools start their maintenance task there.
    pub fn open(master: &StoreConfig, replica_url: Option<&str>) -> StoreResult<SubscriberStore> {
        let murl = StoreUrl::parse(&master.url, &master.data_dir)?;
        let m = SqlSubscribers::connect(&murl, master)?;
        let replica = match replica_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) => {
                let rurl = StoreUrl::parse(u, &master.data_dir)?;
                Some(SqlSubscribers::connect(&rurl, master)?)
            }
            None => None,
        };
        Ok(SubscriberStore { master: m, replica })
    }

    /// Creates the schema on the master (idempotent).
    pub async fn init(&self) -> StoreResult<()> {
        self.master.init().await
    }

    /// Where writes go.
    pub fn writer(&self) -> &SqlSubscribers {
        &self.master
    }

    /// Where reads go: the replica if configured, else the master.
    pub fn reader(&self) -> &SqlSubscribers {
        self.replica.as_ref().unwrap_or(&self.master)
    }

    /// Whether reads go to a separate replica.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Redacted description (`master` or `master (reads: replica)`), for logs.
    pub fn describe(&self) -> String {
        match &self.replica {
            Some(r) => format!("{} (reads: {})", self.master.describe(), r.describe()),
            None => self.master.describe().to_string(),
        }
    }

    /// Reads one subscriber on the calling thread, when the reader is an SQLite file (see
    /// [`SqlSubscribers::get_sync`]); `None` = use [`get`](Self::get).
    pub fn get_sync(&self, username: &str, domain: &str) -> Option<Option<SubscriberRow>> {
        self.reader().get_sync(username, domain)
    }

    /// Periodic upkeep of the readers (see [`SqlSubscribers::tick`]).
    pub fn tick(&self) {
        self.master.tick();
        if let Some(r) = &self.replica {
            r.tick();
        }
    }

    /// Whether the reader is an SQLite file read in-process (no round trip per read).
    pub fn reads_locally(&self) -> bool {
        self.reader().reads_locally()
    }

    /// Whether the reader batches reads ([`get_many_sync`](Self::get_many_sync)).
    pub fn batches_reads(&self) -> bool {
        self.reader().batches_reads()
    }

    /// Every subscriber of `domain` among `users` on the calling thread, in one query where
    /// the table is remote (from the replica when configured); `None` = failed or not
    /// available.
    pub fn get_many_sync(&self, domain: &str, users: &[&str]) -> Option<Vec<SubscriberRow>> {
        self.reader().get_many_sync(domain, users)
    }

    /// Reads one subscriber (from the replica when configured).
    pub async fn get(&self, username: &str, domain: &str) -> StoreResult<Option<SubscriberRow>> {
        self.reader().get(username, domain).await
    }

    /// Reads one subscriber from the master (read-your-writes after a change on this node).
    pub async fn get_master(
        &self,
        username: &str,
        domain: &str,
    ) -> StoreResult<Option<SubscriberRow>> {
        self.master.get(username, domain).await
    }

    /// Lists subscribers (from the replica when configured); see [`SqlSubscribers::list`].
    pub async fn list(
        &self,
        domain: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<SubscriberRow>> {
        self.reader().list(domain, after, limit).await
    }

    /// Inserts a new subscriber on the master; a duplicate fails ([`is_duplicate`]).
    pub async fn insert(&self, row: &SubscriberRow) -> StoreResult<()> {
        let r = self.master.insert(row).await;
        self.wrote();
        r
    }

    /// Inserts every row in one master transaction: all or nothing. On error, the index of
    /// the row that failed.
    pub async fn insert_all(&self, rows: &[SubscriberRow]) -> Result<(), (usize, StoreError)> {
        let r = self.master.insert_all(rows).await;
        self.wrote();
        r
    }

    /// Rewrites an existing subscriber (matched by username and domain) on the master; false
    /// when there is none.
    pub async fn update(&self, row: &SubscriberRow) -> StoreResult<bool> {
        let r = self.master.update(row).await;
        self.wrote();
        r
    }

    /// Deletes a subscriber on the master; false when there was none.
    pub async fn delete(&self, username: &str, domain: &str) -> StoreResult<bool> {
        let r = self.master.delete(username, domain).await;
        self.wrote();
        r
    }

    /// After a write through this store, in-process readers of the master take a fresh
    /// snapshot at their next read: what was just written is read back at once.
    fn wrote(&self) {
        self.master.wrote();
    }
}
