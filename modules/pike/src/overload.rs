//! Overload control: load signals in, a shed fraction out, applied by priority class.
//!
//! **Signals** (fed by the server): the live transaction count (tm), per-worker receive
//! backlog (how full each `recvmmsg` batch was) and per-worker processing lag. Per-worker values
//! are smoothed (EWMA) and ignored once a worker has not reported for a second (an idle worker
//! blocks in `recvmmsg` and reports nothing).
//!
//! **Controller.** Every `interval_ms` the load ratio `r` = the largest of
//! `transactions / max_transactions`, `backlog / max_backlog`, `lag / max_lag_ms` is compared
//! with 1: above it the shed fraction `s` grows by `step * (1 + 4 (r - 1))` (faster the bigger
//! the excess), below `low_watermark` it shrinks by `step`, in between it holds. This is an
//! integrating controller: it settles on the fraction that keeps the load at the threshold, so
//! throughput stays near capacity instead of flapping between all and nothing.
//!
//! **Priorities.** In-dialog requests (To tag, ACK, CANCEL) are never shed. The others are in
//! three tiers, shed in order: tier 0 (methods other than REGISTER and INVITE), tier 1 (the
//! one of REGISTER / INVITE not given priority), tier 2 (the prioritised one). With `x = 3 s`,
//! tier `i` is shed with probability `clamp(x - i, 0, 1)`: a tier is only touched once every
//! lower tier is shed completely.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::Class;
use crate::config::{OverloadConfig, Priority};

/// Worker slots (worker ids are taken modulo this).
pub const MAX_WORKERS: usize = 256;
/// A worker that has not reported for this long does not count.
const STALE_MS: u64 = 1000;
/// EWMA weight of a new sample, per mille, when reports come back to back.
const ALPHA_PM: u64 = 200;
/// Time constant of the decay of the old smoothed value between reports, milliseconds.
const DECAY_MS: f64 = 100.0;

#[derive(Default)]
struct Worker {
    /// Smoothed batch fullness, per million.
    backlog_ppm: AtomicU32,
    /// Smoothed lag, microseconds.
    lag_us: AtomicU64,
    last_ms: AtomicU64,
}

struct Ctl {
    last_ms: u64,
}

/// A snapshot of the overload state (`pike.stats`, metrics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverloadState {
    /// Largest load ratio at the last controller update (1.0 = at a threshold).
    pub load: f64,
    /// Shed fraction `s` (0..1).
    pub shed_fraction: f64,
    /// Probability of shedding a new request of each class: in-dialog, REGISTER, INVITE,
    /// other.
    pub shed_probability: [f64; 4],
    /// Live transactions last reported.
    pub transactions: u64,
}

/// Overload detector and shedder; one per process, shared by every worker.
pub struct Overload {
    cfg: OverloadConfig,
    base: Instant,
    transactions: AtomicU64,
    workers: Box<[Worker]>,
    shed: AtomicU64,
    load: AtomicU64,
    /// Time of the last controller update (ms), read without the lock on every request.
    last_update_ms: AtomicU64,
    ctl: Mutex<Ctl>,
    rng: AtomicU64,
}

impl Overload {
    /// An overload controller with its clock starting at `base` and a random seed.
    pub fn new(cfg: OverloadConfig, base: Instant, seed: u64) -> Overload {
        Overload {
            cfg,
            base,
            transactions: AtomicU64::new(0),
            workers: (0..MAX_WORKERS).map(|_| Worker::default()).collect(),
            shed: AtomicU64::new(0f64.to_bits()),
            load: AtomicU64::new(0f64.to_bits()),
            last_update_ms: AtomicU64::new(0),
            ctl: Mutex::new(Ctl { last_ms: 0 }),
            rng: AtomicU64::new(seed),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Signal: live transactions (tm). Call as often as convenient (e.g. every 100 ms).
    pub fn set_transactions(&self, n: u64) {
        self.transactions.store(n, Ordering::Relaxed);
    }

    /// Signal, after every receive batch of worker `worker`: it received `received` datagrams
    /// in a batch of `capacity` (`recvmmsg`; a full batch means more were waiting), the oldest
    /// of which waited `lag` since it was received.
    ///
    /// Both are smoothed together. The weight of the old value decays with the time since the
    /// worker's last report (time constant [`DECAY_MS`]), not only with the number of reports:
    /// after a storm, the first few sparse requests would otherwise keep the storm's lag and
    /// backlog alive for seconds and be shed although the server is idle.
    pub fn report_batch(
        &self,
        worker: usize,
        received: usize,
        capacity: usize,
        lag: Duration,
        now: Instant,
    ) {
        let w = &self.workers[worker % MAX_WORKERS];
        let fill = if capacity == 0 {
            0
        } else {
            (received.min(capacity) as u64 * 1_000_000) / capacity as u64
        };
        let us = lag.as_micros().min(u128::from(u32::MAX)) as u64;
        let now_ms = self.ms(now);
        let dt = now_ms.saturating_sub(w.last_ms.load(Ordering::Relaxed));
        // Old weight, per mille: (1 - alpha) at back-to-back reports, falling to 0 with time.
        let keep = if dt > STALE_MS {
            0
        } else {
            ((1000 - ALPHA_PM) as f64 * (-(dt as f64) / DECAY_MS).exp()) as u64
        };
        let mix = |old: u64, new: u64| (old * keep + new * (1000 - keep)) / 1000;
        let backlog = mix(u64::from(w.backlog_ppm.load(Ordering::Relaxed)), fill);
        w.backlog_ppm.store(backlog as u32, Ordering::Relaxed);
        w.lag_us
            .store(mix(w.lag_us.load(Ordering::Relaxed), us), Ordering::Relaxed);
        w.last_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The current load ratio (1.0 = at the lowest threshold crossed).
    pub fn load_ratio(&self, now: Instant) -> f64 {
        let now_ms = self.ms(now);
        let c = &self.cfg;
        let mut r: f64 = 0.0;
        if c.max_transactions > 0 {
            r = r.max(self.transactions.load(Ordering::Relaxed) as f64 / c.max_transactions as f64);
        }
        let (mut backlog, mut lag) = (0u64, 0u64);
        for w in self.workers.iter() {
            let last = w.last_ms.load(Ordering::Relaxed);
            if last == 0
                && w.backlog_ppm.load(Ordering::Relaxed) == 0
                && w.lag_us.load(Ordering::Relaxed) == 0
            {
                continue;
            }
            if now_ms.saturating_sub(last) > STALE_MS {
                continue;
            }
            backlog = backlog.max(u64::from(w.backlog_ppm.load(Ordering::Relaxed)));
            lag = lag.max(w.lag_us.load(Ordering::Relaxed));
        }
        if c.max_backlog > 0.0 {
            r = r.max(backlog as f64 / 1e6 / c.max_backlog);
        }
        if c.max_lag_ms > 0 {
            r = r.max(lag as f64 / 1000.0 / c.max_lag_ms as f64);
        }
        r
    }

    /// Runs the controller if a period has passed (called from [`shed`](Self::shed); the
    /// server may also call it from a timer).
    pub fn update(&self, now: Instant) {
        let now_ms = self.ms(now);
        if now_ms.saturating_sub(self.last_update_ms.load(Ordering::Relaxed)) < self.cfg.interval_ms
        {
            return; // the common case: no lock
        }
        let Some(mut ctl) = self.ctl.try_lock() else {
            return; // another worker is updating
        };
        let elapsed = now_ms.saturating_sub(ctl.last_ms);
        if elapsed < self.cfg.interval_ms {
            return;
        }
        // Catch up on missed periods, but not unboundedly.
        let periods = (elapsed / self.cfg.interval_ms).min(20) as f64;
        ctl.last_ms = now_ms;
        self.last_update_ms.store(now_ms, Ordering::Relaxed);
        let r = self.load_ratio(now);
        let mut s = f64::from_bits(self.shed.load(Ordering::Relaxed));
        if r > 1.0 {
            s += self.cfg.step * (1.0 + 4.0 * (r - 1.0)).min(20.0) * periods;
        } else if r < self.cfg.low_watermark {
            s -= self.cfg.step * periods;
        }
        let s = s.clamp(0.0, 1.0);
        self.shed.store(s.to_bits(), Ordering::Relaxed);
        self.load.store(r.to_bits(), Ordering::Relaxed);
    }

    fn tier(&self, class: Class) -> Option<f64> {
        match (class, self.cfg.priority) {
            (Class::InDialog, _) => None,
            (Class::Other, _) => Some(0.0),
            (Class::Invite, Priority::Register) | (Class::Register, Priority::Invite) => Some(1.0),
            (Class::Register, Priority::Register) | (Class::Invite, Priority::Invite) => Some(2.0),
        }
    }

    /// Probability that a new request of `class` is shed right now.
    pub fn shed_probability(&self, class: Class) -> f64 {
        if !self.cfg.enabled {
            return 0.0;
        }
        let s = f64::from_bits(self.shed.load(Ordering::Relaxed));
        // Never shed a whole class: when answering 503 itself saturates the server (a storm
        // of clients that keep coming), the load signal never falls and the controller would
        // sit at 1 with no request served — a livelock. A guaranteed share keeps registrations
        // completing; what exceeds capacity beyond that waits in the socket queue and is
        // dropped as stale (`stale_ms`).
        match self.tier(class) {
            Some(t) => (3.0 * s - t).clamp(0.0, self.cfg.max_shed.clamp(0.0, 1.0)),
            None => 0.0,
        }
    }

    /// Whether to shed this request: `Some(retry_after)` to answer 503, `None` to serve it.
    pub fn shed(&self, class: Class, now: Instant) -> Option<u32> {
        if !self.cfg.enabled {
            return None;
        }
        self.update(now);
        let p = self.shed_probability(class);
        if p <= 0.0 {
            return None;
        }
        (p >= 1.0 || self.uniform() < p).then(|| self.retry_after())
    }

    /// A Retry-After in `retry_after +- retry_after_spread`, at least 1.
    pub fn retry_after(&self) -> u32 {
        let base = i64::from(self.cfg.retry_after);
        let spread = i64::from(self.cfg.retry_after_spread);
        let off = (self.next() % (2 * spread as u64 + 1)) as i64 - spread;
        (base + off).max(1) as u32
    }

    /// Current state.
    pub fn state(&self) -> OverloadState {
        OverloadState {
            load: f64::from_bits(self.load.load(Ordering::Relaxed)),
            shed_fraction: f64::from_bits(self.shed.load(Ordering::Relaxed)),
            shed_probability: [
                self.shed_probability(Class::InDialog),
                self.shed_probability(Class::Register),
                self.shed_probability(Class::Invite),
                self.shed_probability(Class::Other),
            ],
            transactions: self.transactions.load(Ordering::Relaxed),
        }
    }

    /// Whether the configuration enables overload control.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Whether whitelisted peers are exempt from shedding.
    pub fn exempt_whitelist(&self) -> bool {
        self.cfg.exempt_whitelist
    }

    /// A random number (shared generator).
    pub(crate) fn random(&self) -> u64 {
        self.next()
    }

    fn next(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, lock-free, good enough for load shedding.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn ol(cfg: OverloadConfig) -> (Overload, Instant) {
        let base = Instant::now();
        (Overload::new(cfg, base, 42), base)
    }

    fn shed_share(o: &Overload, class: Class, at: Instant, n: usize) -> f64 {
        (0..n).filter(|_| o.shed(class, at).is_some()).count() as f64 / n as f64
    }

    #[test]
    fn below_the_thresholds_nothing_is_shed() {
        let (o, base) = ol(OverloadConfig::default());
        o.set_transactions(50_000);
        o.report_batch(0, 10, 64, Duration::ZERO, ms(base, 1));
        for t in (0..5000).step_by(100) {
            assert_eq!(o.shed(Class::Register, ms(base, t)), None);
        }
        assert_eq!(o.state().shed_fraction, 0.0);
    }

    #[test]
    fn shedding_grows_with_the_excess_in_priority_order_and_never_touches_in_dialog_requests() {
        let (o, base) = ol(OverloadConfig {
            max_transactions: 1000,
            max_shed: 1.0,
            ..OverloadConfig::default()
        });
        o.set_transactions(1500);
        let mut t = 0;
        // Step the controller until other methods are fully shed and INVITEs partly.
        let mut seen_partial_invite = false;
        while t < 20_000 {
            t += 100;
            o.update(ms(base, t));
            let st = o.state();
            let [dlg, reg, inv, other] = st.shed_probability;
            assert_eq!(dlg, 0.0);
            assert!(
                other >= inv && inv >= reg,
                "priority order: {:?}",
                st.shed_probability
            );
            if inv > 0.0 && inv < 1.0 {
                seen_partial_invite = true;
                assert_eq!(
                    other, 1.0,
                    "INVITEs are shed only once other methods all are"
                );
                assert_eq!(reg, 0.0);
            }
            if reg > 0.0 {
                break;
            }
        }
        assert!(
            seen_partial_invite,
            "shedding is gradual, not all-or-nothing"
        );
        // In-dialog requests pass whatever the load.
        o.set_transactions(1_000_000);
        for k in 0..50 {
            o.update(ms(base, t + 100 * k));
        }
        assert_eq!(o.state().shed_fraction, 1.0);
        assert_eq!(
            shed_share(&o, Class::InDialog, ms(base, t + 6000), 1000),
            0.0
        );
        assert_eq!(
            shed_share(&o, Class::Register, ms(base, t + 6000), 1000),
            1.0
        );
    }

    #[test]
    fn a_class_is_never_shed_entirely_with_the_default_cap() {
        let (o, base) = ol(OverloadConfig {
            max_transactions: 1000,
            ..OverloadConfig::default()
        });
        o.set_transactions(100_000);
        for k in 0..40 {
            o.update(base + Duration::from_millis(100 * (k + 1)));
        }
        assert_eq!(o.state().shed_fraction, 1.0);
        for class in [Class::Register, Class::Invite, Class::Other] {
            assert!((o.shed_probability(class) - 0.9).abs() < 1e-9, "{class:?}");
        }
        assert_eq!(o.shed_probability(Class::InDialog), 0.0);
    }

    #[test]
    fn shedding_is_proportional_and_recovers_when_the_load_falls() {
        let (o, base) = ol(OverloadConfig {
            max_transactions: 1000,
            priority: Priority::Invite,
            ..OverloadConfig::default()
        });
        o.set_transactions(1100);
        let mut t = 0;
        // Raise until REGISTER (tier 1 with invite priority) is shed with p around one half.
        loop {
            t += 100;
            o.update(ms(base, t));
            let p = o.shed_probability(Class::Register);
            if p >= 0.4 {
                break;
            }
            assert!(t < 60_000);
        }
        o.set_transactions(950); // between the low watermark and the threshold: hold
        o.update(ms(base, t + 100));
        let p = o.shed_probability(Class::Register);
        assert!((0.4..0.7).contains(&p), "{p}");
        let share = shed_share(&o, Class::Register, ms(base, t + 150), 20_000);
        assert!(
            (share - p).abs() < 0.02,
            "shed share {share} vs probability {p}"
        );
        assert_eq!(
            o.shed_probability(Class::Invite),
            0.0,
            "INVITE has priority"
        );
        o.set_transactions(100);
        for k in 2..100 {
            o.update(ms(base, t + 100 * k));
        }
        assert_eq!(o.state().shed_fraction, 0.0);
        assert_eq!(o.shed(Class::Other, ms(base, t + 20_000)), None);
    }

    #[test]
    fn full_receive_batches_or_lag_count_as_overload_until_the_worker_goes_quiet() {
        let (o, base) = ol(OverloadConfig::default());
        for k in 0..50 {
            o.report_batch(3, 64, 64, Duration::ZERO, ms(base, k * 10));
        }
        assert!(o.load_ratio(ms(base, 500)) > 1.2);
        assert!(
            o.load_ratio(ms(base, 3000)) < 0.01,
            "a silent worker's backlog is stale"
        );
        o.report_batch(1, 0, 64, Duration::from_millis(400), ms(base, 3000));
        assert!((o.load_ratio(ms(base, 3001)) - 2.0).abs() < 0.01);
    }

    #[test]
    fn a_storm_s_lag_is_forgotten_by_the_first_sparse_requests_after_it() {
        let (o, base) = ol(OverloadConfig::default());
        // A storm: for a second, full batches that waited 1 s (five times max_lag_ms).
        for k in 0..1000 {
            o.report_batch(0, 64, 64, Duration::from_secs(1), ms(base, k));
            o.update(ms(base, k));
        }
        assert!(o.load_ratio(ms(base, 1000)) > 4.0);
        assert!(o.state().shed_fraction > 0.5, "{:?}", o.state());
        // Then one request every 300 ms, each processed at once: well under a second apart,
        // so the worker is never stale, yet the first two reports already forget the storm
        // (smoothed per report only, the lag would still be 0.64 s).
        o.report_batch(0, 1, 64, Duration::ZERO, ms(base, 1300));
        o.update(ms(base, 1300));
        o.report_batch(0, 1, 64, Duration::ZERO, ms(base, 1600));
        let r = o.load_ratio(ms(base, 1600));
        assert!(r < 0.9, "load ratio {r} after the storm");
        // Below the low watermark the shed fraction falls: two seconds later nothing is shed.
        o.report_batch(0, 1, 64, Duration::ZERO, ms(base, 3600));
        assert_eq!(
            o.shed(Class::Other, ms(base, 3600)),
            None,
            "{:?}",
            o.state()
        );
        assert_eq!(o.state().shed_fraction, 0.0);
    }

    #[test]
    fn retry_after_is_spread_around_the_base() {
        let (o, _) = ol(OverloadConfig {
            retry_after: 10,
            retry_after_spread: 5,
            ..OverloadConfig::default()
        });
        let v: Vec<u32> = (0..2000).map(|_| o.retry_after()).collect();
        assert!(v.iter().all(|r| (5..=15).contains(r)));
        let distinct: std::collections::BTreeSet<_> = v.iter().collect();
        assert_eq!(distinct.len(), 11, "every value in the range shows up");
        let mean = v.iter().map(|&r| f64::from(r)).sum::<f64>() / v.len() as f64;
        assert!((mean - 10.0).abs() < 0.5);
        let (o, _) = ol(OverloadConfig {
            retry_after: 2,
            retry_after_spread: 5,
            ..OverloadConfig::default()
        });
        assert!((0..500).all(|_| o.retry_after() >= 1));
    }
}
