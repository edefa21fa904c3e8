//! The subscriber table on SQL through sqlx runtime queries. Each dialect has its own SQL
//! (placeholders differ) and column types (`enabled` is INTEGER in SQLite, BOOLEAN elsewhere;
//! MySQL text columns use a binary collation so names compare byte-exact, and are read back
//! as bytes then checked as UTF-8).

use sqlx::Row;
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use super::SubscriberRow;
use super::sync_remote::{RemoteKind, SyncRemoteReader};
use super::sync_sqlite::SyncSqliteReader;
use crate::location::schema::Dialect;
use crate::location::sql::SqlPool;
use crate::{StoreConfig, StoreError, StoreResult, StoreUrl};

/// The subscriber table in one SQL database.
#[derive(Debug)]
pub struct SqlSubscribers {
    pool: SqlPool,
    target: String,
    /// In-process reads of an SQLite file (see [`SyncSqliteReader`]).
    sync: Option<SyncSqliteReader>,
    /// Reads of PostgreSQL / MySQL on the calling thread (see [`SyncRemoteReader`]).
    remote: Option<SyncRemoteReader>,
}

impl SqlSubscribers {
    /// Builds the pool without connecting (the first call connects). Only SQL URLs.
    pub fn connect(url: &StoreUrl, cfg: &StoreConfig) -> StoreResult<SqlSubscribers> {
        if matches!(url, StoreUrl::Redis(_) | StoreUrl::RedisCluster(_)) {
            return Err(StoreError::Config(format!(
                "the subscriber table needs an SQL store (sqlite:, postgres://, mysql://), not {}",
                url.redacted()
            )));
        }
        let sync = match url {
            StoreUrl::Sqlite { path: Some(p) } => {
                Some(SyncSqliteReader::new(p.clone(), cfg.timeout))
            }
            _ => None,
        };
        let remote = match url {
            StoreUrl::Postgres(u) => {
                Some(SyncRemoteReader::new(RemoteKind::Postgres, u, cfg.timeout))
            }
            StoreUrl::MySql(u) => Some(SyncRemoteReader::new(RemoteKind::MySql, u, cfg.timeout)),
            _ => None,
        };
        Ok(SqlSubscribers {
            pool: SqlPool::connect_lazy(url, cfg)?,
            target: url.redacted(),
            sync,
            remote,
        })
    }

    /// The same table over an existing pool (e.g. the location store's).
    pub fn with_pool(pool: SqlPool, target: String) -> SqlSubscribers {
        SqlSubscribers {
            pool,
            target,
            sync: None,
            remote: None,
        }
    }

    /// Reads one subscriber on the calling thread (an SQLite file in-process; PostgreSQL and
    /// MySQL over a connection driven by this thread); `None` means "use [`get`](Self::get)"
    /// (the synchronous read failed or cannot run here).
    pub fn get_sync(&self, username: &str, domain: &str) -> Option<Option<SubscriberRow>> {
        if let Some(r) = &self.sync {
            return r.get(username, domain);
        }
        self.remote.as_ref()?.get(username, domain)
    }

    /// Whether reads run in-process on an SQLite file (no round trip to a server).
    pub fn reads_locally(&self) -> bool {
        self.sync.is_some()
    }

    /// Whether [`get_many_sync`](Self::get_many_sync) can work here (an SQLite file,
    /// PostgreSQL, MySQL).
    pub fn batches_reads(&self) -> bool {
        self.remote.is_some() || self.sync.is_some()
    }

    /// Periodic upkeep (every 100 ms or so): idle in-process SQLite readers let go of their
    /// snapshot, so they do not hold back WAL checkpoints.
    pub fn tick(&self) {
        if let Some(r) = &self.sync {
            r.end_stale();
        }
    }

    /// A write went through this store: readers must not answer from an older snapshot.
    pub fn wrote(&self) {
        if let Some(r) = &self.sync {
            r.wrote();
        }
    }

    /// Every subscriber of `domain` among `users` (at most [`MANY_MAX`]), on the calling
    /// thread: one query on PostgreSQL / MySQL, one lookup each in one snapshot of an SQLite
    /// file; `None` = failed or not available (see [`SyncRemoteReader::get_many`]).
    pub fn get_many_sync(&self, domain: &str, users: &[&str]) -> Option<Vec<SubscriberRow>> {
        if let Some(r) = &self.sync {
            return r.get_many(domain, users);
        }
        self.remote.as_ref()?.get_many(domain, users)
    }

    /// Redacted URL.
    pub fn describe(&self) -> &str {
        &self.target
    }

    /// The pool.
    pub fn pool(&self) -> &SqlPool {
        &self.pool
    }

    /// Creates the table and index if missing.
    pub async fn init(&self) -> StoreResult<()> {
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::init(p).await,
            SqlPool::Postgres(p) => postgres::init(p).await,
            SqlPool::MySql(p) => mysql::init(p).await,
        }
    }

    /// One subscriber.
    pub async fn get(&self, username: &str, domain: &str) -> StoreResult<Option<SubscriberRow>> {
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::get(p, username, domain).await,
            SqlPool::Postgres(p) => postgres::get(p, username, domain).await,
            SqlPool::MySql(p) => mysql::get(p, username, domain).await,
        }
    }

    /// Inserts a new subscriber; an existing one fails with a unique violation
    /// ([`super::is_duplicate`]).
    pub async fn insert(&self, row: &SubscriberRow) -> StoreResult<()> {
        row.check_limits()?;
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::insert(p, row).await,
            SqlPool::Postgres(p) => postgres::insert(p, row).await,
            SqlPool::MySql(p) => mysql::insert(p, row).await,
        }
    }

    /// Inserts all rows in one transaction (all or nothing); on error, the failing row's index.
    pub async fn insert_all(&self, rows: &[SubscriberRow]) -> Result<(), (usize, StoreError)> {
        for (i, r) in rows.iter().enumerate() {
            r.check_limits().map_err(|e| (i, e))?;
        }
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::insert_all(p, rows).await,
            SqlPool::Postgres(p) => postgres::insert_all(p, rows).await,
            SqlPool::MySql(p) => mysql::insert_all(p, rows).await,
        }
    }

    /// Rewrites every column but the key and `created`; false when the row does not exist.
    pub async fn update(&self, row: &SubscriberRow) -> StoreResult<bool> {
        row.check_limits()?;
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::update(p, row).await,
            SqlPool::Postgres(p) => postgres::update(p, row).await,
            SqlPool::MySql(p) => mysql::update(p, row).await,
        }
    }

    /// Deletes one subscriber; false when there was none.
    pub async fn delete(&self, username: &str, domain: &str) -> StoreResult<bool> {
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::delete(p, username, domain).await,
            SqlPool::Postgres(p) => postgres::delete(p, username, domain).await,
            SqlPool::MySql(p) => mysql::delete(p, username, domain).await,
        }
    }

    /// Up to `limit` subscribers (1..=10000), ordered by domain then username, optionally of
    /// one domain, starting after `(domain, username)` (keyset paging: pass the last row seen).
    pub async fn list(
        &self,
        domain: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<SubscriberRow>> {
        let limit = limit.clamp(1, 10_000) as i64;
        match &self.pool {
            SqlPool::Sqlite(p) => sqlite::list(p, domain, after, limit).await,
            SqlPool::Postgres(p) => postgres::list(p, domain, after, limit).await,
            SqlPool::MySql(p) => mysql::list(p, domain, after, limit).await,
        }
    }
}

struct Statements {
    get: &'static str,
    insert: &'static str,
    update: &'static str,
    delete: &'static str,
    list_first: &'static str,
    list_next: &'static str,
    list_domain_first: &'static str,
    list_domain_next: &'static str,
}

macro_rules! cols {
    () => {
        "username, domain, ha1_md5, ha1_sha256, ha1_sha512_256, password, enabled, attrs, created, updated"
    };
}

const QMARK_SQL: Statements = Statements {
    get: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE username = ? AND domain = ?"
    ),
    insert: concat!(
        "INSERT INTO subscriber (",
        cols!(),
        ") VALUES (?,?,?,?,?,?,?,?,?,?)"
    ),
    update: "UPDATE subscriber SET ha1_md5 = ?, ha1_sha256 = ?, ha1_sha512_256 = ?, password = ?, \
             enabled = ?, attrs = ?, updated = ? WHERE username = ? AND domain = ?",
    delete: "DELETE FROM subscriber WHERE username = ? AND domain = ?",
    list_first: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber ORDER BY domain, username LIMIT ?"
    ),
    list_next: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE domain > ? OR (domain = ? AND username > ?) ORDER BY domain, username LIMIT ?"
    ),
    list_domain_first: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE domain = ? ORDER BY domain, username LIMIT ?"
    ),
    list_domain_next: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE domain = ? AND username > ? ORDER BY domain, username LIMIT ?"
    ),
};

const POSTGRES_SQL: Statements = Statements {
    get: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE username = $1 AND domain = $2"
    ),
    insert: concat!(
        "INSERT INTO subscriber (",
        cols!(),
        ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
    ),
    update: "UPDATE subscriber SET ha1_md5 = $1, ha1_sha256 = $2, ha1_sha512_256 = $3, password = $4, \
             enabled = $5, attrs = $6, updated = $7 WHERE username = $8 AND domain = $9",
    delete: "DELETE FROM subscriber WHERE username = $1 AND domain = $2",
    list_first: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber ORDER BY domain, username LIMIT $1"
    ),
    list_next: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE domain > $1 OR (domain = $2 AND username > $3) ORDER BY domain, username LIMIT $4"
    ),
    list_domain_first: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE domain = $1 ORDER BY domain, username LIMIT $2"
    ),
    list_domain_next: concat!(
        "SELECT ",
        cols!(),
        " FROM subscriber WHERE domain = $1 AND username > $2 ORDER BY domain, username LIMIT $3"
    ),
};

fn string_out(v: String) -> StoreResult<String> {
    Ok(v)
}

fn bytes_out(v: Vec<u8>) -> StoreResult<String> {
    String::from_utf8(v)
        .map_err(|_| StoreError::InvalidValue("subscriber column is not UTF-8".into()))
}

fn int_in(b: bool) -> i64 {
    i64::from(b)
}

fn int_out(v: i64) -> bool {
    v != 0
}

fn bool_in(b: bool) -> bool {
    b
}

fn bool_out(v: bool) -> bool {
    v
}

/// Generates the per-dialect functions; only types and SQL differ.
macro_rules! dialect {
    ($m:ident, $db:ty, $dialect:expr, $pool:ty, $row:ty, $sql:expr, $sty:ty, $sout:path, $ety:ty, $ein:path, $eout:path) => {
        mod $m {
            use super::*;

            const SQL: Statements = $sql;

            type Q = sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments>;

            fn s(row: &$row, i: usize) -> StoreResult<String> {
                $sout(row.try_get::<$sty, _>(i)?)
            }

            pub(super) fn decode(row: &$row) -> StoreResult<SubscriberRow> {
                Ok(SubscriberRow {
                    username: s(row, 0)?,
                    domain: s(row, 1)?,
                    ha1_md5: s(row, 2)?,
                    ha1_sha256: s(row, 3)?,
                    ha1_sha512_256: s(row, 4)?,
                    password: row.try_get::<Option<$sty>, _>(5)?.map($sout).transpose()?,
                    enabled: $eout(row.try_get::<$ety, _>(6)?),
                    attrs: s(row, 7)?,
                    created: row.try_get::<i64, _>(8)?,
                    updated: row.try_get::<i64, _>(9)?,
                })
            }

            fn decode_all(rows: &[$row]) -> StoreResult<Vec<SubscriberRow>> {
                rows.iter().map(decode).collect()
            }

            fn bind_insert(r: &SubscriberRow) -> Q {
                sqlx::query(SQL.insert)
                    .bind(r.username.clone())
                    .bind(r.domain.clone())
                    .bind(r.ha1_md5.clone())
                    .bind(r.ha1_sha256.clone())
                    .bind(r.ha1_sha512_256.clone())
                    .bind(r.password.clone())
                    .bind($ein(r.enabled))
                    .bind(r.attrs.clone())
                    .bind(r.created)
                    .bind(r.updated)
            }

            pub(super) async fn init(pool: &$pool) -> StoreResult<()> {
                for st in super::super::schema::statements($dialect) {
                    sqlx::query(*st).execute(pool).await?;
                }
                Ok(())
            }

            pub(super) async fn get<'e, E>(
                ex: E,
                username: &str,
                domain: &str,
            ) -> StoreResult<Option<SubscriberRow>>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let row = sqlx::query(SQL.get)
                    .bind(username.to_string())
                    .bind(domain.to_string())
                    .fetch_optional(ex)
                    .await?;
                row.as_ref().map(decode).transpose()
            }

            pub(super) async fn insert(pool: &$pool, r: &SubscriberRow) -> StoreResult<()> {
                bind_insert(r).execute(pool).await?;
                Ok(())
            }

            pub(super) async fn insert_all(
                pool: &$pool,
                rows: &[SubscriberRow],
            ) -> Result<(), (usize, StoreError)> {
                let at_start = |e: sqlx::Error| (0, StoreError::from(e));
                let mut tx = pool.begin().await.map_err(at_start)?;
                for (i, r) in rows.iter().enumerate() {
                    if let Err(e) = bind_insert(r).execute(&mut *tx).await {
                        // Dropping the transaction rolls it back.
                        return Err((i, e.into()));
                    }
                }
                tx.commit()
                    .await
                    .map_err(|e| (rows.len(), StoreError::from(e)))
            }

            pub(super) async fn update(pool: &$pool, r: &SubscriberRow) -> StoreResult<bool> {
                let n = sqlx::query(SQL.update)
                    .bind(r.ha1_md5.clone())
                    .bind(r.ha1_sha256.clone())
                    .bind(r.ha1_sha512_256.clone())
                    .bind(r.password.clone())
                    .bind($ein(r.enabled))
                    .bind(r.attrs.clone())
                    .bind(r.updated)
                    .bind(r.username.clone())
                    .bind(r.domain.clone())
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            pub(super) async fn delete(
                pool: &$pool,
                username: &str,
                domain: &str,
            ) -> StoreResult<bool> {
                let n = sqlx::query(SQL.delete)
                    .bind(username.to_string())
                    .bind(domain.to_string())
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            pub(super) async fn list(
                pool: &$pool,
                domain: Option<&str>,
                after: Option<(&str, &str)>,
                limit: i64,
            ) -> StoreResult<Vec<SubscriberRow>> {
                let rows = match (domain, after) {
                    (None, None) => {
                        sqlx::query(SQL.list_first)
                            .bind(limit)
                            .fetch_all(pool)
                            .await?
                    }
                    (None, Some((d, u))) => {
                        sqlx::query(SQL.list_next)
                            .bind(d.to_string())
                            .bind(d.to_string())
                            .bind(u.to_string())
                            .bind(limit)
                            .fetch_all(pool)
                            .await?
                    }
                    (Some(d), None) => {
                        sqlx::query(SQL.list_domain_first)
                            .bind(d.to_string())
                            .bind(limit)
                            .fetch_all(pool)
                            .await?
                    }
                    (Some(d), Some((ad, u))) => {
                        // Paging past the requested domain yields nothing; before it, from its start.
                        if ad > d {
                            return Ok(Vec::new());
                        }
                        let u = if ad < d { "" } else { u };
                        sqlx::query(SQL.list_domain_next)
                            .bind(d.to_string())
                            .bind(u.to_string())
                            .bind(limit)
                            .fetch_all(pool)
                            .await?
                    }
                };
                decode_all(&rows)
            }
        }
    };
}

dialect!(
    sqlite,
    sqlx::Sqlite,
    Dialect::Sqlite,
    SqlitePool,
    sqlx::sqlite::SqliteRow,
    QMARK_SQL,
    String,
    string_out,
    i64,
    int_in,
    int_out
);
dialect!(
    postgres,
    sqlx::Postgres,
    Dialect::Postgres,
    PgPool,
    sqlx::postgres::PgRow,
    POSTGRES_SQL,
    String,
    string_out,
    bool,
    bool_in,
    bool_out
);
dialect!(
    mysql,
    sqlx::MySql,
    Dialect::MySql,
    MySqlPool,
    sqlx::mysql::MySqlRow,
    QMARK_SQL,
    Vec<u8>,
    bytes_out,
    bool,
    bool_in,
    bool_out
);

/// The per-dialect `get`, for [`SyncRemoteReader`].
pub(super) async fn get_pg(
    c: &mut sqlx::postgres::PgConnection,
    username: &str,
    domain: &str,
) -> StoreResult<Option<SubscriberRow>> {
    postgres::get(c, username, domain).await
}

/// The per-dialect `get`, for [`SyncRemoteReader`].
pub(super) async fn get_mysql(
    c: &mut sqlx::mysql::MySqlConnection,
    username: &str,
    domain: &str,
) -> StoreResult<Option<SubscriberRow>> {
    mysql::get(c, username, domain).await
}

/// Most users read by one [`get_many`](SyncRemoteReader::get_many) query.
pub const MANY_MAX: usize = 64;

const PG_MANY: &str = concat!(
    "SELECT ",
    cols!(),
    " FROM subscriber WHERE domain = $1 AND username = ANY($2)"
);

/// `IN` lists of 1, 2, 4 .. 64 placeholders: a batch is padded to the next size so that
/// MySQL's prepared-statement cache holds seven statements, not one per batch size.
fn mysql_many_sql(n: usize) -> (usize, &'static str) {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=MANY_MAX.trailing_zeros())
            .map(|k| {
                let marks = vec!["?"; 1 << k].join(",");
                format!(
                    "SELECT {} FROM subscriber WHERE domain = ? AND username IN ({marks})",
                    cols!()
                )
            })
            .collect()
    });
    let k = n.clamp(1, MANY_MAX).next_power_of_two().trailing_zeros() as usize;
    (1 << k, all[k].as_str())
}

/// Every subscriber of `domain` among `users` (at most [`MANY_MAX`]; missing users are simply
/// absent), for [`SyncRemoteReader::get_many`].
pub(super) async fn get_many_pg(
    c: &mut sqlx::postgres::PgConnection,
    domain: &str,
    users: &[&str],
) -> StoreResult<Vec<SubscriberRow>> {
    let users: Vec<String> = users.iter().take(MANY_MAX).map(|u| u.to_string()).collect();
    let rows = sqlx::query(PG_MANY)
        .bind(domain.to_string())
        .bind(users)
        .fetch_all(c)
        .await?;
    rows.iter().map(postgres::decode).collect()
}

/// The MySQL / MariaDB [`get_many_pg`].
pub(super) async fn get_many_mysql(
    c: &mut sqlx::mysql::MySqlConnection,
    domain: &str,
    users: &[&str],
) -> StoreResult<Vec<SubscriberRow>> {
    let users = &users[..users.len().min(MANY_MAX)];
    let Some(last) = users.last() else {
        return Ok(Vec::new());
    };
    let (n, sql) = mysql_many_sql(users.len());
    let mut q = sqlx::query(sql).bind(domain.to_string());
    for i in 0..n {
        q = q.bind(users.get(i).unwrap_or(last).to_string());
    }
    let rows = q.fetch_all(c).await?;
    rows.iter().map(mysql::decode).collect()
}
