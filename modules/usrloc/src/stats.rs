//! Statistics (`ul.stats`, Prometheus).

use serde::Serialize;

/// Counters of the store calls of one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Backend kind (`sqlite`, `postgres`, `mysql`, `redis`, `redis-cluster`, `other`).
    pub backend: &'static str,
    /// Target without credentials.
    pub target: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (timeouts included).
    pub errors: u64,
    /// Calls that hit `timeout_ms`.
    pub timeouts: u64,
    /// Mean call latency, µs.
    pub avg_latency_us: u64,
    /// Largest call latency, µs.
    pub max_latency_us: u64,
}

/// A snapshot of the location service's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Storage mode.
    pub db_mode: &'static str,
    /// AORs in memory (0 in db-only mode).
    pub aors: u64,
    /// Bindings in memory, expired-but-not-yet-swept included (0 in db-only mode).
    pub contacts: u64,
    /// Distinct User-Agent strings held (interned per shard).
    pub user_agents: u64,
    /// Bindings inserted since start.
    pub inserts: u64,
    /// Bindings updated since start.
    pub updates: u64,
    /// Bindings deleted since start.
    pub deletes: u64,
    /// Bindings expired since start.
    pub expired: u64,
    /// Updates refused because the store failed (write-through, db-only).
    pub store_failures: u64,
    /// Events delivered to the channel.
    pub events_sent: u64,
    /// Events dropped because the channel was full.
    pub events_dropped: u64,
    /// Write-back: AORs waiting for a flush.
    pub flush_pending: u64,
    /// Write-back: AORs written by flushes.
    pub flushed_aors: u64,
    /// Write-back: flushes that failed (retried later).
    pub flush_failures: u64,
    /// Write-back: full rewrites after the flush queue overflowed.
    pub resyncs: u64,
    /// Store call counters (`None` in memory mode).
    pub store: Option<StoreStats>,
}
