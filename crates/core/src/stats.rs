//! Core message counters: requests by method, replies by status class, parse errors by reason.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use sip_msg::Method;

use crate::metrics::{Counter, Family, Kind, Registry, Sink};

/// Methods with their own counter; everything else is `other`.
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "PUBLISH",
    "other",
];

/// Counter index of a method.
pub fn method_index(m: Option<Method<'_>>) -> usize {
    match m {
        Some(Method::Invite) => 0,
        Some(Method::Ack) => 1,
        Some(Method::Bye) => 2,
        Some(Method::Cancel) => 3,
        Some(Method::Register) => 4,
        Some(Method::Options) => 5,
        Some(Method::Info) => 6,
        Some(Method::Update) => 7,
        Some(Method::Prack) => 8,
        Some(Method::Subscribe) => 9,
        Some(Method::Notify) => 10,
        Some(Method::Message) => 11,
        Some(Method::Refer) => 12,
        Some(Method::Publish) => 13,
        _ => 14,
    }
}

/// Status class index: 1xx → 0 ... 6xx → 5.
pub fn class_index(status: u16) -> usize {
    (status / 100).clamp(1, 6) as usize - 1
}

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Message counters of the core.
#[derive(Default)]
pub struct CoreStats {
    /// Requests received, by method.
    pub rx_requests: [Counter; 15],
    /// Responses received, by class.
    pub rx_replies: [Counter; 6],
    /// Requests sent (forwarded or generated), by method.
    pub tx_requests: [Counter; 15],
    /// Responses sent (forwarded or generated), by class.
    pub tx_replies: [Counter; 6],
    /// Responses dropped (not for us, no way to route them).
    pub dropped_replies: Counter,
    /// Requests dropped without an answer (unparseable, not even framing).
    pub dropped_requests: Counter,
    /// Messages that failed parsing or validation, by reason.
    pub parse_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed sends.
    pub send_errors: Counter,
    /// New requests dropped because they waited too long in the socket queue.
    pub stale_drops: Counter,
}

impl CoreStats {
    /// Counts a parse/validation error.
    pub fn parse_error(&self, reason: &'static str) {
        *self.parse_errors.lock().entry(reason).or_insert(0) += 1;
    }

    /// Registers the `core` collector.
    pub fn register(self: &std::sync::Arc<Self>, reg: &Registry, build: &'static str) {
        let s = std::sync::Arc::clone(self);
        reg.register("core", move |out: &mut dyn Sink| {
            out.family(Family { name: "geosip_build_info", help: "Build information.", kind: Kind::Gauge });
            out.sample(&[("version", build)], 1.0);
            out.family(Family {
                name: "geosip_sip_requests_received_total",
                help: "SIP requests received, by method.",
                kind: Kind::Counter,
            });
            for (i, m) in METHODS.iter().enumerate() {
                out.sample(&[("method", m)], s.rx_requests[i].get() as f64);
            }
            out.family(Family {
                name: "geosip_sip_replies_received_total",
                help: "SIP responses received, by status class.",
                kind: Kind::Counter,
            });
            for (i, c) in CLASSES.iter().enumerate() {
                out.sample(&[("class", c)], s.rx_replies[i].get() as f64);
            }
            out.family(Family {
                name: "geosip_sip_requests_sent_total",
                help: "SIP requests sent (forwarded or generated), by method.",
                kind: Kind::Counter,
            });
            for (i, m) in METHODS.iter().enumerate() {
                out.sample(&[("method", m)], s.tx_requests[i].get() as f64);
            }
            out.family(Family {
                name: "geosip_sip_replies_sent_total",
                help: "SIP responses sent (forwarded or generated), by status class.",
                kind: Kind::Counter,
            });
            for (i, c) in CLASSES.iter().enumerate() {
                out.sample(&[("class", c)], s.tx_replies[i].get() as f64);
            }
            out.family(Family {
                name: "geosip_sip_parse_errors_total",
                help: "Messages that failed parsing or validation, by reason.",
                kind: Kind::Counter,
            });
            for (k, v) in s.parse_errors.lock().iter() {
                out.sample(&[("reason", k)], *v as f64);
            }
            out.family(Family {
                name: "geosip_sip_dropped_replies_total",
                help: "Responses dropped (not ours or unroutable).",
                kind: Kind::Counter,
            });
            out.sample(&[], s.dropped_replies.get() as f64);
            out.family(Family {
                name: "geosip_sip_dropped_requests_total",
                help: "Requests dropped without an answer.",
                kind: Kind::Counter,
            });
            out.sample(&[], s.dropped_requests.get() as f64);
            out.family(Family { name: "geosip_send_errors_total", help: "Failed sends.", kind: Kind::Counter });
            out.sample(&[], s.send_errors.get() as f64);
            out.family(Family {
                name: "geosip_sip_stale_drops_total",
                help: "New requests dropped after waiting past overload.stale_ms in the socket queue.",
                kind: Kind::Counter,
            });
            out.sample(&[], s.stale_drops.get() as f64);
        });
    }
}
