//! Server transactions: RFC 3261 §17.2.1 (INVITE, with RFC 6026's Accepted state) and
//! §17.2.2 (non-INVITE).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::common::{Events, Outbox, is_valid_status};
use crate::config::after;
use crate::{Event, SendError, State, TimerConfig, TxnKind};

/// What the owner does with a request that matched a server transaction
/// ([`ServerTransaction::handle_retransmission`], [`ServerTransaction::handle_ack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestDisposition {
    /// Consumed by the transaction (a retransmission, or the ACK for a non-2xx final); any
    /// response to resend is queued for `poll_transmit()`. Do not pass it to the TU.
    Absorbed,
    /// Pass it to the TU: the ACK for a 2xx that matched the INVITE transaction in Accepted
    /// (RFC 6026 §7.1, Figure 7: "ACK / to TU"). A proxy routes it on statelessly.
    PassToTu,
    /// Behave as if nothing matched: the transaction is Terminated, or an ACK matched a
    /// non-INVITE transaction.
    NoTransaction,
}

/// A server transaction: absorbs retransmitted requests and reliably delivers the TU's
/// responses.
///
/// RFC 3261 §17.2:
/// > "Server transactions are responsible for the delivery of requests to the TU and the
/// > reliable transmission of responses. It accomplishes this through a state machine."
///
/// The owner creates one when a request matches no transaction, passes the request to the TU
/// itself, and then feeds the transaction: `handle_retransmission` / `handle_ack` for
/// requests that matched it, `send_response` for the TU's responses, `handle_timeout`,
/// `handle_transport_error`; after every input it drains `poll_transmit()` (responses to
/// send back to the request's source, per RFC 3261 §18.2.2), `poll_event()`, and re-arms its
/// timer at `poll_timeout()`.
///
/// The INVITE server transaction does not send 100 (Trying) by itself (it has no bytes to
/// build one from): RFC 3261 §17.2.1 "the server transaction MUST generate a 100 (Trying)
/// response unless it knows that the TU will generate a provisional or final response within
/// 200 ms" — the proxy TU sends it through [`send_response`](Self::send_response) right away.
///
/// RFC 3261 lets a server transaction wait for its TU forever; this one gives up after
/// [`TimerConfig::server_guard`] with [`Event::Timeout`] so that a stuck TU cannot leak
/// transactions. Every state therefore has a deadline, and every path ends in
/// [`Event::Terminated`].
#[derive(Debug)]
pub struct ServerTransaction {
    kind: TxnKind,
    state: State,
    reliable: bool,
    /// The most recent provisional, or the non-2xx final, to resend on a retransmission.
    last_response: Option<Bytes>,
    final_status: Option<u16>,
    /// Timer G.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Guard, H, I, J, L.
    deadline: Option<Instant>,
    t1: Duration,
    t2: Duration,
    t4: Duration,
    t1_x64: Duration,
    retransmissions: u32,
    outbox: Outbox,
    events: Events,
}

impl ServerTransaction {
    /// Creates the server transaction for a request that matched none; the owner hands the
    /// request to the TU. INVITE starts in Proceeding (§17.2.1: "When a server transaction is
    /// constructed for a request, it enters the Proceeding state"), non-INVITE in Trying
    /// (§17.2.2: "The state machine is initialized in the Trying state").
    ///
    /// `reliable`: whether the request arrived over a reliable transport. Unreliable gets
    /// Timer G retransmissions; reliable gets zero Timers I and J.
    pub fn new(kind: TxnKind, reliable: bool, now: Instant, config: &TimerConfig) -> Self {
        ServerTransaction {
            kind,
            state: match kind {
                TxnKind::Invite => State::Proceeding,
                TxnKind::NonInvite => State::Trying,
            },
            reliable,
            last_response: None,
            final_status: None,
            retransmit_at: None,
            interval: config.t1(),
            deadline: Some(after(now, config.server_guard(kind))),
            t1: config.t1(),
            t2: config.t2(),
            t4: config.t4,
            t1_x64: config.t1_x64(),
            retransmissions: 0,
            outbox: Outbox::default(),
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

    /// Whether the transaction reached [`State::Terminated`].
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Whether the request arrived over a reliable transport.
    pub fn is_reliable(&self) -> bool {
        self.reliable
    }

    /// The final status code the TU sent, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }

    /// How many times a response was resent (retransmitted requests and Timer G).
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// Whether a CANCEL that matched this transaction
    /// ([`TxnKey::cancel_target`](crate::TxnKey::cancel_target)) still has an effect: an
    /// INVITE with no final response sent yet. RFC 3261 §9.2: "If the UAS has already sent a
    /// final response for the original request, the CANCEL request has no effect on the
    /// processing of the original request"; otherwise a UAS "SHOULD immediately respond to the
    /// INVITE with a 487", and a proxy cancels its pending branches (§16.10). Either way the
    /// CANCEL itself is answered 200 on its own non-INVITE server transaction.
    pub fn is_cancellable(&self) -> bool {
        self.kind == TxnKind::Invite && self.state == State::Proceeding
    }

    /// A retransmission of the request that created this transaction arrived.
    ///
    /// * Trying: discarded ("any further request retransmissions are discarded");
    /// * Proceeding: "the most recent provisional response that was received from the TU MUST
    ///   be passed to the transport layer for retransmission";
    /// * Completed: the final response is resent ("the server transaction MUST pass the final
    ///   response to the transport layer for retransmission");
    /// * Confirmed, Accepted: absorbed (RFC 6026 §7.1: "While in the Accepted state, any
    ///   retransmissions of the INVITE received will be absorbed by the server transaction.
    ///   They will not be passed up to the TU.").
    pub fn handle_retransmission(&mut self, _now: Instant) -> RequestDisposition {
        match self.state {
            State::Terminated => RequestDisposition::NoTransaction,
            State::Proceeding | State::Completed => {
                if let Some(r) = &self.last_response {
                    self.outbox.push(r.clone());
                    self.retransmissions = self.retransmissions.saturating_add(1);
                }
                RequestDisposition::Absorbed
            }
            _ => RequestDisposition::Absorbed,
        }
    }

    /// An ACK matched this INVITE transaction (its key maps ACK to INVITE, §17.2.3).
    ///
    /// * Completed → Confirmed: "If an ACK is received while the server transaction is in the
    ///   Completed state, the server transaction MUST transition to the Confirmed state";
    ///   Timer G stops, Timer I (T4, zero on reliable transports) starts. `Absorbed`.
    /// * Confirmed: absorbed ("absorb any additional ACK messages that might arrive").
    /// * Accepted: [`PassToTu`](RequestDisposition::PassToTu) (the ACK for the 2xx).
    /// * Proceeding (no final yet): absorbed.
    pub fn handle_ack(&mut self, now: Instant) -> RequestDisposition {
        if self.kind != TxnKind::Invite || self.state == State::Terminated {
            return RequestDisposition::NoTransaction;
        }
        match self.state {
            State::Completed => {
                self.state = State::Confirmed;
                self.retransmit_at = None;
                self.last_response = None;
                if self.reliable {
                    self.terminate();
                } else {
                    self.deadline = Some(after(now, self.t4));
                }
                RequestDisposition::Absorbed
            }
            State::Accepted => RequestDisposition::PassToTu,
            _ => RequestDisposition::Absorbed,
        }
    }

    /// The TU passes a response (`status`, and `response` already serialised); it is queued
    /// for `poll_transmit()`.
    ///
    /// * 1xx in Trying/Proceeding → Proceeding, remembered for request retransmissions.
    /// * INVITE 2xx in Proceeding → Accepted (RFC 6026 §7.1: "If, while in the Proceeding
    ///   state, the TU passes a 2xx response to the server transaction, the server transaction
    ///   MUST pass this response to the transport layer for transmission. It is not
    ///   retransmitted by the server transaction ... The server transaction MUST then
    ///   transition to the Accepted state"), Timer L = `64*T1`. Further 2xx in Accepted are
    ///   sent too (the UAS core's 2xx retransmissions, or a proxy forwarding other forks).
    /// * INVITE 300-699 → Completed: Timer G (T1, doubling to T2; unreliable only) resends it,
    ///   Timer H (`64*T1`) waits for the ACK.
    /// * non-INVITE 200-699 → Completed: Timer J (`64*T1`, zero on reliable transports)
    ///   absorbs retransmissions.
    ///
    /// Refused (and not sent) with [`SendError`] for a status outside 100..=699, for anything
    /// but a 2xx-in-Accepted after a final response, and once Terminated.
    pub fn send_response(
        &mut self,
        now: Instant,
        status: u16,
        response: Bytes,
    ) -> Result<(), SendError> {
        if self.state == State::Terminated {
            return Err(SendError::Terminated);
        }
        if !is_valid_status(status) {
            return Err(SendError::InvalidStatus);
        }
        match (self.state, self.kind, status) {
            (State::Trying | State::Proceeding, _, 100..=199) => {
                self.state = State::Proceeding;
                self.outbox.push(response.clone());
                self.last_response = Some(response);
            }
            (State::Proceeding, TxnKind::Invite, 200..=299) => {
                self.final_status = Some(status);
                self.state = State::Accepted;
                self.outbox.push(response);
                self.last_response = None;
                self.deadline = Some(after(now, self.t1_x64));
            }
            (State::Proceeding, TxnKind::Invite, _) => {
                self.final_status = Some(status);
                self.state = State::Completed;
                self.outbox.push(response.clone());
                self.last_response = Some(response);
                if !self.reliable {
                    // "If an unreliable transport is being used, the server transaction MUST
                    // start timer G to fire in T1 seconds"
                    self.interval = self.t1;
                    self.retransmit_at = Some(after(now, self.t1));
                }
                // "For any transport, the server transaction MUST start timer H to fire in
                // 64*T1 seconds"
                self.deadline = Some(after(now, self.t1_x64));
            }
            (State::Trying | State::Proceeding, TxnKind::NonInvite, _) => {
                self.final_status = Some(status);
                self.state = State::Completed;
                self.outbox.push(response.clone());
                if self.reliable {
                    // Timer J is zero on reliable transports.
                    self.terminate();
                } else {
                    // "the server transaction MUST set Timer J to fire in 64*T1 seconds for
                    // unreliable transports"
                    self.last_response = Some(response);
                    self.deadline = Some(after(now, self.t1_x64));
                }
            }
            (State::Accepted, _, 200..=299) => {
                self.outbox.push(response);
            }
            _ => return Err(SendError::FinalAlreadySent),
        }
        Ok(())
    }

    /// Fires every timer due at `now`; early, late or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Terminated {
            return;
        }
        if self.deadline.is_some_and(|d| d <= now) {
            match self.state {
                // Guard: the TU never passed a final response.
                State::Trying | State::Proceeding => {
                    self.events.push(Event::Timeout);
                    self.terminate();
                }
                // Timer H.
                State::Completed if self.kind == TxnKind::Invite => {
                    self.events.push(Event::AckTimeout);
                    self.terminate();
                }
                // Timers J, I, L.
                _ => self.terminate(),
            }
        }
        if self.state == State::Completed && self.retransmit_at.is_some_and(|t| t <= now) {
            // Timer G: "the response is passed to the transport layer once more for
            // retransmission, and timer G is set to fire in MIN(2*T1, T2) seconds."
            if let Some(r) = &self.last_response {
                self.outbox.push(r.clone());
                self.retransmissions = self.retransmissions.saturating_add(1);
            }
            self.interval = self.interval.saturating_mul(2).min(self.t2);
            self.retransmit_at = Some(after(now, self.interval));
        }
    }

    /// The owner's transport failed to send a response. RFC 3261 §17.2.4: the TU is informed
    /// ([`Event::TransportError`]) and the transaction terminates — except in Accepted, where
    /// it stays to absorb INVITE retransmissions (RFC 6026 §7.1).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        match self.state {
            State::Terminated => {}
            State::Accepted => self.events.push(Event::TransportError),
            _ => {
                self.events.push(Event::TransportError);
                self.terminate();
            }
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.retransmit_at = None;
        self.deadline = None;
        self.last_response = None;
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

    /// The next response to send (to the request's source). Drain it after every input,
    /// including after [`Event::Terminated`].
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

    fn resp(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    fn drain_events(txn: &mut ServerTransaction) -> Vec<Event> {
        std::iter::from_fn(|| txn.poll_event()).collect()
    }

    fn drain_sent(txn: &mut ServerTransaction) -> Vec<Bytes> {
        std::iter::from_fn(|| txn.poll_transmit()).collect()
    }

    /// Runs every timer up to `until`; offsets from `start` of each transmission.
    fn run_until(txn: &mut ServerTransaction, start: Instant, until: Instant) -> Vec<Duration> {
        let mut sent = Vec::new();
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

    #[test]
    fn invite_server_resends_the_last_provisional_on_a_retransmitted_invite() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        assert_eq!(txn.state(), State::Proceeding);
        assert!(txn.is_cancellable());
        assert_eq!(
            txn.handle_retransmission(start),
            RequestDisposition::Absorbed
        );
        assert!(drain_sent(&mut txn).is_empty(), "nothing to resend yet");
        txn.send_response(start, 100, resp(b"100")).unwrap();
        txn.send_response(start, 180, resp(b"180")).unwrap();
        assert_eq!(drain_sent(&mut txn), vec![resp(b"100"), resp(b"180")]);
        assert_eq!(
            txn.handle_retransmission(start + MS),
            RequestDisposition::Absorbed
        );
        assert_eq!(drain_sent(&mut txn), vec![resp(b"180")]);
    }

    #[test]
    fn invite_server_retransmits_a_non_2xx_final_on_timer_g_until_the_ack() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        txn.send_response(start, 486, resp(b"486")).unwrap();
        assert!(!txn.is_cancellable());
        assert_eq!(drain_sent(&mut txn), vec![resp(b"486")]);
        let sent = run_until(&mut txn, start, start + Duration::from_secs(16));
        let secs: Vec<f64> = sent.iter().map(|d| d.as_secs_f64()).collect();
        // G: 0.5, 1, 2, 4, 4, 4 ...
        assert_eq!(secs, vec![0.5, 1.5, 3.5, 7.5, 11.5, 15.5]);
        // A retransmitted INVITE also gets the final.
        assert_eq!(
            txn.handle_retransmission(start + Duration::from_secs(16)),
            RequestDisposition::Absorbed
        );
        assert_eq!(drain_sent(&mut txn), vec![resp(b"486")]);
        let t = start + Duration::from_secs(17);
        assert_eq!(txn.handle_ack(t), RequestDisposition::Absorbed);
        assert_eq!(txn.state(), State::Confirmed);
        // No more G.
        assert_eq!(
            txn.poll_timeout(),
            Some(t + Duration::from_secs(5)),
            "Timer I = T4"
        );
    }

    #[test]
    fn timer_h_terminates_with_ack_timeout_when_no_ack_arrives() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        let t = start + Duration::from_secs(2);
        txn.send_response(t, 404, resp(b"404")).unwrap();
        let sent = run_until(&mut txn, start, t + Duration::from_secs(32));
        assert!(!sent.is_empty());
        assert!(txn.is_terminated());
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::AckTimeout, Event::Terminated]
        );
    }

    #[test]
    fn timer_i_absorbs_further_acks_then_terminates() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        txn.send_response(start, 404, resp(b"404")).unwrap();
        drain_sent(&mut txn);
        txn.handle_ack(start + MS);
        for i in 2..5 {
            assert_eq!(txn.handle_ack(start + i * MS), RequestDisposition::Absorbed);
            assert_eq!(
                txn.handle_retransmission(start + i * MS),
                RequestDisposition::Absorbed
            );
        }
        assert!(drain_sent(&mut txn).is_empty());
        txn.handle_timeout(start + MS + Duration::from_secs(5));
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
        assert_eq!(
            txn.handle_ack(start + Duration::from_secs(6)),
            RequestDisposition::NoTransaction
        );
    }

    #[test]
    fn over_a_reliable_transport_there_is_no_timer_g_and_the_ack_terminates_at_once() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, true, start, &cfg());
        txn.send_response(start, 480, resp(b"480")).unwrap();
        assert_eq!(
            txn.poll_timeout(),
            Some(start + Duration::from_secs(32)),
            "only Timer H"
        );
        drain_sent(&mut txn);
        txn.handle_timeout(start + Duration::from_secs(10));
        assert!(drain_sent(&mut txn).is_empty());
        txn.handle_ack(start + Duration::from_secs(10));
        assert!(txn.is_terminated());
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn accepted_state_absorbs_invite_retransmissions_and_sends_the_tus_2xx() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        txn.send_response(start, 180, resp(b"180")).unwrap();
        txn.send_response(start, 200, resp(b"200")).unwrap();
        assert_eq!(txn.state(), State::Accepted);
        assert_eq!(drain_sent(&mut txn), vec![resp(b"180"), resp(b"200")]);
        // No Timer G on a 2xx: the UAS core retransmits it.
        assert_eq!(
            txn.poll_timeout(),
            Some(start + Duration::from_secs(32)),
            "Timer L"
        );
        for i in 1..4 {
            assert_eq!(
                txn.handle_retransmission(start + i * MS),
                RequestDisposition::Absorbed
            );
        }
        assert!(
            drain_sent(&mut txn).is_empty(),
            "retransmitted INVITEs are absorbed, not answered"
        );
        txn.send_response(start + Duration::from_millis(500), 200, resp(b"200 again"))
            .unwrap();
        assert_eq!(drain_sent(&mut txn), vec![resp(b"200 again")]);
        assert_eq!(
            txn.send_response(start, 486, resp(b"486")),
            Err(SendError::FinalAlreadySent)
        );
        assert_eq!(
            txn.send_response(start, 180, resp(b"180")),
            Err(SendError::FinalAlreadySent)
        );
        assert_eq!(
            txn.handle_ack(start + Duration::from_secs(1)),
            RequestDisposition::PassToTu
        );
        txn.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_transport_error_in_accepted_is_reported_but_the_state_survives() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        txn.send_response(start, 200, resp(b"200")).unwrap();
        txn.handle_transport_error(start);
        assert_eq!(txn.state(), State::Accepted);
        assert_eq!(drain_events(&mut txn), vec![Event::TransportError]);
        txn.handle_timeout(start + Duration::from_secs(32));
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_transport_error_elsewhere_terminates() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &cfg());
        txn.send_response(start, 500, resp(b"500")).unwrap();
        txn.handle_transport_error(start);
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::TransportError, Event::Terminated]
        );
        assert_eq!(
            txn.send_response(start, 500, resp(b"500")),
            Err(SendError::Terminated)
        );
    }

    #[test]
    fn timer_j_absorbs_retransmitted_non_invite_requests_by_resending_the_final() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::NonInvite, false, start, &cfg());
        assert_eq!(txn.state(), State::Trying);
        assert!(!txn.is_cancellable());
        assert_eq!(
            txn.handle_retransmission(start),
            RequestDisposition::Absorbed
        );
        assert!(
            drain_sent(&mut txn).is_empty(),
            "Trying discards retransmissions"
        );
        txn.send_response(start, 200, resp(b"200")).unwrap();
        assert_eq!(txn.state(), State::Completed);
        assert_eq!(drain_sent(&mut txn), vec![resp(b"200")]);
        for i in 1..4 {
            assert_eq!(
                txn.handle_retransmission(start + Duration::from_secs(i)),
                RequestDisposition::Absorbed
            );
            assert_eq!(drain_sent(&mut txn), vec![resp(b"200")]);
        }
        assert_eq!(
            txn.send_response(start, 500, resp(b"500")),
            Err(SendError::FinalAlreadySent)
        );
        assert_eq!(
            txn.poll_timeout(),
            Some(start + Duration::from_secs(32)),
            "Timer J"
        );
        assert!(run_until(&mut txn, start, start + Duration::from_secs(32)).is_empty());
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn non_invite_proceeding_resends_the_last_provisional() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::NonInvite, false, start, &cfg());
        txn.send_response(start, 100, resp(b"100")).unwrap();
        assert_eq!(txn.state(), State::Proceeding);
        drain_sent(&mut txn);
        txn.handle_retransmission(start);
        assert_eq!(drain_sent(&mut txn), vec![resp(b"100")]);
    }

    #[test]
    fn a_non_invite_final_over_a_reliable_transport_is_sent_and_terminates_at_once() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::NonInvite, true, start, &cfg());
        txn.send_response(start, 200, resp(b"200")).unwrap();
        assert!(txn.is_terminated());
        assert_eq!(drain_sent(&mut txn), vec![resp(b"200")]);
        assert_eq!(drain_events(&mut txn), vec![Event::Terminated]);
    }

    #[test]
    fn a_tu_that_never_answers_gets_a_timeout_and_the_transaction_terminates() {
        let start = Instant::now();
        let c = cfg();
        let mut txn = ServerTransaction::new(TxnKind::NonInvite, false, start, &c);
        assert_eq!(txn.poll_timeout(), Some(start + Duration::from_secs(64)));
        txn.handle_timeout(start + Duration::from_secs(64));
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::Timeout, Event::Terminated]
        );

        let mut txn = ServerTransaction::new(TxnKind::Invite, false, start, &c);
        txn.send_response(start, 180, resp(b"180")).unwrap();
        assert_eq!(txn.poll_timeout(), Some(start + Duration::from_secs(212)));
        txn.handle_timeout(start + Duration::from_secs(212));
        assert_eq!(
            drain_events(&mut txn),
            vec![Event::Timeout, Event::Terminated]
        );
    }

    #[test]
    fn invalid_statuses_and_acks_on_non_invite_are_refused() {
        let start = Instant::now();
        let mut txn = ServerTransaction::new(TxnKind::NonInvite, false, start, &cfg());
        assert_eq!(
            txn.send_response(start, 99, resp(b"x")),
            Err(SendError::InvalidStatus)
        );
        assert_eq!(
            txn.send_response(start, 700, resp(b"x")),
            Err(SendError::InvalidStatus)
        );
        assert_eq!(txn.handle_ack(start), RequestDisposition::NoTransaction);
        assert!(drain_sent(&mut txn).is_empty());
        assert_eq!(txn.state(), State::Trying);
    }
}
