//! The TCP connection table on loopback: limits an operator sets (idle timeout, connection
//! count, per-connection send queue in bytes, send timeout), connection reuse by address and
//! by alias (RFC 5923), and UDP/TCP delivery to the handler.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sip_transport::{
    Destination, Handler, ListenSpec, Proto, Received, SendError, TransportConfig, Transports,
};

#[derive(Default)]
struct Collect {
    got: Mutex<Vec<Received>>,
}

impl Handler for Collect {
    fn on_message(&self, rx: Received) {
        self.got.lock().push(rx);
    }
}

struct Fixture {
    t: Transports,
    h: Arc<Collect>,
    udp: SocketAddr,
    tcp: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

fn start(cfg: TransportConfig) -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let specs: Vec<ListenSpec> = vec![
        "udp:127.0.0.1:0".parse().unwrap(),
        "tcp:127.0.0.1:0".parse().unwrap(),
    ];
    let t = Transports::bind(
        TransportConfig {
            udp_workers: 1,
            tcp_workers: 1,
            ..cfg
        },
        &specs,
        rt.handle().clone(),
    )
    .unwrap();
    let h = Arc::new(Collect::default());
    t.start(h.clone()).unwrap();
    let udp = t
        .sockets()
        .iter()
        .find(|s| s.proto == Proto::Udp)
        .unwrap()
        .addr;
    let tcp = t
        .sockets()
        .iter()
        .find(|s| s.proto == Proto::Tcp)
        .unwrap()
        .addr;
    Fixture {
        t,
        h,
        udp,
        tcp,
        _rt: rt,
    }
}

fn options(n: usize) -> String {
    format!(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{n}\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: c{n}\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn udp_datagrams_and_framed_tcp_messages_reach_the_handler_with_their_source() {
    let f = start(TransportConfig::default());
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(options(1).as_bytes(), f.udp).unwrap();
    let mut c = TcpStream::connect(f.tcp).unwrap();
    // Two messages in one write, the second split across writes: framing by Content-Length.
    let two = format!("{}{}", options(2), options(3));
    let (a, b) = two.as_bytes().split_at(two.len() - 10);
    c.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b).unwrap();
    eventually("three messages", || f.h.got.lock().len() == 3);
    let got = f.h.got.lock();
    let udp = got.iter().find(|r| r.proto == Proto::Udp).unwrap();
    assert_eq!(udp.src, u.local_addr().unwrap());
    let tcp: Vec<_> = got.iter().filter(|r| r.proto == Proto::Tcp).collect();
    assert_eq!(tcp.len(), 2);
    assert_eq!(tcp[0].src, c.local_addr().unwrap());
    assert_eq!(tcp[0].conn, tcp[1].conn, "one connection");
    assert!(tcp[1].data.ends_with(b"Content-Length: 0\r\n\r\n"));
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let f = start(TransportConfig {
        tcp_idle_timeout_s: 1,
        ..TransportConfig::default()
    });
    let mut c = TcpStream::connect(f.tcp).unwrap();
    eventually("the connection is in the table", || {
        f.t.tcp_connections() == 1
    });
    assert!(
        closed_by_peer(&mut c, Duration::from_secs(5)),
        "closed by the server"
    );
    eventually("the table is empty", || f.t.tcp_connections() == 0);
}

#[test]
fn connections_past_tcp_max_connections_are_refused_and_counted() {
    let f = start(TransportConfig {
        tcp_max_connections: 2,
        ..TransportConfig::default()
    });
    let _a = TcpStream::connect(f.tcp).unwrap();
    let _b = TcpStream::connect(f.tcp).unwrap();
    eventually("two connections", || f.t.tcp_connections() == 2);
    let mut c = TcpStream::connect(f.tcp).unwrap();
    assert!(closed_by_peer(&mut c, Duration::from_secs(5)));
    assert_eq!(f.t.tcp_connections(), 2);
    assert_eq!(f.t.stats().tcp.refused_full.load(Ordering::Relaxed), 1);
    // An outgoing connection is refused the same way, synchronously.
    let dst = Destination {
        proto: Proto::Tcp,
        addr: "127.0.0.1:9".parse().unwrap(),
        conn: None,
        socket: None,
    };
    assert!(matches!(
        f.t.send(&dst, b"x"),
        Err(SendError::TooManyConnections)
    ));
}

#[test]
fn a_peer_that_stops_reading_costs_at_most_the_queue_bytes_and_is_disconnected_by_the_send_timeout()
{
    let f = start(TransportConfig {
        tcp_send_queue_bytes: 64 << 10,
        tcp_send_timeout_ms: 300,
        ..TransportConfig::default()
    });
    // A peer that connects, is known by its address, and never reads.
    let lazy = TcpStream::connect(f.tcp).unwrap();
    let peer = lazy.local_addr().unwrap();
    eventually("connected", || f.t.tcp_connections() == 1);
    let dst = Destination {
        proto: Proto::Tcp,
        addr: peer,
        conn: None,
        socket: None,
    };
    let chunk = vec![b'x'; 16 << 10];
    let mut full = 0u32;
    // The kernel buffers take some megabytes first; meanwhile and after, the queue fills and
    // sends fail; once the kernel buffers are full the writer blocks and times out.
    let end = Instant::now() + Duration::from_secs(20);
    while f.t.stats().tcp.send_timeouts.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < end, "no send timeout");
        match f.t.send(&dst, &chunk) {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                full += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full > 0, "the per-connection byte limit refused sends");
    assert!(f.t.stats().tcp.queue_full.load(Ordering::Relaxed) >= u64::from(full));
    // The stuck connection is gone from the table.
    eventually("disconnected", || f.t.conn_for(&peer).is_none());
    drop(lazy);
}

#[test]
fn a_request_to_a_connection_alias_reuses_the_connection() {
    let f = start(TransportConfig::default());
    let mut c = TcpStream::connect(f.tcp).unwrap();
    c.write_all(options(9).as_bytes()).unwrap();
    eventually("the message", || f.h.got.lock().len() == 1);
    let conn = f.h.got.lock()[0].conn.unwrap();
    let alias: SocketAddr = "127.0.0.1:5999".parse().unwrap();
    assert_eq!(f.t.conn_for(&alias), None);
    f.t.add_alias(conn, alias);
    assert_eq!(f.t.conn_for(&alias), Some(conn));
    let dst = Destination {
        proto: Proto::Tcp,
        addr: alias,
        conn: None,
        socket: None,
    };
    f.t.send(&dst, b"hello over the alias").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 64];
    let n = c.read(&mut b).unwrap();
    assert_eq!(&b[..n], b"hello over the alias");
    assert_eq!(f.t.tcp_connections(), 1, "no new connection was opened");
}

#[test]
fn udp_sends_held_by_corked_leave_together_in_order_when_it_ends() {
    let f = start(TransportConfig::default());
    let peers: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for p in &peers {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let dst = |p: &UdpSocket| Destination {
        proto: Proto::Udp,
        addr: p.local_addr().unwrap(),
        conn: None,
        socket: None,
    };
    let sent0 = f.t.stats().udp_tx_packets.load(Ordering::Relaxed);
    let mut b = [0u8; 2048];
    f.t.corked(|| {
        for i in 0..10 {
            f.t.send(&dst(&peers[0]), options(i).as_bytes()).unwrap();
        }
        peers[0].set_nonblocking(true).unwrap();
        assert!(peers[0].recv(&mut b).is_err(), "held while corked");
        peers[0].set_nonblocking(false).unwrap();
    });
    for i in 0..10 {
        let n = peers[0].recv(&mut b).unwrap();
        assert_eq!(&b[..n], options(i).as_bytes(), "in order");
    }
    // More than one sendmmsg (32) to two peers.
    f.t.corked(|| {
        for i in 0..40 {
            f.t.send(&dst(&peers[i % 2]), options(i).as_bytes())
                .unwrap();
        }
    });
    for (k, p) in peers.iter().enumerate() {
        for i in (k..40).step_by(2) {
            let n = p.recv(&mut b).unwrap();
            assert_eq!(&b[..n], options(i).as_bytes(), "in order");
        }
    }
    assert_eq!(
        f.t.stats().udp_tx_packets.load(Ordering::Relaxed) - sent0,
        50,
        "counted when sent"
    );
}
