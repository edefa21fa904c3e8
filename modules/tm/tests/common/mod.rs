//! Test harness: a real `Core` with UDP and TCP transports on 127.0.0.1, a mini pipeline that
//! feeds tm the way the server does, and small test UAs over UDP and TCP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use geosip_core::Core;
use geosip_core::config::CoreConfig;
use geosip_core::ctx::{MsgCtx, RecordRoute, RxInfo, Target, ViaStamp};
use geosip_core::metrics::Registry;
use geosip_core::routes::{FailureInfo, ReplyCtx, RouteHooks};
use geosip_core::rpc::RpcRegistry;
use geosip_tm::{Pre, Tm, TmConfig};
use sip_msg::{
    CommaValues, Edits, Frame, HeaderName, NameAddr, ResponseBuilder, SipMessage, StreamFramer,
};
use sip_transport::{Handler, ListenSpec, Proto, Received, TransportConfig, Transports};

pub const WAIT: Duration = Duration::from_secs(3);

/// Small timers so that every path ends quickly.
pub fn fast_cfg() -> TmConfig {
    TmConfig {
        wt_timer: 200,
        t4_ms: 200,
        fr_timer: 2_000,
        fr_inv_timer: 5_000,
        ..TmConfig::default()
    }
}

type RouteFn = dyn Fn(&Tm, &mut MsgCtx) + Send + Sync;
type FailureFn = dyn Fn(&Tm, &str, &mut MsgCtx, FailureInfo) + Send + Sync;

/// The script hooks of a test: the failure route is a closure; every call is logged.
pub struct TestHooks {
    pub tm: std::sync::OnceLock<std::sync::Weak<Tm>>,
    pub failure: Box<FailureFn>,
    pub log: Mutex<Vec<String>>,
}

impl RouteHooks for TestHooks {
    fn failure_route(
        &self,
        name: &str,
        ctx: &mut MsgCtx,
        info: FailureInfo,
        reply: Option<&SipMessage>,
    ) {
        self.log.lock().unwrap().push(format!(
            "failure {name} status={} canceled={} timeout={} reply={:?}",
            info.status,
            info.canceled,
            info.branch_timeout,
            reply.and_then(|r| r.status())
        ));
        if let Some(tm) = self.tm.get().and_then(|w| w.upgrade()) {
            (self.failure)(&tm, name, ctx, info);
        }
    }
    fn branch_route(
        &self,
        name: &str,
        _ctx: &MsgCtx,
        target: &mut Target,
        _edits: &mut Edits,
    ) -> bool {
        self.log.lock().unwrap().push(format!(
            "branch {name} {}",
            String::from_utf8_lossy(&target.uri)
        ));
        true
    }
    fn reply_route(&self, name: &str, reply: &ReplyCtx<'_>) -> bool {
        if !name.is_empty() {
            self.log
                .lock()
                .unwrap()
                .push(format!("reply {name} {}", reply.msg.status().unwrap_or(0)));
            // tm refuses to be re-entered from a reply route instead of deadlocking.
            if let Some(tm) = self.tm.get().and_then(|w| w.upgrade()) {
                let mut c = reply.req.clone();
                let nested = tm.t_relay(&mut c).err();
                let checked = tm.t_check_trans(reply.req);
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("nested {nested:?} {checked}"));
            }
        }
        true
    }
}

/// The mini pipeline: parse, stamp Via, tm pre-check, loose route, relay.
struct Pipeline {
    core: Arc<Core>,
    tm: Arc<Tm>,
    route: Box<RouteFn>,
}

/// Removes the leading Route values that name this proxy (RFC 3261 §16.4); true when any.
fn loose_route(core: &Core, ctx: &mut MsgCtx) -> bool {
    let mut removed = false;
    let idx: Vec<usize> = ctx.msg.header_indices(HeaderName::Route).collect();
    for i in idx {
        let Some(line) = ctx.msg.header_line(i) else {
            break;
        };
        let mine: Vec<bool> = CommaValues::new(line.value)
            .map(|v| {
                NameAddr::parse(v)
                    .ok()
                    .and_then(|na| na.uri().ok())
                    .is_some_and(|u| core.myself.is_myself_uri(&u))
            })
            .collect();
        if !mine.is_empty() && mine.iter().all(|m| *m) {
            ctx.edits.remove_header(&ctx.msg, i);
            removed = true;
            continue;
        }
        if mine.first() == Some(&true) {
            ctx.edits.remove_top_route(&ctx.msg);
            removed = true;
        }
        break;
    }
    ctx.loose_routed = removed;
    removed
}

impl Pipeline {
    fn answer_error(&self, ctx: &mut MsgCtx, e: &geosip_tm::TmError) {
        let ra = e.retry_after().map(|s| s.to_string());
        let mut hdrs: Vec<(&[u8], &[u8])> = Vec::new();
        if let Some(ra) = ra.as_deref() {
            hdrs.push((b"Retry-After", ra.as_bytes()));
        }
        let _ = self
            .core
            .reply(ctx, e.status(), Some(e.reason().as_bytes()), &hdrs, None);
    }
}

impl Handler for Pipeline {
    fn on_message(&self, rx: Received) {
        let info = RxInfo::of(&rx);
        let Ok(msg) = SipMessage::parse(rx.data) else {
            return;
        };
        if msg.is_response() {
            if let Some(msg) = self.tm.on_reply(msg, info) {
                let mine = msg
                    .top_via()
                    .is_some_and(|v| self.core.myself.is_my_via(&v.host(), v.port()));
                if mine {
                    self.core.forward_reply_stateless(&msg);
                }
            }
            return;
        }
        let Some(via) = msg.top_via() else { return };
        let stamp = ViaStamp::compute(&via, info.src, self.core.cfg.force_rport);
        let mut ctx = MsgCtx::new(msg, info, Instant::now(), stamp);
        if self.tm.pre_request(&mut ctx) == Pre::Handled {
            return;
        }
        let routed = loose_route(&self.core, &mut ctx);
        if ctx.is_method(b"ACK") && !routed && !self.tm.t_check_trans(&ctx) {
            // Kamailio's default script: an ACK with no Route and no transaction is dropped.
            return;
        }
        let in_dialog = routed || ctx.msg.to_tag().is_some() || ctx.is_method(b"ACK");
        if !in_dialog {
            ctx.record_route = Some(RecordRoute::default());
            (self.route)(&self.tm, &mut ctx);
            if ctx.replied.is_some() {
                return;
            }
        }
        if let Err(e) = self.tm.t_relay(&mut ctx)
            && !ctx.is_method(b"ACK")
        {
            self.answer_error(&mut ctx, &e);
        }
    }
}

/// A proxy under test.
pub struct Proxy {
    pub core: Arc<Core>,
    pub tm: Arc<Tm>,
    pub hooks: Arc<TestHooks>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// Starts a proxy whose request route is `route` (set targets, arm routes) and whose
    /// failure routes run `failure`.
    pub fn start(
        cfg: TmConfig,
        route: impl Fn(&Tm, &mut MsgCtx) + Send + Sync + 'static,
        failure: impl Fn(&Tm, &str, &mut MsgCtx, FailureInfo) + Send + Sync + 'static,
    ) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let specs: Vec<ListenSpec> = vec![
            "udp:127.0.0.1:0".parse().unwrap(),
            "tcp:127.0.0.1:0".parse().unwrap(),
        ];
        let tcfg = TransportConfig {
            udp_workers: 2,
            tcp_workers: 2,
            ..TransportConfig::default()
        };
        let transports = Transports::bind(tcfg, &specs, rt.handle().clone()).unwrap();
        let core_cfg = CoreConfig {
            listen: Vec::new(),
            ..CoreConfig::default()
        };
        let core = Arc::new(Core::new(
            core_cfg,
            transports,
            Registry::new(),
            RpcRegistry::new(),
            5,
        ));
        let tm = Tm::new(Arc::clone(&core), cfg);
        let hooks = Arc::new(TestHooks {
            tm: std::sync::OnceLock::new(),
            failure: Box::new(failure),
            log: Mutex::new(Vec::new()),
        });
        let _ = hooks.tm.set(Arc::downgrade(&tm));
        tm.set_routes(hooks.clone());
        tm.spawn_timer();
        let pipeline = Arc::new(Pipeline {
            core: Arc::clone(&core),
            tm: Arc::clone(&tm),
            route: Box::new(route),
        });
        core.transports.start(pipeline).unwrap();
        let socks = core.transports.sockets();
        let udp = socks.iter().find(|s| s.proto == Proto::Udp).unwrap().addr;
        let tcp = socks.iter().find(|s| s.proto == Proto::Tcp).unwrap().addr;
        Proxy {
            core,
            tm,
            hooks,
            udp,
            tcp,
            _rt: rt,
        }
    }

    /// Waits until no transaction is alive; panics with the count otherwise.
    pub fn assert_all_freed(&self, within: Duration) {
        let end = Instant::now() + within;
        while self.tm.live() != 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            self.tm.live(),
            0,
            "transactions still alive: {:?}",
            self.tm.stats()
        );
        let s = self.tm.stats();
        assert_eq!((s.live_invite, s.live_non_invite), (0, 0));
    }

    pub fn hook_log(&self) -> Vec<String> {
        self.hooks.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tm.shutdown();
        self.core.transports.shutdown();
    }
}

/// Sets the R-URI and the destination set of `ctx` from `(uri, q)` pairs.
pub fn set_targets(ctx: &mut MsgCtx, targets: &[(String, u16)]) {
    let mut it = targets.iter();
    if let Some((u, q)) = it.next() {
        ctx.new_ruri = Some(Bytes::from(u.clone()));
        ctx.ruri_q = *q;
    }
    for (u, q) in it {
        ctx.branches.push(Target {
            q: *q,
            ..Target::uri(Bytes::from(u.clone()))
        });
    }
}

// ----- test user agents -----

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh token (branches, tags, Call-IDs).
pub fn token(prefix: &str) -> String {
    format!("{prefix}{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Where a UA's messages come from and go to.
enum Wire {
    Udp(UdpSocket),
    Tcp {
        stream: Arc<Mutex<Option<TcpStream>>>,
        rx: Mutex<mpsc::Receiver<SipMessage>>,
    },
}

/// A test user agent on UDP or TCP. Messages that a `wait` did not ask for are kept for later.
pub struct Ua {
    pub name: String,
    pub addr: SocketAddr,
    pub proto: Proto,
    wire: Wire,
    backlog: Mutex<VecDeque<(SipMessage, SocketAddr)>>,
}

fn spawn_reader(mut s: TcpStream, tx: mpsc::Sender<SipMessage>) {
    std::thread::spawn(move || {
        let mut framer = StreamFramer::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            while let Ok(Some(f)) = framer.decode(&mut buf) {
                if let Frame::Message(m) = f
                    && let Ok(msg) = SipMessage::parse(m)
                    && tx.send(msg).is_err()
                {
                    return;
                }
            }
        }
    });
}

impl Ua {
    /// A UA on a UDP socket.
    pub fn udp(name: &str) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        Ua {
            name: name.into(),
            addr,
            proto: Proto::Udp,
            wire: Wire::Udp(sock),
            backlog: Mutex::default(),
        }
    }

    /// A UA listening on TCP (a callee: the proxy connects to it; it answers on that
    /// connection).
    pub fn tcp_listener(name: &str) -> Ua {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let stream = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&stream);
        std::thread::spawn(move || {
            while let Ok((s, _)) = l.accept() {
                s.set_nodelay(true).unwrap();
                *slot.lock().unwrap() = Some(s.try_clone().unwrap());
                spawn_reader(s, tx.clone());
            }
        });
        Ua {
            name: name.into(),
            addr,
            proto: Proto::Tcp,
            wire: Wire::Tcp {
                stream,
                rx: Mutex::new(rx),
            },
            backlog: Mutex::default(),
        }
    }

    /// A UA connected over TCP to `proxy` (a caller).
    pub fn tcp_connect(name: &str, proxy: SocketAddr) -> Ua {
        let s = TcpStream::connect(proxy).unwrap();
        s.set_nodelay(true).unwrap();
        let addr = s.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        spawn_reader(s.try_clone().unwrap(), tx);
        Ua {
            name: name.into(),
            addr,
            proto: Proto::Tcp,
            wire: Wire::Tcp {
                stream: Arc::new(Mutex::new(Some(s))),
                rx: Mutex::new(rx),
            },
            backlog: Mutex::default(),
        }
    }

    /// The UA's contact URI (`transport=tcp` for TCP).
    pub fn uri(&self) -> String {
        match self.proto {
            Proto::Udp => format!("sip:{}@{}", self.name, self.addr),
            _ => format!("sip:{}@{};transport=tcp", self.name, self.addr),
        }
    }

    fn via_proto(&self) -> &'static str {
        if self.proto == Proto::Udp {
            "UDP"
        } else {
            "TCP"
        }
    }

    /// Sends bytes (UDP: to `to`; TCP: on the UA's connection).
    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        match &self.wire {
            Wire::Udp(s) => {
                s.send_to(data, to).unwrap();
            }
            Wire::Tcp { stream, .. } => {
                let end = Instant::now() + WAIT;
                loop {
                    if let Some(s) = stream.lock().unwrap().as_mut() {
                        s.write_all(data).unwrap();
                        return;
                    }
                    assert!(
                        Instant::now() < end,
                        "{}: no TCP connection to send on",
                        self.name
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    fn recv_one(&self, timeout: Duration) -> Option<(SipMessage, SocketAddr)> {
        match &self.wire {
            Wire::Udp(s) => {
                s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                    .unwrap();
                let mut buf = vec![0u8; 65_536];
                let (n, src) = s.recv_from(&mut buf).ok()?;
                buf.truncate(n);
                SipMessage::parse(Bytes::from(buf)).ok().map(|m| (m, src))
            }
            Wire::Tcp { rx, .. } => rx
                .lock()
                .unwrap()
                .recv_timeout(timeout)
                .ok()
                .map(|m| (m, self.addr)),
        }
    }

    /// The first message (backlog first) for which `pred` holds, within `timeout`.
    pub fn wait(
        &self,
        timeout: Duration,
        pred: impl Fn(&SipMessage) -> bool,
    ) -> Option<(SipMessage, SocketAddr)> {
        {
            let mut b = self.backlog.lock().unwrap();
            if let Some(i) = b.iter().position(|(m, _)| pred(m)) {
                return b.remove(i);
            }
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            let (m, src) = self.recv_one(left)?;
            if pred(&m) {
                return Some((m, src));
            }
            self.backlog.lock().unwrap().push_back((m, src));
        }
    }

    /// Waits for a request `method`; panics after [`WAIT`].
    pub fn wait_req(&self, method: &str) -> (SipMessage, SocketAddr) {
        self.wait(WAIT, |m| m.method_bytes() == Some(method.as_bytes()))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {method} arrived; backlog {:?}",
                    self.name,
                    self.backlog_summary()
                )
            })
    }

    /// Waits for a request `method` of call `call_id`.
    pub fn wait_req_of(
        &self,
        method: &str,
        call_id: &str,
        timeout: Duration,
    ) -> Option<(SipMessage, SocketAddr)> {
        self.wait(timeout, |m| {
            m.method_bytes() == Some(method.as_bytes()) && m.call_id() == Some(call_id.as_bytes())
        })
    }

    /// Waits for a response with `status` to a `method` request; panics after [`WAIT`].
    pub fn wait_resp(&self, status: u16, method: &str) -> SipMessage {
        self.wait(WAIT, |m| {
            m.status() == Some(status)
                && m.cseq()
                    .is_some_and(|c| c.method.as_bytes() == method.as_bytes())
        })
        .map(|(m, _)| m)
        .unwrap_or_else(|| {
            panic!(
                "{}: no {status} to {method} arrived; backlog {:?}",
                self.name,
                self.backlog_summary()
            )
        })
    }

    /// The first final response (≥ 200) to `method` of `call_id`.
    pub fn wait_final(&self, method: &str, call_id: &str, timeout: Duration) -> Option<SipMessage> {
        self.wait(timeout, |m| {
            m.status().is_some_and(|s| s >= 200)
                && m.call_id() == Some(call_id.as_bytes())
                && m.cseq()
                    .is_some_and(|c| c.method.as_bytes() == method.as_bytes())
        })
        .map(|(m, _)| m)
    }

    /// Everything in the backlog plus what arrives during `d`.
    pub fn drain(&self, d: Duration) -> Vec<SipMessage> {
        let mut out: Vec<SipMessage> = self
            .backlog
            .lock()
            .unwrap()
            .drain(..)
            .map(|(m, _)| m)
            .collect();
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv_one(left) {
                Some((m, _)) => out.push(m),
                None => break,
            }
        }
        out
    }

    fn backlog_summary(&self) -> Vec<String> {
        self.backlog
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| summary(m))
            .collect()
    }

    /// Answers `req` (which came from `src`) with `status`: To tag `tag`, our Contact, and for
    /// INVITE its Record-Route copied (RFC 3261 §12.1.1).
    pub fn reply(&self, req: &SipMessage, src: SocketAddr, status: u16, tag: &str) {
        self.send(src, &self.response(req, status, tag, &[]));
    }

    /// The response [`reply`](Self::reply) sends, with extra header lines.
    pub fn response(
        &self,
        req: &SipMessage,
        status: u16,
        tag: &str,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let contact = format!("<{}>", self.uri());
        let rrs: Vec<&[u8]> = req.headers(HeaderName::RecordRoute).collect();
        let mut b = ResponseBuilder::new(req, status).to_tag(tag.as_bytes());
        if status > 100 && req.method_bytes() == Some(b"INVITE") {
            b = b.header(b"Contact", contact.as_bytes());
            for rr in &rrs {
                b = b.header(b"Record-Route", rr);
            }
        }
        for (n, v) in extra {
            b = b.header(n.as_bytes(), v.as_bytes());
        }
        let mut out = Vec::new();
        b.write(&mut out);
        out
    }

    /// A request from this UA.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        method: &str,
        ruri: &str,
        call_id: &str,
        from_tag: &str,
        to: &str,
        cseq: u32,
        branch: &str,
        routes: &[String],
        body: &[u8],
    ) -> Vec<u8> {
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\n",
            self.via_proto(),
            self.addr
        );
        for r in routes {
            m.push_str(&format!("Route: {r}\r\n"));
        }
        m.push_str(&format!(
            "Max-Forwards: 70\r\nFrom: <sip:{}@example.com>;tag={from_tag}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <{}>\r\n",
            self.name,
            self.uri()
        ));
        if !body.is_empty() {
            m.push_str("Content-Type: application/sdp\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = m.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

/// One line describing a message, for assertion messages.
pub fn summary(m: &SipMessage) -> String {
    let first = String::from_utf8_lossy(m.start_line_bytes()).into_owned();
    let cseq = m
        .header(HeaderName::CSeq)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default();
    format!("{first} [{cseq}]")
}

/// The Record-Route values of a message, in order.
pub fn record_routes(m: &SipMessage) -> Vec<String> {
    m.record_routes()
        .map(|na| String::from_utf8_lossy(na.raw()).into_owned())
        .collect()
}

/// The URI of the first Contact.
pub fn contact_uri(m: &SipMessage) -> String {
    let v = m.header(HeaderName::Contact).unwrap();
    String::from_utf8_lossy(NameAddr::parse(v).unwrap().uri_raw()).into_owned()
}

/// The To header value.
pub fn to_value(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.header(HeaderName::To).unwrap()).into_owned()
}

/// The From header value.
pub fn from_value(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.header(HeaderName::From).unwrap()).into_owned()
}

/// The top Via branch.
pub fn branch_of(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.top_via().unwrap().branch().unwrap()).into_owned()
}

/// A caller's view of an INVITE it sent.
pub struct Call {
    pub call_id: String,
    pub from_tag: String,
    pub branch: String,
    pub ruri: String,
    pub to: String,
    pub bytes: Vec<u8>,
}

impl Call {
    /// Builds an INVITE from `ua` to `ruri` (not sent).
    pub fn invite(ua: &Ua, ruri: &str, body: &[u8]) -> Call {
        Call::invite_with_id(ua, ruri, &token("call-"), body)
    }

    /// Builds an INVITE with Call-ID `call_id`.
    pub fn invite_with_id(ua: &Ua, ruri: &str, call_id: &str, body: &[u8]) -> Call {
        let call_id = call_id.to_string();
        let from_tag = token("ft");
        let branch = token("z9hG4bKc");
        let to = format!("<{ruri}>");
        let bytes = ua.request(
            "INVITE",
            ruri,
            &call_id,
            &from_tag,
            &to,
            1,
            &branch,
            &[],
            body,
        );
        Call {
            call_id,
            from_tag,
            branch,
            ruri: ruri.into(),
            to,
            bytes,
        }
    }

    /// The CANCEL of this INVITE (same branch, RFC 3261 §9.1).
    pub fn cancel(&self, ua: &Ua) -> Vec<u8> {
        ua.request(
            "CANCEL",
            &self.ruri,
            &self.call_id,
            &self.from_tag,
            &self.to,
            1,
            &self.branch,
            &[],
            b"",
        )
    }

    /// The ACK of a non-2xx final `resp` (same branch, To of the response).
    pub fn ack_non2xx(&self, ua: &Ua, resp: &SipMessage) -> Vec<u8> {
        ua.request(
            "ACK",
            &self.ruri,
            &self.call_id,
            &self.from_tag,
            &to_value(resp),
            1,
            &self.branch,
            &[],
            b"",
        )
    }

    /// An in-dialog request after the 2xx `ok`: R-URI = its Contact, Route = its
    /// Record-Route reversed (RFC 3261 §12.1.2), new branch.
    pub fn in_dialog(&self, ua: &Ua, method: &str, cseq: u32, ok: &SipMessage) -> Vec<u8> {
        let mut routes = record_routes(ok);
        routes.reverse();
        let branch = token("z9hG4bKd");
        ua.request(
            method,
            &contact_uri(ok),
            &self.call_id,
            &self.from_tag,
            &to_value(ok),
            cseq,
            &branch,
            &routes,
            b"",
        )
    }
}

/// The callee's in-dialog request (e.g. BYE) for the INVITE `inv` it received and answered
/// with To tag `tag`: R-URI = the caller's Contact, Route = the Record-Route in order.
pub fn callee_request(ua: &Ua, method: &str, inv: &SipMessage, tag: &str, cseq: u32) -> Vec<u8> {
    let routes = record_routes(inv);
    let branch = token("z9hG4bKe");
    let from = format!("{};tag={tag}", to_value(inv));
    let to = from_value(inv);
    let call_id = String::from_utf8_lossy(inv.call_id().unwrap()).into_owned();
    let mut m = format!(
        "{method} {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch}\r\n",
        contact_uri(inv),
        ua.via_proto(),
        ua.addr
    );
    for r in &routes {
        m.push_str(&format!("Route: {r}\r\n"));
    }
    m.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ));
    m.into_bytes()
}
