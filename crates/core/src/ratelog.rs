//! Rate limiting for log lines caused by remote input ("bad message from X"), so that a
//! flood of garbage cannot flood the log: at most N lines per source per minute, and a bounded
//! table of sources.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most sources tracked at once; past this the table is cleared (the worst case is a few
/// extra log lines, never unbounded memory).
const MAX_SOURCES: usize = 4096;
const WINDOW: Duration = Duration::from_secs(60);

/// Decides whether a log line about a source may be written now.
pub struct LogLimiter {
    per_window: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LogLimiter {
    /// At most `per_minute` lines per source per minute.
    pub fn new(per_minute: u32) -> Self {
        LogLimiter {
            per_window: per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log about `src` now: true for the first `per_minute` calls per source in a
    /// one-minute window, false for the rest of that window.
    pub fn allow(&self, src: IpAddr, now: Instant) -> bool {
        let mut m = self.seen.lock();
        if m.len() >= MAX_SOURCES && !m.contains_key(&src) {
            m.clear();
        }
        let e = m.entry(src).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 <= self.per_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_logged_at_most_n_times_per_minute_and_again_after_the_window() {
        let l = LogLimiter::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        assert!(l.allow(ip, t));
        assert!(l.allow(ip, t));
        assert!(!l.allow(ip, t));
        assert!(l.allow(other, t));
        assert!(l.allow(ip, t + WINDOW));
    }
}
