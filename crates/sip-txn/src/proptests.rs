//! Property tests on virtual time: random input sequences never panic, every non-terminated
//! transaction has a timer, and every transaction terminates in bounded time after its last
//! input, with `Terminated` as its single last event. Plus a model check of the timer wheel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use crate::*;

#[derive(Debug, Clone)]
enum ClientOp {
    Advance(u64),
    Jump(u64),
    Response(u16),
    Ack,
    Cancel,
    TransportError,
}

#[derive(Debug, Clone)]
enum ServerOp {
    Advance(u64),
    Jump(u64),
    Retransmission,
    Ack,
    Respond(u16),
    TransportError,
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop_oneof![Just(100u16), Just(180), Just(183), Just(200), Just(202), Just(302), Just(404), Just(486), Just(487), Just(503), Just(603)],
        1 => any::<u16>(),
    ]
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1_000, 0u64..40_000, 0u64..250_000]
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        4 => advance().prop_map(ClientOp::Advance),
        1 => advance().prop_map(ClientOp::Jump),
        4 => status().prop_map(ClientOp::Response),
        1 => Just(ClientOp::Ack),
        1 => Just(ClientOp::Cancel),
        1 => Just(ClientOp::TransportError),
    ]
}

fn server_op() -> impl Strategy<Value = ServerOp> {
    prop_oneof![
        4 => advance().prop_map(ServerOp::Advance),
        1 => advance().prop_map(ServerOp::Jump),
        2 => Just(ServerOp::Retransmission),
        2 => Just(ServerOp::Ack),
        4 => status().prop_map(ServerOp::Respond),
        1 => Just(ServerOp::TransportError),
    ]
}

fn config() -> impl Strategy<Value = TimerConfig> {
    prop_oneof![
        Just(TimerConfig::default()),
        Just(TimerConfig {
            fr_timer: Some(Duration::from_secs(30)),
            ..TimerConfig::default()
        }),
        Just(TimerConfig {
            t1: Duration::from_millis(100),
            fr_inv_timer: Duration::from_secs(10),
            max_inv_lifetime: Duration::from_secs(20),
            timer_d: Duration::from_secs(6),
            ..TimerConfig::default()
        }),
    ]
}

/// What an owner observes; checked after every step.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
}

impl Seen {
    fn check(&self, terminated: bool, timeout: Option<Instant>) -> Result<(), TestCaseError> {
        let n_term = self
            .events
            .iter()
            .filter(|e| **e == Event::Terminated)
            .count();
        prop_assert!(n_term <= 1, "Terminated twice: {:?}", self.events);
        if n_term == 1 {
            prop_assert_eq!(
                self.events.last(),
                Some(&Event::Terminated),
                "event after Terminated"
            );
        }
        prop_assert_eq!(
            terminated,
            n_term == 1,
            "state and Terminated event disagree"
        );
        prop_assert_eq!(
            terminated,
            timeout.is_none(),
            "a live transaction must have a timer"
        );
        for e in [
            Event::Timeout,
            Event::AckTimeout,
            Event::TransportError,
            Event::SendCancel,
        ] {
            prop_assert!(
                self.events.iter().filter(|x| **x == e).count() <= 1,
                "{:?} twice",
                e
            );
        }
        Ok(())
    }
}

/// The common polling surface, so one owner loop drives both sides.
trait Txn {
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn poll_event(&mut self) -> Option<Event>;
    fn is_terminated(&self) -> bool;
}

macro_rules! impl_txn {
    ($t:ty) => {
        impl Txn for $t {
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self) -> Option<Bytes> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<Event> {
                <$t>::poll_event(self)
            }
            fn is_terminated(&self) -> bool {
                <$t>::is_terminated(self)
            }
        }
    };
}
impl_txn!(ClientTransaction);
impl_txn!(ServerTransaction);

struct Owner {
    now: Instant,
    events: Vec<Event>,
    /// No live transaction may have a deadline past `max(floor, last input + chain)`.
    floor: Instant,
    chain: Duration,
    bound: Instant,
}

impl Owner {
    fn new(start: Instant, floor: Instant, chain: Duration) -> Self {
        Owner {
            now: start,
            events: Vec::new(),
            floor,
            chain,
            bound: floor.max(start + chain),
        }
    }

    /// An input at `self.now`: deadlines may now reach `now + chain`.
    fn input(&mut self) {
        self.bound = self.floor.max(self.now + self.chain);
    }

    fn drain(&mut self, txn: &mut impl Txn) -> Result<(), TestCaseError> {
        while txn.poll_transmit().is_some() {}
        self.events.extend(std::iter::from_fn(|| txn.poll_event()));
        let seen = Seen {
            events: std::mem::take(&mut self.events),
        };
        let r = seen.check(txn.is_terminated(), txn.poll_timeout());
        self.events = seen.events;
        r?;
        if let Some(t) = txn.poll_timeout() {
            prop_assert!(t <= self.bound, "a deadline past the bound");
        }
        Ok(())
    }

    /// Fires every timer up to `target`, each at its exact deadline (a punctual owner).
    fn run_until(&mut self, txn: &mut impl Txn, target: Instant) -> Result<(), TestCaseError> {
        for _ in 0..100_000 {
            match txn.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    txn.handle_timeout(self.now);
                    self.drain(txn)?;
                }
                _ => break,
            }
        }
        prop_assert!(
            txn.poll_timeout().is_none_or(|t| t > target),
            "timers never settle"
        );
        self.now = self.now.max(target);
        Ok(())
    }

    /// Jumps to `target` and fires what is due there, late (a stalled owner).
    fn jump(&mut self, txn: &mut impl Txn, target: Instant) -> Result<(), TestCaseError> {
        // A late owner re-arms timers from the late `now`: count it as an input.
        self.now = self.now.max(target);
        self.input();
        for _ in 0..16 {
            match txn.poll_timeout() {
                Some(t) if t <= self.now => {
                    txn.handle_timeout(self.now);
                    self.drain(txn)?;
                }
                _ => break,
            }
        }
        prop_assert!(
            txn.poll_timeout().is_none_or(|t| t > self.now),
            "a late call made no progress"
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_client_transaction_terminates_whatever_happens(
        invite in any::<bool>(),
        reliable in any::<bool>(),
        cfg in config(),
        ops in proptest::collection::vec(client_op(), 0..40),
    ) {
        let kind = if invite { TxnKind::Invite } else { TxnKind::NonInvite };
        // Timer C then the wait for the 487 is the longest chain after an input; it covers
        // D, K and M. B/F run from creation.
        let start = Instant::now();
        let chain = cfg.fr_inv_timer + cfg.t1_x64().max(cfg.timer_d);
        let mut owner = Owner::new(start, start + cfg.final_response_timeout(), chain);
        let mut txn = ClientTransaction::new(kind, Bytes::from_static(b"REQ"), reliable, start, &cfg);
        owner.drain(&mut txn)?;
        for op in ops {
            let now = owner.now;
            match op {
                ClientOp::Advance(ms) => {
                    owner.run_until(&mut txn, now + Duration::from_millis(ms))?;
                    continue;
                }
                ClientOp::Jump(ms) => {
                    owner.jump(&mut txn, now + Duration::from_millis(ms))?;
                    continue;
                }
                ClientOp::Response(s) => {
                    let before = txn.state();
                    let d = txn.handle_response(now, s);
                    if before == State::Terminated {
                        prop_assert_eq!(d, ResponseDisposition::Stray);
                    }
                    if d == ResponseDisposition::PassToTuAndAck {
                        prop_assert!(invite && (300..=699).contains(&s));
                    }
                }
                ClientOp::Ack => { txn.send_ack(now, Bytes::from_static(b"ACK")); }
                ClientOp::Cancel => { txn.cancel(now); }
                ClientOp::TransportError => txn.handle_transport_error(now),
            }
            owner.input();
            owner.drain(&mut txn)?;
            owner.run_until(&mut txn, now)?;
        }
        // No more input: only timers.
        owner.run_until(&mut txn, owner.now + Duration::from_secs(3600))?;
        prop_assert!(txn.is_terminated());
        prop_assert_eq!(owner.events.last(), Some(&Event::Terminated));
    }

    #[test]
    fn every_server_transaction_terminates_whatever_happens(
        invite in any::<bool>(),
        reliable in any::<bool>(),
        cfg in config(),
        ops in proptest::collection::vec(server_op(), 0..40),
    ) {
        let kind = if invite { TxnKind::Invite } else { TxnKind::NonInvite };
        let start = Instant::now();
        // The TU guard from creation, or Timer H/J/L (64*T1) / I (T4) after the last input.
        let mut owner = Owner::new(start, start + cfg.server_guard(kind), cfg.t1_x64().max(cfg.t4));
        let mut txn = ServerTransaction::new(kind, reliable, start, &cfg);
        owner.drain(&mut txn)?;
        let mut finals_sent = 0u32;
        for op in ops {
            let now = owner.now;
            match op {
                ServerOp::Advance(ms) => {
                    owner.run_until(&mut txn, now + Duration::from_millis(ms))?;
                    continue;
                }
                ServerOp::Jump(ms) => {
                    owner.jump(&mut txn, now + Duration::from_millis(ms))?;
                    continue;
                }
                ServerOp::Retransmission => { txn.handle_retransmission(now); }
                ServerOp::Ack => {
                    let d = txn.handle_ack(now);
                    if d == RequestDisposition::PassToTu {
                        prop_assert_eq!(txn.state(), State::Accepted);
                    }
                }
                ServerOp::Respond(s) => {
                    let was_accepted = txn.state() == State::Accepted;
                    if txn.send_response(now, s, Bytes::from_static(b"RESP")).is_ok() && s >= 200 && !was_accepted {
                        finals_sent += 1;
                    }
                }
                ServerOp::TransportError => txn.handle_transport_error(now),
            }
            prop_assert!(finals_sent <= 1, "two final responses accepted");
            owner.input();
            owner.drain(&mut txn)?;
            owner.run_until(&mut txn, now)?;
        }
        owner.run_until(&mut txn, owner.now + Duration::from_secs(3600))?;
        prop_assert!(txn.is_terminated());
        prop_assert_eq!(owner.events.last(), Some(&Event::Terminated));
    }

    #[test]
    fn the_timer_wheel_pops_exactly_the_entries_whose_rounded_deadline_has_passed(
        ops in proptest::collection::vec((0u8..4, 0u64..3_000, any::<prop::sample::Index>()), 0..300),
        slots in prop_oneof![Just(4usize), Just(64), Just(4096)],
    ) {
        let res = Duration::from_millis(10);
        let start = Instant::now();
        let mut now = start;
        let mut wheel = TimerWheel::with_config(start, res, slots, usize::MAX);
        // Model: key -> (handle, deadline).
        let mut model: BTreeMap<u32, (TimerHandle, Instant)> = BTreeMap::new();
        let mut next_key = 0u32;
        let tick_ceil = |t: Instant| (t - start).as_nanos().div_ceil(res.as_nanos());
        for (op, ms, idx) in ops {
            match op {
                0 | 1 => {
                    let deadline = now + Duration::from_millis(ms);
                    let h = wheel.insert(deadline, next_key).map_err(|_| TestCaseError::fail("refused"))?;
                    model.insert(next_key, (h, deadline));
                    next_key += 1;
                }
                2 if !model.is_empty() => {
                    let key = *model.keys().nth(idx.index(model.len())).ok_or_else(|| TestCaseError::fail("idx"))?;
                    let (h, _) = model.remove(&key).ok_or_else(|| TestCaseError::fail("model"))?;
                    if ms % 2 == 0 {
                        prop_assert_eq!(wheel.cancel(h), Some(key));
                    } else {
                        let deadline = now + Duration::from_millis(ms);
                        prop_assert!(wheel.reschedule(h, deadline));
                        model.insert(key, (h, deadline));
                    }
                }
                _ => {
                    now += Duration::from_millis(ms / 3);
                    let now_tick = (now - start).as_nanos() / res.as_nanos();
                    let mut popped: Vec<u32> = std::iter::from_fn(|| wheel.poll_expired(now)).collect();
                    popped.sort();
                    let due: Vec<u32> = model.iter().filter(|(_, (_, d))| tick_ceil(*d) <= now_tick).map(|(k, _)| *k).collect();
                    prop_assert_eq!(&popped, &due);
                    for k in &popped {
                        let (_, d) = model.remove(k).ok_or_else(|| TestCaseError::fail("model"))?;
                        prop_assert!(d <= now, "popped early");
                    }
                }
            }
            prop_assert_eq!(wheel.len(), model.len());
        }
    }
}
