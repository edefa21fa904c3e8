use geosip_core::config::CoreConfig;
use geosip_core::testutil::{core_on, ctx_for};

use super::*;

fn req(routes: &str, ruri: &str) -> Vec<u8> {
    format!(
        "BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n{routes}From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn out(core: &Core, ctx: &MsgCtx) -> String {
    let mut v = Vec::new();
    ctx.msg.write_with(&ctx.edits, &mut v);
    let _ = core;
    String::from_utf8(v).unwrap()
}

#[test]
fn our_route_is_removed_and_the_next_loose_route_becomes_the_destination() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let port = core.transports.sockets()[0].addr.port();
    let raw = req(
        &format!("Route: <sip:127.0.0.1:{port};lr>, <sip:192.0.2.9;lr>\r\n"),
        "sip:b@192.0.2.5",
    );
    let mut ctx = ctx_for(&core, &raw, "192.0.2.1:5060");
    assert_eq!(loose_route(&core, &mut ctx), LooseRoute::Routed);
    assert_eq!(ctx.dst_uri.as_deref(), Some(&b"sip:192.0.2.9;lr"[..]));
    let s = out(&core, &ctx);
    assert!(s.contains("Route: <sip:192.0.2.9;lr>\r\n"), "{s}");
    assert!(!s.contains(&format!("127.0.0.1:{port}")), "{s}");
}

#[test]
fn a_double_record_route_pair_is_consumed_together() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let port = core.transports.sockets()[0].addr.port();
    let raw = req(
        &format!(
            "Route: <sip:127.0.0.1:{port};lr;r2=on>\r\nRoute: <sip:127.0.0.1:{port};transport=tcp;lr;r2=on>\r\n"
        ),
        "sip:b@192.0.2.5",
    );
    let mut ctx = ctx_for(&core, &raw, "192.0.2.1:5060");
    assert_eq!(loose_route(&core, &mut ctx), LooseRoute::Routed);
    assert!(ctx.dst_uri.is_none());
    let s = out(&core, &ctx);
    assert!(!s.contains("Route:"), "{s}");
}

#[test]
fn a_request_without_routes_or_with_a_foreign_route_is_not_loose_routed() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let raw = req("", "sip:b@192.0.2.5");
    let mut ctx = ctx_for(&core, &raw, "192.0.2.1:5060");
    assert_eq!(loose_route(&core, &mut ctx), LooseRoute::NotRouted);
    let raw = req("Route: <sip:192.0.2.9;lr>\r\n", "sip:b@192.0.2.5");
    let mut ctx = ctx_for(&core, &raw, "192.0.2.1:5060");
    assert_eq!(loose_route(&core, &mut ctx), LooseRoute::NotRouted);
    assert!(ctx.edits.is_empty());
}

#[test]
fn after_a_strict_router_the_request_uri_is_restored_from_the_last_route() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let port = core.transports.sockets()[0].addr.port();
    let raw = req(
        "Route: <sip:192.0.2.9;lr>, <sip:bob@192.0.2.5>\r\n",
        &format!("sip:127.0.0.1:{port};lr"),
    );
    let mut ctx = ctx_for(&core, &raw, "192.0.2.1:5060");
    assert_eq!(loose_route(&core, &mut ctx), LooseRoute::Routed);
    assert_eq!(ctx.ruri(), b"sip:bob@192.0.2.5");
    let s = out(&core, &ctx);
    assert!(s.contains("Route: <sip:192.0.2.9;lr>\r\n"), "{s}");
}

#[test]
fn record_route_marks_the_request_with_its_params() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let raw = req("", "sip:b@192.0.2.5");
    let mut ctx = ctx_for(&core, &raw, "192.0.2.1:5060");
    record_route(&mut ctx, Some("ftag=1"));
    assert_eq!(ctx.record_route.as_ref().unwrap().params, b";ftag=1");
}
