//! The proxy logic: relaying, replies, CANCEL, completion (best response, failure route,
//! next q group), timers. Every function here runs with the transaction locked.

use std::io::Write as _;
use std::time::Instant;

use bytes::Bytes;
use geosip_core::ctx::{MsgCtx, RxInfo, Target};
use geosip_core::fwd::with_out_buf;
use geosip_core::routes::{FailureInfo, ReplyCtx};
use geosip_core::stats::{class_index, method_index};
use sip_msg::{HeaderName, Method, SipMessage};
use sip_transport::Destination;
use sip_txn::{
    CancelAction, ClientTransaction, Event, ResponseDisposition, Rfc2543Fields, TxnKey, TxnKind,
    has_magic_cookie,
};
use smallvec::SmallVec;

use crate::best::{Candidate, aggregates_challenges, best, upstream_status};
use crate::branch::BranchId;
use crate::stats::class;
use crate::table::Open;
use crate::txn::{Branch, ProxyTxn, next_group, split_groups};
use crate::{CURRENT, FAILURE, MAX_BRANCHES, Tm, TmError, TxnGuard, build};

/// RFC 3326 Reason of the CANCELs sent because another branch answered 2xx.
const REASON_2XX: &[u8] = b"SIP;cause=200;text=\"Call completed elsewhere\"";

/// The RFC 2543 matching fields of a request (RFC 3261 §17.2.3).
fn rfc2543_fields(msg: &SipMessage) -> Option<Rfc2543Fields<'_>> {
    Some(Rfc2543Fields {
        method: msg.method_bytes()?,
        request_uri: msg.request_uri_bytes()?,
        to_tag: msg.to_tag().unwrap_or(b""),
        from_tag: msg.from_tag().unwrap_or(b""),
        call_id: msg.call_id()?,
        cseq_number: msg.cseq()?.seq,
        top_via: msg.top_via()?.raw(),
    })
}

/// Whether the request's top Via lacks the RFC 3261 magic cookie (RFC 2543 matching).
pub(crate) fn is_rfc2543(msg: &SipMessage) -> bool {
    !msg.top_via()
        .and_then(|v| v.branch())
        .is_some_and(has_magic_cookie)
}

/// The server-transaction key of a request (RFC 3261 §17.2.3; an ACK yields its INVITE's key).
/// With `cancel_target`, the key of the INVITE a CANCEL cancels (§9.2).
pub(crate) fn request_key(msg: &SipMessage, cancel_target: bool) -> Option<TxnKey> {
    let via = msg.top_via()?;
    let method = msg.method_bytes()?;
    if let Some(branch) = via.branch().filter(|b| has_magic_cookie(b)) {
        let mut sent_by: SmallVec<[u8; 64]> = SmallVec::new();
        sent_by.extend_from_slice(via.host().raw());
        if let Some(p) = via.port() {
            sent_by.push(b':');
            sent_by.extend_from_slice(itoa::Buffer::new().format(p).as_bytes());
        }
        return if cancel_target {
            TxnKey::cancel_target(branch, &sent_by)
        } else {
            TxnKey::for_request(method, branch, &sent_by)
        };
    }
    let f = rfc2543_fields(msg)?;
    Some(if cancel_target {
        TxnKey::cancel_target_rfc2543(&f)
    } else {
        TxnKey::for_request_rfc2543(&f)
    })
}

/// Loads a q group into `ctx`: the first target becomes the R-URI (with its `$du`, Path, q,
/// socket), the others the destination set.
pub(crate) fn load_group(ctx: &mut MsgCtx, group: Vec<Target>) {
    let mut it = group.into_iter();
    if let Some(first) = it.next() {
        ctx.new_ruri = Some(first.uri);
        ctx.dst_uri = first.dst_uri;
        ctx.ruri_path = first.path;
        ctx.ruri_q = first.q;
        if first.socket.is_some() {
            ctx.send_socket = first.socket;
        }
    }
    ctx.branches = it.collect();
}

impl Tm {
    // ----- creating transactions and branches -----

    /// `t_relay` from a request route.
    pub(crate) fn relay_new(&self, ctx: &mut MsgCtx, now: Instant) -> Result<(), TmError> {
        if !ctx.msg.is_request() {
            return Err(TmError::BadRequest);
        }
        match ctx.msg.method() {
            Some(Method::Ack) => return self.core.forward_stateless(ctx).map_err(TmError::from),
            Some(Method::Cancel) => {
                if self.cancel_matching(ctx, now) {
                    ctx.relayed = true;
                    return Ok(());
                }
                return self.core.forward_stateless(ctx).map_err(TmError::from);
            }
            _ => {}
        }
        if ctx.msg.max_forwards() == Some(0) {
            return Err(TmError::TooManyHops);
        }
        if self.core.is_looped(&ctx.msg) {
            return Err(TmError::Loop);
        }
        let key = request_key(&ctx.msg, false).ok_or(TmError::BadRequest)?;
        let mut g = match self.open(ctx, key, is_rfc2543(&ctx.msg), now)? {
            Open::New(g) => g,
            Open::Existing(r) => {
                let mut g = r.lock_arc();
                let fresh = !g.freed
                    && g.branches.is_empty()
                    && g.final_sent.is_none()
                    && !g.canceled
                    && g.req.is_some();
                if !fresh {
                    // A retransmission that raced past pre_request: absorb it.
                    if !g.freed {
                        if g.server.handle_retransmission(now)
                            == sip_txn::RequestDisposition::Absorbed
                        {
                            self.counters.retrans_absorbed.inc();
                        }
                        self.settle(g, now, false);
                    }
                    ctx.relayed = true;
                    return Ok(());
                }
                // Created by t_newtran for this request: relay on it.
                g
            }
        };
        let (group, pending) = split_groups(ctx.targets());
        let mut sent = 0usize;
        let mut last_err = None;
        for target in group {
            match self.add_branch(&mut g, ctx, target, now) {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
        }
        if sent == 0 {
            // Nothing went out: forget the transaction, the caller answers the error.
            self.free(&mut g);
            return Err(last_err.unwrap_or(TmError::AllBranchesDropped));
        }
        g.pending = pending;
        g.on_failure = ctx.on_failure.clone();
        g.on_reply = ctx.on_reply.clone();
        ctx.relayed = true;
        ctx.branches.clear();
        let mut req = ctx.clone();
        req.branches.clear();
        g.req = Some(req);
        if g.is_invite() && self.cfg.auto_inv_100 && !g.provisional_sent {
            // RFC 3261 §16.2 / §17.2.1: stop the caller's INVITE retransmissions.
            if let Some(req) = g.req.take() {
                let _ = self.local_reply(&mut g, &req, 100, None, &[], now);
                g.req = Some(req);
            }
        }
        self.settle(g, now, false);
        Ok(())
    }

    /// `t_relay` from the failure route of `t`: new branches in the same transaction.
    pub(crate) fn relay_in_failure(
        &self,
        t: &mut ProxyTxn,
        ctx: &mut MsgCtx,
        now: Instant,
    ) -> Result<(), TmError> {
        if let Some(status) = t.closed_status() {
            return Err(
                if t.branches.len() >= MAX_BRANCHES && !t.canceled && t.final_sent.is_none() {
                    TmError::TooManyBranches
                } else {
                    TmError::Closed { status }
                },
            );
        }
        let (group, rest) = split_groups(ctx.targets());
        if !rest.is_empty() {
            // Lower q groups of this target set come before what was left of the first one.
            let mut pending = rest;
            pending.append(&mut t.pending);
            pending.sort_by_key(|t| std::cmp::Reverse(t.q));
            pending.truncate(MAX_BRANCHES);
            t.pending = pending;
        }
        t.on_reply = ctx.on_reply.clone();
        let mut sent = 0usize;
        let mut last_err = None;
        for target in group {
            match self.add_branch(t, ctx, target, now) {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
        }
        ctx.branches.clear();
        self.pump(t, now);
        if sent == 0 {
            return Err(last_err.unwrap_or(TmError::AllBranchesDropped));
        }
        ctx.relayed = true;
        Ok(())
    }

    /// Whether `dst` is one of our own listening sockets (forwarding there loops).
    fn is_own_socket(&self, dst: &Destination) -> bool {
        self.core.transports.sockets().iter().any(|s| {
            s.proto == dst.proto
                && s.addr.port() == dst.addr.port()
                && (s.addr.ip() == dst.addr.ip()
                    || (s.addr.ip().is_unspecified() && s.addr.is_ipv4() == dst.addr.is_ipv4()))
        })
    }

    /// Creates, builds and sends one branch. `Ok(false)`: the branch route dropped it.
    /// Nothing is added to `t` on error.
    pub(crate) fn add_branch(
        &self,
        t: &mut ProxyTxn,
        ctx: &MsgCtx,
        mut target: Target,
        now: Instant,
    ) -> Result<bool, TmError> {
        if t.branches.len() >= MAX_BRANCHES {
            return Err(TmError::TooManyBranches);
        }
        let index = t.branches.len() as u8;
        let mut own_edits = None;
        if let Some(name) = ctx.on_branch.as_deref() {
            let mut e = ctx.edits.clone();
            if !self
                .hooks
                .load_full()
                .branch_route(name, ctx, &mut target, &mut e)
            {
                return Ok(false);
            }
            own_edits = Some(e);
        }
        let edits = own_edits.as_ref().unwrap_or(&ctx.edits);
        let dst = self.core.next_hop(ctx, &target).map_err(TmError::NextHop)?;
        if self.is_own_socket(&dst) {
            return Err(TmError::Loop);
        }
        let sock = self
            .core
            .out_socket(ctx, &target, &dst)
            .cloned()
            .ok_or(TmError::NoSocket)?;
        let dst = Destination {
            socket: Some(sock.id),
            ..dst
        };
        let branch = BranchId {
            id: t.id,
            salt: t.salt,
            index,
        }
        .encode();
        let request = with_out_buf(|buf| {
            self.core
                .build_request(ctx, &target, &sock, &branch, edits, buf);
            Bytes::copy_from_slice(buf)
        });
        let mut client = ClientTransaction::new(
            t.kind,
            request.clone(),
            dst.proto.is_reliable(),
            now,
            &self.timers,
        );
        // A stream with no connection yet: the connect happens after this returns, and its
        // failure comes back through `on_send_failed`.
        // Noted before the send: a refused connect on loopback can report back before
        // `send` returns.
        if dst.proto.is_reliable()
            && dst.conn.is_none()
            && self.core.transports.conn_for(&dst.addr).is_none()
        {
            self.note_connecting(dst.addr, t.id, t.salt, index);
        }
        if let Some(first) = client.poll_transmit()
            && self.core.send(&dst, &first).is_err()
        {
            return Err(TmError::Send);
        }
        self.core.stats.tx_requests[method_index(ctx.msg.method())].inc();
        t.branches.push(Branch::new(client, dst, request));
        Ok(true)
    }

    /// Builds and starts the CANCEL of branch `i` (RFC 3261 §9.1), with the transaction's
    /// cancel reason.
    fn start_cancel(&self, t: &mut ProxyTxn, i: usize, now: Instant) {
        let reason = t.cancel_reason.clone();
        let Some(b) = t.branches.get_mut(i) else {
            return;
        };
        if b.cancel.is_some() {
            return;
        }
        let Ok(req) = SipMessage::parse_lenient(b.request.clone()) else {
            return;
        };
        let cancel = with_out_buf(|buf| {
            build::write_cancel(&req, reason.as_deref(), buf).then(|| Bytes::copy_from_slice(buf))
        });
        if let Some(cancel) = cancel {
            b.cancel = Some(ClientTransaction::new(
                TxnKind::NonInvite,
                cancel,
                b.dst.proto.is_reliable(),
                now,
                &self.timers,
            ));
            self.core.stats.tx_requests[method_index(Some(Method::Cancel))].inc();
        }
    }

    /// Cancels every branch but `except` that still waits for a final response: a CANCEL now
    /// if it had a provisional; otherwise the CANCEL waits for one (§9.1) and the branch
    /// counts as 487 in the response context right away.
    fn cancel_branches(&self, t: &mut ProxyTxn, except: Option<usize>, now: Instant) {
        for i in 0..t.branches.len() {
            if Some(i) == except || !t.branches[i].awaiting_final() {
                continue;
            }
            match t.branches[i].client.cancel(now) {
                CancelAction::SendNow => self.start_cancel(t, i, now),
                CancelAction::Deferred => {
                    let b = &mut t.branches[i];
                    if !b.done() {
                        b.status = 487;
                        b.received = false;
                    }
                }
                CancelAction::NotNeeded => {}
            }
        }
    }

    /// A branch timed out (`fr_timer` / `fr_inv_timer`): RFC 3261 §16.8, a CANCEL if it had a
    /// provisional, and a 408 in the response context either way.
    fn branch_timed_out(&self, t: &mut ProxyTxn, i: usize, now: Instant) {
        let invite = t.is_invite();
        let Some(b) = t.branches.get_mut(i) else {
            return;
        };
        let newly = !b.done();
        if newly {
            b.status = 408;
            b.received = false;
        }
        if newly {
            t.branch_timeout = true;
            self.counters.branch_timeouts.inc();
        }
        if invite
            && t.branches[i].client.provisional_received()
            && t.branches[i].client.cancel(now) == CancelAction::SendNow
        {
            self.start_cancel(t, i, now);
        }
    }

    // ----- CANCEL from upstream -----

    /// A CANCEL for a live INVITE transaction: 200 to it, cancel the branches. False when no
    /// transaction matched.
    pub(crate) fn cancel_matching(&self, ctx: &mut MsgCtx, now: Instant) -> bool {
        let Some(r) = request_key(&ctx.msg, true).and_then(|k| self.lookup_key(k)) else {
            return false;
        };
        let mut g = r.lock_arc();
        if g.freed {
            return false;
        }
        // §16.10: "If a response context is found, the element MUST immediately return a 200
        // (OK) response to the CANCEL request." Stateless with a stable To tag, so a
        // retransmitted CANCEL gets the same answer.
        if self.core.reply(ctx, 200, None, &[], None).is_ok() {
            self.counters.local_replies[1].inc();
        }
        if !g.canceled && g.server.is_cancellable() && g.final_sent.is_none() {
            g.canceled = true;
            g.pending.clear();
            self.counters.cancels.inc();
            // RFC 3326: pass the caller's Reason on to the branches.
            g.cancel_reason = ctx
                .msg
                .header_by_name(b"Reason")
                .map(Bytes::copy_from_slice);
            self.cancel_branches(&mut g, None, now);
        }
        self.settle(g, now, false);
        true
    }

    // ----- replies from downstream -----

    pub(crate) fn reply_received(
        &self,
        msg: SipMessage,
        rx: RxInfo,
        now: Instant,
    ) -> Option<SipMessage> {
        let Some(bid) = msg
            .top_via()
            .and_then(|v| v.branch())
            .and_then(BranchId::decode)
        else {
            return Some(msg);
        };
        let stray = |msg: SipMessage| {
            self.counters.stray_replies.inc();
            // A 2xx to an INVITE goes on statelessly (the caller must see it to ACK); a late
            // non-2xx of ours is of no use to anyone upstream.
            let pass = msg.status().is_some_and(|s| (200..300).contains(&s))
                && msg.cseq().is_some_and(|c| c.method == Method::Invite);
            pass.then_some(msg)
        };
        let Some(r) = self.lookup_id(bid.id) else {
            return stray(msg);
        };
        let mut g = r.lock_arc();
        if g.freed {
            return stray(msg);
        }
        if g.salt != bid.salt || usize::from(bid.index) >= g.branches.len() {
            self.counters.forged_replies.inc();
            return None;
        }
        self.branch_reply(&mut g, usize::from(bid.index), msg, rx, now);
        self.settle(g, now, false);
        None
    }

    /// Runs the global reply route and the armed one; false when a provisional is dropped.
    fn reply_routes(&self, t: &ProxyTxn, idx: usize, msg: &SipMessage, rx: RxInfo) -> bool {
        let Some(req) = t.req.as_ref() else {
            return true;
        };
        let hooks = self.hooks.load_full();
        let rc = ReplyCtx {
            msg,
            rx,
            req,
            branch: idx,
        };
        let mut keep = hooks.reply_route("", &rc);
        if let Some(name) = t.on_reply.as_deref() {
            keep &= hooks.reply_route(name, &rc);
        }
        keep
    }

    /// RFC 3261 §16.7 for one response on branch `idx`.
    fn branch_reply(
        &self,
        t: &mut ProxyTxn,
        idx: usize,
        msg: SipMessage,
        rx: RxInfo,
        now: Instant,
    ) {
        let (Some(status), Some(cseq)) = (msg.status(), msg.cseq()) else {
            return;
        };
        if cseq.method == Method::Cancel {
            // The 200 (or error) for our CANCEL: hop by hop, consumed here.
            if let Some(c) = t.branches[idx].cancel.as_mut() {
                let _ = c.handle_response(now, status);
            }
            return;
        }
        let invite = t.is_invite();
        let same_method = match t.req.as_ref().and_then(|r| r.msg.method()) {
            Some(m) => m == cseq.method,
            None => (cseq.method == Method::Invite) == invite,
        };
        if !same_method {
            return;
        }
        t.replied = true;
        let disp = t.branches[idx].client.handle_response(now, status);
        match disp {
            ResponseDisposition::Absorbed => return,
            ResponseDisposition::Stray => {
                if invite && (200..300).contains(&status) {
                    self.relay_up(t, &msg, status, now);
                }
                return;
            }
            ResponseDisposition::PassToTu | ResponseDisposition::PassToTuAndAck => {}
        }
        let keep = self.reply_routes(t, idx, &msg, rx);
        if disp == ResponseDisposition::PassToTuAndAck {
            self.ack_branch(t, idx, &msg, now);
        }
        match status {
            100 => {}
            101..=199 => {
                if invite {
                    if !self.cfg.restart_fr_on_each_reply && t.branches[idx].fr_inv_at.is_none() {
                        t.branches[idx].fr_inv_at = now.checked_add(self.timers.fr_inv_timer);
                    }
                    if keep {
                        self.relay_up(t, &msg, status, now);
                    }
                }
                // Non-INVITE: RFC 4320 §4.2, no provisional other than 100 upstream.
            }
            200..=299 => {
                let b = &mut t.branches[idx];
                if !b.done() {
                    b.status = status;
                    b.received = true;
                }
                let first = !t.got_2xx;
                t.got_2xx = true;
                t.pending.clear();
                // §16.7 step 5: every 2xx is forwarded at once.
                self.relay_up(t, &msg, status, now);
                if invite && first {
                    // §16.7 step 10 / §16.10: the other branches are cancelled.
                    t.cancel_reason = Some(Bytes::from_static(REASON_2XX));
                    self.cancel_branches(t, Some(idx), now);
                }
            }
            _ => {
                if t.branches[idx].done() {
                    // A late final after a local timeout or cancel: ACKed above, no more.
                    return;
                }
                let b = &mut t.branches[idx];
                b.status = status;
                b.received = true;
                b.reply = Some(msg);
                if status >= 600 {
                    // §16.7 step 5: "If a 6xx response is received, it is not immediately
                    // forwarded, but the stateful proxy SHOULD cancel all client pending
                    // transactions ... and it MUST NOT create any new branches".
                    t.got_6xx = true;
                    t.pending.clear();
                    if invite {
                        let mut r: SmallVec<[u8; 32]> = SmallVec::new();
                        let _ = write!(r, "SIP;cause={status}");
                        t.cancel_reason = Some(Bytes::copy_from_slice(&r));
                        self.cancel_branches(t, Some(idx), now);
                    }
                }
            }
        }
    }

    /// Hands the ACK of a non-2xx final to branch `idx`'s client transaction (§17.1.1.3).
    fn ack_branch(&self, t: &mut ProxyTxn, idx: usize, resp: &SipMessage, now: Instant) {
        let b = &mut t.branches[idx];
        let Ok(req) = SipMessage::parse_lenient(b.request.clone()) else {
            return;
        };
        let ack = with_out_buf(|buf| {
            build::write_ack(&req, resp, buf).then(|| Bytes::copy_from_slice(buf))
        });
        if let Some(ack) = ack
            && b.client.send_ack(now, ack)
        {
            self.core.stats.tx_requests[method_index(Some(Method::Ack))].inc();
        }
    }

    /// Relays a received response upstream (our Via removed): provisionals and the first
    /// final through the server transaction; a 2xx to an INVITE always (after a final, or
    /// once the server transaction is gone, straight to the caller).
    fn relay_up(&self, t: &mut ProxyTxn, msg: &SipMessage, status: u16, now: Instant) {
        let invite_2xx = t.is_invite() && (200..300).contains(&status);
        if (t.final_sent.is_some() || t.silent) && !invite_2xx {
            return;
        }
        let bytes = with_out_buf(|buf| {
            build::write_relayed(msg, None, &[], buf);
            Bytes::copy_from_slice(buf)
        });
        self.send_up(t, status, bytes, true, now);
        if status >= 300
            && let Some(tag) = msg.to_tag()
        {
            self.note_final_to_tag(t, None, tag);
        }
    }

    /// Sends a response upstream through the server transaction (which retransmits it).
    fn send_up(&self, t: &mut ProxyTxn, status: u16, bytes: Bytes, relayed: bool, now: Instant) {
        if status >= 200 && t.final_sent.is_none() {
            t.final_sent = Some(status);
            t.final_at = Some(now);
        }
        if status < 200 {
            t.provisional_sent = true;
        }
        match t.server.send_response(now, status, bytes.clone()) {
            Ok(()) => {}
            Err(_) if t.is_invite() && (200..300).contains(&status) => {
                // Every 2xx reaches the caller (RFC 3261 §16.7 step 5, RFC 6026).
                if self.core.send(&t.reply_dst, &bytes).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
        let c = class(status);
        if relayed {
            self.counters.relayed[c].inc();
        } else {
            self.counters.local_replies[c].inc();
        }
        self.core.stats.tx_replies[class_index(status)].inc();
    }

    /// RFC 2543 INVITE transactions: index the ACK key carrying the To tag of our final
    /// (RFC 3261 §17.2.3), so the ACK finds the transaction.
    fn note_final_to_tag(&self, t: &mut ProxyTxn, req: Option<&MsgCtx>, tag: &[u8]) {
        if !t.rfc2543 || !t.is_invite() {
            return;
        }
        let key = {
            let Some(req) = req.or(t.req.as_ref()) else {
                return;
            };
            let Some(f) = rfc2543_fields(&req.msg) else {
                return;
            };
            if !f.to_tag.is_empty() {
                return;
            }
            TxnKey::for_request_rfc2543(&f.with_to_tag(tag))
        };
        self.index_key(t, key);
    }

    /// A locally generated response (t_reply, 100, 408, 487, 500) sent upstream statefully.
    fn local_reply(
        &self,
        t: &mut ProxyTxn,
        req: &MsgCtx,
        status: u16,
        reason: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        now: Instant,
    ) -> Result<(), TmError> {
        let bytes = with_out_buf(|buf| {
            self.core
                .write_reply(
                    &req.msg,
                    &req.rx,
                    &req.via_stamp,
                    status,
                    reason,
                    headers,
                    None,
                    buf,
                )
                .ok()
                .map(|_| Bytes::copy_from_slice(buf))
        })
        .ok_or(TmError::BadRequest)?;
        self.send_up(t, status, bytes, false, now);
        if status >= 300 {
            let tag = self.core.local_to_tag(&req.msg);
            self.note_final_to_tag(t, Some(req), &tag);
        }
        Ok(())
    }

    // ----- t_reply / t_newtran -----

    /// `t_reply` on transaction `t` for its request `req`.
    pub(crate) fn reply_on(
        &self,
        t: &mut ProxyTxn,
        req: &mut MsgCtx,
        status: u16,
        reason: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        now: Instant,
    ) -> Result<(), TmError> {
        if t.final_sent.is_some() || t.server.is_terminated() {
            return Err(TmError::AlreadyReplied);
        }
        self.local_reply(t, req, status, reason, headers, now)?;
        req.replied = Some(status);
        if status >= 200 {
            t.pending.clear();
            if t.is_invite() {
                t.cancel_reason = None;
                self.cancel_branches(t, None, now);
            }
        }
        Ok(())
    }

    /// `t_reply` from a request route.
    pub(crate) fn reply_new(
        &self,
        ctx: &mut MsgCtx,
        status: u16,
        reason: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
        now: Instant,
    ) -> Result<(), TmError> {
        if !ctx.msg.is_request() || ctx.msg.method() == Some(Method::Ack) {
            return Err(TmError::BadRequest);
        }
        let key = request_key(&ctx.msg, false).ok_or(TmError::BadRequest)?;
        let stateless = |ctx: &mut MsgCtx| {
            self.core
                .reply(ctx, status, reason, headers, None)
                .map(|()| self.counters.local_replies[class(status)].inc())
                .map_err(|_| TmError::Send)
        };
        let mut g = match self.open(ctx, key, is_rfc2543(&ctx.msg), now) {
            Ok(Open::New(mut g)) => {
                g.req = Some(ctx.clone());
                g
            }
            Ok(Open::Existing(r)) => {
                let g = r.lock_arc();
                if g.freed {
                    return stateless(ctx);
                }
                g
            }
            // Full table: answer anyway (this is how overload gets its 503).
            Err(TmError::TooManyTransactions { .. }) => return stateless(ctx),
            Err(e) => return Err(e),
        };
        let r = self.reply_on(&mut g, ctx, status, reason, headers, now);
        self.settle(g, now, false);
        r
    }

    pub(crate) fn newtran(&self, ctx: &mut MsgCtx, now: Instant) -> Result<bool, TmError> {
        // With a transaction, running the request again would meet it as a retransmission.
        ctx.park_ok = false;
        if !ctx.msg.is_request() || ctx.msg.method() == Some(Method::Ack) {
            return Err(TmError::BadRequest);
        }
        let key = request_key(&ctx.msg, false).ok_or(TmError::BadRequest)?;
        match self.open(ctx, key, is_rfc2543(&ctx.msg), now)? {
            Open::New(mut g) => {
                g.req = Some(ctx.clone());
                self.settle(g, now, false);
                Ok(true)
            }
            Open::Existing(r) => {
                let mut g = r.lock_arc();
                if !g.freed {
                    if g.server.handle_retransmission(now) == sip_txn::RequestDisposition::Absorbed
                    {
                        self.counters.retrans_absorbed.inc();
                    }
                    self.settle(g, now, false);
                }
                Ok(false)
            }
        }
    }

    // ----- driving -----

    /// Sends what every transaction of `t` queued and reacts to their events, until quiet.
    pub(crate) fn pump(&self, t: &mut ProxyTxn, now: Instant) {
        for _ in 0..8 {
            let mut again = false;
            while let Some(b) = t.server.poll_transmit() {
                if self.core.send(&t.reply_dst, &b).is_err() {
                    t.server.handle_transport_error(now);
                }
            }
            while let Some(ev) = t.server.poll_event() {
                match ev {
                    Event::Timeout | Event::AckTimeout => {
                        self.counters.server_timeouts.inc();
                        tracing::debug!(id = t.id, ?ev, "server transaction timed out");
                    }
                    Event::TransportError => {
                        tracing::debug!(id = t.id, ?ev, "server transaction transport error");
                    }
                    _ => {}
                }
            }
            for i in 0..t.branches.len() {
                let dst = t.branches[i].dst;
                while let Some(b) = t.branches[i].client.poll_transmit() {
                    if self.core.send(&dst, &b).is_err() {
                        t.branches[i].client.handle_transport_error(now);
                    }
                }
                while let Some(ev) = t.branches[i].client.poll_event() {
                    match ev {
                        Event::Timeout => {
                            self.branch_timed_out(t, i, now);
                            again = true;
                        }
                        Event::TransportError => {
                            let b = &mut t.branches[i];
                            if !b.done() {
                                b.status = 503;
                                b.received = false;
                            }
                        }
                        Event::SendCancel => {
                            self.start_cancel(t, i, now);
                            again = true;
                        }
                        Event::AckTimeout | Event::Terminated => {}
                    }
                }
                if let Some(c) = t.branches[i].cancel.as_mut() {
                    while let Some(b) = c.poll_transmit() {
                        if self.core.send(&dst, &b).is_err() {
                            c.handle_transport_error(now);
                        }
                    }
                    while c.poll_event().is_some() {}
                }
            }
            if !again {
                break;
            }
        }
    }

    /// After any input: send, complete (best response / failure route / next group), then
    /// free the transaction or move its timer. Consumes the lock.
    pub(crate) fn settle(&self, mut g: TxnGuard, now: Instant, force: bool) {
        for _ in 0..MAX_BRANCHES + 4 {
            self.pump(&mut g, now);
            if !g.needs_completion() {
                break;
            }
            match self.complete(g, now) {
                Some(back) => g = back,
                None => return,
            }
        }
        if g.needs_completion() {
            self.finish(&mut g, now);
            self.pump(&mut g, now);
        }
        if g.server.is_terminated() && !g.keys.is_empty() {
            self.unindex(&mut g);
        }
        if g.can_free(now, self.wait) {
            self.free(&mut g);
            return;
        }
        self.schedule(&mut g, now, force);
    }

    /// Every branch is done and nothing final went upstream: run the failure route if one is
    /// armed, else try the next q group, else send the best response.
    fn complete(&self, mut g: TxnGuard, now: Instant) -> Option<TxnGuard> {
        let name = g.on_failure.take();
        if let Some(name) = name
            && let Some(mut req) = g.req.take()
        {
            let info = self.failure_info(&g);
            let reply = best(&candidates(&g)).and_then(|i| g.branches[i].reply.clone());
            req.on_failure = None;
            req.replied = None;
            let before = g.branches.len();
            self.counters.failure_routes.inc();
            let hooks = self.hooks.load_full();
            let parked = CURRENT.with(|c| match c.try_borrow_mut() {
                Ok(mut slot) if slot.is_none() => {
                    *slot = Some(g);
                    Ok(())
                }
                _ => Err(g),
            });
            match parked {
                Ok(()) => {
                    FAILURE.with(|f| f.set(Some(info)));
                    hooks.failure_route(&name, &mut req, info, reply.as_ref());
                    FAILURE.with(|f| f.set(None));
                    g = CURRENT.with(|c| c.try_borrow_mut().ok().and_then(|mut s| s.take()))?;
                }
                Err(back) => {
                    // Cannot happen (a failure route inside a failure route); no script.
                    g = back;
                }
            }
            g.on_failure = req.on_failure.take();
            let replied_elsewhere = req.replied.is_some() && g.final_sent.is_none();
            req.branches.clear();
            g.req = Some(req);
            if g.final_sent.is_some() || g.branches.len() > before {
                return Some(g);
            }
            if replied_elsewhere {
                // The script answered statelessly: nothing more from us.
                g.silent = true;
                g.final_at = Some(now);
                return Some(g);
            }
            self.finish(&mut g, now);
            return Some(g);
        }
        // No failure route: serial forking on our own (RFC 3261 §16.6 step 1: "the proxy
        // ... continues to the next group when all branches of a group have failed").
        if g.closed_status().is_none()
            && !g.pending.is_empty()
            && let Some(req) = g.req.take()
        {
            let before = g.branches.len();
            let group = next_group(&mut g.pending);
            for target in group {
                if let Err(e) = self.add_branch(&mut g, &req, target, now) {
                    tracing::debug!(error = %e, "next q group: branch not sent");
                }
            }
            g.req = Some(req);
            if g.branches.len() > before || !g.pending.is_empty() {
                return Some(g);
            }
        }
        self.finish(&mut g, now);
        Some(g)
    }

    fn failure_info(&self, t: &ProxyTxn) -> FailureInfo {
        let status = best(&candidates(t))
            .map(|i| t.branches[i].status)
            .unwrap_or(if t.canceled { 487 } else { 500 });
        FailureInfo {
            status,
            canceled: t.canceled,
            branch_timeout: t.branch_timeout,
            replied: t.replied,
        }
    }

    /// Sends the final response of a transaction whose branches all failed (§16.7 step 6).
    fn finish(&self, t: &mut ProxyTxn, now: Instant) {
        let chosen = best(&candidates(t));
        let received = |i: &usize| t.branches[*i].reply.is_some();
        // §16.10: the INVITE of a cancelled transaction ends with 487 (the callee's if any).
        let relay = if t.canceled {
            chosen.filter(|i| t.branches[*i].status == 487 && received(i))
        } else {
            chosen.filter(received)
        };
        if let Some(i) = relay {
            self.relay_best(t, i, now);
        } else {
            let status = match chosen {
                _ if t.canceled => Some(487),
                Some(i) if t.branches[i].status == 408 && !t.is_invite() => {
                    // RFC 4320 §4.1: "A transaction-stateful SIP element MUST NOT send a
                    // response with Status-Code of 408 to a non-INVITE request." The client
                    // times out on its own.
                    self.counters.silent_non_invite.inc();
                    None
                }
                Some(i) => Some(upstream_status(t.branches[i].status)),
                None => Some(500),
            };
            if let Some(status) = status
                && let Some(req) = t.req.take()
            {
                if status == 408 {
                    self.counters.local_408.inc();
                }
                let _ = self.local_reply(t, &req, status, None, &[], now);
                t.req = Some(req);
            }
        }
        if t.final_sent.is_none() && !t.silent {
            // Nothing went (or could go) upstream: do not wait for it.
            t.silent = true;
            t.final_at = Some(now);
        }
    }

    /// Relays the stored reply of branch `i` as the best response: 503 → 500, and the
    /// challenges of the other 401/407 branches added to a 401/407 (§16.7 steps 6-7).
    fn relay_best(&self, t: &mut ProxyTxn, i: usize, now: Instant) {
        let status = t.branches[i].status;
        let up = upstream_status(status);
        let bytes = {
            let Some(reply) = t.branches[i].reply.as_ref() else {
                return;
            };
            let mut extra: SmallVec<[(&[u8], &[u8]); 4]> = SmallVec::new();
            if aggregates_challenges(status) {
                for (j, b) in t.branches.iter().enumerate() {
                    if j == i || !aggregates_challenges(b.status) {
                        continue;
                    }
                    let Some(r) = b.reply.as_ref() else { continue };
                    for v in r.headers(HeaderName::WwwAuthenticate).take(8) {
                        extra.push((b"WWW-Authenticate", v));
                    }
                    for v in r.headers(HeaderName::ProxyAuthenticate).take(8) {
                        extra.push((b"Proxy-Authenticate", v));
                    }
                }
            }
            let line: Option<&[u8]> =
                (up != status).then_some(b"SIP/2.0 500 Server Internal Error");
            with_out_buf(|buf| {
                build::write_relayed(reply, line, &extra, buf);
                Bytes::copy_from_slice(buf)
            })
        };
        let tag = t.branches[i]
            .reply
            .as_ref()
            .and_then(|r| r.to_tag().map(Bytes::copy_from_slice));
        self.send_up(t, up, bytes, true, now);
        if let Some(tag) = tag {
            self.note_final_to_tag(t, None, &tag);
        }
    }

    // ----- timers -----

    pub(crate) fn run_timers(&self, now: Instant) {
        const BATCH: usize = 32;
        // Bounded work per shard and tick, so one busy shard cannot starve the others; what
        // is left stays due for the next tick.
        const MAX_PER_SHARD: usize = 64 * BATCH;
        for i in 0..crate::SHARDS {
            let mut done = 0;
            while done < MAX_PER_SHARD {
                let mut due: SmallVec<[crate::TxnRef; 32]> = SmallVec::new();
                self.due(i, now, &mut due, BATCH);
                let full = due.len() == BATCH;
                done += due.len();
                for r in due {
                    let mut g = r.lock_arc();
                    if g.freed {
                        continue;
                    }
                    self.fire(&mut g, now);
                    self.settle(g, now, true);
                }
                if !full {
                    break;
                }
            }
        }
    }

    fn fire(&self, t: &mut ProxyTxn, now: Instant) {
        self.counters.timer_fires.inc();
        t.server.handle_timeout(now);
        for i in 0..t.branches.len() {
            let b = &mut t.branches[i];
            b.client.handle_timeout(now);
            if let Some(c) = b.cancel.as_mut() {
                c.handle_timeout(now);
            }
            if let Some(at) = b.fr_inv_at
                && at <= now
            {
                b.fr_inv_at = None;
                if b.awaiting_final() && !b.done() {
                    self.branch_timed_out(t, i, now);
                }
            }
        }
    }
}

/// The response-context candidates of `t`, in branch order.
fn candidates(t: &ProxyTxn) -> SmallVec<[Candidate; 4]> {
    t.branches
        .iter()
        .map(|b| Candidate {
            status: b.status,
            received: b.received && b.reply.is_some(),
        })
        .collect()
}
