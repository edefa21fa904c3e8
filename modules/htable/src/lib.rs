//! htable: named key-value tables shared by every worker's script, with a time-to-live
//! (Kamailio's `htable`). Used for per-user counters, blocklists, caches.
//!
//! Every table is bounded (`max_entries`): when full, expired entries are swept and, if it is
//! still full, the write is refused rather than growing without limit.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

/// `[htable]` configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HtableConfig {
    /// TTL in seconds of tables not listed in `tables` (0 = entries never expire).
    pub default_ttl_s: u64,
    /// Entry limit of tables not listed in `tables`.
    pub default_max_entries: usize,
    /// Per-table settings: `[htable.tables.blocklist] ttl_s = 300`.
    pub tables: HashMap<String, TableConfig>,
}

impl Default for HtableConfig {
    fn default() -> Self {
        HtableConfig {
            default_ttl_s: 0,
            default_max_entries: 100_000,
            tables: HashMap::new(),
        }
    }
}

/// One table's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableConfig {
    /// Seconds an entry lives after its last write (0 = forever).
    pub ttl_s: u64,
    /// Most entries kept.
    pub max_entries: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            ttl_s: 0,
            max_entries: 100_000,
        }
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Integer (counters).
    Int(i64),
    /// Byte string.
    Str(Vec<u8>),
}

const SHARDS: usize = 16;

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

/// One named table.
pub struct Table {
    shards: Vec<Mutex<HashMap<Vec<u8>, Entry>>>,
    ttl: Option<Duration>,
    max_per_shard: usize,
}

impl Table {
    fn new(cfg: &TableConfig) -> Self {
        Table {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            ttl: (cfg.ttl_s > 0).then(|| Duration::from_secs(cfg.ttl_s)),
            max_per_shard: cfg.max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Entry>> {
        let h = key.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        &self.shards[(h % SHARDS as u64) as usize]
    }

    fn get(&self, key: &[u8], now: Instant) -> Option<Value> {
        let mut s = self.shard(key).lock();
        match s.get(key) {
            Some(e) if e.expires.is_none_or(|x| x > now) => Some(e.value.clone()),
            Some(_) => {
                s.remove(key);
                None
            }
            None => None,
        }
    }

    fn make_room(&self, s: &mut HashMap<Vec<u8>, Entry>, key: &[u8], now: Instant) -> bool {
        if s.len() < self.max_per_shard || s.contains_key(key) {
            return true;
        }
        s.retain(|_, e| e.expires.is_none_or(|x| x > now));
        s.len() < self.max_per_shard
    }

    fn set(&self, key: &[u8], value: Value, now: Instant) -> bool {
        let mut s = self.shard(key).lock();
        if !self.make_room(&mut s, key, now) {
            return false;
        }
        s.insert(
            key.to_vec(),
            Entry {
                value,
                expires: self.ttl.map(|t| now + t),
            },
        );
        true
    }

    fn add(&self, key: &[u8], by: i64, now: Instant) -> Option<i64> {
        let mut s = self.shard(key).lock();
        if !self.make_room(&mut s, key, now) {
            return None;
        }
        let expires = self.ttl.map(|t| now + t);
        let e = s.entry(key.to_vec()).or_insert(Entry {
            value: Value::Int(0),
            expires,
        });
        if e.expires.is_some_and(|x| x <= now) {
            e.value = Value::Int(0);
        }
        let v = match &e.value {
            Value::Int(i) => i.saturating_add(by),
            Value::Str(_) => by,
        };
        e.value = Value::Int(v);
        e.expires = expires;
        Some(v)
    }

    fn remove(&self, key: &[u8]) -> bool {
        self.shard(key).lock().remove(key).is_some()
    }

    fn sweep(&self, now: Instant) -> usize {
        let mut n = 0;
        for s in &self.shards {
            let mut s = s.lock();
            let before = s.len();
            s.retain(|_, e| e.expires.is_none_or(|x| x > now));
            n += before - s.len();
        }
        n
    }

    fn dump(&self, now: Instant, limit: usize) -> Vec<(Vec<u8>, Value)> {
        let mut out = Vec::new();
        for s in &self.shards {
            for (k, e) in s.lock().iter() {
                if out.len() >= limit {
                    return out;
                }
                if e.expires.is_none_or(|x| x > now) {
                    out.push((k.clone(), e.value.clone()));
                }
            }
        }
        out
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// All tables.
pub struct Htable {
    cfg: HtableConfig,
    tables: RwLock<HashMap<String, Arc<Table>>>,
}

/// Most tables created on the fly by scripts (bounded: table names come from scripts, but a
/// script may build them from message data).
const MAX_TABLES: usize = 256;

impl Htable {
    /// Tables as configured; others are created on first use with the defaults.
    pub fn new(cfg: HtableConfig) -> Self {
        let mut tables = HashMap::new();
        for (name, t) in &cfg.tables {
            tables.insert(name.clone(), Arc::new(Table::new(t)));
        }
        Htable {
            cfg,
            tables: RwLock::new(tables),
        }
    }

    fn table(&self, name: &str) -> Option<Arc<Table>> {
        if let Some(t) = self.tables.read().get(name) {
            return Some(Arc::clone(t));
        }
        let mut w = self.tables.write();
        if w.len() >= MAX_TABLES && !w.contains_key(name) {
            return None;
        }
        let tc = TableConfig {
            ttl_s: self.cfg.default_ttl_s,
            max_entries: self.cfg.default_max_entries,
        };
        Some(Arc::clone(
            w.entry(name.to_string())
                .or_insert_with(|| Arc::new(Table::new(&tc))),
        ))
    }

    /// `sht_get`: the value, if present and not expired.
    pub fn get(&self, table: &str, key: &[u8], now: Instant) -> Option<Value> {
        self.tables.read().get(table).and_then(|t| t.get(key, now))
    }

    /// `sht_sets`/`sht_seti`: stores a value (TTL restarts). False when the table is full.
    pub fn set(&self, table: &str, key: &[u8], value: Value, now: Instant) -> bool {
        self.table(table).is_some_and(|t| t.set(key, value, now))
    }

    /// `sht_inc`/`sht_dec`: adds `by` to an integer (missing or expired counts as 0) and
    /// returns the new value; `None` when the table is full.
    pub fn add(&self, table: &str, key: &[u8], by: i64, now: Instant) -> Option<i64> {
        self.table(table).and_then(|t| t.add(key, by, now))
    }

    /// `sht_rm`: removes a key; true if it existed.
    pub fn remove(&self, table: &str, key: &[u8]) -> bool {
        self.tables.read().get(table).is_some_and(|t| t.remove(key))
    }

    /// Removes expired entries of every table; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let tables: Vec<Arc<Table>> = self.tables.read().values().cloned().collect();
        tables.iter().map(|t| t.sweep(now)).sum()
    }

    /// Up to `limit` live entries of a table.
    pub fn dump(&self, table: &str, now: Instant, limit: usize) -> Vec<(Vec<u8>, Value)> {
        self.tables
            .read()
            .get(table)
            .map(|t| t.dump(now, limit))
            .unwrap_or_default()
    }

    /// Table names with their entry counts.
    pub fn list(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .tables
            .read()
            .iter()
            .map(|(k, t)| (k.clone(), t.len()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_expires_after_the_table_ttl_and_counters_restart_from_zero() {
        let mut cfg = HtableConfig::default();
        cfg.tables.insert(
            "t".into(),
            TableConfig {
                ttl_s: 10,
                max_entries: 100,
            },
        );
        let h = Htable::new(cfg);
        let t0 = Instant::now();
        assert!(h.set("t", b"k", Value::Str(b"v".to_vec()), t0));
        assert_eq!(
            h.get("t", b"k", t0 + Duration::from_secs(9)),
            Some(Value::Str(b"v".to_vec()))
        );
        assert_eq!(h.get("t", b"k", t0 + Duration::from_secs(10)), None);
        assert_eq!(h.add("t", b"c", 2, t0), Some(2));
        assert_eq!(h.add("t", b"c", 3, t0), Some(5));
        assert_eq!(h.add("t", b"c", 1, t0 + Duration::from_secs(11)), Some(1));
    }

    #[test]
    fn a_full_table_refuses_new_keys_but_accepts_updates() {
        let mut cfg = HtableConfig::default();
        cfg.tables.insert(
            "small".into(),
            TableConfig {
                ttl_s: 0,
                max_entries: 16,
            },
        );
        let h = Htable::new(cfg);
        let now = Instant::now();
        let mut stored = 0;
        for i in 0..1000u32 {
            if h.set("small", &i.to_le_bytes(), Value::Int(1), now) {
                stored += 1;
            }
        }
        assert!(stored <= 16, "{stored}");
        assert!(h.list()[0].1 <= 16);
        assert!(h.remove("small", &0u32.to_le_bytes()) || stored < 1000);
    }
}
