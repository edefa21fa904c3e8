//! UDP: a group of sockets per listening address, bound with `SO_REUSEPORT`, one worker thread
//! each, receiving in batches with `recvmmsg`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{DGRAM_BUF, RecvBatch};
use crate::{Handler, Inner, Proto, Received, SocketId, TransportConfig};

pub(crate) struct PendingUdp {
    pub(crate) id: SocketId,
    pub(crate) sockets: Vec<Arc<UdpSocket>>,
}

/// How often a blocked worker wakes up to check for shutdown.
const RECV_TIMEOUT: Duration = Duration::from_millis(250);

fn bind_one(addr: SocketAddr, cfg: &TransportConfig) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Large buffers absorb bursts (a registration storm) instead of dropping in the kernel.
    // The kernel caps them at net.core.rmem_max; best effort.
    let _ = s.set_recv_buffer_size(cfg.udp_rcvbuf);
    let _ = s.set_send_buffer_size(cfg.udp_sndbuf);
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    s.bind(&addr.into())?;
    let s: UdpSocket = s.into();
    if let Err(e) = crate::sys::enable_rx_timestamps(&s) {
        tracing::warn!(error = %e, "no receive timestamps: queueing delay will not be measured");
    }
    Ok(s)
}

/// Binds `n` sockets on `addr` in one `SO_REUSEPORT` group. When `addr` has port 0, the first
/// socket picks the port and the others join it.
pub(crate) fn bind_group(
    addr: SocketAddr,
    n: usize,
    cfg: &TransportConfig,
) -> io::Result<Vec<Arc<UdpSocket>>> {
    let first = bind_one(addr, cfg)?;
    let real = first.local_addr()?;
    let mut v = vec![Arc::new(first)];
    for _ in 1..n.max(1) {
        v.push(Arc::new(bind_one(real, cfg)?));
    }
    Ok(v)
}

pub(crate) fn worker(
    inner: Arc<Inner>,
    sock: Arc<UdpSocket>,
    id: SocketId,
    local: SocketAddr,
    h: Arc<dyn Handler>,
    worker_no: usize,
) {
    let mut batch = RecvBatch::new();
    while !inner.stop.load(Ordering::Relaxed) {
        let n = match batch.recv(&*sock) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                h.on_idle(worker_no);
                continue;
            }
            Err(e) => {
                // ICMP errors reported on the socket (ECONNREFUSED from an earlier send) are
                // not fatal for a connectionless socket.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        // How long the oldest datagram of the batch waited in the socket queue.
        let now = std::time::SystemTime::now();
        let lag = |i: usize| {
            batch
                .stamp(i)
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default()
        };
        h.on_batch(worker_no, n, crate::sys::BATCH, lag(0));
        for i in 0..n {
            let queued = lag(i);
            let Some((data, src, truncated)) = batch.get(i) else {
                continue;
            };
            let Some(src) = src else { continue };
            inner.stats.udp_rx_packets.fetch_add(1, Ordering::Relaxed);
            inner
                .stats
                .udp_rx_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if truncated || data.len() >= DGRAM_BUF {
                inner.stats.udp_rx_truncated.fetch_add(1, Ordering::Relaxed);
                h.on_rejected(src, Proto::Udp, "datagram_too_large");
                continue;
            }
            if data.is_empty() || data.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ' | 0)) {
                // Keep-alive datagrams (CRLF, NUL) from NATed phones: nothing to do.
                continue;
            }
            h.on_message(Received {
                data: Bytes::copy_from_slice(data),
                src,
                proto: Proto::Udp,
                socket: id,
                local,
                conn: None,
                queued,
            });
        }
        h.on_idle(worker_no);
    }
}
