//! pike, ratelimit and overload control: per-source flood detection, per-method token buckets,
//! failed-auth blocking, load shedding.
//!
//! One [`Protect`] per process, shared by every worker. The server calls [`Protect::check`]
//! for each request before the routing script and acts on the [`Verdict`] (drop, or 503 with
//! Retry-After via [`Protect::respond`]). `geosip-auth` reports authentication outcomes with
//! [`Protect::auth_failed`] / [`Protect::auth_ok`] and asks [`Protect::auth_user_blocked`].
//! The server feeds [`Protect::overload`] with load signals.
//!
//! All decisions take `now` and do no I/O, so they are tested on virtual time.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod authfail;
pub mod cidr;
pub mod config;
mod flood;
mod overload;
mod ratelimit;
mod stats;
mod table;

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use geosip_core::Core;
use geosip_core::ctx::MsgCtx;
use sip_msg::{Method, SipMessage};

pub use cidr::Cidr;
pub use config::{Action, KeyMode, OverloadConfig, PikeConfig, Priority, RateLimitConfig, Stage};
pub use overload::{MAX_WORKERS, Overload, OverloadState};
pub use stats::Stats;

use authfail::{Fail, FailTable};
use flood::{Flood, FloodKey, FloodTable};
use ratelimit::RateLimiter;

/// How a request is treated by overload control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Within a dialog (To tag), or ACK / CANCEL: never shed, it ends or completes work.
    InDialog,
    /// Initial REGISTER.
    Register,
    /// Initial INVITE.
    Invite,
    /// Any other initial request (OPTIONS, SUBSCRIBE, MESSAGE...).
    Other,
}

impl Class {
    /// The class of a request.
    pub fn of(msg: &SipMessage) -> Class {
        match msg.method() {
            Some(Method::Ack | Method::Cancel) => Class::InDialog,
            _ if msg.to_tag().is_some() => Class::InDialog,
            Some(Method::Register) => Class::Register,
            Some(Method::Invite) => Class::Invite,
            _ => Class::Other,
        }
    }

    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::InDialog => "in_dialog",
            Class::Register => "register",
            Class::Invite => "invite",
            Class::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Class::InDialog => 0,
            Class::Register => 1,
            Class::Invite => 2,
            Class::Other => 3,
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The source (or source + user) sent more than `reqs_density_per_unit`.
    Flood,
    /// The source IP failed authentication too often.
    AuthFail,
    /// The method's rate limit is exhausted.
    RateLimit,
    /// The server is overloaded.
    Overload,
}

impl Reason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Flood => "flood",
            Reason::AuthFail => "authfail",
            Reason::RateLimit => "ratelimit",
            Reason::Overload => "overload",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Reason::Flood => 0,
            Reason::AuthFail => 1,
            Reason::RateLimit => 2,
            Reason::Overload => 3,
        }
    }

    pub(crate) const ALL: [Reason; 4] = [
        Reason::Flood,
        Reason::AuthFail,
        Reason::RateLimit,
        Reason::Overload,
    ];
}

/// The decision about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Process it.
    Accept,
    /// Drop it silently.
    Drop {
        /// Why.
        reason: Reason,
    },
    /// Answer it with `status` (503) and `Retry-After: retry_after`, then stop.
    Reject {
        /// Always 503.
        status: u16,
        /// Seconds.
        retry_after: u32,
        /// Why.
        reason: Reason,
    },
}

impl Verdict {
    /// Whether the request may be processed.
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept)
    }
}

/// A blocked key as listed by `pike.list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedEntry {
    /// `flood`, `authfail-ip` or `authfail-user`.
    pub kind: &'static str,
    /// The source IP (`None` for a user block).
    pub ip: Option<IpAddr>,
    /// The user of an `ip+user` flood key, or `user@realm` of a user block (truncated).
    pub user: Option<String>,
    /// Seconds left, rounded up.
    pub remaining_s: u64,
    /// Requests refused during this block (flood) or failures counted (authfail).
    pub count: u32,
}

/// Flood detection, failed-auth blocking, rate limits and overload control, as one object.
pub struct Protect {
    cfg: PikeConfig,
    rl_retry_after: u32,
    whitelist: Vec<Cidr>,
    flood: FloodTable,
    fail_ip: FailTable<IpAddr>,
    fail_user: FailTable<u64>,
    ratelimit: RateLimiter,
    overload: Overload,
    stats: Stats,
    base: Instant,
    user_hasher: RandomState,
    unit_ms: u64,
    block_ms: u64,
    retain_ms: u64,
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Protect {
    /// Builds the protection layer from its three config sections; says what is wrong.
    pub fn new(
        pike: PikeConfig,
        ratelimit: RateLimitConfig,
        overload: OverloadConfig,
    ) -> Result<Protect, ConfigError> {
        let seed = RandomState::new().hash_one(std::process::id());
        Protect::with_clock(pike, ratelimit, overload, Instant::now(), seed)
    }

    /// Same as [`new`](Self::new) with a given clock base (every `now` should be at or after
    /// it) and random seed, for tests on virtual time.
    pub fn with_clock(
        pike: PikeConfig,
        ratelimit: RateLimitConfig,
        overload: OverloadConfig,
        base: Instant,
        seed: u64,
    ) -> Result<Protect, ConfigError> {
        let whitelist = pike.validate().map_err(ConfigError)?;
        ratelimit.validate().map_err(ConfigError)?;
        overload.validate().map_err(ConfigError)?;
        let unit_ms = pike.sampling_time_unit.max(1) * 1000;
        let retain_ms = (pike.remove_latency * 1000).max(2 * unit_ms);
        let fail_window_ms = pike.auth_fail_window.max(1) * 1000;
        let cap = pike.max_entries.max(64);
        Ok(Protect {
            flood: FloodTable::new(cap, retain_ms / 4 + 1, unit_ms / 2 + 1),
            fail_ip: FailTable::new(cap, fail_window_ms, unit_ms / 2 + 1),
            fail_user: FailTable::new(cap, fail_window_ms, unit_ms / 2 + 1),
            ratelimit: RateLimiter::new(&ratelimit),
            rl_retry_after: ratelimit.retry_after.max(1),
            overload: Overload::new(overload, base, seed),
            stats: Stats::default(),
            base,
            user_hasher: RandomState::new(),
            unit_ms,
            block_ms: pike.block_time * 1000,
            retain_ms,
            whitelist,
            cfg: pike,
        })
    }

    /// The `[pike]` settings.
    pub fn config(&self) -> &PikeConfig {
        &self.cfg
    }

    /// The overload controller, to feed with load signals.
    pub fn overload(&self) -> &Overload {
        &self.overload
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64
    }

    fn user_hash(&self, user: &[u8]) -> u64 {
        // 0 means "the IP as a whole".
        self.user_hasher.hash_one(user).max(1)
    }

    /// Whether `ip` is a trusted peer.
    pub fn is_whitelisted(&self, ip: IpAddr) -> bool {
        let ip = cidr::canonical(ip);
        self.whitelist.iter().any(|c| c.contains(ip))
    }

    /// The decision for one request, before the routing script: whitelist, failed-auth IP
    /// block, flood counting (`stage = "pipeline"`), rate limit, overload shedding, in that
    /// order. `user` keys the flood counter in `ip+user` mode (the From user, see
    /// [`user_of`]); `method` selects the rate limit bucket.
    pub fn check(
        &self,
        src: IpAddr,
        user: Option<&[u8]>,
        class: Class,
        method: &[u8],
        now: Instant,
    ) -> Verdict {
        let src = cidr::canonical(src);
        let now_ms = self.ms(now);
        if self.is_whitelisted(src) {
            if !self.overload_exempt() {
                return self.overload_verdict(class, now);
            }
            return Verdict::Accept;
        }
        if let Some(rem) = self.fail_ip.get_mut(&src, |f| f.blocked(now_ms)).flatten() {
            return self.refuse(Reason::AuthFail, rem);
        }
        if self.cfg.enabled
            && self.cfg.stage == Stage::Pipeline
            && let Some(rem) = self.flood_hit(src, user, now_ms)
        {
            return self.refuse(Reason::Flood, rem);
        }
        if class != Class::InDialog
            && !self.ratelimit.allow(
                method,
                now.saturating_duration_since(self.base).as_nanos() as u64,
            )
        {
            // Randomised by +-50% so that refused clients do not come back together.
            let ra = self.rl_retry_after;
            let half = ra / 2;
            let retry_after =
                (ra - half + (self.overload.random() % u64::from(2 * half + 1)) as u32).max(1);
            self.stats.count(Reason::RateLimit, false);
            return Verdict::Reject {
                status: 503,
                retry_after,
                reason: Reason::RateLimit,
            };
        }
        self.overload_verdict(class, now)
    }

    /// [`check`](Self::check) for a parsed request from `src`.
    pub fn check_msg(&self, msg: &SipMessage, src: IpAddr, now: Instant) -> Verdict {
        let class = Class::of(msg);
        let method = msg.method_bytes().unwrap_or(b"");
        self.check(src, user_of(msg), class, method, now)
    }

    fn overload_exempt(&self) -> bool {
        // Read through the overload config: the whitelist exemption is an overload setting.
        self.overload.exempt_whitelist()
    }

    fn overload_verdict(&self, class: Class, now: Instant) -> Verdict {
        match self.overload.shed(class, now) {
            Some(retry_after) => {
                self.stats.shed[class.index()].inc();
                self.stats.count(Reason::Overload, false);
                Verdict::Reject {
                    status: 503,
                    retry_after,
                    reason: Reason::Overload,
                }
            }
            None => Verdict::Accept,
        }
    }

    fn refuse(&self, reason: Reason, remaining_ms: u64) -> Verdict {
        match self.cfg.action {
            Action::Drop => {
                self.stats.count(reason, true);
                Verdict::Drop { reason }
            }
            Action::Reject503 => {
                self.stats.count(reason, false);
                Verdict::Reject {
                    status: 503,
                    retry_after: remaining_ms.div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32,
                    reason,
                }
            }
        }
    }

    /// Counts a request of `src` (and `user`); the remaining block time if blocked.
    fn flood_hit(&self, src: IpAddr, user: Option<&[u8]>, now_ms: u64) -> Option<u64> {
        let c = &self.cfg;
        let (unit, retain, block) = (self.unit_ms, self.retain_ms, self.block_ms);
        let hit = |key: FloodKey, label: Option<&[u8]>, density: u32| -> Option<u64> {
            let r = self.flood.upsert(
                &key,
                now_ms,
                || Flood::new(now_ms, unit, retain, label),
                |f| f.hit(now_ms, density, block),
            );
            match r {
                Some((rem, started)) => {
                    if started {
                        self.stats.blocks[0].inc();
                        tracing::warn!(target: "geosip_pike", ip = %key.ip, user = ?label.map(String::from_utf8_lossy), "flood: source blocked");
                    }
                    rem
                }
                None => {
                    self.stats.untracked.inc();
                    None
                }
            }
        };
        match (c.key, user.filter(|u| !u.is_empty())) {
            (KeyMode::IpUser, Some(u)) => {
                let ip_rem = hit(FloodKey { ip: src, user: 0 }, None, c.reqs_density_per_ip);
                let user_rem = hit(
                    FloodKey {
                        ip: src,
                        user: self.user_hash(u),
                    },
                    Some(u),
                    c.reqs_density_per_unit,
                );
                ip_rem.max(user_rem)
            }
            (KeyMode::IpUser, None) => {
                hit(FloodKey { ip: src, user: 0 }, None, c.reqs_density_per_ip)
            }
            (KeyMode::Ip, _) => hit(FloodKey { ip: src, user: 0 }, None, c.reqs_density_per_unit),
        }
    }

    /// Kamailio's `pike_check_req()` for the routing script: 1 = go on, -1 = the source is
    /// flooding (or blocked). With `stage = "pipeline"` it only asks (the request was counted
    /// by [`check`](Self::check)); with `stage = "script"` it counts. With `action = "503"` it
    /// sends the 503 itself; with `drop` it sends nothing. Whitelisted sources always get 1.
    pub fn pike_check_req(&self, core: &Core, ctx: &mut MsgCtx) -> i32 {
        let now = Instant::now();
        let src = cidr::canonical(ctx.rx.src.ip());
        if !self.cfg.enabled || self.is_whitelisted(src) {
            return 1;
        }
        let now_ms = self.ms(now);
        let user = user_of(&ctx.msg);
        let rem = match self.cfg.stage {
            Stage::Script => self.flood_hit(src, user, now_ms),
            Stage::Pipeline => self.blocked_remaining(src, user, now_ms),
        };
        let rem = rem.or_else(|| self.fail_ip.get_mut(&src, |f| f.blocked(now_ms)).flatten());
        match rem {
            None => 1,
            Some(rem) => {
                if self.cfg.stage == Stage::Script {
                    let v = self.refuse(Reason::Flood, rem);
                    self.respond(core, ctx, v);
                } else if self.cfg.action == Action::Reject503 {
                    let v = Verdict::Reject {
                        status: 503,
                        retry_after: rem.div_ceil(1000).clamp(1, u64::from(u32::MAX)) as u32,
                        reason: Reason::Flood,
                    };
                    self.respond(core, ctx, v);
                }
                -1
            }
        }
    }

    fn blocked_remaining(&self, src: IpAddr, user: Option<&[u8]>, now_ms: u64) -> Option<u64> {
        let ip = self
            .flood
            .get_mut(&FloodKey { ip: src, user: 0 }, |f| f.blocked(now_ms))
            .flatten();
        let u = match (self.cfg.key, user) {
            (KeyMode::IpUser, Some(u)) if !u.is_empty() => self
                .flood
                .get_mut(
                    &FloodKey {
                        ip: src,
                        user: self.user_hash(u),
                    },
                    |f| f.blocked(now_ms),
                )
                .flatten(),
            _ => None,
        };
        ip.max(u)
    }

    /// Carries out a verdict on the request of `ctx`: nothing for Accept and Drop, the 503
    /// with Retry-After for Reject (never for an ACK, which cannot be answered). Returns
    /// whether processing may continue.
    pub fn respond(&self, core: &Core, ctx: &mut MsgCtx, v: Verdict) -> bool {
        match v {
            Verdict::Accept => true,
            Verdict::Drop { .. } => false,
            Verdict::Reject {
                status,
                retry_after,
                ..
            } => {
                if !ctx.is_method(b"ACK") {
                    let mut buf = itoa::Buffer::new();
                    let ra = buf.format(retry_after);
                    let _ = core.reply(ctx, status, None, &[(b"Retry-After", ra.as_bytes())], None);
                }
                false
            }
        }
    }

    /// Authentication of `user` (`user@realm`, as the credentials name it, existing or not)
    /// from `ip` failed (wrong password, unknown user, disabled account). Counts towards the
    /// user and IP blocks; whitelisted IPs are never blocked.
    pub fn auth_failed(&self, ip: IpAddr, user: &[u8], now: Instant) {
        let ip = cidr::canonical(ip);
        let now_ms = self.ms(now);
        let c = &self.cfg;
        let window_ms = c.auth_fail_window.max(1) * 1000;
        let block_ms = c.auth_fail_block_time * 1000;
        if c.auth_fail_limit_user > 0 && !user.is_empty() {
            let key = self.user_hash(user);
            match self.fail_user.upsert(
                &key,
                now_ms,
                || Fail::new(now_ms, window_ms, Some(user)),
                |f| f.fail(now_ms, c.auth_fail_limit_user, block_ms),
            ) {
                Some(true) => {
                    self.stats.blocks[2].inc();
                    tracing::warn!(target: "geosip_pike", user = %String::from_utf8_lossy(user), "too many failed authentications: user blocked");
                }
                Some(false) => {}
                None => self.stats.untracked.inc(),
            }
        }
        if c.auth_fail_limit_ip > 0 && !self.is_whitelisted(ip) {
            match self.fail_ip.upsert(
                &ip,
                now_ms,
                || Fail::new(now_ms, window_ms, None),
                |f| f.fail(now_ms, c.auth_fail_limit_ip, block_ms),
            ) {
                Some(true) => {
                    self.stats.blocks[1].inc();
                    tracing::warn!(target: "geosip_pike", %ip, "too many failed authentications: source blocked");
                }
                Some(false) => {}
                None => self.stats.untracked.inc(),
            }
        }
    }

    /// Authentication of `user` from `ip` succeeded: the user's failure count starts over
    /// (the IP's does not, so one valid account cannot launder a brute force).
    pub fn auth_ok(&self, _ip: IpAddr, user: &[u8], now: Instant) {
        let now_ms = self.ms(now);
        let key = self.user_hash(user);
        self.fail_user
            .remove_if(&key, |f| f.blocked(now_ms).is_none());
    }

    /// Whether `user` (`user@realm`) is blocked after too many failures: the remaining seconds.
    pub fn auth_user_blocked(&self, user: &[u8], now: Instant) -> Option<u64> {
        if self.cfg.auth_fail_limit_user == 0 {
            return None;
        }
        let now_ms = self.ms(now);
        let key = self.user_hash(user);
        self.fail_user
            .get_mut(&key, |f| f.blocked(now_ms))
            .flatten()
            .map(|ms| ms.div_ceil(1000))
    }

    /// Whether requests from `ip` are currently refused (flood on the IP as a whole, or failed
    /// authentications): the remaining seconds.
    pub fn ip_blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let ip = cidr::canonical(ip);
        let now_ms = self.ms(now);
        let a = self
            .flood
            .get_mut(&FloodKey { ip, user: 0 }, |f| f.blocked(now_ms))
            .flatten();
        let b = self.fail_ip.get_mut(&ip, |f| f.blocked(now_ms)).flatten();
        a.max(b).map(|ms| ms.div_ceil(1000))
    }

    /// Lifts every block and forgets every counter of `ip` (flood keys with any user, and
    /// failed authentications). Returns how many entries were removed.
    pub fn unblock_ip(&self, ip: IpAddr) -> usize {
        let ip = cidr::canonical(ip);
        self.flood.remove_where(|k, _| k.ip == ip) + usize::from(self.fail_ip.remove(&ip))
    }

    /// Lifts the block of `user` (`user@realm`). Returns whether there was an entry.
    pub fn unblock_user(&self, user: &[u8]) -> bool {
        self.fail_user.remove(&self.user_hash(user))
    }

    /// Every key blocked at `now` (`pike.list`), longest remaining first.
    pub fn blocked(&self, now: Instant) -> Vec<BlockedEntry> {
        let now_ms = self.ms(now);
        let mut out = Vec::new();
        let label =
            |l: &Option<Box<[u8]>>| l.as_ref().map(|l| String::from_utf8_lossy(l).into_owned());
        self.flood.for_each(|k, f| {
            if let Some(rem) = f.blocked(now_ms) {
                out.push(BlockedEntry {
                    kind: "flood",
                    ip: Some(k.ip),
                    user: label(&f.label),
                    remaining_s: rem.div_ceil(1000),
                    count: f.refused,
                });
            }
        });
        self.fail_ip.for_each(|ip, f| {
            if let Some(rem) = f.blocked(now_ms) {
                out.push(BlockedEntry {
                    kind: "authfail-ip",
                    ip: Some(*ip),
                    user: None,
                    remaining_s: rem.div_ceil(1000),
                    count: f.total,
                });
            }
        });
        self.fail_user.for_each(|_, f| {
            if let Some(rem) = f.blocked(now_ms) {
                out.push(BlockedEntry {
                    kind: "authfail-user",
                    ip: None,
                    user: label(&f.label),
                    remaining_s: rem.div_ceil(1000),
                    count: f.total,
                });
            }
        });
        out.sort_by_key(|b| std::cmp::Reverse(b.remaining_s));
        out
    }

    /// Entries held by the flood table and the two failed-auth tables.
    pub fn table_sizes(&self) -> [usize; 3] {
        [self.flood.len(), self.fail_ip.len(), self.fail_user.len()]
    }

    /// Most entries each table holds.
    pub fn table_capacity(&self) -> usize {
        self.flood.capacity()
    }

    /// Registers the `pike` metrics collector and the `pike.list`, `pike.unblock` and
    /// `pike.stats` RPCs.
    pub fn register(
        self: &Arc<Self>,
        metrics: &geosip_core::metrics::Registry,
        rpc: &geosip_core::rpc::RpcRegistry,
    ) {
        stats::register(self, metrics, rpc);
    }
}

/// The user that keys `ip+user` flood counters: the From URI user, else the username of the
/// first Authorization / Proxy-Authorization credentials.
pub fn user_of(msg: &SipMessage) -> Option<&[u8]> {
    if let Some(from) = msg.from()
        && let Ok(uri) = from.uri()
        && let Some(u) = uri.user()
        && !u.is_empty()
    {
        return Some(u);
    }
    msg.authorizations()
        .chain(msg.proxy_authorizations())
        .find_map(|a| a.digest_credentials().and_then(|d| d.username))
}

#[cfg(test)]
mod tests;
