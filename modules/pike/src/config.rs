//! `[pike]`, `[ratelimit]` and `[overload]` configuration.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cidr::Cidr;

/// What pike does with a request from a blocked source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Action {
    /// Drop silently (the default: answering a flood of spoofed UDP would make the server a
    /// reflector).
    #[default]
    #[serde(rename = "drop")]
    Drop,
    /// Answer `503 Service Unavailable` with a Retry-After of the remaining block time.
    #[serde(rename = "503")]
    Reject503,
}

/// How pike keys its counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum KeyMode {
    /// One counter per source IP (Kamailio's pike).
    #[serde(rename = "ip")]
    Ip,
    /// One counter per (source IP, user) with `reqs_density_per_unit`, plus one per source IP
    /// with the higher `reqs_density_per_ip`: the phones of an office behind one NAT address
    /// each get their own budget, and a source rotating users is still caught by the IP counter.
    #[default]
    #[serde(rename = "ip+user")]
    IpUser,
}

/// Where flood counting happens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Stage {
    /// [`Protect::check`](crate::Protect::check), called by the server for every request
    /// before the routing script; `KSR.pike.pike_check_req()` then only asks whether the source
    /// is blocked (no double counting).
    #[default]
    #[serde(rename = "pipeline")]
    Pipeline,
    /// Only when the script calls `KSR.pike.pike_check_req()` (Kamailio's way).
    #[serde(rename = "script")]
    Script,
}

/// `[pike]`: per-source flood detection and failed-authentication blocking.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PikeConfig {
    /// Flood detection on. Default true.
    pub enabled: bool,
    /// Sampling interval, seconds (Kamailio `sampling_time_unit`). Default 2.
    pub sampling_time_unit: u64,
    /// Requests per sampling interval above which a key is blocked (Kamailio
    /// `reqs_density_per_unit`; counted over a sliding window, so the limit is exact rather
    /// than Kamailio's "between x and 3x"). Default 30.
    pub reqs_density_per_unit: u32,
    /// `key = "ip+user"`: requests per sampling interval for the whole IP. Default 300.
    pub reqs_density_per_ip: u32,
    /// How long a flooding key stays blocked after its last excessive interval, seconds.
    /// Default 120.
    pub block_time: u64,
    /// Idle entries are forgotten after this many seconds (Kamailio `remove_latency`).
    /// Default 120.
    pub remove_latency: u64,
    /// Trusted peers (`IP` or `IP/prefix`, IPv4 or IPv6): never counted, blocked, rate-limited
    /// or (with `overload.exempt_whitelist`) shed. Default empty: loopback is deliberately not
    /// listed, so a flood from 127.0.0.1 is blocked like any other.
    pub whitelist: Vec<String>,
    /// `ip` or `ip+user`. Default `ip+user`.
    pub key: KeyMode,
    /// `drop` or `503`. Default `drop`.
    pub action: Action,
    /// `pipeline` or `script`. Default `pipeline`.
    pub stage: Stage,
    /// Most flood and failed-auth entries kept (each table); beyond it new keys are not
    /// tracked until idle ones are swept. Default 100000.
    pub max_entries: usize,
    /// Failed authentications of one user (`user@realm`) within `auth_fail_window` that block
    /// the user; 0 = off. Default 10.
    pub auth_fail_limit_user: u32,
    /// Failed authentications from one source IP within `auth_fail_window` that block the IP;
    /// 0 = off. Default 30.
    pub auth_fail_limit_ip: u32,
    /// Window of the failed-authentication counters, seconds. Default 60.
    pub auth_fail_window: u64,
    /// How long a user or IP stays blocked after too many failures, seconds. Default 300.
    pub auth_fail_block_time: u64,
}

impl Default for PikeConfig {
    fn default() -> Self {
        PikeConfig {
            enabled: true,
            sampling_time_unit: 2,
            reqs_density_per_unit: 30,
            reqs_density_per_ip: 300,
            block_time: 120,
            remove_latency: 120,
            whitelist: Vec::new(),
            key: KeyMode::IpUser,
            action: Action::Drop,
            stage: Stage::Pipeline,
            max_entries: 100_000,
            auth_fail_limit_user: 10,
            auth_fail_limit_ip: 30,
            auth_fail_window: 60,
            auth_fail_block_time: 300,
        }
    }
}

impl PikeConfig {
    /// Parses the whitelist and checks the numbers; says what is wrong.
    pub fn validate(&self) -> Result<Vec<Cidr>, String> {
        if self.sampling_time_unit == 0 {
            return Err("pike.sampling_time_unit must be at least 1 second".into());
        }
        if self.enabled && self.reqs_density_per_unit == 0 {
            return Err("pike.reqs_density_per_unit must be at least 1".into());
        }
        if self.key == KeyMode::IpUser && self.reqs_density_per_ip < self.reqs_density_per_unit {
            return Err(format!(
                "pike.reqs_density_per_ip ({}) must be at least reqs_density_per_unit ({})",
                self.reqs_density_per_ip, self.reqs_density_per_unit
            ));
        }
        if self.auth_fail_window == 0 {
            return Err("pike.auth_fail_window must be at least 1 second".into());
        }
        self.whitelist
            .iter()
            .map(|s| {
                s.parse::<Cidr>()
                    .map_err(|e| format!("pike.whitelist: {e}"))
            })
            .collect()
    }
}

/// `[ratelimit]`: per-method token buckets (GCRA) over all sources together (Kamailio
/// ratelimit's TAILDROP pipes). In-dialog requests, ACK and CANCEL are never limited.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Rate limiting on. Default false.
    pub enabled: bool,
    /// Requests per second per method, e.g. `{ REGISTER = 2000, INVITE = 500 }`. Method names
    /// are case-sensitive (RFC 3261 §7.1). Default empty.
    pub methods: BTreeMap<String, f64>,
    /// Rate for methods not listed; 0 = unlimited. Default 0.
    pub default_rate: f64,
    /// Burst allowed on top of the rate, in seconds of rate (burst = rate x burst_seconds, at
    /// least 1 request). Default 1.
    pub burst_seconds: f64,
    /// Retry-After of the 503 sent when over the limit, seconds (randomised by +-50%).
    /// Default 2.
    pub retry_after: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            methods: BTreeMap::new(),
            default_rate: 0.0,
            burst_seconds: 1.0,
            retry_after: 2,
        }
    }
}

impl RateLimitConfig {
    /// Checks the numbers; says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (m, r) in &self.methods {
            if !r.is_finite() || *r <= 0.0 {
                return Err(format!(
                    "ratelimit.methods.{m} must be a positive rate, got {r}"
                ));
            }
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("ratelimit.methods: {m:?} is not a method name"));
            }
        }
        if !self.default_rate.is_finite() || self.default_rate < 0.0 {
            return Err("ratelimit.default_rate must be 0 (unlimited) or positive".into());
        }
        if !self.burst_seconds.is_finite() || self.burst_seconds <= 0.0 {
            return Err("ratelimit.burst_seconds must be positive".into());
        }
        Ok(())
    }
}

/// Which initial requests overload control keeps longest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// REGISTER is shed last (after other methods, then new INVITEs): keeps phones registered
    /// through a registration storm.
    #[default]
    Register,
    /// New INVITEs are shed last (after other methods, then REGISTER): keeps calls flowing.
    Invite,
}

/// `[overload]`: load shedding with 503 + randomised Retry-After.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Overload control on. Default true.
    pub enabled: bool,
    /// Live transactions (from tm) above which the server is overloaded; 0 = not used.
    /// Default 100000.
    pub max_transactions: u64,
    /// Average fullness of the receive batches (0..1, smoothed per worker) above which a
    /// worker is overloaded: full `recvmmsg` batches mean packets are queueing in the kernel;
    /// 0 = not used. Default 0.8.
    pub max_backlog: f64,
    /// Processing lag (time between receipt and processing, smoothed per worker) above which
    /// the server is overloaded, milliseconds; 0 = not used. Default 200.
    pub max_lag_ms: u64,
    /// A new request (not in-dialog) that waited longer than this in the socket queue is
    /// dropped unanswered, milliseconds; 0 = never. The client has retransmitted it already
    /// (RFC 3261 T1 = 500 ms), so answering the old copy only doubles the work in a storm;
    /// dropping it keeps the queue short (CoDel-like) so fresh requests get answers in time.
    /// Default 400.
    pub stale_ms: u64,
    /// Highest probability of shedding a request of one class (0..1): a share of every class
    /// is always served, so a storm cannot starve the server into serving nobody. Default 0.9.
    pub max_shed: f64,
    /// Retry-After base, seconds. Default 10.
    pub retry_after: u32,
    /// Retry-After is uniform in `retry_after +- retry_after_spread` (at least 1), so clients
    /// do not come back in lockstep. Default 5.
    pub retry_after_spread: u32,
    /// `register` or `invite`. Default `register`.
    pub priority: Priority,
    /// Period of the shedding controller, milliseconds. Default 100.
    pub interval_ms: u64,
    /// Growth of the shed fraction per period when just over a threshold (scaled up with the
    /// excess); it decreases by the same step below the low watermark. Default 0.05.
    pub step: f64,
    /// Shedding decreases once every signal is below this fraction of its threshold.
    /// Default 0.9.
    pub low_watermark: f64,
    /// Whitelisted peers (`pike.whitelist`) are never shed. Default true.
    pub exempt_whitelist: bool,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            enabled: true,
            max_transactions: 100_000,
            max_backlog: 0.8,
            max_lag_ms: 200,
            stale_ms: 400,
            max_shed: 0.9,
            retry_after: 10,
            retry_after_spread: 5,
            priority: Priority::Register,
            interval_ms: 100,
            step: 0.05,
            low_watermark: 0.9,
            exempt_whitelist: true,
        }
    }
}

impl OverloadConfig {
    /// Checks the numbers; says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.max_backlog) {
            return Err(format!(
                "overload.max_backlog must be in [0, 1), got {}",
                self.max_backlog
            ));
        }
        if !(self.step > 0.0 && self.step <= 1.0) {
            return Err(format!(
                "overload.step must be in (0, 1], got {}",
                self.step
            ));
        }
        if !(self.low_watermark > 0.0 && self.low_watermark <= 1.0) {
            return Err(format!(
                "overload.low_watermark must be in (0, 1], got {}",
                self.low_watermark
            ));
        }
        if self.interval_ms == 0 {
            return Err("overload.interval_ms must be at least 1".into());
        }
        if self.retry_after == 0 {
            return Err("overload.retry_after must be at least 1 second".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sections_give_the_documented_defaults_and_unknown_keys_are_refused() {
        let p: PikeConfig = toml::from_str("").unwrap();
        assert_eq!(p, PikeConfig::default());
        assert!(
            p.whitelist.is_empty(),
            "loopback is not whitelisted by default"
        );
        assert_eq!(
            (p.key, p.action, p.stage),
            (KeyMode::IpUser, Action::Drop, Stage::Pipeline)
        );
        let r: RateLimitConfig = toml::from_str("").unwrap();
        assert!(!r.enabled);
        let o: OverloadConfig = toml::from_str("").unwrap();
        assert_eq!(o.priority, Priority::Register);
        assert!(toml::from_str::<PikeConfig>("reqs_density = 3").is_err());
        assert!(toml::from_str::<OverloadConfig>("priority = \"bye\"").is_err());
        assert!(toml::from_str::<PikeConfig>("action = \"reject\"").is_err());
    }

    #[test]
    fn keys_parse_with_their_documented_spellings() {
        let p: PikeConfig = toml::from_str(
            "key = \"ip\"\naction = \"503\"\nstage = \"script\"\nwhitelist = [\"10.0.0.0/8\", \"2001:db8::1\"]",
        )
        .unwrap();
        assert_eq!(
            (p.key, p.action, p.stage),
            (KeyMode::Ip, Action::Reject503, Stage::Script)
        );
        assert_eq!(p.validate().unwrap().len(), 2);
        let bad = PikeConfig {
            whitelist: vec!["10.0.0.0/33".into()],
            ..PikeConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("10.0.0.0/33"));
        let r: RateLimitConfig =
            toml::from_str("enabled = true\nmethods = { REGISTER = 100, INVITE = 20.5 }").unwrap();
        assert_eq!(r.methods.get("INVITE"), Some(&20.5));
        r.validate().unwrap();
        let o: OverloadConfig = toml::from_str("priority = \"invite\"\nmax_backlog = 1.5").unwrap();
        assert_eq!(o.priority, Priority::Invite);
        assert!(o.validate().is_err());
    }
}
