//! usrloc: the location service; an in-memory AOR table sharded by hash, expiry, storage modes
//! (db_mode) and change events.
//!
//! The table maps an AOR to its bindings. It is split into [`SHARDS`] shards by a stable hash
//! (xxh3) of the AOR; each shard is a `parking_lot::RwLock` over a `hashbrown::HashTable` whose
//! values are one compact byte blob per AOR (see `record.rs`). The API is sync, for worker
//! threads; storage calls run on the tokio runtime handed over at construction.
//!
//! Times: `now_ms` arguments are unix milliseconds; `Binding::expires` is unix seconds; a binding
//! is live while `expires > now_ms / 1000`. Expired bindings are never returned, even before the
//! sweeper ([`Location::expire`]) removes them.
//!
//! See README.md for the module documentation (parameters, functions, RPC, statistics).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod entry;
mod events;
mod record;
mod stats;
mod store;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hashbrown::{HashSet, HashTable};
use parking_lot::{Mutex, RwLock};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

pub use config::{DbMode, UsrlocConfig};
pub use crossbeam_channel::Receiver;
pub use entry::{AorEntryMut, ContactInfo, Upserted};
pub use events::{Event, EventKind, Origin};
pub use geosip_store::location::{
    BackendKind, Binding, BindingKey, LoadCursor, LocationBackend, Received, Ruid, Transport,
    WriteOp,
};
pub use geosip_store::{StoreError, StoreResult};
pub use stats::{Stats, StoreStats};

use geosip_store::location::limits;
use record::Interner;
use store::Store;

/// Number of shards of the in-memory table.
pub const SHARDS: usize = 256;
const STRIPES: usize = 1024;

/// Errors of the location API. `Store` means the storage failed: answer 500 or 503.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed or timed out (write-through, db-only); nothing was changed.
    #[error("location store: {0}")]
    Store(#[from] StoreError),
    /// The binding cannot be stored (too long, bad q, expires in the past...).
    #[error("invalid binding: {0}")]
    InvalidBinding(String),
    /// The AOR reached `max_bindings_per_aor`.
    #[error("more than {0} bindings for one AOR")]
    TooManyBindings(usize),
    /// A blocking store call was made from a current-thread tokio runtime.
    #[error("blocking store call from a current-thread tokio runtime")]
    WouldBlock,
}

/// Current unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// All live bindings of one AOR (dump pages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AorBindings {
    /// The AOR.
    pub aor: Bytes,
    /// Its live bindings.
    pub bindings: Vec<Binding>,
}

/// Where a paged dump continues.
#[derive(Clone, Debug)]
pub struct DumpCursor(DumpPos);

#[derive(Clone, Debug)]
enum DumpPos {
    Shard(usize),
    Store(LoadCursor),
}

/// One page of [`Location::dump_page`].
#[derive(Debug, Default)]
pub struct DumpPage {
    /// AORs with their live bindings.
    pub aors: Vec<AorBindings>,
    /// Where to continue; `None` at the end.
    pub next: Option<DumpCursor>,
}

/// What [`Location::apply_remote`] did with a change from another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// Applied.
    Applied,
    /// Ignored: the local copy is newer (last-write-wins on `last_modified`).
    Stale,
    /// Ignored: nothing to delete, or the binding is already expired.
    Ignored,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Box<[u8]>>,
    ua: Interner,
    /// Write-back: AORs changed since their last flush.
    dirty: HashSet<Box<[u8]>>,
}

#[derive(Default)]
struct Counters {
    aors: AtomicI64,
    contacts: AtomicI64,
    inserts: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    expired: AtomicU64,
    store_failures: AtomicU64,
    dirty: AtomicUsize,
    flushed: AtomicU64,
    flush_failures: AtomicU64,
    resyncs: AtomicU64,
}

struct Inner {
    cfg: UsrlocConfig,
    mode: DbMode,
    shards: Box<[RwLock<Shard>]>,
    /// Write-through / db-only: serialises updates of one AOR across the store round trip
    /// (the shard locks are never held across I/O).
    stripes: Box<[Mutex<()>]>,
    store: Option<Arc<Store>>,
    events: events::EventBus,
    c: Counters,
    resync: AtomicBool,
    flush_lock: tokio::sync::Mutex<()>,
}

fn hash(aor: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(aor)
}

fn split_live(all: Vec<Binding>, now_s: u64) -> (Vec<Binding>, Vec<Binding>) {
    all.into_iter().partition(|b| b.is_live(now_s))
}

fn sort_for_forking(v: &mut [Binding]) {
    v.sort_by(|a, b| b.q.cmp(&a.q).then(b.last_modified.cmp(&a.last_modified)));
}

fn check_aor(aor: &[u8]) -> Result<(), Error> {
    if aor.is_empty() || aor.len() > limits::AOR {
        return Err(Error::InvalidBinding(format!(
            "AOR must be 1..={} bytes",
            limits::AOR
        )));
    }
    Ok(())
}

impl Inner {
    fn new(cfg: UsrlocConfig, mode: DbMode, store: Option<Arc<Store>>) -> Inner {
        Inner {
            events: events::EventBus::new(cfg.event_queue),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            cfg,
            mode,
            store,
            c: Counters::default(),
            resync: AtomicBool::new(false),
            flush_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn shard(&self, h: u64) -> &RwLock<Shard> {
        // Bits 32..40 pick the shard; hashbrown uses the low bits and the top 7 inside a shard.
        &self.shards[((h >> 32) as usize) & (SHARDS - 1)]
    }

    fn stripe(&self, h: u64) -> &Mutex<()> {
        &self.stripes[((h >> 40) as usize) % STRIPES]
    }

    fn max_bindings(&self) -> usize {
        self.cfg.max_bindings_per_aor.clamp(1, 1000)
    }

    fn store(&self) -> Result<&Arc<Store>, Error> {
        self.store
            .as_ref()
            .ok_or_else(|| Error::Store(StoreError::Config("no store configured".into())))
    }

    /// Replaces the record of `aor` by `new` (removes it when empty), keeping counters and
    /// interned strings right.
    fn install(&self, shard: &mut Shard, h: u64, aor: &[u8], new: &[Binding]) {
        let Shard { table, ua, .. } = shard;
        let new_rec = (!new.is_empty()).then(|| record::encode(aor, new, ua));
        let mut old_count = 0i64;
        match table.find_entry(h, |r| record::aor(r) == aor) {
            Ok(mut occ) => {
                let old = match new_rec {
                    Some(rec) => std::mem::replace(occ.get_mut(), rec),
                    None => {
                        self.c.aors.fetch_sub(1, Ordering::Relaxed);
                        occ.remove().0
                    }
                };
                old_count = record::bindings(&old).count() as i64;
                record::release(&old, ua);
            }
            Err(_) => {
                if let Some(rec) = new_rec {
                    self.c.aors.fetch_add(1, Ordering::Relaxed);
                    table.insert_unique(h, rec, |r| hash(record::aor(r)));
                }
            }
        }
        self.c
            .contacts
            .fetch_add(new.len() as i64 - old_count, Ordering::Relaxed);
    }

    fn mark_dirty(&self, dirty: &mut HashSet<Box<[u8]>>, aor: &[u8]) {
        if self.mode != DbMode::WriteBack || dirty.contains(aor) {
            return;
        }
        if self.c.dirty.load(Ordering::Relaxed) >= self.cfg.flush_queue_max.max(1) {
            // Bounded queue: instead of growing, the next flush rewrites the whole table.
            self.resync.store(true, Ordering::Relaxed);
            return;
        }
        dirty.insert(aor.into());
        self.c.dirty.fetch_add(1, Ordering::Relaxed);
    }

    fn publish(&self, changes: Vec<(EventKind, Binding)>, expired: Vec<Binding>, origin: Origin) {
        for (kind, b) in changes {
            let counter = match kind {
                EventKind::Insert => &self.c.inserts,
                EventKind::Update => &self.c.updates,
                EventKind::Delete => &self.c.deletes,
                EventKind::Expire => &self.c.expired,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.events.emit(kind, origin, b);
        }
        self.c
            .expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        for b in expired {
            self.events.emit(EventKind::Expire, Origin::Local, b);
        }
    }

    fn ops_for(changes: &[(EventKind, Binding)], expired: &[Binding]) -> Vec<WriteOp> {
        let mut ops = Vec::with_capacity(changes.len() + expired.len());
        for (kind, b) in changes {
            match kind {
                EventKind::Insert | EventKind::Update => ops.push(WriteOp::Upsert(b.clone())),
                EventKind::Delete | EventKind::Expire => ops.push(WriteOp::Delete {
                    aor: b.aor.clone(),
                    bkey: Bytes::from(b.bkey()),
                }),
            }
        }
        for b in expired {
            ops.push(WriteOp::Delete {
                aor: b.aor.clone(),
                bkey: Bytes::from(b.bkey()),
            });
        }
        ops
    }

    fn memory_bindings(&self, h: u64, aor: &[u8]) -> Vec<Binding> {
        let g = self.shard(h).read();
        g.table
            .find(h, |r| record::aor(r) == aor)
            .map(|rec| record::decode(rec, &g.ua))
            .unwrap_or_default()
    }

    fn update<R>(
        &self,
        aor: &[u8],
        now_ms: u64,
        origin: Origin,
        f: impl FnOnce(&mut AorEntryMut) -> R,
    ) -> Result<R, Error> {
        check_aor(aor)?;
        let h = hash(aor);
        let now_s = now_ms / 1000;
        let new_entry = |live| {
            AorEntryMut::new(
                Bytes::copy_from_slice(aor),
                now_ms,
                self.cfg.server_id,
                self.max_bindings(),
                live,
            )
        };
        match self.mode {
            DbMode::Memory | DbMode::WriteBack => {
                let mut g = self.shard(h).write();
                let all = g
                    .table
                    .find(h, |r| record::aor(r) == aor)
                    .map(|rec| record::decode(rec, &g.ua));
                let (live, expired) = split_live(all.unwrap_or_default(), now_s);
                let mut e = new_entry(live);
                let r = f(&mut e);
                let changes = e.changes();
                if changes.is_empty() && expired.is_empty() {
                    return Ok(r);
                }
                self.install(&mut g, h, aor, &e.bindings);
                let Shard { dirty, .. } = &mut *g;
                self.mark_dirty(dirty, aor);
                drop(g);
                self.publish(changes, expired, origin);
                Ok(r)
            }
            DbMode::WriteThrough => {
                let store = self.store()?;
                let _serial = self.stripe(h).lock();
                let (live, expired) = split_live(self.memory_bindings(h, aor), now_s);
                let mut e = new_entry(live);
                let r = f(&mut e);
                let changes = e.changes();
                if changes.is_empty() && expired.is_empty() {
                    return Ok(r);
                }
                let ops = Self::ops_for(&changes, &expired);
                if let Err(err) = store.block(store.call("update", store.backend.apply(&ops)))? {
                    self.c.store_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(err.into());
                }
                self.install(&mut self.shard(h).write(), h, aor, &e.bindings);
                self.publish(changes, expired, origin);
                Ok(r)
            }
            DbMode::DbOnly => {
                let store = self.store()?;
                let _serial = self.stripe(h).lock();
                let all = match store.block(store.call("lookup", store.backend.lookup_aor(aor)))? {
                    Ok(v) => v,
                    Err(err) => {
                        self.c.store_failures.fetch_add(1, Ordering::Relaxed);
                        return Err(err.into());
                    }
                };
                let (live, expired) = split_live(all, now_s);
                let mut e = new_entry(live);
                let r = f(&mut e);
                let changes = e.changes();
                if changes.is_empty() && expired.is_empty() {
                    return Ok(r);
                }
                let ops = Self::ops_for(&changes, &expired);
                if let Err(err) = store.block(store.call("update", store.backend.apply(&ops)))? {
                    self.c.store_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(err.into());
                }
                self.publish(changes, expired, origin);
                Ok(r)
            }
        }
    }

    /// Puts a stored binding into memory (startup reload): no events, no store write.
    fn load_binding(&self, b: Binding) -> Result<(), Error> {
        check_aor(&b.aor)?;
        record::validate(&b)?;
        let h = hash(&b.aor);
        let mut g = self.shard(h).write();
        let aor = b.aor.clone();
        let mut list = g
            .table
            .find(h, |r| record::aor(r) == &aor[..])
            .map(|rec| record::decode(rec, &g.ua))
            .unwrap_or_default();
        match list.iter().position(|x| x.key() == b.key()) {
            Some(i) => list[i] = b,
            None if list.len() < self.max_bindings() => list.push(b),
            None => return Err(Error::TooManyBindings(self.max_bindings())),
        }
        self.install(&mut g, h, &aor, &list);
        Ok(())
    }

    fn reload(&self, now_ms: u64) -> Result<u64, Error> {
        let store = self.store()?;
        let now_s = now_ms / 1000;
        let (mut cursor, mut loaded, mut skipped) = (None::<LoadCursor>, 0u64, 0u64);
        loop {
            let page_size = self.cfg.load_page_size.max(1);
            let page = store.block(store.call(
                "load",
                store.backend.load_page(cursor.as_ref(), page_size, now_s),
            ))??;
            skipped += page.skipped;
            for b in page.bindings.into_iter().filter(|b| b.is_live(now_s)) {
                match self.load_binding(b) {
                    Ok(()) => loaded += 1,
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(target: "geosip_usrloc", error = %e, "skipping a stored binding on reload");
                    }
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let deleted =
            store.block(store.call("delete_expired", store.backend.delete_expired(now_s)))??;
        tracing::info!(target: "geosip_usrloc", loaded, skipped, deleted_expired = deleted, "location table reloaded");
        Ok(loaded)
    }

    fn expire(self: &Arc<Self>, now_ms: u64) -> u64 {
        let now_s = now_ms / 1000;
        if self.mode == DbMode::DbOnly {
            if let Some(store) = self.store.clone() {
                store.handle.clone().spawn(async move {
                    let _ = store
                        .call("delete_expired", store.backend.delete_expired(now_s))
                        .await;
                });
            }
            return 0;
        }
        let want_bindings = self.events.active() || self.mode == DbMode::WriteThrough;
        let mut total = 0u64;
        let mut ops = Vec::new();
        for shard in self.shards.iter() {
            let mut expired: Vec<Binding> = Vec::new();
            let mut n = 0usize;
            {
                let mut g = shard.write();
                let Shard { table, ua, dirty } = &mut *g;
                let mut dirty_aors: Vec<Box<[u8]>> = Vec::new();
                let mut removed_aors = 0i64;
                table.retain(|rec| {
                    if u64::from(record::min_expires(rec)) > now_s {
                        return true;
                    }
                    let (live, exp) = split_live(record::decode(rec, ua), now_s);
                    n += exp.len();
                    if self.mode == DbMode::WriteBack {
                        dirty_aors.push(record::aor(rec).into());
                    }
                    if want_bindings {
                        expired.extend(exp);
                    }
                    if live.is_empty() {
                        record::release(rec, ua);
                        removed_aors += 1;
                        false
                    } else {
                        let new = record::encode(record::aor(rec), &live, ua);
                        record::release(rec, ua);
                        *rec = new;
                        true
                    }
                });
                for aor in dirty_aors {
                    self.mark_dirty(dirty, &aor);
                }
                self.c.aors.fetch_sub(removed_aors, Ordering::Relaxed);
            }
            if n == 0 {
                continue;
            }
            total += n as u64;
            self.c.contacts.fetch_sub(n as i64, Ordering::Relaxed);
            if self.mode == DbMode::WriteThrough {
                ops.extend(Self::ops_for(&[], &expired));
            }
            self.c.expired.fetch_add(n as u64, Ordering::Relaxed);
            for b in expired {
                self.events.emit(EventKind::Expire, Origin::Local, b);
            }
        }
        if !ops.is_empty()
            && let Some(store) = self.store.clone()
        {
            let batch = self.cfg.flush_batch.max(1);
            store.handle.clone().spawn(async move {
                for chunk in ops.chunks(batch) {
                    if store
                        .call("expire", store.backend.apply(chunk))
                        .await
                        .is_err()
                    {
                        // Left for the startup reload's delete_expired; memory is already right.
                        break;
                    }
                }
            });
        }
        total
    }

    /// Write-back: takes up to `limit` dirty AORs and returns the writes that make the store
    /// equal to memory for them.
    fn take_dirty(&self, limit: usize, now_s: u64) -> Vec<WriteOp> {
        let mut ops = Vec::new();
        for shard in self.shards.iter() {
            if ops.len() >= limit {
                break;
            }
            let mut g = shard.write();
            if g.dirty.is_empty() {
                continue;
            }
            let Shard { table, ua, dirty } = &mut *g;
            let take: Vec<Box<[u8]>> = dirty.iter().take(limit - ops.len()).cloned().collect();
            for aor in take {
                dirty.remove(&aor);
                self.c.dirty.fetch_sub(1, Ordering::Relaxed);
                let h = hash(&aor);
                let all = table
                    .find(h, |r| record::aor(r) == &aor[..])
                    .map(|rec| record::decode(rec, ua));
                let live = split_live(all.unwrap_or_default(), now_s).0;
                let aor = Bytes::from(aor.into_vec());
                ops.push(if live.is_empty() {
                    WriteOp::DeleteAor(aor)
                } else {
                    WriteOp::ReplaceAor {
                        aor,
                        bindings: live,
                    }
                });
            }
        }
        ops
    }

    fn remark_dirty(&self, ops: &[WriteOp]) {
        for op in ops {
            let aor = op.aor();
            let mut g = self.shard(hash(aor)).write();
            let Shard { dirty, .. } = &mut *g;
            self.mark_dirty(dirty, aor);
        }
    }

    async fn flush_once(&self, now_ms: u64) -> Result<u64, Error> {
        if self.mode != DbMode::WriteBack {
            return Ok(0);
        }
        let store = self.store()?;
        let _one_at_a_time = self.flush_lock.lock().await;
        let now_s = now_ms / 1000;
        let mut flushed = 0u64;
        if self.resync.load(Ordering::Relaxed) {
            flushed += self.full_resync(store, now_s).await?;
        }
        let batch = self.cfg.flush_batch.max(1);
        loop {
            let ops = self.take_dirty(batch, now_s);
            if ops.is_empty() {
                break;
            }
            match store.call("flush", store.backend.apply(&ops)).await {
                Ok(()) => {
                    flushed += ops.len() as u64;
                    self.c
                        .flushed
                        .fetch_add(ops.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.remark_dirty(&ops);
                    self.c.flush_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(e.into());
                }
            }
        }
        Ok(flushed)
    }

    /// After the flush queue overflowed: write every AOR in memory and delete stored AORs that
    /// memory no longer has.
    async fn full_resync(&self, store: &Store, now_s: u64) -> Result<u64, Error> {
        self.resync.store(false, Ordering::Relaxed);
        for shard in self.shards.iter() {
            let mut g = shard.write();
            let n = g.dirty.len();
            g.dirty.clear();
            self.c.dirty.fetch_sub(n, Ordering::Relaxed);
        }
        let batch = self.cfg.flush_batch.max(1);
        let fail = |e: StoreError| {
            self.resync.store(true, Ordering::Relaxed);
            self.c.flush_failures.fetch_add(1, Ordering::Relaxed);
            Error::Store(e)
        };
        let mut written = 0u64;
        for shard in self.shards.iter() {
            let ops: Vec<WriteOp> = {
                let g = shard.read();
                g.table
                    .iter()
                    .filter_map(|rec| {
                        let live = split_live(record::decode(rec, &g.ua), now_s).0;
                        (!live.is_empty()).then(|| WriteOp::ReplaceAor {
                            aor: Bytes::copy_from_slice(record::aor(rec)),
                            bindings: live,
                        })
                    })
                    .collect()
            };
            for chunk in ops.chunks(batch) {
                store
                    .call("resync", store.backend.apply(chunk))
                    .await
                    .map_err(fail)?;
                written += chunk.len() as u64;
            }
        }
        let mut cursor: Option<LoadCursor> = None;
        loop {
            let page = store
                .call(
                    "resync",
                    store.backend.load_page(cursor.as_ref(), 1000, now_s),
                )
                .await
                .map_err(fail)?;
            let mut orphans: Vec<WriteOp> = Vec::new();
            for b in &page.bindings {
                let h = hash(&b.aor);
                let present = self
                    .shard(h)
                    .read()
                    .table
                    .find(h, |r| record::aor(r) == &b.aor[..])
                    .is_some();
                if !present && orphans.last().is_none_or(|o| o.aor() != &b.aor) {
                    orphans.push(WriteOp::DeleteAor(b.aor.clone()));
                }
            }
            if !orphans.is_empty() {
                store
                    .call("resync", store.backend.apply(&orphans))
                    .await
                    .map_err(fail)?;
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        store
            .call("resync", store.backend.delete_expired(now_s))
            .await
            .map_err(fail)?;
        self.c.resyncs.fetch_add(1, Ordering::Relaxed);
        self.c.flushed.fetch_add(written, Ordering::Relaxed);
        Ok(written)
    }
}

/// The location service. Share it as `Arc<Location>`; every method takes `&self` and may be
/// called from any thread. The tokio handle given at construction must belong to a
/// multi-thread runtime (store calls of sync callers are driven on it). In write-back mode call [`shutdown`](Self::shutdown) before exit
/// (dropping it also tries a final flush).
pub struct Location {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Location {
    /// A memory-only table with no background tasks: the caller drives [`expire`](Self::expire).
    pub fn memory(cfg: UsrlocConfig) -> Location {
        Location {
            inner: Arc::new(Inner::new(cfg, DbMode::Memory, None)),
            tasks: Vec::new(),
        }
    }

    /// Builds the service from its config: opens the store named by `db_url` (unless
    /// `memory`), reloads the table (memory + store modes) and starts the expiry timer and the
    /// write-back flusher on `handle`.
    pub fn open(cfg: UsrlocConfig, data_dir: &Path, handle: Handle) -> Result<Location, Error> {
        if cfg.db_mode == DbMode::Memory {
            let mut loc = Location::memory(cfg);
            loc.tasks = spawn_tasks(&loc.inner, &handle);
            return Ok(loc);
        }
        let store_cfg = cfg.store_config(data_dir);
        let timeout = cfg.timeout();
        let h = handle.clone();
        let open = async move {
            match tokio::time::timeout(
                timeout * 2,
                geosip_store::location::open_location(&store_cfg),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout(timeout.as_millis() as u64 * 2)),
            }
        };
        let backend = store::block_on(&h, open)??;
        Location::with_backend(cfg, backend, handle)
    }

    /// Builds the service over an already opened backend (a partitioning layer, a test double).
    pub fn with_backend(
        cfg: UsrlocConfig,
        backend: Arc<dyn LocationBackend>,
        handle: Handle,
    ) -> Result<Location, Error> {
        Location::with_backend_at(cfg, backend, handle, unix_ms())
    }

    /// As [`with_backend`](Self::with_backend) with an explicit `now` for the reload.
    pub fn with_backend_at(
        cfg: UsrlocConfig,
        backend: Arc<dyn LocationBackend>,
        handle: Handle,
        now_ms: u64,
    ) -> Result<Location, Error> {
        let mode = cfg.db_mode;
        let store = (mode != DbMode::Memory).then(|| {
            Arc::new(Store::new(
                backend,
                handle.clone(),
                cfg.timeout(),
                Duration::from_secs(cfg.error_log_interval_s.max(1)),
            ))
        });
        let inner = Arc::new(Inner::new(cfg, mode, store));
        if matches!(mode, DbMode::WriteThrough | DbMode::WriteBack) {
            inner.reload(now_ms)?;
        }
        let tasks = spawn_tasks(&inner, &handle);
        Ok(Location { inner, tasks })
    }

    /// The storage mode.
    pub fn mode(&self) -> DbMode {
        self.inner.mode
    }

    /// The backend (`None` in memory mode).
    pub fn backend(&self) -> Option<Arc<dyn LocationBackend>> {
        self.inner.store.as_ref().map(|s| s.backend.clone())
    }

    /// Live bindings of `aor`, ordered by q (highest first), then most recently modified first.
    /// Never blocks in memory modes; in db-only mode it queries the store.
    pub fn lookup(&self, aor: &[u8], now_ms: u64) -> Result<Vec<Binding>, Error> {
        let now_s = now_ms / 1000;
        let inner = &self.inner;
        let mut v = if inner.mode == DbMode::DbOnly {
            let store = inner.store()?;
            let all = store.block(store.call("lookup", store.backend.lookup_aor(aor)))??;
            all.into_iter().filter(|b| b.is_live(now_s)).collect()
        } else {
            let h = hash(aor);
            let g = inner.shard(h).read();
            match g.table.find(h, |r| record::aor(r) == aor) {
                None => Vec::new(),
                Some(rec) => {
                    let aor = Bytes::copy_from_slice(record::aor(rec));
                    record::bindings(rec)
                        .filter(|r| u64::from(r.expires) > now_s)
                        .map(|r| r.to_binding(&aor, &g.ua))
                        .collect()
                }
            }
        };
        sort_for_forking(&mut v);
        Ok(v)
    }

    /// Has `aor` at least one live binding?
    pub fn registered(&self, aor: &[u8], now_ms: u64) -> Result<bool, Error> {
        if self.inner.mode == DbMode::DbOnly {
            return Ok(!self.lookup(aor, now_ms)?.is_empty());
        }
        let h = hash(aor);
        let now_s = now_ms / 1000;
        let g = self.inner.shard(h).read();
        Ok(g.table
            .find(h, |r| record::aor(r) == aor)
            .is_some_and(|rec| record::bindings(rec).any(|r| u64::from(r.expires) > now_s)))
    }

    /// Atomic read-modify-write of one AOR (the registrar's `save`). The closure sees the live
    /// bindings and changes them through [`AorEntryMut`]; when it returns, the changes are
    /// persisted according to the mode and emitted as events. Bindings found expired are
    /// removed and reported as `Expire`.
    ///
    /// Write-through / db-only: the store write completes before this returns; if it fails,
    /// nothing changes and `Error::Store` is returned (answer 500/503). The closure must not
    /// block: in memory modes it runs under the shard's write lock.
    pub fn update<R>(
        &self,
        aor: &[u8],
        now_ms: u64,
        f: impl FnOnce(&mut AorEntryMut) -> R,
    ) -> Result<R, Error> {
        self.inner.update(aor, now_ms, Origin::Local, f)
    }

    /// Inserts or refreshes one binding (`ul.add`).
    pub fn add(&self, aor: &[u8], info: ContactInfo, now_ms: u64) -> Result<Upserted, Error> {
        self.update(aor, now_ms, |e| e.upsert(info))?
    }

    /// Removes every binding of `aor` (`ul.rm`, `unregister()`); returns how many.
    pub fn unregister(&self, aor: &[u8], now_ms: u64) -> Result<usize, Error> {
        self.update(aor, now_ms, |e| e.clear())
    }

    /// Removes the binding of `aor` with this contact URI (`ul.rm_contact`); true if found.
    pub fn unregister_contact(
        &self,
        aor: &[u8],
        contact: &[u8],
        now_ms: u64,
    ) -> Result<bool, Error> {
        self.update(aor, now_ms, |e| e.remove_contact(contact).is_some())
    }

    /// Applies a change received from another node (replication), last-write-wins on
    /// `last_modified`: an insert/update replaces the local binding of the same identity only
    /// if it is newer; a delete/expire removes it unless the local one is newer. The binding
    /// keeps its ruid, `last_modified` and `server_id`. Persisted according to the mode; the
    /// resulting events carry `Origin::Remote`.
    pub fn apply_remote(
        &self,
        kind: EventKind,
        binding: Binding,
        now_ms: u64,
    ) -> Result<RemoteOutcome, Error> {
        let now_s = now_ms / 1000;
        let aor = binding.aor.clone();
        self.inner.update(&aor, now_ms, Origin::Remote, move |e| {
            let local_lm = e.get(binding.key()).map(|b| b.last_modified);
            match kind {
                EventKind::Insert | EventKind::Update => {
                    if !binding.is_live(now_s) {
                        return Ok(RemoteOutcome::Ignored);
                    }
                    if local_lm.is_some_and(|lm| lm >= binding.last_modified) {
                        return Ok(RemoteOutcome::Stale);
                    }
                    e.put_binding(binding).map(|_| RemoteOutcome::Applied)
                }
                EventKind::Delete | EventKind::Expire => match local_lm {
                    None => Ok(RemoteOutcome::Ignored),
                    Some(lm) if lm > binding.last_modified => Ok(RemoteOutcome::Stale),
                    Some(_) => {
                        e.remove(binding.key());
                        Ok(RemoteOutcome::Applied)
                    }
                },
            }
        })?
    }

    /// Removes expired bindings (the timer calls this every `timer_interval_s`; call it yourself
    /// when that is 0). Emits `Expire` events and deletes them from the store (write-through:
    /// in the background; write-back: with the next flush; db-only: one DELETE in the
    /// background). Never blocks on the store. Returns how many were removed from memory.
    pub fn expire(&self, now_ms: u64) -> u64 {
        self.inner.expire(now_ms)
    }

    /// Write-back: writes every pending change now (`ul.flush`); returns the AORs written.
    /// A no-op in the other modes.
    pub fn flush(&self) -> Result<u64, Error> {
        let Some(store) = self.inner.store.clone() else {
            return Ok(0);
        };
        store.block(self.inner.flush_once(unix_ms()))?
    }

    /// Stops the background tasks and flushes (write-back). Call before exit.
    pub fn shutdown(&mut self) -> Result<(), Error> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.flush().map(|_| ())
    }

    /// Subscribes to change events. Every receiver clone competes for the same events (one
    /// consumer is the intended use). Until the first call, no events are built.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// One page of the table (`ul.dump`): start with `None`, continue with `page.next`.
    /// In memory modes a page holds whole shards (about `aors / 256` AORs each, at least 256
    /// AORs unless at the end); in db-only mode it is a store page (an AOR may then be split
    /// over two consecutive pages).
    pub fn dump_page(&self, cursor: Option<&DumpCursor>, now_ms: u64) -> Result<DumpPage, Error> {
        let now_s = now_ms / 1000;
        let inner = &self.inner;
        if inner.mode == DbMode::DbOnly {
            let store = inner.store()?;
            let lc = match cursor {
                Some(DumpCursor(DumpPos::Store(c))) => Some(c),
                _ => None,
            };
            let size = inner.cfg.load_page_size.max(1);
            let page =
                store.block(store.call("dump", store.backend.load_page(lc, size, now_s)))??;
            let mut aors: Vec<AorBindings> = Vec::new();
            for b in page.bindings.into_iter().filter(|b| b.is_live(now_s)) {
                match aors.last_mut() {
                    Some(last) if last.aor == b.aor => last.bindings.push(b),
                    _ => aors.push(AorBindings {
                        aor: b.aor.clone(),
                        bindings: vec![b],
                    }),
                }
            }
            for a in &mut aors {
                sort_for_forking(&mut a.bindings);
            }
            return Ok(DumpPage {
                aors,
                next: page.next.map(|c| DumpCursor(DumpPos::Store(c))),
            });
        }
        let mut i = match cursor {
            Some(DumpCursor(DumpPos::Shard(i))) => *i,
            _ => 0,
        };
        let mut aors = Vec::new();
        while i < SHARDS && aors.len() < 256 {
            let g = inner.shards[i].read();
            for rec in g.table.iter() {
                let aor = Bytes::copy_from_slice(record::aor(rec));
                let mut bindings: Vec<Binding> = record::bindings(rec)
                    .filter(|r| u64::from(r.expires) > now_s)
                    .map(|r| r.to_binding(&aor, &g.ua))
                    .collect();
                if !bindings.is_empty() {
                    sort_for_forking(&mut bindings);
                    aors.push(AorBindings { aor, bindings });
                }
            }
            i += 1;
        }
        Ok(DumpPage {
            aors,
            next: (i < SHARDS).then_some(DumpCursor(DumpPos::Shard(i))),
        })
    }

    /// Iterates over every AOR with live bindings (`ul.dump`), page by page.
    pub fn dump(&self, now_ms: u64) -> Dump<'_> {
        Dump {
            loc: self,
            now_ms,
            cursor: None,
            buf: VecDeque::new(),
            done: false,
        }
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.c;
        let user_agents = if self.inner.mode == DbMode::DbOnly {
            0
        } else {
            self.inner
                .shards
                .iter()
                .map(|s| s.read().ua.len() as u64)
                .sum()
        };
        Stats {
            db_mode: self.inner.mode.as_str(),
            aors: c.aors.load(Ordering::Relaxed).max(0) as u64,
            contacts: c.contacts.load(Ordering::Relaxed).max(0) as u64,
            user_agents,
            inserts: c.inserts.load(Ordering::Relaxed),
            updates: c.updates.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            store_failures: c.store_failures.load(Ordering::Relaxed),
            events_sent: self.inner.events.sent.load(Ordering::Relaxed),
            events_dropped: self.inner.events.dropped.load(Ordering::Relaxed),
            flush_pending: c.dirty.load(Ordering::Relaxed) as u64,
            flushed_aors: c.flushed.load(Ordering::Relaxed),
            flush_failures: c.flush_failures.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            store: self.inner.store.as_ref().map(|s| s.stats()),
        }
    }
}

impl Drop for Location {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.inner.mode == DbMode::WriteBack
            && (self.inner.c.dirty.load(Ordering::Relaxed) > 0
                || self.inner.resync.load(Ordering::Relaxed))
            && let Err(e) = self.flush()
        {
            tracing::error!(target: "geosip_usrloc", error = %e, "final write-back flush failed; unflushed changes are lost");
        }
    }
}

/// Iterator of [`Location::dump`]; yields an error once and stops if the store fails.
pub struct Dump<'a> {
    loc: &'a Location,
    now_ms: u64,
    cursor: Option<DumpCursor>,
    buf: VecDeque<AorBindings>,
    done: bool,
}

impl Iterator for Dump<'_> {
    type Item = Result<AorBindings, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(a) = self.buf.pop_front() {
                return Some(Ok(a));
            }
            if self.done {
                return None;
            }
            match self.loc.dump_page(self.cursor.as_ref(), self.now_ms) {
                Ok(page) => {
                    self.buf.extend(page.aors);
                    self.done = page.next.is_none();
                    self.cursor = page.next;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn spawn_tasks(inner: &Arc<Inner>, handle: &Handle) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if inner.mode == DbMode::WriteBack {
        let weak = Arc::downgrade(inner);
        let period = Duration::from_millis(inner.cfg.flush_interval_ms.max(10));
        tasks.push(handle.spawn(async move {
            let mut iv = tokio::time::interval(period);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            iv.tick().await;
            loop {
                iv.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                // Errors are counted and logged (rate-limited) by the store glue; the dirty
                // AORs stay queued and the next tick retries.
                let _ = inner.flush_once(unix_ms()).await;
            }
        }));
    }
    if inner.cfg.timer_interval_s > 0 {
        let weak = Arc::downgrade(inner);
        let period = Duration::from_secs(inner.cfg.timer_interval_s);
        tasks.push(handle.spawn(async move {
            let mut iv = tokio::time::interval(period);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            iv.tick().await;
            loop {
                iv.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                // The sweep takes shard locks one at a time; keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || inner.expire(unix_ms())).await;
            }
        }));
    }
    tasks
}
