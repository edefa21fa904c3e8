//! Shared helpers: a real loopback `Core`, a location table, a test UA (a UDP socket) that
//! sends REGISTERs through the registrar and reads the replies off the wire.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use geosip_core::Core;
use geosip_core::config::CoreConfig;
use geosip_core::ctx::MsgCtx;
use geosip_core::rpc::RpcResult;
use geosip_core::testutil::{core_on, ctx_for};
use geosip_registrar::{Registrar, RegistrarConfig};
use geosip_store::location::{BoxFuture, LoadPage};
use geosip_usrloc::{
    BackendKind, Binding, LoadCursor, Location, LocationBackend, StoreError, StoreResult,
    UsrlocConfig, WriteOp,
};
use sip_msg::{HeaderName, SipMessage};

pub const ALICE: &str = "sip:alice@example.com";

static SEQ: AtomicU64 = AtomicU64::new(1);

/// Registrar settings for deterministic tests: no expiry spreading.
pub fn cfg() -> RegistrarConfig {
    RegistrarConfig {
        expires_range: 0,
        ..RegistrarConfig::default()
    }
}

pub struct Env {
    pub core: Arc<Core>,
    pub rt: tokio::runtime::Runtime,
    pub loc: Arc<Location>,
    pub reg: Arc<Registrar>,
    pub ua: UdpSocket,
}

/// A core on loopback UDP, a memory location table and the registrar.
pub fn env(cfg: RegistrarConfig) -> Env {
    env_with(cfg, CoreConfig::default(), |_| {
        Location::memory(UsrlocConfig {
            timer_interval_s: 0,
            ..UsrlocConfig::default()
        })
    })
}

/// Same with a custom core config and location (built on the core's runtime).
pub fn env_with(
    cfg: RegistrarConfig,
    core_cfg: CoreConfig,
    loc: impl FnOnce(&tokio::runtime::Runtime) -> Location,
) -> Env {
    let (core, rt) = core_on(&["udp:127.0.0.1:0"], core_cfg);
    let loc = Arc::new(loc(&rt));
    let reg = Registrar::new(core.clone(), loc.clone(), cfg);
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    Env {
        core,
        rt,
        loc,
        reg,
        ua,
    }
}

/// A REGISTER under construction.
#[derive(Clone, Debug)]
pub struct Reg {
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub contacts: Vec<String>,
    pub expires: Option<String>,
    pub extra: Vec<String>,
}

impl Reg {
    pub fn new(to: &str) -> Reg {
        Reg {
            to: to.into(),
            call_id: format!("cid-{}@ua.example.com", SEQ.fetch_add(1, Ordering::Relaxed)),
            cseq: 1,
            contacts: Vec::new(),
            expires: None,
            extra: Vec::new(),
        }
    }
    pub fn contact(mut self, c: &str) -> Reg {
        self.contacts.push(c.into());
        self
    }
    pub fn expires(mut self, e: &str) -> Reg {
        self.expires = Some(e.into());
        self
    }
    pub fn header(mut self, h: &str) -> Reg {
        self.extra.push(h.into());
        self
    }
    pub fn cseq(mut self, n: u32) -> Reg {
        self.cseq = n;
        self
    }
    pub fn call_id(mut self, c: &str) -> Reg {
        self.call_id = c.into();
        self
    }
    pub fn next(&self) -> Reg {
        let mut r = self.clone();
        r.cseq += 1;
        r
    }
    pub fn raw(&self, via_port: u16) -> Vec<u8> {
        let mut s = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{via_port};rport;branch=z9hG4bK{}x{}\r\nMax-Forwards: 70\r\nTo: <{}>\r\nFrom: <{}>;tag=f{}\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n",
            self.cseq,
            SEQ.fetch_add(1, Ordering::Relaxed),
            self.to,
            self.to,
            self.cseq,
            self.call_id,
            self.cseq
        );
        for c in &self.contacts {
            s.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = &self.expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        for h in &self.extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }
}

/// A reply as read off the wire.
pub struct Reply {
    pub msg: SipMessage,
}

impl Reply {
    pub fn status(&self) -> u16 {
        self.msg.status().unwrap_or(0)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.msg
            .header_by_name(name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// The Contact values, each as written.
    pub fn contacts(&self) -> Vec<String> {
        self.msg
            .values(HeaderName::Contact)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    /// (URI, expires) of each Contact value.
    pub fn bindings(&self) -> Vec<(String, u32)> {
        self.msg
            .contacts()
            .filter_map(|c| {
                c.addr().map(|a| {
                    (
                        String::from_utf8_lossy(a.uri_raw()).into_owned(),
                        a.expires().unwrap_or(0),
                    )
                })
            })
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.msg.as_bytes()).into_owned()
    }
}

impl Env {
    pub fn ua_addr(&self) -> SocketAddr {
        self.ua.local_addr().unwrap()
    }

    /// A context for raw bytes as if received from the UA.
    pub fn ctx(&self, raw: &[u8]) -> MsgCtx {
        ctx_for(&self.core, raw, &self.ua_addr().to_string())
    }

    /// Sends `r` through `save(location, flags)`; returns the code and the reply.
    pub fn save_flags(&self, r: &Reg, flags: u32) -> (i32, Reply) {
        let raw = r.raw(self.ua_addr().port());
        let code = self.save_raw(&raw, flags);
        (code, self.recv())
    }

    pub fn save(&self, r: &Reg) -> (i32, Reply) {
        self.save_flags(r, 0)
    }

    pub fn save_raw(&self, raw: &[u8], flags: u32) -> i32 {
        let mut ctx = self.ctx(raw);
        self.reg.save(&mut ctx, "location", flags)
    }

    pub fn recv(&self) -> Reply {
        let mut buf = vec![0u8; 65536];
        let (n, _) = self.ua.recv_from(&mut buf).expect("a reply reaches the UA");
        buf.truncate(n);
        Reply {
            msg: SipMessage::parse(Bytes::from(buf)).expect("the reply parses"),
        }
    }

    /// Whether a datagram arrives within `wait`.
    pub fn nothing_received(&self, wait: Duration) -> bool {
        self.ua.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 2048];
        let r = self.ua.recv_from(&mut buf).is_err();
        self.ua
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        r
    }

    /// The live contact URIs of an AOR in the table, highest q first.
    pub fn stored(&self, aor: &str) -> Vec<String> {
        self.loc
            .lookup(aor.as_bytes(), geosip_usrloc::unix_ms())
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(&b.contact).into_owned())
            .collect()
    }

    pub fn bindings(&self, aor: &str) -> Vec<Binding> {
        self.loc
            .lookup(aor.as_bytes(), geosip_usrloc::unix_ms())
            .unwrap()
    }

    /// Calls an RPC method (they are synchronous: one poll finishes them).
    pub fn rpc(&self, name: &str, params: &[&str]) -> RpcResult {
        let p = params
            .iter()
            .map(|s| serde_json::Value::String((*s).into()))
            .collect();
        let mut f = self.core.rpc.call(name, p);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("{name} did not finish in one poll"),
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "geosip-registrar-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Usrloc settings for a store-backed test: no background timers.
pub fn store_cfg(mode: geosip_usrloc::DbMode, dir: &TempDir) -> UsrlocConfig {
    UsrlocConfig {
        db_mode: mode,
        db_url: format!("sqlite://{}", dir.0.join("location.db").display()),
        timer_interval_s: 0,
        flush_interval_ms: 3_600_000,
        timeout_ms: 5000,
        pool_size: 2,
        ..UsrlocConfig::default()
    }
}

/// How a [`Flaky`] backend fails while `fail` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailWith {
    /// A timeout (the store is unavailable: 503).
    Timeout,
    /// A refused value (a permanent error: 500).
    Refused,
}

/// A backend that forwards to a real one, or fails every write while `fail` is set.
pub struct Flaky {
    pub inner: Arc<dyn LocationBackend>,
    pub fail: AtomicBool,
    pub with: FailWith,
}

impl Flaky {
    fn err(&self) -> StoreError {
        match self.with {
            FailWith::Timeout => StoreError::Timeout(1),
            FailWith::Refused => StoreError::InvalidValue("refused by the test".into()),
        }
    }
}

impl LocationBackend for Flaky {
    fn kind(&self) -> BackendKind {
        BackendKind::Other
    }
    fn describe(&self) -> String {
        format!("flaky({})", self.inner.describe())
    }
    fn init(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.init()
    }
    fn apply<'a>(&'a self, ops: &'a [WriteOp]) -> BoxFuture<'a, StoreResult<()>> {
        if self.fail.load(Ordering::SeqCst) {
            let e = self.err();
            return Box::pin(async move { Err(e) });
        }
        self.inner.apply(ops)
    }
    fn lookup_aor<'a>(&'a self, aor: &'a [u8]) -> BoxFuture<'a, StoreResult<Vec<Binding>>> {
        self.inner.lookup_aor(aor)
    }
    fn load_page<'a>(
        &'a self,
        cursor: Option<&'a LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> BoxFuture<'a, StoreResult<LoadPage>> {
        self.inner.load_page(cursor, limit, now_s)
    }
    fn delete_expired(&self, now_s: u64) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.delete_expired(now_s)
    }
    fn health(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.health()
    }
}

/// The bytes of an RFC 4475 torture message from sip-msg's test data.
pub fn rfc4475(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/sip-msg/tests/data/rfc4475")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
