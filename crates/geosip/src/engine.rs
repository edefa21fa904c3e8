//! The message pipeline: what happens to every message the transports hand over.
//!
//! ```text
//! bytes ─▶ parse (lenient) ─┬─ response ─▶ validate ─▶ top Via ours? ─▶ tm (transaction)
//!                           │                                        └▶ stateless forward
//!                           └─ request ──▶ validate (400/505) ─▶ stamp Via (received/rport)
//!                                          ─▶ tm pre-check (retransmission, CANCEL, ACK)
//!                                          ─▶ request_route() of the Lua script
//! ```

use std::sync::{Arc, Weak};
use std::time::Instant;

use geosip_auth::Auth;
use geosip_core::Core;
use geosip_core::ctx::{MsgCtx, RxInfo, ViaStamp};
use geosip_core::stats::{class_index, method_index};
use geosip_lua::ScriptEngine;
use geosip_pike::{Class, Protect, Verdict};
use geosip_tm::{Pre, Tm};
use sip_msg::{Method, SipMessage};
use sip_transport::{Destination, Handler, Proto, Received};

/// The core's implementation of the transport [`Handler`].
pub struct Engine {
    pub core: Arc<Core>,
    pub script: Arc<ScriptEngine>,
    pub tm: Arc<Tm>,
    pub protect: Arc<Protect>,
    pub auth: Arc<Auth>,
    /// `overload.stale_ms`: new requests queued longer than this are dropped.
    pub stale: std::time::Duration,
    /// Itself, for requests set aside while their subscriber is read ([`Engine::resume`]).
    pub me: Weak<Engine>,
}

impl Engine {
    fn log_bad(&self, src: std::net::SocketAddr, what: &str, reason: &str) {
        if self.core.loglim.allow(src.ip(), Instant::now()) {
            tracing::info!(%src, reason, "{what}");
        }
    }

    /// Answers `status` to a request that never reaches the script (it failed validation or
    /// is too large), straight from the received bytes. When the top Via itself is unusable
    /// the answer goes back to the packet's source.
    fn reply_raw(&self, msg: &SipMessage, info: &RxInfo, status: u16) {
        let reason = sip_msg::reason_phrase(status).as_bytes();
        let dst = match msg.top_via() {
            Some(via) => {
                let stamp = ViaStamp::compute(&via, info.src, self.core.cfg.force_rport);
                geosip_core::out::reply_destination(info, &via, &stamp)
            }
            None => Destination {
                proto: info.proto,
                addr: info.src,
                conn: info.conn,
                socket: Some(info.socket),
            },
        };
        let tag = self.core.local_to_tag(msg);
        let sent = geosip_core::fwd::with_out_buf(|buf| {
            msg.write_error_response_raw(status, reason, Some(&tag), buf);
            self.core.send(&dst, buf)
        });
        if sent.is_ok() {
            self.core.stats.tx_replies[class_index(status)].inc();
        }
    }

    /// A request: `resumed` when it runs again after a batched subscriber read (it was
    /// counted and admitted the first time).
    fn on_request(&self, msg: SipMessage, info: RxInfo, now: Instant, resumed: bool) {
        let stats = &self.core.stats;
        if !resumed {
            stats.rx_requests[method_index(msg.method())].inc();
            // Admission first: flood, rate-limit and overload decisions need only the method,
            // the To tag and the source, and shedding must cost as little as possible, so they
            // come before validation and everything else (in-dialog requests are never shed).
            let verdict = self.protect.check_msg(&msg, info.src.ip(), now);
            if verdict != Verdict::Accept {
                if let Some(via) = msg.top_via() {
                    let stamp = ViaStamp::compute(&via, info.src, self.core.cfg.force_rport);
                    let mut ctx = MsgCtx::new(msg, info, now, stamp);
                    self.protect.respond(&self.core, &mut ctx, verdict);
                }
                return;
            }
        }
        // A resumed request is the same bytes that passed validation before it was parked.
        if let Err(e) = if resumed { Ok(()) } else { msg.validate() } {
            stats.parse_error(e.kind().as_str());
            self.log_bad(info.src, "bad request", e.kind().as_str());
            // Answer 400 (505 for the version) unless it is an ACK (RFC 3261 §8.2, §17.2.1).
            // When the top Via itself is unusable the answer goes back to the packet's source.
            if msg.method() != Some(Method::Ack) {
                self.reply_raw(&msg, &info, e.status());
            } else {
                stats.dropped_requests.inc();
            }
            return;
        }
        let Some(via) = msg.top_via() else {
            stats.dropped_requests.inc();
            return;
        };
        if let Some(conn) = info.conn
            && self.core.transports.accepts_aliases()
            && via.params().contains(b"alias")
            && let Some(alias) = sent_by_addr(&via)
            && alias.ip() == info.src.ip()
        {
            // RFC 5923 §5: requests to the sent-by reuse this connection. Only a port of the
            // connection's own IP is taken: a peer cannot capture another host's traffic.
            self.core.transports.add_alias(conn, alias);
        }
        let stamp = ViaStamp::compute(&via, info.src, self.core.cfg.force_rport);
        let mut ctx = Box::new(MsgCtx::new(msg, info, now, stamp));
        if self.tm.pre_request(&mut ctx) == Pre::Handled {
            return;
        }
        if !resumed && let Some((user, domain)) = self.auth.prefetch(&self.core, &ctx.msg) {
            // Credentials of a user not cached: the script runs once its subscriber is.
            self.park(ctx, &user, &domain);
            return;
        }
        ctx.park_ok = !resumed;
        ctx.resumed = resumed;
        let mut ctx = self.script.run_request_boxed(ctx);
        if let Some((user, domain)) = ctx.park.take() {
            if ctx.replied.is_none() && !ctx.relayed {
                self.park(ctx, &user, &domain);
            }
            return;
        }
        if ctx.replied.is_none() && !ctx.relayed && !ctx.is_method(b"ACK") {
            tracing::trace!(method = %String::from_utf8_lossy(ctx.method()), "request left unanswered by the script");
        }
    }

    /// Sets the request of `ctx` aside until `user@domain` is cached; then it runs again
    /// ([`resume`](Self::resume)). The parsed message moves with it: its buffer is the
    /// datagram's own (the transport copies each one out of its receive batch), so nothing is
    /// copied or parsed twice.
    fn park(&self, ctx: Box<MsgCtx>, user: &[u8], domain: &[u8]) {
        let Some(me) = self.me.upgrade() else { return };
        let info = ctx.rx;
        let msg = ctx.msg;
        let size = msg.as_bytes().len();
        self.auth
            .park(user, domain, size, Box::new(move || me.resume(msg, info)));
    }

    /// Runs a request set aside by [`park`](Self::park) again, on the batch reader's thread
    /// or on the SIP worker that ran its batch.
    fn resume(&self, msg: SipMessage, info: RxInfo) {
        self.on_request(msg, info, Instant::now(), true);
    }

    fn on_response(&self, msg: SipMessage, info: RxInfo) {
        let stats = &self.core.stats;
        if let Some(s) = msg.status() {
            stats.rx_replies[class_index(s)].inc();
        }
        if let Err(e) = msg.validate() {
            stats.parse_error(e.kind().as_str());
            stats.dropped_replies.inc();
            self.log_bad(info.src, "bad response dropped", e.kind().as_str());
            return;
        }
        if let Err(e) = msg.check_response() {
            stats.parse_error(e.kind().as_str());
            stats.dropped_replies.inc();
            return;
        }
        // A response is only ours to handle if we put its top Via there.
        let mine = msg
            .top_via()
            .is_some_and(|v| self.core.myself.is_my_via(&v.host(), v.port()));
        if !mine {
            stats.dropped_replies.inc();
            return;
        }
        let Some(msg) = self.tm.on_reply(msg, info) else {
            return;
        };
        // No transaction: a stateless forward of ours (or a late 2xx retransmission). The
        // script's global reply_route sees it first and may drop it.
        if !self.script.run_stateless_reply(&msg, info) {
            return;
        }
        if !self.core.forward_reply_stateless(&msg) {
            stats.dropped_replies.inc();
        }
    }
}

impl Handler for Engine {
    fn on_message(&self, rx: Received) {
        let now = Instant::now();
        let info = RxInfo::of(&rx);
        let rx_queued = rx.queued;
        let msg = match SipMessage::parse_lenient(rx.data) {
            Ok(m) => m,
            Err(e) => {
                // Not even a start line and headers: nothing to answer to.
                self.core.stats.parse_error(e.kind().as_str());
                self.core.stats.dropped_requests.inc();
                self.log_bad(info.src, "unparseable message dropped", e.kind().as_str());
                return;
            }
        };
        if info.proto == Proto::Udp && msg.as_bytes().len() > self.core.cfg.max_message_bytes {
            // core.max_message_bytes (RFC 3261 §18.1.1: big requests belong on TCP): 513 to a
            // request, drop a response.
            self.core.stats.parse_error("too_large");
            self.log_bad(
                info.src,
                "datagram over core.max_message_bytes",
                "too_large",
            );
            if msg.is_request() && msg.method() != Some(Method::Ack) {
                self.reply_raw(&msg, &info, 513);
            } else if msg.is_request() {
                self.core.stats.dropped_requests.inc();
            } else {
                self.core.stats.dropped_replies.inc();
            }
            return;
        }
        if msg.is_response() {
            self.on_response(msg, info);
        } else if !self.stale.is_zero()
            && rx_queued >= self.stale
            && Class::of(&msg) != Class::InDialog
            && !self.protect.is_whitelisted(info.src.ip())
        {
            // Waited past the client's retransmission timer: its retransmission is queued
            // behind it. Dropping the old copy keeps the queue short in a storm.
            self.core.stats.stale_drops.inc();
        } else {
            self.on_request(msg, info, now, false);
        }
    }

    fn on_batch(
        &self,
        worker: usize,
        received: usize,
        capacity: usize,
        queued: std::time::Duration,
    ) {
        let now = Instant::now();
        let o = self.protect.overload();
        o.report_batch(worker, received, capacity, queued, now);
    }

    fn on_idle(&self, _worker: usize) {
        // Requests parked for a batched read of the embedded table run here when due.
        if let Some(b) = self.auth.batch() {
            b.run_due();
        }
    }

    fn on_send_failed(&self, dst: Destination) {
        self.tm.on_send_failed(&dst);
    }

    fn on_rejected(&self, src: std::net::SocketAddr, proto: Proto, reason: &'static str) {
        self.core.stats.parse_error(reason);
        self.log_bad(
            src,
            if proto == Proto::Udp {
                "datagram rejected"
            } else {
                "stream message rejected"
            },
            reason,
        );
    }
}

/// The Via sent-by as a socket address, when it is an IP literal (port 5060 when absent).
fn sent_by_addr(via: &sip_msg::Via<'_>) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = std::str::from_utf8(via.host().unbracketed())
        .ok()?
        .parse()
        .ok()?;
    Some(std::net::SocketAddr::new(ip, via.port().unwrap_or(5060)))
}
