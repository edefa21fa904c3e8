//! Nonce-count replay protection (RFC 7616 §3.4 `nc`, RFC 2617 §3.2.2).
//!
//! A bounded, sharded table of the nonces that authenticated successfully, with the highest
//! `nc` seen (and, with `nc_window > 0`, which of the `nc_window` counts below it were used, so
//! requests that overtake each other still pass exactly once). A nonce used again with the same
//! or a lower `nc` is a replay. Credentials without qop have no `nc`: they count as `nc = 0`,
//! which makes such a nonce single-use.
//!
//! Only nonces whose response verified are recorded, so a client without the password cannot
//! fill the table. Entries leave when their nonce expires. When a shard is full of live
//! entries, the oldest quarter is evicted and the shard's *floor* rises to the newest evicted
//! issue time: every nonce issued at or before the floor is then refused as stale, so eviction
//! can never re-open a replay, it only costs those clients one more challenge.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;

const SHARDS: usize = 32;

struct Entry {
    ts: u32,
    max_nc: u32,
    /// Bit i set = `max_nc - i` was used.
    seen: u64,
}

struct Shard {
    map: HashMap<u64, Entry>,
    floor: u32,
    next_purge: u64,
}

/// The outcome of using a nonce count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NcUse {
    /// First use of this (nonce, nc).
    Fresh,
    /// Seen before (or lower than allowed): a replay.
    Replay,
    /// The nonce is older than what the table can still vouch for: challenge again (stale).
    Forgotten,
}

/// The table.
pub struct NcTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    cap_per_shard: usize,
    expires_s: u64,
    window: u32,
}

impl NcTable {
    /// A table of at most `cap` nonces, each remembered `expires_s` seconds after issue;
    /// `window` (0..=64) lower counts may still be used once.
    pub fn new(cap: usize, expires_s: u64, window: u32) -> NcTable {
        NcTable {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        floor: 0,
                        next_purge: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            cap_per_shard: cap.div_ceil(SHARDS).max(4),
            expires_s,
            window: window.min(64),
        }
    }

    /// Records the use of `nc` with the nonce (`ts`, `salt`) at `now_s`.
    pub fn use_nc(&self, ts: u32, salt: u64, nc: u32, now_s: u64) -> NcUse {
        let shard = &self.shards[(self.hasher.hash_one(salt) >> 59) as usize % SHARDS];
        let mut s = shard.lock();
        if ts <= s.floor {
            return NcUse::Forgotten;
        }
        let expires = self.expires_s;
        let live = |e: &Entry| u64::from(e.ts) + expires >= now_s;
        if now_s >= s.next_purge {
            s.map.retain(|_, e| live(e));
            s.next_purge = now_s + (expires / 4).max(1);
        }
        if let Some(e) = s.map.get_mut(&salt) {
            if e.ts != ts {
                // Another nonce with the same salt (2^-64): keep the first, refuse this one.
                return NcUse::Forgotten;
            }
            if nc > e.max_nc {
                let shift = nc - e.max_nc;
                e.seen = if shift >= 64 { 0 } else { e.seen << shift };
                e.seen |= 1;
                e.max_nc = nc;
                return NcUse::Fresh;
            }
            let d = e.max_nc - nc;
            if d < self.window && e.seen & (1u64 << d) == 0 {
                e.seen |= 1u64 << d;
                return NcUse::Fresh;
            }
            return NcUse::Replay;
        }
        if s.map.len() >= self.cap_per_shard {
            s.map.retain(|_, e| live(e));
            if s.map.len() >= self.cap_per_shard {
                // Evict the oldest quarter by issue time and raise the floor past them.
                let mut ts_all: Vec<u32> = s.map.values().map(|e| e.ts).collect();
                let k = ts_all.len() / 4;
                let (_, cut, _) = ts_all.select_nth_unstable(k);
                let cut = *cut;
                s.map.retain(|_, e| e.ts > cut);
                s.floor = s.floor.max(cut);
                if ts <= s.floor {
                    return NcUse::Forgotten;
                }
            }
        }
        s.map.insert(
            salt,
            Entry {
                ts,
                max_nc: nc,
                seen: 1,
            },
        );
        NcUse::Fresh
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most nonces remembered.
    pub fn capacity(&self) -> usize {
        self.cap_per_shard * SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000;
    const TS: u32 = NOW as u32;

    #[test]
    fn the_same_or_a_lower_nc_is_a_replay() {
        let t = NcTable::new(1000, 300, 0);
        assert_eq!(t.use_nc(TS, 1, 1, NOW), NcUse::Fresh);
        assert_eq!(t.use_nc(TS, 1, 1, NOW), NcUse::Replay);
        assert_eq!(t.use_nc(TS, 1, 2, NOW), NcUse::Fresh);
        assert_eq!(t.use_nc(TS, 1, 5, NOW), NcUse::Fresh);
        assert_eq!(t.use_nc(TS, 1, 3, NOW), NcUse::Replay, "lower, no window");
        assert_eq!(t.use_nc(TS, 2, 1, NOW), NcUse::Fresh, "another nonce");
        // Without qop (nc = 0) a nonce is single-use.
        assert_eq!(t.use_nc(TS, 3, 0, NOW), NcUse::Fresh);
        assert_eq!(t.use_nc(TS, 3, 0, NOW), NcUse::Replay);
    }

    #[test]
    fn with_a_window_overtaken_counts_pass_once() {
        let t = NcTable::new(1000, 300, 8);
        assert_eq!(t.use_nc(TS, 1, 5, NOW), NcUse::Fresh);
        assert_eq!(t.use_nc(TS, 1, 3, NOW), NcUse::Fresh);
        assert_eq!(t.use_nc(TS, 1, 3, NOW), NcUse::Replay);
        assert_eq!(t.use_nc(TS, 1, 5, NOW), NcUse::Replay);
        assert_eq!(t.use_nc(TS, 1, 100, NOW), NcUse::Fresh);
        assert_eq!(
            t.use_nc(TS, 1, 92, NOW),
            NcUse::Replay,
            "outside the window"
        );
        assert_eq!(t.use_nc(TS, 1, 93, NOW), NcUse::Fresh);
    }

    #[test]
    fn memory_is_bounded_and_eviction_never_reopens_a_replay() {
        let t = NcTable::new(3200, 300, 0);
        // 100000 distinct nonces issued over 100 s, each used once.
        for i in 0..100_000u64 {
            let ts = TS + (i / 1000) as u32;
            let r = t.use_nc(ts, i, 1, NOW + i / 1000);
            assert_ne!(r, NcUse::Replay);
            assert!(t.len() <= t.capacity());
        }
        // Replaying any of them is refused: as a replay, or as forgotten (stale).
        for i in (0..100_000u64).step_by(997) {
            let ts = TS + (i / 1000) as u32;
            assert_ne!(t.use_nc(ts, i, 1, NOW + 100), NcUse::Fresh, "nonce {i}");
        }
        // Expired entries go as shards are used again.
        for j in 0..1000u64 {
            t.use_nc(TS + 1000, (1 << 40) + j, 1, NOW + 1000);
        }
        assert!(t.len() <= 1000, "{}", t.len());
    }
}
