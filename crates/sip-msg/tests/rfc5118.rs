//! RFC 5118 (SIP torture tests for IPv6) cases, written as test data here, with the IPv6
//! grammar as corrected by RFC 5954.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sip_msg::{HostKind, ParseErrorKind, SipMessage};

/// A REGISTER whose Request-URI, Via and Contact are given; everything else is well formed.
fn register(ruri: &str, via: &str, contact: &str, body: &str) -> Vec<u8> {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "REGISTER {ruri} SIP/2.0\r\n\
Via: {via}\r\n\
Max-Forwards: 70\r\n\
From: <sip:user@example.com>;tag=81x2\r\n\
To: <sip:user@example.com>\r\n\
Call-ID: SSG9559905523997077@hlau_4100\r\n\
CSeq: 1 REGISTER\r\n\
Contact: {contact}\r\n\
{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const VIA: &str = "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111";
const CONTACT: &str = "\"Caller\" <sip:caller@[2001:db8::1]>";

fn parse(raw: Vec<u8>) -> Result<SipMessage, sip_msg::ParseError> {
    SipMessage::parse(Bytes::from(raw))
}

#[test]
fn register_with_ipv6_references_in_request_uri_via_and_contact_parses() {
    let m = parse(register("sip:[2001:db8::10]", VIA, CONTACT, "")).expect("valid (RFC 5118 §4.1)");
    let r = m.request_uri().expect("r-uri");
    assert_eq!(r.host().kind(), HostKind::Ipv6);
    assert_eq!(r.host().ip(), Some("2001:db8::10".parse().expect("ip")));
    let v = m.top_via().expect("via");
    assert_eq!(v.host().kind(), HostKind::Ipv6);
    assert_eq!(v.host().unbracketed(), b"2001:db8::9:1");
    let c = m
        .contacts()
        .next()
        .and_then(|c| c.addr().copied())
        .expect("contact");
    assert_eq!(c.uri().expect("uri").host().raw(), b"[2001:db8::1]");
    assert_eq!(m.check_request(), Ok(()));
}

#[test]
fn ipv6_address_without_brackets_is_rejected() {
    let e = parse(register("sip:2001:db8::10", VIA, CONTACT, "")).expect_err("RFC 5118 §4.2");
    assert_eq!(e.kind(), ParseErrorKind::RequestUri);
    let e = parse(register(
        "sip:[2001:db8::10]",
        VIA,
        "<sip:caller@2001:db8::1>",
        "",
    ))
    .expect_err("contact without brackets");
    assert_eq!(e.kind(), ParseErrorKind::Contact);
}

#[test]
fn colon_inside_brackets_is_not_a_port() {
    let m = parse(register("sip:[2001:db8::10:5070]", VIA, CONTACT, "")).expect("RFC 5118 §4.3");
    let r = m.request_uri().expect("r-uri");
    assert_eq!(r.port(), None);
    assert_eq!(r.host().unbracketed(), b"2001:db8::10:5070");
}

#[test]
fn port_after_the_closing_bracket_is_a_port() {
    let m = parse(register("sip:[2001:db8::10]:5070", VIA, CONTACT, "")).expect("RFC 5118 §4.4");
    let r = m.request_uri().expect("r-uri");
    assert_eq!(r.port(), Some(5070));
    assert_eq!(r.host().unbracketed(), b"2001:db8::10");
}

#[test]
fn via_received_may_be_bracketed_or_not_and_port_follows_the_bracket() {
    for via in [
        "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;received=[2001:db8::9:255]",
        "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;received=2001:db8::9:255",
    ] {
        let m = parse(register("sip:[2001:db8::10]", via, CONTACT, "")).expect("RFC 5118 §4.5");
        let v = m.top_via().expect("via");
        assert_eq!(v.port(), Some(6050));
        assert!(
            v.received()
                .is_some_and(|r| r.ends_with(b"9:255]") || r.ends_with(b"9:255"))
        );
    }
}

#[test]
fn ipv6_addresses_in_the_sdp_body_are_not_looked_at() {
    let sdp = "v=0\r\no=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\ns=Live Session\r\n\
c=IN IP6 2001:db8::20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let m = parse(register("sip:[2001:db8::10]", VIA, CONTACT, sdp)).expect("RFC 5118 §4.6");
    assert_eq!(m.body(), sdp.as_bytes());
}

#[test]
fn ipv4_and_ipv6_mixed_across_headers() {
    let via = "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKas3-1, SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-2";
    let m = parse(register("sip:[2001:db8::10]", via, CONTACT, "")).expect("RFC 5118 §4.7");
    let kinds: Vec<_> = m.vias().map(|v| v.host().kind()).collect();
    assert_eq!(kinds, vec![HostKind::Ipv4, HostKind::Ipv6]);
}

#[test]
fn ipv4_mapped_ipv6_address_is_an_ipv6_reference() {
    let m = parse(register(
        "sip:[::ffff:192.0.2.10]",
        "SIP/2.0/UDP [::ffff:192.0.2.10]:5060;branch=z9hG4bKas3-9",
        "<sip:user@[::ffff:192.0.2.10]:5060>",
        "",
    ))
    .expect("RFC 5118 §4.9");
    let ip = m.request_uri().and_then(|u| u.host().ip()).expect("ip");
    assert_eq!(
        ip,
        "::ffff:192.0.2.10".parse::<std::net::IpAddr>().expect("ip")
    );
}

#[test]
fn two_colons_before_an_embedded_ipv4_are_valid_and_three_are_not() {
    // RFC 5118 §4.10: RFC 3261's ABNF wrongly required three colons; RFC 5954 fixed it.
    assert!(parse(register("sip:[2001:db8::192.0.2.1]", VIA, CONTACT, "")).is_ok());
    let e = parse(register("sip:[2001:db8:::192.0.2.1]", VIA, CONTACT, "")).expect_err("3 colons");
    assert_eq!(e.kind(), ParseErrorKind::RequestUri);
    let e = parse(register(
        "sip:[2001:db8::10]",
        "SIP/2.0/UDP [2001:db8:::192.0.2.1];branch=z9hG4bKas3-111",
        CONTACT,
        "",
    ))
    .expect_err("3 colons in Via");
    assert_eq!(e.kind(), ParseErrorKind::Via);
}

#[test]
fn unbalanced_bracket_is_rejected_everywhere() {
    assert!(parse(register("sip:[::1", VIA, CONTACT, "")).is_err());
    let e = parse(register(
        "sip:[::1]",
        "SIP/2.0/UDP [::1;branch=z9hG4bK1",
        CONTACT,
        "",
    ))
    .expect_err("via");
    assert_eq!(e.kind(), ParseErrorKind::Via);
    let e = parse(register("sip:[::1]", VIA, "<sip:caller@[::1>", "")).expect_err("contact");
    assert_eq!(e.kind(), ParseErrorKind::Contact);
}
