//! Counters and gauges, rendered as Prometheus text (`GET /metrics`) and as the JSON of the
//! `stats.get` RPC.
//!
//! Hot-path counters are plain atomics owned by the module that bumps them (no map lookup, no
//! lock per increment). A module registers a *collector* once: a closure that reads its
//! atomics and reports samples when the endpoint is scraped.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::RwLock;

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic.
    Counter,
    /// Up and down.
    Gauge,
}

/// One metric family as reported by a collector.
pub struct Family<'a> {
    /// Metric name, `geosip_` prefixed by convention (e.g. `geosip_sip_messages_total`).
    pub name: &'a str,
    /// Help text.
    pub help: &'a str,
    /// Counter or gauge.
    pub kind: Kind,
}

/// Receives the samples of a collector.
pub trait Sink {
    /// Starts a family; samples that follow belong to it.
    fn family(&mut self, f: Family<'_>);
    /// One sample with its labels.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64);
}

type Collector = Box<dyn Fn(&mut dyn Sink) + Send + Sync>;

/// The set of collectors, shared by all modules.
#[derive(Default, Clone)]
pub struct Registry {
    collectors: Arc<RwLock<Vec<(String, Collector)>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a collector under a group name (used by `stats.get GROUP`; Kamailio groups
    /// statistics by module: `core`, `tm`, `usrloc`...).
    pub fn register(&self, group: &str, f: impl Fn(&mut dyn Sink) + Send + Sync + 'static) {
        self.collectors
            .write()
            .push((group.to_string(), Box::new(f)));
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        struct P {
            out: String,
            name: String,
        }
        impl Sink for P {
            fn family(&mut self, f: Family<'_>) {
                let kind = match f.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(self.out, "# HELP {} {}", f.name, f.help);
                let _ = writeln!(self.out, "# TYPE {} {}", f.name, kind);
                self.name.clear();
                self.name.push_str(f.name);
            }
            fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
                self.out.push_str(&self.name);
                if !labels.is_empty() {
                    self.out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                        }
                        let _ = write!(self.out, "{k}=\"");
                        for c in v.chars() {
                            match c {
                                '\\' => self.out.push_str("\\\\"),
                                '"' => self.out.push_str("\\\""),
                                '\n' => self.out.push_str("\\n"),
                                c => self.out.push(c),
                            }
                        }
                        self.out.push('"');
                    }
                    self.out.push('}');
                }
                let _ = writeln!(self.out, " {value}");
            }
        }
        let mut p = P {
            out: String::with_capacity(8192),
            name: String::new(),
        };
        for (_, c) in self.collectors.read().iter() {
            c(&mut p);
        }
        p.out
    }

    /// Flat `{ "group.name{labels}": value }` pairs for `stats.get`, optionally only one
    /// group (`"tm"`) or everything (`"all"` / empty).
    pub fn flat(&self, group: &str) -> Vec<(String, f64)> {
        struct F {
            out: Vec<(String, f64)>,
            prefix: String,
            name: String,
        }
        impl Sink for F {
            fn family(&mut self, f: Family<'_>) {
                self.name = format!("{}.{}", self.prefix, f.name.trim_start_matches("geosip_"));
            }
            fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
                let mut k = self.name.clone();
                if !labels.is_empty() {
                    k.push('{');
                    for (i, (a, b)) in labels.iter().enumerate() {
                        if i > 0 {
                            k.push(',');
                        }
                        let _ = write!(k, "{a}={b}");
                    }
                    k.push('}');
                }
                self.out.push((k, value));
            }
        }
        let mut f = F {
            out: Vec::new(),
            prefix: String::new(),
            name: String::new(),
        };
        for (g, c) in self.collectors.read().iter() {
            if group.is_empty() || group == "all" || group == g {
                f.prefix = g.clone();
                c(&mut f);
            }
        }
        f.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_counters_render_in_prometheus_text_with_escaped_labels() {
        let r = Registry::new();
        let c = Arc::new(Counter::new());
        c.add(3);
        let c2 = Arc::clone(&c);
        r.register("core", move |s| {
            s.family(Family {
                name: "geosip_x_total",
                help: "x",
                kind: Kind::Counter,
            });
            s.sample(&[("method", "IN\"VITE")], c2.get() as f64);
        });
        let text = r.render_prometheus();
        assert!(text.contains("# TYPE geosip_x_total counter"));
        assert!(text.contains("geosip_x_total{method=\"IN\\\"VITE\"} 3"));
        let flat = r.flat("core");
        assert_eq!(
            flat,
            vec![("core.x_total{method=IN\"VITE}".to_string(), 3.0)]
        );
        assert!(r.flat("tm").is_empty());
    }
}
