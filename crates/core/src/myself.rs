//! "Is this me?": the addresses and domains this server answers for (Kamailio's `myself`).
//! Used for loose routing (is the top Route mine?), for answering requests addressed to the
//! server itself, and by the registrar to check that an AOR belongs to a served domain.

use std::net::IpAddr;

use sip_msg::{Host, Uri};
use sip_transport::{ListenSocket, Proto};

/// Our listening addresses, advertised name and served domains.
#[derive(Clone, Debug, Default)]
pub struct Myself {
    sockets: Vec<(Proto, IpAddr, u16)>,
    names: Vec<Vec<u8>>,
    domains: Vec<Vec<u8>>,
}

impl Myself {
    /// Built from the bound sockets, `core.advertise` and `core.domains`.
    pub fn new(sockets: &[ListenSocket], advertise: Option<&str>, domains: &[String]) -> Self {
        let mut names: Vec<Vec<u8>> = Vec::new();
        if let Some(a) = advertise {
            names.push(a.to_ascii_lowercase().into_bytes());
        }
        let sockets: Vec<(Proto, IpAddr, u16)> = sockets
            .iter()
            .map(|s| (s.proto, s.addr.ip(), s.addr.port()))
            .collect();
        // A socket bound to 127.0.0.1 is also reached as "localhost".
        if sockets.iter().any(|s| s.1.is_loopback()) {
            names.push(b"localhost".to_vec());
        }
        Myself {
            sockets,
            names,
            domains: domains
                .iter()
                .map(|d| d.to_ascii_lowercase().into_bytes())
                .collect(),
        }
    }

    fn host_is_mine(&self, host: &Host<'_>) -> bool {
        if let Some(ip) = host.ip() {
            return self
                .sockets
                .iter()
                .any(|s| s.1 == ip || (s.1.is_unspecified() && s.1.is_ipv4() == ip.is_ipv4()));
        }
        let h = host.raw();
        self.names
            .iter()
            .chain(self.domains.iter())
            .any(|n| n.eq_ignore_ascii_case(h))
    }

    /// Whether `host[:port]` names this server (port `None` = the default 5060/5061).
    pub fn is_myself(&self, host: &Host<'_>, port: Option<u16>, secure: bool) -> bool {
        if !self.host_is_mine(host) {
            return false;
        }
        let port = port.unwrap_or(if secure { 5061 } else { 5060 });
        self.sockets.iter().any(|s| s.2 == port)
    }

    /// Whether a SIP URI points at this server (loose routing, requests to the server itself).
    pub fn is_myself_uri(&self, uri: &Uri<'_>) -> bool {
        self.is_myself(
            &uri.host(),
            uri.port(),
            uri.scheme_raw().eq_ignore_ascii_case(b"sips"),
        )
    }

    /// Whether `host` is a domain this server serves (registrar AOR check): one of
    /// `core.domains`, the advertised name, or one of our IPs. With no domains configured,
    /// every domain is served (a single-domain installation needs no configuration).
    pub fn is_local_domain(&self, host: &[u8]) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let h = Host::new(host);
        self.host_is_mine(&h)
    }

    /// Whether a Via sent-by (host, port) is one of ours (the top Via of a response must be).
    pub fn is_my_via(&self, host: &Host<'_>, port: Option<u16>) -> bool {
        self.is_myself(host, port, false) || self.is_myself(host, port, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_transport::SocketId;

    fn me() -> Myself {
        let s = vec![ListenSocket {
            id: SocketId(0),
            proto: Proto::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        }];
        Myself::new(&s, Some("proxy.example.com"), &["example.com".into()])
    }

    #[test]
    fn our_ip_port_advertised_name_and_domains_are_myself_but_other_ports_are_not() {
        let m = me();
        assert!(m.is_myself(&Host::new(b"127.0.0.1"), Some(5070), false));
        assert!(!m.is_myself(&Host::new(b"127.0.0.1"), Some(5060), false));
        assert!(m.is_myself(&Host::new(b"PROXY.example.com"), Some(5070), false));
        assert!(m.is_myself(&Host::new(b"example.com"), Some(5070), false));
        assert!(!m.is_myself(&Host::new(b"127.0.0.2"), Some(5070), false));
        assert!(m.is_local_domain(b"example.com"));
        assert!(!m.is_local_domain(b"other.net"));
    }
}
