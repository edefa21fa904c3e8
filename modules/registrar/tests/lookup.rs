//! lookup(), registered(), unregister(), the expiry timer.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use geosip_core::ctx::MsgCtx;
use geosip_registrar::{
    LOOKUP_ERROR, LOOKUP_FOUND, LOOKUP_NOT_FOUND, RegistrarConfig, SAVE_NO_REPLY, Tick,
};
use geosip_usrloc::unix_ms;
use sip_transport::Proto;

fn invite(env: &Env, ruri: &str) -> MsgCtx {
    let raw = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200:5060;branch=z9hG4bKinv1\r\nMax-Forwards: 70\r\nTo: <{ruri}>\r\nFrom: <sip:carol@example.com>;tag=c1\r\nCall-ID: inv-1@example.com\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    env.ctx(raw.as_bytes())
}

#[test]
fn lookup_orders_contacts_by_q_and_the_first_goes_to_the_request_uri() {
    let env = env(cfg());
    let bob = "sip:bob@example.com";
    env.save(
        &Reg::new(bob)
            .contact("<sip:bob@192.0.2.1>;q=0.5")
            .contact("<sip:bob@192.0.2.2>;q=1.0")
            .contact("<sip:bob@192.0.2.3>;q=0.8"),
    );
    let mut ctx = invite(&env, "sip:Bob@example.com;user=phone");
    assert_eq!(env.reg.lookup(&mut ctx, "location"), LOOKUP_FOUND);
    assert_eq!(ctx.ruri(), b"sip:bob@192.0.2.2");
    assert_eq!(ctx.ruri_q, 1000);
    let b: Vec<(&[u8], u16)> = ctx.branches.iter().map(|t| (&t.uri[..], t.q)).collect();
    assert_eq!(
        b,
        vec![
            (&b"sip:bob@192.0.2.3"[..], 800),
            (&b"sip:bob@192.0.2.1"[..], 500)
        ]
    );
    assert_eq!(ctx.targets().len(), 3);
    assert_eq!(env.reg.metrics().lookups_found.get(), 1);
}

#[test]
fn a_stored_path_becomes_the_branch_path_and_the_next_hop() {
    let env = env(cfg());
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@10.0.0.5:5060>;q=0.9")
            .header("Path: <sip:192.0.2.50:5062;lr>, <sip:core.example.net;lr>"),
    );
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@10.0.0.6:5060>;q=0.4")
            .header("Path: <sip:192.0.2.51;lr>"),
    );
    let mut ctx = invite(&env, ALICE);
    ctx.dst_uri = Some("sip:192.0.2.99".into());
    assert_eq!(env.reg.lookup(&mut ctx, "location"), LOOKUP_FOUND);
    assert_eq!(
        ctx.ruri_path.as_deref(),
        Some(&b"<sip:192.0.2.50:5062;lr>, <sip:core.example.net;lr>"[..])
    );
    assert_eq!(
        ctx.dst_uri, None,
        "the Path, not NAT handling or an old $du, decides the next hop"
    );
    let t = ctx.targets();
    let hop = env.core.next_hop(&ctx, &t[0]).unwrap();
    assert_eq!(hop.addr, "192.0.2.50:5062".parse().unwrap());
    assert_eq!(t[1].path.as_deref(), Some(&b"<sip:192.0.2.51;lr>"[..]));
    assert_eq!(t[1].dst_uri, None);
}

#[test]
fn a_contact_behind_nat_is_reached_at_the_address_the_register_came_from() {
    let env = env(cfg());
    let ua = env.ua_addr();
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@10.0.0.5:5060>;q=1")
            .contact("<sip:alice@pc.example.com>;q=0.5"),
    );
    let bob = "sip:bob@example.com";
    env.save(&Reg::new(bob).contact(&format!("<sip:bob@{ua}>")));
    let mut ctx = invite(&env, ALICE);
    assert_eq!(env.reg.lookup(&mut ctx, "location"), LOOKUP_FOUND);
    let received = format!("sip:{ua}");
    assert_eq!(ctx.dst_uri.as_deref(), Some(received.as_bytes()));
    assert_eq!(
        ctx.branches[0].dst_uri, None,
        "a host name in Contact is trusted (not an inside address)"
    );
    assert_eq!(
        ctx.send_socket,
        Some(env.core.transports.sockets()[0].id),
        "sent from the socket it registered on"
    );
    assert_eq!(env.core.next_hop(&ctx, &ctx.targets()[0]).unwrap().addr, ua);
    // A contact that names the address the REGISTER came from needs no dst_uri.
    let mut ctx = invite(&env, bob);
    assert_eq!(env.reg.lookup(&mut ctx, "location"), LOOKUP_FOUND);
    assert_eq!(ctx.dst_uri, None);
    // use_received off: the contact is trusted.
    let off = common::env(RegistrarConfig {
        use_received: false,
        ..cfg()
    });
    off.save(&Reg::new(ALICE).contact("<sip:alice@10.0.0.5:5060>"));
    let mut ctx = invite(&off, ALICE);
    off.reg.lookup(&mut ctx, "location");
    assert_eq!(ctx.dst_uri, None);
}

#[test]
fn a_phone_registered_over_tcp_is_reached_back_over_its_connection() {
    let env = env(cfg());
    let raw = Reg::new(ALICE)
        .contact("<sip:alice@pc.invalid;transport=tcp>")
        .raw(env.ua_addr().port());
    let mut ctx = env.ctx(&raw);
    ctx.rx.proto = Proto::Tcp;
    assert_eq!(env.reg.save(&mut ctx, "location", SAVE_NO_REPLY), 1);
    let mut ctx = invite(&env, ALICE);
    env.reg.lookup(&mut ctx, "location");
    let want = format!("sip:{};transport=tcp", env.ua_addr());
    assert_eq!(ctx.dst_uri.as_deref(), Some(want.as_bytes()));
}

#[test]
fn lookup_without_live_contacts_is_minus_one_and_an_unknown_table_is_minus_three() {
    let env = env(cfg());
    let mut ctx = invite(&env, ALICE);
    assert_eq!(env.reg.lookup(&mut ctx, "location"), LOOKUP_NOT_FOUND);
    assert!(ctx.new_ruri.is_none() && ctx.branches.is_empty());
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .expires("60"),
    );
    let later = unix_ms() + 61_000;
    assert_eq!(
        env.reg.lookup_at(&mut ctx, "location", later),
        LOOKUP_NOT_FOUND,
        "an expired binding is never returned"
    );
    assert_eq!(env.reg.lookup(&mut ctx, "other"), LOOKUP_ERROR);
    let mut tel = invite(&env, "tel:+4930123456");
    assert_eq!(env.reg.lookup(&mut tel, "location"), LOOKUP_NOT_FOUND);
    let m = env.reg.metrics();
    assert_eq!(
        (
            m.lookups_found.get(),
            m.lookups_not_found.get(),
            m.lookups_error.get()
        ),
        (0, 3, 1)
    );
}

#[test]
fn registered_tells_whether_an_aor_has_bindings_and_unregister_removes_them() {
    let env = env(cfg());
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .contact("<sip:alice@192.0.2.2>"),
    );
    let ctx = invite(&env, "sip:alice@example.com");
    assert!(env.reg.registered(&ctx, "location", None));
    assert!(
        !env.reg
            .registered(&ctx, "location", Some(b"sip:nobody@example.com"))
    );
    assert!(
        env.reg
            .registered(&ctx, "location", Some(b"sips:ALICE@example.com"))
    );
    assert_eq!(env.reg.unregister("location", b"sip:alice@example.com"), 1);
    assert_eq!(env.reg.unregister("location", b"sip:alice@example.com"), -3);
    assert_eq!(env.reg.unregister("location", b"not a uri"), -1);
    assert!(!env.reg.registered(&ctx, "location", None));
}

#[test]
fn the_timer_sweeps_expired_bindings() {
    let env = env(cfg());
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .expires("60"),
    );
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.2>")
            .expires("3600"),
    );
    assert_eq!(
        env.reg.tick(unix_ms() + 61_000),
        Tick {
            expired: 1,
            flushed: 0
        }
    );
    assert_eq!(env.loc.stats().contacts, 1);
    // The thread starts, ticks and stops when its handle is dropped.
    let timers = env.reg.spawn_timers(Duration::from_millis(10)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(timers);
    assert_eq!(env.stored(ALICE), vec!["sip:alice@192.0.2.2"]);
}
