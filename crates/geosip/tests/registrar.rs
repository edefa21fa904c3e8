//! The registrar and location service through the binary: REGISTER rules on the wire,
//! SIPp at scale, persistence across restarts on every backend, and database outages.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use geosip_store::testutil;

fn reg_once(s: &Server, ua: &Ua, user: &str, expires: u32, extra: &str) -> sip_msg::SipMessage {
    let r = register(
        user,
        "127.0.0.1",
        &format!("sip:{user}@{}", ua.addr),
        ua.addr,
        expires,
        &format!("c-{}", uniq()),
        1,
        extra,
    );
    ua.send(s.udp, r.as_bytes());
    ua.recv(Duration::from_secs(10)).expect("a REGISTER answer")
}

fn lookup(s: &Server, user: &str) -> Vec<serde_json::Value> {
    match s.rpc("ul.lookup", &[&format!("sip:{user}@127.0.0.1")]) {
        Ok(v) => v["contacts"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn register_is_answered_200_listing_the_binding_and_lookup_finds_it() {
    let s = Server::start(&[]);
    let ua = Ua::new();
    let r = reg_once(&s, &ua, "alice", 600, "");
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let c: Vec<_> = r.contacts().collect();
    assert_eq!(c.len(), 1);
    let exp = c[0].addr().unwrap().expires().unwrap();
    assert!(
        (540..=600).contains(&exp),
        "granted {exp} (expires_range 10%)"
    );
    assert_eq!(lookup(&s, "alice").len(), 1);
}

#[test]
fn contact_star_with_expires_zero_removes_every_binding() {
    let s = Server::start(&[]);
    let ua = Ua::new();
    let ua2 = Ua::new();
    assert_eq!(reg_once(&s, &ua, "bob", 600, "").status(), Some(200));
    assert_eq!(reg_once(&s, &ua2, "bob", 600, "").status(), Some(200));
    assert_eq!(lookup(&s, "bob").len(), 2);
    let r = register("bob", "127.0.0.1", "x", ua.addr, 0, "star", 1, "")
        .replace("Contact: <x>", "Contact: *");
    ua.send(s.udp, r.as_bytes());
    let resp = ua.expect_status(200);
    assert_eq!(resp.contacts().count(), 0);
    assert!(lookup(&s, "bob").is_empty());
}

#[test]
fn an_expiry_below_min_expires_gets_423_with_min_expires() {
    let s = Server::start(&[
        "--set",
        "registrar.min_expires=120",
        "--set",
        "registrar.min_expires_mode=reject",
    ]);
    let ua = Ua::new();
    let r = reg_once(&s, &ua, "carol", 30, "");
    assert_eq!(r.status(), Some(423), "{}", text(&r));
    assert_eq!(r.header_by_name(b"Min-Expires"), Some(&b"120"[..]));
    assert!(lookup(&s, "carol").is_empty());
}

#[test]
fn a_binding_expires_and_disappears_from_lookup_and_calls() {
    let s = Server::start(&[
        "--set",
        "registrar.min_expires=1",
        "--set",
        "registrar.expires_range=0",
        "--set",
        "usrloc.timer_interval_s=1",
    ]);
    let ua = Ua::new();
    assert_eq!(reg_once(&s, &ua, "dan", 2, "").status(), Some(200));
    assert_eq!(lookup(&s, "dan").len(), 1);
    std::thread::sleep(Duration::from_millis(3200));
    assert!(lookup(&s, "dan").is_empty());
    let caller = Ua::new();
    let inv = request(
        "INVITE",
        &format!("sip:dan@127.0.0.1:{}", s.udp.port()),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, inv.as_bytes());
    caller.expect_status(404);
}

#[test]
fn max_contacts_refuses_a_contact_over_the_limit() {
    let s = Server::start(&["--set", "registrar.max_contacts=1"]);
    let a = Ua::new();
    let b = Ua::new();
    assert_eq!(reg_once(&s, &a, "erin", 600, "").status(), Some(200));
    let r = reg_once(&s, &b, "erin", 600, "");
    assert_eq!(r.status(), Some(503), "{}", text(&r));
    assert!(r.header_by_name(b"Retry-After").is_some());
    assert_eq!(lookup(&s, "erin").len(), 1);
}

#[test]
fn a_registered_path_is_the_route_of_calls_to_that_user() {
    let s = Server::start(&[]);
    let edge = Ua::new();
    let phone = "192.0.2.77:5060";
    let r = register(
        "frank",
        "127.0.0.1",
        &format!("sip:frank@{phone}"),
        edge.addr,
        600,
        "p1",
        1,
        &format!("Path: <sip:{};lr>\r\nSupported: path\r\n", edge.addr),
    );
    edge.send(s.udp, r.as_bytes());
    let ok = edge.expect_status(200);
    assert!(
        ok.header_by_name(b"Path").is_some(),
        "Path echoed when supported"
    );
    let caller = Ua::new();
    let inv = request(
        "INVITE",
        &format!("sip:frank@127.0.0.1:{}", s.udp.port()),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, inv.as_bytes());
    // The INVITE goes to the edge proxy (the Path), with the Path as Route and the contact
    // as Request-URI.
    let got = loop {
        let m = edge.expect("INVITE at the edge");
        if m.is_request() {
            break m;
        }
    };
    assert_eq!(
        got.request_uri_bytes(),
        Some(format!("sip:frank@{phone}").as_bytes())
    );
    let route = String::from_utf8_lossy(got.header_by_name(b"Route").unwrap()).into_owned();
    assert!(route.contains(&edge.addr.to_string()), "{route}");
}

/// Starts a server on `args`, registers `n` users, restarts on the same data dir and checks
/// that every user is still found.
fn survives_restart(args: &[&str], n: usize, prefix: &str) {
    let dir = temp_dir("persist");
    let mut s = Server::start_with(args, false, Some(dir.clone()));
    let ua = Ua::new();
    for i in 0..n {
        let r = reg_once(&s, &ua, &format!("{prefix}{i}"), 3600, "");
        assert_eq!(r.status(), Some(200), "{}\n{}", text(&r), s.stderr());
    }
    s.stop();
    let s = Server::start_with(args, false, Some(dir));
    for i in 0..n {
        assert_eq!(
            lookup(&s, &format!("{prefix}{i}")).len(),
            1,
            "{prefix}{i} lost after restart with {args:?}\n{}",
            s.stderr()
        );
    }
}

#[test]
fn registrations_survive_a_restart_on_the_embedded_default() {
    survives_restart(&[], 20, "p");
}

#[test]
fn registrations_survive_a_restart_on_postgresql_in_every_mode() {
    let Some(pg) = testutil::fresh_postgres() else {
        return;
    };
    for mode in ["write-back", "write-through", "db-only"] {
        let url = format!("usrloc.db_url={}", pg.url);
        let m = format!("usrloc.db_mode={mode}");
        survives_restart(&["--set", &url, "--set", &m], 10, &mode.replace('-', ""));
    }
}

#[test]
fn registrations_survive_a_restart_on_mariadb_in_every_mode() {
    let Some(db) = testutil::fresh_mariadb() else {
        return;
    };
    for mode in ["write-back", "write-through", "db-only"] {
        let url = format!("usrloc.db_url={}", db.url);
        let m = format!("usrloc.db_mode={mode}");
        survives_restart(&["--set", &url, "--set", &m], 10, &mode.replace('-', ""));
    }
}

#[test]
fn registrations_survive_a_restart_on_redis_in_every_mode() {
    let Some(r) = testutil::fresh_redis_prefix() else {
        return;
    };
    for mode in ["write-back", "write-through", "db-only"] {
        let url = format!("usrloc.db_url={}", r.url);
        let prefix = format!("usrloc.redis_prefix=\"{}\"", r.prefix);
        let m = format!("usrloc.db_mode={mode}");
        survives_restart(
            &["--set", &url, "--set", &prefix, "--set", &m],
            10,
            &mode.replace('-', ""),
        );
    }
}

#[test]
fn write_through_answers_503_while_postgresql_is_down_and_recovers_and_write_back_loses_nothing() {
    let Some(pg) = testutil::ThrowawayPostgres::start() else {
        return;
    };
    let url = format!("usrloc.db_url={}", pg.url());
    // Write-through: the DB must have it before the 200.
    {
        let s = Server::start(&[
            "--set",
            &url,
            "--set",
            "usrloc.db_mode=write-through",
            "--set",
            "usrloc.timeout_ms=500",
        ]);
        let ua = Ua::new();
        assert_eq!(reg_once(&s, &ua, "w1", 600, "").status(), Some(200));
        pg.kill();
        let r = reg_once(&s, &ua, "w2", 600, "");
        assert!(matches!(r.status(), Some(500 | 503)), "{}", text(&r));
        if r.status() == Some(503) {
            assert!(r.header_by_name(b"Retry-After").is_some());
        }
        pg.restart();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if reg_once(&s, &ua, "w2", 600, "").status() == Some(200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "write-through did not recover"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(lookup(&s, "w1").len(), 1);
    }
    // Write-back: REGISTERs are answered from memory while the DB is down, and reach it when
    // it returns.
    let dir = temp_dir("wb");
    let args = [
        "--set",
        url.as_str(),
        "--set",
        "usrloc.db_mode=write-back",
        "--set",
        "usrloc.timeout_ms=500",
        "--set",
        "usrloc.flush_interval_ms=200",
    ];
    let mut s = Server::start_with(&args, false, Some(dir.clone()));
    let ua = Ua::new();
    pg.kill();
    for i in 0..10 {
        assert_eq!(
            reg_once(&s, &ua, &format!("b{i}"), 600, "").status(),
            Some(200)
        );
    }
    pg.restart();
    std::thread::sleep(Duration::from_secs(3));
    s.stop();
    let s = Server::start_with(&args, false, Some(dir));
    for i in 0..10 {
        assert_eq!(
            lookup(&s, &format!("b{i}")).len(),
            1,
            "b{i} lost\n{}",
            s.stderr()
        );
    }
}

#[test]
fn sipp_registers_10000_distinct_users_and_each_is_found() {
    if !have_tool("sipp") {
        return;
    }
    // SIPp sends everything from one address: trust it, as a load generator on the host.
    let s = Server::start(&["--set", "pike.whitelist=[\"127.0.0.1\"]"]);
    let dir = temp_dir("sipp-reg");
    let n = 10_000;
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..n {
        csv.push_str(&format!("u{i:05};\n"));
    }
    std::fs::write(dir.join("users.csv"), csv).unwrap();
    let scen = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/register.xml");
    let out = std::process::Command::new("timeout")
        .args(["300", "sipp", &s.udp.to_string(), "-sf", scen, "-inf"])
        .arg(dir.join("users.csv"))
        .args([
            "-r",
            "1000",
            "-m",
            &n.to_string(),
            "-l",
            "2000",
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "240s",
            "-timeout_error",
            "-trace_stat",
            "-stf",
        ])
        .arg(dir.join("stat.csv"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every user is found: one JSON-RPC batch of 10,000 ul.lookup calls.
    let batch: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "ul.lookup", "params": [format!("sip:u{i:05}@127.0.0.1")]}))
        .collect();
    let resp = http(
        s.admin,
        "POST",
        "/RPC",
        &serde_json::Value::Array(batch).to_string(),
    );
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), n);
    let missing: Vec<_> = arr
        .iter()
        .filter(|r| {
            r["result"]["contacts"]
                .as_array()
                .is_none_or(|c| c.is_empty())
        })
        .take(5)
        .collect();
    assert!(missing.is_empty(), "not found: {missing:?}");
    let stats = s.rpc("ul.stats", &[]).unwrap();
    assert_eq!(
        stats["usrloc"]["contacts"].as_u64(),
        Some(n as u64),
        "{stats}"
    );
}

#[test]
fn geosip_ctl_ul_dump_and_ul_stats_are_readable_and_ul_rm_removes_an_aor() {
    let s = Server::start(&[]);
    let ua = Ua::new();
    for u in ["dumpa", "dumpb"] {
        assert_eq!(reg_once(&s, &ua, u, 600, "").status(), Some(200));
    }
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
            .args(["ctl", "--admin", &s.admin.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dump = ctl(&["ul.dump"]);
    for u in ["dumpa", "dumpb"] {
        assert!(dump.contains(&format!("sip:{u}@127.0.0.1")), "{dump}");
        assert!(dump.contains(&format!("sip:{u}@{}", ua.addr)), "{dump}");
    }
    assert!(dump.contains("expires"), "{dump}");
    assert!(!dump.trim_start().starts_with('{'), "not raw JSON: {dump}");
    let stats = ctl(&["ul.stats"]);
    assert!(stats.contains("contacts"), "{stats}");
    ctl(&["ul.rm", "sip:dumpa@127.0.0.1"]);
    assert!(lookup(&s, "dumpa").is_empty());
    assert_eq!(lookup(&s, "dumpb").len(), 1);
}
