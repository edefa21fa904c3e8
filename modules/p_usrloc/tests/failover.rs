//! Failover against throwaway PostgreSQL and MariaDB servers that the tests kill and restart: no save lost
//! under `one` and `majority`, failed saves reported under `all`, turning off for every node,
//! coming back write-only, spare takeover. One test at a time (they start servers).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;

use common::*;
use geosip_p_usrloc::{DbState, Status, WritePolicy};
use geosip_usrloc::Error as UlError;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_database_killed_mid_stream_loses_no_save_under_policy_one_and_is_turned_off_for_every_node() {
    let _s = serial();
    let mut g = Guards::default();
    let (Some((a, ua)), Some((_b, ub)), Some((_c, uc)), Some((_d, ud)), Some(cl)) = (
        throwaway_pg(),
        throwaway_pg(),
        throwaway_pg(),
        throwaway_pg(),
        pg(1, &mut g),
    ) else {
        return;
    };
    // Two groups of two throwaway servers; the cluster table on the shared server.
    let mut cfg = config(
        vec![group(1, &[ua.clone(), ub.clone()]), group(2, &[uc, ud])],
        WritePolicy::One,
    );
    cfg.cluster_db_url = Some(cl[0].clone());
    let rt = rt();
    let (loc, n1) = node(&rt, &cfg);
    let (loc2, n2) = node(&rt, &cfg);
    let n = 120;
    for i in 0..n {
        if i == 40 {
            a.kill();
        }
        save(&loc, i).unwrap_or_else(|e| panic!("save {i} under policy one: {e}"));
    }
    for i in 0..n {
        assert!(found(&loc, i), "user {i} on node 1");
        assert!(found(&loc2, i), "user {i} on node 2");
    }
    // Every save of group 1 is on the survivor.
    let survivors = aors_in(&rt, &ub);
    for i in (0..n).filter(|&i| n1.group_of(&aor(i)) == Some(1)) {
        assert!(survivors.contains(&aor(i)), "user {i} lost");
    }
    eventually("turned off in the cluster table", 10, || {
        table_row(&rt, &cl[0], 1, 1).is_some_and(|r| r.0 == 0 && r.2 >= 3)
    });
    assert_eq!(state(&n1, 1, 1), Some(DbState::Off));
    eventually("node 2 sees it off", 5, || {
        state(&n2, 1, 1) == Some(DbState::Off)
    });
    let s = n1.cluster_status();
    assert_eq!(s["groups"][0]["read"], 2, "{s}");
}

#[test]
fn a_database_that_comes_back_is_written_but_not_read_until_the_window_passes_then_read_again() {
    let _s = serial();
    let mut g = Guards::default();
    let (Some((a, ua)), Some((_b, ub)), Some(p), Some(cl)) =
        (throwaway_pg(), throwaway_pg(), pg(2, &mut g), pg(1, &mut g))
    else {
        return;
    };
    let mut cfg = config(
        vec![group(1, &[ua.clone(), ub.clone()]), group(2, &p)],
        WritePolicy::One,
    );
    cfg.cluster_db_url = Some(cl[0].clone());
    cfg.expire_window_s = 3;
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let mine: Vec<usize> = (0..200)
        .filter(|&i| b.group_of(&aor(i)) == Some(1))
        .take(30)
        .collect();
    for &i in &mine[..10] {
        save(&loc, i).unwrap();
    }
    a.kill();
    // Saved while it is down: only the survivor has them.
    for &i in &mine[10..] {
        save(&loc, i).unwrap();
    }
    eventually("turned off", 10, || state(&b, 1, 1) == Some(DbState::Off));
    a.restart();
    // The watcher (every second) brings it back: on, failover = now, write-only.
    eventually("back write-only", 10, || {
        state(&b, 1, 1) == Some(DbState::WriteOnly)
    });
    let row = table_row(&rt, &cl[0], 1, 1).unwrap();
    assert_eq!(row.0, 1, "status on in the cluster table");
    assert!(row.3 as u64 >= now_ms() / 1000 - 5, "failover time reset");
    // Not read: lookups of all its users are served by the other database, and they find
    // the users saved while it was down.
    let reads = counter(&b, 1, 1, "reads");
    let writes = counter(&b, 1, 1, "writes");
    for &i in &mine {
        assert!(found(&loc, i), "user {i}");
    }
    assert_eq!(
        counter(&b, 1, 1, "reads"),
        reads,
        "a write-only database is not read"
    );
    // Written: the users re-register (as phones do within their expiry) and it gets them.
    for &i in &mine {
        let mut c = info(i, 3600);
        c.cseq = 2;
        loc.add(&aor(i), c, now_ms()).unwrap();
    }
    assert!(counter(&b, 1, 1, "writes") >= writes + mine.len() as u64);
    let held = aors_in(&rt, &ua);
    assert!(mine.iter().all(|&i| held.contains(&aor(i))));
    // After the window it is readable again: drain the other one and it serves every read.
    eventually("readable after the window", 10, || {
        matches!(state(&b, 1, 1), Some(DbState::Standby | DbState::Read))
    });
    rt.block_on(b.set_status(1, 2, Status::Maintenance))
        .unwrap();
    assert_eq!(state(&b, 1, 1), Some(DbState::Read));
    let reads = counter(&b, 1, 1, "reads");
    for &i in &mine {
        assert!(
            found(&loc, i),
            "user {i} read from the database that came back"
        );
    }
    assert!(counter(&b, 1, 1, "reads") >= reads + mine.len() as u64);
}

#[test]
fn under_policy_all_saves_that_miss_a_database_are_reported_as_errors_and_succeed_when_retried() {
    let _s = serial();
    let mut g = Guards::default();
    let (Some((a, ua)), Some((_b, ub)), Some(p)) = (throwaway_pg(), throwaway_pg(), pg(2, &mut g))
    else {
        return;
    };
    let cfg = config(vec![group(1, &[ua, ub]), group(2, &p)], WritePolicy::All);
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let n = 80;
    let mut reported = 0;
    for i in 0..n {
        if i == 20 {
            a.kill();
        }
        let mut tries = 0;
        loop {
            match save(&loc, i) {
                Ok(()) => break,
                Err(UlError::Store(e)) => {
                    // The registrar answers 503 with Retry-After; the phone retries.
                    assert!(e.is_unavailable(), "{e}");
                    reported += 1;
                    tries += 1;
                    assert!(tries < 20, "user {i} never stored");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(
        reported >= 1,
        "a save that missed a database must be reported"
    );
    assert!(
        reported <= 10,
        "{reported}: the database should be turned off after 3 errors"
    );
    for i in 0..n {
        assert!(found(&loc, i), "user {i}");
    }
    assert_eq!(state(&b, 1, 1), Some(DbState::Off));
    assert!(
        b.cluster_status()["node"]["write_failures"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn under_policy_majority_a_group_of_three_loses_no_save_when_one_dies() {
    let _s = serial();
    let mut g = Guards::default();
    let (Some((a, ua)), Some((_b, ub)), Some(m), Some(p)) = (
        throwaway_pg(),
        throwaway_pg(),
        maria(1, &mut g),
        pg(2, &mut g),
    ) else {
        return;
    };
    // A group of three mixing PostgreSQL and MariaDB.
    let cfg = config(
        vec![group(1, &[ua, ub.clone(), m[0].clone()]), group(2, &p)],
        WritePolicy::Majority,
    );
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let n = 80;
    for i in 0..n {
        if i == 20 {
            a.kill();
        }
        save(&loc, i).unwrap_or_else(|e| panic!("save {i} under majority: {e}"));
    }
    for i in 0..n {
        assert!(found(&loc, i), "user {i}");
    }
    let (on_b, on_m) = (aors_in(&rt, &ub), aors_in(&rt, &m[0]));
    for i in (0..n).filter(|&i| b.group_of(&aor(i)) == Some(1)) {
        assert!(on_b.contains(&aor(i)) && on_m.contains(&aor(i)), "user {i}");
    }
    assert_eq!(state(&b, 1, 1), Some(DbState::Off));
}

#[test]
fn a_spare_from_another_risk_group_takes_the_place_of_a_dead_database() {
    let _s = serial();
    let mut g = Guards::default();
    let (Some((a, ua)), Some((_b, ub)), Some((_sp, us)), Some(p), Some(cl)) = (
        throwaway_pg(),
        throwaway_pg(),
        throwaway_pg(),
        pg(3, &mut g),
        pg(1, &mut g),
    ) else {
        return;
    };
    let mut cfg = config(
        vec![
            geosip_p_usrloc::GroupConfig {
                id: 1,
                databases: vec![
                    geosip_p_usrloc::DatabaseEntry::Full {
                        url: ua.clone(),
                        risk_group: Some(1),
                    },
                    geosip_p_usrloc::DatabaseEntry::Full {
                        url: ub.clone(),
                        risk_group: Some(2),
                    },
                ],
            },
            group(2, &p[0..2]),
        ],
        WritePolicy::All,
    );
    // The first spare shares the dead database's risk group and must not be taken.
    cfg.spares = vec![
        geosip_p_usrloc::SpareConfig {
            url: p[2].clone(),
            risk_group: Some(1),
        },
        geosip_p_usrloc::SpareConfig {
            url: us.clone(),
            risk_group: Some(3),
        },
    ];
    cfg.cluster_db_url = Some(cl[0].clone());
    cfg.expire_window_s = 30;
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let n = 60;
    for i in 0..n {
        if i == 20 {
            a.kill();
        }
        let mut tries = 0;
        while save(&loc, i).is_err() {
            tries += 1;
            assert!(tries < 20, "user {i} never stored");
        }
    }
    eventually("the spare took the slot", 10, || {
        table_row(&rt, &cl[0], 1, 1).is_some_and(|r| r.1 == us && r.0 == 1)
    });
    // The dead database now sits in the spare's row, off.
    let spare_row = table_row(&rt, &cl[0], 0, 2).unwrap();
    assert_eq!(
        (spare_row.0, spare_row.1.as_str(), spare_row.4),
        (0, ua.as_str(), 1)
    );
    assert_eq!(
        table_row(&rt, &cl[0], 0, 1).unwrap().1,
        p[2],
        "same risk group: not taken"
    );
    eventually("this node uses the spare", 5, || {
        b.database_url(1, 1).as_deref() == Some(us.as_str())
    });
    // The spare is written (write-only for the window) and every user is found.
    assert_eq!(state(&b, 1, 1), Some(DbState::WriteOnly));
    for i in n..n + 20 {
        save(&loc, i).unwrap();
    }
    for i in 0..n + 20 {
        assert!(found(&loc, i), "user {i}");
    }
    let on_spare = aors_in(&rt, &us);
    for i in (n..n + 20).filter(|&i| b.group_of(&aor(i)) == Some(1)) {
        assert!(on_spare.contains(&aor(i)), "user {i} not on the spare");
    }
    assert!(
        b.cluster_status()["node"]["spare_takeovers"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // The dead database comes back as an available spare.
    a.restart();
    eventually("back as a spare", 10, || {
        table_row(&rt, &cl[0], 0, 2).is_some_and(|r| r.0 == 1 && r.4 == 1)
    });
}

/// A fresh database on a throwaway MariaDB server (returned for kill/restart).
fn throwaway_maria() -> Option<(geosip_store::testutil::ThrowawayMariadb, String)> {
    let s = geosip_store::testutil::ThrowawayMariadb::start()?;
    let url = s.url();
    Some((s, url))
}

#[test]
fn a_mariadb_location_database_killed_mid_stream_loses_no_save_and_comes_back_write_only() {
    let _s = serial();
    let mut g = Guards::default();
    let (Some((mut a, ua)), Some((_b, ub)), Some(p), Some(cl)) = (
        throwaway_maria(),
        throwaway_maria(),
        maria(2, &mut g),
        pg(1, &mut g),
    ) else {
        return;
    };
    // Group 1 on two throwaway MariaDB servers, group 2 on the shared MariaDB, the cluster
    // table on the shared PostgreSQL.
    let mut cfg = config(
        vec![group(1, &[ua.clone(), ub.clone()]), group(2, &p)],
        WritePolicy::One,
    );
    cfg.cluster_db_url = Some(cl[0].clone());
    let rt = rt();
    let (loc, b) = node(&rt, &cfg);
    let n = 120;
    for i in 0..n {
        if i == 40 {
            a.kill();
        }
        save(&loc, i).unwrap_or_else(|e| panic!("save {i} under policy one: {e}"));
    }
    for i in 0..n {
        assert!(found(&loc, i), "user {i}");
    }
    let survivors = aors_in(&rt, &ub);
    for i in (0..n).filter(|&i| b.group_of(&aor(i)) == Some(1)) {
        assert!(survivors.contains(&aor(i)), "user {i} lost");
    }
    eventually("turned off in the cluster table", 10, || {
        table_row(&rt, &cl[0], 1, 1).is_some_and(|r| r.0 == 0 && r.2 >= 3)
    });
    assert_eq!(state(&b, 1, 1), Some(DbState::Off));
    a.restart();
    eventually("back write-only", 15, || {
        state(&b, 1, 1) == Some(DbState::WriteOnly)
    });
    assert_eq!(
        table_row(&rt, &cl[0], 1, 1).unwrap().0,
        1,
        "status on again"
    );
}
