//! Subscriber reads from PostgreSQL or MySQL driven by the calling thread.
//!
//! Authentication reads one subscriber per REGISTER whose user is not cached, on a SIP worker
//! thread. Through the shared sqlx pool that read is a round trip between threads: the worker
//! blocks, the runtime's I/O driver wakes a runtime thread when the answer arrives, which wakes
//! the worker; measured at ~130 µs of CPU per read. Here each worker takes a connection of its
//! own together with a single-threaded runtime that owns its socket, so `block_on` on the
//! worker drives the I/O itself (as libpq does for Kamailio's `db_postgres`). Writes and every
//! other query stay on the pool.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::SubscriberRow;

/// Idle connections kept: one per SIP worker thread that reads at the same time (workers are
/// one per CPU for UDP plus the TCP workers), so a busy server does not reconnect per read.
/// Connections are only opened when that many reads overlap.
const MAX_IDLE: usize = 64;

/// After a failure (the server is down, a timeout), this path is skipped for a while: the
/// caller uses the pool, which reports the error and recovers as every backend does.
const BACKOFF: Duration = Duration::from_secs(5);

/// Which server.
#[derive(Debug, Clone, Copy)]
pub enum RemoteKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
}

enum Conn {
    Pg(sqlx::postgres::PgConnection),
    My(sqlx::mysql::MySqlConnection),
}

/// A connection and the runtime that owns its socket.
struct Slot {
    rt: tokio::runtime::Runtime,
    conn: Conn,
}

/// Connections to one database for reads on the calling thread, opened on first use.
pub struct SyncRemoteReader {
    kind: RemoteKind,
    url: String,
    timeout: Duration,
    idle: Mutex<Vec<Slot>>,
    skip_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SyncRemoteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncRemoteReader")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl SyncRemoteReader {
    /// A reader of `url`; nothing is opened yet.
    pub fn new(kind: RemoteKind, url: &str, timeout: Duration) -> SyncRemoteReader {
        SyncRemoteReader {
            kind,
            url: url.to_string(),
            timeout,
            idle: Mutex::new(Vec::new()),
            skip_until: Mutex::new(None),
        }
    }

    fn open(&self) -> Option<Slot> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let t = self.timeout;
        let conn = match self.kind {
            RemoteKind::Postgres => Conn::Pg(
                rt.block_on(async {
                    tokio::time::timeout(t, sqlx::postgres::PgConnection::connect(&self.url)).await
                })
                .ok()?
                .ok()?,
            ),
            RemoteKind::MySql => Conn::My(
                rt.block_on(async {
                    tokio::time::timeout(t, sqlx::mysql::MySqlConnection::connect(&self.url)).await
                })
                .ok()?
                .ok()?,
            ),
        };
        Some(Slot { rt, conn })
    }

    fn failed(&self) {
        if let Ok(mut s) = self.skip_until.lock() {
            *s = Some(Instant::now() + BACKOFF);
        }
    }

    /// Reads one subscriber: `Some(None)` = no such user; `None` = not done here (inside an
    /// async runtime, a recent failure, or this read failed): use the pool.
    pub fn get(&self, username: &str, domain: &str) -> Option<Option<SubscriberRow>> {
        self.with_conn(|rt, conn, t| match conn {
            Conn::Pg(c) => rt.block_on(async {
                tokio::time::timeout(t, super::sql::get_pg(c, username, domain)).await
            }),
            Conn::My(c) => rt.block_on(async {
                tokio::time::timeout(t, super::sql::get_mysql(c, username, domain)).await
            }),
        })
    }

    /// Every subscriber of `domain` among `users` (at most [`super::sql::MANY_MAX`]) in one
    /// query; users not in the table are absent. `None` as for [`get`](Self::get).
    pub fn get_many(&self, domain: &str, users: &[&str]) -> Option<Vec<SubscriberRow>> {
        self.with_conn(|rt, conn, t| match conn {
            Conn::Pg(c) => rt.block_on(async {
                tokio::time::timeout(t, super::sql::get_many_pg(c, domain, users)).await
            }),
            Conn::My(c) => rt.block_on(async {
                tokio::time::timeout(t, super::sql::get_many_mysql(c, domain, users)).await
            }),
        })
    }

    /// Runs one query on an idle (or new) connection of this reader and keeps the connection
    /// when it worked.
    fn with_conn<T>(
        &self,
        q: impl FnOnce(
            &tokio::runtime::Runtime,
            &mut Conn,
            Duration,
        ) -> Result<crate::StoreResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        // A runtime cannot be driven from inside another (tests, RPC tasks): use the pool.
        if tokio::runtime::Handle::try_current().is_ok() {
            return None;
        }
        if let Ok(s) = self.skip_until.lock()
            && s.is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut slot = match pooled.or_else(|| self.open()) {
            Some(s) => s,
            None => {
                self.failed();
                return None;
            }
        };
        let Slot { rt, conn } = &mut slot;
        match q(rt, conn, self.timeout) {
            Ok(Ok(v)) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < MAX_IDLE
                {
                    idle.push(slot);
                }
                Some(v)
            }
            // The connection may be broken: drop it; the pool reports the error.
            _ => {
                self.failed();
                None
            }
        }
    }
}
