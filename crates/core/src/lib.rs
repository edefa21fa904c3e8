//! The geosip engine core: shared configuration types, statistics, the RPC registry, the
//! per-message context that routing modules work on, and the building blocks every module
//! sends with (our Via and Record-Route, forwarding, stateless replies).
//!
//! Modules (`modules/*`) depend on this crate, never on each other's internals; the binary
//! wires them together.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod ctx;
pub mod fwd;
pub mod metrics;
pub mod myself;
pub mod out;
pub mod ratelog;
pub mod rpc;
pub mod stats;

use std::sync::Arc;
use std::time::Instant;

use sip_transport::Transports;

use crate::config::CoreConfig;
use crate::metrics::Registry;
use crate::myself::Myself;
use crate::out::Resolver;
use crate::ratelog::LogLimiter;
use crate::rpc::RpcRegistry;
use crate::stats::CoreStats;

/// Version string reported by `core.version` and the build-info metric.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The services every module works with. One per process, shared as `Arc<Core>`.
pub struct Core {
    /// `[core]` settings.
    pub cfg: CoreConfig,
    /// Listening sockets and connections.
    pub transports: Transports,
    /// Our addresses and domains.
    pub myself: Myself,
    /// Next-hop name resolution.
    pub resolver: Resolver,
    /// Message counters.
    pub stats: Arc<CoreStats>,
    /// Metrics registry (every module registers its collector).
    pub metrics: Registry,
    /// RPC registry (every module registers its commands).
    pub rpc: RpcRegistry,
    /// Rate limit for logs about bad input.
    pub loglim: LogLimiter,
    /// When the server started.
    pub started: Instant,
    /// Per-process secret for branches and tags.
    pub secret: u64,
}

impl Core {
    /// Assembles the core around bound transports.
    pub fn new(
        cfg: CoreConfig,
        transports: Transports,
        metrics: Registry,
        rpc: RpcRegistry,
        bad_per_minute: u32,
    ) -> Self {
        let myself = Myself::new(transports.sockets(), cfg.advertise.as_deref(), &cfg.domains);
        let stats = Arc::new(CoreStats::default());
        stats.register(&metrics, VERSION);
        let secret = {
            let mut x = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9);
            x ^= u64::from(std::process::id()) << 32;
            xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes())
        };
        Core {
            cfg,
            transports,
            myself,
            resolver: Resolver::new(),
            stats,
            metrics,
            rpc,
            loglim: LogLimiter::new(bad_per_minute),
            started: Instant::now(),
            secret,
        }
    }
}

pub mod routes;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
