//! `auth` metrics: results by reason, challenges sent, subscriber cache and table.

use std::sync::{Arc, Weak};

use geosip_core::metrics::{Counter, Family, Kind as MKind, Registry, Sink};

use crate::{Auth, AuthResult, Kind};

const RESULTS: [&str; 12] = [
    "ok",
    "not_checked",
    "no_credentials",
    "stale_nonce",
    "invalid_password",
    "user_unknown",
    "disabled",
    "replay",
    "owner_mismatch",
    "blocked",
    "malformed",
    "error",
];

/// Counters of the auth module.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Checks by result (the labels of [`AuthResult::as_str`], in declaration order).
    pub results: [Counter; 12],
    /// Challenges sent: [www, proxy] x [fresh, stale].
    pub challenges: [[Counter; 2]; 2],
}

impl Metrics {
    pub(crate) fn result(&self, r: &AuthResult) {
        if let Some(i) = RESULTS.iter().position(|l| *l == r.as_str()) {
            self.results[i].inc();
        }
    }

    pub(crate) fn challenge(&self, kind: Kind, stale: bool) {
        let k = usize::from(kind == Kind::Proxy);
        self.challenges[k][usize::from(stale)].inc();
    }

    /// Checks that ended with `label` (see [`AuthResult::as_str`]).
    pub fn count(&self, label: &str) -> u64 {
        RESULTS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.results[i].get())
    }
}

pub(crate) fn register(auth: &Arc<Auth>, registry: &Registry) {
    let w: Weak<Auth> = Arc::downgrade(auth);
    registry.register("auth", move |out: &mut dyn Sink| {
        let Some(a) = w.upgrade() else { return };
        let m = &a.metrics;
        out.family(Family {
            name: "geosip_auth_results_total",
            help: "Credential checks by result (ok, and failures by reason).",
            kind: MKind::Counter,
        });
        for (i, l) in RESULTS.iter().enumerate() {
            out.sample(&[("result", l)], m.results[i].get() as f64);
        }
        out.family(Family {
            name: "geosip_auth_challenges_total",
            help: "401/407 challenges sent, by kind and stale flag.",
            kind: MKind::Counter,
        });
        for (k, kind) in ["www", "proxy"].iter().enumerate() {
            for (s, stale) in ["false", "true"].iter().enumerate() {
                out.sample(
                    &[("kind", kind), ("stale", stale)],
                    m.challenges[k][s].get() as f64,
                );
            }
        }
        let st = a.subscribers.stats();
        out.family(Family {
            name: "geosip_auth_subscriber_lookups_total",
            help: "Subscriber lookups, answered by the cache (hit) or the table (miss).",
            kind: MKind::Counter,
        });
        out.sample(&[("cache", "hit")], st.cache_hits.get() as f64);
        out.sample(&[("cache", "miss")], st.cache_misses.get() as f64);
        out.family(Family {
            name: "geosip_auth_store_errors_total",
            help: "Subscriber table calls that failed or timed out.",
            kind: MKind::Counter,
        });
        out.sample(&[], st.store_errors.get() as f64);
        let (pos, neg) = a.subscribers.cache_len();
        out.family(Family {
            name: "geosip_auth_cache_entries",
            help: "Cached subscribers and known-unknown users.",
            kind: MKind::Gauge,
        });
        out.sample(&[("kind", "subscriber")], pos as f64);
        out.sample(&[("kind", "unknown")], neg as f64);
        out.family(Family {
            name: "geosip_auth_nonces",
            help: "Nonces remembered for replay protection.",
            kind: MKind::Gauge,
        });
        out.sample(&[], a.nc.len() as f64);
        if let Some(b) = &a.batch {
            out.family(Family {
                name: "geosip_auth_batch_parked_total",
                help: "Requests set aside while their subscriber was read in a batch.",
                kind: MKind::Counter,
            });
            out.sample(&[], b.stats.parked.get() as f64);
            out.family(Family {
                name: "geosip_auth_batch_queries_total",
                help: "Batched subscriber queries, the users they asked for, those that failed, and those a SIP worker ran itself.",
                kind: MKind::Counter,
            });
            out.sample(&[("count", "queries")], b.stats.queries.get() as f64);
            out.sample(&[("count", "users")], b.stats.users.get() as f64);
            out.sample(&[("count", "failures")], b.stats.failures.get() as f64);
            out.sample(&[("count", "on_worker")], b.stats.on_worker.get() as f64);
            out.family(Family {
                name: "geosip_auth_batch_overflows_total",
                help: "Requests that read their subscriber themselves because batch_max_parked were waiting.",
                kind: MKind::Counter,
            });
            out.sample(&[], b.stats.overflows.get() as f64);
            out.family(Family {
                name: "geosip_auth_batch_waiting",
                help: "Requests set aside now.",
                kind: MKind::Gauge,
            });
            out.sample(&[], b.parked() as f64);
        }
    });
}
