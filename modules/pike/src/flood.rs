//! pike: request counting per key over a sliding sampling window, and temporary blocks.

use std::net::IpAddr;

use crate::table::{Entry, Table};

/// A flood counter key: the source IP, and a keyed hash of the user in `ip+user` mode (0 =
/// the IP as a whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FloodKey {
    pub(crate) ip: IpAddr,
    pub(crate) user: u64,
}

/// Longest user name kept for `pike.list`.
pub(crate) const LABEL_MAX: usize = 32;

pub(crate) struct Flood {
    /// Index of the current sampling window (`now_ms / unit_ms`).
    win: u64,
    cur: u32,
    prev: u32,
    /// Blocked until (ms since the clock base); 0 = not blocked.
    pub(crate) blocked_until: u64,
    last_ms: u64,
    /// Requests refused during the current block.
    pub(crate) refused: u32,
    /// The user of an `ip+user` key, truncated, for `pike.list`.
    pub(crate) label: Option<Box<[u8]>>,
    unit_ms: u64,
    retain_ms: u64,
}

impl Flood {
    pub(crate) fn new(now_ms: u64, unit_ms: u64, retain_ms: u64, label: Option<&[u8]>) -> Flood {
        Flood {
            win: now_ms / unit_ms,
            cur: 0,
            prev: 0,
            blocked_until: 0,
            last_ms: now_ms,
            refused: 0,
            label: label.map(|l| l[..l.len().min(LABEL_MAX)].into()),
            unit_ms,
            retain_ms,
        }
    }

    /// Counts one request; returns the remaining block time in ms if the key is blocked, and
    /// whether this request started the block.
    pub(crate) fn hit(&mut self, now_ms: u64, density: u32, block_ms: u64) -> (Option<u64>, bool) {
        let w = now_ms / self.unit_ms;
        if w == self.win {
            self.cur = self.cur.saturating_add(1);
        } else if w == self.win + 1 {
            self.prev = self.cur;
            self.cur = 1;
            self.win = w;
        } else if w > self.win {
            self.prev = 0;
            self.cur = 1;
            self.win = w;
        } else {
            // Time went backwards (clock base differs between callers): count in place.
            self.cur = self.cur.saturating_add(1);
        }
        self.last_ms = self.last_ms.max(now_ms);
        if self.blocked_until != 0 && now_ms >= self.blocked_until {
            self.blocked_until = 0;
            self.refused = 0;
        }
        // estimate * unit = cur * unit + prev * (unit - elapsed in the current window)
        let into = now_ms % self.unit_ms;
        let est_x_unit =
            u64::from(self.cur) * self.unit_ms + u64::from(self.prev) * (self.unit_ms - into);
        let mut started = false;
        if est_x_unit > u64::from(density) * self.unit_ms {
            started = self.blocked_until == 0;
            // A source that keeps flooding stays blocked block_ms after its last excess.
            self.blocked_until = self.blocked_until.max(now_ms + block_ms);
        }
        if self.blocked_until != 0 {
            self.refused = self.refused.saturating_add(1);
            (Some(self.blocked_until - now_ms), started)
        } else {
            (None, false)
        }
    }

    /// Remaining block time without counting.
    pub(crate) fn blocked(&self, now_ms: u64) -> Option<u64> {
        (self.blocked_until > now_ms).then(|| self.blocked_until - now_ms)
    }
}

impl Entry for Flood {
    fn idle(&self, now_ms: u64) -> bool {
        self.blocked_until <= now_ms && now_ms.saturating_sub(self.last_ms) > self.retain_ms
    }

    fn evictable(&self, now_ms: u64) -> bool {
        // Two windows later the counts no longer matter.
        self.blocked_until <= now_ms && now_ms / self.unit_ms > self.win + 1
    }
}

pub(crate) type FloodTable = Table<FloodKey, Flood>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sliding_estimate_blocks_a_burst_that_straddles_two_windows() {
        let mut f = Flood::new(0, 1000, 10_000, None);
        // 8 requests at the end of window 0, 8 at the start of window 1: 16 within 200 ms.
        for _ in 0..8 {
            assert_eq!(f.hit(900, 10, 5000).0, None);
        }
        let mut blocked = None;
        for i in 0..8 {
            let r = f.hit(1100, 10, 5000);
            if r.0.is_some() && blocked.is_none() {
                blocked = Some(i);
            }
        }
        // 8 * 0.9 weight of the previous window + 4 in this one > 10.
        assert!(
            blocked.is_some(),
            "a fixed window would have let this through"
        );
    }
}
