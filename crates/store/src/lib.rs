//! Storage backends (embedded SQLite, PostgreSQL, MySQL/MariaDB, Redis) for location, subscribers
//! and the location cluster table.
//!
//! Layout: one module per table family. [`location`] holds the location table (usrloc's
//! persistence): the [`location::LocationBackend`] trait and its SQL ([`location::sql`]) and
//! Redis ([`location::redis`]) implementations. [`subscriber`] holds the subscriber table
//! (digest auth, SQL only) with its master/replica routing; the partition table (p_usrloc) goes
//! beside them as `cluster`. All reuse [`StoreUrl`], [`StoreConfig`] and the pools built in
//! [`location::sql`].
//!
//! # URLs
//! | URL | backend |
//! |---|---|
//! | `sqlite:` | SQLite file `geosip.db` in the data dir |
//! | `sqlite:NAME` | SQLite file `NAME` in the data dir |
//! | `sqlite://PATH` (`sqlite:///abs/path.db`) | SQLite file at PATH |
//! | `sqlite::memory:` | in-memory SQLite (tests) |
//! | `postgres://user:pass@host:port/db` (`postgresql://`) | PostgreSQL |
//! | `mysql://user:pass@host:port/db`, `mariadb://...` | MySQL / MariaDB |
//! | `redis://[:pass@]host:port[/db]` | Redis standalone |
//! | `redis+cluster://[:pass@]host:port,host:port,...` | Redis Cluster (seed nodes) |
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
pub mod location;
pub mod subscriber;
#[cfg(feature = "testutil")]
pub mod testutil;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{StoreError, StoreResult};

/// Connection settings shared by every backend.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Backend URL (see the crate docs).
    pub url: String,
    /// Directory for `sqlite:` URLs without a path.
    pub data_dir: PathBuf,
    /// Maximum connections of an SQL pool (Redis multiplexes one connection per node).
    pub pool_size: u32,
    /// Connect / acquire / response timeout.
    pub timeout: Duration,
    /// Prefix of every Redis key (no `{` or `}`: the AOR is the hash tag).
    pub redis_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite:".into(),
            data_dir: PathBuf::from("geosip-data"),
            pool_size: 8,
            timeout: Duration::from_millis(2000),
            redis_prefix: "geosip:loc:".into(),
        }
    }
}

/// A parsed backend URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// SQLite: a file, or `None` for an in-memory database.
    Sqlite {
        /// Database file; `None` = `:memory:`.
        path: Option<PathBuf>,
    },
    /// PostgreSQL URL (`postgres://...`).
    Postgres(String),
    /// MySQL/MariaDB URL, normalised to `mysql://...`.
    MySql(String),
    /// Redis standalone URL.
    Redis(String),
    /// Redis Cluster seed nodes, each as `redis://[:pass@]host:port`.
    RedisCluster(Vec<String>),
}

impl StoreUrl {
    /// Parses `url`; `sqlite:` URLs without `//` are relative to `data_dir`.
    pub fn parse(url: &str, data_dir: &Path) -> StoreResult<StoreUrl> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| StoreError::Config(format!("no scheme in store URL {url:?}")))?;
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                if rest == ":memory:" {
                    Ok(StoreUrl::Sqlite { path: None })
                } else if let Some(path) = rest.strip_prefix("//") {
                    if path.is_empty() {
                        return Err(StoreError::Config("sqlite:// needs a path".into()));
                    }
                    Ok(StoreUrl::Sqlite {
                        path: Some(PathBuf::from(path)),
                    })
                } else if rest.is_empty() {
                    Ok(StoreUrl::Sqlite {
                        path: Some(data_dir.join("geosip.db")),
                    })
                } else {
                    Ok(StoreUrl::Sqlite {
                        path: Some(data_dir.join(rest)),
                    })
                }
            }
            "postgres" | "postgresql" => Ok(StoreUrl::Postgres(url.to_string())),
            "mysql" => Ok(StoreUrl::MySql(url.to_string())),
            "mariadb" => Ok(StoreUrl::MySql(format!("mysql:{rest}"))),
            "redis" => Ok(StoreUrl::Redis(url.to_string())),
            "redis+cluster" => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let hosts = hosts.split(['/', '?']).next().unwrap_or_default();
                let nodes: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("redis://{auth}{h}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(StoreError::Config(format!("no nodes in {url:?}")));
                }
                Ok(StoreUrl::RedisCluster(nodes))
            }
            other => Err(StoreError::Config(format!(
                "unsupported store scheme {other:?} (sqlite, postgres, mysql, mariadb, redis, redis+cluster)"
            ))),
        }
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted(&self) -> String {
        fn redact(u: &str) -> String {
            match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let creds = &u[s + 3..at];
                    match creds.split_once(':') {
                        Some((user, _)) => format!("{}{user}:***{}", &u[..s + 3], &u[at..]),
                        None => u.to_string(),
                    }
                }
                _ => u.to_string(),
            }
        }
        match self {
            StoreUrl::Sqlite { path: Some(p) } => format!("sqlite://{}", p.display()),
            StoreUrl::Sqlite { path: None } => "sqlite::memory:".into(),
            StoreUrl::Postgres(u) | StoreUrl::MySql(u) | StoreUrl::Redis(u) => redact(u),
            StoreUrl::RedisCluster(nodes) => nodes
                .iter()
                .map(|n| redact(n))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_their_backend() {
        let dir = Path::new("/var/lib/geosip");
        assert_eq!(
            StoreUrl::parse("sqlite:", dir).ok(),
            Some(StoreUrl::Sqlite {
                path: Some(PathBuf::from("/var/lib/geosip/geosip.db"))
            })
        );
        assert_eq!(
            StoreUrl::parse("sqlite:loc.db", dir).ok(),
            Some(StoreUrl::Sqlite {
                path: Some(PathBuf::from("/var/lib/geosip/loc.db"))
            })
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///tmp/x.db", dir).ok(),
            Some(StoreUrl::Sqlite {
                path: Some(PathBuf::from("/tmp/x.db"))
            })
        );
        assert_eq!(
            StoreUrl::parse("sqlite::memory:", dir).ok(),
            Some(StoreUrl::Sqlite { path: None })
        );
        assert_eq!(
            StoreUrl::parse("mariadb://root@127.0.0.1/db", dir).ok(),
            Some(StoreUrl::MySql("mysql://root@127.0.0.1/db".into()))
        );
        assert_eq!(
            StoreUrl::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000", dir).ok(),
            Some(StoreUrl::RedisCluster(vec![
                "redis://:pw@10.0.0.1:7000".into(),
                "redis://:pw@10.0.0.2:7000".into()
            ]))
        );
        assert!(StoreUrl::parse("mongodb://x", dir).is_err());
    }

    #[test]
    fn redacted_urls_hide_passwords() {
        let u = StoreUrl::parse("postgres://geo:secret@db:5432/geo", Path::new(".")).ok();
        assert_eq!(
            u.map(|u| u.redacted()),
            Some("postgres://geo:***@db:5432/geo".to_string())
        );
    }
}
