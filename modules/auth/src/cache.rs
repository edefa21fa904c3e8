//! A bounded TTL cache of subscribers in front of the table, keyed by (username, domain) with a
//! hash so that lookups allocate nothing. Positive and negative (unknown user) entries live in
//! separate caches so that a scan of random user names cannot evict real subscribers.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::subscribers::Subscriber;

const SHARDS: usize = 16;

struct Slot {
    user: Box<[u8]>,
    domain: Box<[u8]>,
    sub: Option<Arc<Subscriber>>,
    until: Instant,
}

struct Map {
    shards: Box<[Mutex<HashMap<u64, Slot>>]>,
    cap_per_shard: usize,
}

impl Map {
    fn new(cap: usize) -> Map {
        Map {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            cap_per_shard: cap.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, h: u64) -> &Mutex<HashMap<u64, Slot>> {
        &self.shards[(h >> 60) as usize % SHARDS]
    }

    fn get(
        &self,
        h: u64,
        user: &[u8],
        domain: &[u8],
        now: Instant,
    ) -> Option<Option<Arc<Subscriber>>> {
        let mut s = self.shard(h).lock();
        match s.get(&h) {
            Some(slot) if &*slot.user == user && &*slot.domain == domain => {
                if slot.until > now {
                    return Some(slot.sub.clone());
                }
                s.remove(&h);
                None
            }
            _ => None,
        }
    }

    fn put(
        &self,
        h: u64,
        user: &[u8],
        domain: &[u8],
        sub: Option<Arc<Subscriber>>,
        until: Instant,
        now: Instant,
    ) {
        let mut s = self.shard(h).lock();
        if s.len() >= self.cap_per_shard && !s.contains_key(&h) {
            s.retain(|_, v| v.until > now);
            if s.len() >= self.cap_per_shard {
                // Still full of live entries: drop an arbitrary one (a cache may forget).
                if let Some(k) = s.keys().next().copied() {
                    s.remove(&k);
                }
            }
        }
        s.insert(
            h,
            Slot {
                user: user.into(),
                domain: domain.into(),
                sub,
                until,
            },
        );
    }

    fn remove(&self, h: u64) {
        self.shard(h).lock().remove(&h);
    }

    fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().clear();
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Result of a cache lookup.
pub(crate) enum Lookup {
    /// Not cached (or expired).
    Miss,
    /// Cached: the subscriber, or `None` for a user known not to exist.
    Hit(Option<Arc<Subscriber>>),
}

pub(crate) struct Cache {
    hasher: RandomState,
    pos: Map,
    neg: Map,
    ttl: Duration,
    neg_ttl: Duration,
    /// Bumped by every write through this node: a read from the table that started before a
    /// write must not overwrite what the write put in the cache.
    generation: AtomicU64,
}

impl Cache {
    pub(crate) fn new(cap: usize, ttl: Duration, neg_ttl: Duration) -> Cache {
        Cache {
            hasher: RandomState::new(),
            pos: Map::new(cap.max(16)),
            neg: Map::new((cap / 4).max(16)),
            ttl,
            neg_ttl,
            generation: AtomicU64::new(0),
        }
    }

    fn key(&self, user: &[u8], domain: &[u8]) -> u64 {
        self.hasher.hash_one((user, domain))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, user: &[u8], domain: &[u8], now: Instant) -> Lookup {
        let h = self.key(user, domain);
        if let Some(s) = self.pos.get(h, user, domain, now) {
            return Lookup::Hit(s);
        }
        if let Some(s) = self.neg.get(h, user, domain, now) {
            return Lookup::Hit(s);
        }
        Lookup::Miss
    }

    /// Caches the result of a table read that started at generation `gen`; ignored if a write
    /// happened since (the write's own entry wins).
    pub(crate) fn fill(
        &self,
        user: &[u8],
        domain: &[u8],
        sub: Option<Arc<Subscriber>>,
        gen_at_read: u64,
        now: Instant,
    ) {
        if self.generation() != gen_at_read {
            return;
        }
        self.put(user, domain, sub, now);
    }

    fn put(&self, user: &[u8], domain: &[u8], sub: Option<Arc<Subscriber>>, now: Instant) {
        let h = self.key(user, domain);
        match sub {
            Some(s) if self.ttl > Duration::ZERO => {
                self.neg.remove(h);
                self.pos.put(h, user, domain, Some(s), now + self.ttl, now);
            }
            Some(_) => {
                self.neg.remove(h);
                self.pos.remove(h);
            }
            None if self.neg_ttl > Duration::ZERO => {
                self.pos.remove(h);
                self.neg.put(h, user, domain, None, now + self.neg_ttl, now);
            }
            None => {
                self.pos.remove(h);
                self.neg.remove(h);
            }
        }
    }

    /// A write through this node: the new state replaces whatever is cached, at once.
    pub(crate) fn written(
        &self,
        user: &[u8],
        domain: &[u8],
        sub: Option<Arc<Subscriber>>,
        now: Instant,
    ) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.put(user, domain, sub, now);
    }

    /// Forgets one user (e.g. after a bulk import).
    pub(crate) fn invalidate(&self, user: &[u8], domain: &[u8]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let h = self.key(user, domain);
        self.pos.remove(h);
        self.neg.remove(h);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.pos.clear();
        self.neg.clear();
    }

    /// Entries (positive, negative).
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.pos.len(), self.neg.len())
    }
}
