//! p_usrloc: location partitioned over groups of databases, with consistent hashing, failover,
//! spares and maintenance drain.
//!
//! Users are spread over *groups* by a rendezvous hash of `user@domain` (or `user`); each group
//! is kept on every one of its databases (two or more). Writes go to every database in use of
//! the group, concurrently, and count as stored under the write policy (`all`, `majority`,
//! `one`); reads use one database (the one up longest), falling back to the next on error. A
//! database past the error threshold is turned off for every node through the cluster table
//! (optionally replaced by a spare from another risk group), brought back by a watcher, and
//! then written but not read for `expire_window_s`, so that it holds every live contact again
//! before it is read. Adding groups starts a migration window during which reads fall back to
//! the group the previous layout chose.
//!
//! [`PartitionedBackend`] implements `geosip_store::location::LocationBackend`; hand it to
//! `geosip_usrloc::Location::with_backend` (or use [`open_location`]). See README.md.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admin;
mod backend;
mod cluster;
mod config;
mod db;
mod hash;
mod join;
mod topology;

use std::path::Path;
use std::sync::Arc;

use geosip_usrloc::{Location, UsrlocConfig};
use tokio::runtime::{Handle, RuntimeFlavor};

pub use admin::Rebalance;
pub use backend::PartitionedBackend;
pub use cluster::{ClusterRow, LayoutRow, Status, sql_file as cluster_sql_file};
pub use config::{
    DatabaseEntry, GroupConfig, LocationConfig, PartitionBy, SpareConfig, WritePolicy,
    derived_risk_group,
};
pub use hash::{key_hash, partition_key, place};
pub use topology::DbState;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[location]` section cannot be used.
    #[error("[location]: {0}")]
    Config(String),
    /// A database or the cluster table failed.
    #[error("location store: {0}")]
    Store(#[from] geosip_store::StoreError),
    /// No such database in the cluster table.
    #[error("no location database {no} in group {group}")]
    NotFound {
        /// Group id.
        group: u32,
        /// Number in the group.
        no: u32,
    },
    /// Building the usrloc service failed.
    #[error(transparent)]
    Usrloc(#[from] geosip_usrloc::Error),
    /// A blocking call was made from a current-thread tokio runtime.
    #[error("blocking call from a current-thread tokio runtime")]
    WouldBlock,
}

/// Builds the partitioned backend from `[location]` and the usrloc service over it: `usrloc`
/// gives the other usrloc settings (server id, timer...), `db_mode` comes from `[location]`
/// and the usrloc timeout is raised to cover a read fallback (see
/// [`LocationConfig::usrloc_config`]). `handle` must belong to a multi-thread runtime. Call
/// from a plain thread or a multi-thread runtime worker (it blocks while connecting).
pub fn open_location(
    cfg: &LocationConfig,
    usrloc: &UsrlocConfig,
    data_dir: &Path,
    handle: Handle,
) -> Result<(Location, Arc<PartitionedBackend>), Error> {
    let ucfg = cfg.usrloc_config(usrloc);
    let cfg2 = cfg.clone();
    let dir = data_dir.to_path_buf();
    let h = handle.clone();
    let open = async move { PartitionedBackend::open(cfg2, &dir).await };
    let backend = match Handle::try_current() {
        Err(_) => h.block_on(open)?,
        Ok(cur) if cur.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(open))?
        }
        Ok(_) => return Err(Error::WouldBlock),
    };
    let loc = Location::with_backend(ucfg, backend.clone(), handle)?;
    Ok((loc, backend))
}
