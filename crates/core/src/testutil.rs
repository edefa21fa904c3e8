//! Helpers for tests of modules: a real [`Core`] on loopback sockets.

use std::sync::Arc;

use bytes::Bytes;
use sip_msg::SipMessage;
use sip_transport::{ListenSpec, Proto, Received, SocketId, TransportConfig, Transports};

use crate::Core;
use crate::config::CoreConfig;
use crate::ctx::{MsgCtx, RxInfo, ViaStamp};
use crate::metrics::Registry;
use crate::rpc::RpcRegistry;

/// A core bound to `listen` (e.g. `["udp:127.0.0.1:0"]`), not receiving, plus the runtime
/// its TCP side lives on (keep it alive as long as the core).
pub fn core_on(listen: &[&str], cfg: CoreConfig) -> (Arc<Core>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let specs: Vec<ListenSpec> = listen
        .iter()
        .map(|s| s.parse().expect("listen spec"))
        .collect();
    let tcfg = TransportConfig {
        udp_workers: 1,
        ..TransportConfig::default()
    };
    let t = Transports::bind(tcfg, &specs, rt.handle().clone()).expect("bind");
    let core = Core::new(cfg, t, Registry::new(), RpcRegistry::new(), 5);
    (Arc::new(core), rt)
}

/// A context for `raw` as if received over UDP from `src` on socket 0.
pub fn ctx_for(core: &Core, raw: &[u8], src: &str) -> MsgCtx {
    let msg = SipMessage::parse(Bytes::copy_from_slice(raw)).expect("test message parses");
    let sock = &core.transports.sockets()[0];
    let rx = RxInfo::of(&Received {
        data: Bytes::new(),
        src: src.parse().expect("src addr"),
        proto: Proto::Udp,
        socket: SocketId(0),
        local: sock.addr,
        conn: None,
        queued: std::time::Duration::ZERO,
    });
    let stamp = msg
        .top_via()
        .map(|v| ViaStamp::compute(&v, rx.src, core.cfg.force_rport))
        .unwrap_or_default();
    MsgCtx::new(msg, rx, std::time::Instant::now(), stamp)
}
