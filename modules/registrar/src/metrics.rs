//! Counters of the registrar (`registrar` group) and the location service's statistics
//! (`usrloc` group), exported through the core metrics registry.

use std::sync::Weak;

use geosip_core::metrics::{Counter, Family, Kind, Registry, Sink};
use geosip_usrloc::Location;
use serde_json::{Value, json};

/// Why a REGISTER was refused (a metrics label, and the status it is answered with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    /// 400: a malformed To, Contact, Expires, q, reg-id, Path, Call-ID or CSeq.
    BadRequest = 0,
    /// 400: `Contact: *` with another contact or a non-zero Expires.
    BadWildcard,
    /// 400: a value longer than the location store accepts, or too many contacts in one request.
    TooLong,
    /// 403: the AOR's domain is not served here.
    ForeignDomain,
    /// 403: the To user is not the authenticated user.
    AuthMismatch,
    /// 420: `Require` names an extension we do not support.
    BadExtension,
    /// 423: an expiry below `min_expires` (reject mode).
    IntervalTooBrief,
    /// 500: a CSeq lower than the stored one on the same Call-ID (RFC 3261 §10.3 step 7).
    OutOfOrder,
    /// 503: `max_contacts` (or usrloc's per-AOR cap) would be exceeded.
    TooManyContacts,
    /// 503: the location store is down or timed out.
    StoreUnavailable,
    /// 500: the location store refused the write, or another internal error.
    StoreError,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::BadRequest,
        RejectReason::BadWildcard,
        RejectReason::TooLong,
        RejectReason::ForeignDomain,
        RejectReason::AuthMismatch,
        RejectReason::BadExtension,
        RejectReason::IntervalTooBrief,
        RejectReason::OutOfOrder,
        RejectReason::TooManyContacts,
        RejectReason::StoreUnavailable,
        RejectReason::StoreError,
    ];

    /// The SIP status this reason is answered with.
    pub fn status(self) -> u16 {
        match self {
            RejectReason::BadRequest | RejectReason::BadWildcard | RejectReason::TooLong => 400,
            RejectReason::ForeignDomain | RejectReason::AuthMismatch => 403,
            RejectReason::BadExtension => 420,
            RejectReason::IntervalTooBrief => 423,
            RejectReason::OutOfOrder | RejectReason::StoreError => 500,
            RejectReason::TooManyContacts | RejectReason::StoreUnavailable => 503,
        }
    }

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadRequest => "bad_request",
            RejectReason::BadWildcard => "bad_wildcard",
            RejectReason::TooLong => "too_long",
            RejectReason::ForeignDomain => "foreign_domain",
            RejectReason::AuthMismatch => "auth_mismatch",
            RejectReason::BadExtension => "bad_extension",
            RejectReason::IntervalTooBrief => "interval_too_brief",
            RejectReason::OutOfOrder => "cseq_out_of_order",
            RejectReason::TooManyContacts => "too_many_contacts",
            RejectReason::StoreUnavailable => "store_unavailable",
            RejectReason::StoreError => "store_error",
        }
    }
}

/// The registrar's counters (plain atomics, bumped on the hot path).
#[derive(Default)]
pub struct Metrics {
    /// REGISTERs answered 200 (updates and queries).
    pub accepted: Counter,
    /// Refused REGISTERs by reason.
    pub rejected: [Counter; 11],
    /// Bindings inserted by REGISTER.
    pub inserted: Counter,
    /// Bindings refreshed or changed by REGISTER.
    pub updated: Counter,
    /// Bindings removed by REGISTER (Expires 0, `*`, replaced, dropped by max_contacts).
    pub deleted: Counter,
    /// `lookup` calls that found contacts.
    pub lookups_found: Counter,
    /// `lookup` calls that found none.
    pub lookups_not_found: Counter,
    /// `lookup` calls that failed (store error, bad Request-URI).
    pub lookups_error: Counter,
}

impl Metrics {
    /// Counts a refused REGISTER.
    pub fn reject(&self, r: RejectReason) {
        if let Some(c) = self.rejected.get(r as usize) {
            c.inc();
        }
    }

    /// The counters as JSON (for `ul.stats`).
    pub fn json(&self) -> Value {
        let mut rejected = serde_json::Map::new();
        for r in RejectReason::ALL {
            rejected.insert(r.as_str().into(), json!(self.rejected[r as usize].get()));
        }
        json!({
            "accepted": self.accepted.get(),
            "rejected": rejected,
            "contacts": {"inserted": self.inserted.get(), "updated": self.updated.get(), "deleted": self.deleted.get()},
            "lookups": {"found": self.lookups_found.get(), "not_found": self.lookups_not_found.get(), "error": self.lookups_error.get()},
        })
    }
}

fn fam(s: &mut dyn Sink, name: &'static str, help: &'static str, kind: Kind) {
    s.family(Family { name, help, kind });
}

/// Registers the `registrar` and `usrloc` collectors. Both hold weak references: they report
/// nothing once the registrar or the location service is gone.
pub(crate) fn register(
    reg: &Registry,
    m: Weak<Metrics>,
    cfg: crate::RegistrarConfig,
    loc: Weak<Location>,
) {
    reg.register("registrar", move |s| {
        let Some(m) = m.upgrade() else { return };
        fam(
            s,
            "geosip_registrar_accepted_total",
            "REGISTER requests answered 200 OK.",
            Kind::Counter,
        );
        s.sample(&[], m.accepted.get() as f64);
        fam(
            s,
            "geosip_registrar_rejected_total",
            "REGISTER requests refused, by status and reason.",
            Kind::Counter,
        );
        for r in RejectReason::ALL {
            let status = r.status().to_string();
            s.sample(
                &[("status", &status), ("reason", r.as_str())],
                m.rejected[r as usize].get() as f64,
            );
        }
        fam(
            s,
            "geosip_registrar_contacts_total",
            "Bindings changed by REGISTER requests.",
            Kind::Counter,
        );
        s.sample(&[("op", "inserted")], m.inserted.get() as f64);
        s.sample(&[("op", "updated")], m.updated.get() as f64);
        s.sample(&[("op", "deleted")], m.deleted.get() as f64);
        fam(
            s,
            "geosip_registrar_lookups_total",
            "lookup() calls by result.",
            Kind::Counter,
        );
        s.sample(&[("result", "found")], m.lookups_found.get() as f64);
        s.sample(&[("result", "not_found")], m.lookups_not_found.get() as f64);
        s.sample(&[("result", "error")], m.lookups_error.get() as f64);
        fam(
            s,
            "geosip_registrar_max_expires",
            "registrar.max_expires (0 = none).",
            Kind::Gauge,
        );
        s.sample(&[], f64::from(cfg.max_expires));
        fam(
            s,
            "geosip_registrar_max_contacts",
            "registrar.max_contacts (0 = unlimited).",
            Kind::Gauge,
        );
        s.sample(&[], f64::from(cfg.max_contacts));
        fam(
            s,
            "geosip_registrar_default_expires",
            "registrar.default_expires.",
            Kind::Gauge,
        );
        s.sample(&[], f64::from(cfg.default_expires));
    });
    reg.register("usrloc", move |s| {
        let Some(loc) = loc.upgrade() else { return };
        let st = loc.stats();
        fam(
            s,
            "geosip_usrloc_aors",
            "AORs in the location table (0 in db-only mode).",
            Kind::Gauge,
        );
        s.sample(&[], st.aors as f64);
        fam(
            s,
            "geosip_usrloc_contacts",
            "Bindings in the location table (0 in db-only mode).",
            Kind::Gauge,
        );
        s.sample(&[], st.contacts as f64);
        fam(
            s,
            "geosip_usrloc_user_agents",
            "Distinct User-Agent strings held.",
            Kind::Gauge,
        );
        s.sample(&[], st.user_agents as f64);
        fam(
            s,
            "geosip_usrloc_changes_total",
            "Binding changes by kind.",
            Kind::Counter,
        );
        s.sample(&[("kind", "insert")], st.inserts as f64);
        s.sample(&[("kind", "update")], st.updates as f64);
        s.sample(&[("kind", "delete")], st.deletes as f64);
        s.sample(&[("kind", "expire")], st.expired as f64);
        fam(
            s,
            "geosip_usrloc_store_failures_total",
            "Updates refused because the store failed.",
            Kind::Counter,
        );
        s.sample(&[], st.store_failures as f64);
        fam(
            s,
            "geosip_usrloc_events_total",
            "Change events delivered or dropped.",
            Kind::Counter,
        );
        s.sample(&[("result", "sent")], st.events_sent as f64);
        s.sample(&[("result", "dropped")], st.events_dropped as f64);
        fam(
            s,
            "geosip_usrloc_flush_pending",
            "Write-back: AORs waiting for a flush.",
            Kind::Gauge,
        );
        s.sample(&[], st.flush_pending as f64);
        fam(
            s,
            "geosip_usrloc_flushed_aors_total",
            "Write-back: AORs written by flushes.",
            Kind::Counter,
        );
        s.sample(&[], st.flushed_aors as f64);
        fam(
            s,
            "geosip_usrloc_flush_failures_total",
            "Write-back: failed flushes (retried).",
            Kind::Counter,
        );
        s.sample(&[], st.flush_failures as f64);
        fam(
            s,
            "geosip_usrloc_resyncs_total",
            "Write-back: full rewrites after a queue overflow.",
            Kind::Counter,
        );
        s.sample(&[], st.resyncs as f64);
        if let Some(store) = &st.store {
            let b = [("backend", store.backend)];
            fam(
                s,
                "geosip_usrloc_store_calls_total",
                "Location store calls.",
                Kind::Counter,
            );
            s.sample(&b, store.calls as f64);
            fam(
                s,
                "geosip_usrloc_store_errors_total",
                "Location store calls that failed.",
                Kind::Counter,
            );
            s.sample(&b, store.errors as f64);
            fam(
                s,
                "geosip_usrloc_store_timeouts_total",
                "Location store calls that timed out.",
                Kind::Counter,
            );
            s.sample(&b, store.timeouts as f64);
            fam(
                s,
                "geosip_usrloc_store_latency_avg_us",
                "Mean location store call latency, µs.",
                Kind::Gauge,
            );
            s.sample(&b, store.avg_latency_us as f64);
            fam(
                s,
                "geosip_usrloc_store_latency_max_us",
                "Largest location store call latency, µs.",
                Kind::Gauge,
            );
            s.sample(&b, store.max_latency_us as f64);
        }
    });
}
