//! [`PartitionedBackend`]: a `LocationBackend` over groups of SQL databases.
//!
//! Request paths (`apply`, `lookup_aor`, `load_page`, `delete_expired`) read the current
//! [`Topology`] snapshot and never wait on the cluster table. Two background tasks keep the
//! snapshot fresh: the reloader (every `reload_interval_s`, or at once when this node turned a
//! database off or saw one miss a write) pushes this node's error counts to the cluster table,
//! re-reads it, fails over databases past the error threshold, records layout changes and swaps
//! the snapshot; the watcher (every `retry_interval_s`) probes turned-off databases and brings
//! back those that answer, write-only for `expire_window_s`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use geosip_store::location::sql::cursor_after;
use geosip_store::location::{
    BackendKind, Binding, BoxFuture, LoadCursor, LoadPage, LocationBackend, WriteOp,
};
use geosip_store::{StoreError, StoreResult};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::Error;
use crate::cluster::{ClusterDb, ClusterRow, Failover, LayoutRow, Status};
use crate::config::LocationConfig;
use crate::db::{DbConn, Op, counts_as_db_error};
use crate::join::{Fut, join_all};
use crate::topology::{Group, Placement, PrevLayout, Slot, Topology};

/// Current unix time, seconds.
pub(crate) fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Most previous layouts reads fall back to at once.
const MAX_PREVIOUS: usize = 8;

/// Counters of this node (not per database).
#[derive(Default)]
pub(crate) struct NodeCounters {
    pub(crate) failovers: AtomicU64,
    pub(crate) spare_takeovers: AtomicU64,
    pub(crate) returns: AtomicU64,
    pub(crate) read_fallbacks: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_errors: AtomicU64,
    pub(crate) old_group_reads: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) cfg: LocationConfig,
    data_dir: PathBuf,
    pub(crate) topo: ArcSwap<Topology>,
    conns: Mutex<HashMap<String, Arc<DbConn>>>,
    pub(crate) cluster: ClusterDb,
    /// No `cluster_db_url`: the table is in memory on this node, seeded from the TOML file.
    pub(crate) cluster_local: bool,
    reload_lock: tokio::sync::Mutex<()>,
    reload_now: tokio::sync::Notify,
    pub(crate) started_at: u64,
    pub(crate) last_reload: AtomicU64,
    pub(crate) last_reload_error: Mutex<Option<String>>,
    pub(crate) counters: NodeCounters,
    /// URLs already reported as unusable (log once).
    bad_urls: Mutex<BTreeSet<String>>,
    log_gate: AtomicU64,
    /// The runtime the backend was opened on (background work is spawned there).
    handle: Handle,
}

/// Location partitioned over groups of SQL databases (Kamailio's p_usrloc). Build it with
/// [`PartitionedBackend::open`] and hand it to `geosip_usrloc::Location::with_backend`.
pub struct PartitionedBackend {
    pub(crate) shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for PartitionedBackend {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

/// Runs a cluster-table call with a timeout (a hung master must not hang reloads and RPCs).
pub(crate) async fn within<T>(
    d: Duration,
    fut: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout(d.as_millis() as u64)),
    }
}

fn unavailable(msg: String) -> StoreError {
    StoreError::Unavailable(msg)
}

/// `(aor, bkey)` of a binding: the order and identity of rows.
fn row_key(b: &Binding) -> (Bytes, Vec<u8>) {
    (b.aor.clone(), b.bkey())
}

/// Adds `more` to `into`, keeping per binding identity the copy modified last.
pub(crate) fn merge_newest(into: &mut Vec<Binding>, more: Vec<Binding>) {
    for b in more {
        let key = b.bkey();
        match into.iter_mut().find(|x| x.bkey() == key) {
            Some(x) if x.last_modified < b.last_modified => *x = b,
            Some(_) => {}
            None => into.push(b),
        }
    }
}

const CURSOR_MAGIC: u8 = b'P';

/// Our load cursor: the group being loaded and, if not at its start, the inner SQL cursor.
fn encode_cursor(group: u32, inner: Option<&LoadCursor>) -> LoadCursor {
    let mut v = Vec::with_capacity(6 + inner.map_or(0, |c| c.0.len()));
    v.push(CURSOR_MAGIC);
    v.extend_from_slice(&group.to_be_bytes());
    match inner {
        None => v.push(0),
        Some(c) => {
            v.push(1);
            v.extend_from_slice(&c.0);
        }
    }
    LoadCursor(v)
}

fn decode_cursor(c: &LoadCursor) -> StoreResult<(u32, Option<LoadCursor>)> {
    let bad = || StoreError::InvalidValue("bad partitioned load cursor".into());
    if c.0.first() != Some(&CURSOR_MAGIC) {
        return Err(bad());
    }
    let g =
        c.0.get(1..5)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(bad)?;
    match c.0.get(5) {
        Some(0) => Ok((g, None)),
        Some(1) => Ok((
            g,
            Some(LoadCursor(c.0.get(6..).unwrap_or_default().to_vec())),
        )),
        _ => Err(bad()),
    }
}

impl Shared {
    fn window(&self) -> u64 {
        self.cfg.expire_window_s
    }

    /// Logs at most one line per second for request-path errors.
    fn log_allowed(&self) -> bool {
        let now = unix_s();
        let last = self.log_gate.load(Ordering::Relaxed);
        now != last
            && self
                .log_gate
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Rows from the TOML file: groups numbered in order, spares as group 0.
    fn toml_rows(&self) -> Vec<ClusterRow> {
        let mut rows = Vec::new();
        for g in &self.cfg.groups {
            for (i, d) in g.databases.iter().enumerate() {
                rows.push(ClusterRow {
                    id: g.id,
                    no: i as u32 + 1,
                    url: d.url().to_string(),
                    status: Status::On,
                    errors: 0,
                    failover: 0,
                    spare: false,
                    risk_group: d.risk_group(),
                });
            }
        }
        for (i, s) in self.cfg.spares.iter().enumerate() {
            rows.push(ClusterRow {
                id: 0,
                no: i as u32 + 1,
                url: s.url.clone(),
                status: Status::On,
                errors: 0,
                failover: 0,
                spare: true,
                risk_group: s
                    .risk_group
                    .unwrap_or_else(|| crate::config::derived_risk_group(&s.url)),
            });
        }
        rows
    }

    /// Counts an error of a database; past the threshold it is turned off (here at once, for
    /// every node through the cluster table). `missed`: others took the write it failed.
    fn record_error(self: &Arc<Self>, slot: &Slot, e: &StoreError, missed: bool) {
        let Some(conn) = slot.conn() else { return };
        if self.log_allowed() {
            tracing::warn!(target: "geosip_p_usrloc", group = slot.row.id, db = slot.row.no, store = %conn.target, error = %e, "location database call failed");
        }
        if !counts_as_db_error(e) {
            return;
        }
        let now = unix_s();
        let pending = conn.pending_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if missed {
            conn.missed_at.fetch_max(now, Ordering::Relaxed);
            conn.local_failover.fetch_max(now, Ordering::Relaxed);
            self.reload_now.notify_one();
        }
        if slot.row.status == Status::On
            && slot.row.errors.saturating_add(pending) >= self.cfg.error_threshold
            && !conn.local_off.swap(true, Ordering::Relaxed)
        {
            conn.local_off_since.store(now, Ordering::Relaxed);
            tracing::error!(target: "geosip_p_usrloc", group = slot.row.id, db = slot.row.no, store = %conn.target, errors = slot.row.errors + pending, "error threshold reached: turning the database off");
            let me = Arc::clone(self);
            let row = slot.row.clone();
            self.handle.spawn(async move {
                me.fail_over(row).await;
                let _ = me.reload().await;
            });
        }
    }

    /// Turns a database off in the cluster table (for every node), with a spare if there is one.
    async fn fail_over(self: &Arc<Self>, row: ClusterRow) {
        let conn = self.conns.lock().get(&row.url).cloned();
        if let Some(c) = &conn
            && c.failing_over.swap(true, Ordering::Relaxed)
        {
            return;
        }
        // Cleared however this ends (also when a timeout drops the future).
        struct Running(Option<Arc<DbConn>>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(c) = &self.0 {
                    c.failing_over.store(false, Ordering::Relaxed);
                }
            }
        }
        let _running = Running(conn.clone());
        let extra = conn
            .as_ref()
            .map_or(0, |c| c.pending_errors.swap(0, Ordering::Relaxed));
        let topo = self.topo.load_full();
        let avoid: Vec<u32> = topo
            .groups
            .get(&row.id)
            .map(|g| {
                g.slots
                    .iter()
                    .filter(|s| s.row.no != row.no && s.row.status != Status::Off)
                    .map(|s| s.row.risk_group)
                    .collect()
            })
            .unwrap_or_default();
        let use_spares = !row.spare && !topo.spares.is_empty();
        let r = within(
            self.cfg.cluster_timeout(),
            self.cluster
                .fail_over(&row, extra, &avoid, use_spares, unix_s()),
        )
        .await;
        match r {
            Ok(Failover::AlreadyDone) => {}
            Ok(Failover::TurnedOff) => {
                self.counters.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "geosip_p_usrloc", group = row.id, db = row.no, "database turned off for all nodes (no spare)");
            }
            Ok(Failover::Replaced {
                spare_url,
                spare_id,
                spare_no,
            }) => {
                self.counters.failovers.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .spare_takeovers
                    .fetch_add(1, Ordering::Relaxed);
                let spare = geosip_store::StoreUrl::parse(&spare_url, &self.data_dir)
                    .map(|u| u.redacted())
                    .unwrap_or_default();
                tracing::error!(target: "geosip_p_usrloc", group = row.id, db = row.no, spare = %spare, spare_id, spare_no, "database turned off for all nodes; a spare took its place (write-only for the expire window)");
            }
            Err(e) => {
                if let Some(c) = &conn {
                    c.pending_errors.fetch_add(extra, Ordering::Relaxed);
                }
                tracing::error!(target: "geosip_p_usrloc", group = row.id, db = row.no, error = %e, "cluster table unreachable: the database is off on this node only");
            }
        }
    }

    /// Adds this node's error counts and missed-write marks to the cluster table.
    async fn push_errors(&self) {
        let topo = self.topo.load_full();
        for slot in topo.all_slots() {
            let Some(c) = slot.conn() else { continue };
            let errors = c.pending_errors.swap(0, Ordering::Relaxed);
            let missed = c.missed_at.swap(0, Ordering::Relaxed);
            if errors == 0 && missed == 0 {
                continue;
            }
            let r = self
                .cluster
                .add_errors(slot.row.id, slot.row.no, &slot.row.url, errors, missed)
                .await;
            if r.is_err() {
                c.pending_errors.fetch_add(errors, Ordering::Relaxed);
                c.missed_at.fetch_max(missed, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Re-reads the cluster table and swaps the snapshot (`location.reload_cluster`).
    pub(crate) async fn reload(self: &Arc<Self>) -> StoreResult<()> {
        let _one = self.reload_lock.lock().await;
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        let r = within(self.cfg.cluster_timeout() * 5, self.reload_locked()).await;
        match &r {
            Ok(()) => {
                self.last_reload.store(unix_s(), Ordering::Relaxed);
                if self.last_reload_error.lock().take().is_some() {
                    tracing::warn!(target: "geosip_p_usrloc", cluster = %self.cluster.target(), "the cluster table answers again");
                }
            }
            Err(e) => {
                self.counters.reload_errors.fetch_add(1, Ordering::Relaxed);
                let mut last = self.last_reload_error.lock();
                if last.is_none() {
                    tracing::error!(target: "geosip_p_usrloc", cluster = %self.cluster.target(), error = %e, "cannot read the cluster table; keeping the last known layout");
                }
                *last = Some(e.to_string());
            }
        }
        r
    }

    async fn reload_locked(self: &Arc<Self>) -> StoreResult<()> {
        self.push_errors().await;
        let mut rows = self.cluster.rows().await?;
        if rows.is_empty() && (!self.cfg.groups.is_empty() || !self.cfg.spares.is_empty()) {
            if self.cluster.seed(&self.toml_rows()).await? {
                tracing::info!(target: "geosip_p_usrloc", cluster = %self.cluster.target(), "cluster table filled from [location.groups]");
            }
            rows = self.cluster.rows_master().await?;
        } else if !self.cluster_local && !self.cfg.groups.is_empty() {
            let mut toml: Vec<(u32, u32, String)> = self
                .toml_rows()
                .into_iter()
                .filter(|r| !r.spare)
                .map(|r| (r.id, r.no, r.url))
                .collect();
            let mut table: Vec<(u32, u32, String)> = rows
                .iter()
                .filter(|r| !r.spare)
                .map(|r| (r.id, r.no, r.url.clone()))
                .collect();
            toml.sort();
            table.sort();
            if toml != table && self.topo.load().loaded_at == 0 {
                tracing::warn!(target: "geosip_p_usrloc", "[location.groups] differs from the cluster table; the table wins");
            }
        }
        // Errors counted by all nodes together past the threshold.
        let now = unix_s();
        let over: Vec<ClusterRow> = rows
            .iter()
            .filter(|r| r.status == Status::On && r.errors >= self.cfg.error_threshold)
            .cloned()
            .collect();
        if !over.is_empty() {
            for r in over {
                self.fail_over(r).await;
            }
            rows = self.cluster.rows_master().await?;
        }
        let (version, current, previous) = self.layouts(&rows, now).await;
        self.install(rows, version, current, previous, now).await;
        Ok(())
    }

    /// The current layout and the previous ones reads still fall back to; records a new
    /// layout when the set of groups changed (auto) or none is recorded yet.
    async fn layouts(&self, rows: &[ClusterRow], now: u64) -> (u64, Vec<u32>, Vec<PrevLayout>) {
        let present: Vec<u32> = rows
            .iter()
            .filter(|r| !r.spare)
            .map(|r| r.id)
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        let mut recorded = match self.cluster.layouts().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(target: "geosip_p_usrloc", error = %e, "cannot read location_layout; keeping the last known layout");
                let t = self.topo.load();
                if t.loaded_at > 0 {
                    return (t.layout_version, t.current.clone(), t.previous.clone());
                }
                return (0, present, Vec::new());
            }
        };
        let mut wrote = false;
        if recorded.is_empty() && !present.is_empty() {
            let mut prev: Vec<u32> = self.cfg.previous_groups.clone();
            prev.sort_unstable();
            prev.dedup();
            if !prev.is_empty() && prev != present {
                let start = if self.cfg.transition_start_s > 0 {
                    self.cfg.transition_start_s
                } else {
                    self.started_at
                };
                let _ = self.cluster.insert_layout(1, &prev, 0).await;
                let _ = self.cluster.insert_layout(2, &present, start).await;
            } else {
                let _ = self.cluster.insert_layout(1, &present, now).await;
            }
            wrote = true;
        } else if let Some(latest) = recorded.first()
            && self.cfg.auto_rebalance
            && latest.groups != present
            && !present.is_empty()
        {
            let v = latest.version + 1;
            match self.cluster.insert_layout(v, &present, now).await {
                Ok(true) => {
                    tracing::warn!(target: "geosip_p_usrloc", version = v, groups = ?present, previous = ?latest.groups, "groups changed: new layout recorded, reads fall back to the previous one during the migration window");
                }
                Ok(false) => {}
                Err(e) => {
                    // Master unreachable: migrate on this node's own clock.
                    tracing::warn!(target: "geosip_p_usrloc", error = %e, "cannot record the new layout; falling back to the previous layout on this node");
                    let until = now + self.cfg.reload_interval_s + self.window();
                    return (
                        latest.version,
                        present,
                        vec![PrevLayout {
                            version: latest.version,
                            groups: latest.groups.clone(),
                            until,
                        }],
                    );
                }
            }
            wrote = true;
        }
        if wrote {
            match self.cluster.layouts().await {
                Ok(l) => recorded = l,
                Err(_) => return (0, present, Vec::new()),
            }
        }
        let (version, current) = match recorded.first() {
            Some(l) if !self.cfg.auto_rebalance => (l.version, l.groups.clone()),
            Some(l) => (l.version, present),
            None => (0, present),
        };
        (
            version,
            current.clone(),
            previous_layouts(
                &recorded,
                &current,
                self.cfg.reload_interval_s + self.window(),
                now,
            ),
        )
    }

    async fn install(
        self: &Arc<Self>,
        rows: Vec<ClusterRow>,
        version: u64,
        current: Vec<u32>,
        previous: Vec<PrevLayout>,
        now: u64,
    ) {
        // Open connections for new URLs outside the lock (and a full pool for a spare that
        // took a slot).
        let missing: Vec<String> = {
            let conns = self.conns.lock();
            rows.iter()
                .filter(|r| match conns.get(&r.url) {
                    None => true,
                    Some(c) => !r.spare && c.pool_size < self.cfg.pool_size,
                })
                .map(|r| r.url.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        for url in missing {
            let pool = if rows.iter().any(|r| r.url == url && !r.spare) {
                self.cfg.pool_size
            } else {
                self.cfg.pool_size.min(2)
            };
            let sc = self.cfg.store_config(&url, &self.data_dir, pool);
            match DbConn::open(&url, &self.data_dir, &sc).await {
                Ok(c) => {
                    self.conns.lock().insert(url, Arc::new(c));
                }
                Err(e) => {
                    if self.bad_urls.lock().insert(url.clone()) {
                        tracing::error!(target: "geosip_p_usrloc", error = %e, "unusable location database URL in the cluster table");
                    }
                }
            }
        }
        let old = self.topo.load_full();
        let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
        let mut spares = Vec::new();
        {
            let conns = self.conns.lock();
            for r in rows {
                let conn = conns.get(&r.url).cloned();
                // A database this node turned off: the table governs again once it shows the
                // change (off), or that someone brought it back since (errors reset, newer
                // failover time; a missed-write mark alone moves the time but not the errors).
                if let Some(c) = &conn
                    && c.local_off.load(Ordering::Relaxed)
                    && (r.status != Status::On
                        || (r.errors < self.cfg.error_threshold
                            && r.failover > c.local_off_since.load(Ordering::Relaxed)))
                {
                    c.local_off.store(false, Ordering::Relaxed);
                }
                let slot = Slot { row: r, conn };
                if slot.row.spare {
                    spares.push(slot);
                } else {
                    groups
                        .entry(slot.row.id)
                        .or_insert_with(|| Group {
                            id: slot.row.id,
                            slots: Vec::new(),
                        })
                        .slots
                        .push(slot);
                }
            }
        }
        for g in groups.values_mut() {
            g.slots.sort_by_key(|s| s.row.no);
        }
        let topo = Topology {
            groups,
            spares,
            layout_version: version,
            current,
            previous,
            loaded_at: now,
        };
        log_changes(&old, &topo);
        self.topo.store(Arc::new(topo));
        // Drop connections nobody uses any more.
        let topo = self.topo.load();
        let used: BTreeSet<&str> = topo.all_slots().map(|s| s.row.url.as_str()).collect();
        self.conns
            .lock()
            .retain(|url, _| used.contains(url.as_str()));
    }

    /// Probes turned-off databases; brings back those that answer (write-only for the window).
    async fn watch(self: &Arc<Self>) {
        let topo = self.topo.load_full();
        let mut changed = false;
        for slot in topo.all_slots() {
            let Some(conn) = slot.conn() else { continue };
            let locally_off = conn.local_off.load(Ordering::Relaxed);
            if slot.row.status == Status::Maintenance
                || (slot.row.status == Status::On && !locally_off)
                || conn.failing_over.load(Ordering::Relaxed)
            {
                continue;
            }
            if conn.call(Op::Other, conn.backend().health()).await.is_err() {
                continue;
            }
            let now = unix_s();
            conn.pending_errors.store(0, Ordering::Relaxed);
            if slot.row.status == Status::Off {
                match within(
                    self.cfg.cluster_timeout(),
                    self.cluster
                        .bring_back(slot.row.id, slot.row.no, &slot.row.url, now),
                )
                .await
                {
                    Ok(true) => {
                        self.counters.returns.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "geosip_p_usrloc", group = slot.row.id, db = slot.row.no, store = %conn.target, write_only_until = now + self.window(), "database answers again: back on, written but not read until the window passes");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(target: "geosip_p_usrloc", group = slot.row.id, db = slot.row.no, error = %e, "database answers again, but the cluster table cannot be updated: back on this node only");
                        conn.local_failover.fetch_max(now, Ordering::Relaxed);
                    }
                }
            } else {
                // Only this node had it off: it missed this node's writes meanwhile.
                conn.local_failover.fetch_max(now, Ordering::Relaxed);
                conn.missed_at.fetch_max(now, Ordering::Relaxed);
                self.counters.returns.fetch_add(1, Ordering::Relaxed);
            }
            conn.local_off.store(false, Ordering::Relaxed);
            changed = true;
            // Rows that expired while it was away.
            let c = Arc::clone(conn);
            self.handle.spawn(async move {
                let _ = c
                    .call(Op::Other, c.backend().delete_expired(unix_s()))
                    .await;
            });
        }
        if changed {
            let _ = self.reload().await;
        }
    }

    /// Writes `ops` to every database in use of group `gid`, concurrently, with the policy.
    pub(crate) async fn write_group(
        self: &Arc<Self>,
        topo: &Topology,
        gid: u32,
        ops: &[WriteOp],
    ) -> StoreResult<()> {
        let Some(group) = topo.groups.get(&gid) else {
            return Err(unavailable(format!(
                "location group {gid} has no databases"
            )));
        };
        let dbs: Vec<&Slot> = group.writable();
        if dbs.is_empty() {
            return Err(unavailable(format!(
                "location group {gid}: no database in use"
            )));
        }
        let futs: Vec<Fut<'_, StoreResult<()>>> = dbs
            .iter()
            .filter_map(|s| s.conn())
            .map(|c| Box::pin(c.call(Op::Write, c.backend().apply(ops))) as Fut<'_, _>)
            .collect();
        let results = join_all(futs).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let mut first_err = None;
        for (s, r) in dbs.iter().zip(results) {
            if let Err(e) = r {
                self.record_error(s, &e, ok > 0);
                first_err.get_or_insert(e);
            }
        }
        if ok >= self.cfg.write_policy.required(dbs.len()) {
            return Ok(());
        }
        self.counters.write_failures.fetch_add(1, Ordering::Relaxed);
        Err(first_err.unwrap_or_else(|| unavailable(format!("location group {gid}: write failed"))))
    }

    /// Reads an AOR from one database of group `gid`, falling back to the next on error.
    pub(crate) async fn lookup_group(
        self: &Arc<Self>,
        topo: &Topology,
        gid: u32,
        aor: &[u8],
    ) -> StoreResult<Vec<Binding>> {
        let Some(group) = topo.groups.get(&gid) else {
            return Err(unavailable(format!(
                "location group {gid} has no databases"
            )));
        };
        let mut last = None;
        for (i, s) in group
            .read_order(unix_s(), self.window())
            .into_iter()
            .enumerate()
        {
            let Some(c) = s.conn() else { continue };
            if i > 0 {
                self.counters.read_fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            match c.call(Op::Read, c.backend().lookup_aor(aor)).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.record_error(s, &e, false);
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| unavailable(format!("location group {gid}: no database in use"))))
    }

    pub(crate) async fn apply_ops(self: &Arc<Self>, ops: &[WriteOp]) -> StoreResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let topo = self.topo.load_full();
        let now = unix_s();
        let by = self.cfg.partition_by;
        let placements: Vec<Placement> = ops
            .iter()
            .map(|op| topo.placement(op.aor(), by, now))
            .collect();
        // The common case (db-only: one AOR per call; no migration): one group, no copies.
        if let Some(first) = placements.first().and_then(|p| p.cur)
            && placements
                .iter()
                .all(|p| p.cur == Some(first) && p.old.is_empty())
        {
            return self.write_group(&topo, first, ops).await;
        }
        let mut batches: BTreeMap<u32, Vec<WriteOp>> = BTreeMap::new();
        for (op, p) in ops.iter().zip(placements) {
            let Some(cur) = p.cur else {
                return Err(unavailable("no location groups".into()));
            };
            batches.entry(cur).or_default().push(op.clone());
            // During a migration the previous group may still hold the AOR: deletions must
            // reach it too, or lookups (which merge both) would bring the binding back.
            for old in p.old {
                let extra = match op {
                    WriteOp::Upsert(_) => None,
                    WriteOp::Delete { .. } | WriteOp::DeleteAor(_) => Some(op.clone()),
                    WriteOp::ReplaceAor { aor, .. } => Some(WriteOp::DeleteAor(aor.clone())),
                };
                if let Some(extra) = extra {
                    batches.entry(old).or_default().push(extra);
                }
            }
        }
        let futs: Vec<Fut<'_, StoreResult<()>>> = batches
            .iter()
            .map(|(g, ops)| Box::pin(self.write_group(&topo, *g, ops)) as Fut<'_, _>)
            .collect();
        join_all(futs).await.into_iter().collect()
    }

    pub(crate) async fn lookup(self: &Arc<Self>, aor: &[u8]) -> StoreResult<Vec<Binding>> {
        let topo = self.topo.load_full();
        let p = topo.placement(aor, self.cfg.partition_by, unix_s());
        let Some(cur) = p.cur else {
            return Err(unavailable("no location groups".into()));
        };
        if p.old.is_empty() {
            return self.lookup_group(&topo, cur, aor).await;
        }
        self.counters
            .old_group_reads
            .fetch_add(p.old.len() as u64, Ordering::Relaxed);
        let mut futs: Vec<Fut<'_, StoreResult<Vec<Binding>>>> =
            vec![Box::pin(self.lookup_group(&topo, cur, aor))];
        for g in &p.old {
            futs.push(Box::pin(self.lookup_group(&topo, *g, aor)));
        }
        let mut results = join_all(futs).await.into_iter();
        let mut out = results
            .next()
            .unwrap_or_else(|| Err(unavailable("no location groups".into())))?;
        // An old group that fails only hides bindings not yet refreshed in the new one.
        for v in results.flatten() {
            merge_newest(&mut out, v);
        }
        Ok(out)
    }

    /// One page of group `gid` after `inner`: from the readable databases merged (a binding on
    /// several of them once, the newest), or from the first answering database when they cannot
    /// be merged. Returns the bindings, the inner cursor to continue with, and skipped rows.
    pub(crate) async fn group_page(
        self: &Arc<Self>,
        topo: &Topology,
        gid: u32,
        inner: Option<&LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> StoreResult<(Vec<Binding>, Option<LoadCursor>, u64)> {
        let Some(group) = topo.groups.get(&gid) else {
            return Ok((Vec::new(), None, 0));
        };
        let now = unix_s();
        let order = group.read_order(now, self.window());
        if order.is_empty() {
            return Err(unavailable(format!(
                "location group {gid}: no database in use"
            )));
        }
        let limit = limit.max(1);
        let readable: Vec<&Slot> = order
            .iter()
            .copied()
            .filter(|s| s.readable(now, self.window()))
            .collect();
        if readable.len() >= 2
            && readable
                .iter()
                .all(|s| s.conn().is_some_and(|c| c.bytewise()))
        {
            let futs: Vec<Fut<'_, StoreResult<LoadPage>>> = readable
                .iter()
                .filter_map(|s| s.conn())
                .map(|c| {
                    Box::pin(c.call(Op::Read, c.backend().load_page(inner, limit, now_s)))
                        as Fut<'_, _>
                })
                .collect();
            let results = join_all(futs).await;
            let mut pages = Vec::new();
            for (s, r) in readable.iter().zip(results) {
                match r {
                    Ok(p) => pages.push((*s, p)),
                    Err(e) => self.record_error(s, &e, false),
                }
            }
            if let Some(merged) = merge_pages(&pages) {
                return Ok(merged);
            }
        }
        let mut last = None;
        for s in order {
            let Some(c) = s.conn() else { continue };
            match c
                .call(Op::Read, c.backend().load_page(inner, limit, now_s))
                .await
            {
                Ok(p) => return Ok((p.bindings, p.next, p.skipped)),
                Err(e) => {
                    self.record_error(s, &e, false);
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| unavailable(format!("location group {gid}: no database in use"))))
    }

    /// Drops bindings stored in group `gid` that the group the current layout chose for their
    /// AOR holds in the same or a newer version (left behind by a migration).
    async fn drop_superseded(
        self: &Arc<Self>,
        topo: &Topology,
        gid: u32,
        bindings: Vec<Binding>,
    ) -> Vec<Binding> {
        let by = self.cfg.partition_by;
        let mut foreign: Vec<(Bytes, u32)> = Vec::new();
        for b in &bindings {
            if let Some(cur) = topo.current_group(&b.aor, by)
                && cur != gid
                && foreign.last().is_none_or(|(a, _)| *a != b.aor)
            {
                foreign.push((b.aor.clone(), cur));
            }
        }
        if foreign.is_empty() {
            return bindings;
        }
        let mut found: HashMap<Bytes, Vec<Binding>> = HashMap::new();
        for chunk in foreign.chunks(self.cfg.migration_concurrency.max(1)) {
            let futs: Vec<Fut<'_, StoreResult<Vec<Binding>>>> = chunk
                .iter()
                .map(|(aor, cur)| Box::pin(self.lookup_group(topo, *cur, aor)) as Fut<'_, _>)
                .collect();
            for ((aor, _), r) in chunk.iter().zip(join_all(futs).await) {
                if let Ok(v) = r {
                    found.insert(aor.clone(), v);
                }
            }
        }
        bindings
            .into_iter()
            .filter(|b| match found.get(&b.aor) {
                None => true,
                Some(there) => {
                    let key = b.bkey();
                    !there
                        .iter()
                        .any(|x| x.bkey() == key && x.last_modified >= b.last_modified)
                }
            })
            .collect()
    }

    pub(crate) async fn load(
        self: &Arc<Self>,
        cursor: Option<&LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> StoreResult<LoadPage> {
        let topo = self.topo.load_full();
        let (start, mut inner) = match cursor {
            None => (0, None),
            Some(c) => decode_cursor(c)?,
        };
        let ids: Vec<u32> = topo
            .groups
            .keys()
            .copied()
            .filter(|&g| g >= start)
            .collect();
        for (i, &g) in ids.iter().enumerate() {
            if g != start {
                inner = None;
            }
            let (bindings, next, skipped) = self
                .group_page(&topo, g, inner.as_ref(), limit, now_s)
                .await?;
            let bindings = self.drop_superseded(&topo, g, bindings).await;
            if let Some(next) = next {
                return Ok(LoadPage {
                    bindings,
                    next: Some(encode_cursor(g, Some(&next))),
                    skipped,
                });
            }
            if !bindings.is_empty() || skipped > 0 {
                return Ok(LoadPage {
                    bindings,
                    next: ids.get(i + 1).map(|&n| encode_cursor(n, None)),
                    skipped,
                });
            }
        }
        Ok(LoadPage::default())
    }

    pub(crate) async fn delete_expired_all(self: &Arc<Self>, now_s: u64) -> StoreResult<u64> {
        let topo = self.topo.load_full();
        let slots: Vec<&Slot> = topo
            .groups
            .values()
            .flat_map(|g| g.slots.iter())
            .filter(|s| s.usable())
            .collect();
        let futs: Vec<Fut<'_, StoreResult<u64>>> = slots
            .iter()
            .filter_map(|s| s.conn())
            .map(|c| Box::pin(c.call(Op::Write, c.backend().delete_expired(now_s))) as Fut<'_, _>)
            .collect();
        let mut total = 0;
        let mut first_err = None;
        let mut any_ok = false;
        for (s, r) in slots.iter().zip(join_all(futs).await) {
            match r {
                Ok(n) => {
                    total += n;
                    any_ok = true;
                }
                Err(e) => {
                    self.record_error(s, &e, false);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if !any_ok => Err(e),
            _ => Ok(total),
        }
    }

    async fn health_all(self: &Arc<Self>) -> StoreResult<()> {
        let topo = self.topo.load_full();
        for gid in &topo.current {
            let Some(group) = topo.groups.get(gid) else {
                return Err(unavailable(format!(
                    "location group {gid} has no databases"
                )));
            };
            let mut ok = false;
            let mut last = None;
            for s in group.read_order(unix_s(), self.window()) {
                let Some(c) = s.conn() else { continue };
                match c.call(Op::Other, c.backend().health()).await {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        self.record_error(s, &e, false);
                        last = Some(e);
                    }
                }
            }
            if !ok {
                return Err(last.unwrap_or_else(|| {
                    unavailable(format!("location group {gid}: no database in use"))
                }));
            }
        }
        Ok(())
    }

    /// Creates the location schema on every database in use (concurrently). Fails only if a
    /// group of the current layout has no database with a schema.
    pub(crate) async fn init_all(self: &Arc<Self>) -> StoreResult<()> {
        let topo = self.topo.load_full();
        let slots: Vec<&Slot> = topo
            .groups
            .values()
            .flat_map(|g| g.slots.iter())
            .filter(|s| s.usable())
            .collect();
        let futs: Vec<Fut<'_, StoreResult<()>>> = slots
            .iter()
            .filter_map(|s| s.conn())
            .map(|c| Box::pin(c.ensure_init()) as Fut<'_, _>)
            .collect();
        let results = join_all(futs).await;
        let mut ready: BTreeSet<u32> = BTreeSet::new();
        let mut first_err = None;
        for (s, r) in slots.iter().zip(results) {
            match r {
                Ok(()) => {
                    ready.insert(s.row.id);
                }
                Err(e) => {
                    tracing::warn!(target: "geosip_p_usrloc", group = s.row.id, db = s.row.no, error = %e, "cannot create the location schema (retried on first use)");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if topo.current.iter().any(|g| !ready.contains(g)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// The previous layouts whose migration window is still open, newest first.
pub(crate) fn previous_layouts(
    recorded: &[LayoutRow],
    current: &[u32],
    window: u64,
    now: u64,
) -> Vec<PrevLayout> {
    let mut out = Vec::new();
    for pair in recorded.windows(2) {
        let (succ, l) = (&pair[0], &pair[1]);
        let until = succ.created.saturating_add(window);
        if l.finished == 0 && until > now && l.groups != current && !l.groups.is_empty() {
            out.push(PrevLayout {
                version: l.version,
                groups: l.groups.clone(),
                until,
            });
        }
        if out.len() >= MAX_PREVIOUS {
            break;
        }
    }
    out
}

/// Merges pages of several databases of one group that sort rows byte-wise: keeps rows up to
/// the smallest last row of the pages that have more, one copy per row (newest). `None` when
/// a page is not in byte-wise order (that database is then not merged again) or cannot be cut.
fn merge_pages(pages: &[(&Slot, LoadPage)]) -> Option<(Vec<Binding>, Option<LoadCursor>, u64)> {
    match pages.len() {
        0 => return None,
        1 => {
            let p = &pages[0].1;
            return Some((p.bindings.clone(), p.next.clone(), p.skipped));
        }
        _ => {}
    }
    let mut cut: Option<(Bytes, Vec<u8>)> = None;
    for (slot, page) in pages {
        let keys: Vec<(Bytes, Vec<u8>)> = page.bindings.iter().map(row_key).collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            if let Some(c) = slot.conn() {
                c.mark_not_bytewise();
                tracing::warn!(target: "geosip_p_usrloc", store = %c.target, "database does not sort location rows byte-wise: full loads read it alone");
            }
            return None;
        }
        if page.next.is_some() {
            let last = keys.last()?.clone();
            if cut.as_ref().is_none_or(|c| last < *c) {
                cut = Some(last);
            }
        }
    }
    let mut merged: BTreeMap<(Bytes, Vec<u8>), Binding> = BTreeMap::new();
    let mut skipped = 0;
    for (_, page) in pages {
        skipped += page.skipped;
        for b in &page.bindings {
            let k = row_key(b);
            if cut.as_ref().is_some_and(|c| k > *c) {
                continue;
            }
            match merged.get(&k) {
                Some(x) if x.last_modified >= b.last_modified => {}
                _ => {
                    merged.insert(k, b.clone());
                }
            }
        }
    }
    let next = cut.map(|(aor, bkey)| cursor_after(&aor, &bkey));
    Some((merged.into_values().collect(), next, skipped))
}

fn log_changes(old: &Topology, new: &Topology) {
    if old.loaded_at == 0 {
        tracing::info!(target: "geosip_p_usrloc", groups = new.groups.len(), spares = new.spares.len(), layout = ?new.current, "location cluster loaded");
        return;
    }
    let key = |s: &Slot| (s.row.id, s.row.no, s.row.spare);
    let before: BTreeMap<_, _> = old
        .all_slots()
        .map(|s| (key(s), (s.row.url.clone(), s.row.status, s.row.failover)))
        .collect();
    for s in new.all_slots() {
        let now = (s.row.url.clone(), s.row.status, s.row.failover);
        match before.get(&key(s)) {
            Some(b) if *b == now => {}
            _ => {
                let target = s
                    .conn()
                    .map_or_else(|| "-".to_string(), |c| c.target.clone());
                tracing::info!(target: "geosip_p_usrloc", group = s.row.id, db = s.row.no, spare = s.row.spare, store = %target, status = s.row.status.as_str(), failover = s.row.failover, "cluster table change");
            }
        }
    }
    if old.current != new.current {
        tracing::warn!(target: "geosip_p_usrloc", from = ?old.current, to = ?new.current, "location layout changed");
    }
}

impl PartitionedBackend {
    /// Opens the cluster table (creating it; filling it from `[location.groups]` when empty,
    /// or keeping it in memory when no `cluster_db_url` is set), connects the location
    /// databases, creates their schemas and starts the reloader and the watcher on the current
    /// tokio runtime. A database that is down does not stop the start: it is counted and
    /// failed over like at run time.
    pub async fn open(
        cfg: LocationConfig,
        data_dir: &Path,
    ) -> Result<Arc<PartitionedBackend>, Error> {
        cfg.validate()?;
        let handle = Handle::try_current()
            .map_err(|_| Error::Config("PartitionedBackend::open needs a tokio runtime".into()))?;
        let cluster_local = cfg.cluster_db_url.is_none();
        let write_url = cfg
            .cluster_db_url
            .clone()
            .unwrap_or_else(|| "sqlite::memory:".into());
        let cluster = ClusterDb::open(
            &write_url,
            cfg.cluster_read_url.as_deref(),
            data_dir,
            cfg.cluster_pool_size,
            cfg.cluster_timeout(),
        )?;
        let shared = Arc::new(Shared {
            data_dir: data_dir.to_path_buf(),
            topo: ArcSwap::from_pointee(Topology::empty()),
            conns: Mutex::new(HashMap::new()),
            cluster,
            cluster_local,
            reload_lock: tokio::sync::Mutex::new(()),
            reload_now: tokio::sync::Notify::new(),
            started_at: unix_s(),
            last_reload: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            counters: NodeCounters::default(),
            bad_urls: Mutex::new(BTreeSet::new()),
            log_gate: AtomicU64::new(0),
            handle,
            cfg,
        });
        let timeout = shared.cfg.cluster_timeout();
        let init = match tokio::time::timeout(timeout, shared.cluster.init()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(timeout.as_millis() as u64)),
        };
        let loaded = match init {
            Ok(()) => shared.reload().await,
            Err(e) => Err(e),
        };
        if let Err(e) = loaded {
            if shared.cfg.groups.is_empty() {
                return Err(Error::Store(e));
            }
            tracing::error!(target: "geosip_p_usrloc", error = %e, "cluster table unavailable at start: using [location.groups] until it answers");
            let rows = shared.toml_rows();
            let present: Vec<u32> = shared.cfg.groups.iter().map(|g| g.id).collect();
            let mut present = present;
            present.sort_unstable();
            shared.install(rows, 0, present, Vec::new(), unix_s()).await;
        }
        if let Err(e) = shared.init_all().await {
            tracing::warn!(target: "geosip_p_usrloc", error = %e, "some location groups have no database answering at start");
        }
        let backend = Arc::new(PartitionedBackend {
            shared: Arc::clone(&shared),
            tasks: Mutex::new(Vec::new()),
        });
        backend.start_tasks();
        Ok(backend)
    }

    fn start_tasks(&self) {
        let handle = self.shared.handle.clone();
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let reload_every = Duration::from_secs(self.shared.cfg.reload_interval_s.max(1));
        let reloader = handle.spawn({
            let weak = weak.clone();
            async move {
                loop {
                    let notified = match weak.upgrade() {
                        Some(s) => {
                            let notify = async {
                                s.reload_now.notified().await;
                            };
                            tokio::select! {
                                _ = tokio::time::sleep(reload_every) => false,
                                _ = notify => true,
                            }
                        }
                        None => return,
                    };
                    let Some(s) = weak.upgrade() else { return };
                    let _ = s.reload().await;
                    drop(s);
                    if notified {
                        // Bursts of missed writes trigger one reload per half second at most.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let retry_every = Duration::from_secs(self.shared.cfg.retry_interval_s.max(1));
        let watcher = handle.spawn(async move {
            loop {
                tokio::time::sleep(retry_every).await;
                let Some(s) = weak.upgrade() else { return };
                s.watch().await;
            }
        });
        self.tasks.lock().extend([reloader, watcher]);
    }

    /// Re-reads the cluster table now (`location.reload_cluster`).
    pub async fn reload_cluster(&self) -> Result<(), Error> {
        self.shared.reload().await.map_err(Error::Store)
    }

    /// Runs the watcher once now (tests, or an operator in a hurry).
    pub async fn probe_off_databases(&self) {
        self.shared.watch().await;
    }

    /// The configuration.
    pub fn config(&self) -> &LocationConfig {
        &self.shared.cfg
    }

    /// The group the current layout places `aor` in.
    pub fn group_of(&self, aor: &[u8]) -> Option<u32> {
        self.shared
            .topo
            .load()
            .current_group(aor, self.shared.cfg.partition_by)
    }

    /// The URL of database `no` of group `group` as this node sees it.
    pub fn database_url(&self, group: u32, no: u32) -> Option<String> {
        let topo = self.shared.topo.load();
        topo.groups
            .get(&group)
            .and_then(|g| g.slots.iter().find(|s| s.row.no == no))
            .map(|s| s.row.url.clone())
    }

    /// True while reads fall back to a previous layout.
    pub fn in_transition(&self) -> bool {
        self.shared.topo.load().in_transition(unix_s())
    }
}

impl LocationBackend for PartitionedBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Other
    }

    fn describe(&self) -> String {
        let topo = self.shared.topo.load();
        format!(
            "p_usrloc: {} groups, {} databases, {} spares, cluster table {}",
            topo.groups.len(),
            topo.groups.values().map(|g| g.slots.len()).sum::<usize>(),
            topo.spares.len(),
            if self.shared.cluster_local {
                "in memory".to_string()
            } else {
                self.shared.cluster.target().to_string()
            }
        )
    }

    fn init(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.shared.init_all())
    }

    fn apply<'a>(&'a self, ops: &'a [WriteOp]) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.shared.apply_ops(ops))
    }

    fn lookup_aor<'a>(&'a self, aor: &'a [u8]) -> BoxFuture<'a, StoreResult<Vec<Binding>>> {
        Box::pin(self.shared.lookup(aor))
    }

    fn load_page<'a>(
        &'a self,
        cursor: Option<&'a LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> BoxFuture<'a, StoreResult<LoadPage>> {
        Box::pin(self.shared.load(cursor, limit, now_s))
    }

    fn delete_expired(&self, now_s: u64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.shared.delete_expired_all(now_s))
    }

    fn health(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.shared.health_all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_cursors_round_trip_and_foreign_ones_are_refused() {
        let c = encode_cursor(7, None);
        assert_eq!(decode_cursor(&c).unwrap(), (7, None));
        let inner = LoadCursor(vec![1, 2, 3]);
        let c = encode_cursor(9, Some(&inner));
        assert_eq!(decode_cursor(&c).unwrap(), (9, Some(inner)));
        assert!(decode_cursor(&LoadCursor(vec![0, 0, 0, 0, 1])).is_err());
        assert!(decode_cursor(&LoadCursor(vec![CURSOR_MAGIC, 0])).is_err());
    }

    fn layout(version: u64, groups: &[u32], created: u64, finished: u64) -> LayoutRow {
        LayoutRow {
            version,
            groups: groups.to_vec(),
            created,
            finished,
        }
    }

    #[test]
    fn a_previous_layout_is_consulted_until_its_window_after_being_replaced() {
        let rec = vec![
            layout(3, &[1, 2, 3, 4], 1000, 0),
            layout(2, &[1, 2, 3], 500, 0),
            layout(1, &[1, 2], 100, 0),
        ];
        // Layout 2 was replaced at 1000, layout 1 at 500; each is read for 600 s after.
        let p = previous_layouts(&rec, &[1, 2, 3, 4], 600, 1050);
        assert_eq!(
            p.iter().map(|l| (l.version, l.until)).collect::<Vec<_>>(),
            vec![(2, 1600), (1, 1100)]
        );
        let p = previous_layouts(&rec, &[1, 2, 3, 4], 600, 1100);
        assert_eq!(p.iter().map(|l| l.version).collect::<Vec<_>>(), vec![2]);
        assert!(previous_layouts(&rec, &[1, 2, 3, 4], 600, 1600).is_empty());
        let mut finished = rec.clone();
        finished[1].finished = 1080;
        finished[2].finished = 1080;
        assert!(previous_layouts(&finished, &[1, 2, 3, 4], 1000, 1099).is_empty());
    }

    fn binding(aor: &str, contact: &str, lm: u64) -> Binding {
        Binding {
            aor: Bytes::from(aor.to_string()),
            contact: Bytes::from(contact.to_string()),
            expires: 10_000,
            last_modified: lm,
            ..Binding::default()
        }
    }

    #[test]
    fn merging_keeps_the_newest_copy_of_each_binding() {
        let mut a = vec![
            binding("sip:a@x", "sip:1@h", 5),
            binding("sip:a@x", "sip:2@h", 5),
        ];
        merge_newest(
            &mut a,
            vec![
                binding("sip:a@x", "sip:2@h", 9),
                binding("sip:a@x", "sip:3@h", 1),
            ],
        );
        let mut got: Vec<(String, u64)> = a
            .iter()
            .map(|b| {
                (
                    String::from_utf8_lossy(&b.contact).into_owned(),
                    b.last_modified,
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("sip:1@h".into(), 5),
                ("sip:2@h".into(), 9),
                ("sip:3@h".into(), 1)
            ]
        );
    }
}
