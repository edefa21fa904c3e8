//! Protect on virtual time.

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use geosip_core::config::CoreConfig;
use geosip_core::testutil::{core_on, ctx_for};
use serde_json::Value;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn quiet_overload() -> OverloadConfig {
    OverloadConfig {
        enabled: false,
        ..OverloadConfig::default()
    }
}

fn protect(pike: PikeConfig) -> (Protect, Instant) {
    protect_with(pike, RateLimitConfig::default(), quiet_overload())
}

fn protect_with(pike: PikeConfig, rl: RateLimitConfig, ol: OverloadConfig) -> (Protect, Instant) {
    let base = Instant::now();
    (Protect::with_clock(pike, rl, ol, base, 7).unwrap(), base)
}

fn ip_mode() -> PikeConfig {
    PikeConfig {
        key: KeyMode::Ip,
        reqs_density_per_unit: 30,
        sampling_time_unit: 2,
        block_time: 60,
        ..PikeConfig::default()
    }
}

fn reg(p: &Protect, src: &str, user: Option<&str>, t: Instant) -> Verdict {
    p.check(
        ip(src),
        user.map(str::as_bytes),
        Class::Register,
        b"REGISTER",
        t,
    )
}

#[test]
fn a_burst_above_the_density_is_blocked_and_unblocked_after_block_time_while_other_ips_pass() {
    let (p, base) = protect(ip_mode());
    // 30 requests within the interval pass, the 31st is over the density.
    for i in 0..30 {
        assert_eq!(
            reg(&p, "203.0.113.5", None, at(base, 10 + i)),
            Verdict::Accept,
            "request {i}"
        );
    }
    assert_eq!(
        reg(&p, "203.0.113.5", None, at(base, 50)),
        Verdict::Drop {
            reason: Reason::Flood
        }
    );
    // A burst of 20000: every one dropped, other sources unaffected.
    for i in 0..20_000u64 {
        assert!(!reg(&p, "203.0.113.5", None, at(base, 60 + i / 100)).is_accept());
        if i % 1000 == 0 {
            assert_eq!(
                reg(&p, "198.51.100.7", None, at(base, 60 + i / 100)),
                Verdict::Accept
            );
        }
    }
    assert_eq!(p.ip_blocked(ip("203.0.113.5"), at(base, 300)), Some(60));
    let listed = p.blocked(at(base, 300));
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].kind, listed[0].ip),
        ("flood", Some(ip("203.0.113.5")))
    );
    assert!(listed[0].count > 20_000);
    // The flood stopped at 260 ms; blocked until 60 s after its last excessive request.
    assert!(!reg(&p, "203.0.113.5", None, at(base, 59_000)).is_accept());
    assert_eq!(
        reg(&p, "203.0.113.5", None, at(base, 60_300)),
        Verdict::Accept
    );
    assert!(p.blocked(at(base, 60_300)).is_empty());
}

#[test]
fn a_steady_rate_at_the_density_is_never_blocked() {
    let (p, base) = protect(ip_mode());
    // 14 requests per second = 28 per 2 s interval, for 10 minutes.
    for i in 0..(14 * 600) {
        let t = at(base, i * 1000 / 14);
        assert_eq!(
            reg(&p, "192.0.2.1", None, t),
            Verdict::Accept,
            "request {i}"
        );
    }
}

#[test]
fn whitelisted_peers_are_never_blocked_rate_limited_or_shed() {
    let pike = PikeConfig {
        whitelist: vec!["10.0.0.0/8".into()],
        ..ip_mode()
    };
    let rl = RateLimitConfig {
        enabled: true,
        default_rate: 1.0,
        ..RateLimitConfig::default()
    };
    let ol = OverloadConfig {
        max_transactions: 10,
        ..OverloadConfig::default()
    };
    let (p, base) = protect_with(pike, rl, ol);
    p.overload().set_transactions(1000);
    for i in 0..5000 {
        let t = at(base, i);
        assert_eq!(
            p.check(ip("10.1.2.3"), None, Class::Other, b"OPTIONS", t),
            Verdict::Accept
        );
        p.auth_failed(ip("10.1.2.3"), b"x@example.com", t);
    }
    assert_eq!(p.ip_blocked(ip("10.1.2.3"), at(base, 5000)), None);
    assert_eq!(
        p.check(
            ip("::ffff:10.9.9.9"),
            None,
            Class::Other,
            b"OPTIONS",
            at(base, 5000)
        ),
        Verdict::Accept
    );
    // Anyone else gets the overload 503 by now.
    assert!(matches!(
        p.check(
            ip("192.0.2.1"),
            None,
            Class::Other,
            b"OPTIONS",
            at(base, 5000)
        ),
        Verdict::Reject {
            status: 503,
            reason: Reason::Overload,
            ..
        }
    ));
}

#[test]
fn ip_plus_user_keying_lets_the_other_phones_of_an_office_through() {
    let pike = PikeConfig {
        key: KeyMode::IpUser,
        reqs_density_per_unit: 30,
        reqs_density_per_ip: 300,
        block_time: 60,
        ..PikeConfig::default()
    };
    let (p, base) = protect(pike);
    let office = "198.51.100.10";
    // One misbehaving phone floods.
    for i in 0..100 {
        reg(&p, office, Some("1001"), at(base, i));
    }
    assert!(!reg(&p, office, Some("1001"), at(base, 150)).is_accept());
    // 50 other phones behind the same NAT re-register (REGISTER + authenticated REGISTER).
    for phone in 0..50 {
        let user = format!("{}", 2000 + phone);
        for k in 0..2 {
            assert_eq!(
                reg(&p, office, Some(&user), at(base, 200 + phone * 2 + k)),
                Verdict::Accept,
                "phone {user}"
            );
        }
    }
    let blocked = p.blocked(at(base, 400));
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].user.as_deref(), Some("1001"));
    // A source rotating users is still caught by the per-IP counter.
    let mut refused = 0;
    for i in 0..1000 {
        let user = format!("u{i}");
        if !reg(&p, "203.0.113.66", Some(&user), at(base, 1000 + i / 10)).is_accept() {
            refused += 1;
        }
    }
    assert_eq!(refused, 700, "the first 300 of the interval pass");
    // In plain ip mode the office would have been banned as a whole.
    let (q, base) = protect(ip_mode());
    let mut refused = 0;
    for phone in 0..50 {
        for k in 0..2 {
            if !reg(
                &q,
                office,
                Some(&format!("{phone}")),
                at(base, phone * 2 + k),
            )
            .is_accept()
            {
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 70);
}

#[test]
fn the_503_action_answers_with_the_remaining_block_time_as_retry_after() {
    let (p, base) = protect(PikeConfig {
        action: Action::Reject503,
        ..ip_mode()
    });
    for i in 0..31 {
        reg(&p, "192.0.2.9", None, at(base, i));
    }
    // Still flooding 30 s later: the block is extended to 60 s after the last excess.
    let mut last = Verdict::Accept;
    for i in 0..40 {
        last = reg(&p, "192.0.2.9", None, at(base, 30_500 + i));
    }
    assert_eq!(
        last,
        Verdict::Reject {
            status: 503,
            retry_after: 60,
            reason: Reason::Flood
        }
    );
    // After the flood: the remaining time counts down.
    assert!(matches!(
        reg(&p, "192.0.2.9", None, at(base, 70_000)),
        Verdict::Reject {
            retry_after: 21,
            ..
        }
    ));
}

#[test]
fn failed_authentications_block_the_user_and_the_ip_then_expire() {
    let pike = PikeConfig {
        auth_fail_limit_user: 5,
        auth_fail_limit_ip: 8,
        auth_fail_window: 60,
        auth_fail_block_time: 300,
        ..ip_mode()
    };
    let (p, base) = protect(pike);
    let a = ip("192.0.2.50");
    for i in 0..4 {
        p.auth_failed(a, b"alice@example.com", at(base, i * 1000));
    }
    assert_eq!(
        p.auth_user_blocked(b"alice@example.com", at(base, 5000)),
        None
    );
    p.auth_ok(a, b"alice@example.com", at(base, 5000));
    // The success reset the user's count: 4 more failures do not block.
    for i in 0..4 {
        p.auth_failed(a, b"alice@example.com", at(base, 6000 + i));
    }
    assert_eq!(
        p.auth_user_blocked(b"alice@example.com", at(base, 7000)),
        None
    );
    assert_eq!(
        p.ip_blocked(a, at(base, 7000)),
        Some(300),
        "but the IP's 8 failures block it"
    );
    assert_eq!(
        reg(&p, "192.0.2.50", None, at(base, 7000)),
        Verdict::Drop {
            reason: Reason::AuthFail
        }
    );
    p.auth_failed(ip("192.0.2.51"), b"alice@example.com", at(base, 8000));
    assert_eq!(
        p.auth_user_blocked(b"alice@example.com", at(base, 8000)),
        Some(300)
    );
    assert_eq!(
        p.auth_user_blocked(b"bob@example.com", at(base, 8000)),
        None
    );
    // Unknown users count like known ones (the caller cannot tell them apart).
    for i in 0..5 {
        p.auth_failed(
            ip("192.0.2.52"),
            b"nosuchuser@example.com",
            at(base, 9000 + i),
        );
    }
    assert!(
        p.auth_user_blocked(b"nosuchuser@example.com", at(base, 9100))
            .is_some()
    );
    // Failures older than the window are forgotten.
    for i in 0..4 {
        p.auth_failed(ip("192.0.2.53"), b"carol@example.com", at(base, i * 30_000));
    }
    p.auth_failed(ip("192.0.2.53"), b"carol@example.com", at(base, 200_000));
    assert_eq!(
        p.auth_user_blocked(b"carol@example.com", at(base, 200_000)),
        None
    );
    // Blocks expire.
    assert_eq!(
        p.auth_user_blocked(b"alice@example.com", at(base, 308_001)),
        None
    );
    assert_eq!(p.ip_blocked(a, at(base, 307_001)), None);
    assert_eq!(
        reg(&p, "192.0.2.50", None, at(base, 307_001)),
        Verdict::Accept
    );
    // Lifting a block by hand.
    p.auth_failed(a, b"x@y", at(base, 400_000));
    for i in 0..8 {
        p.auth_failed(a, b"x@y", at(base, 400_000 + i));
    }
    assert!(p.ip_blocked(a, at(base, 400_010)).is_some());
    assert!(p.unblock_ip(a) >= 1);
    assert_eq!(p.ip_blocked(a, at(base, 400_010)), None);
    assert!(p.unblock_user(b"x@y"));
    assert_eq!(p.auth_user_blocked(b"x@y", at(base, 400_010)), None);
}

#[test]
fn memory_stays_bounded_under_a_flood_of_distinct_sources() {
    let pike = PikeConfig {
        max_entries: 6400,
        auth_fail_limit_ip: 3,
        ..ip_mode()
    };
    let (p, base) = protect(pike);
    let cap = p.table_capacity();
    assert_eq!(cap, 6400);
    // Half a million distinct spoofed IPv4 sources within 10 s, plus failed auths.
    for i in 0u32..500_000 {
        let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let t = at(base, u64::from(i) / 50);
        let _ = p.check(src, None, Class::Register, b"REGISTER", t);
        if i % 4 == 0 {
            p.auth_failed(src, format!("u{i}@example.com").as_bytes(), t);
        }
        if i % 50_000 == 0 {
            let sizes = p.table_sizes();
            assert!(sizes.iter().all(|&n| n <= cap), "{sizes:?}");
        }
    }
    let sizes = p.table_sizes();
    assert!(sizes.iter().all(|&n| n <= cap), "{sizes:?}");
    assert!(p.stats().untracked.get() > 0, "overflow is counted");
    // A real flooder arriving during the spoofed flood is still caught once idle entries go.
    let t = at(base, 20_000);
    let mut blocked = false;
    for i in 0..100 {
        blocked |= !reg(&p, "192.0.2.200", None, at(base, 20_000 + i)).is_accept();
    }
    assert!(blocked);
    assert!(p.ip_blocked(ip("192.0.2.200"), t).is_some());
}

#[test]
fn rate_limits_apply_per_method_to_initial_requests_only() {
    let rl = RateLimitConfig {
        enabled: true,
        methods: [("INVITE".to_string(), 10.0)].into_iter().collect(),
        burst_seconds: 1.0,
        retry_after: 4,
        ..RateLimitConfig::default()
    };
    let pike = PikeConfig {
        enabled: false,
        ..PikeConfig::default()
    };
    let (p, base) = protect_with(pike, rl, quiet_overload());
    let t = at(base, 1000);
    let ok = (0..50)
        .filter(|i| {
            p.check(
                ip(&format!("192.0.2.{i}")),
                None,
                Class::Invite,
                b"INVITE",
                t,
            )
            .is_accept()
        })
        .count();
    assert_eq!(ok, 10);
    match p.check(ip("192.0.2.99"), None, Class::Invite, b"INVITE", t) {
        Verdict::Reject {
            status: 503,
            retry_after,
            reason: Reason::RateLimit,
        } => assert!((2..=6).contains(&retry_after)),
        v => panic!("{v:?}"),
    }
    // re-INVITE / BYE inside dialogs and other methods are not limited.
    assert!((0..100).all(|_| {
        p.check(ip("192.0.2.1"), None, Class::InDialog, b"INVITE", t)
            .is_accept()
    }));
    assert!((0..100).all(|_| {
        p.check(ip("192.0.2.1"), None, Class::Register, b"REGISTER", t)
            .is_accept()
    }));
    assert!(
        p.check(
            ip("192.0.2.1"),
            None,
            Class::Invite,
            b"INVITE",
            at(base, 1100)
        )
        .is_accept(),
        "refilled"
    );
}

#[test]
fn overload_sheds_new_requests_but_never_in_dialog_ones() {
    let pike = PikeConfig {
        enabled: false,
        ..PikeConfig::default()
    };
    let ol = OverloadConfig {
        max_transactions: 100,
        max_shed: 1.0,
        ..OverloadConfig::default()
    };
    let (p, base) = protect_with(pike, RateLimitConfig::default(), ol);
    p.overload().set_transactions(10_000);
    for k in 0..30 {
        p.overload().update(at(base, 100 * (k + 1)));
    }
    let t = at(base, 3100);
    for class in [Class::Register, Class::Invite, Class::Other] {
        match p.check(ip("192.0.2.1"), None, class, b"X", t) {
            Verdict::Reject {
                status: 503,
                retry_after,
                reason: Reason::Overload,
            } => assert!((5..=15).contains(&retry_after)),
            v => panic!("{class:?}: {v:?}"),
        }
    }
    assert!((0..1000).all(|_| {
        p.check(ip("192.0.2.1"), None, Class::InDialog, b"BYE", t)
            .is_accept()
    }));
    assert_eq!(p.stats().shed[Class::Register.index()].get(), 1);
    assert_eq!(p.stats().shed[Class::InDialog.index()].get(), 0);
}

fn raw(method: &str, to_tag: bool, from_user: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
         From: <sip:{from_user}@example.com>;tag=a\r\nTo: <sip:bob@example.com>{}\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
        if to_tag { ";tag=b" } else { "" }
    )
    .into_bytes()
}

#[test]
fn requests_are_classed_by_method_and_to_tag_and_keyed_by_from_user() {
    let m = |method, tag| SipMessage::parse(bytes::Bytes::from(raw(method, tag, "alice"))).unwrap();
    assert_eq!(Class::of(&m("REGISTER", false)), Class::Register);
    assert_eq!(Class::of(&m("INVITE", false)), Class::Invite);
    assert_eq!(Class::of(&m("INVITE", true)), Class::InDialog);
    assert_eq!(Class::of(&m("BYE", true)), Class::InDialog);
    assert_eq!(Class::of(&m("ACK", false)), Class::InDialog);
    assert_eq!(Class::of(&m("CANCEL", false)), Class::InDialog);
    assert_eq!(Class::of(&m("OPTIONS", false)), Class::Other);
    assert_eq!(user_of(&m("OPTIONS", false)), Some(&b"alice"[..]));
}

fn call(
    core: &geosip_core::Core,
    name: &str,
    params: Vec<Value>,
) -> Result<Value, geosip_core::rpc::RpcError> {
    let mut f = core.rpc.call(name, params);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => panic!("pending"),
    }
}

#[test]
fn a_503_verdict_is_sent_with_retry_after_and_rpcs_list_and_unblock() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let pike = PikeConfig {
        action: Action::Reject503,
        stage: Stage::Script,
        ..ip_mode()
    };
    let p = Arc::new(Protect::new(pike, RateLimitConfig::default(), quiet_overload()).unwrap());
    p.register(&core.metrics, &core.rpc);
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let src = phone.local_addr().unwrap().to_string();
    let msg = raw("OPTIONS", false, "alice");
    let mut last = 1;
    for _ in 0..31 {
        let mut ctx = ctx_for(&core, &msg, &src);
        last = p.pike_check_req(&core, &mut ctx);
        assert_eq!(ctx.replied.is_some(), last < 0);
    }
    assert_eq!(last, -1);
    let mut buf = [0u8; 2048];
    let n = phone.recv(&mut buf).unwrap();
    let reply = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(reply.starts_with("SIP/2.0 503 "), "{reply}");
    assert!(
        reply.contains("\r\nRetry-After: 60\r\n") || reply.contains("\r\nRetry-After: 59\r\n"),
        "{reply}"
    );

    let list = call(&core, "pike.list", vec![]).unwrap();
    assert_eq!(list[0]["ip"], "127.0.0.1");
    assert_eq!(list[0]["kind"], "flood");
    let text = core.metrics.render_prometheus();
    assert!(
        text.contains("geosip_pike_blocked{kind=\"flood\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("geosip_pike_refused_total{reason=\"flood\",action=\"503\"} 1"),
        "{text}"
    );
    let stats = call(&core, "pike.stats", vec![]).unwrap();
    assert_eq!(stats["blocked"]["flood"], 1);
    assert!(call(&core, "pike.unblock", vec![Value::from("not an ip")]).is_err());
    let r = call(&core, "pike.unblock", vec![Value::from("127.0.0.1")]).unwrap();
    assert_eq!(r["removed"], 1);
    let mut ctx = ctx_for(&core, &msg, &src);
    assert_eq!(p.pike_check_req(&core, &mut ctx), 1);
    // An ACK is never answered.
    let mut ctx = ctx_for(&core, &raw("ACK", true, "alice"), &src);
    assert!(!p.respond(
        &core,
        &mut ctx,
        Verdict::Reject {
            status: 503,
            retry_after: 1,
            reason: Reason::Overload
        }
    ));
    assert!(ctx.replied.is_none());
}

#[test]
fn in_pipeline_mode_the_script_function_only_asks() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let p = Protect::new(ip_mode(), RateLimitConfig::default(), quiet_overload()).unwrap();
    let msg = raw("OPTIONS", false, "alice");
    for _ in 0..100 {
        let mut ctx = ctx_for(&core, &msg, "127.0.0.1:5999");
        assert_eq!(
            p.pike_check_req(&core, &mut ctx),
            1,
            "no counting in the script"
        );
    }
    let now = Instant::now();
    for _ in 0..31 {
        p.check(ip("127.0.0.1"), None, Class::Other, b"OPTIONS", now);
    }
    let mut ctx = ctx_for(&core, &msg, "127.0.0.1:5999");
    assert_eq!(p.pike_check_req(&core, &mut ctx), -1);
    assert!(ctx.replied.is_none(), "drop: nothing sent");
}
