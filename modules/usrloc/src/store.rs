//! Glue between the sync location API and the async backends: timeouts, latency/error counters,
//! rate-limited logging, blocking only where the mode allows it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use geosip_store::location::{BackendKind, LocationBackend};
use geosip_store::{StoreError, StoreResult};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::Error;
use crate::stats::StoreStats;

/// Logs a failing store at most once per interval, and once when it recovers.
pub(crate) struct LogLimiter {
    base: Instant,
    interval_ms: u64,
    last_ms: AtomicU64,
    suppressed: AtomicU64,
    down: AtomicBool,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            base: Instant::now(),
            interval_ms: interval.as_millis() as u64,
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    pub(crate) fn error(&self, target: &str, op: &str, e: &StoreError) {
        self.down.store(true, Ordering::Relaxed);
        let now = self.base.elapsed().as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::error!(target: "geosip_usrloc", store = target, op, error = %e, suppressed, "location store call failed");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn ok(&self, target: &str) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            self.last_ms.store(u64::MAX, Ordering::Relaxed);
            tracing::warn!(target: "geosip_usrloc", store = target, suppressed, "location store answers again");
        }
    }
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
}

/// Runs `fut` on `handle` from sync code: directly from a plain thread, through
/// `block_in_place` from a multi-thread runtime worker, refused on a current-thread runtime.
pub(crate) fn block_on<F: Future>(handle: &Handle, fut: F) -> Result<F::Output, Error> {
    match Handle::try_current() {
        Err(_) => Ok(handle.block_on(fut)),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
        }
        Ok(_) => Err(Error::WouldBlock),
    }
}

pub(crate) struct Store {
    pub(crate) backend: Arc<dyn LocationBackend>,
    pub(crate) handle: Handle,
    timeout: Duration,
    kind: BackendKind,
    target: String,
    counters: Counters,
    log: LogLimiter,
}

impl Store {
    pub(crate) fn new(
        backend: Arc<dyn LocationBackend>,
        handle: Handle,
        timeout: Duration,
        log_interval: Duration,
    ) -> Store {
        Store {
            kind: backend.kind(),
            target: backend.describe(),
            backend,
            handle,
            timeout,
            counters: Counters::default(),
            log: LogLimiter::new(log_interval),
        }
    }

    /// Runs one store call with the timeout, counting latency and errors.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout.as_millis() as u64)),
        };
        let us = start.elapsed().as_micros() as u64;
        let c = &self.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.total_us.fetch_add(us, Ordering::Relaxed);
        c.max_us.fetch_max(us, Ordering::Relaxed);
        match &r {
            Ok(_) => self.log.ok(&self.target),
            Err(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                if e.is_timeout() {
                    c.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                self.log.error(&self.target, op, e);
            }
        }
        r
    }

    /// Runs a future to completion from a sync caller. Allowed from plain threads and from a
    /// multi-thread runtime worker (through `block_in_place`); refused on a current-thread
    /// runtime, where blocking would deadlock.
    pub(crate) fn block<F: Future>(&self, fut: F) -> Result<F::Output, Error> {
        block_on(&self.handle, fut)
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let calls = c.calls.load(Ordering::Relaxed);
        StoreStats {
            backend: self.kind.as_str(),
            target: self.target.clone(),
            calls,
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            avg_latency_us: c
                .total_us
                .load(Ordering::Relaxed)
                .checked_div(calls)
                .unwrap_or(0),
            max_latency_us: c.max_us.load(Ordering::Relaxed),
        }
    }
}
