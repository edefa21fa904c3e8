//! Partitioned location (p_usrloc) through the binary: SIPp registering 10,000 users while a
//! database of a group dies, two nodes sharing one cluster table, a database coming back
//! write-only, a spare taking over, and rebalancing from two groups to three.
//! Every database here is a throwaway server or a fresh database of the test's own.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use geosip_store::testutil::{self, ThrowawayPostgres};
use serde_json::Value;
use sip_msg::HeaderName;

fn write_config(
    dir: &std::path::Path,
    cluster: &str,
    groups: &[Vec<String>],
    extra: &str,
) -> PathBuf {
    // SIPp sends every phone from one address: pike would block it as a flood, and a
    // whitelist would also exempt it from overload control (no 503, no stale drops), so on a
    // slow machine retransmissions would pile up until phones give up. Pike off, overload on,
    // with a short Retry-After so a shed phone comes back within the run.
    let mut t = format!(
        "[pike]\nenabled = false\n\n[overload]\nretry_after = 2\nretry_after_spread = 1\n\n[location]\ndb_mode = \"db-only\"\npartition_by = \"user@domain\"\nwrite_policy = \"all\"\ncluster_db_url = \"{cluster}\"\nreload_interval_s = 1\nerror_threshold = 5\nretry_interval_s = 1\ntimeout_ms = 400\n{extra}\n"
    );
    for (i, dbs) in groups.iter().enumerate() {
        let list: Vec<String> = dbs.iter().map(|u| format!("\"{u}\"")).collect();
        t.push_str(&format!(
            "[[location.groups]]\nid = {}\ndatabases = [{}]\n",
            i + 1,
            list.join(", ")
        ));
    }
    let f = dir.join(format!("geosip-{}.toml", uniq()));
    std::fs::write(&f, t).unwrap();
    f
}

fn cluster(s: &Server) -> Value {
    s.rpc("location.cluster", &[]).unwrap()
}

/// State of database `no` of group `g` as a node sees it.
fn state(s: &Server, g: u64, no: u64) -> String {
    let c = cluster(s);
    for grp in c["groups"].as_array().unwrap() {
        if grp["id"].as_u64() == Some(g) {
            for d in grp["databases"].as_array().unwrap() {
                if d["no"].as_u64() == Some(no) {
                    return d["state"].as_str().unwrap_or("").to_string();
                }
            }
        }
    }
    panic!("no database {g}/{no} in {c}");
}

fn wait_state(s: &Server, g: u64, no: u64, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let st = state(s, g, no);
        if st == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "database {g}/{no} is {st}, expected {want}: {}",
            cluster(s)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ul.lookup of many AORs in one JSON-RPC batch; returns the users with no contact.
fn missing_users(s: &Server, users: &[String]) -> Vec<String> {
    // In JSON-RPC batches of 2,000 (the admin interface caps request bodies).
    let mut missing = Vec::new();
    for chunk in users.chunks(2000) {
        let batch: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, u)| serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "ul.lookup", "params": [format!("sip:{u}@127.0.0.1")]}))
            .collect();
        let resp = http(s.admin, "POST", "/RPC", &Value::Array(batch).to_string());
        let v: Value = serde_json::from_str(&resp)
            .unwrap_or_else(|e| panic!("ul.lookup batch: {e}: {}", &resp[..resp.len().min(300)]));
        let mut found = vec![false; chunk.len()];
        for r in v.as_array().unwrap() {
            let i = r["id"].as_u64().unwrap() as usize;
            found[i] = r["result"]["contacts"]
                .as_array()
                .is_some_and(|c| !c.is_empty());
        }
        missing.extend(
            chunk
                .iter()
                .zip(found)
                .filter(|(_, f)| !f)
                .map(|(u, _)| u.clone()),
        );
    }
    missing
}

/// The metrics that tell overload from a failover stall, for a failure message.
fn load_metrics(s: &Server) -> String {
    s.metrics()
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && [
                    "stale_drops",
                    "pike_shed",
                    "dropped_requests",
                    "overload_",
                    "location",
                    "replies_sent",
                ]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Calls `user` and checks the INVITE reaches `callee` (then declines it).
fn call_reaches(s: &Server, callee: &Ua, user: &str) {
    let caller = Ua::new();
    let inv = request(
        "INVITE",
        &format!("sip:{user}@127.0.0.1:{}", s.udp.port()),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, inv.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = callee
            .recv(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("INVITE for {user} did not arrive"));
        if m.method_bytes() == Some(b"INVITE")
            && m.request_uri_bytes()
                .is_some_and(|r| r.starts_with(format!("sip:{user}@").as_bytes()))
        {
            callee.send(
                via_addr(&m),
                response_to(&m, 486, "Busy Here", Some("x"), "").as_bytes(),
            );
            break;
        }
        assert!(Instant::now() < deadline);
    }
    caller.expect_status(486);
}

#[test]
fn sipp_registers_10000_users_while_a_database_dies_and_every_user_stays_reachable() {
    if !have_tool("sipp") {
        return;
    }
    let pgs: Vec<ThrowawayPostgres> = match (0..4)
        .map(|_| ThrowawayPostgres::start())
        .collect::<Option<Vec<_>>>()
    {
        Some(v) => v,
        None => return,
    };
    let Some(cl) = testutil::fresh_postgres() else {
        return;
    };
    let dir = temp_dir("pusrloc");
    let groups = vec![
        vec![pgs[0].url(), pgs[1].url()],
        vec![pgs[2].url(), pgs[3].url()],
    ];
    // SIPp honours Retry-After; keep the registrar's short so the run stays short.
    let cfg = write_config(&dir, &cl.url, &groups, "\n[registrar]\nretry_after = 1\n");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let a = Server::start(&["--config", &cfg_s]);
    let b = Server::start(&["--config", &cfg_s]);

    // Every user's contact is this UA, so calls can be checked afterwards.
    let callee = Ua::new();
    let n = 10_000;
    let users: Vec<String> = (0..n).map(|i| format!("pu{i:05}")).collect();
    let mut csv = String::from("SEQUENTIAL\n");
    for u in &users {
        csv.push_str(&format!("{u};{};\n", callee.addr));
    }
    std::fs::write(dir.join("users.csv"), csv).unwrap();
    let scen = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sipp/register_retry_to.xml"
    );
    let mut sipp = std::process::Command::new("timeout")
        .args(["400", "sipp", &a.udp.to_string(), "-sf", scen, "-inf"])
        .arg(dir.join("users.csv"))
        .args([
            // 500/s: two nodes, four PostgreSQL servers and SIPp share two cores; at 1,000/s
            // a busy machine answers late enough that retransmissions double the load and a
            // few phones give up (SIPp's 31 s UDP timeout), which is overload, not failover.
            "-r",
            "500",
            "-m",
            &n.to_string(),
            "-l",
            "4000",
            "-i",
            "127.0.0.1",
            "-nostdin",
            // A late answer to an earlier REGISTER (its retransmission waited in the queue of
            // a busy server) is ignored, as a phone does, instead of aborting the phone.
            "-default_behaviors",
            "all,-abortunexp,-bye",
            "-timeout",
            "360s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
        ])
        .arg(dir.join("err.log"))
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("stat.csv"))
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill one database of group 1 mid-run.
    std::thread::sleep(Duration::from_secs(3));
    pgs[1].kill();
    let status = sipp.wait().unwrap();
    let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("err.log")).unwrap_or_default();
    let head: Vec<&str> = stat.lines().next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = stat.lines().last().unwrap_or("").split(';').collect();
    let nonzero: Vec<String> = head
        .iter()
        .zip(&last)
        .filter(|(h, v)| h.starts_with("Failed") && **v != "0")
        .map(|(h, v)| format!("{h}={v}"))
        .collect();
    // Every phone got its 200 (late answers to earlier REGISTERs are ignored, see
    // -default_behaviors above); the overload-control metrics say why when one did not.
    let ok = head
        .iter()
        .position(|h| *h == "SuccessfulCall(C)")
        .and_then(|i| last.get(i))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert_eq!(
        ok,
        n as u64,
        "phones registered; SIPp failures: {nonzero:?} (status {status:?})\nnode A:\n{}\nnode B:\n{}\n{}",
        load_metrics(&a),
        load_metrics(&b),
        &err[..err.len().min(1500)]
    );

    // No REGISTER was lost: every user is found, through either node.
    let miss = missing_users(&a, &users);
    assert!(
        miss.is_empty(),
        "{} users not found on node A, e.g. {:?}",
        miss.len(),
        &miss[..miss.len().min(5)]
    );
    let miss = missing_users(&b, &users);
    assert!(miss.is_empty(), "{} users not found on node B", miss.len());
    // The dead database is off for both nodes (the cluster table is shared).
    wait_state(&a, 1, 2, "off", Duration::from_secs(10));
    wait_state(&b, 1, 2, "off", Duration::from_secs(10));
    // Calls to users of both groups route.
    for u in users.iter().step_by(997) {
        call_reaches(&a, &callee, u);
    }
    // Maintenance set on one node drains the database on the other within a reload interval.
    a.rpc("location.set_status", &["2", "1", "maintenance"])
        .unwrap();
    wait_state(&b, 2, 1, "maintenance", Duration::from_secs(5));
    for u in users.iter().step_by(1999) {
        call_reaches(&b, &callee, u);
    }
    a.rpc("location.set_status", &["2", "1", "on"]).unwrap();
    wait_state(&b, 2, 1, "write-only", Duration::from_secs(5));
    // The dead database comes back write-only (it lacks what was registered meanwhile).
    pgs[1].restart();
    wait_state(&a, 1, 2, "write-only", Duration::from_secs(20));
    wait_state(&b, 1, 2, "write-only", Duration::from_secs(20));
    let miss = missing_users(&a, &users);
    assert!(
        miss.is_empty(),
        "{} users lost after the database came back",
        miss.len()
    );
}

#[test]
fn a_database_that_came_back_is_read_again_after_the_expire_window() {
    let Some(pg0) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(pg1) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(cl) = testutil::fresh_postgres() else {
        return;
    };
    let dir = temp_dir("pusrloc-window");
    let cfg = write_config(
        &dir,
        &cl.url,
        &[vec![pg0.url(), pg1.url()]],
        // No registrar.max_expires: the server caps bindings at the window by itself.
        "expire_window_s = 4\n\n[registrar]\nmin_expires = 1\nexpires_range = 0\n",
    );
    let s = Server::start(&["--config", &cfg.to_string_lossy()]);
    let ua = Ua::new();
    let long = register(
        "wlong",
        "127.0.0.1",
        &format!("sip:wlong@{}", ua.addr),
        ua.addr,
        3600,
        "wlong",
        1,
        "",
    );
    ua.send(s.udp, long.as_bytes());
    let ok = ua.recv(Duration::from_secs(3)).expect("200 to REGISTER");
    assert_eq!(ok.status(), Some(200));
    let granted = String::from_utf8_lossy(ok.header(HeaderName::Contact).unwrap()).into_owned();
    assert!(
        granted.contains("expires=4"),
        "a 3600 s binding is capped at expire_window_s: {granted}"
    );
    pg1.kill();
    for i in 0..10 {
        let r = register(
            &format!("w{i}"),
            "127.0.0.1",
            &format!("sip:w{i}@{}", ua.addr),
            ua.addr,
            4,
            &format!("w{i}"),
            1,
            "",
        );
        ua.send(s.udp, r.as_bytes());
        let _ = ua.recv(Duration::from_secs(3));
    }
    wait_state(&s, 1, 2, "off", Duration::from_secs(15));
    pg1.restart();
    wait_state(&s, 1, 2, "write-only", Duration::from_secs(15));
    // After the window (≥ the longest registration) it is complete again and may be read.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = state(&s, 1, 2);
        if st == "read" || st == "standby" {
            break;
        }
        assert!(Instant::now() < deadline, "still {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_spare_from_another_risk_group_takes_the_place_of_a_dead_database() {
    let Some(pg0) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(pg1) = ThrowawayPostgres::start() else {
        return;
    };
    let Some(spare) = testutil::fresh_postgres() else {
        return;
    };
    let Some(cl) = testutil::fresh_postgres() else {
        return;
    };
    let dir = temp_dir("pusrloc-spare");
    let extra = format!(
        "\n[[location.spares]]\nurl = \"{}\"\nrisk_group = 99\n",
        spare.url
    );
    // Spares are a top-level array of the section: written after the groups.
    let cfg = write_config(&dir, &cl.url, &[vec![pg0.url(), pg1.url()]], "");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&extra);
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", &cfg.to_string_lossy()]);
    let ua = Ua::new();
    pg0.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        let r = register(
            &format!("s{i}"),
            "127.0.0.1",
            &format!("sip:s{i}@{}", ua.addr),
            ua.addr,
            600,
            &format!("s{i}"),
            1,
            "",
        );
        ua.send(s.udp, r.as_bytes());
        let _ = ua.recv(Duration::from_secs(2));
        i += 1;
        let c = cluster(&s);
        let took = c["groups"][0]["databases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| {
                d["url"]
                    .as_str()
                    .is_some_and(|u| u.contains(spare.url.rsplit('/').next().unwrap()))
            });
        if took {
            break;
        }
        assert!(Instant::now() < deadline, "no spare took over: {c}");
    }
    // New registrations succeed with the spare in the group.
    let r = register(
        "after",
        "127.0.0.1",
        &format!("sip:after@{}", ua.addr),
        ua.addr,
        600,
        "after",
        1,
        "",
    );
    ua.send(s.udp, r.as_bytes());
    ua.expect_status(200);
}

#[test]
fn going_from_two_groups_to_three_online_moves_about_a_third_and_keeps_every_user_reachable() {
    let dbs: Vec<_> = match (0..6)
        .map(|_| testutil::fresh_postgres())
        .collect::<Option<Vec<_>>>()
    {
        Some(v) => v,
        None => return,
    };
    let Some(cl) = testutil::fresh_postgres() else {
        return;
    };
    let dir = temp_dir("pusrloc-rebalance");
    let two = vec![
        vec![dbs[0].url.clone(), dbs[1].url.clone()],
        vec![dbs[2].url.clone(), dbs[3].url.clone()],
    ];
    let cfg2 = write_config(&dir, &cl.url, &two, "");
    let callee = Ua::new();
    let users: Vec<String> = (0..300).map(|i| format!("rb{i}")).collect();
    let s = Server::start(&["--config", &cfg2.to_string_lossy()]);
    for u in &users {
        let r = register(
            u,
            "127.0.0.1",
            &format!("sip:{u}@{}", callee.addr),
            callee.addr,
            3600,
            &format!("c-{u}"),
            1,
            "",
        );
        callee.send(s.udp, r.as_bytes());
        callee.expect_status(200);
    }
    // Online: the operator adds group 3 to the cluster table of the running server and
    // reloads it (no restart).
    let sql = format!(
        "INSERT INTO location_cluster (id, no, url, status, errors, failover, spare, rg) VALUES (3, 1, '{}', 1, 0, 0, 0, 31), (3, 2, '{}', 1, 0, 0, 0, 32)",
        dbs[4].url, dbs[5].url
    );
    let out = std::process::Command::new("psql")
        .arg(&cl.url)
        .arg("-c")
        .arg(&sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.rpc("location.reload_cluster", &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster(&s)["groups"].as_array().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "group 3 not loaded: {}",
            cluster(&s)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // During the transition window reads fall back to the old placement: nobody is lost.
    let miss = missing_users(&s, &users);
    assert!(
        miss.is_empty(),
        "{} users not found during the transition",
        miss.len()
    );
    for u in users.iter().step_by(37) {
        call_reaches(&s, &callee, u);
    }
    let rb = s.rpc("location.rebalance", &[]).unwrap();
    assert_eq!(rb["layout"]["groups"], serde_json::json!([1, 2, 3]), "{rb}");
    assert_eq!(rb["in_transition"], true, "{rb}");
    // Consistent hashing: about 1/3 of the users now belong to group 3 (crc32 % n would
    // move about 2/3).
    let remaining = rb["remaining"].as_u64().unwrap();
    assert!(
        (60..=140).contains(&remaining),
        "{remaining} of 300 bindings in their old placement: {rb}"
    );
    // Finishing moves what is left; everyone is still reachable, from the new placement.
    let fin = s.rpc("location.rebalance", &["finish"]).unwrap();
    assert_eq!(
        fin["done"]["moved_bindings"].as_u64(),
        Some(remaining),
        "{fin}"
    );
    assert_eq!(fin["remaining"], 0, "{fin}");
    let miss = missing_users(&s, &users);
    assert!(miss.is_empty(), "{} users lost by the move", miss.len());
    for u in users.iter().step_by(41) {
        call_reaches(&s, &callee, u);
    }
}

/// Benchmark, not a test (run with `cargo test --release -p geosip --test location_cluster --
/// --ignored --nocapture`): REGISTER/s and lookups/s with two groups of two PostgreSQL
/// databases (db-only), and the dip while one database dies mid-run.
#[test]
#[ignore]
fn bench_partitioned_location_throughput_and_failover_dip() {
    if !have_tool("sipp") {
        return;
    }
    let pgs: Vec<ThrowawayPostgres> = match (0..4)
        .map(|_| ThrowawayPostgres::start())
        .collect::<Option<Vec<_>>>()
    {
        Some(v) => v,
        None => return,
    };
    let Some(cl) = testutil::fresh_postgres() else {
        return;
    };
    let dir = temp_dir("pusrloc-bench");
    let groups = vec![
        vec![pgs[0].url(), pgs[1].url()],
        vec![pgs[2].url(), pgs[3].url()],
    ];
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let cfg = write_config(
        &dir,
        &cl.url,
        &groups,
        "pool_size = 16\n\n[registrar]\nretry_after = 1\n\n[log]\nlevel = \"warn\"\n",
    );
    let s = Server::start(&["--config", &cfg.to_string_lossy()]);
    let callee = Ua::new();
    let run = |tag: &str,
               n: usize,
               rate: u64,
               kill_after: Option<(Duration, &ThrowawayPostgres)>|
     -> (f64, String) {
        let users: Vec<String> = (0..n).map(|i| format!("{tag}{i:06}")).collect();
        let mut csv = String::from("SEQUENTIAL\n");
        for u in &users {
            csv.push_str(&format!("{u};{};\n", callee.addr));
        }
        std::fs::write(dir.join(format!("{tag}.csv")), csv).unwrap();
        let scen = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sipp/register_retry_to.xml"
        );
        let t0 = Instant::now();
        let mut child = std::process::Command::new("timeout")
            .args(["600", "sipp", &s.udp.to_string(), "-sf", scen, "-inf"])
            .arg(dir.join(format!("{tag}.csv")))
            .args([
                "-r",
                &rate.to_string(),
                "-m",
                &n.to_string(),
                "-l",
                "20000",
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-timeout",
                "500s",
            ])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(dir.join(format!("{tag}-stat.csv")))
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if let Some((after, pg)) = kill_after {
            std::thread::sleep(after);
            pg.kill();
        }
        child.wait().unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let stat = std::fs::read_to_string(dir.join(format!("{tag}-stat.csv"))).unwrap_or_default();
        (n as f64 / secs, stat)
    };
    // Throughput: new users at the offered rate, then lookups of all of them.
    let n = (rate * 10) as usize;
    let (reg_rate, _) = run("b", n, rate, None);
    let users: Vec<String> = (0..n).map(|i| format!("b{i:06}")).collect();
    let t0 = Instant::now();
    let miss = missing_users(&s, &users);
    let lookups = n as f64 / t0.elapsed().as_secs_f64();
    assert!(miss.is_empty());
    // Failover: the same load, one database of group 1 killed after 5 s.
    let (fo_rate, stat) = run("f", n, rate, Some((Duration::from_secs(5), &pgs[1])));
    // Per-second successful calls, to see the dip.
    let head: Vec<&str> = stat.lines().next().unwrap_or("").split(';').collect();
    let idx = head.iter().position(|h| *h == "SuccessfulCall(P)");
    let per_s: Vec<String> = stat
        .lines()
        .skip(1)
        .filter_map(|l| idx.and_then(|i| l.split(';').nth(i)).map(str::to_string))
        .collect();
    let ret = |k: &str| {
        head.iter()
            .position(|h| *h == k)
            .and_then(|i| stat.lines().last()?.split(';').nth(i)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rejected = s.rpc("ul.stats", &[]).unwrap()["registrar"]["rejected"].clone();
    eprintln!(
        "p_usrloc bench: 2 groups x 2 PostgreSQL, db-only, write_policy all\n  REGISTER: {n} new users at {rate}/s offered -> {reg_rate:.0}/s completed\n  lookups (ul.lookup, one JSON-RPC batch): {lookups:.0}/s\n  failover run: {fo_rate:.0}/s completed; SIPp retransmissions {}; REGISTERs refused (5xx, retried): {rejected}\n  successful per second: {}",
        ret("Retransmissions(C)"),
        per_s.join(" ")
    );
}

/// The `[location]` example of the issue, exactly as written: two PostgreSQL servers on
/// 25432/25433 (database `loc`) for group 1, two MariaDB databases for group 2.
const ISSUE_TOML: &str = r#"[location]
db_mode = "db-only"            # or "write-through", "write-back"
partition_by = "user@domain"   # or "user"
write_policy = "all"           # or "majority", "one"
[[location.groups]]
id = 1
databases = ["postgres://postgres@127.0.0.1:25432/loc", "postgres://postgres@127.0.0.1:25433/loc"]
[[location.groups]]
id = 2
databases = ["mysql://root@127.0.0.1:3306/loc2a", "mysql://root@127.0.0.1:3306/loc2b"]
"#;

#[test]
fn the_location_example_of_the_documentation_runs_as_written() {
    let (Some(a), Some(b)) = (
        ThrowawayPostgres::start_on(25432),
        ThrowawayPostgres::start_on(25433),
    ) else {
        return;
    };
    for pg in [&a, &b] {
        let ok = std::process::Command::new("psql")
            .arg(pg.url())
            .args(["-qc", "CREATE DATABASE loc"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "CREATE DATABASE loc on {}", pg.port);
    }
    let maria = |sql: &str| {
        let ok = std::process::Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", "3306", "-uroot", "-e", sql])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok || std::env::var("CI").is_err(), "MariaDB: {sql}");
        ok
    };
    if !maria(
        "DROP DATABASE IF EXISTS loc2a; DROP DATABASE IF EXISTS loc2b; CREATE DATABASE loc2a; CREATE DATABASE loc2b",
    ) {
        return;
    }
    let dir = temp_dir("issue-toml");
    let cfg = dir.join("geosip.toml");
    std::fs::write(
        &cfg,
        format!("[pike]\nwhitelist = [\"127.0.0.1\"]\n\n{ISSUE_TOML}"),
    )
    .unwrap();
    let s = Server::start(&["--config", &cfg.to_string_lossy()]);
    let c = cluster(&s);
    assert_eq!(c["groups"].as_array().map(Vec::len), Some(2), "{c}");
    let ua = Ua::new();
    let users: Vec<String> = (0..40).map(|i| format!("doc{i}")).collect();
    for u in &users {
        let r = register(
            u,
            "127.0.0.1",
            &format!("sip:{u}@{}", ua.addr),
            ua.addr,
            600,
            &format!("d-{u}"),
            1,
            "",
        );
        ua.send(s.udp, r.as_bytes());
        ua.expect_status(200);
    }
    let miss = missing_users(&s, &users);
    assert!(miss.is_empty(), "{miss:?}");
    for u in users.iter().step_by(9) {
        call_reaches(&s, &ua, u);
    }
    // Both groups got users, on both databases each (write_policy = "all").
    let m = s.metrics();
    for g in ["1", "2"] {
        for db in ["1", "2"] {
            let series = format!("geosip_location_db_writes_total{{group=\"{g}\",db=\"{db}\"");
            let line = m
                .lines()
                .find(|l| l.starts_with(&series))
                .unwrap_or_else(|| panic!("{series} missing"));
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v > 0.0, "{line}");
        }
    }
    drop(s);
    maria("DROP DATABASE IF EXISTS loc2a; DROP DATABASE IF EXISTS loc2b");
}
