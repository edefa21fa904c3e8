//! The stateful proxy on the wire: real UDP/TCP sockets on loopback, a mini pipeline, test UAs.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use geosip_tm::TmConfig;
use sip_msg::HeaderName;

const QUIET: Duration = Duration::from_millis(300);

fn one_target(uri: String) -> impl Fn(&geosip_tm::Tm, &mut geosip_core::ctx::MsgCtx) + Send + Sync {
    move |_, ctx| set_targets(ctx, &[(uri.clone(), 1000)])
}

fn no_failure(
    _: &geosip_tm::Tm,
    _: &str,
    _: &mut geosip_core::ctx::MsgCtx,
    _: geosip_core::routes::FailureInfo,
) {
}

/// Runs the INVITE / 180 / 200 exchange and returns (callee's INVITE, its source, caller's 200).
fn answer(
    p: &Proxy,
    alice: &Ua,
    bob: &Ua,
    call: &Call,
) -> (
    sip_msg::SipMessage,
    std::net::SocketAddr,
    sip_msg::SipMessage,
) {
    alice.send(
        if alice.proto == sip_transport::Proto::Udp {
            p.udp
        } else {
            p.tcp
        },
        &call.bytes,
    );
    let (inv, src) = bob.wait_req("INVITE");
    bob.reply(&inv, src, 180, "bt");
    alice.wait_resp(180, "INVITE");
    bob.reply(&inv, src, 200, "bt");
    let ok = alice.wait_resp(200, "INVITE");
    (inv, src, ok)
}

#[test]
fn a_basic_call_goes_through_record_route_and_the_caller_hangs_up() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"v=0\r\n");
    alice.send(p.udp, &call.bytes);
    alice.wait_resp(100, "INVITE");

    let (inv, src) = bob.wait_req("INVITE");
    assert_eq!(inv.request_uri_bytes(), Some(bob.uri().as_bytes()));
    assert_eq!(inv.vias().count(), 2, "our Via on top of the caller's");
    assert!(branch_of(&inv).starts_with("z9hG4bKt"));
    assert_eq!(inv.max_forwards(), Some(69));
    assert_eq!(record_routes(&inv), vec![format!("<sip:{};lr>", p.udp)]);
    assert_eq!(inv.body(), b"v=0\r\n");
    let caller_via = inv.vias().nth(1).unwrap();
    assert_eq!(
        caller_via.rport(),
        sip_msg::Rport::Value(alice.addr.port()),
        "rport stamped"
    );

    bob.reply(&inv, src, 180, "bt");
    let ringing = alice.wait_resp(180, "INVITE");
    assert_eq!(ringing.vias().count(), 1, "our Via removed");
    bob.reply(&inv, src, 200, "bt");
    let ok = alice.wait_resp(200, "INVITE");
    assert_eq!(ok.vias().count(), 1);
    assert_eq!(ok.to_tag(), Some(&b"bt"[..]));
    assert_eq!(record_routes(&ok).len(), 1);

    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    let (ack, _) = bob.wait_req("ACK");
    assert_eq!(
        ack.routes().count(),
        0,
        "our Route consumed by loose routing"
    );
    alice.send(p.udp, &call.in_dialog(&alice, "BYE", 2, &ok));
    let (bye, bsrc) = bob.wait_req("BYE");
    bob.reply(&bye, bsrc, 200, "bt");
    alice.wait_resp(200, "BYE");

    p.assert_all_freed(WAIT);
    let s = p.tm.stats();
    assert_eq!(
        (s.total_invite, s.total_non_invite),
        (1, 1),
        "the ACK of the 2xx is stateless"
    );
    assert!(s.relayed[1] >= 2 && s.local_replies[0] == 1, "{s:?}");

    // The RPC and the metrics see the same counters.
    let mut f = p.core.rpc.call("tm.stats", vec![]);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let std::task::Poll::Ready(Ok(v)) = f.as_mut().poll(&mut cx) else {
        panic!("tm.stats failed")
    };
    assert_eq!(v["live"]["total"], 0);
    assert_eq!(v["created"]["invite"], 1);
    assert!(
        p.core
            .metrics
            .render_prometheus()
            .contains("geosip_tm_transactions{type=\"invite\"} 0")
    );
}

#[test]
fn a_basic_call_can_be_hung_up_by_the_callee() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    let (inv, _, ok) = answer(&p, &alice, &bob, &call);
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    bob.wait_req("ACK");

    bob.send(p.udp, &callee_request(&bob, "BYE", &inv, "bt", 1));
    let (bye, asrc) = alice.wait_req("BYE");
    assert_eq!(bye.request_uri_bytes(), Some(alice.uri().as_bytes()));
    assert_eq!(bye.routes().count(), 0);
    alice.reply(&bye, asrc, 200, "x");
    let ok = bob.wait_resp(200, "BYE");
    assert_eq!(ok.vias().count(), 1);
    p.assert_all_freed(WAIT);
}

#[test]
fn cancel_before_answer_gives_the_caller_200_and_487_and_the_callee_a_cancel_whose_487_tm_acks() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    bob.reply(&inv, src, 180, "bt");
    alice.wait_resp(180, "INVITE");

    alice.send(p.udp, &call.cancel(&alice));
    alice.wait_resp(200, "CANCEL");
    let (cancel, csrc) = bob.wait_req("CANCEL");
    assert_eq!(
        branch_of(&cancel),
        branch_of(&inv),
        "§9.1: same branch as the INVITE"
    );
    assert_eq!(cancel.vias().count(), 1);
    assert_eq!(cancel.request_uri_bytes(), inv.request_uri_bytes());
    bob.reply(&cancel, csrc, 200, "bt");
    bob.reply(&inv, src, 487, "bt");
    let (ack, _) = bob.wait_req("ACK");
    assert_eq!(
        branch_of(&ack),
        branch_of(&inv),
        "the proxy ACKs the 487 itself"
    );
    assert_eq!(ack.to_tag(), Some(&b"bt"[..]));

    let fin = alice.wait_resp(487, "INVITE");
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    let late: Vec<_> = bob
        .drain(QUIET)
        .into_iter()
        .filter(|m| m.method_bytes() == Some(b"ACK"))
        .collect();
    assert!(
        late.is_empty(),
        "the caller's ACK of the 487 is absorbed by the proxy"
    );
    p.assert_all_freed(WAIT);
    assert_eq!(p.tm.stats().cancels, 1);
}

#[test]
fn a_cancel_before_any_provisional_ends_the_call_with_487_without_waiting() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    alice.wait_resp(100, "INVITE");
    alice.send(p.udp, &call.cancel(&alice));
    alice.wait_resp(200, "CANCEL");
    let fin = alice.wait_resp(487, "INVITE");
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    assert!(
        bob.wait(QUIET, |m| m.method_bytes() == Some(b"CANCEL"))
            .is_none(),
        "§9.1: no CANCEL before a provisional"
    );
    // The callee's provisional then triggers the deferred CANCEL.
    bob.reply(&inv, src, 180, "bt");
    let (cancel, csrc) = bob.wait_req("CANCEL");
    bob.reply(&cancel, csrc, 200, "bt");
    bob.reply(&inv, src, 487, "bt");
    bob.wait_req("ACK");
    p.assert_all_freed(WAIT);
}

#[test]
fn parallel_forking_relays_the_first_2xx_and_cancels_the_other_branch() {
    let (b1, b2) = (Ua::udp("b1"), Ua::udp("b2"));
    let targets = vec![(b1.uri(), 1000), (b2.uri(), 1000)];
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| set_targets(ctx, &targets),
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (i1, s1) = b1.wait_req("INVITE");
    let (i2, s2) = b2.wait_req("INVITE");
    assert_ne!(branch_of(&i1), branch_of(&i2));
    b1.reply(&i1, s1, 180, "t1");
    b2.reply(&i2, s2, 180, "t2");
    b1.reply(&i1, s1, 200, "t1");
    let ok = alice.wait_resp(200, "INVITE");
    assert_eq!(ok.to_tag(), Some(&b"t1"[..]));

    let (cancel, cs) = b2.wait_req("CANCEL");
    assert!(
        cancel
            .header_by_name(b"Reason")
            .is_some_and(|r| r.starts_with(b"SIP;cause=200"))
    );
    b2.reply(&cancel, cs, 200, "t2");
    b2.reply(&i2, s2, 487, "t2");
    b2.wait_req("ACK");
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    b1.wait_req("ACK");
    alice.send(p.udp, &call.in_dialog(&alice, "BYE", 2, &ok));
    let (bye, bs) = b1.wait_req("BYE");
    b1.reply(&bye, bs, 200, "t1");
    alice.wait_resp(200, "BYE");
    let finals: Vec<_> = alice
        .drain(QUIET)
        .into_iter()
        .filter(|m| m.status().is_some_and(|s| s >= 300))
        .map(|m| summary(&m))
        .collect();
    assert!(finals.is_empty(), "the caller sees no 487: {finals:?}");
    assert!(
        b1.wait(Duration::ZERO, |m| m.method_bytes() == Some(b"CANCEL"))
            .is_none()
    );
    p.assert_all_freed(WAIT);
}

#[test]
fn a_6xx_cancels_the_other_branches_and_is_the_final_response() {
    let (b1, b2) = (Ua::udp("b1"), Ua::udp("b2"));
    let targets = vec![(b1.uri(), 1000), (b2.uri(), 1000)];
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| set_targets(ctx, &targets),
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (i1, s1) = b1.wait_req("INVITE");
    let (i2, s2) = b2.wait_req("INVITE");
    b1.reply(&i1, s1, 180, "t1");
    b2.reply(&i2, s2, 180, "t2");
    b1.reply(&i1, s1, 603, "t1");
    b1.wait_req("ACK");
    let (cancel, cs) = b2.wait_req("CANCEL");
    assert!(
        cancel
            .header_by_name(b"Reason")
            .is_some_and(|r| r.starts_with(b"SIP;cause=603"))
    );
    b2.reply(&cancel, cs, 200, "t2");
    b2.reply(&i2, s2, 487, "t2");
    b2.wait_req("ACK");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(
        fin.status(),
        Some(603),
        "a 6xx beats the 487 of the cancelled branch"
    );
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
}

#[test]
fn serial_forking_moves_to_the_next_q_group_after_a_486_in_the_failure_route() {
    let (b1, b2) = (Ua::udp("b1"), Ua::udp("b2"));
    let targets = vec![(b1.uri(), 1000), (b2.uri(), 500)];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| {
            set_targets(ctx, &targets);
            ctx.on_failure = Some("serial".into());
        },
        move |tm, _, ctx, _| {
            seen2.lock().unwrap().push((
                tm.t_get_status_code(),
                tm.t_is_canceled(),
                tm.t_branch_timeout(),
            ));
            if tm.t_next_contacts(ctx) {
                tm.t_relay(ctx).unwrap();
            }
        },
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (i1, s1) = b1.wait_req("INVITE");
    assert!(
        b2.wait(QUIET, |_| true).is_none(),
        "the lower q group waits"
    );
    b1.reply(&i1, s1, 486, "t1");
    b1.wait_req("ACK");
    let (i2, s2) = b2.wait_req("INVITE");
    assert_eq!(i2.request_uri_bytes(), Some(b2.uri().as_bytes()));
    assert_eq!(i2.call_id(), i1.call_id());
    b2.reply(&i2, s2, 200, "t2");
    let ok = alice.wait_resp(200, "INVITE");
    assert_eq!(ok.to_tag(), Some(&b"t2"[..]));
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    b2.wait_req("ACK");
    assert!(
        alice
            .drain(Duration::ZERO)
            .iter()
            .all(|m| m.status() != Some(486)),
        "the 486 is not relayed when the failure route relays again"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[(Some(486), false, false)]
    );
    assert!(
        p.hook_log()
            .iter()
            .any(|l| l == "failure serial status=486 canceled=false timeout=false reply=Some(486)")
    );
    p.assert_all_freed(WAIT);
}

#[test]
fn serial_forking_moves_to_the_next_q_group_when_a_branch_times_out() {
    let (b1, b2) = (Ua::udp("b1"), Ua::udp("b2"));
    let targets = vec![(b1.uri(), 900), (b2.uri(), 100)];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let cfg = TmConfig {
        fr_timer: 300,
        ..fast_cfg()
    };
    let p = Proxy::start(
        cfg,
        move |_, ctx| {
            set_targets(ctx, &targets);
            ctx.on_failure = Some("serial".into());
        },
        move |tm, _, ctx, _| {
            seen2
                .lock()
                .unwrap()
                .push((tm.t_get_status_code(), tm.t_branch_timeout()));
            ctx.on_failure = Some("serial".into());
            if tm.t_next_contacts(ctx) {
                tm.t_relay(ctx).unwrap();
            }
        },
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    let t0 = Instant::now();
    alice.send(p.udp, &call.bytes);
    b1.wait_req("INVITE");
    let (i2, s2) = b2.wait_req("INVITE");
    assert!(t0.elapsed() >= Duration::from_millis(280), "after fr_timer");
    assert!(
        b1.wait(Duration::ZERO, |m| m.method_bytes() == Some(b"CANCEL"))
            .is_none(),
        "no CANCEL without a provisional"
    );
    b2.reply(&i2, s2, 486, "t2");
    b2.wait_req("ACK");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(
        fin.status(),
        Some(486),
        "best of a local 408 and a received 486"
    );
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[(Some(408), true), (Some(486), true)]
    );
    p.assert_all_freed(WAIT);
}

#[test]
fn without_a_failure_route_lower_q_groups_are_tried_in_turn() {
    let (b1, b2) = (Ua::udp("b1"), Ua::udp("b2"));
    let targets = vec![(b2.uri(), 500), (b1.uri(), 1000)];
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| set_targets(ctx, &targets),
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (i1, s1) = b1.wait_req("INVITE");
    b1.reply(&i1, s1, 480, "t1");
    let (i2, s2) = b2.wait_req("INVITE");
    b2.reply(&i2, s2, 404, "t2");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(480), "same class: the earliest branch");
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
}

#[test]
fn no_answer_at_all_gives_the_caller_a_408_also_after_the_proxy_sat_idle_with_its_timer_parked() {
    let bob = Ua::udp("bob");
    let cfg = TmConfig {
        fr_timer: 300,
        ..fast_cfg()
    };
    let p = Proxy::start(cfg, one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    for round in 1..=2u64 {
        // Idle long enough for the timer thread to park (it does after one empty tick). The
        // INVITE must wake it: parked, it would look again only after 5 s, past WAIT.
        std::thread::sleep(Duration::from_millis(100));
        let call = Call::invite(&alice, "sip:bob@example.com", b"");
        alice.send(p.udp, &call.bytes);
        alice.wait_resp(100, "INVITE");
        bob.wait_req("INVITE");
        let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
        assert_eq!(fin.status(), Some(408), "round {round}");
        assert!(fin.to_tag().is_some(), "a local final carries our To tag");
        alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
        p.assert_all_freed(WAIT);
        let s = p.tm.stats();
        assert_eq!((s.local_408, s.branch_timeouts), (round, round));
    }
}

#[test]
fn a_provisional_then_silence_ends_with_a_cancel_to_the_callee_and_408_to_the_caller() {
    let bob = Ua::udp("bob");
    let cfg = TmConfig {
        fr_inv_timer: 300,
        ..fast_cfg()
    };
    let p = Proxy::start(cfg, one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    bob.reply(&inv, src, 180, "bt");
    let (cancel, cs) = bob.wait_req("CANCEL");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(408));
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    bob.reply(&cancel, cs, 200, "bt");
    bob.reply(&inv, src, 487, "bt");
    bob.wait_req("ACK");
    p.assert_all_freed(WAIT);
}

#[test]
fn invite_retransmissions_are_absorbed_and_the_callee_sees_one_invite() {
    let bob = Ua::udp("bob");
    let scripts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (uri, runs) = (bob.uri(), Arc::clone(&scripts));
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            set_targets(ctx, &[(uri.clone(), 1000)]);
        },
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    for _ in 0..3 {
        alice.send(p.udp, &call.bytes);
    }
    let (inv, src) = bob.wait_req("INVITE");
    bob.reply(&inv, src, 180, "bt");
    alice.wait_resp(180, "INVITE");
    let runs_before = scripts.load(std::sync::atomic::Ordering::SeqCst);
    alice.send(p.udp, &call.bytes);
    alice.wait_resp(180, "INVITE");
    assert_eq!(
        scripts.load(std::sync::atomic::Ordering::SeqCst),
        runs_before,
        "pre_request absorbed the retransmission before the script"
    );
    let invites = bob
        .drain(QUIET)
        .into_iter()
        .filter(|m| m.method_bytes() == Some(b"INVITE"))
        .count();
    assert_eq!(invites, 0, "the callee saw exactly one INVITE");
    bob.reply(&inv, src, 200, "bt");
    let ok = alice.wait_resp(200, "INVITE");
    // An INVITE retransmitted after the 2xx is absorbed too (RFC 6026 Accepted).
    alice.send(p.udp, &call.bytes);
    assert!(
        bob.wait(QUIET, |m| m.method_bytes() == Some(b"INVITE"))
            .is_none()
    );
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    bob.wait_req("ACK");
    assert!(
        p.tm.stats().retransmissions_absorbed >= 4,
        "{:?}",
        p.tm.stats()
    );
    p.assert_all_freed(WAIT);
}

#[test]
fn a_udp_caller_reaches_a_tcp_callee_through_double_record_route() {
    let bob = Ua::tcp_listener("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"v=0\r\n");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    assert_eq!(inv.top_via().unwrap().transport(), b"TCP");
    let rr = record_routes(&inv);
    assert_eq!(
        rr,
        vec![
            format!("<sip:{};transport=tcp;lr;r2=on>", p.tcp),
            format!("<sip:{};lr;r2=on>", p.udp)
        ],
        "RFC 5658: the entry facing the callee on top"
    );
    bob.reply(&inv, src, 180, "bt");
    bob.reply(&inv, src, 200, "bt");
    let ok = alice.wait_resp(200, "INVITE");
    assert_eq!(record_routes(&ok).len(), 2);
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    let (ack, _) = bob.wait_req("ACK");
    assert_eq!(ack.top_via().unwrap().transport(), b"TCP");

    bob.send(p.tcp, &callee_request(&bob, "BYE", &inv, "bt", 1));
    let (bye, asrc) = alice.wait_req("BYE");
    assert_eq!(bye.top_via().unwrap().transport(), b"UDP");
    alice.reply(&bye, asrc, 200, "x");
    bob.wait_resp(200, "BYE");
    p.assert_all_freed(WAIT);
}

#[test]
fn a_30_kb_invite_over_tcp_is_relayed_intact() {
    let bob = Ua::tcp_listener("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::tcp_connect("alice", p.tcp);
    let mut body = b"v=0\r\n".to_vec();
    while body.len() < 30 * 1024 {
        body.extend_from_slice(format!("a=x-pad:{:060}\r\n", body.len()).as_bytes());
    }
    let call = Call::invite(&alice, "sip:bob@example.com", &body);
    assert!(call.bytes.len() > 30 * 1024);
    let (inv, _, ok) = answer(&p, &alice, &bob, &call);
    assert_eq!(inv.body(), &body[..]);
    assert_eq!(inv.content_length(), Some(body.len() as u64));
    alice.send(p.tcp, &call.in_dialog(&alice, "ACK", 1, &ok));
    bob.wait_req("ACK");
    alice.send(p.tcp, &call.in_dialog(&alice, "BYE", 2, &ok));
    let (bye, bs) = bob.wait_req("BYE");
    bob.reply(&bye, bs, 200, "bt");
    alice.wait_resp(200, "BYE");
    p.assert_all_freed(WAIT);
}

#[test]
fn a_non_invite_that_nobody_answers_gets_no_408_upstream_rfc_4320() {
    let bob = Ua::udp("bob");
    let cfg = TmConfig {
        fr_timer: 300,
        ..fast_cfg()
    };
    let p = Proxy::start(cfg, one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call_id = token("msg-");
    let req = alice.request(
        "MESSAGE",
        "sip:bob@example.com",
        &call_id,
        "f1",
        "<sip:bob@example.com>",
        1,
        &token("z9hG4bKm"),
        &[],
        b"",
    );
    alice.send(p.udp, &req);
    bob.wait_req("MESSAGE");
    assert!(
        alice
            .wait(Duration::from_millis(900), |m| m.status().is_some())
            .is_none(),
        "no response at all"
    );
    p.assert_all_freed(WAIT);
    assert_eq!(p.tm.stats().silent_non_invite, 1);
}

#[test]
fn a_non_invite_is_answered_by_the_callee_final_without_provisionals() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let req = alice.request(
        "OPTIONS",
        "sip:bob@example.com",
        &token("o-"),
        "f1",
        "<sip:bob@example.com>",
        1,
        &token("z9hG4bKo"),
        &[],
        b"",
    );
    alice.send(p.udp, &req);
    let (o, s) = bob.wait_req("OPTIONS");
    bob.reply(&o, s, 180, "t");
    bob.reply(&o, s, 200, "t");
    let r = alice.wait(WAIT, |m| m.status().is_some()).unwrap().0;
    assert_eq!(
        r.status(),
        Some(200),
        "RFC 4320 §4.2: no 1xx but 100 upstream for a non-INVITE"
    );
    // A retransmission gets the same 200 from the transaction.
    alice.send(p.udp, &req);
    assert_eq!(
        alice
            .wait(WAIT, |m| m.status().is_some())
            .unwrap()
            .0
            .status(),
        Some(200)
    );
    assert!(
        bob.wait(QUIET, |m| m.method_bytes() == Some(b"OPTIONS"))
            .is_none()
    );
    p.assert_all_freed(WAIT);
}

#[test]
fn beyond_max_transactions_t_relay_fails_with_503_and_retry_after() {
    let bob = Ua::udp("bob");
    let cfg = TmConfig {
        max_transactions: 1,
        fr_timer: 400,
        ..fast_cfg()
    };
    let p = Proxy::start(cfg, one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let first = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &first.bytes);
    bob.wait_req("INVITE");
    let second = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &second.bytes);
    let r = alice.wait_final("INVITE", &second.call_id, WAIT).unwrap();
    assert_eq!(r.status(), Some(503));
    assert_eq!(r.header_by_name(b"Retry-After"), Some(&b"5"[..]));
    let fin = alice.wait_final("INVITE", &first.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(408));
    alice.send(p.udp, &first.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
    assert_eq!(p.tm.stats().rejected_full, 1);
}

#[test]
fn an_unroutable_target_fails_t_relay_and_frees_the_transaction() {
    let p = Proxy::start(
        fast_cfg(),
        one_target("sip:bob@[::1]:5999".into()),
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let r = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(r.status(), Some(503), "no IPv6 socket");
    assert_eq!(p.tm.live(), 0);
    let p2 = Proxy::start(fast_cfg(), one_target("tel:+15551234".into()), no_failure);
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p2.udp, &call.bytes);
    let r = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(r.status(), Some(416));
    assert_eq!(p2.tm.live(), 0);
}

#[test]
fn the_failure_route_can_answer_with_t_reply_and_reply_routes_see_provisionals() {
    let bob = Ua::udp("bob");
    let target = bob.uri();
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| {
            set_targets(ctx, &[(target.clone(), 1000)]);
            ctx.on_failure = Some("fr".into());
            ctx.on_reply = Some("rr".into());
            ctx.on_branch = Some("br".into());
        },
        |tm, _, ctx, info| {
            if info.status == 486 {
                tm.t_reply(ctx, 480, Some(b"Try Later"), &[(b"X-Why", b"busy")])
                    .unwrap();
            }
        },
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    bob.reply(&inv, src, 183, "bt");
    alice.wait_resp(183, "INVITE");
    bob.reply(&inv, src, 486, "bt");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(480));
    assert_eq!(fin.reason_bytes(), Some(&b"Try Later"[..]));
    assert_eq!(fin.header_by_name(b"X-Why"), Some(&b"busy"[..]));
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    let log = p.hook_log();
    assert!(
        log.iter().any(|l| l.starts_with("branch br sip:bob@")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l == "reply rr 183") && log.iter().any(|l| l == "reply rr 486"),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l == "nested Some(NotAllowed) false"),
        "{log:?}"
    );
    p.assert_all_freed(WAIT);
    assert_eq!(
        inv.header(HeaderName::CallId),
        Some(call.call_id.as_bytes())
    );
}

#[test]
fn without_restart_fr_on_each_reply_later_provisionals_do_not_extend_fr_inv_timer() {
    let bob = Ua::udp("bob");
    let cfg = TmConfig {
        fr_inv_timer: 500,
        restart_fr_on_each_reply: false,
        ..fast_cfg()
    };
    let p = Proxy::start(cfg, one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    let t0 = Instant::now();
    bob.reply(&inv, src, 180, "bt");
    std::thread::sleep(Duration::from_millis(350));
    bob.reply(&inv, src, 183, "bt");
    let (cancel, cs) = bob.wait_req("CANCEL");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(800),
        "CANCEL {waited:?} after the first provisional (a restarted timer would give ~850 ms)"
    );
    bob.reply(&cancel, cs, 200, "bt");
    bob.reply(&inv, src, 487, "bt");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(408));
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
}

#[test]
fn challenges_of_every_branch_are_aggregated_in_the_401_or_407_sent_upstream() {
    let (b1, b2) = (Ua::udp("b1"), Ua::udp("b2"));
    let targets = vec![(b1.uri(), 1000), (b2.uri(), 1000)];
    let p = Proxy::start(
        fast_cfg(),
        move |_, ctx| set_targets(ctx, &targets),
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (i1, s1) = b1.wait_req("INVITE");
    let (i2, s2) = b2.wait_req("INVITE");
    b1.send(
        s1,
        &b1.response(
            &i1,
            401,
            "t1",
            &[("WWW-Authenticate", "Digest realm=\"one\", nonce=\"1\"")],
        ),
    );
    b2.send(
        s2,
        &b2.response(
            &i2,
            407,
            "t2",
            &[("Proxy-Authenticate", "Digest realm=\"two\", nonce=\"2\"")],
        ),
    );
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(
        fin.status(),
        Some(401),
        "the earliest of two resubmission codes"
    );
    assert!(
        fin.header(HeaderName::WwwAuthenticate)
            .is_some_and(|v| v.starts_with(b"Digest realm=\"one\""))
    );
    assert!(
        fin.header(HeaderName::ProxyAuthenticate)
            .is_some_and(|v| v.starts_with(b"Digest realm=\"two\"")),
        "RFC 3261 §16.7 step 7"
    );
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
}

#[test]
fn a_503_from_the_only_branch_goes_upstream_as_500() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, src) = bob.wait_req("INVITE");
    bob.reply(&inv, src, 503, "bt");
    bob.wait_req("ACK");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(500), "RFC 3261 §16.7 step 6");
    assert_eq!(fin.to_tag(), Some(&b"bt"[..]));
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
}

#[test]
fn rfc_2543_requests_without_magic_cookie_are_matched_for_retransmissions_and_the_ack() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call_id = token("old-");
    let inv = alice.request(
        "INVITE",
        "sip:bob@example.com",
        &call_id,
        "f1",
        "<sip:bob@example.com>",
        1,
        "1234",
        &[],
        b"",
    );
    alice.send(p.udp, &inv);
    let (i, src) = bob.wait_req("INVITE");
    alice.send(p.udp, &inv);
    alice.wait_resp(100, "INVITE");
    bob.reply(&i, src, 486, "bt");
    bob.wait_req("ACK");
    let fin = alice.wait_final("INVITE", &call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(486));
    let ack = alice.request(
        "ACK",
        "sip:bob@example.com",
        &call_id,
        "f1",
        &to_value(&fin),
        1,
        "1234",
        &[],
        b"",
    );
    alice.send(p.udp, &ack);
    let extra: Vec<_> = bob.drain(QUIET).iter().map(summary).collect();
    assert!(
        extra.is_empty(),
        "retransmission and ACK absorbed: {extra:?}"
    );
    p.assert_all_freed(WAIT);
    assert_eq!(p.tm.stats().total_invite, 1);
}

#[test]
fn t_newtran_then_t_relay_relays_on_the_same_transaction() {
    let bob = Ua::udp("bob");
    let uri = bob.uri();
    let p = Proxy::start(
        fast_cfg(),
        move |tm, ctx| {
            assert_eq!(tm.t_newtran(ctx), Ok(true));
            assert!(tm.t_check_trans(ctx));
            set_targets(ctx, &[(uri.clone(), 1000)]);
        },
        no_failure,
    );
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    let (_, _, ok) = answer(&p, &alice, &bob, &call);
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    bob.wait_req("ACK");
    p.assert_all_freed(WAIT);
    assert_eq!(p.tm.stats().total_invite, 1);
}

#[test]
fn a_reply_with_a_forged_branch_salt_is_dropped() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    alice.wait_resp(100, "INVITE");
    let (inv, src) = bob.wait_req("INVITE");
    let branch = branch_of(&inv);
    let mut forged_branch = branch.clone().into_bytes();
    let salt_at = "z9hG4bKt".len() + 16; // first digit of the salt
    forged_branch[salt_at] = if forged_branch[salt_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let forged = String::from_utf8(bob.response(&inv, 200, "evil", &[]))
        .unwrap()
        .replace(&branch, std::str::from_utf8(&forged_branch).unwrap());
    bob.send(src, forged.as_bytes());
    assert!(
        alice.wait(QUIET, |m| m.status() == Some(200)).is_none(),
        "not relayed"
    );
    assert_eq!(p.tm.stats().forged_replies, 1);
    bob.reply(&inv, src, 486, "bt");
    let fin = alice.wait_final("INVITE", &call.call_id, WAIT).unwrap();
    assert_eq!(fin.status(), Some(486));
    alice.send(p.udp, &call.ack_non2xx(&alice, &fin));
    p.assert_all_freed(WAIT);
}

#[test]
fn a_2xx_with_a_silent_parallel_branch_neither_spins_the_timer_nor_leaks() {
    let (bob, dead) = (Ua::udp("bob"), Ua::udp("dead"));
    let targets = vec![(bob.uri(), 1000), (dead.uri(), 1000)];
    let cfg = TmConfig {
        fr_timer: 1_500,
        ..fast_cfg()
    };
    let p = Proxy::start(cfg, move |_, ctx| set_targets(ctx, &targets), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    let (_, _, ok) = answer(&p, &alice, &bob, &call);
    alice.send(p.udp, &call.in_dialog(&alice, "ACK", 1, &ok));
    bob.wait_req("ACK");
    dead.wait_req("INVITE");
    // The silent branch keeps the transaction until its fr_timer (1.5 s), long after wt_timer
    // (200 ms) ended; the timer thread must visit it only when something is due.
    p.assert_all_freed(Duration::from_secs(4));
    let fires = p.tm.stats().timer_fires;
    assert!(
        fires < 30,
        "the timer visited the transaction {fires} times"
    );
    assert!(
        dead.drain(Duration::ZERO)
            .iter()
            .all(|m| m.method_bytes() != Some(b"CANCEL")),
        "no CANCEL to a branch that never sent a provisional (RFC 3261 §9.1)"
    );
}

/// `inv` as a next hop would send it back to the proxy: its own Via on top, the rest as is,
/// the Request-URI replaced when `ruri` is given.
fn sent_back(inv: &sip_msg::SipMessage, by: &Ua, ruri: Option<&str>) -> Vec<u8> {
    let raw = inv.as_bytes();
    let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
    let line = match ruri {
        Some(u) => format!("INVITE {u} SIP/2.0"),
        None => String::from_utf8_lossy(&raw[..line_end]).into_owned(),
    };
    let mut out = format!(
        "{line}\r\nVia: SIP/2.0/UDP {};branch={};rport\r\n",
        by.addr,
        token("z9hG4bKback")
    )
    .into_bytes();
    out.extend_from_slice(&raw[line_end + 2..]);
    out
}

#[test]
fn a_request_that_comes_back_unchanged_is_answered_482_and_a_spiral_is_forwarded() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(fast_cfg(), one_target(bob.uri()), no_failure);
    let alice = Ua::udp("alice");
    let call = Call::invite(&alice, "sip:bob@example.com", b"");
    alice.send(p.udp, &call.bytes);
    let (inv, _) = bob.wait_req("INVITE");
    let ours = branch_of(&inv);
    assert_eq!(
        ours.len(),
        "z9hG4bKt".len() + 25 + 17,
        "branch carries the loop hash: {ours}"
    );

    // A misconfigured next hop sends it straight back: same Request-URI, same dialog
    // identifiers, our Via still in it (RFC 3261 §16.3 step 4).
    bob.send(p.udp, &sent_back(&inv, &bob, None));
    let looped = bob.wait_resp(482, "INVITE");
    assert_eq!(
        looped.vias().count(),
        3,
        "answered to the hop that looped it"
    );
    assert!(
        bob.drain(QUIET).iter().all(|m| !m.is_request()),
        "the looped request was not forwarded again"
    );

    // Back with another Request-URI: a spiral, forwarded (with a fourth Via).
    bob.send(
        p.udp,
        &sent_back(&inv, &bob, Some("sip:bob-elsewhere@example.com")),
    );
    let (spiral, _) = bob.wait_req("INVITE");
    assert_eq!(spiral.vias().count(), 4);
    assert_eq!(spiral.call_id(), inv.call_id());
}

#[test]
fn a_preloaded_strict_route_gets_the_request_uri_and_the_old_one_becomes_the_last_route() {
    let bob = Ua::udp("bob");
    let p = Proxy::start(
        fast_cfg(),
        |_, _| {}, // route by the request as it is
        no_failure,
    );
    let alice = Ua::udp("alice");
    let strict = format!("<sip:{}>", bob.addr); // no ;lr: an RFC 2543 strict router
    let bytes = alice.request(
        "INVITE",
        "sip:carol@example.net",
        &token("call-"),
        "ft1",
        "<sip:carol@example.net>",
        1,
        &token("z9hG4bKc"),
        &[strict.clone(), "<sip:proxy2.example.net;lr>".into()],
        b"",
    );
    alice.send(p.udp, &bytes);
    let (inv, _) = bob.wait_req("INVITE");
    // RFC 3261 §16.6 step 6: the strict router's URI is the Request-URI, its Route value is
    // gone, and the old Request-URI is the last Route.
    assert_eq!(
        inv.request_uri_bytes(),
        Some(format!("sip:{}", bob.addr).as_bytes())
    );
    let routes: Vec<String> = inv
        .routes()
        .map(|r| String::from_utf8_lossy(r.uri_raw()).into_owned())
        .collect();
    assert_eq!(
        routes,
        vec![
            "sip:proxy2.example.net;lr".to_string(),
            "sip:carol@example.net".to_string()
        ]
    );
}
