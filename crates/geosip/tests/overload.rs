//! Overload control and rate limits on the wire: which initial requests are shed first
//! (`overload.priority`), that in-dialog requests never are, and per-method token buckets.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Overload priority, on the wire. Six INVITE transactions held open (a callee that never
/// answers) against `max_transactions = 4` put the load at 1.5; one controller period later
/// the shed fraction is 0.54: the prioritised method is never shed (tier 2), the other one
/// about 62 % of the time (tier 1), and in-dialog requests never. `interval_ms = 6000` and
/// the controller only runs when requests arrive, so the probes below all see that one state.
fn priority_under_overload(priority: &str) -> (usize, usize, usize) {
    let prio = format!("overload.priority=\"{priority}\"");
    let s = Server::start(&[
        "--set",
        "pike.enabled=false",
        "--set",
        "overload.max_transactions=4",
        "--set",
        "overload.max_lag_ms=0",
        "--set",
        "overload.max_backlog=0",
        "--set",
        "overload.interval_ms=6000",
        "--set",
        "overload.step=0.18",
        "--set",
        &prio,
    ]);
    let started = Instant::now();
    // The phones come from 127.0.0.2: 127.0.0.1 could be whitelisted, and whitelisted peers
    // are never shed.
    let phone = || Ua::on("127.0.0.2");
    let callee = phone();
    let r = register(
        "silent",
        "127.0.0.1",
        &format!("sip:silent@{}", callee.addr),
        callee.addr,
        3600,
        "silent-callee",
        1,
        "",
    );
    callee.send(s.udp, r.as_bytes());
    callee.expect_status(200);
    let caller = phone();
    let invite = |to: &str, n: usize| {
        format!(
            "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=p{n}\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: prio-{n}-{u}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{a}>\r\nContent-Length: 0\r\n\r\n",
            a = caller.addr,
            u = uniq()
        )
    };
    let live = || {
        s.metric("geosip_tm_transactions{type=\"invite\"}")
            .unwrap_or(0.0)
    };
    let mut n = 0;
    while live() < 6.0 {
        caller.send(s.udp, invite("silent", n).as_bytes());
        n += 1;
        assert!(n <= 6, "six held INVITEs make six transactions");
        let _ = callee.expect("the held INVITE");
        let end = Instant::now() + Duration::from_secs(2);
        while live() < n as f64 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(5500),
        "set up within the first period"
    );
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(started.elapsed()));
    // Probes: REGISTERs (200 or 503), INVITEs to nobody (404 or 503), in-dialog requests.
    let (mut reg_shed, mut inv_shed, mut dialog_shed) = (0, 0, 0);
    for i in 0..20 {
        let ua = phone();
        let r = register(
            &format!("p{i}"),
            "127.0.0.1",
            &format!("sip:p{i}@{}", ua.addr),
            ua.addr,
            600,
            &format!("prio-reg-{i}"),
            1,
            "",
        );
        ua.send(s.udp, r.as_bytes());
        let a = ua.expect("a REGISTER answer");
        reg_shed += usize::from(a.status() == Some(503));
        ua.send(s.udp, invite("nobody", 100 + i).as_bytes());
        let a = loop {
            let m = ua.expect("an INVITE answer");
            if m.status() != Some(100) {
                break m;
            }
        };
        inv_shed += usize::from(a.status() == Some(503));
        let bye = format!(
            "BYE sip:nobody@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=b{i}\r\nTo: <sip:nobody@127.0.0.1>;tag=x{i}\r\nCall-ID: prio-bye-{i}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            a = ua.addr,
            u = uniq()
        );
        ua.send(s.udp, bye.as_bytes());
        if let Some(a) = ua.recv(Duration::from_secs(2)) {
            dialog_shed += usize::from(a.status() == Some(503));
        }
    }
    let frac = s.metric("geosip_overload_shed_fraction").unwrap_or(0.0);
    assert!(
        (0.5..0.6).contains(&frac),
        "one period at load 1.5: shed fraction {frac}"
    );
    (reg_shed, inv_shed, dialog_shed)
}

#[test]
fn under_overload_registers_are_served_and_invites_shed_with_the_default_priority() {
    let (reg, inv, dialog) = priority_under_overload("register");
    assert_eq!(reg, 0, "REGISTER (priority) never shed");
    assert!(inv >= 3, "INVITEs shed: {inv} of 20");
    assert_eq!(dialog, 0, "in-dialog requests never shed");
}

#[test]
fn under_overload_invites_are_served_and_registers_shed_with_priority_invite() {
    let (reg, inv, dialog) = priority_under_overload("invite");
    assert_eq!(inv, 0, "INVITE (priority) never shed");
    assert!(reg >= 3, "REGISTERs shed: {reg} of 20");
    assert_eq!(dialog, 0, "in-dialog requests never shed");
}

/// Per-method rate limits (`[ratelimit]`, token buckets): past its burst a limited method gets
/// 503 with Retry-After, methods without a limit pass, and the bucket refills with time.
#[test]
fn a_rate_limited_method_gets_503_past_its_burst_while_other_methods_pass() {
    let s = Server::start(&[
        "--set",
        "pike.enabled=false",
        "--set",
        "ratelimit.enabled=true",
        "--set",
        "ratelimit.methods={ MESSAGE = 5 }",
    ]);
    let ua = Ua::on("127.0.0.2");
    let send = |method: &str| {
        let r = request(method, "sip:nobody@127.0.0.1", ua.addr, "UDP", "", "");
        ua.send(s.udp, r.as_bytes());
        ua.expect("an answer")
    };
    let started = Instant::now();
    let (mut passed, mut limited) = (0, 0);
    for _ in 0..30 {
        let a = send("MESSAGE");
        if a.status() == Some(503) {
            assert!(
                a.header(sip_msg::HeaderName::RetryAfter).is_some(),
                "{}",
                text(&a)
            );
            limited += 1;
        } else {
            passed += 1;
        }
    }
    // Burst of 5 plus what 5/s refills while the 30 were sent.
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + refill).contains(&passed),
        "{passed} passed, {limited} limited in {:?}",
        started.elapsed()
    );
    for _ in 0..10 {
        assert_ne!(send("OPTIONS").status(), Some(503), "OPTIONS has no limit");
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_ne!(
        send("MESSAGE").status(),
        Some(503),
        "refilled after a second"
    );
    assert!(
        s.metric("geosip_pike_refused_total{reason=\"ratelimit\",action=\"503\"}")
            .unwrap_or(0.0)
            >= limited as f64
    );
}
