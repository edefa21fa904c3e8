//! ratelimit: one token bucket per method, as GCRA (generic cell rate algorithm): a single
//! atomic "theoretical arrival time" per bucket, updated lock-free.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RateLimitConfig;

/// One bucket: `rate` per second with a burst of `burst` requests at once.
pub(crate) struct Gcra {
    /// Emission interval (ns per request).
    t_ns: u64,
    /// Tolerance: how far ahead of now the arrival time may run (ns).
    tau_ns: u64,
    tat: AtomicU64,
}

impl Gcra {
    pub(crate) fn new(rate: f64, burst_seconds: f64) -> Gcra {
        let t_ns = (1e9 / rate).clamp(1.0, 1e15) as u64;
        let burst = (rate * burst_seconds).floor().max(1.0);
        let tau_ns = (t_ns as f64 * (burst - 1.0)).min(1e15) as u64;
        Gcra {
            t_ns,
            tau_ns,
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one token at `now_ns`; false when over the limit.
    pub(crate) fn take(&self, now_ns: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let t = tat.max(now_ns);
            if t - now_ns > self.tau_ns {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                t + self.t_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(cur) => tat = cur,
            }
        }
    }
}

pub(crate) struct RateLimiter {
    enabled: bool,
    methods: Vec<(Box<[u8]>, Gcra)>,
    /// Shared by every method not listed (per-name buckets for arbitrary names would let a
    /// client grow the table).
    other: Option<Gcra>,
}

impl RateLimiter {
    pub(crate) fn new(cfg: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            enabled: cfg.enabled,
            methods: cfg
                .methods
                .iter()
                .map(|(m, r)| (m.as_bytes().into(), Gcra::new(*r, cfg.burst_seconds)))
                .collect(),
            other: (cfg.default_rate > 0.0).then(|| Gcra::new(cfg.default_rate, cfg.burst_seconds)),
        }
    }

    /// Whether a request of `method` is within its rate (true = allowed).
    pub(crate) fn allow(&self, method: &[u8], now_ns: u64) -> bool {
        if !self.enabled || method == b"ACK" || method == b"CANCEL" {
            return true;
        }
        match self.methods.iter().find(|(m, _)| &m[..] == method) {
            Some((_, g)) => g.take(now_ns),
            None => self.other.as_ref().is_none_or(|g| g.take(now_ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let g = Gcra::new(10.0, 2.0); // 10/s, burst 20
        let t0 = 5 * S;
        let ok = (0..30).filter(|_| g.take(t0)).count();
        assert_eq!(ok, 20, "the burst");
        assert!(!g.take(t0 + S / 20), "half a token later: still empty");
        assert!(g.take(t0 + S / 10), "one token after 100 ms");
        assert!(!g.take(t0 + S / 10));
        // Over a long time the rate holds: 10 per second.
        let mut n = 0;
        for ms in (0..10_000).step_by(5) {
            if g.take(t0 + S + ms * 1_000_000) {
                n += 1;
            }
        }
        assert!((99..=112).contains(&n), "about 10/s over 10 s, got {n}");
    }

    #[test]
    fn unlisted_methods_share_the_default_bucket_and_ack_is_never_limited() {
        let cfg = RateLimitConfig {
            enabled: true,
            methods: [("INVITE".to_string(), 1.0)].into_iter().collect(),
            default_rate: 2.0,
            burst_seconds: 1.0,
            retry_after: 2,
        };
        let r = RateLimiter::new(&cfg);
        assert!(r.allow(b"INVITE", S));
        assert!(!r.allow(b"INVITE", S));
        assert!(r.allow(b"MESSAGE", S));
        assert!(r.allow(b"FOO", S));
        assert!(!r.allow(b"OPTIONS", S), "the default bucket is shared");
        assert!((0..100).all(|_| r.allow(b"ACK", S) && r.allow(b"CANCEL", S)));
        let off = RateLimiter::new(&RateLimitConfig::default());
        assert!((0..1000).all(|_| off.allow(b"INVITE", S)));
    }
}
