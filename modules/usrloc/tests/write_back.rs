//! Write-back specifics: coalescing, the background flusher, the bounded queue.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{ALICE, Target, eventually, info, now_ms, rt, stored};
use geosip_usrloc::{DbMode, Location, UsrlocConfig};

#[test]
fn write_back_coalesces_repeated_updates_of_a_binding_into_one_write() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = t.config(DbMode::WriteBack);
    let l = Location::with_backend(cfg.clone(), t.backend(&rt, &cfg), rt.handle().clone()).unwrap();
    let base = now_ms();
    for i in 0..100u32 {
        let mut c = info("sip:a@192.0.2.1", base / 1000 + 3600, 1000);
        c.cseq = i;
        l.add(ALICE, c, base + u64::from(i)).unwrap();
    }
    assert_eq!(l.stats().flush_pending, 1);
    assert_eq!(l.stats().updates, 99);
    let calls_before = l.stats().store.unwrap().calls;
    assert_eq!(l.flush().unwrap(), 1, "one AOR written for 100 changes");
    let s = l.stats();
    assert_eq!((s.flush_pending, s.flushed_aors), (0, 1));
    assert_eq!(
        s.store.unwrap().calls,
        calls_before + 1,
        "one store transaction"
    );
    let row = rt.block_on(l.backend().unwrap().lookup_aor(ALICE)).unwrap();
    assert_eq!((row.len(), row[0].cseq), (1, 99));
    assert_eq!(l.flush().unwrap(), 0, "nothing left to write");
}

#[test]
fn write_back_flushes_by_itself_every_flush_interval() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = UsrlocConfig {
        flush_interval_ms: 50,
        ..t.config(DbMode::WriteBack)
    };
    let l = Location::with_backend(cfg.clone(), t.backend(&rt, &cfg), rt.handle().clone()).unwrap();
    let backend = l.backend().unwrap();
    l.add(
        ALICE,
        info("sip:a@192.0.2.1", now_ms() / 1000 + 3600, 1000),
        now_ms(),
    )
    .unwrap();
    eventually("the flusher writes the binding", || {
        stored(&rt, &backend, ALICE).len() == 1
    });
    assert!(l.unregister(ALICE, now_ms()).unwrap() == 1);
    eventually("the flusher deletes the binding", || {
        stored(&rt, &backend, ALICE).is_empty()
    });
}

#[test]
fn an_overflowing_flush_queue_falls_back_to_a_full_rewrite_that_loses_nothing() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = UsrlocConfig {
        flush_queue_max: 5,
        flush_batch: 3,
        ..t.config(DbMode::WriteBack)
    };
    let base = now_ms();
    let l = Location::with_backend(cfg.clone(), t.backend(&rt, &cfg), rt.handle().clone()).unwrap();
    let backend = l.backend().unwrap();
    l.add(
        b"sip:old@example.com",
        info("sip:old@192.0.2.1", base / 1000 + 3600, 1000),
        base,
    )
    .unwrap();
    l.flush().unwrap();
    l.unregister(b"sip:old@example.com", base).unwrap();
    for i in 0..20 {
        l.add(
            format!("sip:u{i}@example.com").as_bytes(),
            info("sip:c@192.0.2.1", base / 1000 + 3600, 1000),
            base,
        )
        .unwrap();
    }
    assert_eq!(
        l.stats().flush_pending,
        5,
        "the queue stops growing at flush_queue_max"
    );
    l.flush().unwrap();
    let s = l.stats();
    assert_eq!((s.resyncs, s.flush_pending), (1, 0));
    for i in 0..20 {
        assert_eq!(
            stored(&rt, &backend, format!("sip:u{i}@example.com").as_bytes()).len(),
            1
        );
    }
    assert!(
        stored(&rt, &backend, b"sip:old@example.com").is_empty(),
        "AORs gone from memory are deleted"
    );
}

#[test]
fn dropping_a_write_back_location_flushes_what_is_pending() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = t.config(DbMode::WriteBack);
    let backend = t.backend(&rt, &cfg);
    let l = Location::with_backend(cfg.clone(), backend.clone(), rt.handle().clone()).unwrap();
    l.add(
        ALICE,
        info("sip:a@192.0.2.1", now_ms() / 1000 + 3600, 1000),
        now_ms(),
    )
    .unwrap();
    drop(l);
    assert_eq!(stored(&rt, &backend, ALICE).len(), 1);
}

#[test]
fn the_expiry_timer_sweeps_by_itself_when_configured() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = UsrlocConfig {
        timer_interval_s: 1,
        ..t.config(DbMode::WriteThrough)
    };
    let l = Location::with_backend(cfg.clone(), t.backend(&rt, &cfg), rt.handle().clone()).unwrap();
    let backend = l.backend().unwrap();
    // Expires in one second from now.
    l.add(
        ALICE,
        info("sip:a@192.0.2.1", now_ms() / 1000 + 1, 1000),
        now_ms(),
    )
    .unwrap();
    assert_eq!(stored(&rt, &backend, ALICE).len(), 1);
    eventually("the timer expires the binding", || l.stats().expired == 1);
    eventually("and deletes it from the store", || {
        stored(&rt, &backend, ALICE).is_empty()
    });
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn open_builds_the_store_from_the_config_url_and_reloads_it() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = UsrlocConfig {
        db_url: "sqlite:usrloc.db".into(),
        ..t.config(DbMode::WriteThrough)
    };
    let l = Location::open(cfg.clone(), &t.dir, rt.handle().clone()).unwrap();
    l.add(
        ALICE,
        info("sip:a@192.0.2.1", now_ms() / 1000 + 3600, 1000),
        now_ms(),
    )
    .unwrap();
    drop(l);
    assert!(t.dir.join("usrloc.db").exists());
    let l = Location::open(cfg, &t.dir, rt.handle().clone()).unwrap();
    assert_eq!(l.lookup(ALICE, now_ms()).unwrap().len(), 1);
}

#[test]
fn a_blocking_mode_called_from_a_current_thread_runtime_errs_instead_of_deadlocking() {
    let t = Target::sqlite().unwrap();
    let rt = rt();
    let cfg = t.config(DbMode::WriteThrough);
    let l = Location::with_backend(cfg.clone(), t.backend(&rt, &cfg), rt.handle().clone()).unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let r = single.block_on(async {
        l.add(
            ALICE,
            info("sip:a@192.0.2.1", now_ms() / 1000 + 60, 1000),
            now_ms(),
        )
    });
    assert!(matches!(r, Err(geosip_usrloc::Error::WouldBlock)));
    // From a multi-thread runtime worker it works (block_in_place).
    let l = std::sync::Arc::new(l);
    let l2 = l.clone();
    rt.block_on(async move {
        tokio::spawn(async move {
            l2.add(
                ALICE,
                info("sip:a@192.0.2.1", now_ms() / 1000 + 60, 1000),
                now_ms(),
            )
        })
        .await
        .unwrap()
        .unwrap();
    });
    assert_eq!(l.lookup(ALICE, now_ms()).unwrap().len(), 1);
}
