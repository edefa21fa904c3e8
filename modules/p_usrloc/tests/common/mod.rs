//! Helpers of the p_usrloc tests: fresh databases and throwaway servers, a `[location]` config
//! with small intervals, usrloc over the partitioned backend, direct looks into one database.
#![allow(clippy::unwrap_used, dead_code)]

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geosip_p_usrloc::{
    DatabaseEntry, DbState, GroupConfig, LocationConfig, PartitionedBackend, WritePolicy,
};
use geosip_store::location::{LoadCursor, open_location as open_store};
use geosip_store::{StoreConfig, testutil};
use geosip_usrloc::{
    Binding, ContactInfo, DbMode, Location, LocationBackend, Received, Transport, UsrlocConfig,
};

/// Keeps databases and servers alive for the test.
#[derive(Default)]
pub struct Guards(Vec<Box<dyn Any>>);

impl Guards {
    pub fn keep<T: 'static>(&mut self, t: T) {
        self.0.push(Box::new(t));
    }
}

/// `n` fresh databases on the shared PostgreSQL; `None` (skip) if it is missing.
pub fn pg(n: usize, g: &mut Guards) -> Option<Vec<String>> {
    let mut v = Vec::new();
    for _ in 0..n {
        let db = testutil::fresh_postgres()?;
        v.push(db.url.clone());
        g.keep(db);
    }
    Some(v)
}

/// `n` fresh databases on the shared MariaDB.
pub fn maria(n: usize, g: &mut Guards) -> Option<Vec<String>> {
    let mut v = Vec::new();
    for _ in 0..n {
        let db = testutil::fresh_mariadb()?;
        v.push(db.url.clone());
        g.keep(db);
    }
    Some(v)
}

/// A fresh database on a throwaway PostgreSQL server (the server is returned for kill/restart;
/// the database is dropped with the server).
pub fn throwaway_pg() -> Option<(testutil::ThrowawayPostgres, String)> {
    let s = testutil::ThrowawayPostgres::start()?;
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", s.port);
    Some((s, url))
}

/// A PostgreSQL URL of a "database" that accepts connections and closes them at once: every
/// call fails immediately (a refused connection would be retried until the pool timeout).
pub fn broken_db_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    format!("postgres://postgres@127.0.0.1:{port}/nowhere")
}

/// Generous timeouts and no failover from stray slowness, for tests that kill nothing.
pub fn calm(mut cfg: LocationConfig) -> LocationConfig {
    cfg.timeout_ms = 3000;
    cfg.error_threshold = 1000;
    cfg
}

pub fn group(id: u32, urls: &[String]) -> GroupConfig {
    GroupConfig {
        id,
        databases: urls.iter().map(|u| DatabaseEntry::Url(u.clone())).collect(),
    }
}

/// Small intervals: reload and retry every second, three errors turn a database off, a
/// database that came back is write-only for 2 s.
pub fn config(groups: Vec<GroupConfig>, policy: WritePolicy) -> LocationConfig {
    LocationConfig {
        db_mode: DbMode::DbOnly,
        write_policy: policy,
        groups,
        reload_interval_s: 1,
        retry_interval_s: 1,
        error_threshold: 3,
        expire_window_s: 2,
        timeout_ms: 500,
        pool_size: 2,
        ..LocationConfig::default()
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("geosip-p-usrloc-{}", testutil::random_name()))
}

pub fn usrloc_cfg() -> UsrlocConfig {
    UsrlocConfig {
        timer_interval_s: 0,
        flush_interval_ms: 3_600_000,
        ..UsrlocConfig::default()
    }
}

/// usrloc (in the mode of `cfg`) over a new partitioned backend: one "node".
pub fn node(
    rt: &tokio::runtime::Runtime,
    cfg: &LocationConfig,
) -> (Location, Arc<PartitionedBackend>) {
    geosip_p_usrloc::open_location(cfg, &usrloc_cfg(), &dir(), rt.handle().clone())
        .expect("open partitioned location")
}

pub fn now_ms() -> u64 {
    geosip_usrloc::unix_ms()
}

pub fn aor(i: usize) -> Vec<u8> {
    format!("sip:user{i}@example.com").into_bytes()
}

pub fn contact(i: usize) -> String {
    format!("sip:user{i}@192.0.2.{}:5060", i % 250 + 1)
}

pub fn info(i: usize, expires_in_s: u64) -> ContactInfo {
    ContactInfo {
        contact: Bytes::from(contact(i)),
        expires: now_ms() / 1000 + expires_in_s,
        q: 1000,
        call_id: Bytes::from(format!("call-{i}@test")),
        cseq: 1,
        received: Some(Received {
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "198.51.100.1:5060".parse().unwrap(),
        }),
        user_agent: Bytes::from_static(b"test-phone"),
        ..ContactInfo::default()
    }
}

/// Registers user `i` (one binding, expiring in an hour).
pub fn save(loc: &Location, i: usize) -> Result<(), geosip_usrloc::Error> {
    loc.add(&aor(i), info(i, 3600), now_ms()).map(|_| ())
}

/// User `i` is found with exactly its contact.
pub fn found(loc: &Location, i: usize) -> bool {
    match loc.lookup(&aor(i), now_ms()) {
        Ok(v) => v.len() == 1 && v[0].contact == contact(i).as_bytes(),
        Err(_) => false,
    }
}

/// Opens one location database directly (to look at what it holds).
pub fn inner(rt: &tokio::runtime::Runtime, url: &str) -> Arc<dyn LocationBackend> {
    rt.block_on(open_store(&StoreConfig {
        url: url.to_string(),
        pool_size: 1,
        timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    }))
    .expect("open inner store")
}

/// Every live binding stored in one database.
pub fn rows(rt: &tokio::runtime::Runtime, url: &str) -> Vec<Binding> {
    let b = inner(rt, url);
    let mut out = Vec::new();
    let mut cursor: Option<LoadCursor> = None;
    let now = now_ms() / 1000;
    loop {
        let page = rt
            .block_on(b.load_page(cursor.as_ref(), 1000, now))
            .unwrap();
        out.extend(page.bindings);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out
}

/// The AORs one database holds, sorted.
pub fn aors_in(rt: &tokio::runtime::Runtime, url: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = rows(rt, url).into_iter().map(|b| b.aor.to_vec()).collect();
    v.sort();
    v.dedup();
    v
}

/// Polls `f` until it is true.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

pub fn state(b: &PartitionedBackend, group: u32, no: u32) -> Option<DbState> {
    b.database_state(group, no)
}

/// A per-database counter of this node from `location.cluster` (`reads`, `writes`...).
pub fn counter(b: &PartitionedBackend, group: u32, no: u32, name: &str) -> u64 {
    let s = b.cluster_status();
    s["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["id"] == group)
        .flat_map(|g| g["databases"].as_array().cloned().unwrap_or_default())
        .find(|d| d["no"] == no)
        .and_then(|d| d["node"][name].as_u64())
        .unwrap_or(0)
}

/// The cluster table row `(status, url, errors, failover, spare)` read straight from the
/// cluster database (PostgreSQL).
pub fn table_row(
    rt: &tokio::runtime::Runtime,
    cluster_url: &str,
    id: u32,
    no: u32,
) -> Option<(i64, String, i64, i64, i64)> {
    let url = cluster_url.to_string();
    rt.block_on(async move {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.ok()?;
        sqlx::query_as::<_, (i64, String, i64, i64, i64)>(
            "SELECT status, url, errors, failover, spare FROM location_cluster WHERE id = $1 AND no = $2",
        )
        .bind(i64::from(id))
        .bind(i64::from(no))
        .fetch_optional(&mut c)
        .await
        .ok()
        .flatten()
    })
}

/// Runs SQL on the (PostgreSQL) cluster database.
pub fn cluster_sql(rt: &tokio::runtime::Runtime, cluster_url: &str, sql: &str) {
    let (url, sql) = (cluster_url.to_string(), sql.to_string());
    rt.block_on(async move {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    });
}
