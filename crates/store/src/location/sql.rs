//! The location table on SQL through sqlx with runtime queries: SQLite (embedded default),
//! PostgreSQL and MySQL/MariaDB. Each dialect has its own SQL strings (placeholders and upsert
//! syntax differ) and its own byte-string column type: BLOB (SQLite), TEXT (PostgreSQL, so DBAs
//! can read it; non-UTF-8 values are refused), VARBINARY (MySQL, byte-exact and case-sensitive).

use std::str::FromStr;

use bytes::Bytes;
use sqlx::Row;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::schema::{self, Dialect};
use super::{
    BackendKind, Binding, BoxFuture, LoadCursor, LoadPage, LocationBackend, Received, Ruid, WriteOp,
};
use crate::{StoreConfig, StoreError, StoreResult, StoreUrl};

/// A connection pool of one of the SQL dialects. Other tables (subscribers, partitions) can share
/// it through [`SqlLocation::pool`].
#[derive(Clone, Debug)]
pub enum SqlPool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL / MariaDB.
    MySql(MySqlPool),
}

impl SqlPool {
    /// Builds a pool for an SQL URL without connecting yet (connections are made on first use,
    /// so a database that is down at startup is reported by the first call, not here).
    pub fn connect_lazy(url: &StoreUrl, cfg: &StoreConfig) -> StoreResult<SqlPool> {
        let size = cfg.pool_size.max(1);
        Ok(match url {
            StoreUrl::Sqlite { path } => {
                let (opts, size) = match path {
                    Some(p) => {
                        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                            std::fs::create_dir_all(dir).map_err(|e| {
                                StoreError::Config(format!("cannot create {}: {e}", dir.display()))
                            })?;
                        }
                        (
                            SqliteConnectOptions::new()
                                .filename(p)
                                .create_if_missing(true),
                            size,
                        )
                    }
                    // Every connection of an in-memory database is a different database: use one.
                    None => (SqliteConnectOptions::from_str("sqlite::memory:")?, 1),
                };
                let opts = opts
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(cfg.timeout);
                let pool = SqlitePoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(cfg.timeout)
                    .idle_timeout(None)
                    .max_lifetime(None);
                SqlPool::Sqlite(pool.connect_lazy_with(opts))
            }
            StoreUrl::Postgres(u) => SqlPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(cfg.timeout)
                    .connect_lazy_with(PgConnectOptions::from_str(u)?),
            ),
            StoreUrl::MySql(u) => SqlPool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(cfg.timeout)
                    .connect_lazy_with(MySqlConnectOptions::from_str(u)?),
            ),
            other => {
                return Err(StoreError::Config(format!(
                    "not an SQL URL: {}",
                    other.redacted()
                )));
            }
        })
    }

    /// The dialect of this pool.
    pub fn dialect(&self) -> Dialect {
        match self {
            SqlPool::Sqlite(_) => Dialect::Sqlite,
            SqlPool::Postgres(_) => Dialect::Postgres,
            SqlPool::MySql(_) => Dialect::MySql,
        }
    }
}

/// The location table in an SQL database.
#[derive(Debug)]
pub struct SqlLocation {
    pool: SqlPool,
    target: String,
}

impl SqlLocation {
    /// Creates the pool (lazily connected). Call [`LocationBackend::init`] to create the schema.
    pub async fn connect(url: &StoreUrl, cfg: &StoreConfig) -> StoreResult<SqlLocation> {
        Ok(SqlLocation {
            pool: SqlPool::connect_lazy(url, cfg)?,
            target: url.redacted(),
        })
    }

    /// The pool, for other tables in the same database.
    pub fn pool(&self) -> &SqlPool {
        &self.pool
    }
}

macro_rules! cols {
    () => {
        "aor, bkey, ruid, contact, expires, q, callid, cseq, received, socket, path, user_agent, instance, reg_id, flags, last_modified, server_id"
    };
}

macro_rules! set_cols {
    ($ex:literal) => {
        concat!(
            "ruid=",
            $ex,
            "(ruid), contact=",
            $ex,
            "(contact), expires=",
            $ex,
            "(expires), q=",
            $ex,
            "(q), callid=",
            $ex,
            "(callid), cseq=",
            $ex,
            "(cseq), received=",
            $ex,
            "(received), socket=",
            $ex,
            "(socket), path=",
            $ex,
            "(path), user_agent=",
            $ex,
            "(user_agent), instance=",
            $ex,
            "(instance), reg_id=",
            $ex,
            "(reg_id), flags=",
            $ex,
            "(flags), last_modified=",
            $ex,
            "(last_modified), server_id=",
            $ex,
            "(server_id)"
        )
    };
}

struct Statements {
    upsert: &'static str,
    delete: &'static str,
    delete_aor: &'static str,
    lookup: &'static str,
    load_first: &'static str,
    load_next: &'static str,
    delete_expired: &'static str,
}

// `excluded.col` written as `excluded(col)` would not parse, so the SQLite/PostgreSQL SET lists
// are spelled out; MySQL uses VALUES(col).
const SQLITE_SQL: Statements = Statements {
    upsert: concat!(
        "INSERT INTO location (",
        cols!(),
        ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ",
        "ON CONFLICT (aor, bkey) DO UPDATE SET ruid=excluded.ruid, contact=excluded.contact, ",
        "expires=excluded.expires, q=excluded.q, callid=excluded.callid, cseq=excluded.cseq, ",
        "received=excluded.received, socket=excluded.socket, path=excluded.path, ",
        "user_agent=excluded.user_agent, instance=excluded.instance, reg_id=excluded.reg_id, ",
        "flags=excluded.flags, last_modified=excluded.last_modified, server_id=excluded.server_id"
    ),
    delete: "DELETE FROM location WHERE aor = ? AND bkey = ?",
    delete_aor: "DELETE FROM location WHERE aor = ?",
    lookup: concat!("SELECT ", cols!(), " FROM location WHERE aor = ?"),
    load_first: concat!(
        "SELECT ",
        cols!(),
        " FROM location WHERE expires > ? ORDER BY aor, bkey LIMIT ?"
    ),
    load_next: concat!(
        "SELECT ",
        cols!(),
        " FROM location WHERE expires > ? AND (aor > ? OR (aor = ? AND bkey > ?)) ",
        "ORDER BY aor, bkey LIMIT ?"
    ),
    delete_expired: "DELETE FROM location WHERE expires <= ?",
};

const POSTGRES_SQL: Statements = Statements {
    upsert: concat!(
        "INSERT INTO location (",
        cols!(),
        ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) ",
        "ON CONFLICT (aor, bkey) DO UPDATE SET ruid=EXCLUDED.ruid, contact=EXCLUDED.contact, ",
        "expires=EXCLUDED.expires, q=EXCLUDED.q, callid=EXCLUDED.callid, cseq=EXCLUDED.cseq, ",
        "received=EXCLUDED.received, socket=EXCLUDED.socket, path=EXCLUDED.path, ",
        "user_agent=EXCLUDED.user_agent, instance=EXCLUDED.instance, reg_id=EXCLUDED.reg_id, ",
        "flags=EXCLUDED.flags, last_modified=EXCLUDED.last_modified, server_id=EXCLUDED.server_id"
    ),
    delete: "DELETE FROM location WHERE aor = $1 AND bkey = $2",
    delete_aor: "DELETE FROM location WHERE aor = $1",
    lookup: concat!("SELECT ", cols!(), " FROM location WHERE aor = $1"),
    load_first: concat!(
        "SELECT ",
        cols!(),
        " FROM location WHERE expires > $1 ORDER BY aor, bkey LIMIT $2"
    ),
    load_next: concat!(
        "SELECT ",
        cols!(),
        " FROM location WHERE expires > $1 AND (aor > $2 OR (aor = $3 AND bkey > $4)) ",
        "ORDER BY aor, bkey LIMIT $5"
    ),
    delete_expired: "DELETE FROM location WHERE expires <= $1",
};

const MYSQL_SQL: Statements = Statements {
    upsert: concat!(
        "INSERT INTO location (",
        cols!(),
        ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON DUPLICATE KEY UPDATE ",
        set_cols!("VALUES")
    ),
    delete: "DELETE FROM location WHERE aor = ? AND bkey = ?",
    delete_aor: "DELETE FROM location WHERE aor = ?",
    lookup: concat!("SELECT ", cols!(), " FROM location WHERE aor = ?"),
    load_first: concat!(
        "SELECT ",
        cols!(),
        " FROM location WHERE expires > ? ORDER BY aor, bkey LIMIT ?"
    ),
    load_next: concat!(
        "SELECT ",
        cols!(),
        " FROM location WHERE expires > ? AND (aor > ? OR (aor = ? AND bkey > ?)) ",
        "ORDER BY aor, bkey LIMIT ?"
    ),
    delete_expired: "DELETE FROM location WHERE expires <= ?",
};

/// Columns of a location row.
const COLS: usize = 17;
/// Rows per multi-row statement (17 × 500 placeholders stays under every dialect's limit).
const BULK_ROWS: usize = 500;

/// `?,?,?` or `$n,$n+1,...` for `count` parameters numbered from `first`.
fn placeholders(dialect: Dialect, first: usize, count: usize) -> String {
    let mut s = String::with_capacity(count * 4);
    for i in 0..count {
        if i > 0 {
            s.push(',');
        }
        match dialect {
            Dialect::Postgres => {
                s.push('$');
                s.push_str(&(first + i).to_string());
            }
            Dialect::Sqlite | Dialect::MySql => s.push('?'),
        }
    }
    s
}

/// A batch made only of whole-AOR replacements/deletions of distinct AORs (what write-back
/// flushes produce) can be applied as bulk DELETE + INSERT: returns the AORs and the new rows.
fn bulk_form(ops: &[WriteOp]) -> Option<(Vec<&Bytes>, Vec<&Binding>)> {
    if ops.len() < 2 {
        return None;
    }
    let mut aors: Vec<&Bytes> = Vec::with_capacity(ops.len());
    let mut rows = Vec::new();
    for op in ops {
        match op {
            WriteOp::ReplaceAor { aor, bindings } => {
                if bindings.iter().any(|b| b.aor != *aor) {
                    return None;
                }
                rows.extend(bindings.iter());
                aors.push(aor);
            }
            WriteOp::DeleteAor(aor) => aors.push(aor),
            WriteOp::Upsert(_) | WriteOp::Delete { .. } => return None,
        }
    }
    // Distinct AORs, and distinct keys per AOR, or the order of the ops or the primary key
    // would matter.
    let distinct_aors: std::collections::HashSet<&Bytes> = aors.iter().copied().collect();
    let distinct_rows: std::collections::HashSet<(&Bytes, Vec<u8>)> =
        rows.iter().map(|b| (&b.aor, b.bkey())).collect();
    (distinct_aors.len() == aors.len() && distinct_rows.len() == rows.len()).then_some((aors, rows))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn blob_in(b: &[u8]) -> StoreResult<Vec<u8>> {
    Ok(b.to_vec())
}

fn blob_out(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

fn text_in(b: &[u8]) -> StoreResult<String> {
    let s = std::str::from_utf8(b)
        .map_err(|_| StoreError::InvalidValue("not UTF-8 (PostgreSQL TEXT)".into()))?;
    if s.contains('\0') {
        return Err(StoreError::InvalidValue(
            "NUL byte (PostgreSQL TEXT)".into(),
        ));
    }
    Ok(s.to_owned())
}

fn text_out(v: String) -> Bytes {
    Bytes::from(v.into_bytes())
}

/// A load cursor that makes [`LocationBackend::load_page`] of an SQL backend continue after the
/// row `(aor, bkey)` (in the database's `ORDER BY aor, bkey` order). A partitioning layer that
/// merges the pages of several databases positions each of them after the last row it emitted.
pub fn cursor_after(aor: &[u8], bkey: &[u8]) -> LoadCursor {
    encode_cursor(aor, bkey)
}

fn encode_cursor(aor: &[u8], bkey: &[u8]) -> LoadCursor {
    let mut v = Vec::with_capacity(4 + aor.len() + bkey.len());
    v.extend_from_slice(&(aor.len() as u32).to_le_bytes());
    v.extend_from_slice(aor);
    v.extend_from_slice(bkey);
    LoadCursor(v)
}

fn decode_cursor(c: &LoadCursor) -> StoreResult<(&[u8], &[u8])> {
    let bad = || StoreError::InvalidValue("bad SQL load cursor".into());
    let n =
        c.0.get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(bad)?;
    let n = u32::from_le_bytes(n) as usize;
    let aor = c.0.get(4..4 + n).ok_or_else(bad)?;
    let bkey = c.0.get(4 + n..).ok_or_else(bad)?;
    Ok((aor, bkey))
}

fn num<T: TryFrom<i64>>(v: i64, col: &str) -> StoreResult<T> {
    T::try_from(v).map_err(|_| StoreError::InvalidValue(format!("{col} out of range: {v}")))
}

/// Generates the per-dialect functions; only types, SQL and byte conversions differ.
macro_rules! dialect {
    ($m:ident, $db:ty, $dialect:expr, $pool:ty, $conn:ty, $row:ty, $sql:expr, $bty:ty, $bin:path, $bout:path) => {
        mod $m {
            use super::*;

            const SQL: Statements = $sql;

            fn bytes_col(row: &$row, i: usize) -> Result<Bytes, sqlx::Error> {
                row.try_get::<$bty, _>(i).map($bout)
            }

            pub(super) fn decode(row: &$row) -> StoreResult<Binding> {
                let received = Received::parse(&row.try_get::<String, _>(8)?, &row.try_get::<String, _>(9)?)?;
                Ok(Binding {
                    aor: bytes_col(row, 0)?,
                    ruid: row.try_get::<String, _>(2)?.parse::<Ruid>()?,
                    contact: bytes_col(row, 3)?,
                    expires: num(row.try_get::<i64, _>(4)?, "expires")?,
                    q: num(row.try_get::<i64, _>(5)?, "q")?,
                    call_id: bytes_col(row, 6)?,
                    cseq: num(row.try_get::<i64, _>(7)?, "cseq")?,
                    received,
                    path: bytes_col(row, 10)?,
                    user_agent: bytes_col(row, 11)?,
                    instance: bytes_col(row, 12)?,
                    reg_id: num(row.try_get::<i64, _>(13)?, "reg_id")?,
                    flags: num(row.try_get::<i64, _>(14)?, "flags")?,
                    last_modified: num(row.try_get::<i64, _>(15)?, "last_modified")?,
                    server_id: num(row.try_get::<i64, _>(16)?, "server_id")?,
                })
            }

            type Q = sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments>;

            /// Binds the 17 columns of one row, in `cols!()` order.
            fn bind_row(q: Q, b: &Binding) -> StoreResult<Q> {
                let (received, socket) = match &b.received {
                    Some(r) => (r.source_text(), r.local_text()),
                    None => (String::new(), String::new()),
                };
                Ok(q.bind($bin(&b.aor)?)
                    .bind($bin(&b.bkey())?)
                    .bind(b.ruid.to_string())
                    .bind($bin(&b.contact)?)
                    .bind(i64_of(b.expires))
                    .bind(i64::from(b.q))
                    .bind($bin(&b.call_id)?)
                    .bind(i64::from(b.cseq))
                    .bind(received)
                    .bind(socket)
                    .bind($bin(&b.path)?)
                    .bind($bin(&b.user_agent)?)
                    .bind($bin(&b.instance)?)
                    .bind(i64::from(b.reg_id))
                    .bind(i64::from(b.flags))
                    .bind(i64_of(b.last_modified))
                    .bind(i64::from(b.server_id)))
            }

            async fn upsert(conn: &mut $conn, b: &Binding) -> StoreResult<()> {
                bind_row(sqlx::query(SQL.upsert), b)?.execute(&mut *conn).await?;
                Ok(())
            }

            /// Write-back flushes: whole AORs replaced with one DELETE and one multi-row INSERT
            /// per chunk instead of a round trip per row.
            async fn replace_bulk(conn: &mut $conn, aors: &[&Bytes], rows: &[&Binding]) -> StoreResult<()> {
                for chunk in aors.chunks(BULK_ROWS) {
                    let sql = format!("DELETE FROM location WHERE aor IN ({})", placeholders($dialect, 1, chunk.len()));
                    let mut q: Q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for aor in chunk {
                        q = q.bind($bin(aor)?);
                    }
                    q.execute(&mut *conn).await?;
                }
                for chunk in rows.chunks(BULK_ROWS) {
                    let values: Vec<String> = (0..chunk.len())
                        .map(|i| format!("({})", placeholders($dialect, 1 + i * COLS, COLS)))
                        .collect();
                    let sql = format!("INSERT INTO location ({}) VALUES {}", cols!(), values.join(","));
                    let mut q: Q = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for b in chunk {
                        q = bind_row(q, b)?;
                    }
                    q.execute(&mut *conn).await?;
                }
                Ok(())
            }


            async fn delete_aor(conn: &mut $conn, aor: &[u8]) -> StoreResult<()> {
                sqlx::query(SQL.delete_aor).bind($bin(aor)?).execute(&mut *conn).await?;
                Ok(())
            }

            pub(super) async fn init(pool: &$pool, dialect: Dialect) -> StoreResult<()> {
                for st in schema::statements(dialect) {
                    sqlx::query(*st).execute(pool).await?;
                }
                Ok(())
            }

            pub(super) async fn apply(pool: &$pool, ops: &[WriteOp]) -> StoreResult<()> {
                if ops.is_empty() {
                    return Ok(());
                }
                let mut tx = pool.begin().await?;
                if let Some((aors, rows)) = bulk_form(ops) {
                    replace_bulk(&mut tx, &aors, &rows).await?;
                    tx.commit().await?;
                    return Ok(());
                }
                for op in ops {
                    match op {
                        WriteOp::Upsert(b) => upsert(&mut tx, b).await?,
                        WriteOp::Delete { aor, bkey } => {
                            sqlx::query(SQL.delete).bind($bin(aor)?).bind($bin(bkey)?).execute(&mut *tx).await?;
                        }
                        WriteOp::DeleteAor(aor) => delete_aor(&mut tx, aor).await?,
                        WriteOp::ReplaceAor { aor, bindings } => {
                            delete_aor(&mut tx, aor).await?;
                            for b in bindings {
                                upsert(&mut tx, b).await?;
                            }
                        }
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn lookup(pool: &$pool, target: &str, aor: &[u8]) -> StoreResult<Vec<Binding>> {
                let rows = sqlx::query(SQL.lookup).bind($bin(aor)?).fetch_all(pool).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    match decode(row) {
                        Ok(b) => out.push(b),
                        Err(e) => tracing::warn!(target: "geosip_store", store = target, error = %e, "skipping undecodable location row"),
                    }
                }
                Ok(out)
            }

            pub(super) async fn load_page(
                pool: &$pool,
                target: &str,
                cursor: Option<&LoadCursor>,
                limit: usize,
                now_s: u64,
            ) -> StoreResult<LoadPage> {
                let limit = limit.clamp(1, 100_000);
                let rows = match cursor {
                    None => sqlx::query(SQL.load_first).bind(i64_of(now_s)).bind(limit as i64).fetch_all(pool).await?,
                    Some(c) => {
                        let (aor, bkey) = decode_cursor(c)?;
                        sqlx::query(SQL.load_next)
                            .bind(i64_of(now_s))
                            .bind($bin(aor)?)
                            .bind($bin(aor)?)
                            .bind($bin(bkey)?)
                            .bind(limit as i64)
                            .fetch_all(pool)
                            .await?
                    }
                };
                let mut page = LoadPage::default();
                for row in &rows {
                    match decode(row) {
                        Ok(b) => page.bindings.push(b),
                        Err(e) => {
                            page.skipped += 1;
                            tracing::warn!(target: "geosip_store", store = target, error = %e, "skipping undecodable location row");
                        }
                    }
                }
                if rows.len() == limit {
                    if let Some(last) = rows.last() {
                        page.next = Some(encode_cursor(&bytes_col(last, 0)?, &bytes_col(last, 1)?));
                    }
                }
                Ok(page)
            }

            pub(super) async fn delete_expired(pool: &$pool, now_s: u64) -> StoreResult<u64> {
                Ok(sqlx::query(SQL.delete_expired).bind(i64_of(now_s)).execute(pool).await?.rows_affected())
            }

            pub(super) async fn health(pool: &$pool) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(pool).await?;
                Ok(())
            }
        }
    };
}

dialect!(
    sqlite,
    sqlx::Sqlite,
    Dialect::Sqlite,
    SqlitePool,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow,
    SQLITE_SQL,
    Vec<u8>,
    blob_in,
    blob_out
);
dialect!(
    postgres,
    sqlx::Postgres,
    Dialect::Postgres,
    PgPool,
    sqlx::PgConnection,
    sqlx::postgres::PgRow,
    POSTGRES_SQL,
    String,
    text_in,
    text_out
);
dialect!(
    mysql,
    sqlx::MySql,
    Dialect::MySql,
    MySqlPool,
    sqlx::MySqlConnection,
    sqlx::mysql::MySqlRow,
    MYSQL_SQL,
    Vec<u8>,
    blob_in,
    blob_out
);

impl LocationBackend for SqlLocation {
    fn kind(&self) -> BackendKind {
        match self.pool {
            SqlPool::Sqlite(_) => BackendKind::Sqlite,
            SqlPool::Postgres(_) => BackendKind::Postgres,
            SqlPool::MySql(_) => BackendKind::MySql,
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }

    fn init(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            match &self.pool {
                SqlPool::Sqlite(p) => sqlite::init(p, Dialect::Sqlite).await,
                SqlPool::Postgres(p) => postgres::init(p, Dialect::Postgres).await,
                SqlPool::MySql(p) => mysql::init(p, Dialect::MySql).await,
            }
        })
    }

    fn apply<'a>(&'a self, ops: &'a [WriteOp]) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            match &self.pool {
                SqlPool::Sqlite(p) => sqlite::apply(p, ops).await,
                SqlPool::Postgres(p) => postgres::apply(p, ops).await,
                SqlPool::MySql(p) => mysql::apply(p, ops).await,
            }
        })
    }

    fn lookup_aor<'a>(&'a self, aor: &'a [u8]) -> BoxFuture<'a, StoreResult<Vec<Binding>>> {
        Box::pin(async move {
            match &self.pool {
                SqlPool::Sqlite(p) => sqlite::lookup(p, &self.target, aor).await,
                SqlPool::Postgres(p) => postgres::lookup(p, &self.target, aor).await,
                SqlPool::MySql(p) => mysql::lookup(p, &self.target, aor).await,
            }
        })
    }

    fn load_page<'a>(
        &'a self,
        cursor: Option<&'a LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> BoxFuture<'a, StoreResult<LoadPage>> {
        Box::pin(async move {
            match &self.pool {
                SqlPool::Sqlite(p) => {
                    sqlite::load_page(p, &self.target, cursor, limit, now_s).await
                }
                SqlPool::Postgres(p) => {
                    postgres::load_page(p, &self.target, cursor, limit, now_s).await
                }
                SqlPool::MySql(p) => mysql::load_page(p, &self.target, cursor, limit, now_s).await,
            }
        })
    }

    fn delete_expired(&self, now_s: u64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            match &self.pool {
                SqlPool::Sqlite(p) => sqlite::delete_expired(p, now_s).await,
                SqlPool::Postgres(p) => postgres::delete_expired(p, now_s).await,
                SqlPool::MySql(p) => mysql::delete_expired(p, now_s).await,
            }
        })
    }

    fn health(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            match &self.pool {
                SqlPool::Sqlite(p) => sqlite::health(p).await,
                SqlPool::Postgres(p) => postgres::health(p).await,
                SqlPool::MySql(p) => mysql::health(p).await,
            }
        })
    }
}
