//! One location database: its pool (a `geosip-store` SQL backend), call accounting (queries,
//! errors, latency), the node-local failure state, and its schema created on first use.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use geosip_store::location::sql::{SqlLocation, SqlPool};
use geosip_store::location::{BackendKind, LocationBackend};
use geosip_store::{StoreConfig, StoreError, StoreResult, StoreUrl};

/// What a call was, for the per-database counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write,
    Other,
}

/// Per-database counters (cumulative since start).
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) queries: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) latency_us: AtomicU64,
}

pub(crate) struct DbConn {
    /// The URL without password.
    pub(crate) target: String,
    pub(crate) kind: BackendKind,
    backend: SqlLocation,
    init_lock: tokio::sync::Mutex<bool>,
    init_done: AtomicBool,
    /// 0 unknown, 1 the database sorts (aor, bkey) byte-wise, 2 it does not.
    bytewise: AtomicU8,
    timeout: Duration,
    /// Connections of the pool (spares get a small one until they take a slot).
    pub(crate) pool_size: u32,
    pub(crate) metrics: Metrics,
    /// Errors not yet added to the cluster table.
    pub(crate) pending_errors: AtomicU64,
    /// Last time it missed a write others took (not yet written to the table), unix s; 0 none.
    pub(crate) missed_at: AtomicU64,
    /// Turned off by this node (the table may not say so yet).
    pub(crate) local_off: AtomicBool,
    pub(crate) local_off_since: AtomicU64,
    /// This node's own failover time (it brought it back or saw it miss a write), unix s.
    pub(crate) local_failover: AtomicU64,
    /// A failover of this database is running on this node.
    pub(crate) failing_over: AtomicBool,
}

impl DbConn {
    /// Builds the pool (lazily connected): a database that is down is reported by its first call.
    pub(crate) async fn open(url: &str, data_dir: &Path, cfg: &StoreConfig) -> StoreResult<DbConn> {
        let parsed = StoreUrl::parse(url, data_dir)?;
        let backend = SqlLocation::connect(&parsed, cfg).await?;
        Ok(DbConn {
            target: parsed.redacted(),
            kind: backend.kind(),
            backend,
            init_lock: tokio::sync::Mutex::new(false),
            init_done: AtomicBool::new(false),
            bytewise: AtomicU8::new(0),
            timeout: cfg.timeout,
            pool_size: cfg.pool_size,
            metrics: Metrics::default(),
            pending_errors: AtomicU64::new(0),
            missed_at: AtomicU64::new(0),
            local_off: AtomicBool::new(false),
            local_off_since: AtomicU64::new(0),
            local_failover: AtomicU64::new(0),
            failing_over: AtomicBool::new(false),
        })
    }

    pub(crate) fn backend(&self) -> &SqlLocation {
        &self.backend
    }

    /// Creates the location schema once (also on a database that was down at start, or a
    /// spare taking over).
    pub(crate) async fn ensure_init(&self) -> StoreResult<()> {
        if self.init_done.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut done = self.init_lock.lock().await;
        if *done {
            return Ok(());
        }
        let r = match tokio::time::timeout(self.timeout * 4, self.backend.init()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64 * 4)),
        };
        r?;
        self.probe_order().await;
        *done = true;
        self.init_done.store(true, Ordering::Release);
        Ok(())
    }

    /// Does the database order `(aor, bkey)` byte-wise? SQLite BLOB and MySQL VARBINARY do;
    /// PostgreSQL TEXT does under the C collation only. Merging the full loads of two databases
    /// needs the same order on both.
    async fn probe_order(&self) {
        let v = match self.backend.pool() {
            SqlPool::Postgres(p) => {
                let q = sqlx::query_scalar::<_, i32>(
                    "SELECT CASE WHEN 'B' < 'a' AND 'Z' < '_' AND '_' < 'a' AND 'a' < 'é' THEN 1 ELSE 0 END",
                )
                .fetch_one(p)
                .await;
                match q {
                    Ok(1) => 1,
                    Ok(_) => 2,
                    Err(_) => 0,
                }
            }
            SqlPool::Sqlite(_) | SqlPool::MySql(_) => 1,
        };
        self.bytewise.store(v, Ordering::Relaxed);
    }

    /// True when full loads of this database may be merged with others (see `probe_order`).
    pub(crate) fn bytewise(&self) -> bool {
        self.bytewise.load(Ordering::Relaxed) == 1
    }

    pub(crate) fn mark_not_bytewise(&self) {
        self.bytewise.store(2, Ordering::Relaxed);
    }

    /// Runs one call with the timeout, counting it. The caller counts errors for failover.
    pub(crate) async fn call<T>(
        &self,
        op: Op,
        fut: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let r = match self.ensure_init().await {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(self.timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
            },
        };
        let m = &self.metrics;
        m.queries.fetch_add(1, Ordering::Relaxed);
        m.latency_us
            .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        match op {
            Op::Read => m.reads.fetch_add(1, Ordering::Relaxed),
            Op::Write => m.writes.fetch_add(1, Ordering::Relaxed),
            Op::Other => 0,
        };
        if r.is_err() {
            m.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// Errors that say something about the database (and count towards turning it off), as opposed
/// to a value this database type cannot hold or a bad URL.
pub(crate) fn counts_as_db_error(e: &StoreError) -> bool {
    !matches!(e, StoreError::InvalidValue(_) | StoreError::Config(_))
}
