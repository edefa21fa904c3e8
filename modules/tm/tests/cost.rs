//! What tm costs per call, on one thread, sockets included (not a timed test: it prints).
//!
//! ```text
//! cargo test --release -p geosip-tm --test cost -- --ignored --nocapture
//! ```
//!
//! It drives `pre_request` / `t_relay` / `on_reply` directly for INVITE → 100 → 180 → 200 →
//! ACK → BYE → 200 (the 7 messages tm handles of the 14 datagrams of a call through the
//! proxy) and times only those calls: parsing, the script, and the callee are not counted;
//! building and sending what tm sends (sendto included) is.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geosip_core::Core;
use geosip_core::config::CoreConfig;
use geosip_core::ctx::{MsgCtx, RecordRoute, RxInfo, ViaStamp};
use geosip_core::metrics::Registry;
use geosip_core::rpc::RpcRegistry;
use geosip_tm::{Pre, Tm, TmConfig};
use sip_msg::{ResponseBuilder, SipMessage};
use sip_transport::{ListenSpec, Proto, SocketId, TransportConfig, Transports};

fn recv(s: &UdpSocket) -> SipMessage {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    buf.truncate(n);
    SipMessage::parse(Bytes::from(buf)).unwrap()
}

fn response(req: &SipMessage, status: u16) -> SipMessage {
    let mut out = Vec::new();
    let mut b = ResponseBuilder::new(req, status).to_tag(b"callee");
    if status > 100 {
        b = b.header(b"Contact", b"<sip:bob@127.0.0.1:5099>");
    }
    b.write(&mut out);
    SipMessage::parse(Bytes::from(out)).unwrap()
}

#[test]
#[ignore = "prints the cost per call; run in release with --ignored --nocapture"]
fn cost_per_call_through_tm() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let specs: Vec<ListenSpec> = vec!["udp:127.0.0.1:0".parse().unwrap()];
    let t = Transports::bind(
        TransportConfig {
            udp_workers: 1,
            ..TransportConfig::default()
        },
        &specs,
        rt.handle().clone(),
    )
    .unwrap();
    let core = Arc::new(Core::new(
        CoreConfig::default(),
        t,
        Registry::new(),
        RpcRegistry::new(),
        5,
    ));
    let tm = Tm::new(
        Arc::clone(&core),
        TmConfig {
            wt_timer: 0,
            ..TmConfig::default()
        },
    );
    let local = core.transports.sockets()[0].addr;
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (caller_addr, callee_addr): (SocketAddr, SocketAddr) =
        (caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let rx_from = |src: SocketAddr| RxInfo {
        src,
        proto: Proto::Udp,
        socket: SocketId(0),
        local,
        conn: None,
    };
    let ctx_of = |raw: String, src: SocketAddr| {
        let msg = SipMessage::parse(Bytes::from(raw)).unwrap();
        let stamp = ViaStamp::compute(&msg.top_via().unwrap(), src, true);
        MsgCtx::new(msg, rx_from(src), Instant::now(), stamp)
    };
    let target = format!("sip:bob@{callee_addr}");
    const CALLS: u32 = 20_000;
    let mut spent = Duration::ZERO;
    for i in 0..CALLS {
        let invite = format!(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {caller_addr};branch=z9hG4bKa{i};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a{i}\r\nTo: <sip:bob@example.com>\r\nCall-ID: c{i}@x\r\n\
CSeq: 1 INVITE\r\nContact: <sip:alice@{caller_addr}>\r\nContent-Type: application/sdp\r\nContent-Length: 160\r\n\r\n{:160}",
            "v=0"
        );
        let mut ctx = ctx_of(invite, caller_addr);
        ctx.new_ruri = Some(Bytes::from(target.clone()));
        ctx.record_route = Some(RecordRoute::default());
        let t0 = Instant::now();
        assert_eq!(tm.pre_request(&mut ctx), Pre::Continue);
        tm.t_relay(&mut ctx).unwrap();
        spent += t0.elapsed();
        let inv = recv(&callee);
        recv(&caller); // 100
        let replies = [
            response(&inv, 100),
            response(&inv, 180),
            response(&inv, 200),
        ];
        let t0 = Instant::now();
        for r in replies {
            assert!(tm.on_reply(r, rx_from(callee_addr)).is_none());
        }
        spent += t0.elapsed();
        recv(&caller); // 180
        recv(&caller); // 200
        let ack = format!(
            "ACK sip:bob@{callee_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {caller_addr};branch=z9hG4bKk{i};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a{i}\r\nTo: <sip:bob@example.com>;tag=callee\r\nCall-ID: c{i}@x\r\n\
CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        let bye = ack
            .replace("ACK", "BYE")
            .replace("z9hG4bKk", "z9hG4bKb")
            .replace("CSeq: 1", "CSeq: 2");
        let mut actx = ctx_of(ack, caller_addr);
        actx.loose_routed = true;
        let mut bctx = ctx_of(bye, caller_addr);
        bctx.loose_routed = true;
        let t0 = Instant::now();
        assert_eq!(tm.pre_request(&mut actx), Pre::Continue);
        tm.t_relay(&mut actx).unwrap();
        assert_eq!(tm.pre_request(&mut bctx), Pre::Continue);
        tm.t_relay(&mut bctx).unwrap();
        spent += t0.elapsed();
        recv(&callee); // ACK
        let bye = recv(&callee);
        let ok = response(&bye, 200);
        let t0 = Instant::now();
        assert!(tm.on_reply(ok, rx_from(callee_addr)).is_none());
        spent += t0.elapsed();
        recv(&caller); // 200 BYE
        if i % 1000 == 999 {
            let t0 = Instant::now();
            tm.tick(Instant::now());
            spent += t0.elapsed();
        }
    }
    let t0 = Instant::now();
    tm.tick(Instant::now() + Duration::from_secs(60));
    spent += t0.elapsed();
    println!(
        "tm: {:.1} µs per call (7 messages handled, 7 sent), {} calls, {} still alive",
        spent.as_secs_f64() * 1e6 / f64::from(CALLS),
        CALLS,
        tm.live()
    );
}
