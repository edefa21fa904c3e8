//! `[usrloc]` configuration.

use std::path::Path;
use std::time::Duration;

use geosip_store::StoreConfig;
use serde::Deserialize;

/// Storage mode (Kamailio `db_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbMode {
    /// 0: memory only, nothing persisted.
    Memory,
    /// 1: every change is written to the store before the update returns; a store failure
    /// refuses the update (memory unchanged).
    WriteThrough,
    /// 2: memory is authoritative; changed AORs are flushed in periodic batches (coalesced,
    /// retried after an outage).
    #[default]
    WriteBack,
    /// 3: the store is the authority (shared by several nodes); no memory cache.
    DbOnly,
}

impl DbMode {
    /// Kebab-case name as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DbMode::Memory => "memory",
            DbMode::WriteThrough => "write-through",
            DbMode::WriteBack => "write-back",
            DbMode::DbOnly => "db-only",
        }
    }
}

/// The `[usrloc]` section. Every key is optional; defaults are listed per field.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsrlocConfig {
    /// Storage mode: `memory` | `write-through` | `write-back` | `db-only`. Default `write-back`.
    pub db_mode: DbMode,
    /// Store URL (see `geosip-store`): `sqlite:` (file `geosip.db` in the data dir),
    /// `sqlite://PATH`, `postgres://...`, `mysql://...`, `mariadb://...`, `redis://...`,
    /// `redis+cluster://h:p,h:p`. Default `sqlite:`. Ignored in `memory` mode.
    pub db_url: String,
    /// SQL pool size. Default 8.
    pub pool_size: u32,
    /// Timeout of every store call, ms. Default 2000.
    pub timeout_ms: u64,
    /// Write-back: flush period, ms. Default 1000.
    pub flush_interval_ms: u64,
    /// Write-back: AORs per flush transaction. Default 500.
    pub flush_batch: usize,
    /// Write-back: most AORs waiting for a flush; beyond it the next flush rewrites the whole
    /// table instead (nothing is lost). Default 1000000.
    pub flush_queue_max: usize,
    /// Expiry sweep period, seconds; 0 = the caller drives `Location::expire`. Default 60.
    pub timer_interval_s: u64,
    /// Prefix of Redis keys (no braces). Default `geosip:loc:`.
    pub redis_prefix: String,
    /// This node's id, stored in each binding and in its ruid. Default 0.
    pub server_id: u32,
    /// Capacity of the change-event channel; when full, events are dropped and counted.
    /// Default 65536.
    pub event_queue: usize,
    /// Hard cap of bindings per AOR (a memory bound, not the registrar's `max_contacts`
    /// policy). Default 256, at most 1000.
    pub max_bindings_per_aor: usize,
    /// Rows per page when reloading from the store at startup. Default 1000.
    pub load_page_size: usize,
    /// At most one log line per this many seconds while the store fails. Default 10.
    pub error_log_interval_s: u64,
}

impl Default for UsrlocConfig {
    fn default() -> Self {
        UsrlocConfig {
            db_mode: DbMode::WriteBack,
            db_url: "sqlite:".into(),
            pool_size: 8,
            timeout_ms: 2000,
            flush_interval_ms: 1000,
            flush_batch: 500,
            flush_queue_max: 1_000_000,
            timer_interval_s: 60,
            redis_prefix: "geosip:loc:".into(),
            server_id: 0,
            event_queue: 65536,
            max_bindings_per_aor: 256,
            load_page_size: 1000,
            error_log_interval_s: 10,
        }
    }
}

impl UsrlocConfig {
    /// The store settings for this section; `data_dir` resolves `sqlite:` URLs.
    pub fn store_config(&self, data_dir: &Path) -> StoreConfig {
        StoreConfig {
            url: self.db_url.clone(),
            data_dir: data_dir.to_path_buf(),
            pool_size: self.pool_size,
            timeout: self.timeout(),
            redis_prefix: self.redis_prefix.clone(),
        }
    }

    /// `timeout_ms` as a duration (at least 1 ms).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usrloc_section_parses_with_defaults_and_rejects_unknown_keys() {
        let c: UsrlocConfig =
            toml::from_str("db_mode = \"write-through\"\ndb_url = \"postgres://x/y\"\n").unwrap();
        assert_eq!(c.db_mode, DbMode::WriteThrough);
        assert_eq!(c.db_url, "postgres://x/y");
        assert_eq!(c.flush_batch, UsrlocConfig::default().flush_batch);
        assert!(toml::from_str::<UsrlocConfig>("db_mod = \"memory\"\n").is_err());
        assert!(toml::from_str::<UsrlocConfig>("db_mode = \"sometimes\"\n").is_err());
        let d: UsrlocConfig = toml::from_str("").unwrap();
        assert_eq!(d, UsrlocConfig::default());
    }
}
