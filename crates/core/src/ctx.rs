//! The per-message context routing scripts and modules work on (Kamailio's `sip_msg_t` plus
//! its pseudo-variables: `$ru`, `$du`, the destination set, flags).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use sip_msg::{Edits, Rport, SipMessage, Via};
use sip_transport::{ConnId, Proto, Received, SocketId};
use smallvec::SmallVec;

/// Where and how a message arrived.
#[derive(Clone, Copy, Debug)]
pub struct RxInfo {
    /// Source address (`$si:$sp`).
    pub src: SocketAddr,
    /// Transport (`$pr`).
    pub proto: Proto,
    /// Listening socket it arrived on.
    pub socket: SocketId,
    /// Local address of that socket (`$Ri:$Rp`).
    pub local: SocketAddr,
    /// Connection, for streams.
    pub conn: Option<ConnId>,
}

impl RxInfo {
    /// The receive metadata of a [`Received`].
    pub fn of(rx: &Received) -> Self {
        RxInfo {
            src: rx.src,
            proto: rx.proto,
            socket: rx.socket,
            local: rx.local,
            conn: rx.conn,
        }
    }
}

/// What the server stamps on the top Via of a request on receipt (RFC 3261 §18.2.1,
/// RFC 3581 §4): `received` when the sent-by host is not the packet's source IP, `rport`
/// when the client asked for it or `core.force_rport` is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViaStamp {
    /// The source IP, when it differs from the sent-by host.
    pub received: Option<IpAddr>,
    /// The source port, when rport applies.
    pub rport: Option<u16>,
}

impl ViaStamp {
    /// Computes the stamp for `via` received from `src`.
    pub fn compute(via: &Via<'_>, src: SocketAddr, force_rport: bool) -> ViaStamp {
        let received = match via.host().ip() {
            Some(ip) if ip == src.ip() => None,
            _ => Some(src.ip()),
        };
        let rport = match via.rport() {
            Rport::Absent if !force_rport => None,
            _ => Some(src.port()),
        };
        ViaStamp { received, rport }
    }

    /// Whether anything needs to be written.
    pub fn is_empty(&self) -> bool {
        self.received.is_none() && self.rport.is_none()
    }
}

/// One target of the destination set (Kamailio's branch: `append_branch`, `lookup`).
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Request-URI for this branch.
    pub uri: Bytes,
    /// Next hop overriding the URI (`$du`), e.g. the received address of a NATed contact.
    pub dst_uri: Option<Bytes>,
    /// Path vector (RFC 3327) to push as Route headers, raw comma-separated values.
    pub path: Option<Bytes>,
    /// q-value in per mille (1000 = q=1.0); drives serial forking by q groups.
    pub q: u16,
    /// Send from this local socket.
    pub socket: Option<SocketId>,
    /// Branch flags (per-branch `setbflag`).
    pub flags: u32,
}

impl Target {
    /// A target with just a Request-URI, q = 1.0.
    pub fn uri(uri: Bytes) -> Self {
        Target {
            uri,
            dst_uri: None,
            path: None,
            q: 1000,
            socket: None,
            flags: 0,
        }
    }
}

/// Record-Route requested by `rr.record_route()`; written per branch when forwarding because
/// double record-routing (RFC 5658) depends on the outgoing socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordRoute {
    /// Extra URI parameters (`;ftag=...`), raw, starting with `;` (may be empty).
    pub params: Vec<u8>,
}

/// The per-request processing state. Cloned into a transaction by `t_relay` so that failure
/// routes see the request as it was relayed.
#[derive(Clone)]
pub struct MsgCtx {
    /// The message as received.
    pub msg: SipMessage,
    /// Receive metadata.
    pub rx: RxInfo,
    /// When processing started.
    pub at: Instant,
    /// The Via stamp computed on receipt (requests only).
    pub via_stamp: ViaStamp,
    /// Header edits requested by the script; applied to every branch.
    pub edits: Edits,
    /// New Request-URI (`$ru` assignments), if changed.
    pub new_ruri: Option<Bytes>,
    /// Destination URI (`$du`): where to send, regardless of the Request-URI.
    pub dst_uri: Option<Bytes>,
    /// Additional branches (the destination set, Kamailio's `dset`).
    pub branches: SmallVec<[Target; 2]>,
    /// q of the Request-URI branch (per mille) when it came from `lookup`.
    pub ruri_q: u16,
    /// Path of the Request-URI branch when it came from `lookup`.
    pub ruri_path: Option<Bytes>,
    /// Message flags (`setflag`/`isflagset`).
    pub flags: u32,
    /// Record-Route requested.
    pub record_route: Option<RecordRoute>,
    /// Local socket to send from (`force_send_socket`).
    pub send_socket: Option<SocketId>,
    /// Status of the reply we sent, if any.
    pub replied: Option<u16>,
    /// Whether the request was relayed (statefully or statelessly).
    pub relayed: bool,
    /// Whether `loose_route` consumed a Route header addressed to us (in-dialog request).
    pub loose_routed: bool,
    /// Identity established by digest authentication (user, domain), for the script and the
    /// registrar's ownership check.
    pub auth_user: Option<(Bytes, Bytes)>,
    /// Failure route armed with `t_on_failure` (a script function name).
    pub on_failure: Option<std::sync::Arc<str>>,
    /// Branch route armed with `t_on_branch`.
    pub on_branch: Option<std::sync::Arc<str>>,
    /// Reply route armed with `t_on_reply`.
    pub on_reply: Option<std::sync::Arc<str>>,
    /// The request may be set aside while its subscriber is read (batched reads, see the auth
    /// module): a fresh request in `request_route` that has no transaction, reply or relay yet.
    pub park_ok: bool,
    /// Set aside: the script stopped and the request runs again once this subscriber (user,
    /// domain) is cached.
    pub park: Option<(Bytes, Bytes)>,
    /// This is such a second run: side effects of the first (flood counters) are not repeated.
    pub resumed: bool,
}

impl MsgCtx {
    /// A fresh context for `msg`.
    pub fn new(msg: SipMessage, rx: RxInfo, at: Instant, via_stamp: ViaStamp) -> Self {
        MsgCtx {
            msg,
            rx,
            at,
            via_stamp,
            edits: Edits::new(),
            new_ruri: None,
            dst_uri: None,
            branches: SmallVec::new(),
            ruri_q: 1000,
            ruri_path: None,
            flags: 0,
            record_route: None,
            send_socket: None,
            replied: None,
            relayed: false,
            loose_routed: false,
            auth_user: None,
            on_failure: None,
            on_branch: None,
            on_reply: None,
            park_ok: false,
            park: None,
            resumed: false,
        }
    }

    /// The current Request-URI (`$ru`): the rewritten one, or the one received.
    pub fn ruri(&self) -> &[u8] {
        match &self.new_ruri {
            Some(u) => u,
            None => self.msg.request_uri_bytes().unwrap_or(b""),
        }
    }

    /// The method bytes (`$rm`); empty for a response.
    pub fn method(&self) -> &[u8] {
        self.msg.method_bytes().unwrap_or(b"")
    }

    /// Whether the method is `m` (case-sensitive, RFC 3261 §7.1).
    pub fn is_method(&self, m: &[u8]) -> bool {
        self.method() == m
    }

    /// The targets to forward to: the Request-URI branch first, then the destination set.
    pub fn targets(&self) -> SmallVec<[Target; 2]> {
        let mut v = SmallVec::new();
        v.push(Target {
            uri: match &self.new_ruri {
                Some(u) => u.clone(),
                None => self
                    .msg
                    .request_uri_bytes()
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default(),
            },
            dst_uri: self.dst_uri.clone(),
            path: self.ruri_path.clone(),
            q: self.ruri_q,
            socket: self.send_socket,
            flags: 0,
        });
        v.extend(self.branches.iter().cloned());
        v
    }

    /// Sets `flag` (0..=31).
    pub fn set_flag(&mut self, flag: u32) {
        if flag < 32 {
            self.flags |= 1 << flag;
        }
    }

    /// Clears `flag`.
    pub fn reset_flag(&mut self, flag: u32) {
        if flag < 32 {
            self.flags &= !(1 << flag);
        }
    }

    /// Whether `flag` is set.
    pub fn is_flag_set(&self, flag: u32) -> bool {
        flag < 32 && self.flags & (1 << flag) != 0
    }
}

/// Byte offset of `part` inside `whole`, when `part` is a sub-slice of it (accessors return
/// borrowed views of the message buffer, so edits can be placed by offset).
pub fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let w = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    (p >= w && p + part.len() <= w + whole.len()).then(|| p - w)
}
