//! Counters of the transaction layer: the `tm` metrics collector and the `tm.stats` RPC.

use std::sync::Arc;

use geosip_core::metrics::{Counter, Family, Gauge, Kind, Registry, Sink};
use geosip_core::rpc::RpcRegistry;
use serde_json::json;

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
const TYPES: [&str; 2] = ["invite", "non_invite"];

/// Live counters, bumped on the hot path (relaxed atomics, no lock).
#[derive(Default, Debug)]
pub(crate) struct TmCounters {
    pub live: [Gauge; 2],
    pub total: [Counter; 2],
    pub retrans_absorbed: Counter,
    pub retrans_sent: Counter,
    pub branch_timeouts: Counter,
    pub transport_errors: Counter,
    pub server_timeouts: Counter,
    pub local_408: Counter,
    pub relayed: [Counter; 6],
    pub local_replies: [Counter; 6],
    pub cancels: Counter,
    pub rejected_full: Counter,
    pub stray_replies: Counter,
    pub forged_replies: Counter,
    pub failure_routes: Counter,
    pub silent_non_invite: Counter,
    pub timer_fires: Counter,
}

/// Class index of a status: 1xx → 0 ... 6xx → 5.
pub(crate) fn class(status: u16) -> usize {
    (status / 100).clamp(1, 6) as usize - 1
}

/// A copy of the counters (what [`Tm::stats`](crate::Tm::stats) returns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TmStats {
    /// INVITE transactions alive.
    pub live_invite: i64,
    /// Non-INVITE transactions alive.
    pub live_non_invite: i64,
    /// INVITE transactions created.
    pub total_invite: u64,
    /// Non-INVITE transactions created.
    pub total_non_invite: u64,
    /// Request retransmissions absorbed by a server transaction (the last response resent).
    pub retransmissions_absorbed: u64,
    /// Messages retransmitted by our transactions (requests on branches, responses upstream).
    pub retransmissions_sent: u64,
    /// Branches that ended by a timeout (`fr_timer`, `fr_inv_timer`).
    pub branch_timeouts: u64,
    /// Branches failed by a transport error (connection refused, send failed).
    pub transport_errors: u64,
    /// Server transactions that timed out (Timer H: the ACK of a final answer never came).
    pub server_timeouts: u64,
    /// 408s generated and sent upstream because no branch answered in time.
    pub local_408: u64,
    /// Responses relayed upstream, by class (1xx..6xx).
    pub relayed: [u64; 6],
    /// Responses generated here (`t_reply`, 100 Trying, 408, 487...), by class.
    pub local_replies: [u64; 6],
    /// CANCELs that matched a transaction.
    pub cancels: u64,
    /// Transactions refused because `max_transactions` were alive.
    pub rejected_full: u64,
    /// Replies with one of our branches whose transaction is gone (dropped, 2xx forwarded).
    pub stray_replies: u64,
    /// Replies whose branch named a live transaction with the wrong salt (dropped).
    pub forged_replies: u64,
    /// Failure routes run.
    pub failure_routes: u64,
    /// Non-INVITE transactions that ended with no answer upstream (RFC 4320: no 408).
    pub silent_non_invite: u64,
    /// Transactions whose timer fired (each visit of the timer thread to a transaction).
    pub timer_fires: u64,
}

impl TmCounters {
    pub(crate) fn snapshot(&self) -> TmStats {
        TmStats {
            live_invite: self.live[0].get(),
            live_non_invite: self.live[1].get(),
            total_invite: self.total[0].get(),
            total_non_invite: self.total[1].get(),
            retransmissions_absorbed: self.retrans_absorbed.get(),
            retransmissions_sent: self.retrans_sent.get(),
            branch_timeouts: self.branch_timeouts.get(),
            transport_errors: self.transport_errors.get(),
            server_timeouts: self.server_timeouts.get(),
            local_408: self.local_408.get(),
            relayed: std::array::from_fn(|i| self.relayed[i].get()),
            local_replies: std::array::from_fn(|i| self.local_replies[i].get()),
            cancels: self.cancels.get(),
            rejected_full: self.rejected_full.get(),
            stray_replies: self.stray_replies.get(),
            forged_replies: self.forged_replies.get(),
            failure_routes: self.failure_routes.get(),
            silent_non_invite: self.silent_non_invite.get(),
            timer_fires: self.timer_fires.get(),
        }
    }

    /// Registers the `tm` metrics collector and the `tm.stats` RPC.
    pub(crate) fn register(self: &Arc<Self>, metrics: &Registry, rpc: &RpcRegistry) {
        let c = Arc::clone(self);
        metrics.register("tm", move |out: &mut dyn Sink| {
            let s = c.snapshot();
            let live = [s.live_invite, s.live_non_invite];
            let total = [s.total_invite, s.total_non_invite];
            out.family(Family {
                name: "geosip_tm_transactions",
                help: "Transactions alive, by type.",
                kind: Kind::Gauge,
            });
            for (i, t) in TYPES.iter().enumerate() {
                out.sample(&[("type", t)], live[i] as f64);
            }
            out.family(Family {
                name: "geosip_tm_transactions_total",
                help: "Transactions created, by type.",
                kind: Kind::Counter,
            });
            for (i, t) in TYPES.iter().enumerate() {
                out.sample(&[("type", t)], total[i] as f64);
            }
            out.family(Family {
                name: "geosip_tm_retransmissions_total",
                help: "Retransmissions: requests absorbed by a transaction, messages resent by one.",
                kind: Kind::Counter,
            });
            out.sample(&[("dir", "absorbed")], s.retransmissions_absorbed as f64);
            out.sample(&[("dir", "sent")], s.retransmissions_sent as f64);
            for (name, help, v) in [
                ("geosip_tm_branch_timeouts_total", "Branches ended by fr_timer / fr_inv_timer.", s.branch_timeouts),
                ("geosip_tm_transport_errors_total", "Branches failed by a transport error (503).", s.transport_errors),
                ("geosip_tm_server_timeouts_total", "Server transactions timed out (Timer H: no ACK for a final answer).", s.server_timeouts),
                ("geosip_tm_local_408_total", "408 generated upstream for INVITEs nobody answered.", s.local_408),
                ("geosip_tm_cancels_total", "CANCELs that matched a transaction.", s.cancels),
                ("geosip_tm_rejected_total", "Transactions refused: max_transactions reached.", s.rejected_full),
                ("geosip_tm_stray_replies_total", "Replies for a transaction that no longer exists.", s.stray_replies),
                ("geosip_tm_forged_replies_total", "Replies with a wrong branch salt (dropped).", s.forged_replies),
                ("geosip_tm_failure_routes_total", "Failure routes run.", s.failure_routes),
                ("geosip_tm_silent_non_invite_total", "Non-INVITE transactions ended without an answer (RFC 4320).", s.silent_non_invite),
                ("geosip_tm_timer_fires_total", "Visits of the timer thread to a transaction whose timer was due.", s.timer_fires),
            ] {
                out.family(Family { name, help, kind: Kind::Counter });
                out.sample(&[], v as f64);
            }
            out.family(Family {
                name: "geosip_tm_replies_relayed_total",
                help: "Replies relayed upstream, by class.",
                kind: Kind::Counter,
            });
            for (i, cl) in CLASSES.iter().enumerate() {
                out.sample(&[("class", cl)], s.relayed[i] as f64);
            }
            out.family(Family {
                name: "geosip_tm_replies_local_total",
                help: "Replies generated by tm, by class.",
                kind: Kind::Counter,
            });
            for (i, cl) in CLASSES.iter().enumerate() {
                out.sample(&[("class", cl)], s.local_replies[i] as f64);
            }
        });
        let c = Arc::clone(self);
        rpc.register(
            "tm.stats",
            "",
            "Transactions alive and created by type, retransmissions, timeouts, local 408s, \
             replies relayed and generated by class.",
            move |_| {
                let s = c.snapshot();
                let by_class = |a: [u64; 6]| {
                    serde_json::Value::Object(
                        CLASSES
                            .iter()
                            .zip(a)
                            .map(|(k, v)| ((*k).to_string(), json!(v)))
                            .collect(),
                    )
                };
                Ok(json!({
                    "live": {
                        "invite": s.live_invite,
                        "non_invite": s.live_non_invite,
                        "total": s.live_invite + s.live_non_invite,
                    },
                    "created": {
                        "invite": s.total_invite,
                        "non_invite": s.total_non_invite,
                        "total": s.total_invite + s.total_non_invite,
                    },
                    "retransmissions": {
                        "absorbed": s.retransmissions_absorbed,
                        "sent": s.retransmissions_sent,
                    },
                    "branch_timeouts": s.branch_timeouts,
                    "transport_errors": s.transport_errors,
                    "server_timeouts": s.server_timeouts,
                    "local_408": s.local_408,
                    "relayed": by_class(s.relayed),
                    "local_replies": by_class(s.local_replies),
                    "cancels": s.cancels,
                    "rejected_full": s.rejected_full,
                    "stray_replies": s.stray_replies,
                    "forged_replies": s.forged_replies,
                    "failure_routes": s.failure_routes,
                    "silent_non_invite": s.silent_non_invite,
                    "timer_fires": s.timer_fires,
                }))
            },
        );
    }
}
