//! End-to-end test harness: starts the real `geosip` binary on loopback (free ports), small
//! SIP user agents over UDP and TCP, and helpers for the admin interface.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sip_msg::{Frame, SipMessage, StreamFramer};

/// A running `geosip run`.
pub struct Server {
    pub child: Child,
    /// UDP listening address.
    pub udp: SocketAddr,
    /// TCP listening address.
    pub tcp: Option<SocketAddr>,
    /// Admin interface.
    pub admin: SocketAddr,
    /// Data directory (removed on drop).
    pub data_dir: PathBuf,
    /// Where stderr goes.
    pub log: PathBuf,
    stderr_tail: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A unique token for Call-IDs, branches, tags and temp dirs.
pub fn uniq() -> String {
    format!(
        "{}x{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos()
    )
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        % 1_000_000_007
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geosip-e2e-{tag}-{}", uniq()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

impl Server {
    /// Starts the binary with UDP and TCP on free loopback ports plus `args`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(args, true, None)
    }

    /// Starts with an explicit data dir (to restart on the same store).
    pub fn start_with(args: &[&str], tcp: bool, data_dir: Option<PathBuf>) -> Server {
        let data_dir = data_dir.unwrap_or_else(|| temp_dir("data"));
        let log = data_dir.join(format!("geosip-{}.log", uniq()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_geosip"));
        cmd.arg("run").arg("--listen").arg("udp:127.0.0.1:0");
        if tcp {
            cmd.arg("--listen").arg("tcp:127.0.0.1:0");
        }
        cmd.arg("--admin")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir);
        cmd.args(args);
        cmd.env(
            "GEOSIP_LOG",
            std::env::var("GEOSIP_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn geosip");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let tail = tail.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(&log).ok();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(f) = f.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let mut t = tail.lock().unwrap();
                    t.push(line);
                    if t.len() > 200 {
                        t.remove(0);
                    }
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("geosip ready:") {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let t = tail.lock().unwrap().join("\n");
                panic!("geosip did not become ready; stderr:\n{t}");
            }
        };
        let mut udp = None;
        let mut tcp_addr = None;
        let mut admin = None;
        for part in ready.trim_start_matches("geosip ready:").split_whitespace() {
            let (k, v) = part.split_once(':').expect("proto:addr");
            let a: SocketAddr = v.parse().expect("addr");
            match k {
                "udp" if udp.is_none() => udp = Some(a),
                "tcp" if tcp_addr.is_none() => tcp_addr = Some(a),
                "admin" => admin = Some(a),
                _ => {}
            }
        }
        Server {
            child,
            udp: udp.expect("udp socket in ready line"),
            tcp: tcp_addr,
            admin: admin.expect("admin in ready line"),
            data_dir,
            log,
            stderr_tail: tail,
        }
    }

    /// The last lines geosip wrote to stderr.
    pub fn stderr(&self) -> String {
        self.stderr_tail.lock().unwrap().join("\n")
    }

    /// Calls a JSON-RPC method; panics on transport errors, returns `Err(message)` on RPC errors.
    pub fn rpc(&self, method: &str, params: &[&str]) -> Result<serde_json::Value, String> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
                .to_string();
        let resp = http(self.admin, "POST", "/RPC", &body);
        let v: serde_json::Value =
            serde_json::from_str(&resp).unwrap_or_else(|e| panic!("bad RPC response {resp}: {e}"));
        match v.get("error") {
            Some(e) => Err(e["message"].as_str().unwrap_or("").to_string()),
            None => Ok(v["result"].clone()),
        }
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        http(self.admin, "GET", "/metrics", "")
    }

    /// A metric sample value from `/metrics` (`name{labels}` exactly as rendered).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits (up to 3 s) until a metric sample has `value`: counters are bumped right after
    /// the send that the test just observed.
    pub fn wait_metric(&self, series: &str, value: f64) -> Option<f64> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let v = self.metric(series);
            if v == Some(value) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Stops the process (SIGTERM, then SIGKILL) and waits.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client for the admin interface.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A UDP user agent.
pub struct Ua {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
}

impl Ua {
    /// Bound on a free loopback port.
    pub fn new() -> Ua {
        Ua::on("127.0.0.1")
    }

    /// Bound on a free port of `ip` (e.g. 127.0.0.2: a source that is not whitelisted).
    pub fn on(ip: &str) -> Ua {
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind ua on {ip}: {e}"));
        let addr = sock.local_addr().unwrap();
        Ua { sock, addr }
    }

    /// Sends raw bytes.
    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        self.sock.send_to(data, to).expect("send");
    }

    /// Next message within `timeout`, if any.
    pub fn recv(&self, timeout: Duration) -> Option<SipMessage> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70_000];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                        continue;
                    }
                    return SipMessage::parse_lenient(data).ok();
                }
                Err(_) => return None,
            }
        }
    }

    /// Next message, or panic saying what was expected.
    pub fn expect(&self, what: &str) -> SipMessage {
        self.recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{what}: nothing received"))
    }

    /// Next response with `status`, skipping provisional responses other than it.
    pub fn expect_status(&self, status: u16) -> SipMessage {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(m) = self.recv(left) {
                match m.status() {
                    Some(s) if s == status => return m,
                    Some(s) if s < 200 => continue,
                    other => panic!("expected {status}, got {other:?}:\n{}", text(&m)),
                }
            }
        }
        panic!("expected {status}: nothing received");
    }

    /// Asserts that nothing arrives within `d`.
    pub fn expect_silence(&self, d: Duration) {
        if let Some(m) = self.recv(d) {
            panic!("expected nothing, got:\n{}", text(&m));
        }
    }
}

/// A TCP user agent.
pub struct TcpUa {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    buf: BytesMut,
    framer: StreamFramer,
}

impl TcpUa {
    /// Connects to `to`.
    pub fn connect(to: SocketAddr) -> TcpUa {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("tcp connect");
        let addr = stream.local_addr().unwrap();
        TcpUa {
            stream,
            addr,
            buf: BytesMut::new(),
            framer: StreamFramer::new(),
        }
    }

    /// Wraps an accepted stream.
    pub fn from_stream(stream: TcpStream) -> TcpUa {
        let addr = stream.local_addr().unwrap();
        TcpUa {
            stream,
            addr,
            buf: BytesMut::new(),
            framer: StreamFramer::new(),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("tcp write");
    }

    /// Next message within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<SipMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(Frame::Message(m))) => return SipMessage::parse(m).ok(),
                Ok(Some(Frame::Ping)) => continue,
                Ok(None) => {}
                Err(_) => return None,
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut tmp = [0u8; 16384];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Next raw bytes (for keep-alive pongs).
    pub fn recv_raw(&mut self, timeout: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut tmp = [0u8; 4096];
        match self.stream.read(&mut tmp) {
            Ok(n) => tmp[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Next response with `status`, skipping other provisional responses.
    pub fn expect_status(&mut self, status: u16) -> SipMessage {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(m) = self.recv(left) {
                match m.status() {
                    Some(s) if s == status => return m,
                    Some(s) if s < 200 => continue,
                    other => panic!("expected {status}, got {other:?}:\n{}", text(&m)),
                }
            } else {
                break;
            }
        }
        panic!("expected {status} over TCP: nothing received");
    }
}

/// The message as text (lossy), for assertion messages.
pub fn text(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.as_bytes()).into_owned()
}

/// A request from `ua` (sent-by `via_host`) with the usual mandatory headers.
pub fn request(
    method: &str,
    ruri: &str,
    from_ua: SocketAddr,
    proto: &str,
    extra: &str,
    body: &str,
) -> String {
    let u = uniq();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{proto} {from_ua};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f{u}\r\nTo: <sip:bob@example.com>\r\nCall-ID: {u}@test\r\nCSeq: 1 {method}\r\nContact: <sip:alice@{from_ua}>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A REGISTER for `user@domain` with contact `contact` from `ua`.
#[allow(clippy::too_many_arguments)]
pub fn register(
    user: &str,
    domain: &str,
    contact: &str,
    ua: SocketAddr,
    expires: u32,
    call_id: &str,
    cseq: u32,
    extra: &str,
) -> String {
    let u = uniq();
    format!(
        "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {ua};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag=r{u}\r\nTo: <sip:{user}@{domain}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Builds a response to `req` (as a UAS would), copying Via/From/To/Call-ID/CSeq and
/// Record-Route, adding `to_tag` and `extra` headers.
pub fn response_to(
    req: &SipMessage,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for l in req.header_lines() {
        let name = String::from_utf8_lossy(l.name_bytes).to_ascii_lowercase();
        let keep = matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" | "record-route"
        );
        if keep {
            out.push_str(&format!(
                "{}: {}\r\n",
                String::from_utf8_lossy(l.name_bytes),
                String::from_utf8_lossy(l.value)
            ));
        }
        if name == "to" || name == "t" {
            let v = String::from_utf8_lossy(l.value);
            match (to_tag, v.contains(";tag=")) {
                (Some(t), false) => out.push_str(&format!("To: {v};tag={t}\r\n")),
                _ => out.push_str(&format!("To: {v}\r\n")),
            }
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// Where a response to `m` goes: its top Via's sent-by (what a UAS answering a request the
/// proxy forwarded uses).
pub fn via_addr(m: &SipMessage) -> SocketAddr {
    let v = m.top_via().expect("a Via");
    format!(
        "{}:{}",
        String::from_utf8_lossy(v.host().raw()),
        v.port().unwrap_or(5060)
    )
    .parse()
    .expect("an IP sent-by")
}

/// Whether a program is installed (for tests driving SIPp, sipsak, svwar). In CI a missing
/// tool fails the test; elsewhere it is skipped loudly.
pub fn have_tool(name: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed (scripts/test installs it)");
        }
        eprintln!("SKIPPED: {name} is not installed (run scripts/test to install it)");
    }
    ok
}
