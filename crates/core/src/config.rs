//! `[core]` configuration keys and the helpers every config section uses.

use serde::Deserialize;

/// `[core]`: what the server listens on and how it presents itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreConfig {
    /// Listening sockets, `udp:IP:PORT` / `tcp:IP:PORT` (`[::1]` for IPv6). `--listen` on the
    /// command line replaces this list.
    pub listen: Vec<String>,
    /// Host (name or IP) written in our Via and Record-Route headers instead of the socket's IP,
    /// for a server behind NAT or a load balancer (Kamailio's `advertise`).
    pub advertise: Option<String>,
    /// Symmetric response routing (Kamailio's `force_rport`): send responses to the source
    /// port of the request even when its top Via has no `rport` (RFC 3581), because phones
    /// behind NAT can only be reached there.
    pub force_rport: bool,
    /// Value of the `Server` header in locally generated replies, and `User-Agent` in locally
    /// generated requests (empty = none).
    pub server_header: String,
    /// Domains this server is responsible for (registrar, `is_myself` checks). The addresses of
    /// the listening sockets are always included.
    pub domains: Vec<String>,
    /// Largest UDP message accepted; bigger ones are answered 513 (RFC 3261 §18.1.1 expects
    /// TCP above the path MTU).
    pub max_message_bytes: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            listen: vec!["udp:127.0.0.1:5060".into(), "tcp:127.0.0.1:5060".into()],
            advertise: None,
            force_rport: true,
            server_header: "geosip".into(),
            domains: Vec::new(),
            max_message_bytes: 65_535,
        }
    }
}

/// `[log]`: logging.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `geosip_tm=debug,info`...
    pub level: String,
    /// At most this many "bad message" log lines per source address per minute.
    pub bad_message_per_minute: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
            bad_message_per_minute: 5,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
