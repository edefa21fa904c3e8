#![allow(clippy::unwrap_used)]
//! The subscriber table on every SQL backend: the same conformance steps on each, replica
//! routing, and the shipped DDL files.

use std::time::Duration;

use geosip_store::location::schema::Dialect;
use geosip_store::subscriber::{SubscriberRow, SubscriberStore, is_duplicate, schema};
use geosip_store::{StoreConfig, testutil};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cfg(url: &str) -> StoreConfig {
    StoreConfig {
        url: url.to_string(),
        pool_size: 2,
        timeout: Duration::from_secs(5),
        ..StoreConfig::default()
    }
}

fn row(user: &str, domain: &str) -> SubscriberRow {
    SubscriberRow {
        username: user.into(),
        domain: domain.into(),
        ha1_md5: "939e7578ed9e3c518a452acee763bce9".into(),
        ha1_sha256: "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232".into(),
        ha1_sha512_256: String::new(),
        password: None,
        enabled: true,
        attrs: r#"{"group":"sales","ünï":"cödé"}"#.into(),
        created: 1_900_000_000,
        updated: 1_900_000_000,
    }
}

async fn conformance(url: String) {
    let store = SubscriberStore::open(&cfg(&url), None).unwrap();
    store.init().await.expect("init");
    store.init().await.expect("init is idempotent");
    assert!(!store.has_replica());

    let alice = row("alice", "example.com");
    let mut bob = row("Bob", "example.com");
    bob.password = Some("s3cret with spaces".into());
    bob.enabled = false;
    let carol = row("carol", "other.org");
    store.insert(&alice).await.expect("insert alice");
    store.insert(&bob).await.expect("insert bob");
    store.insert(&carol).await.expect("insert carol");

    assert_eq!(
        store.get("alice", "example.com").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.get("Bob", "example.com").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store.get("bob", "example.com").await.unwrap(),
        None,
        "usernames are case-sensitive"
    );
    assert_eq!(store.get("alice", "other.org").await.unwrap(), None);

    let dup = store.insert(&alice).await.expect_err("duplicate");
    assert!(is_duplicate(&dup), "{dup}");

    // Update (passwd) and delete.
    let mut alice2 = alice.clone();
    alice2.ha1_md5 = "00000000000000000000000000000000".into();
    alice2.updated += 10;
    assert!(store.update(&alice2).await.unwrap());
    assert_eq!(
        store.get("alice", "example.com").await.unwrap(),
        Some(alice2.clone())
    );
    assert!(!store.update(&row("nobody", "example.com")).await.unwrap());

    // Listing: ordered by domain then username, keyset paging, domain filter.
    let all = store.list(None, None, 100).await.unwrap();
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.domain.as_str(), r.username.as_str()))
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&("example.com", "alice")) && names.contains(&("other.org", "carol")));
    let first = store.list(None, None, 1).await.unwrap();
    let next = store
        .list(None, Some((&first[0].domain, &first[0].username)), 10)
        .await
        .unwrap();
    assert_eq!(first.len() + next.len(), 3);
    assert!(!next.contains(&first[0]));
    let ex = store.list(Some("example.com"), None, 100).await.unwrap();
    assert_eq!(ex.len(), 2);
    assert!(ex.iter().all(|r| r.domain == "example.com"));
    let ex_next = store
        .list(
            Some("example.com"),
            Some(("example.com", &ex[0].username)),
            100,
        )
        .await
        .unwrap();
    assert_eq!(ex_next, vec![ex[1].clone()]);

    // Import: all or nothing, the failing row is named.
    let batch = vec![
        row("dave", "example.com"),
        row("erin", "example.com"),
        row("alice", "example.com"),
    ];
    let (i, e) = store.insert_all(&batch).await.expect_err("alice exists");
    assert_eq!(i, 2);
    assert!(is_duplicate(&e), "{e}");
    assert_eq!(
        store.get("dave", "example.com").await.unwrap(),
        None,
        "rolled back"
    );
    store.insert_all(&batch[..2]).await.expect("import");
    assert!(store.get("erin", "example.com").await.unwrap().is_some());

    // Limits are enforced before the database sees the row.
    let mut long = row(&"x".repeat(65), "example.com");
    assert!(store.insert(&long).await.is_err());
    long.username = "y".into();
    long.ha1_md5 = "not hex".into();
    assert!(store.insert(&long).await.is_err());

    assert!(store.delete("alice", "example.com").await.unwrap());
    assert!(!store.delete("alice", "example.com").await.unwrap());
    assert_eq!(store.get("alice", "example.com").await.unwrap(), None);
}

#[test]
fn sqlite_subscriber_table_adds_gets_updates_lists_imports_and_deletes() {
    let dir = std::env::temp_dir().join(format!("geosip-sub-{}", testutil::random_name()));
    let url = format!("sqlite://{}", dir.join("sub.db").display());
    rt().block_on(conformance(url));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_subscriber_table_adds_gets_updates_lists_imports_and_deletes() {
    let Some(db) = testutil::fresh_postgres() else {
        return;
    };
    rt().block_on(conformance(db.url.clone()));
}

#[test]
fn mariadb_subscriber_table_adds_gets_updates_lists_imports_and_deletes() {
    let Some(db) = testutil::fresh_mariadb() else {
        return;
    };
    rt().block_on(conformance(db.url.clone()));
}

/// Two databases: the master gets the writes, the replica serves the reads; a row written to
/// the master shows up in reads once it has been replicated (by hand here).
async fn replica_routing(master_url: String, replica_url: String) {
    let store = SubscriberStore::open(&cfg(&master_url), Some(&replica_url)).unwrap();
    assert!(store.has_replica());
    store.init().await.unwrap();
    // The replica is provisioned by replication, not by us.
    let replica = SubscriberStore::open(&cfg(&replica_url), None).unwrap();
    replica.init().await.unwrap();

    let alice = row("alice", "example.com");
    store.insert(&alice).await.unwrap();
    assert_eq!(
        store.get("alice", "example.com").await.unwrap(),
        None,
        "reads go to the replica"
    );
    assert_eq!(
        store.get_master("alice", "example.com").await.unwrap(),
        Some(alice.clone())
    );
    assert!(store.list(None, None, 10).await.unwrap().is_empty());

    replica.insert(&alice).await.unwrap(); // "replication"
    assert_eq!(
        store.get("alice", "example.com").await.unwrap(),
        Some(alice.clone())
    );

    assert!(store.delete("alice", "example.com").await.unwrap());
    assert_eq!(
        store.get_master("alice", "example.com").await.unwrap(),
        None
    );
    assert!(
        store.get("alice", "example.com").await.unwrap().is_some(),
        "not yet replicated"
    );
}

#[test]
fn sqlite_reads_go_to_the_replica_and_writes_to_the_master() {
    let dir = std::env::temp_dir().join(format!("geosip-sub-{}", testutil::random_name()));
    let m = format!("sqlite://{}", dir.join("master.db").display());
    let r = format!("sqlite://{}", dir.join("replica.db").display());
    rt().block_on(replica_routing(m, r));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgres_reads_go_to_the_replica_and_writes_to_the_master() {
    let (Some(m), Some(r)) = (testutil::fresh_postgres(), testutil::fresh_postgres()) else {
        return;
    };
    rt().block_on(replica_routing(m.url.clone(), r.url.clone()));
}

#[test]
fn mariadb_reads_go_to_the_replica_and_writes_to_the_master() {
    let (Some(m), Some(r)) = (testutil::fresh_mariadb(), testutil::fresh_mariadb()) else {
        return;
    };
    rt().block_on(replica_routing(m.url.clone(), r.url.clone()));
}

#[test]
fn redis_urls_are_refused_for_subscribers() {
    let e = SubscriberStore::open(&cfg("redis://127.0.0.1:6379"), None).expect_err("redis");
    assert!(e.to_string().contains("SQL"), "{e}");
}

#[test]
fn shipped_subscriber_sql_files_match_the_schema_the_code_creates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sql");
    for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
        let path = root.join(d.dir()).join("subscriber.sql");
        let want = schema::sql_file(d);
        if std::env::var("GEOSIP_WRITE_SQL").is_ok() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{} differs from subscriber::schema (GEOSIP_WRITE_SQL=1 regenerates)",
            path.display()
        );
    }
}
