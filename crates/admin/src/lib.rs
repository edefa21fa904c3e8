//! Admin interface: JSON-RPC 2.0 over HTTP, Prometheus metrics, status page.
#![forbid(unsafe_code)]
