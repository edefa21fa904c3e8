//! Parse, apply edits derived from the input, serialise, re-parse. Never panics; when the
//! input validated and only well-formed edits were applied, the output must validate too and
//! carry the edits.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sip_msg::{Edits, HeaderName, SipMessage};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // First byte: number of edit opcodes that follow; the rest is the message.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 12).min(rest.len());
    let (ops, raw) = rest.split_at(n);
    let Ok(m) = SipMessage::parse_lenient(Bytes::copy_from_slice(raw)) else {
        return;
    };
    let valid = m.validate().is_ok();
    let mut e = Edits::new();
    let mut safe = true;
    let mut mf = None;
    let mut vias_inserted = 0usize;
    let mut body: Option<&[u8]> = None;
    for (k, &op) in ops.iter().enumerate() {
        let idx = usize::from(op >> 4);
        match op % 12 {
            0 => {
                e.insert_via(&m, b"SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKfuzz");
                vias_inserted += 1;
            }
            1 => {
                e.set_max_forwards(&m, op);
                mf = Some(op);
            }
            2 => {
                e.remove_top_route(&m);
            }
            3 => e.add_record_route_top(&m, b"<sip:203.0.113.9;lr>"),
            4 => e.add_route_top(&m, b"<sip:203.0.113.10;lr>"),
            5 => e.set_request_uri(&m, b"sip:fuzz@203.0.113.11:5070;transport=tcp"),
            6 => e.append_header(&m, b"X-Fuzz", b"1"),
            7 => {
                let b = &raw[..raw.len().min(k * 7)];
                e.set_body(&m, Bytes::copy_from_slice(b));
                body = Some(b);
            }
            8 => {
                e.remove_header(&m, idx);
                safe = false;
            }
            9 => {
                e.replace_header_value(&m, idx, b"x");
                safe = false;
            }
            10 => {
                e.insert_header_before(&m, idx, b"X-Before", b"2");
            }
            _ => {
                e.remove_top_via(&m);
                safe = false;
            }
        }
    }
    let mut out = Vec::new();
    m.write_with(&e, &mut out);
    let reparsed = SipMessage::parse_lenient(Bytes::from(out));
    if let Ok(o) = &reparsed {
        common::exercise(o);
    }
    if valid && safe && m.is_request() {
        let o = match SipMessage::parse(Bytes::from(reparsed.expect("edited message frames").into_bytes())) {
            Ok(o) => o,
            Err(err) => panic!("edited message does not validate: {err}"),
        };
        if vias_inserted > 0 {
            assert_eq!(
                o.top_via().and_then(|v| v.branch()),
                Some(&b"z9hG4bKfuzz"[..])
            );
        }
        if let Some(v) = mf {
            assert_eq!(o.max_forwards(), Some(v));
        }
        if let Some(b) = body {
            assert_eq!(o.body(), b);
            assert_eq!(o.content_length(), Some(b.len() as u64));
        }
        assert_eq!(
            o.header_line_count(HeaderName::Via),
            m.header_line_count(HeaderName::Via) + vias_inserted
        );
    }
});
