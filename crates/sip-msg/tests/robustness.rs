//! Hostile input: garbage, huge datagrams, header floods, NUL bytes, truncations, mutations.
//! Every case must end in `Ok` or `Err`, never a panic, and in time linear in the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use sip_msg::{Edits, FramerLimits, HeaderName, ParseErrorKind, SipMessage, StreamFramer};

const INVITE: &[u8] = include_bytes!("../benches/data/invite_1k.sip");

/// Touches the accessors a proxy would use, to reach their parsing code.
fn touch(m: &SipMessage) {
    let _ = m.validate();
    let _ = m.check_request();
    let _ = m.top_via().map(|v| (v.branch(), v.rport(), v.is_valid()));
    let _ = m.vias().count();
    let _ = m
        .from()
        .map(|a| (a.tag(), a.is_valid(), a.uri().map(|u| u.is_valid())));
    let _ = m.to().map(|a| a.display_name());
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_length());
    let _ = m.routes().count() + m.record_routes().count() + m.contacts().count();
    let _ = m.request_uri().map(|u| (u.user_unescaped(), u.host().ip()));
    for a in m.authorizations() {
        let _ = a.digest_credentials();
    }
    let mut out = Vec::new();
    m.write_error_response_raw(400, b"Bad Request", Some(b"x"), &mut out);
    let mut e = Edits::new();
    e.insert_via(m, b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx");
    e.set_max_forwards(m, 1);
    e.remove_top_route(m);
    e.remove_top_via(m);
    out.clear();
    m.write_with(&e, &mut out);
}

fn try_all(raw: &[u8]) {
    if let Ok(m) = SipMessage::parse_lenient(Bytes::copy_from_slice(raw)) {
        touch(&m);
    }
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Bytes biased towards SIP's structural characters.
    const ALPHABET: &[u8] = b"\r\n :;,<>\"\\[]@=?%/ \tSIPsip2.0VvFfTtlL0123456789\0\x7f\xff";
    for _ in 0..3000 {
        let len = (rng.next() % 400) as usize;
        let raw: Vec<u8> = (0..len)
            .map(|_| {
                let r = rng.next();
                if r.is_multiple_of(4) {
                    (r >> 8) as u8
                } else {
                    ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                }
            })
            .collect();
        try_all(&raw);
        let mut with_head = b"INVITE sip:a@b SIP/2.0\r\n".to_vec();
        with_head.extend_from_slice(&raw);
        try_all(&with_head);
    }
}

#[test]
fn every_truncation_of_a_valid_invite_is_handled() {
    for n in 0..=INVITE.len() {
        try_all(&INVITE[..n]);
    }
}

#[test]
fn every_single_byte_mutation_of_a_valid_invite_is_handled() {
    let mut raw = INVITE.to_vec();
    for i in 0..raw.len() {
        let orig = raw[i];
        for b in [
            b'\0', b'\r', b'\n', b' ', b':', b';', b',', b'<', b'"', b'[', 0xff,
        ] {
            raw[i] = b;
            try_all(&raw);
        }
        raw[i] = orig;
    }
}

#[test]
fn a_65_kilobyte_datagram_is_parsed_or_rejected() {
    // 65 KB of body behind valid headers.
    let body = vec![b'x'; 65_000];
    let mut raw = INVITE[..INVITE.len() - 268].to_vec();
    let cl_at = raw
        .windows(16)
        .position(|w| w == b"Content-Length: ")
        .expect("CL");
    raw.truncate(cl_at);
    raw.extend_from_slice(b"Content-Length: 65000\r\n\r\n");
    raw.extend_from_slice(&body);
    let m = SipMessage::parse(Bytes::from(raw)).expect("large body parses");
    assert_eq!(m.body().len(), 65_000);

    // 65 KB of header lines (under the header limit): parses.
    let mut raw = b"OPTIONS sip:a@example.com SIP/2.0\r\n".to_vec();
    while raw.len() < 65_000 {
        raw.extend_from_slice(
            b"X-Filler: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    raw.extend_from_slice(b"\r\n");
    let m = SipMessage::parse_lenient(Bytes::from(raw)).expect("frames");
    assert!(m.header_count() > 700);

    // One 65 KB header line.
    let mut raw = b"OPTIONS sip:a@example.com SIP/2.0\r\nSubject: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 65_000));
    raw.extend_from_slice(b"\r\n\r\n");
    let m = SipMessage::parse_lenient(Bytes::from(raw)).expect("frames");
    assert_eq!(m.header(HeaderName::Subject).map(<[u8]>::len), Some(65_000));
}

#[test]
fn ten_thousand_headers_are_rejected() {
    let mut raw = b"OPTIONS sip:a@example.com SIP/2.0\r\n".to_vec();
    for i in 0..10_000 {
        raw.extend_from_slice(format!("Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let e = SipMessage::parse_lenient(Bytes::from(raw))
        .err()
        .map(|e| e.kind());
    assert_eq!(e, Some(ParseErrorKind::TooManyHeaders));
}

#[test]
fn nul_bytes_in_header_values_are_data_not_terminators() {
    let raw = b"OPTIONS sip:a@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
Subject: before\0after\r\n\
Call-ID: a\0b\r\n\
To: <sip:a@example.com>\r\nFrom: <sip:b@example.com>;tag=1\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let m = SipMessage::parse_lenient(Bytes::from_static(raw)).expect("frames");
    assert_eq!(m.header(HeaderName::Subject), Some(&b"before\0after"[..]));
    assert_eq!(m.call_id(), Some(&b"a\0b"[..]));
    assert_eq!(
        m.validate().map_err(|e| e.kind()),
        Err(ParseErrorKind::CallId)
    );
    touch(&m);
}

#[test]
fn pathological_values_cost_linear_time() {
    // Thousands of parameters, commas, quotes and angle brackets in single values.
    let mut raw = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h".to_vec();
    for _ in 0..20_000 {
        raw.extend_from_slice(b";a");
    }
    raw.extend_from_slice(b"\r\nRoute: ");
    for _ in 0..20_000 {
        raw.extend_from_slice(b"<,\"");
    }
    raw.extend_from_slice(b"\r\nContact: ");
    raw.extend(std::iter::repeat_n(b',', 20_000));
    raw.extend_from_slice(b"\r\nTo: ");
    raw.extend(std::iter::repeat_n(b'"', 20_001));
    raw.extend_from_slice(b"\r\n\r\n");
    let m = SipMessage::parse_lenient(Bytes::from(raw)).expect("frames");
    touch(&m);
    assert!(m.validate().is_err());
}

#[test]
fn stream_framer_survives_garbage_and_bounds_its_buffer() {
    let mut rng = Rng(42);
    let limits = FramerLimits {
        max_header_bytes: 512,
        max_body_bytes: 256,
    };
    for _ in 0..300 {
        let mut f = StreamFramer::with_limits(limits);
        let mut buf = bytes::BytesMut::new();
        'conn: for _ in 0..20 {
            let len = (rng.next() % 200) as usize;
            for _ in 0..len {
                let r = rng.next();
                buf.extend_from_slice(&[if r.is_multiple_of(3) {
                    b'\n'
                } else {
                    (r >> 16) as u8
                }]);
            }
            if rng.next().is_multiple_of(5) {
                buf.extend_from_slice(b"\r\nl: 3\r\n\r\nabc");
            }
            loop {
                match f.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) if e.close() => break 'conn,
                    Err(_) => {}
                }
            }
            assert!(buf.len() <= limits.max_header_bytes + 200 + 16);
        }
    }
}
