//! Types shared by client and server transactions.

use bytes::Bytes;
use smallvec::SmallVec;

/// Which of the two RFC 3261 state machines a transaction runs.
///
/// RFC 3261 §17:
/// > "There are two types of client transaction state machines, depending on the method of
/// > the request passed by the TU. One handles client transactions for INVITE requests. This
/// > type of machine is referred to as an INVITE client transaction. Another type handles
/// > client transactions for all requests except INVITE and ACK."
///
/// ACK never creates a transaction: the ACK for a non-2xx final response belongs to the
/// INVITE transaction, and the ACK for a 2xx is sent by the TU on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnKind {
    /// INVITE: three-way handshake, Timers A-D (client) and G-I, L (server).
    Invite,
    /// Every method but INVITE and ACK (CANCEL included, RFC 3261 §9.2): Timers E, F, K
    /// (client) and J (server).
    NonInvite,
}

impl TxnKind {
    /// The kind of transaction a request method creates; `None` for ACK, which creates none.
    /// Methods are case-sensitive (RFC 3261 §7.1: "The method token is case-sensitive").
    pub fn from_method(method: &[u8]) -> Option<TxnKind> {
        match method {
            b"INVITE" => Some(TxnKind::Invite),
            b"ACK" => None,
            _ => Some(TxnKind::NonInvite),
        }
    }
}

/// The RFC 3261 §17 / RFC 6026 states. Each transaction uses a subset:
///
/// * client INVITE: Calling → Proceeding → Completed | Accepted → Terminated
/// * client non-INVITE: Trying → Proceeding → Completed → Terminated
/// * server INVITE: Proceeding → Completed → Confirmed | Accepted → Terminated
/// * server non-INVITE: Trying → Proceeding → Completed → Terminated
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Client INVITE after sending the request, before any response (Timers A and B run).
    Calling,
    /// Non-INVITE before any response (client: Timers E and F run; server: waiting for the TU).
    Trying,
    /// A provisional response was received (client) or sent / owed (server INVITE).
    Proceeding,
    /// A final response (client: non-2xx for INVITE; server: non-2xx for INVITE, any for
    /// non-INVITE) was received or sent; retransmissions are absorbed.
    Completed,
    /// Server INVITE only: the ACK for a non-2xx final arrived (Timer I runs).
    Confirmed,
    /// RFC 6026 §7.1: INVITE answered with a 2xx. Client: further 2xx pass to the TU for
    /// Timer M; server: retransmitted INVITEs are absorbed and 2xx from the TU are sent for
    /// Timer L.
    Accepted,
    /// Done. RFC 3261 §17.1.1.2: "The client transaction MUST be destroyed the instant it
    /// enters the Terminated state". See [`Event::Terminated`].
    Terminated,
}

/// What a transaction tells its owner (the TU), drained with `poll_event()`.
///
/// Each variant is emitted at most once per transaction, and [`Event::Terminated`] is always
/// the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Client: no final response in time (Timer B/F, `fr_timer`, `fr_inv_timer` /
    /// Timer C, `max_inv_lifetime`, or the `64*T1` wait after a CANCEL). RFC 3261 §16.8:
    /// > "If the client transaction has received a provisional response, the proxy MUST
    /// > generate a CANCEL request matching that transaction. If the client transaction has
    /// > not received a provisional response, the proxy MUST behave as if the transaction
    /// > received a 408 (Request Timeout) response."
    ///
    /// So the TU treats the branch as a 408 and calls
    /// [`ClientTransaction::cancel`](crate::ClientTransaction::cancel), which says whether to
    /// send a CANCEL. An INVITE in Proceeding stays alive for `64*T1` more to absorb (and
    /// ACK) the 487 or any late final (§9.1); otherwise `Terminated` follows at once.
    ///
    /// Server: the TU passed no final response within
    /// [`TimerConfig::server_guard`](crate::TimerConfig::server_guard); the transaction
    /// terminates (the TU may still answer statelessly).
    Timeout,
    /// Server INVITE: Timer H fired in Completed: the ACK for the non-2xx final never came.
    /// RFC 3261 §17.2.1: "the server transaction MUST transition to the Terminated state, and
    /// MUST indicate to the TU that a transaction failure has occurred."
    AckTimeout,
    /// The owner reported a fatal transport error (`handle_transport_error`). RFC 3261
    /// §17.1.4 / §17.2.4: the TU is informed. The transaction terminates, except a server
    /// INVITE in Accepted, which stays (RFC 6026 §7.1: "The server transaction MUST NOT
    /// discard transaction state based only on encountering a non-recoverable transport
    /// error when sending a 2xx response").
    TransportError,
    /// Client INVITE: the TU asked to cancel while the transaction was in Calling and a
    /// provisional has now arrived: build and send the CANCEL now. RFC 3261 §9.1: "If no
    /// provisional response has been received, the CANCEL request MUST NOT be sent; rather,
    /// the client MUST wait for the arrival of a provisional response before sending the
    /// request."
    SendCancel,
    /// The transaction is in [`State::Terminated`] and will never produce anything again:
    /// after draining `poll_transmit()`, the owner frees it (removes it from its table and
    /// cancels its timer-wheel entry). Emitted exactly once on every path.
    Terminated,
}

/// Why a server transaction refused a response from its TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendError {
    /// The status code is not in 100..=699 (RFC 3261 §7.2 / §21).
    InvalidStatus,
    /// A final response was already sent: RFC 3261 §17.2.1 lets only the Accepted state
    /// (RFC 6026) send further 2xx; everything else is dropped.
    FinalAlreadySent,
    /// The transaction is Terminated; the TU may send the response statelessly.
    Terminated,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::InvalidStatus => "status code outside 100..=699",
            SendError::FinalAlreadySent => "a final response was already sent on this transaction",
            SendError::Terminated => "the transaction is terminated",
        })
    }
}

impl std::error::Error for SendError {}

/// Messages waiting for `poll_transmit()`. Bounded: at most [`Outbox::CAP`] entries, the
/// oldest dropped beyond that (an owner that does not drain between calls loses nothing
/// that matters: retransmissions carry the same bytes), and an identical message queued twice
/// in a row is kept once.
#[derive(Debug, Default)]
pub(crate) struct Outbox(SmallVec<[Bytes; 2]>);

impl Outbox {
    const CAP: usize = 4;

    pub(crate) fn push(&mut self, msg: Bytes) {
        if let Some(last) = self.0.last()
            && last.as_ptr() == msg.as_ptr()
            && last.len() == msg.len()
        {
            return;
        }
        if self.0.len() >= Self::CAP {
            self.0.remove(0);
        }
        self.0.push(msg);
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.remove(0))
        }
    }
}

/// Events waiting for `poll_event()`; each kind is queued at most once, so this never grows
/// past five entries.
#[derive(Debug, Default)]
pub(crate) struct Events {
    queue: SmallVec<[Event; 4]>,
    emitted: u8,
}

impl Events {
    fn bit(e: Event) -> u8 {
        match e {
            Event::Timeout => 1,
            Event::AckTimeout => 2,
            Event::TransportError => 4,
            Event::SendCancel => 8,
            Event::Terminated => 16,
        }
    }

    /// Queues `e` unless it was already emitted once; nothing follows `Terminated`.
    pub(crate) fn push(&mut self, e: Event) {
        let bit = Self::bit(e);
        if self.emitted & (bit | Self::bit(Event::Terminated)) != 0 {
            return;
        }
        self.emitted |= bit;
        self.queue.push(e);
    }

    pub(crate) fn has_emitted(&self, e: Event) -> bool {
        self.emitted & Self::bit(e) != 0
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        if self.queue.is_empty() {
            None
        } else {
            Some(self.queue.remove(0))
        }
    }
}

/// Status class helpers; statuses outside 100..=699 are malformed (RFC 3261 §21 defines
/// only classes 1 to 6).
pub(crate) fn is_valid_status(status: u16) -> bool {
    (100..=699).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_creates_no_transaction_and_cancel_is_non_invite() {
        assert_eq!(TxnKind::from_method(b"INVITE"), Some(TxnKind::Invite));
        assert_eq!(TxnKind::from_method(b"ACK"), None);
        assert_eq!(TxnKind::from_method(b"CANCEL"), Some(TxnKind::NonInvite));
        assert_eq!(TxnKind::from_method(b"invite"), Some(TxnKind::NonInvite));
    }

    #[test]
    fn outbox_is_bounded_and_skips_an_immediate_duplicate() {
        let mut o = Outbox::default();
        let a = Bytes::from_static(b"a");
        o.push(a.clone());
        o.push(a.clone());
        assert_eq!(o.pop(), Some(a));
        assert_eq!(o.pop(), None);
        for i in 0..10u8 {
            o.push(Bytes::from(vec![i]));
        }
        assert_eq!(o.pop(), Some(Bytes::from(vec![6u8])));
    }

    #[test]
    fn events_are_emitted_once_and_nothing_follows_terminated() {
        let mut e = Events::default();
        e.push(Event::Timeout);
        e.push(Event::Timeout);
        e.push(Event::Terminated);
        e.push(Event::TransportError);
        assert_eq!(e.pop(), Some(Event::Timeout));
        assert_eq!(e.pop(), Some(Event::Terminated));
        assert_eq!(e.pop(), None);
    }
}

#[cfg(test)]
mod thread_tests {
    use crate::{ClientTransaction, ServerTransaction, TimerWheel, TxnKey};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn transactions_and_the_wheel_can_live_behind_a_shard_lock_shared_by_threads() {
        assert_send_sync::<ClientTransaction>();
        assert_send_sync::<ServerTransaction>();
        assert_send_sync::<TimerWheel<TxnKey>>();
        assert_send_sync::<TxnKey>();
    }

    #[test]
    fn transactions_stay_small() {
        let (c, s) = (
            size_of::<ClientTransaction>(),
            size_of::<ServerTransaction>(),
        );
        eprintln!("ClientTransaction {c} bytes, ServerTransaction {s} bytes");
        assert!(c <= 384 && s <= 320, "client {c}, server {s}");
    }
}
