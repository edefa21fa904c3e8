//! RFC 3261 §17 transaction state machines (client/server, INVITE/non-INVITE, with RFC 6026's
//! Accepted state), sans-I/O: driven by events and a clock.
//!
//! RFC 3261 §17:
//! > "SIP is a transactional protocol: interactions between components take place in a series
//! > of independent message exchanges. Specifically, a SIP transaction consists of a single
//! > request and any responses to that request, which include zero or more provisional
//! > responses and one or more final responses."
//!
//! Modelled on quinn-proto: a transaction does no I/O, reads no clock and spawns nothing.
//! Its owner passes `now` into every call, sends what [`poll_transmit`] yields, reacts to what
//! [`poll_event`] yields, and calls `handle_timeout` once [`poll_timeout`] has passed. It does
//! not parse SIP either: it sees status codes, `reliable` flags and already-serialised
//! [`Bytes`](bytes::Bytes) to (re)transmit, so it is independent of the message crate.
//!
//! * [`ClientTransaction`] — §17.1.1 INVITE (Timers A, B, D, plus `fr_timer` /
//!   `fr_inv_timer` / `max_inv_lifetime` and RFC 6026 Timer M) and §17.1.2 non-INVITE
//!   (Timers E, F, K).
//! * [`ServerTransaction`] — §17.2.1 INVITE (Timers G, H, I, RFC 6026 Timer L) and §17.2.2
//!   non-INVITE (Timer J), plus a guard against a TU that never answers.
//! * [`TxnKey`] — §17.1.3 / §17.2.3 matching, including RFC 2543 matching and CANCEL.
//! * [`TimerWheel`] — a hashed timing wheel to drive many transactions.
//! * [`TimerConfig`] — T1, T2, T4, Timer D and the Kamailio `tm` timers.
//!
//! # Driving a transaction
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use sip_txn::*;
//!
//! let cfg = TimerConfig::default();
//! let mut now = Instant::now();
//! let invite = Bytes::from_static(b"INVITE sip:bob@example.com SIP/2.0\r\n...");
//! let mut txn = ClientTransaction::new(TxnKind::Invite, invite.clone(), false, now, &cfg);
//! assert_eq!(txn.poll_transmit(), Some(invite.clone())); // initial send
//!
//! now += Duration::from_millis(500); // Timer A
//! assert!(txn.poll_timeout() <= Some(now));
//! txn.handle_timeout(now);
//! assert_eq!(txn.poll_transmit(), Some(invite)); // retransmission
//!
//! // A 486 arrives; the TU builds the ACK with the response's To tag.
//! assert_eq!(txn.handle_response(now, 486), ResponseDisposition::PassToTuAndAck);
//! let ack = Bytes::from_static(b"ACK sip:bob@example.com SIP/2.0\r\n...");
//! txn.send_ack(now, ack.clone());
//! assert_eq!(txn.poll_transmit(), Some(ack));
//!
//! now += Duration::from_secs(32); // Timer D
//! txn.handle_timeout(now);
//! assert_eq!(txn.poll_event(), Some(Event::Terminated)); // free it now
//! ```
//!
//! # Owning many transactions
//!
//! After every input to a transaction the owner, still holding it: drains `poll_transmit()`
//! (sending each datagram), drains `poll_event()`, and if the transaction is not terminated
//! moves its [`TimerWheel`] entry to `poll_timeout()` (or cancels the entry and removes the
//! transaction from its table on [`Event::Terminated`]). A timer task pops expired keys from
//! the wheel, looks each transaction up and calls `handle_timeout(now)`, then does the same.
//!
//! [`poll_transmit`]: ClientTransaction::poll_transmit
//! [`poll_event`]: ClientTransaction::poll_event
//! [`poll_timeout`]: ClientTransaction::poll_timeout
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Tests may unwrap: a panic there is a failed test, not a crash reachable from the network.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod client;
mod common;
mod config;
mod key;
mod server;
mod wheel;

#[cfg(test)]
mod proptests;

pub use client::{CancelAction, ClientTransaction, ResponseDisposition};
pub use common::{Event, SendError, State, TxnKind};
pub use config::TimerConfig;
pub use key::{MAGIC_COOKIE, Rfc2543Fields, TxnKey, has_magic_cookie};
pub use server::{RequestDisposition, ServerTransaction};
pub use wheel::{TimerHandle, TimerWheel};
