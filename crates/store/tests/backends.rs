#![allow(clippy::unwrap_used)]
//! Every location backend against a real server: the same conformance steps on each.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use geosip_store::location::schema::{self, Dialect};
use geosip_store::location::{
    Binding, LocationBackend, Received, Ruid, Transport, WriteOp, open_location,
};
use geosip_store::{StoreConfig, testutil};

const NOW: u64 = 1_900_000_000;

fn binding(aor: &str, contact: &str, expires: u64, cseq: u32) -> Binding {
    Binding {
        aor: Bytes::from(aor.to_string()),
        contact: Bytes::from(contact.to_string()),
        expires,
        q: 1000,
        call_id: Bytes::from_static(b"0123456789abcdef0123456789abcdef01234567"),
        cseq,
        received: Some(Received {
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "198.51.100.1:5060".parse().unwrap(),
        }),
        path: Bytes::new(),
        user_agent: Bytes::from_static(b"Phone/1.0"),
        instance: Bytes::new(),
        reg_id: 0,
        flags: 0,
        last_modified: NOW * 1000,
        ruid: Ruid::generate(1),
        server_id: 1,
    }
}

fn sorted(mut v: Vec<Binding>) -> Vec<Binding> {
    v.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
    v
}

async fn conformance(url: String, prefix: Option<String>) {
    let cfg = StoreConfig {
        url,
        pool_size: 2,
        timeout: Duration::from_secs(5),
        redis_prefix: prefix.unwrap_or_else(|| "geosip_test:".into()),
        ..StoreConfig::default()
    };
    let store: Arc<dyn LocationBackend> = open_location(&cfg).await.expect("open");
    store.init().await.expect("init is idempotent");
    store.health().await.expect("healthy");

    let a1 = binding(
        "sip:alice@example.com",
        "sip:alice@192.0.2.1:5060",
        NOW + 3600,
        1,
    );
    let mut a2 = binding(
        "sip:alice@example.com",
        "sip:alice@192.0.2.2:5060;transport=tcp",
        NOW + 60,
        1,
    );
    a2.instance = Bytes::from_static(b"<urn:uuid:00000000-0000-0000-0000-000000000001>");
    a2.reg_id = 1;
    a2.path = Bytes::from_static(b"<sip:edge.example.com;lr>");
    a2.received = None;
    let b1 = binding("sip:bob@example.com", "sip:bob@192.0.2.3", NOW + 10, 7);
    store
        .upsert_batch(&[a1.clone(), a2.clone(), b1.clone()])
        .await
        .expect("upsert batch");

    let got = sorted(
        store
            .lookup_aor(b"sip:alice@example.com")
            .await
            .expect("lookup"),
    );
    assert_eq!(got, sorted(vec![a1.clone(), a2.clone()]));

    // Update: same identity, new values.
    let mut a1b = a1.clone();
    a1b.cseq = 2;
    a1b.expires = NOW + 7200;
    store.upsert(&a1b).await.expect("upsert");
    let got = sorted(
        store
            .lookup_aor(b"sip:alice@example.com")
            .await
            .expect("lookup"),
    );
    assert_eq!(got, sorted(vec![a1b.clone(), a2.clone()]));

    // Paged load of live bindings, then expiry.
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .load_page(cursor.as_ref(), 1, NOW)
            .await
            .expect("load page");
        all.extend(page.bindings);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        sorted(all),
        sorted(vec![a1b.clone(), a2.clone(), b1.clone()])
    );
    let page = store
        .load_page(None, 100, NOW + 30)
        .await
        .expect("load page");
    assert_eq!(
        sorted(page.bindings),
        sorted(vec![a1b.clone(), a2.clone()]),
        "bob expired at +10"
    );
    let deleted = store
        .delete_expired(NOW + 100)
        .await
        .expect("delete expired");
    assert_eq!(deleted, 2, "bob and alice's second binding");
    assert!(
        store
            .lookup_aor(b"sip:bob@example.com")
            .await
            .expect("lookup")
            .is_empty()
    );
    assert_eq!(
        store
            .lookup_aor(b"sip:alice@example.com")
            .await
            .expect("lookup"),
        vec![a1b.clone()]
    );

    // Delete one, replace, delete the AOR; ops in one batch apply in order.
    store
        .delete_binding(b"sip:alice@example.com", a1b.key())
        .await
        .expect("delete");
    assert!(
        store
            .lookup_aor(b"sip:alice@example.com")
            .await
            .expect("lookup")
            .is_empty()
    );
    let c1 = binding("sip:carol@example.com", "sip:carol@192.0.2.9", NOW + 100, 1);
    let c2 = binding(
        "sip:carol@example.com",
        "sip:carol@192.0.2.10",
        NOW + 100,
        1,
    );
    store
        .apply(&[
            WriteOp::Upsert(c1.clone()),
            WriteOp::ReplaceAor {
                aor: c1.aor.clone(),
                bindings: vec![c2.clone()],
            },
            WriteOp::Upsert(b1.clone()),
            WriteOp::Delete {
                aor: b1.aor.clone(),
                bkey: Bytes::from(b1.bkey()),
            },
        ])
        .await
        .expect("apply");
    assert_eq!(
        store
            .lookup_aor(b"sip:carol@example.com")
            .await
            .expect("lookup"),
        vec![c2.clone()]
    );
    assert!(
        store
            .lookup_aor(b"sip:bob@example.com")
            .await
            .expect("lookup")
            .is_empty()
    );
    store
        .delete_aor(b"sip:carol@example.com")
        .await
        .expect("delete aor");
    assert!(
        store
            .lookup_aor(b"sip:carol@example.com")
            .await
            .expect("lookup")
            .is_empty()
    );

    // The shape of write-back flushes: whole AORs replaced or deleted, many per batch.
    let d1 = binding("sip:d1@example.com", "sip:d1@192.0.2.1", NOW + 100, 1);
    let d2a = binding("sip:d2@example.com", "sip:d2@192.0.2.1", NOW + 100, 1);
    let d2b = binding("sip:d2@example.com", "sip:d2@192.0.2.2", NOW + 100, 1);
    let d3 = binding("sip:d3@example.com", "sip:d3@192.0.2.1", NOW + 100, 1);
    store
        .upsert_batch(&[d3.clone(), d2b.clone()])
        .await
        .expect("upsert");
    let replace = |b: &Binding, v: Vec<Binding>| WriteOp::ReplaceAor {
        aor: b.aor.clone(),
        bindings: v,
    };
    store
        .apply(&[
            replace(&d1, vec![d1.clone()]),
            replace(&d2a, vec![d2a.clone(), d2b.clone()]),
            WriteOp::DeleteAor(d3.aor.clone()),
        ])
        .await
        .expect("bulk apply");
    assert_eq!(
        store.lookup_aor(&d1.aor).await.expect("lookup"),
        vec![d1.clone()]
    );
    assert_eq!(
        sorted(store.lookup_aor(&d2a.aor).await.expect("lookup")),
        sorted(vec![d2a.clone(), d2b.clone()])
    );
    assert!(store.lookup_aor(&d3.aor).await.expect("lookup").is_empty());
    store
        .apply(&[replace(&d1, vec![]), replace(&d2a, vec![d2b.clone()])])
        .await
        .expect("bulk apply");
    assert!(store.lookup_aor(&d1.aor).await.expect("lookup").is_empty());
    assert_eq!(
        store.lookup_aor(&d2a.aor).await.expect("lookup"),
        vec![d2b.clone()]
    );
    store.delete_aor(&d2a.aor).await.expect("delete aor");

    assert!(
        store
            .load_page(None, 100, NOW)
            .await
            .expect("load")
            .bindings
            .is_empty()
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn sqlite_backend_stores_looks_up_pages_and_expires_bindings() {
    let dir = std::env::temp_dir().join(format!("geosip-store-{}", testutil::random_name()));
    let url = format!("sqlite://{}", dir.join("loc.db").display());
    rt().block_on(conformance(url, None));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_backend_stores_looks_up_pages_and_expires_bindings() {
    let Some(db) = testutil::fresh_postgres() else {
        return;
    };
    rt().block_on(conformance(db.url.clone(), None));
}

#[test]
fn mariadb_backend_stores_looks_up_pages_and_expires_bindings() {
    let Some(db) = testutil::fresh_mariadb() else {
        return;
    };
    rt().block_on(conformance(db.url.clone(), None));
}

#[test]
fn redis_backend_stores_looks_up_pages_and_expires_bindings() {
    let Some(r) = testutil::fresh_redis_prefix() else {
        return;
    };
    rt().block_on(conformance(r.url.clone(), Some(r.prefix.clone())));
}

#[test]
fn redis_cluster_backend_stores_looks_up_pages_and_expires_bindings() {
    let Some(cluster) = testutil::ThrowawayRedisCluster::start() else {
        return;
    };
    rt().block_on(conformance(cluster.url(), None));
}

#[test]
fn a_throwaway_mariadb_starts_and_answers() {
    let Some(m) = testutil::ThrowawayMariadb::start() else {
        return;
    };
    let url = m.url();
    rt().block_on(async move {
        let cfg = StoreConfig {
            url,
            ..StoreConfig::default()
        };
        let store = open_location(&cfg).await.expect("open");
        store.health().await.expect("healthy");
    });
}

#[test]
fn an_undecodable_sqlite_row_is_skipped_not_fatal() {
    rt().block_on(async {
        let bad = binding("sip:a@x", "sip:a@5.6.7.8", NOW + 10, 1);
        let dir = std::env::temp_dir().join(format!("geosip-store-{}", testutil::random_name()));
        let path = dir.join("loc.db");
        let cfg = StoreConfig { url: format!("sqlite://{}", path.display()), ..StoreConfig::default() };
        let store = open_location(&cfg).await.expect("open");
        store.upsert(&binding("sip:a@x", "sip:a@1.2.3.4", NOW + 10, 1)).await.expect("upsert");
        store.upsert(&bad).await.expect("upsert");
        {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("open");
            sqlx::query("UPDATE location SET received = 'bogus', cseq = -5 WHERE contact = x'7369703a6140352e362e372e38'")
                .execute(&mut c)
                .await
                .expect("corrupt");
        }
        let page = store.load_page(None, 100, NOW).await.expect("load");
        assert_eq!(page.bindings.len(), 1);
        assert_eq!(page.skipped, 1);
        assert_eq!(store.lookup_aor(b"sip:a@x").await.expect("lookup").len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn shipped_sql_files_match_the_schema_the_code_creates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sql");
    for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
        let path = root.join(d.dir()).join("location.sql");
        let want = schema::sql_file(d);
        if std::env::var("GEOSIP_WRITE_SQL").is_ok() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{} differs from location::schema (GEOSIP_WRITE_SQL=1 regenerates)",
            path.display()
        );
    }
}
