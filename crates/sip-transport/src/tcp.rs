//! TCP: a connection table keyed by id, by remote address and by alias (RFC 3261 §18 and
//! RFC 5923 connection reuse), one tokio task pair per connection, framed messages handed to
//! the TCP worker threads.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use sip_msg::SipMessage;
use sip_msg::{Frame, FramerLimits, StreamFramer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::{
    ConnId, Destination, Handler, Inner, Proto, Received, SendError, SocketId, TransportConfig,
};

/// TCP counters.
#[derive(Default, Debug)]
pub struct TcpStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Outgoing connections established.
    pub connected: AtomicU64,
    /// Outgoing connection attempts that failed.
    pub connect_failed: AtomicU64,
    /// Connections closed (any reason).
    pub closed: AtomicU64,
    /// Connections refused because the table was full.
    pub refused_full: AtomicU64,
    /// Bytes received on all connections.
    pub rx_bytes: AtomicU64,
    /// Bytes sent on all connections.
    pub tx_bytes: AtomicU64,
    /// Messages received.
    pub rx_messages: AtomicU64,
    /// Connections closed because of a framing error (oversized, no Content-Length...).
    pub framing_errors: AtomicU64,
    /// Sends refused because the connection's queue was full (messages or bytes).
    pub queue_full: AtomicU64,
    /// Connections closed because a write did not complete within `tcp_send_timeout_ms`.
    pub send_timeouts: AtomicU64,
}

/// The sending half of a connection: its queue and the bytes waiting in it.
#[derive(Clone)]
struct ConnTx {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl ConnTx {
    fn new(messages: usize) -> (ConnTx, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(messages.max(1));
        (
            ConnTx {
                tx,
                queued: Arc::new(AtomicUsize::new(0)),
            },
            rx,
        )
    }

    /// Queues `data` unless the queue holds `max_bytes` already or is full.
    fn try_send(&self, data: Bytes, max_bytes: usize) -> Result<(), SendError> {
        let n = data.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > max_bytes.max(n) {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(SendError::QueueFull);
        }
        self.tx.try_send(data).map_err(|_| {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            SendError::QueueFull
        })
    }
}

struct ConnEntry {
    tx: ConnTx,
    addrs: Vec<SocketAddr>,
}

pub(crate) struct TcpTable {
    conns: RwLock<HashMap<u64, ConnEntry>>,
    by_addr: RwLock<HashMap<SocketAddr, u64>>,
    next: AtomicU64,
    count: AtomicUsize,
    listeners: Mutex<Vec<(SocketId, std::net::TcpListener)>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    work_tx: Mutex<Option<async_channel::Sender<Received>>>,
    /// The core, for connections opened by `send` (set once at start).
    handler: Mutex<Option<Arc<dyn Handler>>>,
}

pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

impl TcpTable {
    pub(crate) fn new(
        _cfg: &TransportConfig,
        listeners: Vec<(SocketId, std::net::TcpListener)>,
    ) -> Self {
        TcpTable {
            conns: RwLock::new(HashMap::new()),
            by_addr: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
            count: AtomicUsize::new(0),
            listeners: Mutex::new(listeners),
            shutdown: tokio::sync::watch::channel(false).0,
            work_tx: Mutex::new(None),
            handler: Mutex::new(None),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn alive(&self, conn: ConnId) -> bool {
        self.conns.read().contains_key(&conn.0)
    }

    pub(crate) fn add_alias(&self, conn: ConnId, alias: SocketAddr) {
        let mut conns = self.conns.write();
        if let Some(e) = conns.get_mut(&conn.0)
            && !e.addrs.contains(&alias)
            && e.addrs.len() < 8
        {
            e.addrs.push(alias);
            self.by_addr.write().insert(alias, conn.0);
        }
    }

    pub(crate) fn close_all(&self) {
        let _ = self.shutdown.send(true);
        self.work_tx.lock().take();
        self.handler.lock().take();
    }

    pub(crate) fn conn_for(&self, addr: &SocketAddr) -> Option<ConnId> {
        let id = *self.by_addr.read().get(addr)?;
        self.conns.read().contains_key(&id).then_some(ConnId(id))
    }

    fn register(&self, remote: SocketAddr, tx: ConnTx) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns.write().insert(
            id,
            ConnEntry {
                tx,
                addrs: vec![remote],
            },
        );
        self.by_addr.write().insert(remote, id);
        self.count.fetch_add(1, Ordering::Relaxed);
        id
    }

    fn remove(&self, id: u64) {
        if let Some(e) = self.conns.write().remove(&id) {
            let mut by = self.by_addr.write();
            for a in e.addrs {
                if by.get(&a) == Some(&id) {
                    by.remove(&a);
                }
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn sender_for(&self, dst: &Destination) -> Option<ConnTx> {
        let conns = self.conns.read();
        if let Some(c) = dst.conn
            && let Some(e) = conns.get(&c.0)
        {
            return Some(e.tx.clone());
        }
        let id = *self.by_addr.read().get(&dst.addr)?;
        conns.get(&id).map(|e| e.tx.clone())
    }
}

pub(crate) fn start(inner: &Arc<Inner>, handler: Arc<dyn Handler>) -> io::Result<()> {
    let (wtx, wrx) = async_channel::bounded::<Received>(4096);
    *inner.tcp.work_tx.lock() = Some(wtx);
    *inner.tcp.handler.lock() = Some(Arc::clone(&handler));
    for n in 0..inner.cfg.tcp_workers.max(1) {
        let rx = wrx.clone();
        let h = Arc::clone(&handler);
        let t = std::thread::Builder::new()
            .name(format!("tcp-worker-{n}"))
            .spawn(move || {
                while let Ok(m) = rx.recv_blocking() {
                    h.on_message(m);
                }
            })?;
        inner.threads.lock().push(t);
    }
    let listeners = std::mem::take(&mut *inner.tcp.listeners.lock());
    for (id, l) in listeners {
        let inner2 = Arc::clone(inner);
        let h = Arc::clone(&handler);
        let _guard = inner.rt.enter();
        let listener = tokio::net::TcpListener::from_std(l)?;
        let local = listener.local_addr()?;
        inner.rt.spawn(async move {
            let mut stop = inner2.tcp.shutdown.subscribe();
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = stop.changed() => break,
                };
                match accepted {
                    Ok((stream, remote)) => {
                        if inner2.tcp.len() >= inner2.cfg.tcp_max_connections {
                            inner2
                                .stats
                                .tcp
                                .refused_full
                                .fetch_add(1, Ordering::Relaxed);
                            drop(stream);
                            continue;
                        }
                        inner2.stats.tcp.accepted.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nodelay(true);
                        let (tx, rx) = ConnTx::new(inner2.cfg.tcp_send_queue);
                        let cid = inner2.tcp.register(remote, tx.clone());
                        tokio::spawn(run_conn(
                            Arc::clone(&inner2),
                            stream,
                            cid,
                            id,
                            local,
                            remote,
                            tx,
                            rx,
                            Arc::clone(&h),
                        ));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    Ok(())
}

/// Queues `data` on the destination's connection, opening one when there is none.
pub(crate) fn send(inner: &Arc<Inner>, dst: &Destination, data: Bytes) -> Result<(), SendError> {
    let max_bytes = inner.cfg.tcp_send_queue_bytes;
    if let Some(tx) = inner.tcp.sender_for(dst) {
        return tx.try_send(data, max_bytes).inspect_err(|_| {
            inner.stats.tcp.queue_full.fetch_add(1, Ordering::Relaxed);
        });
    }
    if inner.tcp.len() >= inner.cfg.tcp_max_connections {
        inner.stats.tcp.refused_full.fetch_add(1, Ordering::Relaxed);
        return Err(SendError::TooManyConnections);
    }
    let (tx, rx) = ConnTx::new(inner.cfg.tcp_send_queue);
    tx.try_send(data, max_bytes)?;
    let cid = inner.tcp.register(dst.addr, tx.clone());
    let inner2 = Arc::clone(inner);
    let dst = *dst;
    let socket = inner
        .sockets
        .iter()
        .find(|s| s.proto == Proto::Tcp && s.addr.is_ipv4() == dst.addr.is_ipv4())
        .map(|s| (s.id, s.addr));
    inner.rt.spawn(async move {
        let timeout = Duration::from_millis(inner2.cfg.tcp_connect_timeout_ms);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(dst.addr)).await {
            Ok(Ok(s)) => s,
            _ => {
                inner2
                    .stats
                    .tcp
                    .connect_failed
                    .fetch_add(1, Ordering::Relaxed);
                inner2.tcp.remove(cid);
                if let Some(h) = inner2.tcp.handler() {
                    h.on_send_failed(dst);
                }
                return;
            }
        };
        inner2.stats.tcp.connected.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (sid, local) = socket.unwrap_or((SocketId(0), stream.local_addr().unwrap_or(dst.addr)));
        let Some(h) = inner2.tcp.handler() else {
            return;
        };
        run_conn(
            Arc::clone(&inner2),
            stream,
            cid,
            sid,
            local,
            dst.addr,
            tx,
            rx,
            h,
        )
        .await;
    });
    Ok(())
}

impl TcpTable {
    fn handler(&self) -> Option<Arc<dyn Handler>> {
        self.handler.lock().clone()
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_conn(
    inner: Arc<Inner>,
    stream: TcpStream,
    cid: u64,
    socket: SocketId,
    local: SocketAddr,
    remote: SocketAddr,
    tx: ConnTx,
    mut rx: mpsc::Receiver<Bytes>,
    h: Arc<dyn Handler>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let inner_w = Arc::clone(&inner);
    let queued = Arc::clone(&tx.queued);
    // The writer tells the reader when it gives up (error or a peer that stopped reading),
    // so that the connection is closed rather than left half-dead.
    let writer_gone = Arc::new(tokio::sync::Notify::new());
    let gone = Arc::clone(&writer_gone);
    let send_timeout = Duration::from_millis(inner.cfg.tcp_send_timeout_ms.max(1));
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            let n = b.len();
            let r = tokio::time::timeout(send_timeout, wr.write_all(&b)).await;
            queued.fetch_sub(n, Ordering::Relaxed);
            match r {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    inner_w
                        .stats
                        .tcp
                        .send_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            inner_w
                .stats
                .tcp
                .tx_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        gone.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    });
    let idle = Duration::from_secs(inner.cfg.tcp_idle_timeout_s.max(1));
    let mut framer = StreamFramer::with_limits(FramerLimits {
        max_header_bytes: inner.cfg.tcp_max_header_bytes,
        max_body_bytes: inner.cfg.tcp_max_body_bytes,
    });
    let mut buf = BytesMut::with_capacity(4096);
    let mut stop = inner.tcp.shutdown.subscribe();
    let work = inner.tcp.work_tx.lock().clone();
    'conn: loop {
        let n = tokio::select! {
            r = tokio::time::timeout(idle, rd.read_buf(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => n,
                // Idle: nothing read for the idle timeout.
                Err(_) => break,
            },
            _ = writer_gone.notified() => break,
            _ = stop.changed() => break,
        };
        inner
            .stats
            .tcp
            .rx_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(Frame::Message(data))) => {
                    inner.stats.tcp.rx_messages.fetch_add(1, Ordering::Relaxed);
                    let m = Received {
                        data,
                        src: remote,
                        proto: Proto::Tcp,
                        socket,
                        local,
                        conn: Some(ConnId(cid)),
                        queued: Duration::ZERO,
                    };
                    match &work {
                        Some(w) => {
                            if w.send(m).await.is_err() {
                                break 'conn;
                            }
                        }
                        None => break 'conn,
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    // RFC 5626 §4.4.1: answer a CRLFCRLF ping with a CRLF pong.
                    let _ = tx.try_send(Bytes::from_static(b"\r\n"), usize::MAX);
                }
                Ok(None) => break,
                Err(e) => {
                    inner
                        .stats
                        .tcp
                        .framing_errors
                        .fetch_add(1, Ordering::Relaxed);
                    h.on_rejected(remote, Proto::Tcp, e.kind().as_str());
                    // Answer a request whose head we have (413/513/400), then close if the
                    // framer lost the message boundary.
                    if let Some(head) = e.head()
                        && let Ok(req) = SipMessage::parse_lenient(head.clone())
                        && req.is_request()
                    {
                        let mut out = Vec::with_capacity(512);
                        let reason = sip_msg::reason_phrase(e.status());
                        req.write_error_response_raw(e.status(), reason.as_bytes(), None, &mut out);
                        let _ = tx.try_send(Bytes::from(out), usize::MAX);
                    }
                    if e.close() {
                        break 'conn;
                    }
                }
            }
        }
    }
    inner.tcp.remove(cid);
    inner.stats.tcp.closed.fetch_add(1, Ordering::Relaxed);
    drop(tx);
    // Let queued replies drain, but do not wait forever on a stuck peer.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}
