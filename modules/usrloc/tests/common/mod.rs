//! Shared helpers of the storage tests: store targets on the real services and the scenario
//! every (mode, backend) pair runs.
#![allow(clippy::unwrap_used, dead_code)]

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geosip_store::location::open_location;
use geosip_store::testutil;
use geosip_usrloc::{
    Binding, ContactInfo, DbMode, Location, LocationBackend, Received, Transport, Upserted,
    UsrlocConfig,
};

pub const ALICE: &[u8] = b"sip:+4930123456@example.com";
pub const BOB: &[u8] = b"sip:+4930654321@example.com";
pub const CAROL: &[u8] = b"sip:carol@example.com";

/// Where a test stores: a URL plus whatever must live as long as the test (databases, servers).
pub struct Target {
    pub url: String,
    pub prefix: String,
    pub dir: PathBuf,
    _guards: Vec<Box<dyn Any>>,
}

impl Target {
    fn new(url: String, prefix: String, guards: Vec<Box<dyn Any>>) -> Target {
        let dir = std::env::temp_dir().join(format!("geosip-usrloc-{}", testutil::random_name()));
        Target {
            url,
            prefix,
            dir,
            _guards: guards,
        }
    }

    pub fn sqlite() -> Option<Target> {
        let mut t = Target::new(String::new(), String::new(), Vec::new());
        t.url = format!("sqlite://{}", t.dir.join("location.db").display());
        Some(t)
    }

    pub fn postgres() -> Option<Target> {
        let db = testutil::fresh_postgres()?;
        Some(Target::new(
            db.url.clone(),
            String::new(),
            vec![Box::new(db)],
        ))
    }

    pub fn mariadb() -> Option<Target> {
        let db = testutil::fresh_mariadb()?;
        Some(Target::new(
            db.url.clone(),
            String::new(),
            vec![Box::new(db)],
        ))
    }

    pub fn redis() -> Option<Target> {
        let r = testutil::fresh_redis_prefix()?;
        Some(Target::new(
            r.url.clone(),
            r.prefix.clone(),
            vec![Box::new(r)],
        ))
    }

    pub fn redis_cluster() -> Option<Target> {
        let c = testutil::ThrowawayRedisCluster::start()?;
        Some(Target::new(
            c.url(),
            "geosip_test:".into(),
            vec![Box::new(c)],
        ))
    }

    pub fn config(&self, mode: DbMode) -> UsrlocConfig {
        UsrlocConfig {
            db_mode: mode,
            db_url: self.url.clone(),
            redis_prefix: if self.prefix.is_empty() {
                "geosip_test:".into()
            } else {
                self.prefix.clone()
            },
            timer_interval_s: 0,
            flush_interval_ms: 3_600_000,
            timeout_ms: 5000,
            pool_size: 2,
            ..UsrlocConfig::default()
        }
    }

    pub fn backend(
        &self,
        rt: &tokio::runtime::Runtime,
        cfg: &UsrlocConfig,
    ) -> Arc<dyn LocationBackend> {
        rt.block_on(open_location(&cfg.store_config(&self.dir)))
            .expect("open store")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Now, rounded down to a whole second (unix ms).
pub fn now_ms() -> u64 {
    geosip_usrloc::unix_ms() / 1000 * 1000
}

pub fn info(contact: &str, expires: u64, q: u16) -> ContactInfo {
    ContactInfo {
        contact: Bytes::from(contact.to_string()),
        expires,
        q,
        call_id: Bytes::from_static(b"3848276298220188511@atlanta.example.com."),
        cseq: 1,
        received: Some(Received {
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "198.51.100.1:5060".parse().unwrap(),
        }),
        user_agent: Bytes::from_static(b"Grandstream GXP2170 1.0.11.3"),
        ..ContactInfo::default()
    }
}

pub fn contacts(v: &[Binding]) -> Vec<String> {
    v.iter()
        .map(|b| String::from_utf8_lossy(&b.contact).into_owned())
        .collect()
}

/// Polls `f` until it is true (store effects that happen in the background).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

pub fn stored(
    rt: &tokio::runtime::Runtime,
    backend: &Arc<dyn LocationBackend>,
    aor: &[u8],
) -> Vec<String> {
    let mut v = contacts(&rt.block_on(backend.lookup_aor(aor)).expect("store lookup"));
    v.sort();
    v
}

/// Save, lookup, update, delete, expire (manual now) and restart on one store in one mode.
pub fn scenario(mode: DbMode, t: &Target) {
    let rt = rt();
    let base = now_ms();
    let bs = base / 1000;
    let cfg = t.config(mode);
    let open = |now: u64| {
        Location::with_backend_at(cfg.clone(), t.backend(&rt, &cfg), rt.handle().clone(), now)
            .expect("open location")
    };
    let mut l = open(base);
    let backend = l.backend().expect("backend");
    let (c1, c2, c3, c4) = (
        "sip:+4930123456@192.0.2.1:5060;transport=udp",
        "sip:+4930123456@192.0.2.2:5060",
        "sip:bob@192.0.2.3",
        "sip:carol@192.0.2.4",
    );

    // Save and look up.
    assert_eq!(
        l.add(ALICE, info(c1, bs + 3600, 500), base).unwrap(),
        Upserted::Inserted
    );
    assert_eq!(
        l.add(ALICE, info(c2, bs + 60, 1000), base + 1).unwrap(),
        Upserted::Inserted
    );
    l.add(BOB, info(c3, bs + 3600, 1000), base).unwrap();
    assert_eq!(
        contacts(&l.lookup(ALICE, base + 1000).unwrap()),
        vec![c2, c1],
        "q order"
    );
    assert!(l.registered(BOB, base).unwrap());

    // Update.
    let updated = l
        .update(ALICE, base + 2000, |e| {
            let mut c = info(c1, bs + 7200, 500);
            c.cseq = 2;
            e.upsert(c)
        })
        .unwrap()
        .unwrap();
    assert_eq!(updated, Upserted::Updated);
    let got = l.lookup(ALICE, base + 2000).unwrap();
    assert_eq!((got[1].cseq, got[1].expires), (2, bs + 7200));

    // Delete.
    assert!(
        l.unregister_contact(BOB, c3.as_bytes(), base + 3000)
            .unwrap()
    );
    assert!(l.lookup(BOB, base + 3000).unwrap().is_empty());
    l.flush().unwrap();
    assert_eq!(
        stored(&rt, &backend, ALICE),
        vec![c1.to_string(), c2.to_string()]
    );
    assert!(stored(&rt, &backend, BOB).is_empty());

    // Expire, with a manual now two minutes later: c2 (60 s) is gone everywhere.
    let t1 = base + 120_000;
    assert_eq!(contacts(&l.lookup(ALICE, t1).unwrap()), vec![c1]);
    let swept = l.expire(t1);
    if mode != DbMode::DbOnly {
        assert_eq!(swept, 1);
    }
    l.flush().unwrap();
    eventually("the expired binding is deleted from the store", || {
        stored(&rt, &backend, ALICE) == vec![c1.to_string()]
    });

    // Carol expires at +200 s, before the restart at +300 s.
    l.add(CAROL, info(c4, bs + 200, 1000), t1).unwrap();
    l.shutdown().unwrap();
    drop(l);
    assert_eq!(stored(&rt, &backend, CAROL), vec![c4.to_string()]);

    // Restart: a new Location on the same store.
    let t2 = base + 300_000;
    let l2 = open(t2);
    let got = l2.lookup(ALICE, t2).unwrap();
    assert_eq!(contacts(&got), vec![c1]);
    assert_eq!((got[0].cseq, got[0].expires, got[0].q), (2, bs + 7200, 500));
    assert_eq!(got[0].user_agent, "Grandstream GXP2170 1.0.11.3");
    assert_eq!(got[0].received, info(c1, 0, 0).received);
    assert!(
        l2.lookup(CAROL, t2).unwrap().is_empty(),
        "expired bindings are not resurrected"
    );
    assert!(!l2.registered(BOB, t2).unwrap());
    if mode == DbMode::DbOnly {
        l2.expire(t2);
    } else {
        assert_eq!(l2.stats().contacts, 1);
    }
    eventually(
        "the expired binding is deleted from the store on restart",
        || stored(&rt, &backend, CAROL).is_empty(),
    );
    drop(l2);
}
