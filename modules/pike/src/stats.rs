//! `pike` metrics and the `pike.*` RPCs.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use geosip_core::metrics::{Counter, Family, Kind, Registry, Sink};
use geosip_core::rpc::{RpcError, RpcRegistry, param_str};
use serde_json::{Value, json};

use crate::{Class, Protect, Reason};

/// Counters of the protection layer (plain atomics, bumped on the hot path).
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests dropped, by [`Reason`] (flood, authfail, ratelimit, overload).
    pub dropped: [Counter; 4],
    /// Requests answered 503, by [`Reason`].
    pub rejected: [Counter; 4],
    /// Requests shed by overload control, by [`Class`] (in-dialog, register, invite, other).
    pub shed: [Counter; 4],
    /// Blocks started: flood, failed-auth IP, failed-auth user.
    pub blocks: [Counter; 3],
    /// New keys not tracked because a table was full.
    pub untracked: Counter,
}

impl Stats {
    pub(crate) fn count(&self, reason: Reason, dropped: bool) {
        if dropped {
            self.dropped[reason.index()].inc();
        } else {
            self.rejected[reason.index()].inc();
        }
    }
}

const CLASSES: [Class; 4] = [
    Class::InDialog,
    Class::Register,
    Class::Invite,
    Class::Other,
];
const BLOCK_KINDS: [&str; 3] = ["flood", "authfail-ip", "authfail-user"];

fn blocked_counts(p: &Protect, now: Instant) -> [usize; 3] {
    let mut n = [0usize; 3];
    for b in p.blocked(now) {
        if let Some(i) = BLOCK_KINDS.iter().position(|k| *k == b.kind) {
            n[i] += 1;
        }
    }
    n
}

pub(crate) fn register(p: &Arc<Protect>, metrics: &Registry, rpc: &RpcRegistry) {
    let w: Weak<Protect> = Arc::downgrade(p);
    metrics.register("pike", move |out: &mut dyn Sink| {
        let Some(p) = w.upgrade() else { return };
        let s = &p.stats;
        let now = Instant::now();
        out.family(Family { name: "geosip_pike_blocked", help: "Keys currently blocked, by kind.", kind: Kind::Gauge });
        for (k, n) in BLOCK_KINDS.iter().zip(blocked_counts(&p, now)) {
            out.sample(&[("kind", k)], n as f64);
        }
        out.family(Family {
            name: "geosip_pike_refused_total",
            help: "Requests refused before the script, by reason and action (drop or 503).",
            kind: Kind::Counter,
        });
        for r in Reason::ALL {
            out.sample(&[("reason", r.as_str()), ("action", "drop")], s.dropped[r.index()].get() as f64);
            out.sample(&[("reason", r.as_str()), ("action", "503")], s.rejected[r.index()].get() as f64);
        }
        out.family(Family { name: "geosip_pike_shed_total", help: "Requests shed by overload control, by class.", kind: Kind::Counter });
        for c in CLASSES {
            out.sample(&[("class", c.as_str())], s.shed[c.index()].get() as f64);
        }
        out.family(Family { name: "geosip_pike_blocks_total", help: "Blocks started, by kind.", kind: Kind::Counter });
        for (i, k) in BLOCK_KINDS.iter().enumerate() {
            out.sample(&[("kind", k)], s.blocks[i].get() as f64);
        }
        out.family(Family {
            name: "geosip_pike_untracked_total",
            help: "New keys not tracked because a table was full.",
            kind: Kind::Counter,
        });
        out.sample(&[], s.untracked.get() as f64);
        out.family(Family { name: "geosip_pike_table_entries", help: "Entries held, by table.", kind: Kind::Gauge });
        for (t, n) in ["flood", "authfail-ip", "authfail-user"].iter().zip(p.table_sizes()) {
            out.sample(&[("table", t)], n as f64);
        }
        let st = p.overload().state();
        out.family(Family {
            name: "geosip_overload_load_ratio",
            help: "Largest load signal over its threshold at the last controller update (1 = at the threshold).",
            kind: Kind::Gauge,
        });
        out.sample(&[], st.load);
        out.family(Family { name: "geosip_overload_shed_fraction", help: "Shed fraction of the overload controller (0..1).", kind: Kind::Gauge });
        out.sample(&[], st.shed_fraction);
    });

    let w = Arc::downgrade(p);
    rpc.register("pike.list", "", "Blocked sources and users with the seconds left and the requests refused (flood) or failures counted (authfail).", move |_| {
        let p = w.upgrade().ok_or_else(|| RpcError::failed("pike is shutting down"))?;
        Ok(Value::Array(p.blocked(Instant::now()).into_iter().map(|b| json!({
            "kind": b.kind,
            "ip": b.ip.map(|i| i.to_string()),
            "user": b.user,
            "remaining_s": b.remaining_s,
            "count": b.count,
        })).collect()))
    });

    let w = Arc::downgrade(p);
    rpc.register("pike.unblock", "IP|USER@DOMAIN", "Lift the blocks of a source IP (flood and failed authentications), or of a user blocked after failed authentications.", move |params| {
        let p = w.upgrade().ok_or_else(|| RpcError::failed("pike is shutting down"))?;
        let target = param_str(params, 0, "IP or USER@DOMAIN")?.trim();
        if let Ok(ip) = target.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            let n = p.unblock_ip(ip);
            return Ok(json!({ "ip": ip.to_string(), "removed": n }));
        }
        if target.contains('@') && !target.starts_with('@') && !target.ends_with('@') {
            let user = target.strip_prefix("sip:").unwrap_or(target);
            let removed = p.unblock_user(user.as_bytes());
            return Ok(json!({ "user": user, "removed": usize::from(removed) }));
        }
        Err(RpcError::invalid_params(format!("{target:?} is neither an IP address nor USER@DOMAIN")))
    });

    let w = Arc::downgrade(p);
    rpc.register("pike.stats", "", "Protection counters, table sizes and the overload controller state.", move |_| {
        let p = w.upgrade().ok_or_else(|| RpcError::failed("pike is shutting down"))?;
        let s = &p.stats;
        let now = Instant::now();
        let per_reason = |c: &[Counter; 4]| {
            Reason::ALL.iter().map(|r| (r.as_str().to_string(), json!(c[r.index()].get()))).collect::<serde_json::Map<_, _>>()
        };
        let blocked = blocked_counts(&p, now);
        let sizes = p.table_sizes();
        let st = p.overload().state();
        Ok(json!({
            "blocked": { "flood": blocked[0], "authfail_ip": blocked[1], "authfail_user": blocked[2] },
            "dropped": per_reason(&s.dropped),
            "rejected_503": per_reason(&s.rejected),
            "shed": CLASSES.iter().map(|c| (c.as_str().to_string(), json!(s.shed[c.index()].get()))).collect::<serde_json::Map<_, _>>(),
            "blocks_started": { "flood": s.blocks[0].get(), "authfail_ip": s.blocks[1].get(), "authfail_user": s.blocks[2].get() },
            "untracked": s.untracked.get(),
            "tables": { "flood": sizes[0], "authfail_ip": sizes[1], "authfail_user": sizes[2], "capacity_each": p.table_capacity() },
            "overload": {
                "enabled": p.overload().enabled(),
                "load": st.load,
                "shed_fraction": st.shed_fraction,
                "transactions": st.transactions,
                "shed_probability": {
                    "in_dialog": st.shed_probability[0],
                    "register": st.shed_probability[1],
                    "invite": st.shed_probability[2],
                    "other": st.shed_probability[3],
                },
            },
        }))
    });
}
