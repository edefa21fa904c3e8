//! `lookup()`, `registered()`, `unregister()`: routing a request to the registered contacts.

use bytes::Bytes;
use geosip_core::ctx::{MsgCtx, Target};
use geosip_usrloc::{Binding, Transport};
use sip_msg::{Scheme, Uri};
use sip_transport::{Proto, SocketId};

use crate::Registrar;
use crate::aor::{AorError, canonical_aor};
use crate::format::received_uri;

/// `lookup` found contacts (the Request-URI and the branches are set).
pub const LOOKUP_FOUND: i32 = 1;
/// `lookup` found no live contact: the script answers 404 or 480.
pub const LOOKUP_NOT_FOUND: i32 = -1;
/// `lookup` failed (location store error, Request-URI without an AOR, unknown table).
pub const LOOKUP_ERROR: i32 = -3;

fn proto_of(t: Transport) -> Option<Proto> {
    match t {
        Transport::Udp => Some(Proto::Udp),
        Transport::Tcp => Some(Proto::Tcp),
        Transport::Tls => Some(Proto::Tls),
        Transport::Ws => Some(Proto::Ws),
        Transport::Wss => Some(Proto::Wss),
        Transport::Sctp => None,
    }
}

impl Registrar {
    /// Where a request to binding `b` must really go when its contact cannot be trusted to
    /// reach the phone (NAT): the address the REGISTER came from. The rule:
    ///
    /// * never when `use_received` is off or the binding has a Path (the first Path hop, the
    ///   edge proxy next to the phone, deals with NAT, RFC 3327);
    /// * always when the REGISTER came over TCP/TLS/WS/WSS: requests must reuse that flow;
    /// * over UDP, when the contact's host is a private, shared or link-local address
    ///   (RFC 1918, RFC 6598, RFC 3927, RFC 4193, fe80::/10) other than the source IP: the
    ///   phone sits behind NAT and put its inside address in Contact (Kamailio's
    ///   `nat_uac_test` flag 1 with `fix_nated_register`). A contact naming a public address
    ///   or a host name is trusted, so third-party registrations (a registration agent
    ///   registering phones, SIPp) keep working.
    pub(crate) fn nat_destination(&self, b: &Binding) -> Option<String> {
        if !self.cfg.use_received || !b.path.is_empty() {
            return None;
        }
        let r = b.received.as_ref()?;
        if r.transport != Transport::Udp {
            return Some(received_uri(r));
        }
        let uri = Uri::parse(&b.contact).ok()?;
        if !matches!(uri.scheme(), Scheme::Sip | Scheme::Sips) {
            return None;
        }
        let ip = uri.host().ip()?.to_canonical();
        (is_inside_address(ip) && ip != r.source.ip().to_canonical()).then(|| received_uri(r))
    }

    /// The local socket the REGISTER arrived on, if it is still one of ours.
    fn socket_of(&self, b: &Binding) -> Option<SocketId> {
        let r = b.received.as_ref()?;
        let proto = proto_of(r.transport)?;
        self.core
            .transports
            .sockets()
            .iter()
            .find(|s| s.proto == proto && s.addr == r.local)
            .map(|s| s.id)
    }

    /// The branch for binding `b`.
    pub fn target_for(&self, b: &Binding) -> Target {
        Target {
            uri: b.contact.clone(),
            dst_uri: self.nat_destination(b).map(Bytes::from),
            path: (!b.path.is_empty()).then(|| b.path.clone()),
            q: b.q,
            socket: self.socket_of(b),
            flags: b.flags,
        }
    }

    /// [`lookup`](Self::lookup) at an explicit time (unix ms).
    pub fn lookup_at(&self, ctx: &mut MsgCtx, table: &str, now_ms: u64) -> i32 {
        let m = &self.metrics;
        if table != crate::TABLE {
            self.log_bad(
                ctx,
                &format!(
                    "lookup: unknown location table `{table}` (only `{}`)",
                    crate::TABLE
                ),
            );
            m.lookups_error.inc();
            return LOOKUP_ERROR;
        }
        let aor = match canonical_aor(ctx.ruri(), self.cfg.case_sensitive_user) {
            Ok(a) => a,
            Err(AorError::Scheme | AorError::NoUser) => {
                m.lookups_not_found.inc();
                return LOOKUP_NOT_FOUND;
            }
            Err(_) => {
                m.lookups_error.inc();
                return LOOKUP_ERROR;
            }
        };
        let bindings = match self.loc.lookup(&aor, now_ms) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(target: "geosip_registrar", aor = %String::from_utf8_lossy(&aor), error = %e, "lookup failed");
                m.lookups_error.inc();
                return LOOKUP_ERROR;
            }
        };
        let mut targets = bindings.iter().map(|b| self.target_for(b));
        let Some(first) = targets.next() else {
            m.lookups_not_found.inc();
            return LOOKUP_NOT_FOUND;
        };
        ctx.new_ruri = Some(first.uri);
        if first.path.is_some() {
            // The first Path hop is the next hop (core's next_hop); an earlier $du must not
            // bypass it.
            ctx.dst_uri = None;
        } else if first.dst_uri.is_some() {
            ctx.dst_uri = first.dst_uri;
        }
        ctx.ruri_q = first.q;
        ctx.ruri_path = first.path;
        if first.socket.is_some() {
            ctx.send_socket = first.socket;
        }
        ctx.branches.extend(targets);
        m.lookups_found.inc();
        LOOKUP_FOUND
    }

    /// [`registered`](Self::registered) at an explicit time (unix ms).
    pub fn registered_at(
        &self,
        ctx: &MsgCtx,
        table: &str,
        aor: Option<&[u8]>,
        now_ms: u64,
    ) -> bool {
        if table != crate::TABLE {
            return false;
        }
        let Ok(aor) = canonical_aor(aor.unwrap_or(ctx.ruri()), self.cfg.case_sensitive_user) else {
            return false;
        };
        match self.loc.registered(&aor, now_ms) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "geosip_registrar", error = %e, "registered(): location store failed");
                false
            }
        }
    }

    /// [`unregister`](Self::unregister) at an explicit time (unix ms).
    pub fn unregister_at(&self, table: &str, aor: &[u8], now_ms: u64) -> i32 {
        if table != crate::TABLE {
            return -1;
        }
        let Ok(aor) = canonical_aor(aor, self.cfg.case_sensitive_user) else {
            return -1;
        };
        match self.loc.unregister(&aor, now_ms) {
            Ok(0) => -3,
            Ok(n) => {
                self.metrics.deleted.add(n as u64);
                1
            }
            Err(e) => {
                tracing::warn!(target: "geosip_registrar", aor = %String::from_utf8_lossy(&aor), error = %e, "unregister failed");
                -2
            }
        }
    }
}

/// Addresses that only mean something inside a private network.
fn is_inside_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => {
            let o = v.octets();
            v.is_private() || v.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v) => {
            let s = v.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}
