//! The `[location]` section: groups of databases, the cluster table, failover and migration.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use geosip_store::{StoreConfig, StoreUrl};
use geosip_usrloc::{DbMode, UsrlocConfig};
use serde::Deserialize;

use crate::Error;

/// What the group is chosen from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum PartitionBy {
    /// `user@domain` of the AOR (Kamailio `use_domain_crc32 = 1`).
    #[default]
    #[serde(rename = "user@domain")]
    UserAtDomain,
    /// The user part only: the same user in every domain lands in the same group.
    #[serde(rename = "user")]
    User,
}

impl PartitionBy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionBy::UserAtDomain => "user@domain",
            PartitionBy::User => "user",
        }
    }
}

/// How many databases of a group must take a write for it to count as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePolicy {
    /// Every database of the group that is in use (status on). Kamailio's default behaviour.
    #[default]
    All,
    /// More than half of the databases in use.
    Majority,
    /// At least one.
    One,
}

impl WritePolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WritePolicy::All => "all",
            WritePolicy::Majority => "majority",
            WritePolicy::One => "one",
        }
    }

    /// Successes needed out of `n` databases written (`n >= 1`).
    pub fn required(self, n: usize) -> usize {
        match self {
            WritePolicy::All => n,
            WritePolicy::Majority => n / 2 + 1,
            WritePolicy::One => 1,
        }
        .clamp(1, n.max(1))
    }
}

/// A database of a group: a URL, or a URL with its risk group.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DatabaseEntry {
    /// Just the URL; the risk group is derived from its host and port.
    Url(String),
    /// URL and explicit risk group.
    Full {
        /// Location database URL.
        url: String,
        /// Databases that fail together (same host, same rack) share a risk group.
        risk_group: Option<u32>,
    },
}

impl DatabaseEntry {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            DatabaseEntry::Url(u) | DatabaseEntry::Full { url: u, .. } => u,
        }
    }

    /// The risk group: explicit, or derived from the server (host:port) of the URL.
    pub fn risk_group(&self) -> u32 {
        match self {
            DatabaseEntry::Full {
                risk_group: Some(rg),
                ..
            } => *rg,
            _ => derived_risk_group(self.url()),
        }
    }
}

/// `[[location.groups]]`: one partition, kept on every database of `databases`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group id (≥ 1). Users are placed by id, so ids must never be reused for other data.
    pub id: u32,
    /// The databases of the group (numbered 1.. in this order); 2 or more for redundancy.
    pub databases: Vec<DatabaseEntry>,
}

/// `[[location.spares]]`: a database that replaces a failed one of any group.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpareConfig {
    /// Database URL.
    pub url: String,
    /// Risk group; default derived from host and port.
    pub risk_group: Option<u32>,
}

/// The `[location]` section (`deny_unknown_fields`). Every key has a default except the groups
/// (or a cluster table that lists them).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocationConfig {
    /// usrloc storage mode over the partitioned store: `db-only` (default, like p_usrloc),
    /// `write-through` or `write-back`.
    pub db_mode: DbMode,
    /// `user@domain` (default) or `user`.
    pub partition_by: PartitionBy,
    /// `all` (default), `majority` or `one`.
    pub write_policy: WritePolicy,
    /// Groups and their databases; ignored when the cluster table has rows.
    pub groups: Vec<GroupConfig>,
    /// Spare databases; ignored when the cluster table has rows.
    pub spares: Vec<SpareConfig>,
    /// Master database holding `location_cluster` and `location_layout` (status writes). Unset:
    /// the table lives in memory on this node only (single node or small setups).
    pub cluster_db_url: Option<String>,
    /// Read-only replica to read the cluster table from. Default: `cluster_db_url`.
    pub cluster_read_url: Option<String>,
    /// Every node re-reads the cluster table this often, seconds. Default 10.
    pub reload_interval_s: u64,
    /// Errors (counted over all nodes) after which a database is turned off. Default 50.
    pub error_threshold: u64,
    /// The watcher tries turned-off databases this often, seconds. Default 10.
    pub retry_interval_s: u64,
    /// A database that came back (or missed a write) is written but not read for this long,
    /// seconds; must be ≥ the registrar's maximum expiry. Default 3600.
    pub expire_window_s: u64,
    /// Timeout of each call to one location database, ms. Default 500.
    pub timeout_ms: u64,
    /// Timeout of calls to the cluster database, ms. Default 2000.
    pub cluster_timeout_ms: u64,
    /// Connections per location database. Default 8.
    pub pool_size: u32,
    /// Connections to the cluster database. Default 2.
    pub cluster_pool_size: u32,
    /// Record a new layout (and start a migration window) as soon as the set of groups in the
    /// cluster table changes. `false`: new groups are used only after `location.rebalance
    /// start`. Default true.
    pub auto_rebalance: bool,
    /// The groups of the layout before the current one (TOML-only setups): reads fall back to
    /// the group this list chose, until the window ends.
    pub previous_groups: Vec<u32>,
    /// When the layout of `groups` replaced `previous_groups`, unix seconds; 0 = node start.
    pub transition_start_s: u64,
    /// Most concurrent look-ups per page when a full load checks bindings left in an old group.
    pub migration_concurrency: usize,
}

impl Default for LocationConfig {
    fn default() -> Self {
        LocationConfig {
            db_mode: DbMode::DbOnly,
            partition_by: PartitionBy::UserAtDomain,
            write_policy: WritePolicy::All,
            groups: Vec::new(),
            spares: Vec::new(),
            cluster_db_url: None,
            cluster_read_url: None,
            reload_interval_s: 10,
            error_threshold: 50,
            retry_interval_s: 10,
            expire_window_s: 3600,
            timeout_ms: 500,
            cluster_timeout_ms: 2000,
            pool_size: 8,
            cluster_pool_size: 2,
            auto_rebalance: true,
            previous_groups: Vec::new(),
            transition_start_s: 0,
            migration_concurrency: 16,
        }
    }
}

impl LocationConfig {
    /// Checks what serde cannot: ids, URLs, intervals.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if self.db_mode == DbMode::Memory {
            return bad("db_mode = \"memory\" has no database to partition; use db-only, write-through or write-back".into());
        }
        if self.groups.is_empty() && self.cluster_db_url.is_none() {
            return bad("[location] needs [[location.groups]] or a cluster_db_url".into());
        }
        let mut ids = BTreeSet::new();
        for g in &self.groups {
            if g.id == 0 {
                return bad("group id 0 is reserved for spares; use ids from 1".into());
            }
            if !ids.insert(g.id) {
                return bad(format!("group id {} appears twice", g.id));
            }
            if g.databases.is_empty() {
                return bad(format!("group {} has no databases", g.id));
            }
            for d in &g.databases {
                check_url(d.url())?;
            }
            if g.databases.len() == 1 {
                tracing::warn!(target: "geosip_p_usrloc", group = g.id, "a group with one database has no redundancy");
            }
        }
        for s in &self.spares {
            check_url(&s.url)?;
        }
        if self.previous_groups.contains(&0) {
            return bad("previous_groups: group id 0 is reserved".into());
        }
        for (k, v) in [
            ("reload_interval_s", self.reload_interval_s),
            ("retry_interval_s", self.retry_interval_s),
            ("error_threshold", self.error_threshold),
            ("expire_window_s", self.expire_window_s),
            ("timeout_ms", self.timeout_ms),
            ("cluster_timeout_ms", self.cluster_timeout_ms),
        ] {
            if v == 0 {
                return bad(format!("{k} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Timeout of one database call.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// Timeout of one call to the cluster database.
    pub fn cluster_timeout(&self) -> Duration {
        Duration::from_millis(self.cluster_timeout_ms.max(1))
    }

    /// Refuses an `expire_window_s` shorter than the registrar's longest expiry: a database
    /// that came back would be read before it holds every live contact.
    pub fn check_max_expires(&self, max_expires_s: u64) -> Result<(), Error> {
        if self.expire_window_s < max_expires_s {
            return Err(Error::Config(format!(
                "expire_window_s = {} is shorter than the registrar's max expiry {max_expires_s} s",
                self.expire_window_s
            )));
        }
        Ok(())
    }

    /// Store settings of one location database.
    pub(crate) fn store_config(&self, url: &str, data_dir: &Path, pool_size: u32) -> StoreConfig {
        StoreConfig {
            url: url.to_string(),
            data_dir: data_dir.to_path_buf(),
            pool_size,
            timeout: self.timeout(),
            redis_prefix: String::new(),
        }
    }

    /// The usrloc settings to run over this backend: `base` with `db_mode` from this section and
    /// a usrloc timeout long enough for one read per database of a group plus one write
    /// (usrloc's own timeout would otherwise cut a read that falls back to a second database).
    pub fn usrloc_config(&self, base: &UsrlocConfig) -> UsrlocConfig {
        let per_group = self
            .groups
            .iter()
            .map(|g| g.databases.len())
            .max()
            .unwrap_or(2)
            .max(2) as u64;
        let mut u = base.clone();
        u.db_mode = self.db_mode;
        u.timeout_ms = u
            .timeout_ms
            .max(self.timeout_ms.saturating_mul(per_group + 2));
        u
    }
}

fn check_url(url: &str) -> Result<(), Error> {
    match StoreUrl::parse(url, Path::new(".")) {
        Ok(StoreUrl::Sqlite { .. } | StoreUrl::Postgres(_) | StoreUrl::MySql(_)) => Ok(()),
        Ok(_) => Err(Error::Config(format!(
            "{url:?}: location groups hold SQL databases (postgres://, mysql://, mariadb://, sqlite:)"
        ))),
        Err(e) => Err(Error::Config(format!("{url:?}: {e}"))),
    }
}

/// The default risk group of a database: a stable number derived from `host:port` of its URL
/// (the server), so that databases on one server share it. 1..=999_999.
pub fn derived_risk_group(url: &str) -> u32 {
    let server = url
        .split_once("://")
        .map(|(_, rest)| {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            rest.split(['/', '?']).next().unwrap_or(rest)
        })
        .unwrap_or(url);
    (xxhash_rust::xxh3::xxh3_64(server.to_ascii_lowercase().as_bytes()) % 999_999) as u32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Top {
        location: LocationConfig,
    }

    #[test]
    fn the_issue_toml_parses_as_written() {
        let t: Top = toml::from_str(
            r#"
[location]
db_mode = "db-only"            # or "write-through", "write-back"
partition_by = "user@domain"   # or "user"
write_policy = "all"           # or "majority", "one"
[[location.groups]]
id = 1
databases = ["postgres://postgres@127.0.0.1:25432/loc", "postgres://postgres@127.0.0.1:25433/loc"]
[[location.groups]]
id = 2
databases = ["mysql://root@127.0.0.1:3306/loc2a", "mysql://root@127.0.0.1:3306/loc2b"]
"#,
        )
        .unwrap();
        let c = t.location;
        assert_eq!(c.db_mode, DbMode::DbOnly);
        assert_eq!(c.partition_by, PartitionBy::UserAtDomain);
        assert_eq!(c.write_policy, WritePolicy::All);
        assert_eq!(c.groups.len(), 2);
        assert_eq!(
            c.groups[1].databases[1].url(),
            "mysql://root@127.0.0.1:3306/loc2b"
        );
        assert!(c.validate().is_ok());
        // Two databases on one server share a risk group; another port is another server.
        assert_eq!(
            c.groups[1].databases[0].risk_group(),
            c.groups[1].databases[1].risk_group()
        );
        assert_ne!(
            c.groups[0].databases[0].risk_group(),
            c.groups[0].databases[1].risk_group()
        );
    }

    #[test]
    fn the_readme_example_parses_and_validates() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n[location]").unwrap() + 8;
        let len = readme[start..].find("```").unwrap();
        let t: Top = toml::from_str(&readme[start..start + len]).unwrap();
        assert!(t.location.validate().is_ok());
        assert_eq!(t.location.spares.len(), 1);
        assert_eq!(t.location.groups[1].databases[1].risk_group(), 3);
    }

    #[test]
    fn every_documented_key_parses_and_unknown_keys_are_rejected() {
        let c: LocationConfig = toml::from_str(
            r#"
db_mode = "write-back"
partition_by = "user"
write_policy = "majority"
cluster_db_url = "postgres://geo@master/cluster"
cluster_read_url = "postgres://geo@replica/cluster"
reload_interval_s = 5
error_threshold = 20
retry_interval_s = 3
expire_window_s = 7200
timeout_ms = 300
cluster_timeout_ms = 1000
pool_size = 4
cluster_pool_size = 1
auto_rebalance = false
previous_groups = [1, 2]
transition_start_s = 1700000000
migration_concurrency = 8
[[groups]]
id = 3
databases = [{ url = "postgres://a/loc", risk_group = 7 }, "mysql://b/loc"]
[[spares]]
url = "postgres://c/loc"
risk_group = 9
"#,
        )
        .unwrap();
        assert_eq!(c.partition_by, PartitionBy::User);
        assert_eq!(c.write_policy, WritePolicy::Majority);
        assert_eq!(c.groups[0].databases[0].risk_group(), 7);
        assert_eq!(c.spares[0].risk_group, Some(9));
        assert!(!c.auto_rebalance);
        assert_eq!(c.cluster_timeout(), Duration::from_secs(1));
        assert!(c.validate().is_ok());
        assert!(c.check_max_expires(7200).is_ok());
        assert!(c.check_max_expires(7201).is_err());
        assert!(toml::from_str::<LocationConfig>("db_mod = \"db-only\"\n").is_err());
        assert!(toml::from_str::<LocationConfig>("write_policy = \"most\"\n").is_err());
        assert!(
            toml::from_str::<LocationConfig>("[[groups]]\nid = 1\ndatabases = []\nx = 1\n")
                .is_err()
        );
        let d: LocationConfig = toml::from_str("").unwrap();
        assert_eq!(d, LocationConfig::default());
        assert!(d.validate().is_err(), "no groups and no cluster table");
    }

    #[test]
    fn invalid_groups_are_refused_with_a_reason() {
        let parse = |s: &str| toml::from_str::<LocationConfig>(s).unwrap().validate();
        assert!(parse("[[groups]]\nid = 0\ndatabases = [\"sqlite::memory:\"]\n").is_err());
        assert!(parse("[[groups]]\nid = 1\ndatabases = []\n").is_err());
        assert!(parse("[[groups]]\nid = 1\ndatabases = [\"redis://x\"]\n").is_err());
        assert!(
            parse("[[groups]]\nid = 1\ndatabases = [\"sqlite::memory:\"]\n[[groups]]\nid = 1\ndatabases = [\"sqlite::memory:\"]\n")
                .is_err()
        );
        assert!(
            parse("reload_interval_s = 0\n[[groups]]\nid = 1\ndatabases = [\"sqlite::memory:\"]\n")
                .is_err()
        );
    }

    #[test]
    fn write_policies_count_the_databases_in_use() {
        assert_eq!(WritePolicy::All.required(2), 2);
        assert_eq!(WritePolicy::All.required(1), 1);
        assert_eq!(WritePolicy::Majority.required(2), 2);
        assert_eq!(WritePolicy::Majority.required(3), 2);
        assert_eq!(WritePolicy::Majority.required(4), 3);
        assert_eq!(WritePolicy::Majority.required(1), 1);
        assert_eq!(WritePolicy::One.required(3), 1);
    }

    #[test]
    fn the_usrloc_timeout_covers_a_read_fallback_and_a_write() {
        let mut c = LocationConfig {
            timeout_ms: 1000,
            ..LocationConfig::default()
        };
        c.groups.push(GroupConfig {
            id: 1,
            databases: vec![
                DatabaseEntry::Url("sqlite::memory:".into()),
                DatabaseEntry::Url("sqlite::memory:".into()),
            ],
        });
        let u = c.usrloc_config(&UsrlocConfig::default());
        assert_eq!(u.db_mode, DbMode::DbOnly);
        assert_eq!(u.timeout_ms, 4000);
    }
}
