//! Criterion benchmarks on a typical 1 KB INVITE (`benches/data/invite_1k.sip`):
//! framing only, framing + validation, the routing headers a proxy reads, and the full
//! forward path (edits + serialisation into a reused buffer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sip_msg::{Edits, SipMessage};

const INVITE: &[u8] = include_bytes!("data/invite_1k.sip");

fn read_routing(msg: &SipMessage) -> usize {
    let mut acc = 0;
    if let Some(v) = msg.top_via() {
        acc += v.branch().map_or(0, <[u8]>::len);
    }
    acc += msg.to().and_then(|t| t.tag()).map_or(0, <[u8]>::len);
    acc += msg.from().and_then(|f| f.tag()).map_or(0, <[u8]>::len);
    acc += msg.call_id().map_or(0, <[u8]>::len);
    acc += msg.cseq().map_or(0, |c| c.seq as usize);
    acc += usize::from(msg.max_forwards().unwrap_or(0));
    acc += msg.top_route().map_or(0, |r| r.uri_raw().len());
    acc
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("invite_1k");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("parse_lenient", |b| {
        b.iter(|| {
            SipMessage::parse_lenient(Bytes::from_static(black_box(INVITE)))
                .map(|m| m.header_count())
        })
    });
    g.bench_function("parse_lenient+routing", |b| {
        b.iter(|| {
            SipMessage::parse_lenient(Bytes::from_static(black_box(INVITE)))
                .map(|m| read_routing(&m))
        })
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            SipMessage::parse(Bytes::from_static(black_box(INVITE))).map(|m| m.header_count())
        })
    });
    g.bench_function("parse+routing", |b| {
        b.iter(|| {
            SipMessage::parse(Bytes::from_static(black_box(INVITE))).map(|m| read_routing(&m))
        })
    });
    let mut out = Vec::with_capacity(4096);
    let mut edits = Edits::new();
    g.bench_function("parse+routing+forward", |b| {
        b.iter(|| {
            let m = SipMessage::parse(Bytes::from_static(black_box(INVITE))).ok()?;
            let r = read_routing(&m);
            edits.clear();
            edits.insert_via(&m, b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-fwd-0001");
            edits.set_max_forwards(&m, m.max_forwards().unwrap_or(70).saturating_sub(1));
            edits.remove_top_route(&m);
            edits.add_record_route_top(&m, b"<sip:203.0.113.1;lr>");
            out.clear();
            m.write_with(&edits, &mut out);
            Some(r + out.len())
        })
    });
    g.finish();
}

criterion_group!(name = sip_msg_benches; config = Criterion::default().sample_size(50); targets = benches);
criterion_main!(sip_msg_benches);
