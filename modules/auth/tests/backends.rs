#![allow(clippy::unwrap_used)]
//! The subscriber layer (cache + provisioning) on every SQL backend, and master/replica routing.

use std::collections::BTreeMap;
use std::sync::Arc;

use geosip_auth::{AuthConfig, SubscriberError, Subscribers};
use geosip_store::subscriber::SubscriberStore;
use geosip_store::{StoreConfig, testutil};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn cfg(url: &str, replica: &str) -> AuthConfig {
    AuthConfig {
        db_url: url.into(),
        read_db_url: replica.into(),
        pool_size: 2,
        ..AuthConfig::default()
    }
}

fn provisioning(url: String) {
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    let subs: Arc<Subscribers> =
        Subscribers::open(&cfg(&url, ""), &dir, rt.handle().clone()).unwrap();
    let attrs = BTreeMap::from([("team".to_string(), "blue".to_string())]);
    subs.add("alice@example.com", "pw", &attrs).unwrap();
    assert!(matches!(
        subs.add("alice@Example.com", "pw", &attrs),
        Err(SubscriberError::Exists(_))
    ));
    let a = subs.get(b"alice", b"example.com").unwrap().unwrap();
    assert_eq!(a.attr("team"), Some("blue"));
    assert!(a.ha1(geosip_auth::Algorithm::Sha512_256).is_some());
    subs.clear_cache();
    assert_eq!(
        subs.get(b"alice", b"example.com")
            .unwrap()
            .unwrap()
            .attr("team"),
        Some("blue"),
        "read back from the table"
    );
    assert!(
        subs.get(b"Alice", b"example.com").unwrap().is_none(),
        "usernames are case-sensitive"
    );
    let old = subs.show("alice@example.com").unwrap();
    subs.passwd("alice@example.com", "pw2").unwrap();
    let new = subs.show("alice@example.com").unwrap();
    assert_ne!(
        old.ha1(geosip_auth::Algorithm::Md5),
        new.ha1(geosip_auth::Algorithm::Md5)
    );
    assert_eq!(
        subs.import_csv("bob@example.com,x\ncarol@example.org,y,team=red\n".as_bytes())
            .unwrap(),
        2
    );
    assert_eq!(subs.list(None, 10, None).unwrap().len(), 3);
    assert_eq!(
        subs.list(Some("example.org"), 10, None).unwrap()[0].username,
        "carol"
    );
    assert!(
        subs.import_csv("dave@example.com,x\nbob@example.com,x\n".as_bytes())
            .is_err()
    );
    assert!(
        matches!(
            subs.show("dave@example.com"),
            Err(SubscriberError::NotFound(_))
        ),
        "all or nothing"
    );
    subs.rm("bob@example.com").unwrap();
    assert!(matches!(
        subs.rm("bob@example.com"),
        Err(SubscriberError::NotFound(_))
    ));
    assert!(!subs.exists(b"bob", b"example.com"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sqlite_subscribers_are_provisioned_and_read_through_the_cache() {
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    provisioning(format!("sqlite://{}", dir.join("s.db").display()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_subscribers_are_provisioned_and_read_through_the_cache() {
    let Some(db) = testutil::fresh_postgres() else {
        return;
    };
    provisioning(db.url.clone());
}

#[test]
fn mariadb_subscribers_are_provisioned_and_read_through_the_cache() {
    let Some(db) = testutil::fresh_mariadb() else {
        return;
    };
    provisioning(db.url.clone());
}

/// Writes go to the master; authentication reads the replica; a subscriber added through this
/// node authenticates at once even before replication (the cache holds the write).
fn replica(master: String, replica: String) {
    let rt = rt();
    let _in_rt = rt.enter(); // sqlx pools are created inside a runtime
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    // The replica's schema comes from replication; create it by hand here.
    let rstore = SubscriberStore::open(
        &StoreConfig {
            url: replica.clone(),
            data_dir: dir.clone(),
            ..StoreConfig::default()
        },
        None,
    )
    .unwrap();
    rt.block_on(rstore.init()).unwrap();
    let c = AuthConfig {
        cache_negative_ttl: 0,
        ..cfg(&master, &replica)
    };
    let subs = Subscribers::open(&c, &dir, rt.handle().clone()).unwrap();
    subs.add("alice@example.com", "pw", &BTreeMap::new())
        .unwrap();
    assert!(
        subs.get(b"alice", b"example.com").unwrap().is_some(),
        "write-through cache"
    );
    subs.clear_cache();
    assert!(
        subs.get(b"alice", b"example.com").unwrap().is_none(),
        "not yet on the replica"
    );
    assert_eq!(
        subs.show("alice@example.com").unwrap().username,
        "alice",
        "show reads the master"
    );
    // Replicate by hand.
    let mstore = SubscriberStore::open(
        &StoreConfig {
            url: master,
            data_dir: dir.clone(),
            ..StoreConfig::default()
        },
        None,
    )
    .unwrap();
    let row = rt
        .block_on(mstore.get("alice", "example.com"))
        .unwrap()
        .unwrap();
    rt.block_on(rstore.insert(&row)).unwrap();
    // An in-process SQLite reader keeps one snapshot for at most 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(110));
    assert!(
        subs.get(b"alice", b"example.com").unwrap().is_some(),
        "read from the replica"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sqlite_authentication_reads_the_replica_and_provisioning_writes_the_master() {
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    replica(
        format!("sqlite://{}", dir.join("m.db").display()),
        format!("sqlite://{}", dir.join("r.db").display()),
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_authentication_reads_the_replica_and_provisioning_writes_the_master() {
    let (Some(m), Some(r)) = (testutil::fresh_postgres(), testutil::fresh_postgres()) else {
        return;
    };
    replica(m.url.clone(), r.url.clone());
}

#[test]
fn mariadb_authentication_reads_the_replica_and_provisioning_writes_the_master() {
    let (Some(m), Some(r)) = (testutil::fresh_mariadb(), testutil::fresh_mariadb()) else {
        return;
    };
    replica(m.url.clone(), r.url.clone());
}

/// The batch reader: requests parked on 110 users of one domain and one of another are
/// resumed after queries of one domain and up to 64 users each, with every subscriber cached
/// and unknown users cached as unknown.
fn batched_reads(url: String) {
    use std::time::Duration;
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    let subs: Arc<Subscribers> =
        Subscribers::open(&cfg(&url, ""), &dir, rt.handle().clone()).unwrap();
    let none = BTreeMap::new();
    let csv: String = (0..100).map(|i| format!("u{i}@example.com,pw\n")).collect();
    assert_eq!(subs.import_csv(csv.as_bytes()).unwrap(), 100);
    subs.add("x@example.org", "pw", &none).unwrap();
    subs.clear_cache();
    assert!(subs.batches_reads());
    let b = geosip_auth::BatchReader::start(&subs, Duration::from_millis(50), 1000).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let names: Vec<(String, &str)> = (0..100)
        .map(|i| (format!("u{i}"), "example.com"))
        .chain((0..10).map(|i| (format!("nobody{i}"), "example.com")))
        .chain([("x".to_string(), "example.org")])
        .collect();
    for (n, d) in &names {
        let tx = tx.clone();
        let name = n.clone();
        assert!(
            b.park(
                n.as_bytes(),
                d.as_bytes(),
                500,
                Box::new(move || tx.send(name).unwrap())
            )
            .is_ok()
        );
    }
    let mut resumed: Vec<String> = (0..names.len())
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    resumed.sort();
    let mut want: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(resumed, want, "every parked request runs once");
    for i in 0..100 {
        let u = format!("u{i}");
        assert!(
            matches!(subs.cached(u.as_bytes(), b"example.com"), Some(Some(_))),
            "{u} cached"
        );
    }
    assert!(matches!(
        subs.cached(b"nobody3", b"example.com"),
        Some(None)
    ));
    assert!(matches!(subs.cached(b"x", b"example.org"), Some(Some(_))));
    assert!(
        subs.cached(b"x", b"example.com").is_none(),
        "domains are apart"
    );
    // At least two queries for 110 users (64 at most each) and one for the other domain;
    // more when the reader started before every request was parked.
    assert!(b.stats.queries.get() >= 3, "{:?}", b.stats);
    assert_eq!(b.stats.users.get(), 111);
    assert_eq!(b.stats.failures.get(), 0);
    assert_eq!(b.parked(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn embedded_sqlite_batched_reads_cache_every_subscriber_of_a_batch_like_the_remote_tables() {
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    batched_reads(format!("sqlite://{}", dir.join("b.db").display()));
    let _ = std::fs::remove_dir_all(dir);
}

/// On the embedded table a SIP worker runs a due batch itself between receives
/// (`run_due`): the request resumes on the worker's thread with its subscriber cached, and
/// nothing runs before a request is parked.
#[test]
fn on_the_embedded_table_a_due_batch_runs_on_the_worker_that_asks_for_it() {
    use std::time::Duration;
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    let url = format!("sqlite://{}", dir.join("w.db").display());
    let subs: Arc<Subscribers> =
        Subscribers::open(&cfg(&url, ""), &dir, rt.handle().clone()).unwrap();
    subs.add("alice@example.com", "pw", &BTreeMap::new())
        .unwrap();
    subs.clear_cache();
    assert!(subs.reads_locally());
    let b = geosip_auth::BatchReader::start(&subs, Duration::from_millis(50), 100).unwrap();
    // The reader's own thread would wait 10 s before taking the batch instead.
    b.set_inline_grace(Duration::from_secs(10));
    assert!(!b.run_due(), "nothing parked, nothing to run");
    let (tx, rx) = std::sync::mpsc::channel();
    let parked = b.park(
        b"alice",
        b"example.com",
        400,
        Box::new(move || tx.send(std::thread::current().id()).unwrap()),
    );
    assert!(parked.is_ok());
    // No recent traffic: a lone request is due at once.
    assert!(b.run_due(), "the due batch runs on the calling thread");
    assert_eq!(rx.try_recv().unwrap(), std::thread::current().id());
    assert!(matches!(
        subs.cached(b"alice", b"example.com"),
        Some(Some(_))
    ));
    assert_eq!(
        (b.parked(), b.stats.queries.get(), b.stats.on_worker.get()),
        (0, 1, 1)
    );
    assert!(!b.run_due());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_batched_reads_cache_every_subscriber_of_a_batch_in_one_query_per_64() {
    let Some(db) = testutil::fresh_postgres() else {
        return;
    };
    batched_reads(db.url.clone());
}

#[test]
fn mariadb_batched_reads_cache_every_subscriber_of_a_batch_in_one_query_per_64() {
    let Some(db) = testutil::fresh_mariadb() else {
        return;
    };
    batched_reads(db.url.clone());
}

/// When the database cannot be reached the parked requests still run (and then read the
/// table themselves, which answers them 503): nothing waits forever. Past its bounds (count,
/// bytes) a request is handed back, and one that panics does not stop the reader.
#[test]
fn parked_requests_run_again_when_the_batched_read_fails() {
    use std::time::Duration;
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("geosip-authdb-{}", testutil::random_name()));
    let c = AuthConfig {
        timeout_ms: 300,
        ..cfg("postgres://nobody@127.0.0.1:1/none", "")
    };
    let subs = Subscribers::open_lazy(&c, &dir, rt.handle().clone()).unwrap();
    let b = geosip_auth::BatchReader::start(&subs, Duration::from_millis(1), 10).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    for _ in 0..3 {
        let tx = tx.clone();
        assert!(
            b.park(
                b"alice",
                b"example.com",
                500,
                Box::new(move || tx.send(()).unwrap())
            )
            .is_ok()
        );
    }
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(b.stats.failures.get(), 1);
    assert!(
        subs.cached(b"alice", b"example.com").is_none(),
        "nothing cached"
    );
    // Full (one allowed): handed back to run at once. The reader is held busy in a resume so
    // that the request parked next stays parked.
    let b = geosip_auth::BatchReader::start(&subs, Duration::from_millis(1), 1).unwrap();
    let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let hold = Box::new(move || {
        busy_tx.send(()).unwrap();
        go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    });
    assert!(b.park(b"x", b"example.com", 500, hold).is_ok());
    busy_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(b.park(b"a", b"example.com", 500, Box::new(|| ())).is_ok());
    assert!(b.park(b"b", b"example.com", 500, Box::new(|| ())).is_err());
    assert_eq!(b.stats.overflows.get(), 1);
    go_tx.send(()).unwrap();
    // Bytes are capped too (10,000 large requests would be 640 MiB).
    let b = geosip_auth::BatchReader::start(&subs, Duration::from_millis(1), 10_000).unwrap();
    let big = geosip_auth::batch::MAX_PARKED_BYTES + 1;
    assert!(
        b.park(b"big", b"example.com", big, Box::new(|| ()))
            .is_err()
    );
    // A request that panics when it runs again does not stop the reader.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    assert!(
        b.park(b"p", b"example.com", 500, Box::new(|| panic!("boom")))
            .is_ok()
    );
    assert!(
        b.park(
            b"q",
            b"example.com",
            500,
            Box::new(move || tx.send(()).unwrap())
        )
        .is_ok()
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the request after the panicking one ran");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    assert!(
        b.park(
            b"r",
            b"example.com",
            500,
            Box::new(move || tx.send(()).unwrap())
        )
        .is_ok()
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("and the reader still takes new ones");
}
