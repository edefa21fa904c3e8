//! The partitioned location on the shared PostgreSQL and MariaDB servers (fresh databases per
//! test, nothing killed): placement over groups, every database of a group written, full loads,
//! expiry, status changes shared by two nodes, maintenance drain, rebalancing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::*;
use geosip_p_usrloc::{DbState, PartitionedBackend, Rebalance, Status, WritePolicy};
use geosip_usrloc::{Binding, DbMode, Location, LocationBackend, WriteOp};

const USERS: usize = 60;

#[test]
fn bindings_saved_through_usrloc_are_found_across_both_groups_and_stored_on_every_database_of_their_group()
 {
    let mut g = Guards::default();
    let (Some(p), Some(m)) = (pg(3, &mut g), maria(1, &mut g)) else {
        return;
    };
    // Group 1: two PostgreSQL databases; group 2 mixes MariaDB and PostgreSQL.
    let groups = vec![group(1, &p[0..2]), group(2, &[m[0].clone(), p[2].clone()])];
    let cfg = calm(config(groups, WritePolicy::All));
    let rt = rt();
    let (loc, backend) = node(&rt, &cfg);
    for i in 0..USERS {
        save(&loc, i).unwrap();
    }
    let mut per_group = [0usize; 3];
    for i in 0..USERS {
        assert!(found(&loc, i), "user {i}");
        per_group[backend.group_of(&aor(i)).unwrap() as usize] += 1;
    }
    assert!(per_group[1] > 10 && per_group[2] > 10, "{per_group:?}");

    // Each database holds exactly the users of its group.
    let expect = |gid: u32| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..USERS)
            .filter(|&i| backend.group_of(&aor(i)) == Some(gid))
            .map(aor)
            .collect();
        v.sort();
        v
    };
    assert_eq!(aors_in(&rt, &p[0]), expect(1));
    assert_eq!(aors_in(&rt, &p[1]), expect(1));
    assert_eq!(aors_in(&rt, &m[0]), expect(2));
    assert_eq!(aors_in(&rt, &p[2]), expect(2));

    // Unregistering removes the binding from both databases of the group.
    for i in 0..10 {
        assert_eq!(loc.unregister(&aor(i), now_ms()).unwrap(), 1);
        assert!(loc.lookup(&aor(i), now_ms()).unwrap().is_empty());
    }
    for url in [&p[0], &p[1], &m[0], &p[2]] {
        let held: BTreeSet<Vec<u8>> = aors_in(&rt, url).into_iter().collect();
        assert!((0..10).all(|i| !held.contains(&aor(i))), "{url}");
    }
    // Dumps (db-only: from the store) list each user once.
    let dumped: Vec<Vec<u8>> = loc
        .dump(now_ms())
        .map(|a| a.unwrap().aor.to_vec())
        .collect();
    assert_eq!(dumped.len(), USERS - 10);
    let status = backend.cluster_status();
    assert_eq!(status["groups"][0]["read"], 1);
    assert_eq!(
        status["groups"][1]["databases"][0]["node"]["backend"],
        "mysql"
    );
}

fn binding(aor: &[u8], contact: &str, lm: u64, ua: &str, expires: u64) -> Binding {
    Binding {
        aor: Bytes::copy_from_slice(aor),
        contact: Bytes::from(contact.to_string()),
        expires,
        q: 1000,
        call_id: Bytes::from_static(b"c@x"),
        cseq: 1,
        user_agent: Bytes::from(ua.to_string()),
        last_modified: lm,
        ruid: geosip_usrloc::Ruid(u128::from(lm) + 1),
        ..Binding::default()
    }
}

#[test]
fn a_full_load_visits_every_group_and_returns_a_binding_found_on_both_databases_once_the_newest() {
    let mut g = Guards::default();
    let (Some(p), Some(m)) = (pg(2, &mut g), maria(2, &mut g)) else {
        return;
    };
    let cfg = calm(config(vec![group(1, &p), group(2, &m)], WritePolicy::All));
    let rt = rt();
    let (_loc, backend) = node(&rt, &cfg);
    let exp = now_ms() / 1000 + 3600;
    let urls = |gid: u32| if gid == 1 { &p } else { &m };
    // Per user: an old copy on the first database and a newer one on the second; every third
    // user is on the second database only (it missed a write on the first).
    let mut expected = Vec::new();
    for i in 0..40 {
        let a = aor(i);
        let gid = backend.group_of(&a).unwrap();
        let (d1, d2) = (inner(&rt, &urls(gid)[0]), inner(&rt, &urls(gid)[1]));
        let old = binding(&a, &contact(i), 1000, "old", exp);
        let new = binding(&a, &contact(i), 2000, "new", exp);
        if i % 3 != 0 {
            rt.block_on(d1.apply(&[WriteOp::Upsert(old)])).unwrap();
        }
        rt.block_on(d2.apply(&[WriteOp::Upsert(new)])).unwrap();
        // An expired row is not loaded.
        let dead = binding(&a, "sip:gone@192.0.2.9", 500, "dead", exp - 7200);
        rt.block_on(d1.apply(&[WriteOp::Upsert(dead)])).unwrap();
        expected.push(a);
    }
    expected.sort();
    // Small pages so that pages end inside groups and the merge has to cut.
    let mut got: Vec<Binding> = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = rt
            .block_on(backend.load_page(cursor.as_ref(), 7, now_ms() / 1000))
            .unwrap();
        pages += 1;
        got.extend(page.bindings);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 100);
    }
    let mut aors: Vec<Vec<u8>> = got.iter().map(|b| b.aor.to_vec()).collect();
    aors.sort();
    assert_eq!(aors, expected, "every binding exactly once");
    assert!(
        got.iter().all(|b| &b.user_agent[..] == b"new"),
        "newest copy wins"
    );
    assert!(pages >= 6);
}

#[test]
fn write_back_mode_reloads_every_group_at_start_and_flushes_changes_to_the_right_group() {
    let mut g = Guards::default();
    let Some(p) = pg(4, &mut g) else { return };
    let mut cfg = calm(config(
        vec![group(1, &p[0..2]), group(2, &p[2..4])],
        WritePolicy::All,
    ));
    let rt = rt();
    {
        let (loc, _b) = node(&rt, &cfg);
        for i in 0..30 {
            save(&loc, i).unwrap();
        }
    }
    cfg.db_mode = DbMode::WriteBack;
    let (mut loc, backend) = node(&rt, &cfg);
    assert_eq!(loc.mode(), DbMode::WriteBack);
    assert_eq!(loc.stats().contacts, 30, "reloaded from both groups");
    for i in 0..30 {
        assert!(found(&loc, i));
    }
    for i in 30..50 {
        save(&loc, i).unwrap();
    }
    loc.unregister(&aor(0), now_ms()).unwrap();
    assert!(loc.flush().unwrap() >= 21);
    for (gid, urls) in [(1u32, &p[0..2]), (2, &p[2..4])] {
        let mut want: Vec<Vec<u8>> = (1..50)
            .filter(|&i| backend.group_of(&aor(i)) == Some(gid))
            .map(aor)
            .collect();
        want.sort();
        for u in urls {
            assert_eq!(aors_in(&rt, u), want, "group {gid}");
        }
    }
    loc.shutdown().unwrap();
}

#[test]
fn expired_rows_are_deleted_from_every_database_of_every_group() {
    let mut g = Guards::default();
    let (Some(p), Some(m)) = (pg(2, &mut g), maria(2, &mut g)) else {
        return;
    };
    let cfg = calm(config(vec![group(1, &p), group(2, &m)], WritePolicy::All));
    let rt = rt();
    let (loc, backend) = node(&rt, &cfg);
    let now = now_ms() / 1000;
    let all: Vec<String> = p.iter().chain(m.iter()).cloned().collect();
    // Every database gets expired rows of users of any group (left over from anything).
    let mut planted: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, url) in all.iter().enumerate() {
        let db = inner(&rt, url);
        let ops: Vec<WriteOp> = (0..5)
            .map(|i| {
                let a = aor(100 + n * 10 + i);
                planted.push((url.clone(), a.clone()));
                WriteOp::Upsert(binding(&a, "sip:x@192.0.2.1", 1, "x", now - 10))
            })
            .collect();
        rt.block_on(db.apply(&ops)).unwrap();
    }
    for i in 0..20 {
        save(&loc, i).unwrap();
    }
    let left = |rt: &tokio::runtime::Runtime| {
        planted
            .iter()
            .filter(|(url, a)| {
                !rt.block_on(inner(rt, url).lookup_aor(a))
                    .unwrap()
                    .is_empty()
            })
            .count()
    };
    assert_eq!(left(&rt), 20);
    // usrloc's expiry in db-only mode runs the partitioned delete in the background.
    loc.expire(now_ms());
    eventually("expired rows deleted everywhere", 10, || left(&rt) == 0);
    // Live rows stay.
    for i in 0..20 {
        assert!(found(&loc, i));
    }
    assert_eq!(
        rt.block_on(backend.delete_expired(now_ms() / 1000))
            .unwrap(),
        0
    );
}

/// Two nodes over one cluster table in a fresh PostgreSQL database.
fn two_nodes(
    rt: &tokio::runtime::Runtime,
    cfg: &geosip_p_usrloc::LocationConfig,
) -> (
    (Location, std::sync::Arc<PartitionedBackend>),
    (Location, std::sync::Arc<PartitionedBackend>),
) {
    let a = node(rt, cfg);
    let b = node(rt, cfg);
    (a, b)
}

#[test]
fn two_nodes_sharing_a_cluster_table_see_the_same_status_changes() {
    let mut g = Guards::default();
    let (Some(p), Some(m), Some(c)) = (pg(2, &mut g), maria(1, &mut g), pg(1, &mut g)) else {
        return;
    };
    // Group 2's second database is a server that is not there.
    let dead = broken_db_url();
    let mut cfg = calm(config(
        vec![group(1, &p), group(2, &[m[0].clone(), dead])],
        WritePolicy::One,
    ));
    cfg.cluster_db_url = Some(c[0].clone());
    cfg.expire_window_s = 5;
    cfg.error_threshold = 3;
    let rt = rt();
    let ((loc1, n1), (_loc2, n2)) = two_nodes(&rt, &cfg);
    // Node 1 works; node 2 stays idle, so it has no error of its own.
    for i in 0..40 {
        save(&loc1, i).unwrap();
    }
    for i in 0..40 {
        assert!(found(&loc1, i));
    }
    eventually(
        "the dead database turned off in the cluster table",
        10,
        || table_row(&rt, &c[0], 2, 2).is_some_and(|r| r.0 == 0),
    );
    eventually("node 2 sees it off", 5, || {
        state(&n2, 2, 2) == Some(DbState::Off)
    });
    // Node 2 may have touched it once (its start-up connect), but never reached the
    // threshold itself: it learned "off" from the table.
    assert!(
        counter(&n2, 2, 2, "errors") < cfg.error_threshold,
        "node 2 learned it from the table"
    );
    assert!(n1.cluster_status()["node"]["failovers"].as_u64().unwrap() >= 1);

    // An operator drains a database through node 2: node 1 follows.
    rt.block_on(n2.set_status(1, 2, Status::Maintenance))
        .unwrap();
    eventually("node 1 sees the maintenance", 5, || {
        state(&n1, 1, 2) == Some(DbState::Maintenance)
    });
    // And back on through node 1: write-only first on both.
    rt.block_on(n1.set_status(1, 2, Status::On)).unwrap();
    assert_eq!(state(&n1, 1, 2), Some(DbState::WriteOnly));
    eventually("node 2 sees it write-only", 5, || {
        state(&n2, 1, 2) == Some(DbState::WriteOnly)
    });
    assert!(rt.block_on(n1.set_status(7, 1, Status::On)).is_err());
}

#[test]
fn maintenance_drains_a_database_from_every_node_within_one_reload_interval_and_it_comes_back_write_only()
 {
    let mut g = Guards::default();
    let (Some(p), Some(c)) = (pg(4, &mut g), pg(1, &mut g)) else {
        return;
    };
    let mut cfg = calm(config(
        vec![group(1, &p[0..2]), group(2, &p[2..4])],
        WritePolicy::All,
    ));
    cfg.cluster_db_url = Some(c[0].clone());
    cfg.expire_window_s = 5;
    let rt = rt();
    let ((loc1, n1), (loc2, n2)) = two_nodes(&rt, &cfg);
    for i in 0..20 {
        save(&loc1, i).unwrap();
    }
    // The operator sets group 1's first database to maintenance straight in the table (as
    // with `location.set_status` on a third node): both nodes stop using it within one
    // reload interval.
    cluster_sql(
        &rt,
        &c[0],
        "UPDATE location_cluster SET status = 2 WHERE id = 1 AND no = 1",
    );
    let t = std::time::Instant::now();
    eventually("both nodes drained it", 3, || {
        state(&n1, 1, 1) == Some(DbState::Maintenance)
            && state(&n2, 1, 1) == Some(DbState::Maintenance)
    });
    assert!(t.elapsed() < std::time::Duration::from_millis(2500));
    let before = aors_in(&rt, &p[0]);
    let (w1, r1) = (counter(&n2, 1, 1, "writes"), counter(&n2, 1, 1, "reads"));
    for i in 20..60 {
        save(&loc2, i).unwrap();
    }
    for i in 0..60 {
        assert!(found(&loc2, i) && found(&loc1, i), "user {i}");
    }
    assert_eq!(
        aors_in(&rt, &p[0]),
        before,
        "nothing written to the drained database"
    );
    assert_eq!(
        (counter(&n2, 1, 1, "writes"), counter(&n2, 1, 1, "reads")),
        (w1, r1)
    );

    // Out of maintenance: written at once, read only after the window (2 s).
    rt.block_on(n2.set_status(1, 1, Status::On)).unwrap();
    eventually("node 1 sees it write-only", 3, || {
        state(&n1, 1, 1) == Some(DbState::WriteOnly)
    });
    save(&loc1, 61).unwrap();
    if backend_group(&n1, 61) == 1 {
        assert!(aors_in(&rt, &p[0]).contains(&aor(61)));
    }
    eventually("readable again after the window", 8, || {
        matches!(state(&n1, 1, 1), Some(DbState::Standby | DbState::Read))
    });
}

fn backend_group(b: &PartitionedBackend, i: usize) -> u32 {
    b.group_of(&aor(i)).unwrap()
}

#[test]
fn rebalancing_from_two_to_three_groups_keeps_every_binding_found_during_the_transition() {
    let mut g = Guards::default();
    let (Some(p), Some(c)) = (pg(6, &mut g), pg(1, &mut g)) else {
        return;
    };
    let mut cfg = calm(config(
        vec![group(1, &p[0..2]), group(2, &p[2..4])],
        WritePolicy::All,
    ));
    cfg.cluster_db_url = Some(c[0].clone());
    cfg.expire_window_s = 600;
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let n = 90;
    for i in 0..n {
        save(&loc, i).unwrap();
    }
    let before: Vec<u32> = (0..n).map(|i| backend_group(&b, i)).collect();
    assert!(!b.in_transition());

    // The operator adds group 3 to the cluster table; the node records a new layout.
    for (no, url) in p[4..6].iter().enumerate() {
        cluster_sql(
            &rt,
            &c[0],
            &format!(
                "INSERT INTO location_cluster (id, no, url, status, errors, failover, spare, rg) VALUES (3, {}, '{url}', 1, 0, 0, 0, {})",
                no + 1,
                no + 10
            ),
        );
    }
    rt.block_on(b.reload_cluster()).unwrap();
    assert!(b.in_transition());
    let moved: Vec<usize> = (0..n).filter(|&i| backend_group(&b, i) == 3).collect();
    assert!(
        (0..n).all(|i| backend_group(&b, i) == 3 || backend_group(&b, i) == before[i]),
        "users only move to the new group"
    );
    assert!(
        moved.len() > n / 6 && moved.len() < n / 2,
        "{} of {n} moved",
        moved.len()
    );

    // Every user is still found: moved ones from their old group.
    for i in 0..n {
        assert!(found(&loc, i), "user {i} during the transition");
    }
    let st = rt.block_on(b.rebalance(Rebalance::Status)).unwrap();
    assert_eq!(
        st["remaining"].as_u64().unwrap(),
        moved.len() as u64,
        "{st}"
    );
    assert!(st["window_end"].as_u64().unwrap() > now_ms() / 1000);

    // A moved user re-registers: written to group 3, found once; another unregisters: gone
    // from the old group too.
    let (re, gone) = (moved[0], moved[1]);
    let mut refreshed = info(re, 3600);
    refreshed.cseq = 2;
    loc.add(&aor(re), refreshed, now_ms()).unwrap();
    assert!(aors_in(&rt, &p[4]).contains(&aor(re)));
    assert!(found(&loc, re));
    assert_eq!(loc.unregister(&aor(gone), now_ms()).unwrap(), 1);
    assert!(loc.lookup(&aor(gone), now_ms()).unwrap().is_empty());
    let dumped: Vec<Vec<u8>> = loc
        .dump(now_ms())
        .map(|a| a.unwrap().aor.to_vec())
        .collect();
    assert_eq!(dumped.len(), n - 1, "the dump lists every user once");

    // A second node started now knows the transition from the table.
    let (loc2, b2) = node(&rt, &cfg);
    assert!(b2.in_transition());
    assert!((0..n).filter(|&i| i != gone).all(|i| found(&loc2, i)));

    // Finish: what is left moves to group 3 and reads stop falling back.
    let done = rt.block_on(b.rebalance(Rebalance::Finish)).unwrap();
    assert_eq!(done["remaining"], 0, "{done}");
    assert!(!b.in_transition());
    for i in (0..n).filter(|&i| i != gone) {
        assert!(found(&loc, i), "user {i} after the migration");
    }
    for url in &p[0..4] {
        let held = aors_in(&rt, url);
        assert!(
            moved.iter().all(|&i| !held.contains(&aor(i))),
            "{url} still holds moved users"
        );
    }
    let mut in3: Vec<Vec<u8>> = moved
        .iter()
        .filter(|&&i| i != gone)
        .map(|&i| aor(i))
        .collect();
    in3.sort();
    assert_eq!(aors_in(&rt, &p[4]), in3);
    assert_eq!(aors_in(&rt, &p[5]), in3);
    eventually("the other node ends the transition too", 5, || {
        !b2.in_transition()
    });
}

#[test]
fn with_manual_rebalancing_a_group_is_used_only_after_start_and_can_be_removed_online() {
    let mut g = Guards::default();
    let (Some(p), Some(c)) = (pg(3, &mut g), pg(1, &mut g)) else {
        return;
    };
    let mut cfg = calm(config(vec![group(1, &p[0..2])], WritePolicy::All));
    cfg.cluster_db_url = Some(c[0].clone());
    cfg.auto_rebalance = false;
    cfg.expire_window_s = 600;
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let n = 30;
    for i in 0..n {
        save(&loc, i).unwrap();
    }
    cluster_sql(
        &rt,
        &c[0],
        &format!(
            "INSERT INTO location_cluster (id, no, url) VALUES (2, 1, '{}')",
            p[2]
        ),
    );
    rt.block_on(b.reload_cluster()).unwrap();
    assert!(
        (0..n).all(|i| backend_group(&b, i) == 1),
        "not used before start"
    );
    // An explicit layout needs auto_rebalance off; a group without rows is refused.
    assert!(
        rt.block_on(b.rebalance(Rebalance::Start(Some(vec![1, 9]))))
            .is_err()
    );

    let st = rt.block_on(b.rebalance(Rebalance::Start(None))).unwrap();
    assert!(st["done"]["started"].as_u64().is_some(), "{st}");
    assert!(b.in_transition());
    let moved: Vec<usize> = (0..n).filter(|&i| backend_group(&b, i) == 2).collect();
    assert!(!moved.is_empty());
    assert!((0..n).all(|i| found(&loc, i)));
    rt.block_on(b.rebalance(Rebalance::Finish)).unwrap();
    let mut want: Vec<Vec<u8>> = moved.iter().map(|&i| aor(i)).collect();
    want.sort();
    assert_eq!(aors_in(&rt, &p[2]), want);

    // Removing group 2 online: a layout without it, reads fall back to it, finish empties it.
    rt.block_on(b.rebalance(Rebalance::Start(Some(vec![1]))))
        .unwrap();
    assert!((0..n).all(|i| backend_group(&b, i) == 1));
    assert!(
        (0..n).all(|i| found(&loc, i)),
        "users of the removed group still found"
    );
    let st = rt.block_on(b.rebalance(Rebalance::Status)).unwrap();
    assert_eq!(
        st["remaining"].as_u64().unwrap(),
        moved.len() as u64,
        "{st}"
    );
    let done = rt.block_on(b.rebalance(Rebalance::Finish)).unwrap();
    assert_eq!(done["remaining"], 0);
    assert!(aors_in(&rt, &p[2]).is_empty(), "the removed group is empty");
    assert!((0..n).all(|i| found(&loc, i)));
}

#[test]
fn a_toml_only_setup_migrates_with_previous_groups() {
    let mut g = Guards::default();
    let Some(p) = pg(3, &mut g) else { return };
    let rt = rt();
    let old = calm(config(
        vec![group(1, &p[0..1]), group(2, &p[1..2])],
        WritePolicy::All,
    ));
    let n = 40;
    {
        let (loc, _b) = node(&rt, &old);
        for i in 0..n {
            save(&loc, i).unwrap();
        }
    }
    // The nodes restart with group 3 and the previous layout in the file.
    let mut new = calm(config(
        vec![group(1, &p[0..1]), group(2, &p[1..2]), group(3, &p[2..3])],
        WritePolicy::All,
    ));
    new.previous_groups = vec![1, 2];
    new.expire_window_s = 600;
    let (loc, b) = node(&rt, &new);
    assert!(b.in_transition());
    assert!((0..n).any(|i| backend_group(&b, i) == 3));
    for i in 0..n {
        assert!(found(&loc, i), "user {i}");
    }
    let st = rt.block_on(b.rebalance(Rebalance::Status)).unwrap();
    assert!(
        st["window_end"].as_u64().unwrap() >= now_ms() / 1000 + 590,
        "{st}"
    );
}

#[test]
fn admin_functions_answer_as_rpcs_and_metrics_are_exported_per_database() {
    let mut g = Guards::default();
    let Some(p) = pg(4, &mut g) else { return };
    let cfg = calm(config(
        vec![group(1, &p[0..2]), group(2, &p[2..4])],
        WritePolicy::All,
    ));
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    for i in 0..10 {
        save(&loc, i).unwrap();
    }
    let rpc = geosip_core::rpc::RpcRegistry::new();
    b.register_rpc(&rpc);
    let call = |name: &str, params: Vec<serde_json::Value>| rt.block_on(rpc.call(name, params));
    let cluster = call("location.cluster", vec![]).unwrap();
    assert_eq!(cluster["groups"].as_array().unwrap().len(), 2);
    assert_eq!(cluster["groups"][0]["databases"][0]["state"], "read");
    assert_eq!(cluster["groups"][0]["databases"][1]["state"], "standby");
    assert_eq!(cluster["cluster_table"], "memory (this node only)");
    let r = call(
        "location.set_status",
        vec!["2".into(), serde_json::json!(2), "maintenance".into()],
    )
    .unwrap();
    assert_eq!(r["status"], "maintenance");
    assert_eq!(state(&b, 2, 2), Some(DbState::Maintenance));
    assert!(
        call(
            "location.set_status",
            vec!["2".into(), "2".into(), "sideways".into()]
        )
        .is_err()
    );
    assert!(
        call(
            "location.set_status",
            vec!["5".into(), "1".into(), "on".into()]
        )
        .is_err()
    );
    assert!(call("location.reload_cluster", vec![]).is_ok());
    let st = call("location.rebalance", vec![]).unwrap();
    assert_eq!(st["remaining"], 0);
    assert_eq!(st["in_transition"], false);
    assert!(call("location.rebalance", vec!["sideways".into()]).is_err());

    let reg = geosip_core::metrics::Registry::new();
    b.register_metrics(&reg);
    let text = reg.render_prometheus();
    for name in [
        "geosip_location_db_queries_total{group=\"1\",db=\"1\"",
        "geosip_location_db_errors_total",
        "geosip_location_db_latency_seconds_sum",
        "geosip_location_db_latency_seconds_count",
        "geosip_location_db_state{group=\"2\",db=\"2\"",
        "state=\"maintenance\"} 1",
        "geosip_location_failovers_total",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    assert!(
        reg.flat("location")
            .iter()
            .any(|(k, v)| k.starts_with("location.location_db_writes_total") && *v > 0.0)
    );
}

#[test]
fn the_cluster_table_works_on_mariadb_with_spares_and_status_changes() {
    let mut g = Guards::default();
    let (Some(p), Some(c)) = (pg(3, &mut g), maria(1, &mut g)) else {
        return;
    };
    let dead = broken_db_url();
    let mut cfg = calm(config(
        vec![group(1, &[p[0].clone(), dead.clone()]), group(2, &p[1..2])],
        WritePolicy::One,
    ));
    cfg.spares = vec![geosip_p_usrloc::SpareConfig {
        url: p[2].clone(),
        risk_group: Some(77),
    }];
    cfg.cluster_db_url = Some(c[0].clone());
    cfg.expire_window_s = 30;
    cfg.error_threshold = 3;
    let rt = rt();
    let ((loc1, n1), (_loc2, n2)) = two_nodes(&rt, &cfg);
    for i in 0..40 {
        save(&loc1, i).unwrap();
    }
    eventually(
        "the spare replaced the dead database on both nodes",
        10,
        || {
            n1.database_url(1, 2).as_deref() == Some(p[2].as_str())
                && n2.database_url(1, 2).as_deref() == Some(p[2].as_str())
        },
    );
    assert_eq!(state(&n1, 1, 2), Some(DbState::WriteOnly));
    let spares = &n2.cluster_status()["spares"];
    assert_eq!(spares[0]["state"], "off", "{spares}");
    for i in 40..60 {
        save(&loc1, i).unwrap();
    }
    let on_spare = aors_in(&rt, &p[2]);
    assert!(
        (40..60)
            .filter(|&i| backend_group(&n1, i) == 1)
            .all(|i| on_spare.contains(&aor(i)))
    );
    rt.block_on(n2.set_status(2, 1, Status::Maintenance))
        .unwrap();
    eventually("node 1 sees the maintenance", 5, || {
        state(&n1, 2, 1) == Some(DbState::Maintenance)
    });
    rt.block_on(n1.set_status(2, 1, Status::On)).unwrap();
    assert_eq!(state(&n1, 2, 1), Some(DbState::WriteOnly));
    let st = rt.block_on(n1.rebalance(Rebalance::Finish)).unwrap();
    assert_eq!(st["layout"]["version"], 1, "{st}");
    assert!((0..60).all(|i| found(&loc1, i)));
}

fn unix_s() -> i64 {
    (now_ms() / 1000) as i64
}

#[test]
fn reads_go_to_the_database_that_has_been_up_longest() {
    let mut g = Guards::default();
    let (Some(p), Some(c)) = (pg(2, &mut g), pg(1, &mut g)) else {
        return;
    };
    let mut cfg = calm(config(vec![group(1, &p)], WritePolicy::All));
    cfg.cluster_db_url = Some(c[0].clone());
    cfg.expire_window_s = 5;
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    for i in 0..10 {
        save(&loc, i).unwrap();
    }
    // Database 2 came back (failover) 1000 s ago, database 1 only 100 s ago: both are past
    // the window and readable, and the one up longest serves the reads (p_usrloc's rule).
    let set = |no1: i64, no2: i64| {
        cluster_sql(
            &rt,
            &c[0],
            &format!(
                "UPDATE location_cluster SET failover = CASE no WHEN 1 THEN {no1} ELSE {no2} END WHERE id = 1"
            ),
        );
        rt.block_on(b.reload_cluster()).unwrap();
    };
    let now = unix_s();
    set(now - 100, now - 1000);
    let (r1, r2) = (counter(&b, 1, 1, "reads"), counter(&b, 1, 2, "reads"));
    for i in 0..10 {
        assert!(found(&loc, i));
    }
    assert_eq!(
        counter(&b, 1, 1, "reads"),
        r1,
        "the younger one is not read"
    );
    assert!(counter(&b, 1, 2, "reads") >= r2 + 10);
    // Swap the ages: the reads follow.
    set(now - 1000, now - 100);
    let (r1, r2) = (counter(&b, 1, 1, "reads"), counter(&b, 1, 2, "reads"));
    for i in 0..10 {
        assert!(found(&loc, i));
    }
    assert!(counter(&b, 1, 1, "reads") >= r1 + 10);
    assert_eq!(counter(&b, 1, 2, "reads"), r2);
    let st = b.cluster_status();
    assert_eq!(st["groups"][0]["read"], 1, "{st}");
}

#[test]
fn write_through_keeps_every_group_current_and_a_new_node_reloads_from_them() {
    let mut g = Guards::default();
    let (Some(p), Some(m)) = (pg(2, &mut g), maria(2, &mut g)) else {
        return;
    };
    let mut cfg = calm(config(vec![group(1, &p), group(2, &m)], WritePolicy::All));
    cfg.db_mode = DbMode::WriteThrough;
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    assert_eq!(loc.mode(), DbMode::WriteThrough);
    for i in 0..40 {
        save(&loc, i).unwrap();
    }
    loc.unregister(&aor(0), now_ms()).unwrap();
    // Written before the save returned: every database of each group holds its users now.
    for (gid, urls) in [(1u32, &p), (2, &m)] {
        let mut want: Vec<Vec<u8>> = (1..40)
            .filter(|&i| b.group_of(&aor(i)) == Some(gid))
            .map(aor)
            .collect();
        want.sort();
        assert!(!want.is_empty());
        for u in urls.iter() {
            assert_eq!(aors_in(&rt, u), want, "group {gid} on {u}");
        }
    }
    // A second node (or this one restarted) loads the table from every group.
    let (loc2, _b2) = node(&rt, &cfg);
    assert_eq!(loc2.stats().contacts, 39);
    assert!(!found(&loc2, 0));
    for i in 1..40 {
        assert!(found(&loc2, i), "user {i}");
    }
}

#[test]
fn the_cluster_table_is_read_from_the_replica_url_and_status_changes_go_to_the_master() {
    let mut g = Guards::default();
    let (Some(p), Some(c)) = (pg(2, &mut g), pg(2, &mut g)) else {
        return;
    };
    let (master, replica) = (c[0].clone(), c[1].clone());
    let mut cfg = calm(config(vec![group(1, &p)], WritePolicy::All));
    cfg.cluster_db_url = Some(master.clone());
    let rt = rt();
    // Seed the master from the TOML, then make the "replica" a copy of it.
    {
        let (_loc, _b) = node(&rt, &cfg);
    }
    let rows = {
        let url = master.clone();
        rt.block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_as::<_, (i64, i64, String)>(
                "SELECT id, no, url FROM location_cluster ORDER BY id, no",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        })
    };
    assert_eq!(rows.len(), 2);
    // The replica says database 2 is in maintenance: nodes read the replica.
    {
        let (_l, _b) = node(
            &rt,
            &geosip_p_usrloc::LocationConfig {
                cluster_db_url: Some(replica.clone()),
                ..cfg.clone()
            },
        );
    }
    cluster_sql(
        &rt,
        &replica,
        "UPDATE location_cluster SET status = 2 WHERE id = 1 AND no = 2",
    );
    cfg.cluster_read_url = Some(replica.clone());
    let (_loc, b) = node(&rt, &cfg);
    assert_eq!(
        state(&b, 1, 2),
        Some(DbState::Maintenance),
        "read from the replica"
    );
    // A status change is written to the master (the replica would get it by replication).
    rt.block_on(b.set_status(1, 1, Status::Maintenance))
        .unwrap();
    assert_eq!(table_row(&rt, &master, 1, 1).map(|r| r.0), Some(2));
    assert_eq!(table_row(&rt, &replica, 1, 1).map(|r| r.0), Some(1));
}
