//! Admin functions (registered as RPCs) and metrics: `location.cluster`,
//! `location.set_status`, `location.reload_cluster`, `location.rebalance`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use geosip_core::metrics::{Family, Kind, Registry, Sink};
use geosip_core::rpc::{RpcError, RpcFuture, RpcRegistry};
use geosip_store::location::{LoadCursor, WriteOp};
use serde_json::{Value, json};

use crate::Error;
use crate::backend::{PartitionedBackend, Shared, unix_s, within};
use crate::cluster::Status;
use crate::db::DbConn;
use crate::topology::{DbState, Slot, Topology};

/// What `location.rebalance` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebalance {
    /// Show the layouts and count the contacts still stored where a previous layout put them.
    Status,
    /// Record a new layout: the groups now in the cluster table, or (with
    /// `auto_rebalance = false`) an explicit list, e.g. without a group that is to be removed
    /// (its rows stay in the table until `finish` has moved its users). A no-op when the
    /// groups are the layout already.
    Start(Option<Vec<u32>>),
    /// Move every contact still in an old placement to its current group, then end the
    /// migration window (reads stop falling back).
    Finish,
}

impl Rebalance {
    /// Parses `status`, `start [GROUPS]` (GROUPS = `1,2,4`), `finish`.
    pub fn parse(action: &str, groups: Option<&str>) -> Option<Rebalance> {
        match (action.trim().to_ascii_lowercase().as_str(), groups) {
            ("" | "status", None) => Some(Rebalance::Status),
            ("start", None) => Some(Rebalance::Start(None)),
            ("start", Some(g)) => {
                let list = crate::cluster::parse_groups(g);
                (!list.is_empty()).then_some(Rebalance::Start(Some(list)))
            }
            ("finish", None) => Some(Rebalance::Finish),
            _ => None,
        }
    }
}

fn conn_json(c: &DbConn) -> Value {
    let m = &c.metrics;
    let queries = m.queries.load(Ordering::Relaxed);
    json!({
        "backend": c.kind.as_str(),
        "queries": queries,
        "errors": m.errors.load(Ordering::Relaxed),
        "reads": m.reads.load(Ordering::Relaxed),
        "writes": m.writes.load(Ordering::Relaxed),
        "avg_latency_us": m.latency_us.load(Ordering::Relaxed).checked_div(queries).unwrap_or(0),
        "errors_not_yet_in_table": c.pending_errors.load(Ordering::Relaxed),
        "off_on_this_node": c.local_off.load(Ordering::Relaxed),
    })
}

fn slot_json(s: &Slot, state: DbState, window: u64) -> Value {
    let until = s.write_only_until(window);
    json!({
        "group": s.row.id,
        "no": s.row.no,
        "url": s.conn().map_or_else(|| "(unusable URL)".to_string(), |c| c.target.clone()),
        "status": s.row.status.as_str(),
        "state": state.as_str(),
        "errors": s.row.errors,
        "failover": s.row.failover,
        "write_only_until": if state == DbState::WriteOnly { until } else { 0 },
        "risk_group": s.row.risk_group,
        "spare": s.row.spare,
        "node": s.conn().map_or(Value::Null, |c| conn_json(c)),
    })
}

fn topology_json(shared: &Shared, topo: &Topology) -> Value {
    let now = unix_s();
    let window = shared.cfg.expire_window_s;
    let groups: Vec<Value> = topo
        .groups
        .values()
        .map(|g| {
            let states = g.states(now, window);
            let read = g
                .slots
                .iter()
                .zip(&states)
                .find(|(_, st)| **st == DbState::Read)
                .map(|(s, _)| s.row.no);
            json!({
                "id": g.id,
                "in_layout": topo.current.contains(&g.id),
                "read": read,
                "databases": g.slots.iter().zip(states).map(|(s, st)| slot_json(s, st, window)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let spares: Vec<Value> = topo
        .spares
        .iter()
        .map(|s| {
            let st = match s.effective_status() {
                Status::On => DbState::Spare,
                Status::Off => DbState::Off,
                Status::Maintenance => DbState::Maintenance,
            };
            slot_json(s, st, window)
        })
        .collect();
    let c = &shared.counters;
    json!({
        "db_mode": shared.cfg.db_mode.as_str(),
        "partition_by": shared.cfg.partition_by.as_str(),
        "write_policy": shared.cfg.write_policy.as_str(),
        "error_threshold": shared.cfg.error_threshold,
        "expire_window_s": window,
        "reload_interval_s": shared.cfg.reload_interval_s,
        "cluster_table": if shared.cluster_local { "memory (this node only)".to_string() } else { shared.cluster.target().to_string() },
        "last_reload": shared.last_reload.load(Ordering::Relaxed),
        "last_reload_error": shared.last_reload_error.lock().clone(),
        "layout": {
            "version": topo.layout_version,
            "groups": topo.current,
            "auto_rebalance": shared.cfg.auto_rebalance,
        },
        "previous_layouts": topo.previous.iter().filter(|p| p.until > now).map(|p| json!({
            "version": p.version, "groups": p.groups, "until": p.until,
        })).collect::<Vec<_>>(),
        "groups": groups,
        "spares": spares,
        "node": {
            "failovers": c.failovers.load(Ordering::Relaxed),
            "spare_takeovers": c.spare_takeovers.load(Ordering::Relaxed),
            "returns": c.returns.load(Ordering::Relaxed),
            "read_fallbacks": c.read_fallbacks.load(Ordering::Relaxed),
            "old_group_reads": c.old_group_reads.load(Ordering::Relaxed),
            "write_failures": c.write_failures.load(Ordering::Relaxed),
            "reloads": c.reloads.load(Ordering::Relaxed),
            "reload_errors": c.reload_errors.load(Ordering::Relaxed),
        },
    })
}

impl PartitionedBackend {
    /// `location.cluster`: groups, databases (status, state: read / standby / write-only /
    /// off / maintenance, errors, failover time, write-only-until, this node's counters),
    /// spares, the layout and any migration in progress.
    pub fn cluster_status(&self) -> Value {
        let topo = self.shared.topo.load();
        topology_json(&self.shared, &topo)
    }

    /// The state of database `no` of group `group` as this node uses it now.
    pub fn database_state(&self, group: u32, no: u32) -> Option<DbState> {
        let topo = self.shared.topo.load();
        let g = topo.groups.get(&group)?;
        let states = g.states(unix_s(), self.shared.cfg.expire_window_s);
        g.slots
            .iter()
            .zip(states)
            .find(|(s, _)| s.row.no == no)
            .map(|(_, st)| st)
    }

    /// `location.set_status GROUP NO on|off|maintenance`: writes the cluster table (every node
    /// follows within one reload interval) and reloads this node at once. `on` resets the
    /// error counter; a database that was not on comes back write-only for the window.
    pub async fn set_status(&self, group: u32, no: u32, status: Status) -> Result<Value, Error> {
        let found = within(
            self.shared.cfg.cluster_timeout(),
            self.shared.cluster.set_status(group, no, status, unix_s()),
        )
        .await?;
        if !found {
            return Err(Error::NotFound { group, no });
        }
        tracing::warn!(target: "geosip_p_usrloc", group, db = no, status = status.as_str(), "location.set_status");
        self.shared.reload().await?;
        Ok(json!({ "group": group, "no": no, "status": status.as_str() }))
    }

    /// `location.rebalance [status|start|finish]`.
    pub async fn rebalance(&self, action: Rebalance) -> Result<Value, Error> {
        let shared = &self.shared;
        let mut done = json!(null);
        match action {
            Rebalance::Status => {}
            Rebalance::Start(explicit) => {
                let rows = shared.cluster.rows_master().await?;
                let mut present: Vec<u32> =
                    rows.iter().filter(|r| !r.spare).map(|r| r.id).collect();
                present.sort_unstable();
                present.dedup();
                if let Some(list) = explicit {
                    if shared.cfg.auto_rebalance {
                        return Err(Error::Config(
                            "an explicit layout needs auto_rebalance = false (otherwise the groups in the cluster table are the layout)".into(),
                        ));
                    }
                    if let Some(g) = list.iter().find(|g| !present.contains(g)) {
                        return Err(Error::Config(format!(
                            "group {g} has no database in the cluster table"
                        )));
                    }
                    present = list;
                }
                let recorded = shared.cluster.layouts().await?;
                let latest = recorded.first();
                if latest.is_none_or(|l| l.groups != present) && !present.is_empty() {
                    let v = latest.map_or(1, |l| l.version + 1);
                    shared.cluster.insert_layout(v, &present, unix_s()).await?;
                    tracing::warn!(target: "geosip_p_usrloc", version = v, groups = ?present, "location.rebalance start: new layout recorded");
                    done = json!({ "started": v });
                } else {
                    done = json!({ "started": Value::Null, "reason": "the groups in the cluster table are the layout already" });
                }
                shared.reload().await?;
            }
            Rebalance::Finish => {
                let (moved, aors) = migrate(shared).await?;
                let topo = shared.topo.load_full();
                let n = shared
                    .cluster
                    .finish_layouts(topo.layout_version, unix_s())
                    .await?;
                shared.reload().await?;
                tracing::warn!(target: "geosip_p_usrloc", moved, aors, layouts_finished = n, "location.rebalance finish");
                done =
                    json!({ "moved_bindings": moved, "aors_cleaned": aors, "layouts_finished": n });
            }
        }
        let mut status = progress(shared).await?;
        if let Value::Object(m) = &mut status {
            m.insert("done".into(), done);
        }
        Ok(status)
    }

    /// Registers `location.cluster`, `location.set_status`, `location.reload_cluster` and
    /// `location.rebalance`. The registry keeps only a weak reference.
    pub fn register_rpc(self: &Arc<Self>, rpc: &RpcRegistry) {
        let w = Arc::downgrade(self);
        rpc.register(
            "location.cluster",
            "",
            "Location groups and databases: status, state (read/standby/write-only/off/maintenance), errors, failover times, spares, layout.",
            move |_| Ok(up(&w)?.cluster_status()),
        );
        let w = Arc::downgrade(self);
        rpc.register_async(
            "location.set_status",
            "GROUP NO on|off|maintenance",
            "Sets a location database on (back write-only first), off (the watcher retries it) or maintenance (drained) for every node.",
            move |p| {
                let w = w.clone();
                Box::pin(async move {
                    let b = up(&w)?;
                    let group = param_u32(&p, 0, "GROUP")?;
                    let no = param_u32(&p, 1, "NO")?;
                    let st = p
                        .get(2)
                        .and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())))
                        .and_then(|s| Status::parse(&s))
                        .ok_or_else(|| RpcError::invalid_params("parameter 3 must be on, off or maintenance"))?;
                    b.set_status(group, no, st).await.map_err(rpc_err)
                }) as RpcFuture
            },
        );
        let w = Arc::downgrade(self);
        rpc.register_async(
            "location.reload_cluster",
            "",
            "Re-reads the location cluster table now.",
            move |_| {
                let w = w.clone();
                Box::pin(async move {
                    let b = up(&w)?;
                    b.reload_cluster().await.map_err(rpc_err)?;
                    Ok(b.cluster_status())
                }) as RpcFuture
            },
        );
        let w = Arc::downgrade(self);
        rpc.register_async(
            "location.rebalance",
            "[status|start [GROUPS]|finish]",
            "Layout migration: progress (contacts left in old groups, window end), start a new layout (the groups in the cluster table, or GROUPS = 1,2,4 with auto_rebalance off), or finish (move what is left, stop falling back).",
            move |p| {
                let w = w.clone();
                Box::pin(async move {
                    let b = up(&w)?;
                    let text = |i: usize| {
                        p.get(i).map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                    };
                    let action = Rebalance::parse(
                        text(0).as_deref().unwrap_or("status"),
                        text(1).as_deref(),
                    )
                    .ok_or_else(|| {
                        RpcError::invalid_params("expected: status | start [GROUPS like 1,2,4] | finish")
                    })?;
                    b.rebalance(action).await.map_err(rpc_err)
                }) as RpcFuture
            },
        );
    }

    /// Registers the `location` metrics: per database queries, errors, reads, writes, latency
    /// (sum and count), state and the table's error counter; per node failovers and layout.
    pub fn register_metrics(self: &Arc<Self>, registry: &Registry) {
        let w: Weak<PartitionedBackend> = Arc::downgrade(self);
        registry.register("location", move |sink| {
            if let Some(b) = w.upgrade() {
                collect(&b.shared, sink);
            }
        });
    }
}

fn up(w: &Weak<PartitionedBackend>) -> Result<Arc<PartitionedBackend>, RpcError> {
    w.upgrade()
        .ok_or_else(|| RpcError::failed("the location backend is shut down"))
}

fn rpc_err(e: Error) -> RpcError {
    match e {
        Error::NotFound { .. } | Error::Config(_) => RpcError::invalid_params(e.to_string()),
        _ => RpcError::failed(e.to_string()),
    }
}

fn param_u32(p: &[Value], i: usize, name: &str) -> Result<u32, RpcError> {
    let v = p
        .get(i)
        .ok_or_else(|| RpcError::invalid_params(format!("missing parameter {} ({name})", i + 1)))?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            RpcError::invalid_params(format!("parameter {} ({name}) must be a number", i + 1))
        })
}

fn collect(shared: &Shared, sink: &mut dyn Sink) {
    let topo = shared.topo.load();
    let now = unix_s();
    let window = shared.cfg.expire_window_s;
    let mut rows: Vec<(String, String, String, DbState, &Slot)> = Vec::new();
    for g in topo.groups.values() {
        for (s, st) in g.slots.iter().zip(g.states(now, window)) {
            rows.push((s.row.id.to_string(), s.row.no.to_string(), target(s), st, s));
        }
    }
    for s in &topo.spares {
        let st = match s.effective_status() {
            Status::On => DbState::Spare,
            Status::Off => DbState::Off,
            Status::Maintenance => DbState::Maintenance,
        };
        rows.push((s.row.id.to_string(), s.row.no.to_string(), target(s), st, s));
    }
    let counter = |sink: &mut dyn Sink, name, help, f: &dyn Fn(&DbConn) -> f64| {
        sink.family(Family {
            name,
            help,
            kind: Kind::Counter,
        });
        for (g, n, u, _, s) in &rows {
            if let Some(c) = s.conn() {
                sink.sample(&[("group", g), ("db", n), ("url", u)], f(c));
            }
        }
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    counter(
        sink,
        "geosip_location_db_queries_total",
        "Calls to a location database.",
        &|c| load(&c.metrics.queries),
    );
    counter(
        sink,
        "geosip_location_db_errors_total",
        "Failed calls to a location database.",
        &|c| load(&c.metrics.errors),
    );
    counter(
        sink,
        "geosip_location_db_reads_total",
        "Reads served by (or tried on) a location database.",
        &|c| load(&c.metrics.reads),
    );
    counter(
        sink,
        "geosip_location_db_writes_total",
        "Writes sent to a location database.",
        &|c| load(&c.metrics.writes),
    );
    counter(
        sink,
        "geosip_location_db_latency_seconds_sum",
        "Total time of calls to a location database.",
        &|c| load(&c.metrics.latency_us) / 1e6,
    );
    counter(
        sink,
        "geosip_location_db_latency_seconds_count",
        "Calls timed (same as queries).",
        &|c| load(&c.metrics.queries),
    );
    sink.family(Family {
        name: "geosip_location_db_state",
        help: "1 for the state a location database is in (read, standby, write-only, off, maintenance, spare).",
        kind: Kind::Gauge,
    });
    for (g, n, u, st, _) in &rows {
        sink.sample(
            &[("group", g), ("db", n), ("url", u), ("state", st.as_str())],
            1.0,
        );
    }
    sink.family(Family {
        name: "geosip_location_db_table_errors",
        help: "Error counter of a location database in the cluster table (all nodes).",
        kind: Kind::Gauge,
    });
    for (g, n, u, _, s) in &rows {
        sink.sample(&[("group", g), ("db", n), ("url", u)], s.row.errors as f64);
    }
    let c = &shared.counters;
    for (name, help, v) in [
        (
            "geosip_location_failovers_total",
            "Databases this node turned off for all nodes.",
            &c.failovers,
        ),
        (
            "geosip_location_spare_takeovers_total",
            "Failovers where a spare took the slot.",
            &c.spare_takeovers,
        ),
        (
            "geosip_location_returns_total",
            "Turned-off databases the watcher brought back.",
            &c.returns,
        ),
        (
            "geosip_location_read_fallbacks_total",
            "Reads that went to another database of the group.",
            &c.read_fallbacks,
        ),
        (
            "geosip_location_old_group_reads_total",
            "Reads of a previous layout's group during a migration.",
            &c.old_group_reads,
        ),
        (
            "geosip_location_write_failures_total",
            "Group writes that missed the write policy.",
            &c.write_failures,
        ),
    ] {
        sink.family(Family {
            name,
            help,
            kind: Kind::Counter,
        });
        sink.sample(&[], load(v));
    }
    sink.family(Family {
        name: "geosip_location_layout_version",
        help: "Version of the layout users are placed over.",
        kind: Kind::Gauge,
    });
    sink.sample(&[], topo.layout_version as f64);
    sink.family(Family {
        name: "geosip_location_in_transition",
        help: "1 while reads fall back to a previous layout.",
        kind: Kind::Gauge,
    });
    sink.sample(&[], if topo.in_transition(now) { 1.0 } else { 0.0 });
}

fn target(s: &Slot) -> String {
    s.conn().map_or_else(String::new, |c| c.target.clone())
}

/// Counts live contacts per group and those stored where the current layout does not put them.
async fn progress(shared: &Arc<Shared>) -> Result<Value, Error> {
    let topo = shared.topo.load_full();
    let now = unix_s();
    let by = shared.cfg.partition_by;
    let mut per_group = Vec::new();
    let mut remaining = 0u64;
    let mut errors = Vec::new();
    for &g in topo.groups.keys() {
        let (mut contacts, mut misplaced) = (0u64, 0u64);
        let mut dest: BTreeMap<u32, u64> = BTreeMap::new();
        let mut inner: Option<LoadCursor> = None;
        loop {
            match shared.group_page(&topo, g, inner.as_ref(), 1000, now).await {
                Ok((bindings, next, _)) => {
                    for b in &bindings {
                        contacts += 1;
                        if let Some(cur) = topo.current_group(&b.aor, by)
                            && cur != g
                        {
                            misplaced += 1;
                            *dest.entry(cur).or_default() += 1;
                        }
                    }
                    match next {
                        Some(n) => inner = Some(n),
                        None => break,
                    }
                }
                Err(e) => {
                    errors.push(json!({ "group": g, "error": e.to_string() }));
                    break;
                }
            }
        }
        remaining += misplaced;
        per_group.push(json!({
            "group": g,
            "contacts": contacts,
            "in_old_placement": misplaced,
            "belong_to": dest,
        }));
    }
    let window_end = topo
        .previous
        .iter()
        .filter(|p| p.until > now)
        .map(|p| p.until)
        .max()
        .unwrap_or(0);
    Ok(json!({
        "layout": { "version": topo.layout_version, "groups": topo.current, "auto_rebalance": shared.cfg.auto_rebalance },
        "previous_layouts": topo.previous.iter().filter(|p| p.until > now).map(|p| json!({
            "version": p.version, "groups": p.groups, "until": p.until,
        })).collect::<Vec<_>>(),
        "in_transition": window_end > 0,
        "window_end": window_end,
        "remaining": remaining,
        "groups": per_group,
        "errors": errors,
    }))
}

/// Moves every live binding stored outside its current group there (newer copies win), then
/// deletes the AOR from the old group. Returns (bindings moved, AORs cleaned).
async fn migrate(shared: &Arc<Shared>) -> Result<(u64, u64), Error> {
    let topo = shared.topo.load_full();
    let now = unix_s();
    let by = shared.cfg.partition_by;
    let (mut moved, mut cleaned) = (0u64, 0u64);
    for &g in topo.groups.keys() {
        let mut inner: Option<LoadCursor> = None;
        loop {
            let (bindings, next, _) = shared
                .group_page(&topo, g, inner.as_ref(), 500, now)
                .await?;
            let mut aors: Vec<(Bytes, u32)> = Vec::new();
            for b in &bindings {
                if let Some(cur) = topo.current_group(&b.aor, by)
                    && cur != g
                    && aors.last().is_none_or(|(a, _)| *a != b.aor)
                {
                    aors.push((b.aor.clone(), cur));
                }
            }
            for (aor, cur) in aors {
                let own = shared.lookup_group(&topo, g, &aor).await?;
                let there = shared.lookup_group(&topo, cur, &aor).await?;
                let ups: Vec<WriteOp> = own
                    .into_iter()
                    .filter(|b| b.is_live(now))
                    .filter(|b| {
                        let k = b.bkey();
                        !there
                            .iter()
                            .any(|x| x.bkey() == k && x.last_modified >= b.last_modified)
                    })
                    .map(WriteOp::Upsert)
                    .collect();
                if !ups.is_empty() {
                    shared.write_group(&topo, cur, &ups).await?;
                    moved += ups.len() as u64;
                }
                shared
                    .write_group(&topo, g, &[WriteOp::DeleteAor(aor)])
                    .await?;
                cleaned += 1;
            }
            match next {
                Some(n) => inner = Some(n),
                None => break,
            }
        }
    }
    Ok((moved, cleaned))
}
