//! SIP transports: UDP workers with batched receive and `SO_REUSEPORT`, and a TCP connection
//! table; they hand received messages to the core through one narrow interface.
//!
//! # The interface
//! The core implements [`Handler`]; every complete message that arrives on any transport is
//! passed to [`Handler::on_message`] as a [`Received`] (the bytes, who sent them, on which
//! listening socket, over which connection). Everything going out goes through
//! [`Transports::send`] with a [`Destination`]. TLS and WebSocket transports plug into the same
//! two calls: they only add [`Proto`] variants and a listener that produces [`Received`].
//!
//! # Threads
//! - UDP: per UDP listening address, `udp_workers` OS threads, each with its own socket bound
//!   with `SO_REUSEPORT` (the kernel spreads datagrams by 4-tuple hash) and a blocking
//!   `recvmmsg` loop. The handler runs on that thread: no queue, no context switch (Kamailio's
//!   `children` model).
//! - TCP: connections are tokio tasks on the I/O runtime; framed messages are queued to
//!   `tcp_workers` OS threads that run the handler, so a handler that blocks (a synchronous
//!   database write) never stalls the runtime.
//!
//! Handlers are synchronous and may block; they never run on a tokio worker thread.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod sys;
mod tcp;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use serde::Deserialize;

/// A UDP datagram held back by [`Transports::corked`]: (socket, destination, bytes).
type Held = (usize, SocketAddr, Vec<u8>);

thread_local! {
    static CORK: std::cell::RefCell<Option<Vec<Held>>> = const { std::cell::RefCell::new(None) };
}

pub use tcp::TcpStats;

/// Transport protocol of a listening socket, a connection or a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// UDP (RFC 3261 §18, unreliable).
    Udp,
    /// TCP (reliable, stream framed by Content-Length).
    Tcp,
    /// TLS over TCP (reserved: plugs into the TCP table).
    Tls,
    /// WebSocket (RFC 7118, reserved).
    Ws,
    /// Secure WebSocket (RFC 7118, reserved).
    Wss,
}

impl Proto {
    /// The transport token used in Via headers (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
            Proto::Ws => "WS",
            Proto::Wss => "WSS",
        }
    }

    /// Lower-case name as used in `transport=` URI parameters and config (`udp:IP:PORT`).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
            Proto::Ws => "ws",
            Proto::Wss => "wss",
        }
    }

    /// Parses a transport token case-insensitively (`udp`, `TCP`, ...).
    pub fn from_token(t: &[u8]) -> Option<Proto> {
        if t.eq_ignore_ascii_case(b"udp") {
            Some(Proto::Udp)
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Some(Proto::Tcp)
        } else if t.eq_ignore_ascii_case(b"tls") {
            Some(Proto::Tls)
        } else if t.eq_ignore_ascii_case(b"ws") {
            Some(Proto::Ws)
        } else if t.eq_ignore_ascii_case(b"wss") {
            Some(Proto::Wss)
        } else {
            None
        }
    }

    /// Reliable transports do not retransmit (RFC 3261 §17.1.1.2: Timer A is not used).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Proto::Udp)
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Index of a listening socket in [`Transports::sockets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(pub u16);

/// Identifier of a TCP connection in the connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// A listening socket as configured (`udp:127.0.0.1:5060`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// Transport.
    pub proto: Proto,
    /// Address to bind (port 0 picks a free port).
    pub addr: SocketAddr,
}

impl std::str::FromStr for ListenSpec {
    type Err = String;
    /// Parses `udp:IP:PORT`, `tcp:IP:PORT`, `udp:[IPv6]:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected PROTO:IP:PORT, e.g. udp:127.0.0.1:5060"))?;
        let proto = Proto::from_token(p.as_bytes())
            .filter(|p| matches!(p, Proto::Udp | Proto::Tcp))
            .ok_or_else(|| format!("`{s}`: transport `{p}` is not one of udp, tcp"))?;
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| format!("`{s}`: `{rest}` is not IP:PORT (IPv6 as [::1]:5060)"))?;
        Ok(ListenSpec { proto, addr })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto.name(), self.addr)
    }
}

/// A bound listening socket.
#[derive(Clone, Debug)]
pub struct ListenSocket {
    /// Its index.
    pub id: SocketId,
    /// Transport.
    pub proto: Proto,
    /// The address actually bound (with the real port when 0 was asked).
    pub addr: SocketAddr,
}

/// One message received on any transport.
#[derive(Clone, Debug)]
pub struct Received {
    /// The message bytes (a whole datagram for UDP, one framed message for streams).
    pub data: Bytes,
    /// Source address of the packet or connection peer.
    pub src: SocketAddr,
    /// Transport it arrived on.
    pub proto: Proto,
    /// The listening socket it arrived on (for streams: the socket the connection belongs to).
    pub socket: SocketId,
    /// Local address of that socket.
    pub local: SocketAddr,
    /// The connection, for stream transports.
    pub conn: Option<ConnId>,
    /// How long the datagram waited in the kernel's socket queue before it was read (zero
    /// when unknown, and for streams).
    pub queued: std::time::Duration,
}

/// Where to send a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Transport.
    pub proto: Proto,
    /// Remote address.
    pub addr: SocketAddr,
    /// An existing connection to prefer (responses go back on the request's connection,
    /// RFC 3261 §18.2.2).
    pub conn: Option<ConnId>,
    /// The local socket to send from; `None` picks one of the right transport and family.
    pub socket: Option<SocketId>,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No listening socket of that transport/address family exists to send from.
    #[error("no listening socket for this transport and address family")]
    NoSocket,
    /// The connection's send queue is full (per-connection buffer limit).
    #[error("connection send queue full")]
    QueueFull,
    /// The connection table is full.
    #[error("too many TCP connections")]
    TooManyConnections,
    /// The OS refused the send.
    #[error("{0}")]
    Io(io::Error),
}

/// The core's side of the interface.
pub trait Handler: Send + Sync + 'static {
    /// A complete message arrived. Runs on a transport worker thread; may block.
    fn on_message(&self, rx: Received);

    /// A datagram or stream message was refused before reaching the core (oversized,
    /// truncated, unframeable). `status` is the SIP status to answer if the transport could
    /// (streams answer it themselves before closing). Default: ignore.
    fn on_rejected(&self, _src: SocketAddr, _proto: Proto, _reason: &'static str) {}

    /// An asynchronous send failed (TCP connect refused, connection closed). Default: ignore.
    fn on_send_failed(&self, _dst: Destination) {}

    /// A UDP worker fetched `received` datagrams in one `recvmmsg` of `capacity`, the oldest
    /// of which waited `queued` in the socket queue: a full batch and a long wait mean a
    /// backlog (load signals for overload control). Default: ignore.
    fn on_batch(
        &self,
        _worker: usize,
        _received: usize,
        _capacity: usize,
        _queued: std::time::Duration,
    ) {
    }

    /// A UDP worker handled what it received (or its receive timed out) and is about to wait
    /// for more: a moment to run work set aside for later on this thread. Default: nothing.
    fn on_idle(&self, _worker: usize) {}
}

/// Transport settings (`[core]` keys in the config).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// UDP worker threads per UDP listening address (0 = number of CPUs).
    pub udp_workers: usize,
    /// Threads that run the core for messages from TCP connections.
    pub tcp_workers: usize,
    /// Requested UDP receive buffer in bytes (`SO_RCVBUF`).
    pub udp_rcvbuf: usize,
    /// Requested UDP send buffer in bytes (`SO_SNDBUF`).
    pub udp_sndbuf: usize,
    /// Maximum simultaneous TCP connections (accepted + outgoing).
    pub tcp_max_connections: usize,
    /// Idle TCP connections are closed after this many seconds.
    pub tcp_idle_timeout_s: u64,
    /// Timeout for establishing an outgoing TCP connection, in milliseconds.
    pub tcp_connect_timeout_ms: u64,
    /// Messages queued per TCP connection before sends fail (per-connection buffer limit).
    pub tcp_send_queue: usize,
    /// Bytes queued per TCP connection before sends fail (per-connection buffer limit; a
    /// peer that stops reading costs at most this much memory).
    pub tcp_send_queue_bytes: usize,
    /// A write to a TCP peer that does not complete within this many milliseconds closes the
    /// connection (Kamailio's `tcp_send_timeout`).
    pub tcp_send_timeout_ms: u64,
    /// Honour the RFC 5923 `alias` Via parameter on TCP: the Via sent-by (an IP literal)
    /// becomes another address of the connection, and requests to it reuse the connection
    /// (Kamailio's `tcp_accept_aliases`; off by default, as RFC 5923 is meant for TLS).
    pub tcp_accept_aliases: bool,
    /// Largest header section accepted on a stream (bytes) before 413/close.
    pub tcp_max_header_bytes: usize,
    /// Largest body accepted on a stream (bytes) before 413/close.
    pub tcp_max_body_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            udp_workers: 0,
            tcp_workers: 2,
            udp_rcvbuf: 8 << 20,
            udp_sndbuf: 4 << 20,
            tcp_max_connections: 16_384,
            tcp_idle_timeout_s: 600,
            tcp_connect_timeout_ms: 3_000,
            tcp_send_queue: 1_024,
            tcp_send_queue_bytes: 4 << 20,
            tcp_send_timeout_ms: 10_000,
            tcp_accept_aliases: false,
            tcp_max_header_bytes: 64 << 10,
            tcp_max_body_bytes: 1 << 20,
        }
    }
}

/// Byte and packet counters of the transports (read by the metrics endpoint).
#[derive(Default, Debug)]
pub struct TransportStats {
    /// Datagrams received.
    pub udp_rx_packets: AtomicU64,
    /// Datagram bytes received.
    pub udp_rx_bytes: AtomicU64,
    /// Datagrams sent.
    pub udp_tx_packets: AtomicU64,
    /// Datagram bytes sent.
    pub udp_tx_bytes: AtomicU64,
    /// Datagrams dropped because they were truncated (larger than 64 KiB).
    pub udp_rx_truncated: AtomicU64,
    /// UDP send errors.
    pub udp_tx_errors: AtomicU64,
    /// TCP counters.
    pub tcp: TcpStats,
}

pub(crate) struct Inner {
    pub(crate) cfg: TransportConfig,
    pub(crate) sockets: Vec<ListenSocket>,
    pub(crate) udp: Vec<Option<Arc<std::net::UdpSocket>>>,
    pub(crate) udp_pending: parking_lot::Mutex<Vec<udp::PendingUdp>>,
    pub(crate) tcp: tcp::TcpTable,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: TransportStats,
    pub(crate) threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// All listening sockets and connections. Cheap to clone.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

impl Transports {
    /// Binds every listening socket (so the real ports are known) without receiving yet.
    /// TCP listeners and connections run on `rt`.
    pub fn bind(
        cfg: TransportConfig,
        specs: &[ListenSpec],
        rt: tokio::runtime::Handle,
    ) -> io::Result<Transports> {
        let mut sockets = Vec::new();
        let mut udp_send = Vec::new();
        let mut udp_pending = Vec::new();
        let mut tcp_pending = Vec::new();
        let workers = if cfg.udp_workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            cfg.udp_workers
        };
        for spec in specs {
            let id = SocketId(sockets.len() as u16);
            match spec.proto {
                Proto::Udp => {
                    let group = udp::bind_group(spec.addr, workers, &cfg)?;
                    let addr = group[0].local_addr()?;
                    udp_send.push(Some(Arc::clone(&group[0])));
                    udp_pending.push(udp::PendingUdp { id, sockets: group });
                    sockets.push(ListenSocket {
                        id,
                        proto: Proto::Udp,
                        addr,
                    });
                }
                Proto::Tcp => {
                    let l = tcp::bind_listener(spec.addr)?;
                    let addr = l.local_addr()?;
                    udp_send.push(None);
                    tcp_pending.push((id, l));
                    sockets.push(ListenSocket {
                        id,
                        proto: Proto::Tcp,
                        addr,
                    });
                }
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("transport {other} is not available in this build"),
                    ));
                }
            }
        }
        let tcp = tcp::TcpTable::new(&cfg, tcp_pending);
        Ok(Transports {
            inner: Arc::new(Inner {
                cfg,
                sockets,
                udp: udp_send,
                udp_pending: parking_lot::Mutex::new(udp_pending),
                tcp,
                rt,
                stop: AtomicBool::new(false),
                stats: TransportStats::default(),
                threads: parking_lot::Mutex::new(Vec::new()),
            }),
        })
    }

    /// Starts receiving: UDP worker threads, TCP accept loops and TCP worker threads, all
    /// delivering to `handler`.
    pub fn start(&self, handler: Arc<dyn Handler>) -> io::Result<()> {
        let pending = std::mem::take(&mut *self.inner.udp_pending.lock());
        let mut worker_no = 0usize;
        for group in pending {
            let local = self.inner.sockets[group.id.0 as usize].addr;
            for (n, sock) in group.sockets.into_iter().enumerate() {
                let h = Arc::clone(&handler);
                let inner = Arc::clone(&self.inner);
                let id = group.id;
                let wn = worker_no;
                worker_no += 1;
                let t = std::thread::Builder::new()
                    .name(format!("udp-{}-{n}", id.0))
                    .spawn(move || udp::worker(inner, sock, id, local, h, wn))?;
                self.inner.threads.lock().push(t);
            }
        }
        tcp::start(&self.inner, handler)?;
        Ok(())
    }

    /// The listening sockets, indexed by [`SocketId`].
    pub fn sockets(&self) -> &[ListenSocket] {
        &self.inner.sockets
    }

    /// A listening socket of `proto` in the same address family as `remote`, preferring
    /// `prefer` when it matches.
    pub fn socket_for(
        &self,
        proto: Proto,
        remote: &SocketAddr,
        prefer: Option<SocketId>,
    ) -> Option<&ListenSocket> {
        if let Some(p) = prefer
            && let Some(s) = self.inner.sockets.get(p.0 as usize)
            && s.proto == proto
            && s.addr.is_ipv4() == remote.is_ipv4()
        {
            return Some(s);
        }
        self.inner
            .sockets
            .iter()
            .find(|s| s.proto == proto && s.addr.is_ipv4() == remote.is_ipv4())
    }

    /// Runs `f` with this thread's UDP sends held back, then sends them all with `sendmmsg`:
    /// for a thread that answers many requests at once (the auth batch reader), so that a
    /// peer asleep is woken once for the burst rather than once per datagram (on a VM a
    /// wake-up costs more than the send). A send error of a held datagram is counted in
    /// `udp_tx_errors`, not returned.
    pub fn corked<R>(&self, f: impl FnOnce() -> R) -> R {
        let outer = CORK.with(|c| c.borrow().is_some());
        if outer {
            return f();
        }
        CORK.with(|c| *c.borrow_mut() = Some(Vec::new()));
        let r = f();
        self.flush_cork();
        CORK.with(|c| *c.borrow_mut() = None);
        r
    }

    fn flush_cork(&self) {
        let held = CORK.with(|c| c.borrow_mut().as_mut().map(std::mem::take));
        let Some(held) = held else { return };
        let mut i = 0;
        while i < held.len() {
            let sock_no = held[i].0;
            let mut j = i;
            while j < held.len() && held[j].0 == sock_no && j - i < sys::BATCH {
                j += 1;
            }
            let group: Vec<(SocketAddr, &[u8])> = held[i..j]
                .iter()
                .map(|(_, a, d)| (*a, d.as_slice()))
                .collect();
            let Some(sock) = self.inner.udp.get(sock_no).and_then(|s| s.as_ref()) else {
                i = j;
                continue;
            };
            let sent = sys::send_batch(&**sock, &group).unwrap_or(0);
            for (k, (addr, data)) in group.iter().enumerate() {
                let ok = k < sent || sock.send_to(data, *addr).is_ok();
                let st = &self.inner.stats;
                if ok {
                    st.udp_tx_packets.fetch_add(1, Ordering::Relaxed);
                    st.udp_tx_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                } else {
                    st.udp_tx_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            i = j;
        }
    }

    /// Sends one message. UDP sends synchronously from the chosen socket; TCP queues it on the
    /// destination's connection (opening one if there is none; RFC 3261 §18 reuse by remote
    /// address and alias).
    pub fn send(&self, dst: &Destination, data: &[u8]) -> Result<(), SendError> {
        match dst.proto {
            Proto::Udp => {
                let s = self
                    .socket_for(Proto::Udp, &dst.addr, dst.socket)
                    .ok_or(SendError::NoSocket)?;
                let sock_no = s.id.0 as usize;
                let sock = self.inner.udp[sock_no]
                    .as_ref()
                    .ok_or(SendError::NoSocket)?;
                let held = CORK.with(|c| match c.borrow_mut().as_mut() {
                    Some(v) => {
                        v.push((sock_no, dst.addr, data.to_vec()));
                        Some(v.len())
                    }
                    None => None,
                });
                if let Some(n) = held {
                    if n >= sys::BATCH {
                        self.flush_cork();
                    }
                    return Ok(());
                }
                match sock.send_to(data, dst.addr) {
                    Ok(_) => {
                        self.inner
                            .stats
                            .udp_tx_packets
                            .fetch_add(1, Ordering::Relaxed);
                        self.inner
                            .stats
                            .udp_tx_bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => {
                        self.inner
                            .stats
                            .udp_tx_errors
                            .fetch_add(1, Ordering::Relaxed);
                        Err(SendError::Io(e))
                    }
                }
            }
            Proto::Tcp => tcp::send(&self.inner, dst, Bytes::copy_from_slice(data)),
            _ => Err(SendError::NoSocket),
        }
    }

    /// Registers `alias` as another address of connection `conn` (RFC 5923 `alias` Via
    /// parameter), so requests to it reuse the connection.
    pub fn add_alias(&self, conn: ConnId, alias: SocketAddr) {
        self.inner.tcp.add_alias(conn, alias);
    }

    /// Whether `tcp_accept_aliases` is on.
    pub fn accepts_aliases(&self) -> bool {
        self.inner.cfg.tcp_accept_aliases
    }

    /// The open connection that `addr` (a remote address or an alias) maps to.
    pub fn conn_for(&self, addr: &SocketAddr) -> Option<ConnId> {
        self.inner.tcp.conn_for(addr)
    }

    /// Whether a connection is still open.
    pub fn conn_alive(&self, conn: ConnId) -> bool {
        self.inner.tcp.alive(conn)
    }

    /// Counters.
    pub fn stats(&self) -> &TransportStats {
        &self.inner.stats
    }

    /// Number of open TCP connections.
    pub fn tcp_connections(&self) -> usize {
        self.inner.tcp.len()
    }

    /// Stops receiving: workers exit within their receive timeout; TCP connections close.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.tcp.close_all();
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}
