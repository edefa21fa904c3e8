//! Building what goes out: our Via and Record-Route values, a forwarded request with every
//! edit applied in one pass (RFC 3261 §16.6), stateless forwarding of requests (§16.11) and
//! responses (§16.7 step 9 without a transaction), and stateless replies (Kamailio's `sl`).

use std::cell::RefCell;
use std::io::Write as _;

use bytes::Bytes;
use sip_msg::{Edits, HeaderName, ResponseBuilder, SipMessage, Uri};
use sip_transport::{Destination, ListenSocket, Proto, SendError};
use smallvec::SmallVec;

use crate::Core;
use crate::ctx::{MsgCtx, Target, ViaStamp, offset_in};
use crate::out::{self, NextHopError};
use crate::stats::{class_index, method_index};

thread_local! {
    /// Serialisation buffer reused by every message built on this thread.
    static OUT: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Runs `f` with this thread's cleared output buffer.
pub fn with_out_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    OUT.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => {
            b.clear();
            f(&mut b)
        }
        // Re-entered (a route built a message while building one): use a fresh buffer.
        Err(_) => f(&mut Vec::with_capacity(1024)),
    })
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ForwardError {
    /// No usable next hop (the status to answer is in the error).
    NextHop(NextHopError),
    /// No local socket for the destination's transport.
    NoSocket,
    /// The send itself failed.
    Send(SendError),
    /// The request is one we already forwarded, back unchanged (RFC 3261 §16.3 step 4).
    Loop,
}

impl ForwardError {
    /// SIP status to answer upstream.
    pub fn status(&self) -> u16 {
        match self {
            ForwardError::NextHop(e) => e.status(),
            ForwardError::NoSocket => 503,
            ForwardError::Send(_) => 503,
            ForwardError::Loop => 482,
        }
    }
}

impl Core {
    /// The host we put in Via / Record-Route for `sock`: `core.advertise`, else its IP.
    pub fn write_host(&self, sock: &ListenSocket, out: &mut Vec<u8>) {
        match &self.cfg.advertise {
            Some(a) => out.extend_from_slice(a.as_bytes()),
            None => match sock.addr {
                std::net::SocketAddr::V4(a) => {
                    let _ = write!(out, "{}", a.ip());
                }
                std::net::SocketAddr::V6(a) => {
                    let _ = write!(out, "[{}]", a.ip());
                }
            },
        }
    }

    /// Our Via value for a request sent from `sock` with `branch`.
    pub fn write_via(&self, sock: &ListenSocket, branch: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"SIP/2.0/");
        out.extend_from_slice(sock.proto.via_token().as_bytes());
        out.push(b' ');
        self.write_host(sock, out);
        let _ = write!(out, ":{};branch=", sock.addr.port());
        out.extend_from_slice(branch);
    }

    /// A Record-Route URI for `sock` (`<sip:host:port;transport=tcp;lr>`), with `;r2=on` for
    /// double record-routing (RFC 5658).
    pub fn write_rr(&self, sock: &ListenSocket, r2: bool, params: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"<sip:");
        self.write_host(sock, out);
        let _ = write!(out, ":{}", sock.addr.port());
        if sock.proto != Proto::Udp {
            out.extend_from_slice(b";transport=");
            out.extend_from_slice(sock.proto.name().as_bytes());
        }
        out.extend_from_slice(b";lr");
        if r2 {
            out.extend_from_slice(b";r2=on");
        }
        out.extend_from_slice(params);
        out.push(b'>');
    }

    /// The next hop of a target (RFC 3261 §16.6 steps 6-7, §16.12): `$du` if set, else the
    /// first Path entry, else a pre-loaded top Route not addressed to us, else the
    /// Request-URI.
    pub fn next_hop(&self, ctx: &MsgCtx, t: &Target) -> Result<Destination, NextHopError> {
        if let Some(du) = &t.dst_uri {
            return out::uri_destination(du, &self.resolver);
        }
        if let Some(path) = &t.path
            && let Some(first) = sip_msg::CommaValues::new(path).next()
            && let Ok(na) = sip_msg::NameAddr::parse(first)
        {
            return out::uri_destination(na.uri_raw(), &self.resolver);
        }
        if !ctx.loose_routed
            && let Some(r) = ctx.msg.top_route()
            && let Ok(u) = r.uri()
            && !self.myself.is_myself_uri(&u)
        {
            return out::uri_destination(r.uri_raw(), &self.resolver);
        }
        out::uri_destination(&t.uri, &self.resolver)
    }

    /// The URI of the pre-loaded top Route when [`next_hop`](Self::next_hop) sends there and
    /// it is a strict router (no `lr`, RFC 2543 style).
    fn strict_next_hop<'m>(&self, ctx: &'m MsgCtx, t: &Target) -> Option<&'m [u8]> {
        if t.dst_uri.is_some() || t.path.is_some() || ctx.loose_routed {
            return None;
        }
        let r = ctx.msg.top_route()?;
        let u = r.uri().ok()?;
        if u.has_lr() || self.myself.is_myself_uri(&u) {
            return None;
        }
        Some(r.uri_raw())
    }

    /// The local socket to send to `dst` from.
    pub fn out_socket(&self, ctx: &MsgCtx, t: &Target, dst: &Destination) -> Option<&ListenSocket> {
        let prefer = t.socket.or(ctx.send_socket).or(Some(ctx.rx.socket));
        self.transports.socket_for(dst.proto, &dst.addr, prefer)
    }

    /// Writes the request of `ctx` as forwarded to target `t` from `sock`, with our Via
    /// (`branch`), the received/rport stamp on the previous top Via, Max-Forwards decremented,
    /// the Path as Route, Record-Route as requested, on top of `base` (the script's edits,
    /// usually `ctx.edits`, or a per-branch copy with the branch route's edits).
    pub fn build_request(
        &self,
        ctx: &MsgCtx,
        t: &Target,
        sock: &ListenSocket,
        branch: &[u8],
        base: &Edits,
        out: &mut Vec<u8>,
    ) {
        let msg = &ctx.msg;
        let mut edits = base.clone();
        stamp_top_via(msg, &ctx.via_stamp, &mut edits);
        let mut v: SmallVec<[u8; 128]> = SmallVec::new();
        {
            // RFC 3261 §16.6 step 8: the branch ends in a hash of what decides where the
            // request goes, so that it is recognised if it comes back unchanged.
            let mut br: SmallVec<[u8; 64]> = SmallVec::from_slice(branch);
            br.push(LOOP_SEP);
            push_hex(&mut br, self.loop_hash(msg, &t.uri));
            let mut tmp = Vec::with_capacity(112);
            self.write_via(sock, &br, &mut tmp);
            v.extend_from_slice(&tmp);
        }
        edits.insert_via(msg, &v);
        match self.strict_next_hop(ctx, t) {
            // RFC 3261 §16.6 step 6: the next hop is a strict router (pre-loaded Route without
            // `lr`): it gets the Request-URI, and our Request-URI becomes the last Route.
            Some(route_uri) => {
                edits.set_request_uri(msg, route_uri);
                edits.remove_top_route(msg);
                let mut r: SmallVec<[u8; 128]> = SmallVec::new();
                r.push(b'<');
                r.extend_from_slice(&t.uri);
                r.push(b'>');
                edits.append_header(msg, b"Route", &r);
            }
            None if msg.request_uri_bytes() != Some(&t.uri[..]) => {
                edits.set_request_uri(msg, &t.uri);
            }
            None => {}
        }
        let mf = msg
            .max_forwards()
            .map(|m| m.saturating_sub(1))
            .unwrap_or(70);
        edits.set_max_forwards(msg, mf);
        if let Some(p) = &t.path {
            edits.add_route_top(msg, p);
        }
        if let Some(rr) = &ctx.record_route {
            let mut val = Vec::with_capacity(128);
            let inbound = self.transports.sockets().get(ctx.rx.socket.0 as usize);
            match inbound {
                // RFC 5658: changing transport or interface needs two entries, the one facing
                // the next hop on top.
                Some(inb) if inb.proto != sock.proto || inb.addr != sock.addr => {
                    self.write_rr(sock, true, &rr.params, &mut val);
                    val.extend_from_slice(b", ");
                    self.write_rr(inb, true, &rr.params, &mut val);
                }
                _ => self.write_rr(sock, false, &rr.params, &mut val),
            }
            edits.add_record_route_top(msg, &val);
        }
        msg.write_with(&edits, out);
    }

    /// The loop hash of a request whose Request-URI is (or will be) `ruri`: over the fields
    /// RFC 3261 §16.6 step 8 names (Request-URI, To tag, From tag, Call-ID, CSeq number,
    /// Proxy-Require, Proxy-Authorization, Route). Of the Route set only the entries that are
    /// not ours count: we remove our own before forwarding, so the set we send and the set a
    /// looped request comes back with agree on them, while a request that spirals through an
    /// application server (our entry, the server's, ours again) arrives with a shorter set
    /// and is told apart.
    pub fn loop_hash(&self, msg: &SipMessage, ruri: &[u8]) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.secret ^ 0x6c6f_6f70);
        h.update(ruri);
        h.update(b"\0");
        h.update(msg.to_tag().unwrap_or(b""));
        h.update(b"\0");
        h.update(msg.from_tag().unwrap_or(b""));
        h.update(b"\0");
        h.update(msg.call_id().unwrap_or(b""));
        h.update(&msg.cseq().map_or(0, |c| c.seq).to_le_bytes());
        for v in msg.headers(HeaderName::ProxyRequire) {
            h.update(v);
            h.update(b"\0");
        }
        for v in msg.headers(HeaderName::ProxyAuthorization) {
            h.update(v);
            h.update(b"\0");
        }
        for r in msg.routes() {
            if r.uri().is_ok_and(|u| !self.myself.is_myself_uri(&u)) {
                h.update(r.uri_raw());
                h.update(b"\0");
            }
        }
        h.digest()
    }

    /// RFC 3261 §16.3 step 4, loop detection: the request carries a Via we inserted whose
    /// loop hash equals the hash of the request as it arrives now, so forwarding it again
    /// would send it where it went before (482). A request that came back changed (a new
    /// Request-URI after a lookup, say) is a spiral and goes on.
    pub fn is_looped(&self, msg: &SipMessage) -> bool {
        // Most requests carry no branch of ours at all: look for our marker in the raw Via
        // lines before parsing any of them.
        let marker = memchr::memmem::Finder::new(b"z9hG4bK");
        let ours = msg.headers(HeaderName::Via).any(|v| {
            marker
                .find_iter(v)
                .any(|at| matches!(v.get(at + 7), Some(b't' | b's')))
        });
        if !ours {
            return false;
        }
        let mut own = None;
        for via in msg.vias() {
            let Some(br) = via.branch() else { continue };
            let Some(sep) = br.len().checked_sub(17) else {
                continue;
            };
            if br[sep] != LOOP_SEP
                || !(br.starts_with(b"z9hG4bKt") || br.starts_with(b"z9hG4bKsl"))
                || !self.myself.is_my_via(&via.host(), via.port())
            {
                continue;
            }
            let h = *own
                .get_or_insert_with(|| self.loop_hash(msg, msg.request_uri_bytes().unwrap_or(b"")));
            let mut want: SmallVec<[u8; 16]> = SmallVec::new();
            push_hex(&mut want, h);
            if br[sep + 1..] == want[..] {
                return true;
            }
        }
        false
    }

    /// Kamailio's `forward()`: sends the request to each target statelessly (RFC 3261
    /// §16.11), with a branch derived from the request so that retransmissions, the CANCEL and
    /// the non-2xx ACK get the same branch.
    pub fn forward_stateless(&self, ctx: &mut MsgCtx) -> Result<(), ForwardError> {
        if self.is_looped(&ctx.msg) {
            return Err(ForwardError::Loop);
        }
        let targets = ctx.targets();
        let mut last_err = None;
        for (i, t) in targets.iter().enumerate() {
            let dst = match self.next_hop(ctx, t) {
                Ok(d) => d,
                Err(e) => {
                    last_err = Some(ForwardError::NextHop(e));
                    continue;
                }
            };
            let Some(sock) = self.out_socket(ctx, t, &dst).cloned() else {
                last_err = Some(ForwardError::NoSocket);
                continue;
            };
            let branch = self.stateless_branch(&ctx.msg, &t.uri, i);
            let res = with_out_buf(|buf| {
                self.build_request(ctx, t, &sock, &branch, &ctx.edits, buf);
                self.send(
                    &Destination {
                        socket: Some(sock.id),
                        ..dst
                    },
                    buf,
                )
            });
            match res {
                Ok(()) => {
                    self.stats.tx_requests[method_index(ctx.msg.method())].inc();
                    ctx.relayed = true;
                }
                Err(e) => last_err = Some(ForwardError::Send(e)),
            }
        }
        if ctx.relayed {
            Ok(())
        } else {
            Err(last_err.unwrap_or(ForwardError::NoSocket))
        }
    }

    /// A branch for stateless forwarding: a hash of the incoming top Via (which carries the
    /// previous hop's branch), the target and a per-process secret.
    pub fn stateless_branch(
        &self,
        msg: &SipMessage,
        target: &[u8],
        i: usize,
    ) -> SmallVec<[u8; 32]> {
        let via = msg.header(HeaderName::Via).unwrap_or(b"");
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.secret);
        h.update(via);
        h.update(target);
        h.update(&(i as u32).to_le_bytes());
        let mut b: SmallVec<[u8; 32]> = SmallVec::new();
        b.extend_from_slice(b"z9hG4bKsl");
        push_hex(&mut b, h.digest());
        b
    }

    /// Forwards a response statelessly: removes our top Via and sends it to the next Via
    /// (RFC 3261 §18.2.2 applied by a proxy). Returns false if it had to be dropped.
    pub fn forward_reply_stateless(&self, msg: &SipMessage) -> bool {
        let mut vias = msg.vias();
        let (Some(_ours), Some(next)) = (vias.next(), vias.next()) else {
            return false;
        };
        let Some(dst) = out::via_destination(&next, &self.resolver) else {
            return false;
        };
        let mut edits = Edits::new();
        edits.remove_top_via(msg);
        let ok = with_out_buf(|buf| {
            msg.write_with(&edits, buf);
            self.send(&dst, buf).is_ok()
        });
        if ok && let Some(s) = msg.status() {
            self.stats.tx_replies[class_index(s)].inc();
        }
        ok
    }

    /// Sends bytes, counting failures.
    pub fn send(&self, dst: &Destination, data: &[u8]) -> Result<(), SendError> {
        let r = self.transports.send(dst, data);
        if r.is_err() {
            self.stats.send_errors.inc();
        }
        r
    }

    /// The To tag of replies we generate to `msg`: stable for a request and its
    /// retransmissions (so a retransmitted request gets an identical answer).
    pub fn local_to_tag(&self, msg: &SipMessage) -> SmallVec<[u8; 20]> {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.secret ^ 0x746f);
        h.update(msg.call_id().unwrap_or(b""));
        h.update(msg.from_tag().unwrap_or(b""));
        h.update(msg.top_via().and_then(|v| v.branch()).unwrap_or(b""));
        let mut b = SmallVec::new();
        push_hex(&mut b, h.digest());
        b
    }

    /// Kamailio's `sl_send_reply`: answers the request of `ctx` statelessly, to the address
    /// RFC 3261 §18.2.2 names, with our To tag, `received`/`rport` on the top Via, the
    /// `Server` header, `headers` and an optional body (content type, bytes).
    pub fn reply(
        &self,
        ctx: &mut MsgCtx,
        status: u16,
        reason: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        body: Option<(&[u8], &[u8])>,
    ) -> Result<(), SendError> {
        let r = with_out_buf(|buf| {
            let dst = self.write_reply(
                &ctx.msg,
                &ctx.rx,
                &ctx.via_stamp,
                status,
                reason,
                headers,
                body,
                buf,
            )?;
            self.send(&dst, buf)
        });
        if r.is_ok() {
            ctx.replied = Some(status);
            self.stats.tx_replies[class_index(status)].inc();
        }
        r
    }

    /// Writes a locally generated reply to `req` into `buf` and returns where it goes.
    #[allow(clippy::too_many_arguments)]
    pub fn write_reply(
        &self,
        req: &SipMessage,
        rx: &crate::ctx::RxInfo,
        stamp: &ViaStamp,
        status: u16,
        reason: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        body: Option<(&[u8], &[u8])>,
        buf: &mut Vec<u8>,
    ) -> Result<Destination, SendError> {
        let via = req.top_via().ok_or(SendError::NoSocket)?;
        let dst = out::reply_destination(rx, &via, stamp);
        let tag = self.local_to_tag(req);
        let mut ipbuf: SmallVec<[u8; 48]> = SmallVec::new();
        let mut b = ResponseBuilder::new(req, status).to_tag(&tag);
        if let Some(r) = reason {
            b = b.reason(r);
        }
        if let Some(ip) = stamp.received {
            let _ = write!(ipbuf, "{ip}");
            b = b.received(&ipbuf);
        }
        if let Some(p) = stamp.rport {
            b = b.rport(p);
        }
        for (n, v) in headers {
            b = b.header(n, v);
        }
        if !self.cfg.server_header.is_empty() {
            b = b.server(self.cfg.server_header.as_bytes());
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        b.write(buf);
        Ok(dst)
    }
}

/// Adds `;received=`/`;rport=` to the top Via of a request being forwarded (the values the
/// response will be routed back with).
pub fn stamp_top_via(msg: &SipMessage, stamp: &ViaStamp, edits: &mut Edits) {
    if stamp.is_empty() {
        return;
    }
    let Some(via) = msg.top_via() else { return };
    let raw = via.raw();
    let Some(start) = offset_in(msg.as_bytes(), raw) else {
        return;
    };
    let mut v: SmallVec<[u8; 256]> = SmallVec::new();
    // Rebuild: sent-protocol and sent-by as received, then every param except the ones we set.
    let params = via.params();
    let params_raw = params.raw();
    // Everything before the parameters (sent-protocol and sent-by), without the `;`.
    let mut head = match offset_in(raw, params_raw) {
        Some(o) if !params_raw.is_empty() => &raw[..o],
        _ => raw,
    };
    while let [rest @ .., b';' | b' ' | b'\t'] = head {
        head = rest;
    }
    v.extend_from_slice(head);
    for p in params.iter() {
        let is_rport = p.name.eq_ignore_ascii_case(b"rport");
        let is_received = p.name.eq_ignore_ascii_case(b"received");
        if (is_rport && stamp.rport.is_some()) || (is_received && stamp.received.is_some()) {
            continue;
        }
        v.push(b';');
        v.extend_from_slice(p.name);
        if let Some(val) = p.value {
            v.push(b'=');
            v.extend_from_slice(val);
        }
    }
    if let Some(ip) = stamp.received {
        let _ = write!(v, ";received={ip}");
    }
    if let Some(p) = stamp.rport {
        let _ = write!(v, ";rport={p}");
    }
    edits.replace_raw(start..start + raw.len(), &v);
}

/// Separates the loop hash from the rest of a branch we generate.
const LOOP_SEP: u8 = b'.';

fn push_hex<const N: usize>(b: &mut SmallVec<[u8; N]>, mut x: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    for i in (0..16).rev() {
        tmp[i] = HEX[(x & 15) as usize];
        x >>= 4;
    }
    b.extend_from_slice(&tmp);
}

/// Whether `uri` (raw) is a SIP/SIPS URI addressed to this server.
pub fn is_uri_myself(core: &Core, uri: &[u8]) -> bool {
    Uri::parse(uri).is_ok_and(|u| core.myself.is_myself_uri(&u))
}

/// A `Bytes` copy of the Request-URI.
pub fn ruri_bytes(msg: &SipMessage) -> Bytes {
    msg.request_uri_bytes()
        .map(Bytes::copy_from_slice)
        .unwrap_or_default()
}

#[cfg(test)]
mod stamp_tests {
    use super::*;
    use bytes::Bytes;

    fn stamped(via: &str, stamp: ViaStamp) -> String {
        let raw = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = SipMessage::parse(Bytes::from(raw)).unwrap();
        let mut e = Edits::new();
        stamp_top_via(&msg, &stamp, &mut e);
        let mut out = Vec::new();
        msg.write_with(&e, &mut out);
        let s = String::from_utf8(out).unwrap();
        s.lines()
            .find(|l| l.starts_with("Via:"))
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_stamp_keeps_sent_by_and_params_and_sets_received_and_rport() {
        let st = ViaStamp {
            received: Some("192.0.2.1".parse().unwrap()),
            rport: Some(40733),
        };
        assert_eq!(
            stamped("SIP/2.0/UDP 10.0.0.1:40733;branch=z9hG4bK1;rport", st),
            "Via: SIP/2.0/UDP 10.0.0.1:40733;branch=z9hG4bK1;received=192.0.2.1;rport=40733"
        );
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 10.0.0.1:5060 ;branch=z9hG4bK1",
                ViaStamp {
                    received: None,
                    rport: Some(7)
                }
            ),
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=7"
        );
    }
}
