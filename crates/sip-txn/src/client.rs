//! Client transactions: RFC 3261 §17.1.1 (INVITE, with RFC 6026's Accepted state) and
//! §17.1.2 (non-INVITE).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::{Events, Outbox, is_valid_status};
use crate::config::after;
use crate::{Event, State, TimerConfig, TxnKind};

/// What the TU does with a response that matched a client transaction
/// ([`ClientTransaction::handle_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseDisposition {
    /// Give the response to the TU (a proxy forwards or stores it per RFC 3261 §16.7).
    PassToTu,
    /// A 300-699 final response to an INVITE, seen for the first time: give it to the TU, which
    /// must build the ACK (it needs this response's To tag) and hand it to
    /// [`ClientTransaction::send_ack`] before it lets go of the transaction. RFC 3261
    /// §17.1.1.2: "the client transaction MUST pass the received response up to the TU, and
    /// the client transaction MUST generate an ACK request, even if the transport is
    /// reliable". §17.1.1.3 says how to build it: Request-URI, Call-ID, From, CSeq number
    /// and the single top Via of the original request, To of the response, method ACK.
    PassToTuAndAck,
    /// A retransmission, a response the state no longer accepts, or a malformed status code:
    /// drop it. (A retransmitted non-2xx final has already queued the ACK again.)
    Absorbed,
    /// The transaction is Terminated: handle the response as if no transaction had matched
    /// (RFC 3261 §17.1.3 / RFC 6026 §7.3).
    Stray,
}

/// What the TU does after asking to cancel an INVITE client transaction
/// ([`ClientTransaction::cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelAction {
    /// A provisional was received and no CANCEL was sent yet: build the CANCEL (RFC 3261 §9.1:
    /// same Request-URI, Call-ID, To, CSeq number and single top Via as the INVITE) and send
    /// it on a new non-INVITE client transaction now. The INVITE transaction now waits at most
    /// `64*T1` for its final response.
    SendNow,
    /// Nothing received yet: the CANCEL must wait for a provisional. The transaction remembers
    /// and emits [`Event::SendCancel`] when one arrives.
    Deferred,
    /// No CANCEL: already sent, a final response was received, the transaction is
    /// terminated, or it is not an INVITE (§9.1: "a CANCEL request SHOULD NOT be sent to
    /// cancel a request other than INVITE").
    NotNeeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    No,
    /// Asked for in Calling; sent when a provisional arrives.
    Requested,
    Sent,
}

/// A client transaction: sends one request and matches its responses.
///
/// RFC 3261 §17.1:
/// > "The client transaction provides its functionality through the maintenance of a state
/// > machine. The TU communicates with the client transaction through a simple interface."
///
/// Sans-I/O, after quinn-proto: the owner feeds it inputs (`handle_response`,
/// `handle_timeout`, `handle_transport_error`, `send_ack`, `cancel`), each with the current
/// time, and after every input drains `poll_transmit()` (bytes to send to the transaction's
/// destination), then `poll_event()`, then re-arms its timer at `poll_timeout()`.
///
/// Every state has a deadline, so every transaction reaches [`State::Terminated`] and emits
/// [`Event::Terminated`] whatever happens (or does not happen) on the network.
#[derive(Debug)]
pub struct ClientTransaction {
    kind: TxnKind,
    state: State,
    reliable: bool,
    request: Bytes,
    ack: Option<Bytes>,
    /// Next retransmission (Timer A or E), and the interval that led to it.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// The deadline that moves the state on: B/F (fr_timer), C (fr_inv_timer), D, K, M, and
    /// the `64*T1` wait after a CANCEL or a Timer C timeout.
    deadline: Option<Instant>,
    /// `max_inv_lifetime` after creation: the latest Timer C may run to.
    max_inv_at: Instant,
    t2: Duration,
    t1_x64: Duration,
    /// Timer D (INVITE) or Timer K (non-INVITE) on an unreliable transport.
    linger: Duration,
    fr_inv: Duration,
    cancel: Cancel,
    provisional_seen: bool,
    final_status: Option<u16>,
    retransmissions: u32,
    outbox: Outbox,
    events: Events,
}

impl ClientTransaction {
    /// Starts a client transaction for `request` (already serialised, top Via with our
    /// branch) and queues it for sending: the first `poll_transmit()` returns it.
    ///
    /// `reliable` is whether the transport is reliable (TCP, TLS, SCTP, WS): RFC 3261
    /// §17.1.1.2: "If an unreliable transport is being used, the client transaction MUST start
    /// timer A with a value of T1" (Timer E likewise for non-INVITE); reliable transports get
    /// no retransmissions and zero Timers D and K.
    pub fn new(
        kind: TxnKind,
        request: Bytes,
        reliable: bool,
        now: Instant,
        config: &TimerConfig,
    ) -> Self {
        let t1 = config.t1();
        let mut outbox = Outbox::default();
        outbox.push(request.clone());
        ClientTransaction {
            kind,
            state: match kind {
                TxnKind::Invite => State::Calling,
                TxnKind::NonInvite => State::Trying,
            },
            reliable,
            request,
            ack: None,
            retransmit_at: if reliable { None } else { Some(after(now, t1)) },
            interval: t1,
            // Timer B / Timer F: "the client transaction MUST set timer B to a value of 64*T1
            // seconds"; Kamailio's fr_timer replaces it when configured.
            deadline: Some(after(now, config.final_response_timeout())),
            max_inv_at: after(now, config.max_inv_lifetime),
            t2: config.t2(),
            t1_x64: config.t1_x64(),
            linger: match kind {
                TxnKind::Invite => config.timer_d,
                TxnKind::NonInvite => config.t4,
            },
            fr_inv: config.fr_inv_timer,
            cancel: Cancel::No,
            provisional_seen: false,
            final_status: None,
            retransmissions: 0,
            outbox,
            events: Events::default(),
        }
    }

    /// INVITE or non-INVITE.
    pub fn kind(&self) -> TxnKind {
        self.kind
    }

    /// The current RFC 3261 / RFC 6026 state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the transaction reached [`State::Terminated`] (the owner frees it once it has
    /// drained `poll_transmit()` and `poll_event()`).
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Whether the transport was declared reliable at creation.
    pub fn is_reliable(&self) -> bool {
        self.reliable
    }

    /// Whether any provisional response was received (the precondition for a CANCEL, §9.1).
    pub fn provisional_received(&self) -> bool {
        self.provisional_seen
    }

    /// The first final status code received, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }

    /// Whether the transaction gave up waiting ([`Event::Timeout`] was emitted).
    pub fn timed_out(&self) -> bool {
        self.events.has_emitted(Event::Timeout)
    }

    /// How many times the request was retransmitted (Timer A / E), for statistics.
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// Feeds a response whose top Via branch and CSeq method matched this transaction
    /// (RFC 3261 §17.1.3, [`TxnKey::for_response`](crate::TxnKey::for_response)) and returns
    /// what the TU does with it.
    ///
    /// INVITE (§17.1.1.2 and RFC 6026 §7.2):
    /// * 1xx in Calling or Proceeding → Proceeding, [`PassToTu`](ResponseDisposition::PassToTu);
    ///   retransmissions stop ("the client transaction SHOULD NOT retransmit the request any
    ///   longer"), `fr_inv_timer` (Timer C) starts, and 101-199 restart it.
    /// * 2xx in Calling or Proceeding → Accepted (Timer M = `64*T1`), `PassToTu`; further 2xx
    ///   in Accepted also `PassToTu` (RFC 6026: "any 2xx responses received while in the
    ///   Accepted state MUST be passed up to the TU"; the TU ACKs them, not the transaction).
    /// * 300-699 in Calling or Proceeding → Completed (Timer D), `PassToTuAndAck`; the same
    ///   in Completed → `Absorbed`, and the ACK is queued again: "Any retransmissions of the
    ///   final response that are received while in the Completed state MUST cause the ACK to
    ///   be re-passed to the transport layer for retransmission, but the newly received
    ///   response MUST NOT be passed up to the TU."
    ///
    /// Non-INVITE (§17.1.2.2): 1xx → Proceeding, `PassToTu`; 200-699 → Completed (Timer K),
    /// `PassToTu`; anything in Completed → `Absorbed`.
    ///
    /// A status outside 100..=699 is `Absorbed` without effect; in Terminated everything is
    /// [`Stray`](ResponseDisposition::Stray).
    pub fn handle_response(&mut self, now: Instant, status: u16) -> ResponseDisposition {
        if self.state == State::Terminated {
            return ResponseDisposition::Stray;
        }
        if !is_valid_status(status) {
            return ResponseDisposition::Absorbed;
        }
        match self.kind {
            TxnKind::Invite => self.invite_response(now, status),
            TxnKind::NonInvite => self.non_invite_response(now, status),
        }
    }

    fn invite_response(&mut self, now: Instant, status: u16) -> ResponseDisposition {
        match (self.state, status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                let first = self.state == State::Calling;
                self.state = State::Proceeding;
                self.provisional_seen = true;
                // §17.1.1.2: in Proceeding "the client transaction SHOULD NOT retransmit the
                // request any longer".
                self.retransmit_at = None;
                if first && self.cancel == Cancel::Requested {
                    self.send_cancel(now);
                    self.events.push(Event::SendCancel);
                } else if (first || status != 100) && self.cancel == Cancel::No && !self.timed_out()
                {
                    // Timer C: armed by the first provisional, reset by 101-199 (§16.7 step 2).
                    self.deadline = Some(after(now, self.fr_inv).min(self.max_inv_at));
                }
                ResponseDisposition::PassToTu
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                self.final_status = Some(status);
                self.state = State::Accepted;
                self.retransmit_at = None;
                // RFC 6026 §7.2: "The client transaction MUST start Timer M ... 64*T1".
                self.deadline = Some(after(now, self.t1_x64));
                ResponseDisposition::PassToTu
            }
            (State::Calling | State::Proceeding, _) => {
                self.final_status = Some(status);
                self.state = State::Completed;
                self.retransmit_at = None;
                // Timer D: "at least 32 seconds for unreliable transports, and a value of zero
                // seconds for reliable transports". Reliable: the transaction terminates as
                // soon as the TU hands over the ACK (send_ack), or at the next timeout check.
                self.deadline = Some(if self.reliable {
                    now
                } else {
                    after(now, self.linger)
                });
                ResponseDisposition::PassToTuAndAck
            }
            // 2xx after a non-2xx or after another 2xx: end-to-end, the TU must see every one.
            (State::Completed | State::Accepted, 200..=299) => ResponseDisposition::PassToTu,
            (State::Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    self.outbox.push(ack.clone());
                }
                ResponseDisposition::Absorbed
            }
            _ => ResponseDisposition::Absorbed,
        }
    }

    fn non_invite_response(&mut self, now: Instant, status: u16) -> ResponseDisposition {
        match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                // Timer E keeps running; when it next fires it is reset to T2 (§17.1.2.2).
                self.state = State::Proceeding;
                self.provisional_seen = true;
                ResponseDisposition::PassToTu
            }
            (State::Trying | State::Proceeding, _) => {
                self.final_status = Some(status);
                self.state = State::Completed;
                self.retransmit_at = None;
                if self.reliable {
                    // Timer K is zero on reliable transports.
                    self.terminate();
                } else {
                    // "The client transaction MUST ... set Timer K to fire in T4 seconds for
                    // unreliable transports".
                    self.deadline = Some(after(now, self.linger));
                }
                ResponseDisposition::PassToTu
            }
            _ => ResponseDisposition::Absorbed,
        }
    }

    /// Hands over the ACK for the 300-699 final response that
    /// [`PassToTuAndAck`](ResponseDisposition::PassToTuAndAck) announced. It is queued for
    /// sending now and again on every retransmitted final response while Completed (Timer D).
    /// On a reliable transport the transaction terminates right after (Timer D is zero).
    ///
    /// Returns `false`, and does nothing, unless this is an INVITE transaction in Completed.
    pub fn send_ack(&mut self, _now: Instant, ack: Bytes) -> bool {
        if self.kind != TxnKind::Invite || self.state != State::Completed {
            return false;
        }
        self.outbox.push(ack.clone());
        self.ack = Some(ack);
        if self.reliable {
            self.terminate();
        }
        true
    }

    /// The TU wants this INVITE cancelled (RFC 3261 §9.1; an upstream CANCEL, another
    /// branch answered, or an [`Event::Timeout`] in Proceeding). Returns what to do; the
    /// CANCEL itself is a separate non-INVITE client transaction the TU creates.
    ///
    /// Once a CANCEL is sent the transaction waits `64*T1` for the final response (normally
    /// 487), instead of whatever Timer C had left: "If there is no final response for the original request in 64*T1
    /// seconds ..., the client SHOULD then consider the original transaction cancelled and
    /// SHOULD destroy the client transaction handling the original request."
    pub fn cancel(&mut self, now: Instant) -> CancelAction {
        if self.kind != TxnKind::Invite {
            return CancelAction::NotNeeded;
        }
        match (self.state, self.cancel) {
            (State::Calling, _) => {
                self.cancel = Cancel::Requested;
                CancelAction::Deferred
            }
            (State::Proceeding, Cancel::No | Cancel::Requested) => {
                self.send_cancel(now);
                CancelAction::SendNow
            }
            _ => CancelAction::NotNeeded,
        }
    }

    fn send_cancel(&mut self, now: Instant) {
        self.cancel = Cancel::Sent;
        // The 64*T1 wait replaces Timer C: the CANCEL is already what Timer C would ask for.
        self.deadline = Some(after(now, self.t1_x64));
    }

    /// Fires every timer due at `now`. Calling it early, late or more than once is harmless:
    /// a timer fires only once its deadline has passed, and a late retransmission timer fires
    /// once (no burst) and is re-armed from `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Terminated {
            return;
        }
        if self.deadline.is_some_and(|d| d <= now) {
            self.on_deadline(now);
        }
        if self.state != State::Terminated && self.retransmit_at.is_some_and(|t| t <= now) {
            self.retransmit(now);
        }
    }

    fn on_deadline(&mut self, now: Instant) {
        match self.state {
            // Timer C (fr_inv_timer / max_inv_lifetime) in Proceeding: tell the TU, which
            // answers 408 upstream and sends a CANCEL (§16.8); stay for 64*T1 to absorb and ACK
            // the 487 or any late final (§9.1).
            State::Proceeding
                if self.kind == TxnKind::Invite
                    && self.cancel == Cancel::No
                    && !self.timed_out() =>
            {
                self.events.push(Event::Timeout);
                self.deadline = Some(after(now, self.t1_x64));
            }
            // Timer B / F (fr_timer), or the 64*T1 wait after a CANCEL / Timer C ran out.
            State::Calling | State::Trying | State::Proceeding => {
                self.events.push(Event::Timeout);
                self.terminate();
            }
            // Timers D, K, M.
            _ => self.terminate(),
        }
    }

    fn retransmit(&mut self, now: Instant) {
        match (self.kind, self.state) {
            (TxnKind::Invite, State::Calling) => {
                // Timer A: "reset the timer with a value of 2*T1 ... the value of A is doubled
                // each time" — no T2 cap for INVITE.
                self.interval = self.interval.saturating_mul(2);
            }
            (TxnKind::NonInvite, State::Trying) => {
                // Timer E in Trying: "reset the timer with a value of MIN(2*T1, T2)".
                self.interval = self.interval.saturating_mul(2).min(self.t2);
            }
            (TxnKind::NonInvite, State::Proceeding) => {
                // Timer E in Proceeding: "Timer E MUST be reset with a value of T2 seconds".
                self.interval = self.t2;
            }
            _ => {
                self.retransmit_at = None;
                return;
            }
        }
        self.outbox.push(self.request.clone());
        self.retransmissions = self.retransmissions.saturating_add(1);
        self.retransmit_at = Some(after(now, self.interval));
    }

    /// The owner's transport reported a fatal error sending this transaction's request (or
    /// ACK): RFC 3261 §17.1.1.2 "the client transaction SHOULD inform the TU ... and the client
    /// transaction SHOULD transition directly to the Terminated state". Emits
    /// [`Event::TransportError`] then [`Event::Terminated`].
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state == State::Terminated {
            return;
        }
        self.events.push(Event::TransportError);
        self.terminate();
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.retransmit_at = None;
        self.deadline = None;
        // Free the buffers now; queued transmissions stay in the outbox.
        self.request = Bytes::new();
        self.ack = None;
        self.events.push(Event::Terminated);
    }

    /// When the owner must next call [`handle_timeout`](Self::handle_timeout); `None` once
    /// Terminated (never `None` before).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.retransmit_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message to send to this transaction's destination: the request (initial
    /// send and retransmissions) or the ACK. Drain it after every input, including after
    /// [`Event::Terminated`].
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outbox.pop()
    }

    /// The next thing the TU must know; see [`Event`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> TimerConfig {
        TimerConfig::default()
    }

    fn invite() -> Bytes {
        Bytes::from_static(b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n")
    }

    fn ack() -> Bytes {
        Bytes::from_static(b"ACK sip:bob@example.com SIP/2.0\r\n\r\n")
    }

    /// Runs every timer up to and including `until`, returning the offsets (from `start`) at
    /// which something was transmitted.
    fn run_until(txn: &mut ClientTransaction, start: Instant, until: Instant) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(m) = txn.poll_transmit() {
            drop(m);
            sent.push(Duration::ZERO);
        }
        while let Some(t) = txn.poll_timeout() {
            if t > until {
                break;
            }
            txn.handle_timeout(t);
            while txn.poll_transmit().is_some() {
                sent.push(t - start);
            }
        }
        sent
    }

    fn drain_events(txn: &mut ClientTransaction) -> Vec<Event> {
        std::iter::from_fn(|| txn.poll_event()).collect()
    }

    #[test]
    fn invite_over_udp_retransmits_at_doubling_intervals_without_a_t2_cap() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        let sent = run_until(&mut txn, start, start + Duration::from_secs(31) + 999 * MS);
        let secs: Vec<f64> = sent.iter().map(|d| d.as_secs_f64()).collect();
        // Intervals 0.5, 1, 2, 4, 8, 16 s.
        assert_eq!(secs, vec![0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
        assert_eq!(txn.retransmissions(), 6);
        assert_eq!(txn.state(), State::Calling);
    }

    #[test]
    fn timer_b_fires_at_sixty_four_t1_with_a_timeout_then_terminated() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        run_until(&mut txn, start, start + Duration::from_secs(32) - MS);
        assert!(drain_events(&mut txn).is_empty());
        assert_eq!(txn.poll_timeout(), Some(start + Duration::from_secs(32)));
        txn.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::Timeout, Event::Terminated]
        );
        assert_eq!(txn.state(), State::Terminated);
        assert_eq!(txn.poll_timeout(), None);
        assert_eq!(
            txn.cancel(start + Duration::from_secs(32)),
            CancelAction::NotNeeded
        );
    }

    #[test]
    fn fr_timer_replaces_timer_b_when_configured() {
        let start = Instant::now();
        let c = TimerConfig {
            fr_timer: Some(Duration::from_secs(30)),
            ..cfg()
        };
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), true, start, &c);
        assert_eq!(txn.poll_timeout(), Some(start + Duration::from_secs(30)));
        txn.handle_timeout(start + Duration::from_secs(30));
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::Timeout, Event::Terminated]
        );
    }

    #[test]
    fn invite_over_a_reliable_transport_is_sent_once_and_never_retransmitted() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), true, start, &cfg());
        let sent = run_until(&mut txn, start, start + Duration::from_secs(60));
        assert_eq!(sent, vec![Duration::ZERO]);
        assert!(txn.is_terminated());
    }

    #[test]
    fn a_provisional_stops_invite_retransmissions_and_starts_fr_inv_timer() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.poll_transmit();
        let t = start + 700 * MS;
        txn.handle_timeout(start + 500 * MS);
        assert!(txn.poll_transmit().is_some());
        assert_eq!(txn.handle_response(t, 100), ResponseDisposition::PassToTu);
        assert_eq!(txn.state(), State::Proceeding);
        assert_eq!(txn.poll_timeout(), Some(t + Duration::from_secs(120)));
        let sent = run_until(&mut txn, start, t + Duration::from_secs(119));
        assert!(sent.is_empty());
    }

    #[test]
    fn fr_inv_timer_restarts_on_each_provisional_other_than_100() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), true, start, &cfg());
        txn.handle_response(start + MS, 100);
        let fr_inv = Duration::from_secs(120);
        assert_eq!(txn.poll_timeout(), Some(start + MS + fr_inv));
        let t = start + Duration::from_secs(10);
        txn.handle_response(t, 100);
        assert_eq!(
            txn.poll_timeout(),
            Some(start + MS + fr_inv),
            "a 100 does not restart Timer C"
        );
        txn.handle_response(t, 180);
        assert_eq!(txn.poll_timeout(), Some(t + fr_inv));
        let t2 = t + Duration::from_secs(30);
        txn.handle_response(t2, 183);
        assert_eq!(txn.poll_timeout(), Some(t2 + fr_inv));
    }

    #[test]
    fn max_inv_lifetime_caps_fr_inv_restarts() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), true, start, &cfg());
        let t = start + Duration::from_secs(100);
        txn.handle_response(t, 180);
        assert_eq!(txn.poll_timeout(), Some(start + Duration::from_secs(180)));
    }

    #[test]
    fn fr_inv_timeout_asks_for_cancel_then_absorbs_and_acks_the_late_487() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.poll_transmit();
        txn.handle_response(start + MS, 180);
        let fire = start + MS + Duration::from_secs(120);
        txn.handle_timeout(fire);
        assert_eq!(drain_events(&mut txn), vec![Event::Timeout]);
        assert_eq!(txn.state(), State::Proceeding);
        assert!(txn.timed_out());
        assert_eq!(txn.cancel(fire), CancelAction::SendNow);
        assert_eq!(txn.cancel(fire), CancelAction::NotNeeded, "only one CANCEL");
        // Provisionals no longer restart anything.
        txn.handle_response(fire + MS, 180);
        assert_eq!(txn.poll_timeout(), Some(fire + Duration::from_secs(32)));
        // The 487 arrives: it goes to the TU (which already answered 408) and is ACKed.
        let t = fire + Duration::from_secs(1);
        assert_eq!(
            txn.handle_response(t, 487),
            ResponseDisposition::PassToTuAndAck
        );
        assert!(txn.send_ack(t, ack()));
        assert_eq!(txn.poll_transmit(), Some(ack()));
        assert_eq!(txn.state(), State::Completed);
        run_until(&mut txn, start, t + Duration::from_secs(32));
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_cancelled_invite_without_final_response_terminates_after_sixty_four_t1() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), true, start, &cfg());
        txn.handle_response(start, 180);
        let t = start + Duration::from_secs(5);
        assert_eq!(txn.cancel(t), CancelAction::SendNow);
        assert_eq!(txn.poll_timeout(), Some(t + Duration::from_secs(32)));
        txn.handle_timeout(t + Duration::from_secs(32));
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::Timeout, Event::Terminated]
        );
    }

    #[test]
    fn cancel_before_any_provisional_is_deferred_until_one_arrives() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        assert_eq!(txn.cancel(start), CancelAction::Deferred);
        assert!(drain_events(&mut txn).is_empty());
        let t = start + Duration::from_secs(2);
        assert_eq!(txn.handle_response(t, 100), ResponseDisposition::PassToTu);
        assert_eq!(drain_events(&mut txn), vec![Event::SendCancel]);
        assert_eq!(txn.cancel(t), CancelAction::NotNeeded);
        assert_eq!(txn.poll_timeout(), Some(t + Duration::from_secs(32)));
    }

    #[test]
    fn cancel_is_not_needed_for_non_invite_or_after_a_final_response() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), false, start, &cfg());
        assert_eq!(txn.cancel(start), CancelAction::NotNeeded);
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.handle_response(start, 486);
        assert_eq!(txn.cancel(start), CancelAction::NotNeeded);
    }

    #[test]
    fn the_ack_for_a_non_2xx_is_sent_once_and_again_on_each_retransmitted_final() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.poll_transmit();
        let t = start + Duration::from_secs(1);
        assert_eq!(
            txn.handle_response(t, 486),
            ResponseDisposition::PassToTuAndAck
        );
        assert_eq!(txn.poll_transmit(), None, "no ACK until the TU builds it");
        assert!(txn.send_ack(t, ack()));
        assert_eq!(txn.poll_transmit(), Some(ack()));
        assert_eq!(txn.poll_transmit(), None);
        for i in 1..=3u64 {
            assert_eq!(
                txn.handle_response(t + Duration::from_secs(i), 486),
                ResponseDisposition::Absorbed
            );
            assert_eq!(txn.poll_transmit(), Some(ack()));
            assert_eq!(txn.poll_transmit(), None);
        }
        // No request retransmissions in Completed.
        let sent = run_until(&mut txn, start, t + Duration::from_secs(31));
        assert!(sent.is_empty());
        assert_eq!(
            txn.poll_timeout(),
            Some(t + Duration::from_secs(32)),
            "Timer D"
        );
        txn.handle_timeout(t + Duration::from_secs(32));
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_non_2xx_over_a_reliable_transport_terminates_once_the_ack_is_handed_over() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), true, start, &cfg());
        txn.poll_transmit();
        assert_eq!(
            txn.handle_response(start, 603),
            ResponseDisposition::PassToTuAndAck
        );
        assert_eq!(txn.poll_timeout(), Some(start), "Timer D is zero");
        assert!(txn.send_ack(start, ack()));
        assert!(txn.is_terminated());
        assert_eq!(
            txn.poll_transmit(),
            Some(ack()),
            "the ACK is still sent after termination"
        );
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_2xx_passes_to_the_tu_and_the_invite_waits_in_accepted_for_timer_m() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.poll_transmit();
        txn.handle_response(start + MS, 180);
        let t = start + Duration::from_secs(3);
        assert_eq!(txn.handle_response(t, 200), ResponseDisposition::PassToTu);
        assert_eq!(txn.state(), State::Accepted);
        assert_eq!(txn.final_status(), Some(200));
        // Retransmitted 2xx and 2xx from other forks all reach the TU; nothing is ACKed here.
        assert_eq!(
            txn.handle_response(t + MS, 200),
            ResponseDisposition::PassToTu
        );
        assert_eq!(
            txn.handle_response(t + MS, 183),
            ResponseDisposition::Absorbed
        );
        assert_eq!(
            txn.handle_response(t + MS, 486),
            ResponseDisposition::Absorbed
        );
        assert_eq!(txn.poll_transmit(), None);
        assert_eq!(txn.poll_timeout(), Some(t + Duration::from_secs(32)));
        txn.handle_timeout(t + Duration::from_secs(32));
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
        assert_eq!(
            txn.handle_response(t + Duration::from_secs(33), 200),
            ResponseDisposition::Stray
        );
    }

    #[test]
    fn non_invite_timer_e_doubles_up_to_t2_and_is_reset_to_t2_after_a_provisional() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), false, start, &cfg());
        let sent = run_until(&mut txn, start, start + Duration::from_secs(12));
        let secs: Vec<f64> = sent.iter().map(|d| d.as_secs_f64()).collect();
        // 0.5, 1, 2, 4, then capped at T2 = 4 s.
        assert_eq!(secs, vec![0.0, 0.5, 1.5, 3.5, 7.5, 11.5]);

        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), false, start, &cfg());
        txn.poll_transmit();
        txn.handle_timeout(start + 500 * MS);
        txn.poll_transmit();
        assert_eq!(
            txn.handle_response(start + 600 * MS, 100),
            ResponseDisposition::PassToTu
        );
        assert_eq!(txn.state(), State::Proceeding);
        let sent = run_until(&mut txn, start, start + Duration::from_secs(14));
        let secs: Vec<f64> = sent.iter().map(|d| d.as_secs_f64()).collect();
        // The pending E (1.5 s) fires, then every T2.
        assert_eq!(secs, vec![1.5, 5.5, 9.5, 13.5]);
    }

    #[test]
    fn non_invite_timer_f_times_out_even_after_a_provisional() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), false, start, &cfg());
        txn.handle_response(start + Duration::from_secs(1), 100);
        run_until(&mut txn, start, start + Duration::from_secs(32));
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::Timeout, Event::Terminated]
        );
    }

    #[test]
    fn non_invite_final_response_waits_timer_k_and_absorbs_retransmissions() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), false, start, &cfg());
        txn.poll_transmit();
        let t = start + Duration::from_secs(1);
        assert_eq!(txn.handle_response(t, 200), ResponseDisposition::PassToTu);
        assert_eq!(txn.state(), State::Completed);
        assert_eq!(
            txn.handle_response(t + MS, 200),
            ResponseDisposition::Absorbed
        );
        assert_eq!(
            txn.poll_timeout(),
            Some(t + Duration::from_secs(5)),
            "Timer K = T4"
        );
        let sent = run_until(&mut txn, start, t + Duration::from_secs(5));
        assert!(sent.is_empty());
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn non_invite_final_over_a_reliable_transport_terminates_at_once() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), true, start, &cfg());
        assert_eq!(
            txn.handle_response(start, 404),
            ResponseDisposition::PassToTu
        );
        assert!(txn.is_terminated());
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_transport_error_informs_the_tu_and_terminates() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.handle_transport_error(start);
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::TransportError, Event::Terminated]
        );
        txn.handle_transport_error(start);
        assert_eq!(drain_events(&mut txn), vec![]);
    }

    #[test]
    fn malformed_status_codes_are_absorbed_without_effect() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        for s in [0, 99, 700, 999, u16::MAX] {
            assert_eq!(txn.handle_response(start, s), ResponseDisposition::Absorbed);
        }
        assert_eq!(txn.state(), State::Calling);
    }

    #[test]
    fn send_ack_is_refused_outside_completed() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::Invite, invite(), false, start, &cfg());
        txn.poll_transmit();
        assert!(!txn.send_ack(start, ack()));
        txn.handle_response(start, 200);
        assert!(!txn.send_ack(start, ack()));
        assert_eq!(txn.poll_transmit(), None);
    }

    #[test]
    fn a_late_timeout_call_retransmits_once_rather_than_in_a_burst() {
        let start = Instant::now();
        let mut txn = ClientTransaction::new(TxnKind::NonInvite, invite(), false, start, &cfg());
        txn.poll_transmit();
        let late = start + Duration::from_secs(20);
        txn.handle_timeout(late);
        assert!(txn.poll_transmit().is_some());
        assert_eq!(txn.poll_transmit(), None);
        assert_eq!(txn.poll_timeout(), Some(late + Duration::from_secs(1)));
    }
}
