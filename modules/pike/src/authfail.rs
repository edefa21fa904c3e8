//! Failed-authentication throttling (fail2ban-style): N failures within a window block the
//! user or the source IP for a while.

use crate::table::{Entry, Table};

pub(crate) struct Fail {
    start_ms: u64,
    count: u32,
    /// Blocked until (ms since the clock base); 0 = not blocked.
    pub(crate) blocked_until: u64,
    /// Failures counted since the entry was created (for `pike.list`).
    pub(crate) total: u32,
    /// `user@realm` (truncated) for user entries, for `pike.list`.
    pub(crate) label: Option<Box<[u8]>>,
    window_ms: u64,
}

impl Fail {
    pub(crate) fn new(now_ms: u64, window_ms: u64, label: Option<&[u8]>) -> Fail {
        Fail {
            start_ms: now_ms,
            count: 0,
            blocked_until: 0,
            total: 0,
            label: label.map(|l| l[..l.len().min(crate::flood::LABEL_MAX * 2)].into()),
            window_ms,
        }
    }

    /// Counts one failure; true when it starts a block.
    pub(crate) fn fail(&mut self, now_ms: u64, limit: u32, block_ms: u64) -> bool {
        self.total = self.total.saturating_add(1);
        if self.blocked_until > now_ms {
            return false;
        }
        if self.blocked_until != 0 || now_ms.saturating_sub(self.start_ms) >= self.window_ms {
            self.blocked_until = 0;
            self.start_ms = now_ms;
            self.count = 0;
        }
        self.count += 1;
        if limit > 0 && self.count >= limit {
            self.blocked_until = now_ms + block_ms;
            self.count = 0;
            return true;
        }
        false
    }

    pub(crate) fn blocked(&self, now_ms: u64) -> Option<u64> {
        (self.blocked_until > now_ms).then(|| self.blocked_until - now_ms)
    }
}

impl Entry for Fail {
    fn idle(&self, now_ms: u64) -> bool {
        self.evictable(now_ms)
    }

    fn evictable(&self, now_ms: u64) -> bool {
        self.blocked_until <= now_ms
            && now_ms.saturating_sub(self.start_ms.max(self.blocked_until)) >= self.window_ms
    }
}

pub(crate) type FailTable<K> = Table<K, Fail>;
