//! registrar: REGISTER processing (RFC 3261 §10.3, RFC 3327 Path, RFC 5626 outbound keys)
//! and lookup over the location service (Kamailio's `registrar` on top of `usrloc`).
//!
//! ```text
//! let reg = Registrar::new(core.clone(), location.clone(), cfg.registrar.clone());
//! // REGISTER: answers statelessly and returns Kamailio's code (1 inserted, 2 updated,
//! // 3 deleted, 4 query, -1 error, -2 too many contacts)
//! reg.save(&mut ctx, "location", 0);
//! // INVITE to a user: R-URI, dst_uri, branches (1 found, -1 none, -3 error)
//! reg.lookup(&mut ctx, "location");
//! ```
//!
//! The functions take `&self` and may be called from every worker at once; the per-AOR
//! part of a REGISTER runs atomically inside [`Location::update`]. Every `*_at` variant takes
//! the time (unix ms) so that tests need no clock. See README.md for the parameters, the
//! return codes, the RPC methods and the statistics.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod aor;
mod config;
mod format;
mod lookup;
mod metrics;
mod rpc;
mod save;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use geosip_core::Core;
use geosip_core::ctx::MsgCtx;
use geosip_usrloc::{DbMode, Location, unix_ms};

pub use aor::{AorError, MAX_AOR, aor_host, aor_user, canonical_aor, uri_equivalent};
pub use config::{MaxContactsMode, MinExpiresMode, RegistrarConfig};
pub use format::{http_date, qvalue, received_uri};
pub use lookup::{LOOKUP_ERROR, LOOKUP_FOUND, LOOKUP_NOT_FOUND};
pub use metrics::{Metrics, RejectReason};
pub use rpc::{DUMP_DEFAULT, DUMP_MAX, binding_json};
pub use save::{RETRANSMISSION_WINDOW_MS, SaveOutcome};

/// The name of the location table (Kamailio's default `location`). `save`, `lookup`...
/// refuse any other name rather than silently mixing tables.
pub const TABLE: &str = "location";

/// `save()` flag 0x01 (Kamailio: memory only, no DB). Accepted and ignored: the storage mode
/// is the location service's (`usrloc.db_mode`).
pub const SAVE_MEMORY_ONLY: u32 = 0x01;
/// `save()` flag 0x02: do not send the reply (the script answers).
pub const SAVE_NO_REPLY: u32 = 0x02;
/// `save()` flag 0x04: keep one contact per AOR (the request's first), remove the others.
pub const SAVE_ONE_CONTACT: u32 = 0x04;
/// `save()` flag 0x08: do not apply `expires_range` to this registration.
pub const SAVE_NO_EXPIRES_RANGE: u32 = 0x08;

/// `save()` return code: a new binding was inserted.
pub const SAVE_INSERTED: i32 = 1;
/// `save()` return code: bindings were refreshed or changed (or the REGISTER was a
/// retransmission).
pub const SAVE_UPDATED: i32 = 2;
/// `save()` return code: bindings were removed (Expires 0, `Contact: *`).
pub const SAVE_DELETED: i32 = 3;
/// `save()` return code: a query (REGISTER without Contact) was answered with the bindings.
pub const SAVE_QUERIED: i32 = 4;
/// `save()` return code: refused (the error reply was sent).
pub const SAVE_ERROR: i32 = -1;
/// `save()` return code: refused because of `max_contacts` (503 sent).
pub const SAVE_TOO_MANY: i32 = -2;

/// The registrar. Build it once with [`Registrar::new`] and share the `Arc`.
pub struct Registrar {
    core: Arc<Core>,
    loc: Arc<Location>,
    cfg: RegistrarConfig,
    metrics: Arc<Metrics>,
}

impl Registrar {
    /// Builds the registrar over `location`, registers its metrics (`registrar` and
    /// `usrloc` groups) and the `ul.*` RPC methods in `core`. `cfg` is used
    /// [normalized](RegistrarConfig::normalized); call [`RegistrarConfig::validate`] first to
    /// report mistakes to the operator.
    pub fn new(core: Arc<Core>, location: Arc<Location>, cfg: RegistrarConfig) -> Arc<Registrar> {
        let cfg = cfg.normalized();
        let metrics = Arc::new(Metrics::default());
        metrics::register(
            &core.metrics,
            Arc::downgrade(&metrics),
            cfg.clone(),
            Arc::downgrade(&location),
        );
        let reg = Arc::new(Registrar {
            core,
            loc: location,
            cfg,
            metrics,
        });
        rpc::register(&reg.core.rpc, &reg);
        reg
    }

    /// The configuration in use.
    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// The location service.
    pub fn location(&self) -> &Arc<Location> {
        &self.loc
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Kamailio's `save(table, flags)`: processes the REGISTER of `ctx` per RFC 3261 §10.3,
    /// answers it statelessly (unless [`SAVE_NO_REPLY`]) and returns [`SAVE_INSERTED`],
    /// [`SAVE_UPDATED`], [`SAVE_DELETED`], [`SAVE_QUERIED`], [`SAVE_ERROR`] or
    /// [`SAVE_TOO_MANY`]. A request that is not a REGISTER gets -1 and no reply.
    pub fn save(&self, ctx: &mut MsgCtx, table: &str, flags: u32) -> i32 {
        self.save_at(ctx, table, flags, unix_ms())
    }

    /// Kamailio's `lookup(table)`: the contacts of the AOR of the current Request-URI. The
    /// first (highest q, then most recent) becomes the Request-URI (`ctx.new_ruri`, with
    /// `ctx.dst_uri` for NAT, `ctx.ruri_q`, `ctx.ruri_path`, `ctx.send_socket`); the others
    /// are appended to `ctx.branches` with their q, Path, dst_uri and socket. Returns
    /// [`LOOKUP_FOUND`], [`LOOKUP_NOT_FOUND`] or [`LOOKUP_ERROR`].
    pub fn lookup(&self, ctx: &mut MsgCtx, table: &str) -> i32 {
        self.lookup_at(ctx, table, unix_ms())
    }

    /// Kamailio's `registered(table[, uri])`: whether the AOR of `aor` (default: the current
    /// Request-URI) has a live binding. The message is not changed.
    pub fn registered(&self, ctx: &MsgCtx, table: &str, aor: Option<&[u8]>) -> bool {
        self.registered_at(ctx, table, aor, unix_ms())
    }

    /// Kamailio's `unregister(table, uri)`: removes every binding of the AOR of `aor`.
    /// Returns 1 when bindings were removed, -1 for a bad AOR or table, -2 when the store
    /// failed, -3 when there was none (Kamailio documents 0 for success; 1 is used because
    /// 0 ends a native Kamailio script and reads as false).
    pub fn unregister(&self, table: &str, aor: &[u8]) -> i32 {
        self.unregister_at(table, aor, unix_ms())
    }

    /// One round of housekeeping: the expiry sweep and, in write-back mode, a flush.
    /// [`spawn_timers`](Self::spawn_timers) calls it periodically.
    pub fn tick(&self, now_ms: u64) -> Tick {
        let expired = self.loc.expire(now_ms);
        let flushed = if self.loc.mode() == DbMode::WriteBack {
            match self.loc.flush() {
                Ok(n) => n,
                Err(e) => {
                    // The dirty AORs stay queued; the next tick retries.
                    tracing::warn!(target: "geosip_registrar", error = %e, "write-back flush failed");
                    0
                }
            }
        } else {
            0
        };
        Tick { expired, flushed }
    }

    /// Runs [`tick`](Self::tick) every `interval` on a plain thread until the returned handle
    /// is dropped (or the registrar is). Needed when the location service does not sweep by
    /// itself: [`Location::memory`], or `usrloc.timer_interval_s = 0`. (A `Location::open`ed
    /// with a timer already sweeps and flushes on its runtime; a second sweeper is harmless.)
    pub fn spawn_timers(self: &Arc<Self>, interval: Duration) -> std::io::Result<Timers> {
        let (stop, rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(self);
        let interval = interval.max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("registrar-timer".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                loop {
                    match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    next += interval;
                    let Some(reg) = weak.upgrade() else { return };
                    reg.tick(unix_ms());
                }
            })?;
        Ok(Timers {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Logs about bad input from the request's source, rate-limited per source.
    pub(crate) fn log_bad(&self, ctx: &MsgCtx, what: &str) {
        if self.core.loglim.allow(ctx.rx.src.ip(), Instant::now()) {
            tracing::info!(target: "geosip_registrar", src = %ctx.rx.src, "{what}");
        }
    }
}

/// What one [`Registrar::tick`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Bindings removed because they expired.
    pub expired: u64,
    /// Write-back: AORs written to the store.
    pub flushed: u64,
}

/// The timer thread of [`Registrar::spawn_timers`]; dropping it stops and joins the thread.
pub struct Timers {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Timers {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
