//! `tm`: the transaction-stateful proxy core (Kamailio's `tm`), RFC 3261 §16 on top of the
//! sans-I/O §17 / RFC 6026 transactions of `sip-txn`.
//!
//! # What it does
//!
//! * [`Tm::t_relay`] creates the proxy transaction of a request (a server transaction towards
//!   the caller, 100 Trying for INVITE), forks to the targets of the highest q in parallel and
//!   keeps the lower q groups for serial forking (RFC 3261 §16.6), one client transaction per
//!   branch, over UDP or TCP whatever the caller used.
//! * [`Tm::on_reply`] matches every response by its branch (which encodes the transaction id,
//!   a random salt and the branch index: one integer lookup, no string hashing), relays
//!   provisionals and every 2xx at once, ACKs non-2xx finals itself, CANCELs the other
//!   branches on a 2xx or a 6xx, and when every branch is done picks the best response
//!   (§16.7), runs the failure route, or moves on to the next q group.
//! * [`Tm::pre_request`] absorbs retransmissions and the ACK of a non-2xx final, and answers a
//!   matching CANCEL (200 hop by hop, CANCEL on the branches, 487 to the caller).
//! * Timers (`fr_timer`, `fr_inv_timer`, RFC 3261 A-M) run on per-shard
//!   [`TimerWheel`](sip_txn::TimerWheel)s driven by [`Tm::tick`] ([`Tm::spawn_timer`]).
//!
//! # Threading and locking
//!
//! Transactions live in [`SHARDS`] shards, each a `parking_lot::Mutex` over an id → transaction
//! map, a key index for request matching (`sip_txn::TxnKey`, RFC 2543 keys included) and a
//! timer wheel. Each transaction is an `Arc<Mutex<ProxyTxn>>`: a shard lock is held only to
//! find, insert or remove an entry or move its timer, never while a transaction is processed,
//! a message is sent or a script hook runs. Lock order is transaction → shard, never the
//! reverse, so replies of one call arriving on several worker threads simply queue on the
//! transaction lock.
//!
//! Script hooks run with the transaction locked. During a failure route the lock guard is
//! parked in a thread-local ("the current transaction"): `t_relay`, `t_reply`,
//! `t_next_contacts`, `t_is_canceled`... called back from the script on that thread use it
//! without locking again. Any other tm entry point called while this thread holds a
//! transaction (from a reply or branch route) refuses ([`TmError::NotAllowed`] / `false`)
//! instead of deadlocking. Hooks may run on any worker thread and on the timer thread.
//!
//! # Calls the pipeline makes
//!
//! For every request: [`Tm::pre_request`] first; on [`Pre::Continue`] run the script, which
//! calls [`Tm::t_relay`] / [`Tm::t_reply`] (or forwards / replies statelessly). For every
//! response: [`Tm::on_reply`]; when it gives the response back, forward it statelessly if the
//! top Via is ours (`Core::forward_reply_stateless`), else drop it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod best;
mod branch;
mod build;
mod config;
mod engine;
mod error;
mod stats;
mod table;
mod txn;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use geosip_core::Core;
use geosip_core::ctx::{MsgCtx, RxInfo};
use geosip_core::routes::{FailureInfo, NoRoutes, RouteHooks};
use parking_lot::{ArcMutexGuard, Mutex, RawMutex};
use sip_msg::{Method, SipMessage};
use sip_transport::Destination;
use sip_txn::{RequestDisposition, TimerConfig, TxnKind};
use smallvec::SmallVec;

pub use best::{Candidate, aggregates_challenges, best, upstream_status};
pub use branch::{BRANCH_LEN, BranchId};
pub use config::TmConfig;
pub use error::{Side, TmError};
pub use stats::TmStats;

use crate::stats::TmCounters;
use crate::table::Shard;
use crate::txn::ProxyTxn;

/// Most branches one transaction creates over its life (parallel and serial), as Kamailio's
/// `MAX_BRANCHES`. Bounds memory per transaction; the branch index fits one hex digit.
pub const MAX_BRANCHES: usize = 12;

/// Number of table shards (a power of two; the low bits of a transaction id name its shard).
pub const SHARDS: usize = 64;

/// What [`Tm::pre_request`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    /// tm consumed the request (retransmission absorbed, CANCEL answered, ACK of a non-2xx
    /// final absorbed): do not run the script.
    Handled,
    /// Run the script.
    Continue,
}

type TxnRef = Arc<Mutex<ProxyTxn>>;
type TxnGuard = ArcMutexGuard<RawMutex, ProxyTxn>;

thread_local! {
    /// The transaction whose failure route runs on this thread.
    static CURRENT: RefCell<Option<TxnGuard>> = const { RefCell::new(None) };
    /// What that failure route was told.
    static FAILURE: Cell<Option<FailureInfo>> = const { Cell::new(None) };
    /// How many tm entry points are active on this thread (they may hold a transaction).
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as (possibly) holding a transaction lock for its lifetime.
struct Held;

impl Held {
    fn enter() -> Held {
        HELD.with(|h| h.set(h.get().saturating_add(1)));
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

fn held() -> bool {
    HELD.with(|h| h.get() > 0)
}

/// Runs `f` on the current transaction (failure route on this thread), if any and free.
fn with_current<R>(f: impl FnOnce(&mut ProxyTxn) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let mut b = c.try_borrow_mut().ok()?;
        let g = b.as_mut()?;
        Some(f(g))
    })
}

/// The transaction-stateful proxy. One per process, shared as `Arc<Tm>`.
pub struct Tm {
    core: Arc<Core>,
    cfg: TmConfig,
    timers: TimerConfig,
    wait: Duration,
    hooks: ArcSwap<Arc<dyn RouteHooks>>,
    shards: Box<[Shard]>,
    next_seq: AtomicU64,
    live_total: AtomicUsize,
    counters: Arc<TmCounters>,
    stop: AtomicBool,
    /// The `tm-timer` thread, parked while no transaction is alive (set by that thread,
    /// cleared by whoever wakes it): an idle proxy is not woken 100 times a second.
    timer_idle: AtomicBool,
    timer_thread: std::sync::OnceLock<std::thread::Thread>,
    /// Branches whose first send opened a stream connection, by remote address: when the
    /// connection attempt fails later (asynchronously), those branches get their transport
    /// error (503, RFC 3261 §8.1.3.1) at once instead of waiting for their timer. Bounded.
    connecting: parking_lot::Mutex<HashMap<SocketAddr, Waiting>>,
    /// Failed sends reported by the transport (on its own threads), handled by the timer
    /// thread: failure routes must not run on the I/O runtime. Bounded.
    failed_sends: parking_lot::Mutex<Vec<Destination>>,
}

/// Branches waiting on one connection attempt: (transaction id, salt, branch index).
type Waiting = SmallVec<[(u64, u32, u8); 4]>;

/// Longest the idle timer thread parks before looking again. Opening a transaction wakes it,
/// so this is only a safety net; it is longer than the tests' wait for a timed-out call, so
/// that a lost wake-up fails them.
const IDLE_PARK: Duration = Duration::from_secs(5);

/// Most addresses tracked in [`Tm::connecting`] (past this it is cleared: a branch that is
/// forgotten still ends by its timer).
const MAX_CONNECTING: usize = 4096;

impl Tm {
    /// Creates the transaction layer on `core`, registers the `tm` metrics collector and the
    /// `tm.stats` RPC. Script hooks default to none ([`NoRoutes`]) until
    /// [`set_routes`](Self::set_routes).
    pub fn new(core: Arc<Core>, cfg: TmConfig) -> Arc<Tm> {
        let counters = Arc::new(TmCounters::default());
        counters.register(&core.metrics, &core.rpc);
        let start = Instant::now();
        let shards = (0..SHARDS).map(|_| Shard::new(start)).collect();
        let hooks: Arc<dyn RouteHooks> = Arc::new(NoRoutes);
        let tm = Arc::new(Tm {
            timers: cfg.timers(),
            wait: cfg.wait(),
            cfg,
            core,
            hooks: ArcSwap::from_pointee(hooks),
            shards,
            next_seq: AtomicU64::new(1),
            live_total: AtomicUsize::new(0),
            counters,
            stop: AtomicBool::new(false),
            timer_idle: AtomicBool::new(false),
            timer_thread: std::sync::OnceLock::new(),
            connecting: parking_lot::Mutex::new(HashMap::new()),
            failed_sends: parking_lot::Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&tm);
        tm.core.rpc.register(
            "tm.list",
            "[MAX]",
            "Live transactions (at most MAX, default 100): id, method, states of the server \
             and client transactions, final status, age of the final, next timer.",
            move |p| {
                let max = p.first().and_then(serde_json::Value::as_u64).unwrap_or(100);
                let tm = weak
                    .upgrade()
                    .ok_or_else(|| geosip_core::rpc::RpcError::failed("tm is shut down"))?;
                Ok(tm.list(usize::try_from(max).unwrap_or(usize::MAX)))
            },
        );
        tm
    }

    /// Installs the script's failure / branch / reply routes. Called again on hot reload:
    /// transactions in flight use the new script for their next hook.
    pub fn set_routes(&self, hooks: Arc<dyn RouteHooks>) {
        self.hooks.store(Arc::new(hooks));
    }

    /// The configuration in use.
    pub fn config(&self) -> &TmConfig {
        &self.cfg
    }

    /// The core this layer sends through.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Transactions alive now (INVITE and non-INVITE).
    pub fn live(&self) -> usize {
        self.live_total.load(Ordering::Relaxed)
    }

    /// A copy of the counters (also exposed as metrics and by `tm.stats`).
    pub fn stats(&self) -> TmStats {
        self.counters.snapshot()
    }

    /// Called by the pipeline for every request before the script:
    /// * a retransmission of a request whose server transaction is alive is absorbed (its last
    ///   response is resent) → [`Pre::Handled`];
    /// * a CANCEL matching a live INVITE transaction is answered 200 (RFC 3261 §9.2, §16.10),
    ///   the branches are cancelled (a CANCEL goes on the branches that had a provisional,
    ///   the others are cancelled as soon as one arrives, RFC 3261 §9.1) and the caller gets
    ///   487 once every branch is done → `Handled`;
    /// * an ACK matching an INVITE transaction answered with a non-2xx final is absorbed
    ///   (§17.2.1) → `Handled`;
    /// * anything else (new requests, the ACK of a 2xx — it has a new branch —, an unmatched
    ///   CANCEL, which the script forwards statelessly per §16.10) → [`Pre::Continue`].
    pub fn pre_request(&self, ctx: &mut MsgCtx) -> Pre {
        if held() || !ctx.msg.is_request() {
            return Pre::Continue;
        }
        let _held = Held::enter();
        let now = Instant::now();
        match ctx.msg.method() {
            Some(Method::Cancel) => {
                if self.cancel_matching(ctx, now) {
                    Pre::Handled
                } else {
                    Pre::Continue
                }
            }
            method => {
                let Some(r) = engine::request_key(&ctx.msg, false).and_then(|k| self.lookup_key(k))
                else {
                    return Pre::Continue;
                };
                let mut g = r.lock_arc();
                if g.freed {
                    return Pre::Continue;
                }
                let disp = if method == Some(Method::Ack) {
                    g.server.handle_ack(now)
                } else {
                    g.server.handle_retransmission(now)
                };
                if disp == RequestDisposition::Absorbed && method != Some(Method::Ack) {
                    self.counters.retrans_absorbed.inc();
                }
                self.settle(g, now, false);
                if disp == RequestDisposition::Absorbed {
                    Pre::Handled
                } else {
                    Pre::Continue
                }
            }
        }
    }

    /// Kamailio's `t_relay()`: relays the request of `ctx` statefully.
    ///
    /// From the request route: creates the proxy transaction (100 Trying for an INVITE when
    /// `auto_inv_100`), takes `ctx.targets()` and forks by q (RFC 3261 §16.6): the targets of
    /// the highest q go out in parallel, the lower q groups wait in the transaction for
    /// [`t_next_contacts`](Self::t_next_contacts) (or, without a failure route, are tried in
    /// turn automatically when a group fails). Per branch: the branch route
    /// (`ctx.on_branch`) runs, the next hop is resolved (`$du`, Path, pre-loaded Route,
    /// R-URI), the socket of the right transport is picked (UDP↔TCP bridging), the request is
    /// built with our Via, Max-Forwards, Path, Record-Route, and sent on a new client
    /// transaction. `ctx.on_failure` / `ctx.on_reply` are taken from `ctx` now. Afterwards
    /// `ctx.relayed` is set and `ctx.branches` (the destination set) is emptied, as Kamailio
    /// does.
    ///
    /// An ACK is forwarded statelessly (`Core::forward_stateless`), so is a CANCEL that
    /// matches no transaction. A retransmission that raced past `pre_request` is absorbed
    /// (`Ok`).
    ///
    /// From a failure route on this thread: adds the targets of `ctx` as new branches of the
    /// failing transaction (serial forking); fails with [`TmError::Closed`] once the
    /// transaction was cancelled or got a 6xx.
    ///
    /// On error nothing was sent (the transaction is forgotten): answer
    /// [`TmError::status`].
    pub fn t_relay(&self, ctx: &mut MsgCtx) -> Result<(), TmError> {
        let now = Instant::now();
        if let Some(r) = with_current(|t| self.relay_in_failure(t, ctx, now)) {
            return r;
        }
        if held() {
            return Err(TmError::NotAllowed);
        }
        let _held = Held::enter();
        self.relay_new(ctx, now)
    }

    /// Kamailio's `t_reply(status, reason)`: answers the request of `ctx` statefully, with
    /// `headers` added. The server transaction is created if needed, so retransmissions of
    /// the request get this answer again and the ACK of a non-2xx final is absorbed. A final
    /// answer ends any branch still pending (CANCEL). From a failure route it answers the
    /// failing transaction. When the table is full the answer is sent statelessly.
    pub fn t_reply(
        &self,
        ctx: &mut MsgCtx,
        status: u16,
        reason: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) -> Result<(), TmError> {
        let now = Instant::now();
        if !(100..=699).contains(&status) {
            return Err(TmError::BadRequest);
        }
        if let Some(r) = with_current(|t| {
            let r = self.reply_on(t, ctx, status, reason, headers, now);
            self.pump(t, now);
            r
        }) {
            return r;
        }
        if held() {
            return Err(TmError::NotAllowed);
        }
        let _held = Held::enter();
        self.reply_new(ctx, status, reason, headers, now)
    }

    /// Kamailio's `t_newtran()`: creates the server transaction of the request without
    /// relaying it (so retransmissions are absorbed while the script works, e.g. before a
    /// slow lookup). `Ok(true)` when created, `Ok(false)` when it already existed (a
    /// retransmission: it was absorbed, stop processing). A later `t_relay` / `t_reply` on
    /// the same request uses it.
    pub fn t_newtran(&self, ctx: &mut MsgCtx) -> Result<bool, TmError> {
        if with_current(|_| ()).is_some() {
            return Ok(false);
        }
        if held() {
            return Err(TmError::NotAllowed);
        }
        let _held = Held::enter();
        self.newtran(ctx, Instant::now())
    }

    /// Kamailio's `t_check_trans()`: whether the request of `ctx` belongs to a live
    /// transaction (for a CANCEL: the INVITE it cancels; for an ACK: the INVITE it
    /// acknowledges). True in a failure route.
    pub fn t_check_trans(&self, ctx: &MsgCtx) -> bool {
        if with_current(|_| ()).is_some() {
            return true;
        }
        if held() {
            return false;
        }
        let _held = Held::enter();
        let cancel = ctx.msg.method() == Some(Method::Cancel);
        engine::request_key(&ctx.msg, cancel)
            .and_then(|k| self.lookup_key(k))
            .is_some_and(|r| !r.lock().freed)
    }

    /// Kamailio's `t_next_contacts()`, in a failure route: loads the next q group of the
    /// failing transaction into `ctx` (the first target as the new R-URI with its `$du` and
    /// Path, the others as branches) and returns true; `t_relay` then sends them. False when
    /// no group is left, when the transaction was cancelled or got a 6xx (RFC 3261 §16.6,
    /// §16.7, §16.10), or outside a failure route.
    pub fn t_next_contacts(&self, ctx: &mut MsgCtx) -> bool {
        with_current(|t| {
            if t.closed_status().is_some() || t.pending.is_empty() {
                return false;
            }
            let group = txn::next_group(&mut t.pending);
            engine::load_group(ctx, group);
            true
        })
        .unwrap_or(false)
    }

    /// Kamailio's `t_is_canceled()`, in a failure route: the caller CANCELled.
    pub fn t_is_canceled(&self) -> bool {
        FAILURE.with(|f| f.get().is_some_and(|i| i.canceled))
    }

    /// Kamailio's `t_branch_timeout()`, in a failure route: a branch ended by a timeout.
    pub fn t_branch_timeout(&self) -> bool {
        FAILURE.with(|f| f.get().is_some_and(|i| i.branch_timeout))
    }

    /// Kamailio's `t_get_status_code()`, in a failure route: the winning final status so far
    /// (408 for a timeout). `None` outside a failure route.
    pub fn t_get_status_code(&self) -> Option<u16> {
        FAILURE.with(|f| f.get().map(|i| i.status))
    }

    /// Called by the pipeline for every response. `None` when tm consumed it: it matched a
    /// transaction, or it carries a tm branch whose transaction is gone and it is not a 2xx to
    /// an INVITE (a late non-2xx is of no use upstream: dropped), or its branch names a live
    /// transaction with the wrong salt (forged: dropped). `Some(msg)` gives the response back
    /// when it is not tm's: forward it statelessly if the top Via is ours
    /// (`Core::forward_reply_stateless`), else drop it. That includes a stray 2xx of a finished
    /// INVITE transaction, which RFC 3261 §16.7 has a proxy forward statelessly.
    pub fn on_reply(&self, msg: SipMessage, rx: RxInfo) -> Option<SipMessage> {
        if held() {
            return Some(msg);
        }
        let _held = Held::enter();
        self.reply_received(msg, rx, Instant::now())
    }

    /// The transport could not deliver to `dst` (an outgoing connection failed): every
    /// branch waiting on that connection fails with a transport error, which counts as a 503
    /// from that branch (RFC 3261 §8.1.3.1, §16.7). Called from transport threads: the work
    /// is done by the next timer tick.
    pub fn on_send_failed(&self, dst: &Destination) {
        if !self.connecting.lock().contains_key(&dst.addr) {
            return;
        }
        {
            let mut q = self.failed_sends.lock();
            if q.len() < 1024 {
                q.push(*dst);
            }
        }
        self.wake_timer();
    }

    fn handle_failed_sends(&self, now: Instant) {
        let failed = std::mem::take(&mut *self.failed_sends.lock());
        for dst in failed {
            self.fail_connecting(&dst, now);
        }
    }

    fn fail_connecting(&self, dst: &Destination, now: Instant) {
        let Some(waiting) = self.connecting.lock().remove(&dst.addr) else {
            return;
        };
        for (id, salt, index) in waiting {
            let Some(r) = self.lookup_id(id) else {
                continue;
            };
            let mut g = r.lock_arc();
            let i = usize::from(index);
            if g.freed || g.salt != salt || i >= g.branches.len() {
                continue;
            }
            if g.branches[i].dst.addr != dst.addr || g.branches[i].dst.proto != dst.proto {
                continue;
            }
            g.branches[i].client.handle_transport_error(now);
            self.counters.transport_errors.inc();
            self.settle(g, now, false);
        }
    }

    /// Remembers that branch `index` of transaction (`id`, `salt`) waits on a connection
    /// being opened to `addr`.
    pub(crate) fn note_connecting(&self, addr: SocketAddr, id: u64, salt: u32, index: u8) {
        let mut m = self.connecting.lock();
        if m.len() >= MAX_CONNECTING && !m.contains_key(&addr) {
            m.clear();
        }
        let v = m.entry(addr).or_default();
        if v.len() < 64 {
            v.push((id, salt, index));
        }
    }

    /// Fires every timer due at `now` (retransmissions, `fr_timer`, `fr_inv_timer`, RFC 3261
    /// A-M, `wt_timer`), running failure routes for branches that timed out. Call it every
    /// ~10 ms ([`spawn_timer`](Self::spawn_timer) does).
    pub fn tick(&self, now: Instant) {
        if held() {
            return;
        }
        let _held = Held::enter();
        self.handle_failed_sends(now);
        self.run_timers(now);
    }

    /// Starts the `tm-timer` thread calling [`tick`](Self::tick) every 10 ms until
    /// [`shutdown`](Self::shutdown) or until the last `Arc<Tm>` is dropped. While no
    /// transaction is alive the thread parks (up to [`IDLE_PARK`] at a time) and the next
    /// transaction wakes it.
    pub fn spawn_timer(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("tm-timer".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                    let Some(tm) = weak.upgrade() else { break };
                    if tm.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tm.tick(Instant::now());
                    if tm.may_park_timer() {
                        // Not holding the Arc while parked: dropping the last one ends us.
                        drop(tm);
                        std::thread::park_timeout(IDLE_PARK);
                        if let Some(tm) = weak.upgrade() {
                            tm.timer_idle.store(false, Ordering::SeqCst);
                        }
                    }
                }
            })
            .expect("cannot start the tm-timer thread");
        let _ = self.timer_thread.set(handle.thread().clone());
        handle
    }

    /// Marks the timer thread idle when nothing can need it: no transaction alive and no
    /// failed send to handle. Checked again after the mark, so that a transaction opened
    /// meanwhile either sees the mark (and wakes the thread) or is seen here.
    fn may_park_timer(&self) -> bool {
        if self.live_total.load(Ordering::SeqCst) != 0 {
            return false;
        }
        self.timer_idle.store(true, Ordering::SeqCst);
        if self.live_total.load(Ordering::SeqCst) != 0 || !self.failed_sends.lock().is_empty() {
            self.timer_idle.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Wakes the timer thread if it is parked idle (a transaction or a failed send appeared).
    fn wake_timer(&self) {
        if self.timer_idle.load(Ordering::SeqCst)
            && self.timer_idle.swap(false, Ordering::SeqCst)
            && let Some(t) = self.timer_thread.get()
        {
            t.unpark();
        }
    }

    /// Stops the timer thread (transactions in flight are left to their fate).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.timer_thread.get() {
            t.unpark();
        }
    }

    /// The transaction kind a request method creates.
    fn kind_of(msg: &SipMessage) -> TxnKind {
        if msg.method() == Some(Method::Invite) {
            TxnKind::Invite
        } else {
            TxnKind::NonInvite
        }
    }
}

impl std::fmt::Debug for Tm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tm")
            .field("live", &self.live())
            .field("cfg", &self.cfg)
            .finish()
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Tm>();
}
