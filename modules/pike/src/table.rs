//! A sharded, bounded hash table of per-key state, swept lazily (no timer thread).
//!
//! Memory bound: at most `cap` entries (rounded up to a multiple of the shard count). When a
//! shard is full, entries that carry no information any more are evicted; if none can be, the
//! new key is not tracked (the caller is told, and counts it) and the shard does not try again
//! for a short back-off, so a flood of distinct keys costs O(1) per request.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use parking_lot::Mutex;

/// Per-entry policy.
pub(crate) trait Entry {
    /// The entry can be forgotten by the periodic sweep (idle longer than the retention).
    fn idle(&self, now_ms: u64) -> bool;
    /// The entry can be evicted when the shard is full (it no longer influences any decision).
    fn evictable(&self, now_ms: u64) -> bool;
}

struct Shard<K, V> {
    map: HashMap<K, V>,
    next_sweep_ms: u64,
    no_evict_until_ms: u64,
}

pub(crate) struct Table<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
    cap_per_shard: usize,
    sweep_every_ms: u64,
    evict_backoff_ms: u64,
}

const SHARDS: usize = 64;

impl<K: Hash + Eq + Clone, V: Entry> Table<K, V> {
    pub(crate) fn new(cap: usize, sweep_every_ms: u64, evict_backoff_ms: u64) -> Self {
        let cap_per_shard = cap.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    next_sweep_ms: sweep_every_ms,
                    no_evict_until_ms: 0,
                })
            })
            .collect();
        Table {
            shards,
            hasher: RandomState::new(),
            cap_per_shard,
            sweep_every_ms: sweep_every_ms.max(1),
            evict_backoff_ms: evict_backoff_ms.max(1),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K, V>> {
        let h = self.hasher.hash_one(key);
        // High bits: the map inside the shard uses its own hasher.
        &self.shards[(h >> 58) as usize % SHARDS]
    }

    /// Runs `f` on the entry of `key`, creating it with `create` if missing. `None` when the
    /// key is new and its shard is full of entries that still matter.
    pub(crate) fn upsert<R>(
        &self,
        key: &K,
        now_ms: u64,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let mut s = self.shard(key).lock();
        if now_ms >= s.next_sweep_ms {
            s.map.retain(|_, v| !v.idle(now_ms));
            s.next_sweep_ms = now_ms + self.sweep_every_ms;
        }
        if let Some(v) = s.map.get_mut(key) {
            return Some(f(v));
        }
        if s.map.len() >= self.cap_per_shard {
            if now_ms < s.no_evict_until_ms {
                return None;
            }
            s.map.retain(|_, v| !v.evictable(now_ms));
            if s.map.len() >= self.cap_per_shard {
                s.no_evict_until_ms = now_ms + self.evict_backoff_ms;
                return None;
            }
        }
        let mut v = create();
        let r = f(&mut v);
        s.map.insert(key.clone(), v);
        Some(r)
    }

    /// Runs `f` on the entry of `key` if there is one (never creates).
    pub(crate) fn get_mut<R>(&self, key: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut s = self.shard(key).lock();
        s.map.get_mut(key).map(f)
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn remove(&self, key: &K) -> bool {
        self.shard(key).lock().map.remove(key).is_some()
    }

    /// Removes `key` if `pred` holds for its entry; whether it was removed.
    pub(crate) fn remove_if(&self, key: &K, pred: impl FnOnce(&V) -> bool) -> bool {
        let mut s = self.shard(key).lock();
        if s.map.get(key).is_some_and(pred) {
            s.map.remove(key);
            return true;
        }
        false
    }

    /// Removes every entry matching `pred`; how many.
    pub(crate) fn remove_where(&self, mut pred: impl FnMut(&K, &V) -> bool) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut s = s.lock();
            let before = s.map.len();
            s.map.retain(|k, v| !pred(k, v));
            n += before - s.map.len();
        }
        n
    }

    /// Visits every entry (one shard locked at a time).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for s in self.shards.iter() {
            let s = s.lock();
            for (k, v) in s.map.iter() {
                f(k, v);
            }
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Most entries the table holds.
    pub(crate) fn capacity(&self) -> usize {
        self.cap_per_shard * SHARDS
    }
}
