//! A synchronous, in-process reader of the embedded (SQLite) subscriber table.
//!
//! Authentication reads one subscriber per REGISTER whose user is not cached. Through sqlx that
//! read crosses two threads (sqlx's SQLite worker and back, plus `block_in_place` around it)
//! and costs about 130 µs of CPU in context switches; a prepared statement on a connection of
//! our own, on the calling thread, costs a few µs. The table is in WAL mode, so these readers
//! never block the sqlx writer and always see its committed rows. Writes stay on sqlx.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::SubscriberRow;

/// Idle connections kept (one per thread that reads at once is enough).
const MAX_IDLE: usize = 8;

/// Longest a reader keeps one snapshot of the table: a row written by another connection
/// (`geosip subscriber add` on the same file) is seen at most this much later. Writes through
/// this server also update the cache at once.
const SNAPSHOT_MAX: Duration = Duration::from_millis(100);

// The key columns are not read back: `=` compares bytes, so they are the arguments.
const GET: &str = "SELECT ha1_md5, ha1_sha256, ha1_sha512_256, password, \
                   enabled, attrs, created, updated FROM subscriber WHERE username = ?1 AND domain = ?2";

/// Read-only connections to one SQLite file, opened on first use.
#[derive(Debug)]
pub struct SyncSqliteReader {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Reader>>,
    /// Writes made through this process ([`wrote`](Self::wrote)); a snapshot older than the
    /// last one is not used again.
    writes: AtomicU64,
    /// [`SNAPSHOT_MAX`]; longer in tests.
    snapshot_max: Duration,
}

/// A connection and, while one is open, when its read transaction began.
#[derive(Debug)]
struct Reader {
    conn: Connection,
    since: Option<Instant>,
    /// [`SyncSqliteReader::writes`] when the snapshot began.
    writes: u64,
}

impl Reader {
    /// Whether the snapshot must not serve a read at `now`: older than `max`, or (given the
    /// reader's write count) taken before a write through this process.
    fn stale(&self, now: Instant, max: Duration, writes: Option<u64>) -> bool {
        self.since.is_some_and(|t| {
            now.duration_since(t) >= max || writes.is_some_and(|w| w != self.writes)
        })
    }

    /// Ends the snapshot; false when that failed (the connection is then not kept: it could
    /// stay inside its old transaction).
    fn end(&mut self) -> bool {
        self.since = None;
        self.conn.execute_batch("COMMIT").is_ok()
    }
}

impl SyncSqliteReader {
    /// A reader of the database file `path`; nothing is opened yet.
    pub fn new(path: PathBuf, busy_timeout: Duration) -> SyncSqliteReader {
        SyncSqliteReader {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
            snapshot_max: SNAPSHOT_MAX,
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(self.busy_timeout)?;
        // Pages straight from the OS page cache instead of copies into SQLite's own.
        c.pragma_update(None, "mmap_size", 256i64 << 20)?;
        Ok(c)
    }

    /// Reads one subscriber on the calling thread: `Some(None)` = no such user. `None` when the
    /// read failed (file or table not created yet, locked past the timeout...): the caller then
    /// uses the asynchronous path, which reports the error as every other backend does.
    pub fn get(&self, username: &str, domain: &str) -> Option<Option<SubscriberRow>> {
        self.with_reader(|c| one(&mut c.prepare_cached(GET)?, username, domain))
    }

    /// Reads the subscribers of `domain` among `users` on the calling thread, one lookup
    /// each on one connection and snapshot (a batch of parked requests, see the auth
    /// module's batched reads); users not in the table are absent. `None` as for
    /// [`get`](Self::get).
    pub fn get_many(&self, domain: &str, users: &[&str]) -> Option<Vec<SubscriberRow>> {
        self.with_reader(|c| {
            let mut rows = Vec::with_capacity(users.len());
            let mut st = c.prepare_cached(GET)?;
            for u in users {
                if let Some(r) = one(&mut st, u, domain)? {
                    rows.push(r);
                }
            }
            Ok(rows)
        })
    }

    /// Runs `f` on an idle connection (opened if none), inside its current snapshot or a
    /// fresh one; `None` when opening or `f` failed.
    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Option<R> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut r = match pooled {
            Some(r) => r,
            None => Reader {
                conn: self.open().ok()?,
                since: None,
                writes: 0,
            },
        };
        let now = Instant::now();
        let writes = self.writes.load(Ordering::Acquire);
        // Reads share one read transaction for up to SNAPSHOT_MAX: starting and ending one
        // per read (WAL lock, wal-index check, two fcntl calls) cost more than the lookup.
        let mut keep = true;
        if r.stale(now, self.snapshot_max, Some(writes)) {
            keep = r.end();
        }
        if keep && r.since.is_none() {
            // Without a transaction the read still works (autocommit), on a connection that
            // is then not kept.
            keep = r.conn.execute_batch("BEGIN").is_ok();
            r.since = keep.then_some(now);
            r.writes = writes;
        }
        let res = f(&r.conn);
        // A connection that failed (e.g. the table is missing) is not kept: the next read
        // opens a fresh one and sees a schema created meanwhile.
        if res.is_ok()
            && keep
            && let Ok(mut v) = self.idle.lock()
            && v.len() < MAX_IDLE
        {
            v.push(r);
        }
        res.ok()
    }

    /// A write was committed through this process: the next read of every connection, also
    /// of one in use now, takes a fresh snapshot.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends the read transactions of idle connections older than SNAPSHOT_MAX, so that an
    /// idle reader does not hold back WAL checkpoints (call it periodically).
    pub fn end_stale(&self) {
        let now = Instant::now();
        if let Ok(mut v) = self.idle.lock() {
            v.retain_mut(|r| !r.stale(now, self.snapshot_max, None) || r.end());
        }
    }
}

/// One subscriber by its key, with `st`, the prepared [`GET`].
fn one(
    st: &mut rusqlite::CachedStatement<'_>,
    username: &str,
    domain: &str,
) -> rusqlite::Result<Option<SubscriberRow>> {
    st.query_row([username, domain], |r| {
        Ok(SubscriberRow {
            username: username.to_string(),
            domain: domain.to_string(),
            ha1_md5: r.get(0)?,
            ha1_sha256: r.get(1)?,
            ha1_sha512_256: r.get(2)?,
            password: r.get(3)?,
            enabled: r.get::<_, i64>(4)? != 0,
            attrs: r.get(5)?,
            created: r.get(6)?,
            updated: r.get(7)?,
        })
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh WAL-mode subscriber table in a directory of its own, and a writer connection.
    fn table(name: &str) -> (PathBuf, PathBuf, Connection) {
        let dir =
            std::env::temp_dir().join(format!("geosip-syncsqlite-{name}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sub.db");
        let _ = std::fs::remove_file(&path);
        let w = Connection::open(&path).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE subscriber (username TEXT NOT NULL, domain TEXT NOT NULL, \
             ha1_md5 TEXT NOT NULL DEFAULT '', ha1_sha256 TEXT NOT NULL DEFAULT '', ha1_sha512_256 TEXT NOT NULL DEFAULT '', \
             password TEXT, enabled INTEGER NOT NULL DEFAULT 1, attrs TEXT NOT NULL DEFAULT '{}', created INTEGER NOT NULL, \
             updated INTEGER NOT NULL, PRIMARY KEY (username, domain));",
        )
        .unwrap();
        (dir, path, w)
    }

    fn insert(w: &Connection, user: &str) {
        w.execute(
            "INSERT INTO subscriber (username, domain, created, updated) VALUES (?1, 'example.com', 1, 1)",
            [user],
        )
        .unwrap();
    }

    #[test]
    fn reads_a_row_written_through_another_connection_and_misses_an_unknown_user() {
        let (dir, path, w) = table("read");
        let r = SyncSqliteReader::new(path.clone(), Duration::from_secs(1));
        assert_eq!(r.get("alice", "example.com").unwrap(), None);
        w.execute(
            "INSERT INTO subscriber (username, domain, ha1_md5, enabled, created, updated) VALUES ('alice', 'example.com', 'abc', 1, 1, 2)",
            [],
        )
        .unwrap();
        // The reader's snapshot is at most SNAPSHOT_MAX old.
        std::thread::sleep(SNAPSHOT_MAX);
        let row = r.get("alice", "example.com").unwrap().unwrap();
        assert_eq!(
            (row.ha1_md5.as_str(), row.enabled, row.updated),
            ("abc", true, 2)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_read_returns_the_known_users_of_the_domain_and_leaves_out_the_others() {
        let (dir, path, w) = table("many");
        insert(&w, "alice");
        insert(&w, "bob");
        let r = SyncSqliteReader::new(path.clone(), Duration::from_secs(1));
        let rows = r
            .get_many("example.com", &["alice", "mallory", "bob"])
            .unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.username.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(r.get_many("other.org", &["alice"]).unwrap().is_empty());
        assert!(r.get_many("example.com", &[]).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_idle_reader_lets_go_of_its_snapshot_so_the_wal_can_be_checkpointed() {
        let (dir, path, w) = table("ckpt");
        // A blocked checkpoint answers at once instead of retrying for rusqlite's 5 s default.
        w.busy_timeout(Duration::ZERO).unwrap();
        let checkpoint_blocked = || {
            w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                == 1
        };
        insert(&w, "a");
        let r = SyncSqliteReader::new(path.clone(), Duration::from_millis(10));
        assert!(r.get("a", "example.com").unwrap().is_some());
        insert(&w, "b");
        assert!(
            checkpoint_blocked(),
            "a reader inside its snapshot holds the WAL"
        );
        std::thread::sleep(SNAPSHOT_MAX);
        r.end_stale();
        assert!(
            !checkpoint_blocked(),
            "after end_stale the WAL is checkpointed"
        );
        assert!(r.get("b", "example.com").unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_write_through_this_process_is_read_back_at_once() {
        let (dir, path, w) = table("wrote");
        // A snapshot that never gets old: only wrote() can make the new row visible.
        let r = SyncSqliteReader {
            snapshot_max: Duration::from_secs(3600),
            ..SyncSqliteReader::new(path.clone(), Duration::from_secs(1))
        };
        assert_eq!(r.get("bob", "example.com").unwrap(), None);
        insert(&w, "bob");
        assert_eq!(
            r.get("bob", "example.com").unwrap(),
            None,
            "reads share the snapshot taken before the insert"
        );
        r.wrote();
        assert!(
            r.get("bob", "example.com").unwrap().is_some(),
            "no stale snapshot after wrote()"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_defers_to_the_async_path() {
        let r = SyncSqliteReader::new("/nonexistent/geosip/sub.db".into(), Duration::from_secs(1));
        assert!(r.get("a", "b").is_none());
    }
}
