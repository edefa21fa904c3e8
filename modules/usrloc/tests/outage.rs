//! Throwaway servers killed and brought back: write-back loses nothing and catches up,
//! write-through refuses updates while the store is down and works again after.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ALICE, BOB, info, now_ms, rt, stored};
use geosip_store::testutil::{self, ThrowawayPostgres, ThrowawayRedis};
use geosip_usrloc::{DbMode, Error, Location, UsrlocConfig};

fn cfg(mode: DbMode, url: String) -> UsrlocConfig {
    UsrlocConfig {
        db_mode: mode,
        db_url: url,
        timer_interval_s: 0,
        flush_interval_ms: 3_600_000,
        timeout_ms: 1000,
        pool_size: 2,
        redis_prefix: "geosip_test:".into(),
        ..UsrlocConfig::default()
    }
}

fn aor(i: usize) -> Vec<u8> {
    format!("sip:user{i}@example.com").into_bytes()
}

/// Retries a store-backed call until the store is back (pools reconnect on their own).
fn until_ok<T>(what: &str, mut f: impl FnMut() -> Result<T, Error>) -> T {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if start.elapsed() < std::time::Duration::from_secs(20) => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{what} did not recover: {e}"),
        }
    }
}

#[test]
fn write_back_on_postgres_loses_nothing_while_the_database_is_down_and_catches_up() {
    let Some(pg) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(db) = testutil::fresh_postgres_at("127.0.0.1", pg.port) else {
        return;
    };
    let rt = rt();
    let c = cfg(DbMode::WriteBack, db.url.clone());
    let dir = std::env::temp_dir();
    let l = Location::open(c, &dir, rt.handle().clone()).unwrap();
    let backend = l.backend().unwrap();
    let (base, bs) = (now_ms(), now_ms() / 1000);
    for i in 0..20 {
        l.add(&aor(i), info("sip:c@192.0.2.1", bs + 3600, 1000), base)
            .unwrap();
    }
    assert_eq!(l.flush().unwrap(), 20);

    pg.kill();
    // REGISTER processing goes on in memory.
    for i in 20..40 {
        l.add(&aor(i), info("sip:c@192.0.2.1", bs + 3600, 1000), base)
            .unwrap();
    }
    for i in 0..5 {
        l.unregister(&aor(i), base).unwrap();
    }
    let mut refreshed = info("sip:c@192.0.2.1", bs + 7200, 1000);
    refreshed.cseq = 2;
    l.add(&aor(10), refreshed, base).unwrap();
    assert!(matches!(l.flush(), Err(Error::Store(_))));
    let s = l.stats();
    assert!(s.flush_failures >= 1 && s.store.unwrap().errors >= 1);
    assert_eq!(s.flush_pending, 26, "failed AORs stay queued");

    pg.restart();
    until_ok("flush after the restart", || l.flush());
    assert_eq!(l.stats().flush_pending, 0);
    for i in 0..5 {
        assert!(
            stored(&rt, &backend, &aor(i)).is_empty(),
            "unregistered during the outage"
        );
    }
    for i in 5..40 {
        assert_eq!(stored(&rt, &backend, &aor(i)).len(), 1, "user{i}");
    }
    let row = rt.block_on(backend.lookup_aor(&aor(10))).unwrap();
    assert_eq!((row[0].cseq, row[0].expires), (2, bs + 7200));
    drop(l);
    drop(db);
}

#[test]
fn write_through_on_postgres_refuses_updates_while_the_database_is_down_and_recovers() {
    let Some(pg) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(db) = testutil::fresh_postgres_at("127.0.0.1", pg.port) else {
        return;
    };
    let rt = rt();
    let l = Location::open(
        cfg(DbMode::WriteThrough, db.url.clone()),
        &std::env::temp_dir(),
        rt.handle().clone(),
    )
    .unwrap();
    let (base, bs) = (now_ms(), now_ms() / 1000);
    l.add(ALICE, info("sip:a@192.0.2.1", bs + 3600, 1000), base)
        .unwrap();

    pg.kill();
    let err = l
        .add(BOB, info("sip:b@192.0.2.2", bs + 3600, 1000), base)
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
    assert!(matches!(l.unregister(ALICE, base), Err(Error::Store(_))));
    // Memory is unchanged and lookups keep working from memory.
    assert!(l.lookup(BOB, base).unwrap().is_empty());
    assert_eq!(l.lookup(ALICE, base).unwrap().len(), 1);
    assert!(l.stats().store_failures >= 2);

    pg.restart();
    until_ok("an update after the restart", || {
        l.add(BOB, info("sip:b@192.0.2.2", bs + 3600, 1000), base)
    });
    assert_eq!(l.lookup(BOB, base).unwrap().len(), 1);
    assert_eq!(stored(&rt, &l.backend().unwrap(), BOB).len(), 1);
    drop(l);
    drop(db);
}

#[test]
fn write_back_on_redis_loses_nothing_while_redis_hangs_and_catches_up() {
    let Some(redis) = ThrowawayRedis::start() else {
        return;
    };
    let rt = rt();
    let c = UsrlocConfig {
        timeout_ms: 300,
        ..cfg(DbMode::WriteBack, redis.url())
    };
    let l = Location::open(c, &std::env::temp_dir(), rt.handle().clone()).unwrap();
    let backend = l.backend().unwrap();
    let (base, bs) = (now_ms(), now_ms() / 1000);
    for i in 0..10 {
        l.add(&aor(i), info("sip:c@192.0.2.1", bs + 3600, 1000), base)
            .unwrap();
    }
    l.flush().unwrap();

    redis.pause();
    for i in 10..20 {
        l.add(&aor(i), info("sip:c@192.0.2.1", bs + 3600, 1000), base)
            .unwrap();
    }
    l.unregister(&aor(0), base).unwrap();
    assert!(matches!(l.flush(), Err(Error::Store(_))));
    assert!(l.stats().store.unwrap().timeouts >= 1);

    redis.resume();
    until_ok("flush after resume", || l.flush());
    assert!(stored(&rt, &backend, &aor(0)).is_empty());
    for i in 1..20 {
        assert_eq!(stored(&rt, &backend, &aor(i)).len(), 1, "user{i}");
    }
}

#[test]
fn write_through_on_redis_refuses_updates_while_redis_is_down_and_recovers() {
    let Some(mut redis) = ThrowawayRedis::start() else {
        return;
    };
    let rt = rt();
    let l = Location::open(
        cfg(DbMode::WriteThrough, redis.url()),
        &std::env::temp_dir(),
        rt.handle().clone(),
    )
    .unwrap();
    let (base, bs) = (now_ms(), now_ms() / 1000);
    l.add(ALICE, info("sip:a@192.0.2.1", bs + 3600, 1000), base)
        .unwrap();

    redis.kill();
    assert!(matches!(
        l.add(BOB, info("sip:b@192.0.2.2", bs + 3600, 1000), base),
        Err(Error::Store(_))
    ));
    assert!(l.lookup(BOB, base).unwrap().is_empty());
    assert_eq!(l.lookup(ALICE, base).unwrap().len(), 1);

    redis.restart();
    until_ok("an update after the restart", || {
        l.add(BOB, info("sip:b@192.0.2.2", bs + 3600, 1000), base)
    });
    assert_eq!(stored(&rt, &l.backend().unwrap(), BOB).len(), 1);
}

#[test]
fn db_only_on_postgres_fails_lookups_while_the_database_is_down_and_recovers() {
    let Some(pg) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(db) = testutil::fresh_postgres_at("127.0.0.1", pg.port) else {
        return;
    };
    let rt = rt();
    let l = Location::open(
        cfg(DbMode::DbOnly, db.url.clone()),
        &std::env::temp_dir(),
        rt.handle().clone(),
    )
    .unwrap();
    let (base, bs) = (now_ms(), now_ms() / 1000);
    l.add(ALICE, info("sip:a@192.0.2.1", bs + 3600, 1000), base)
        .unwrap();
    pg.kill();
    assert!(matches!(l.lookup(ALICE, base), Err(Error::Store(_))));
    pg.restart();
    let got = until_ok("a lookup after the restart", || l.lookup(ALICE, base));
    assert_eq!(got.len(), 1);
    drop(l);
    drop(db);
}
