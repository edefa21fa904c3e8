//! Where messages go: the next hop of a request from a URI (RFC 3263 in its simplest form:
//! transport from `transport=`, port default 5060/5061, host as IP or resolved by A/AAAA),
//! and the destination of a response from Via (RFC 3261 §18.2.2, RFC 3581).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sip_msg::{Host, Scheme, Uri, Via};
use sip_transport::{Destination, Proto};

use crate::ctx::{RxInfo, ViaStamp};

/// Why a request cannot be sent to a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopError {
    /// The URI does not parse.
    BadUri,
    /// The scheme is not sip/sips (RFC 3261 §16.3 would have answered 416 earlier).
    UnsupportedScheme,
    /// `transport=` names a transport this server does not have.
    UnsupportedTransport,
    /// The host name does not resolve.
    Unresolvable,
}

impl NextHopError {
    /// The SIP status to answer upstream (Kamailio answers 478 for unresolvable targets).
    pub fn status(self) -> u16 {
        match self {
            NextHopError::BadUri => 400,
            NextHopError::UnsupportedScheme => 416,
            NextHopError::UnsupportedTransport => 503,
            NextHopError::Unresolvable => 478,
        }
    }

    /// Reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            NextHopError::BadUri => "Bad Request-URI",
            NextHopError::UnsupportedScheme => "Unsupported URI Scheme",
            NextHopError::UnsupportedTransport => "Transport Not Available",
            NextHopError::Unresolvable => "Unresolvable Destination",
        }
    }
}

const DNS_TTL: Duration = Duration::from_secs(60);
const DNS_CACHE_MAX: usize = 10_000;

/// Cache key (lower-case host, port) → resolved address (or `None`: negative entry) and when.
type DnsCache = HashMap<(Vec<u8>, u16), (Option<SocketAddr>, Instant)>;

/// A small positive/negative cache in front of the system resolver (A/AAAA), so the hot path
/// does not block on DNS for every request to a named host.
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<DnsCache>,
}

impl Resolver {
    /// A resolver with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves `host` (IP literal or name) to one address.
    pub fn resolve(&self, host: &Host<'_>, port: u16) -> Option<SocketAddr> {
        if let Some(ip) = host.ip() {
            return Some(SocketAddr::new(ip, port));
        }
        let name = host.raw().to_ascii_lowercase();
        let now = Instant::now();
        let key = (name, port);
        if let Some((a, at)) = self.cache.lock().get(&key)
            && now.duration_since(*at) < DNS_TTL
        {
            return *a;
        }
        let s = std::str::from_utf8(&key.0).ok()?;
        let a = (s, port).to_socket_addrs().ok().and_then(|mut it| {
            let all: Vec<SocketAddr> = it.by_ref().collect();
            all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
        });
        let mut c = self.cache.lock();
        if c.len() >= DNS_CACHE_MAX {
            c.clear();
        }
        c.insert(key, (a, now));
        a
    }
}

/// Transport a URI asks for: `transport=` parameter, else TLS for `sips:`, else UDP.
pub fn uri_proto(uri: &Uri<'_>) -> Result<Proto, NextHopError> {
    match uri.transport() {
        Some(t) => Proto::from_token(t).ok_or(NextHopError::UnsupportedTransport),
        None if uri.scheme() == Scheme::Sips => Ok(Proto::Tls),
        None => Ok(Proto::Udp),
    }
}

/// The destination of a request sent to `uri` (a Request-URI, a Route or `$du`).
pub fn uri_destination(uri_raw: &[u8], resolver: &Resolver) -> Result<Destination, NextHopError> {
    let uri = Uri::parse(uri_raw).map_err(|_| NextHopError::BadUri)?;
    if !matches!(uri.scheme(), Scheme::Sip | Scheme::Sips) {
        return Err(NextHopError::UnsupportedScheme);
    }
    let proto = uri_proto(&uri)?;
    let port = uri
        .port()
        .unwrap_or(if proto == Proto::Tls { 5061 } else { 5060 });
    let maddr;
    let host = match uri.maddr() {
        Some(m) => {
            maddr = Host::new(m);
            maddr
        }
        None => uri.host(),
    };
    let addr = resolver
        .resolve(&host, port)
        .ok_or(NextHopError::Unresolvable)?;
    Ok(Destination {
        proto,
        addr,
        conn: None,
        socket: None,
    })
}

/// Where to send a response to a request received as `rx` with top Via `via`
/// (RFC 3261 §18.2.2): back on the connection for streams, and when that connection has
/// closed, to the source IP (`received`) at the sent-by port (a new connection: the source
/// port of the old one was ephemeral); otherwise to the source IP, at the source port when
/// rport applies (RFC 3581) or the sent-by port. `maddr` (multicast) is not used.
pub fn reply_destination(rx: &RxInfo, via: &Via<'_>, stamp: &ViaStamp) -> Destination {
    if rx.proto.is_reliable() {
        let default = if rx.proto == Proto::Tls { 5061 } else { 5060 };
        return Destination {
            proto: rx.proto,
            addr: SocketAddr::new(rx.src.ip(), via.port().unwrap_or(default)),
            conn: rx.conn,
            socket: Some(rx.socket),
        };
    }
    let port = match stamp.rport {
        Some(p) => p,
        None => via.port().unwrap_or(5060),
    };
    Destination {
        proto: rx.proto,
        addr: SocketAddr::new(rx.src.ip(), port),
        conn: None,
        socket: Some(rx.socket),
    }
}

/// Where to forward a response whose (new) top Via is `via`: `received` (or the sent-by
/// host) and `rport` (or the sent-by port), over the Via's transport (RFC 3261 §18.2.2 as
/// applied by the proxy, §16.7 step 9).
pub fn via_destination(via: &Via<'_>, resolver: &Resolver) -> Option<Destination> {
    let proto = Proto::from_token(via.transport())?;
    let port_default = if proto == Proto::Tls { 5061 } else { 5060 };
    let port = match via.rport() {
        sip_msg::Rport::Value(p) => p,
        _ => via.port().unwrap_or(port_default),
    };
    let addr = match via
        .received()
        .and_then(|r| std::str::from_utf8(r).ok())
        .and_then(|r| r.parse::<IpAddr>().ok())
    {
        Some(ip) => SocketAddr::new(ip, port),
        None => resolver.resolve(&via.host(), port)?,
    };
    Some(Destination {
        proto,
        addr,
        conn: None,
        socket: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_transport::SocketId;

    #[test]
    fn a_uri_with_transport_tcp_and_no_port_goes_to_5060_over_tcp() {
        let r = Resolver::new();
        let d = uri_destination(b"sip:bob@192.0.2.7;transport=tcp", &r).unwrap();
        assert_eq!(d.proto, Proto::Tcp);
        assert_eq!(d.addr, "192.0.2.7:5060".parse().unwrap());
        let d = uri_destination(b"sip:[2001:db8::1]:5080", &r).unwrap();
        assert_eq!(d.addr, "[2001:db8::1]:5080".parse().unwrap());
        assert_eq!(
            uri_destination(b"tel:+123", &r).unwrap_err(),
            NextHopError::UnsupportedScheme
        );
        assert_eq!(
            uri_destination(b"sip:a@b;transport=foo", &r).unwrap_err(),
            NextHopError::UnsupportedTransport
        );
    }

    #[test]
    fn a_udp_reply_goes_to_the_source_ip_and_to_the_source_port_only_with_rport() {
        let rx = RxInfo {
            src: "192.0.2.9:40000".parse().unwrap(),
            proto: Proto::Udp,
            socket: SocketId(0),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        };
        let via = Via::parse(b"SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1").unwrap();
        let no = ViaStamp::compute(&via, rx.src, false);
        assert_eq!(
            reply_destination(&rx, &via, &no).addr,
            "192.0.2.9:5062".parse().unwrap()
        );
        let forced = ViaStamp::compute(&via, rx.src, true);
        assert_eq!(
            reply_destination(&rx, &via, &forced).addr,
            "192.0.2.9:40000".parse().unwrap()
        );
        let via = Via::parse(b"SIP/2.0/UDP 10.0.0.1:5062;rport;branch=z9hG4bK1").unwrap();
        let asked = ViaStamp::compute(&via, rx.src, false);
        assert_eq!(
            reply_destination(&rx, &via, &asked).addr,
            "192.0.2.9:40000".parse().unwrap()
        );
    }

    #[test]
    fn a_tcp_reply_goes_on_the_connection_else_to_the_source_ip_at_the_sent_by_port() {
        let rx = RxInfo {
            src: "192.0.2.9:40000".parse().unwrap(),
            proto: Proto::Tcp,
            socket: SocketId(0),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: Some(sip_transport::ConnId(7)),
        };
        let via = Via::parse(b"SIP/2.0/TCP 10.0.0.1:5062;rport;branch=z9hG4bK1").unwrap();
        let d = reply_destination(&rx, &via, &ViaStamp::compute(&via, rx.src, true));
        assert_eq!(d.conn, Some(sip_transport::ConnId(7)));
        assert_eq!(d.addr, "192.0.2.9:5062".parse().unwrap());
        let via = Via::parse(b"SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1").unwrap();
        let d = reply_destination(&rx, &via, &ViaStamp::compute(&via, rx.src, true));
        assert_eq!(d.addr, "192.0.2.9:5060".parse().unwrap());
    }

    #[test]
    fn a_response_is_forwarded_to_the_received_and_rport_of_the_next_via() {
        let r = Resolver::new();
        let via = Via::parse(
            b"SIP/2.0/UDP pc.example.com:5062;received=192.0.2.3;rport=3333;branch=z9hG4bK1",
        )
        .unwrap();
        let d = via_destination(&via, &r).unwrap();
        assert_eq!(d.addr, "192.0.2.3:3333".parse().unwrap());
        let via = Via::parse(b"SIP/2.0/TCP 192.0.2.4;branch=z9hG4bK1").unwrap();
        let d = via_destination(&via, &r).unwrap();
        assert_eq!(
            (d.proto, d.addr),
            (Proto::Tcp, "192.0.2.4:5060".parse().unwrap())
        );
    }
}
