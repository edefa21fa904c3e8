//! Runs one sip-msg operation N times, for instruction counting under callgrind.
//!
//! `count <op> <n>` with op one of:
//!
//! * `parse_lenient`, `parse`, `routing_lenient`, `routing`, `forward`, `frame` (the rows of
//!   `scripts/bench-instructions.sh`);
//! * `validate`: `validate()` alone, on a message framed once before the loop;
//! * `validate_routing`: the server pipeline, `parse_lenient`, then `validate()`, then the
//!   routing headers;
//! * `routing_again`: `validate_routing` reading the routing headers a second time (minus
//!   `validate_routing`: the cost of the second call of each accessor);
//! * `acc_via|acc_from|acc_to|acc_cseq|acc_route` (one accessor after `parse_lenient`).
//!
//! `scripts/bench-instructions.sh` runs it with two values of n and divides the difference of
//! the instruction counts, so process start-up cancels out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use sip_msg::{Edits, Frame, SipMessage, StreamFramer};

const INVITE: &[u8] = include_bytes!("../benches/data/invite_1k.sip");

/// The headers a proxy reads to route a request.
fn read_routing(msg: &SipMessage) -> usize {
    let mut acc = 0;
    if let Some(v) = msg.top_via() {
        acc += v.branch().map_or(0, <[u8]>::len);
        acc += v.host().raw().len();
    }
    acc += msg.to().and_then(|t| t.tag()).map_or(0, <[u8]>::len);
    acc += msg.from().and_then(|f| f.tag()).map_or(0, <[u8]>::len);
    acc += msg.call_id().map_or(0, <[u8]>::len);
    acc += msg.cseq().map_or(0, |c| c.seq as usize);
    acc += usize::from(msg.max_forwards().unwrap_or(0));
    acc += msg.top_route().map_or(0, |r| r.uri_raw().len());
    acc
}

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "routing".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut out = Vec::with_capacity(4096);
    let mut edits = Edits::new();
    let mut acc = 0usize;
    if op == "validate" {
        let m = SipMessage::parse_lenient(Bytes::from_static(INVITE)).expect("frames");
        for _ in 0..n {
            acc += usize::from(black_box(&m).validate().is_ok());
        }
        println!("{acc}");
        return;
    }
    for _ in 0..n {
        let raw = Bytes::from_static(black_box(INVITE));
        acc += match op.as_str() {
            "parse_lenient" => SipMessage::parse_lenient(raw).map_or(0, |m| m.header_count()),
            "parse" => SipMessage::parse(raw).map_or(0, |m| m.header_count()),
            "routing_lenient" => SipMessage::parse_lenient(raw).map_or(0, |m| read_routing(&m)),
            "routing" => SipMessage::parse(raw).map_or(0, |m| read_routing(&m)),
            "validate_routing" => match SipMessage::parse_lenient(raw) {
                Ok(m) if m.validate().is_ok() => read_routing(&m),
                _ => 0,
            },
            "routing_again" => match SipMessage::parse_lenient(raw) {
                Ok(m) if m.validate().is_ok() => read_routing(&m) + read_routing(black_box(&m)),
                _ => 0,
            },
            // One accessor at a time, after parse_lenient (subtract `parse_lenient`).
            "acc_via" => SipMessage::parse_lenient(raw).map_or(0, |m| {
                m.top_via().and_then(|v| v.branch()).map_or(0, <[u8]>::len)
            }),
            "acc_from" => SipMessage::parse_lenient(raw)
                .map_or(0, |m| m.from().and_then(|a| a.tag()).map_or(0, <[u8]>::len)),
            "acc_to" => SipMessage::parse_lenient(raw)
                .map_or(0, |m| m.to().and_then(|a| a.tag()).map_or(0, <[u8]>::len)),
            "acc_cseq" => {
                SipMessage::parse_lenient(raw).map_or(0, |m| m.cseq().map_or(0, |c| c.seq as usize))
            }
            "acc_route" => SipMessage::parse_lenient(raw)
                .map_or(0, |m| m.top_route().map_or(0, |r| r.uri_raw().len())),
            "forward" => match SipMessage::parse(raw) {
                Ok(m) => {
                    let r = read_routing(&m);
                    edits.clear();
                    edits.insert_via(&m, b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-fwd-0001");
                    edits.set_max_forwards(&m, m.max_forwards().unwrap_or(70).saturating_sub(1));
                    edits.remove_top_route(&m);
                    edits.add_record_route_top(&m, b"<sip:203.0.113.1;lr>");
                    out.clear();
                    m.write_with(&edits, &mut out);
                    r + out.len()
                }
                Err(_) => 0,
            },
            "frame" => {
                let mut framer = StreamFramer::new();
                let mut buf = BytesMut::from(black_box(INVITE));
                match framer.decode(&mut buf) {
                    Ok(Some(Frame::Message(b))) => b.len(),
                    _ => 0,
                }
            }
            other => {
                eprintln!("unknown op {other}");
                std::process::exit(2);
            }
        };
        black_box(&out);
    }
    println!("{acc}");
}
