//! auth and auth_db: digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760) with
//! stateless nonces, and the subscriber table.
//!
//! * [`Auth::check`] verifies the credentials of a request (Kamailio's `auth_check`) and
//!   returns an [`AuthResult`] whose [`code`](AuthResult::code) is Kamailio's return code.
//! * [`Auth::www_authenticate`] / [`Auth::proxy_authenticate`] check and, on failure, answer
//!   themselves: 401 + WWW-Authenticate / 407 + Proxy-Authenticate (one header per algorithm),
//!   403 for an owner mismatch, 400 for malformed credentials, 503 when the subscriber table
//!   fails.
//! * [`Subscribers`] is the subscriber table with its cache and provisioning API.
//!
//! **No user enumeration.** An unknown user, a disabled one, a wrong password and a user
//! blocked after too many failures get the same reply (a fresh challenge, same headers), and
//! the same work is done for unknown users (a dummy HA1 is hashed and compared).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod batch;
mod cache;
pub mod config;
pub mod digest;
mod metrics;
pub mod nc;
pub mod nonce;
pub mod subscribers;

use std::borrow::Cow;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use geosip_core::Core;
use geosip_core::ctx::MsgCtx;
use geosip_pike::Protect;
use sip_msg::{AuthValue, DigestCredentials, HeaderName, SipMessage, Uri};
use subtle::ConstantTimeEq;

pub use batch::{BatchReader, Resume, Wrapper};
pub use config::{AuthConfig, QopOffer};
pub use digest::{Algorithm, Qop};
pub use metrics::Metrics;
pub use subscribers::{Subscriber, SubscriberError, Subscribers, parse_aor, parse_attrs};

use nc::{NcTable, NcUse};
use nonce::{NonceKey, NonceState};

/// Which header pair a check uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Authorization / WWW-Authenticate, 401 (registrars and user agents: REGISTER).
    Www,
    /// Proxy-Authorization / Proxy-Authenticate, 407 (proxies: INVITE and the rest).
    Proxy,
}

impl Kind {
    fn challenge_header(self) -> &'static [u8] {
        match self {
            Kind::Www => b"WWW-Authenticate",
            Kind::Proxy => b"Proxy-Authenticate",
        }
    }

    fn status(self) -> u16 {
        match self {
            Kind::Www => 401,
            Kind::Proxy => 407,
        }
    }

    /// Metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Www => "www",
            Kind::Proxy => "proxy",
        }
    }
}

/// Outcome of [`Auth::check`]. [`code`](Self::code) gives Kamailio's `auth_check` return code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResult {
    /// Authenticated as `user` of `domain` (the realm); `ctx.auth_user` is set. Code 1.
    Ok {
        /// The username of the credentials.
        user: Bytes,
        /// The realm (the subscriber's domain).
        domain: Bytes,
    },
    /// Authentication is off (`auth.enabled = false`), or the request is an ACK or CANCEL
    /// (which cannot be challenged): nothing checked, `ctx.auth_user` not set. Code 1.
    NotChecked,
    /// No credentials for this realm with an algorithm we offer. Code -5.
    NoCredentials,
    /// The response is right but the nonce expired (or is not ours any more). Code -4.
    StaleNonce,
    /// Wrong response for an existing subscriber. Code -2.
    InvalidPassword,
    /// No such subscriber (or no HA1 for the algorithm used). Code -3.
    UserNotFound,
    /// The subscriber is disabled. Code -3.
    Disabled,
    /// The nonce was used again with the same or a lower nonce count. Code -6.
    Replay,
    /// Authenticated, but not as the owner of the To (REGISTER) / From URI. Code -8.
    OwnerMismatch,
    /// The user is blocked after too many failures (pike); credentials were not checked.
    /// Code -7 (geosip).
    Blocked,
    /// Credentials without username, nonce, uri or response, or with a bad qop / nc. Code -1.
    Malformed,
    /// The subscriber table failed or timed out. Code -1.
    Error,
    /// Not decided yet: the request waits for a batched read of its subscriber and runs again
    /// (`ctx.park`); the script stops. Code 0 (never seen by a script).
    Parked,
}

impl AuthResult {
    /// Kamailio's `auth_check` return code: 1 ok; -1 error; -2 invalid password; -3 user
    /// unknown (or disabled); -4 stale nonce; -5 no credentials; -6 nonce reused; -7 blocked
    /// (geosip); -8 owner mismatch.
    pub fn code(&self) -> i32 {
        match self {
            AuthResult::Ok { .. } | AuthResult::NotChecked => 1,
            AuthResult::Malformed | AuthResult::Error => -1,
            AuthResult::InvalidPassword => -2,
            AuthResult::UserNotFound | AuthResult::Disabled => -3,
            AuthResult::StaleNonce => -4,
            AuthResult::NoCredentials => -5,
            AuthResult::Replay => -6,
            AuthResult::Blocked => -7,
            AuthResult::OwnerMismatch => -8,
            AuthResult::Parked => 0,
        }
    }

    /// Metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthResult::Ok { .. } => "ok",
            AuthResult::NotChecked => "not_checked",
            AuthResult::NoCredentials => "no_credentials",
            AuthResult::StaleNonce => "stale_nonce",
            AuthResult::InvalidPassword => "invalid_password",
            AuthResult::UserNotFound => "user_unknown",
            AuthResult::Disabled => "disabled",
            AuthResult::Replay => "replay",
            AuthResult::OwnerMismatch => "owner_mismatch",
            AuthResult::Blocked => "blocked",
            AuthResult::Malformed => "malformed",
            AuthResult::Error => "error",
            AuthResult::Parked => "parked",
        }
    }

    /// Whether the request is authenticated (or did not need to be).
    pub fn is_ok(&self) -> bool {
        self.code() > 0
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Digest authentication for one process (all workers share it).
pub struct Auth {
    cfg: AuthConfig,
    algorithms: Vec<Algorithm>,
    qop: QopOffer,
    key: NonceKey,
    dummy: [u8; 32],
    nc: NcTable,
    subscribers: Arc<Subscribers>,
    protect: Option<Arc<Protect>>,
    metrics: Arc<Metrics>,
    batch: Option<Arc<BatchReader>>,
}

/// Unix seconds of `t`.
fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Auth {
    /// Builds the module over the subscriber table; `protect` receives failed / successful
    /// authentications (fail2ban-style blocks) when given.
    pub fn new(
        cfg: AuthConfig,
        subscribers: Arc<Subscribers>,
        protect: Option<Arc<Protect>>,
    ) -> Result<Auth, ConfigError> {
        cfg.validate().map_err(ConfigError)?;
        let algorithms = cfg.algorithms().map_err(ConfigError)?;
        let qop = cfg.qop_offer().map_err(ConfigError)?;
        let secret: Vec<u8> = if cfg.secret.is_empty() {
            if cfg.enabled {
                tracing::warn!(target: "geosip_auth", "auth.secret is empty: using a random nonce secret; nonces are not valid on other nodes or after a restart");
            }
            rand::random::<[u8; 32]>().to_vec()
        } else {
            cfg.secret.as_bytes().to_vec()
        };
        Ok(Auth {
            key: NonceKey::new(&secret),
            dummy: rand::random(),
            nc: NcTable::new(
                cfg.nonce_table_size,
                cfg.nonce_expires + cfg.nonce_skew,
                cfg.nc_window,
            ),
            algorithms,
            qop,
            batch: if cfg.batch_reads && subscribers.batches_reads() {
                Some(
                    BatchReader::start(
                        &subscribers,
                        Duration::from_millis(cfg.batch_window_ms),
                        cfg.batch_max_parked,
                    )
                    .map_err(|e| ConfigError(format!("cannot start the auth-batch thread: {e}")))?,
                )
            } else {
                None
            },
            subscribers,
            protect,
            metrics: Arc::new(Metrics::default()),
            cfg,
        })
    }

    /// The `[auth]` settings.
    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// Whether authentication is on (`KSR.auth.enabled()`).
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The subscriber table.
    pub fn subscribers(&self) -> &Arc<Subscribers> {
        &self.subscribers
    }

    /// Periodic upkeep (the server calls it every 100 ms): see [`Subscribers::tick`].
    pub fn tick(&self) {
        self.subscribers.tick();
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Registers the `auth` metrics collector.
    pub fn register_metrics(self: &Arc<Self>, registry: &geosip_core::metrics::Registry) {
        metrics::register(self, registry);
    }

    /// Nonces remembered for replay protection.
    pub fn nonce_table_len(&self) -> usize {
        self.nc.len()
    }

    /// The realm to use: `realm` if given, else `auth.realm`, else the To (Www) or From (Proxy)
    /// host; lowercase.
    pub fn realm_for<'a>(
        &'a self,
        msg: &'a SipMessage,
        realm: &'a [u8],
        kind: Kind,
    ) -> Cow<'a, [u8]> {
        let r: Cow<'a, [u8]> = if !realm.is_empty() {
            Cow::Borrowed(realm)
        } else if !self.cfg.realm.is_empty() {
            Cow::Borrowed(self.cfg.realm.as_bytes())
        } else {
            let na = match kind {
                Kind::Www => msg.to(),
                Kind::Proxy => msg.from(),
            };
            match na
                .and_then(|n| n.uri().ok())
                .map(|u| u.host().raw().to_vec())
            {
                Some(h) => Cow::Owned(h),
                None => Cow::Borrowed(&b""[..]),
            }
        };
        if r.iter().any(u8::is_ascii_uppercase) {
            Cow::Owned(r.to_ascii_lowercase())
        } else {
            r
        }
    }

    /// Verifies the credentials of the request in `ctx` for `realm` (empty = see
    /// [`realm_for`](Self::realm_for)) at `now`. On success sets `ctx.auth_user` and tells
    /// pike; wrong passwords, unknown and disabled users are reported to pike as failures.
    /// Sends nothing.
    pub fn check(&self, ctx: &mut MsgCtx, realm: &[u8], kind: Kind, now: SystemTime) -> AuthResult {
        let r = self.check_inner(ctx, realm, kind, now);
        if r != AuthResult::Parked {
            self.metrics.result(&r);
        }
        r
    }

    fn check_inner(
        &self,
        ctx: &mut MsgCtx,
        realm: &[u8],
        kind: Kind,
        now: SystemTime,
    ) -> AuthResult {
        if !self.cfg.enabled || ctx.is_method(b"ACK") || ctx.is_method(b"CANCEL") {
            return AuthResult::NotChecked;
        }
        let msg = &ctx.msg;
        let realm = self.realm_for(msg, realm, kind);
        let now_s = unix_s(now);
        let Some((alg, d)) = self.find_credentials(msg, &realm, kind) else {
            return AuthResult::NoCredentials;
        };
        let Some(c) = Parsed::of(&d, self.qop) else {
            return AuthResult::Malformed;
        };
        let user: Cow<'_, [u8]> = unescape_quoted_pairs(c.username);
        let src = ctx.rx.src.ip();
        let mut user_at_realm = Vec::with_capacity(user.len() + 1 + realm.len());
        user_at_realm.extend_from_slice(&user);
        user_at_realm.push(b'@');
        user_at_realm.extend_from_slice(&realm);
        if let Some(p) = &self.protect
            && p.auth_user_blocked(&user_at_realm, Instant::now())
                .is_some()
        {
            return AuthResult::Blocked;
        }
        let nonce = self.key.check(
            c.nonce,
            &realm,
            now_s,
            self.cfg.nonce_expires,
            self.cfg.nonce_skew,
        );
        let cached = self.subscribers.cached(&user, &realm);
        if cached.is_none()
            && ctx.park_ok
            && !ctx.resumed
            && let Some(b) = &self.batch
            && self.subscribers.batches(&user, &realm)
            && (b.has_room() || {
                // Full: this request reads its subscriber itself.
                b.stats.overflows.inc();
                false
            })
        {
            // Decided when the subscriber is here: the request runs again then.
            ctx.park = Some((
                Bytes::copy_from_slice(&user),
                Bytes::copy_from_slice(&realm),
            ));
            return AuthResult::Parked;
        }
        let looked_up = match cached {
            Some(s) => Ok(s),
            None => self.subscribers.read(&user, &realm),
        };
        let sub = match looked_up {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "geosip_auth", error = %e, "subscriber lookup failed");
                return AuthResult::Error;
            }
        };
        // Same work whether the user exists or not: a dummy HA1 for unknown users (and for
        // subscribers without an HA1 for this algorithm).
        let stored = sub.as_ref().and_then(|s| s.ha1(alg).copied());
        let ha1 = stored.unwrap_or_else(|| digest::ha1(alg, &user, &realm, &self.dummy));
        let input = digest::ResponseInput {
            method: ctx.method(),
            uri: c.uri,
            nonce: c.nonce,
            nc: c.nc_raw,
            cnonce: c.cnonce,
            qop: c.qop,
            body: msg.body(),
        };
        let expected = digest::response(alg, &ha1, &input);
        let matches = response_eq(&expected, c.response) && stored.is_some();
        if !matches {
            self.failed(src, &user_at_realm);
            return match &sub {
                Some(s) if s.ha1(alg).is_some() => AuthResult::InvalidPassword,
                _ => AuthResult::UserNotFound,
            };
        }
        let (ts, salt) = match nonce {
            NonceState::Valid { ts, salt } => (ts, salt),
            // RFC 7616 §3.3: stale only when the response was right.
            NonceState::Expired | NonceState::Invalid => return AuthResult::StaleNonce,
        };
        match self.nc.use_nc(ts, salt, c.nc, now_s) {
            NcUse::Fresh => {}
            NcUse::Replay => return AuthResult::Replay,
            NcUse::Forgotten => return AuthResult::StaleNonce,
        }
        let Some(sub) = sub else {
            return AuthResult::UserNotFound;
        };
        if !sub.enabled {
            self.failed(src, &user_at_realm);
            return AuthResult::Disabled;
        }
        if self.cfg.owner_check && !owns(msg, kind, &user, &realm) {
            return AuthResult::OwnerMismatch;
        }
        if let Some(p) = &self.protect {
            p.auth_ok(src, &user_at_realm, Instant::now());
        }
        let user = Bytes::copy_from_slice(&user);
        let domain = Bytes::copy_from_slice(&realm);
        ctx.auth_user = Some((user.clone(), domain.clone()));
        AuthResult::Ok { user, domain }
    }

    fn failed(&self, src: IpAddr, user_at_realm: &[u8]) {
        if let Some(p) = &self.protect {
            p.auth_failed(src, user_at_realm, Instant::now());
        }
    }

    /// The first Digest credentials of `kind` for `realm` with an algorithm we offer.
    fn find_credentials<'m>(
        &self,
        msg: &'m SipMessage,
        realm: &[u8],
        kind: Kind,
    ) -> Option<(Algorithm, DigestCredentials<'m>)> {
        let creds: Box<dyn Iterator<Item = AuthValue<'m>> + 'm> = match kind {
            Kind::Www => Box::new(msg.authorizations()),
            Kind::Proxy => Box::new(msg.proxy_authorizations()),
        };
        for a in creds {
            let Some(d) = a.digest_credentials() else {
                continue;
            };
            if d.realm != Some(realm) {
                continue;
            }
            if let Some(alg) = self.offered(&d) {
                return Some((alg, d));
            }
        }
        None
    }

    /// The algorithm of `d` (none given = MD5) when it is one we offer.
    fn offered(&self, d: &DigestCredentials<'_>) -> Option<Algorithm> {
        let alg = match d.algorithm {
            None => Algorithm::Md5,
            Some(t) => Algorithm::parse(t)?,
        };
        self.algorithms.contains(&alg).then_some(alg)
    }

    /// The challenge header values for `realm`: one per algorithm, in configuration order,
    /// all with the same fresh nonce; `stale=true` when asked.
    pub fn challenges(&self, realm: &[u8], stale: bool, now: SystemTime) -> Vec<Vec<u8>> {
        let nonce = self.key.issue(realm, unix_s(now), rand::random());
        self.algorithms
            .iter()
            .map(|alg| {
                let mut v = Vec::with_capacity(128);
                v.extend_from_slice(b"Digest realm=\"");
                for &b in realm {
                    if b == b'"' || b == b'\\' {
                        v.push(b'\\');
                    }
                    v.push(b);
                }
                v.extend_from_slice(b"\", nonce=\"");
                v.extend_from_slice(nonce.as_bytes());
                v.push(b'"');
                if stale {
                    v.extend_from_slice(b", stale=true");
                }
                if !self.qop.value().is_empty() {
                    let _ = write!(v, ", qop=\"{}\"", self.qop.value());
                }
                let _ = write!(v, ", algorithm={}", alg.name());
                v
            })
            .collect()
    }

    /// Sends the 401 (Www) / 407 (Proxy) challenge for `realm` (empty = see
    /// [`realm_for`](Self::realm_for)).
    pub fn challenge(&self, core: &Core, ctx: &mut MsgCtx, realm: &[u8], kind: Kind, stale: bool) {
        let realm = self.realm_for(&ctx.msg, realm, kind).into_owned();
        let values = self.challenges(&realm, stale, SystemTime::now());
        let name = kind.challenge_header();
        let headers: Vec<(&[u8], &[u8])> = values.iter().map(|v| (name, v.as_slice())).collect();
        if core.reply(ctx, kind.status(), None, &headers, None).is_ok() {
            self.metrics.challenge(kind, stale);
        }
    }

    /// Checks and, on failure, answers (Kamailio's `auth_check` + `auth_challenge`): a
    /// challenge for missing / wrong / unknown / blocked credentials, with `stale=true` for a
    /// stale or replayed nonce, 403 for an owner mismatch, 400 for malformed credentials, 503
    /// with Retry-After when the subscriber table fails. Returns [`AuthResult::code`].
    pub fn authenticate(&self, core: &Core, ctx: &mut MsgCtx, realm: &[u8], kind: Kind) -> i32 {
        let r = self.check(ctx, realm, kind, SystemTime::now());
        match &r {
            AuthResult::Ok { .. } | AuthResult::NotChecked | AuthResult::Parked => {}
            AuthResult::NoCredentials
            | AuthResult::InvalidPassword
            | AuthResult::UserNotFound
            | AuthResult::Disabled
            | AuthResult::Blocked => self.challenge(core, ctx, realm, kind, false),
            AuthResult::StaleNonce | AuthResult::Replay => {
                self.challenge(core, ctx, realm, kind, true)
            }
            AuthResult::OwnerMismatch => {
                let _ = core.reply(ctx, 403, Some(b"Forbidden auth ID"), &[], None);
            }
            AuthResult::Malformed => {
                let _ = core.reply(ctx, 400, Some(b"Bad Credentials"), &[], None);
            }
            AuthResult::Error => {
                let ra = 5 + rand::random::<u32>() % 11;
                let mut b = itoa::Buffer::new();
                let _ = core.reply(
                    ctx,
                    503,
                    None,
                    &[(b"Retry-After", b.format(ra).as_bytes())],
                    None,
                );
            }
        }
        r.code()
    }

    /// `KSR.auth.www_authenticate(realm)`: [`authenticate`](Self::authenticate) with
    /// Authorization / 401 (for REGISTER; realm = the domain, empty = the To domain).
    pub fn www_authenticate(&self, core: &Core, ctx: &mut MsgCtx, realm: &[u8]) -> i32 {
        self.authenticate(core, ctx, realm, Kind::Www)
    }

    /// `KSR.auth.proxy_authenticate(realm)`: [`authenticate`](Self::authenticate) with
    /// Proxy-Authorization / 407 (initial INVITE and other requests; empty realm = the From
    /// domain).
    pub fn proxy_authenticate(&self, core: &Core, ctx: &mut MsgCtx, realm: &[u8]) -> i32 {
        self.authenticate(core, ctx, realm, Kind::Proxy)
    }

    /// Sets a request of `bytes` aside until the subscriber it waits for (`user@domain`, from
    /// [`AuthResult::Parked`] or [`prefetch`](Self::prefetch)) is cached; `resume` then runs it. Without batched reads,
    /// or when too many wait, `resume` runs now (it reads the table itself).
    pub fn park(&self, user: &[u8], domain: &[u8], bytes: usize, resume: Resume) {
        let r = match &self.batch {
            Some(b) => b.park(user, domain, bytes, resume),
            None => Err(resume),
        };
        if let Err(resume) = r {
            resume();
        }
    }

    /// Whether a request should wait for its subscriber before the script runs: it carries
    /// Digest credentials (Authorization or Proxy-Authorization) for one of our domains, with
    /// an algorithm we offer, from a user not cached, and reads are batched. Then the engine
    /// parks it at once and the script runs only once, with the subscriber cached. Requests
    /// within a dialog, ACK and CANCEL never wait.
    pub fn prefetch(&self, core: &Core, msg: &SipMessage) -> Option<(Bytes, Bytes)> {
        let batch = self.batch.as_ref()?;
        if !self.cfg.enabled
            || msg.to_tag().is_some()
            || matches!(
                msg.method(),
                Some(sip_msg::Method::Ack | sip_msg::Method::Cancel)
            )
        {
            return None;
        }
        let creds = msg.authorizations().chain(msg.proxy_authorizations());
        for a in creds {
            let Some(d) = a.digest_credentials() else {
                continue;
            };
            let (Some(realm), Some(user)) = (d.realm, d.username) else {
                continue;
            };
            if self.offered(&d).is_none() {
                continue;
            }
            // Realms are lowercase in the table; most already are (no copy then).
            let realm: Cow<'_, [u8]> = if realm.iter().any(u8::is_ascii_uppercase) {
                Cow::Owned(realm.to_ascii_lowercase())
            } else {
                Cow::Borrowed(realm)
            };
            if !core.myself.is_local_domain(&realm) {
                continue;
            }
            let user = unescape_quoted_pairs(user);
            if self.subscribers.is_cached(&user, &realm)
                || !self.subscribers.batches(&user, &realm)
                || !batch.has_room()
            {
                return None;
            }
            return Some((
                Bytes::copy_from_slice(&user),
                Bytes::copy_from_slice(&realm),
            ));
        }
        None
    }

    /// The batch reader, when reads are batched.
    pub fn batch(&self) -> Option<&Arc<BatchReader>> {
        self.batch.as_ref()
    }

    /// `KSR.auth.consume_credentials()`: removes the Authorization and Proxy-Authorization
    /// lines for the realm the request authenticated in (`ctx.auth_user`), so they are not
    /// forwarded; credentials for other realms (next hops) stay. Returns how many lines.
    pub fn consume_credentials(&self, ctx: &mut MsgCtx) -> usize {
        let Some((_, realm)) = ctx.auth_user.clone() else {
            return 0;
        };
        let mut n = 0;
        for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
            let lines: Vec<usize> = ctx
                .msg
                .header_indices(name)
                .filter(|&i| {
                    ctx.msg
                        .header_line(i)
                        .and_then(|l| AuthValue::parse(l.value).ok())
                        .and_then(|a| a.digest_credentials())
                        .is_some_and(|d| d.realm == Some(&realm[..]))
                })
                .collect();
            for i in lines {
                n += usize::from(ctx.edits.remove_header(&ctx.msg, i));
            }
        }
        n
    }

    /// `KSR.auth.subscriber_exists(user, domain)`: whether there is such a subscriber
    /// (for the script's 404 / 480 choice). False when the table fails.
    pub fn subscriber_exists(&self, user: &[u8], domain: &[u8]) -> bool {
        self.subscribers.exists(user, domain)
    }

    /// `KSR.subscriber.attr(name)`: an attribute of the authenticated user of `ctx`.
    pub fn subscriber_attr(&self, ctx: &MsgCtx, name: &str) -> Option<String> {
        let (u, d) = ctx.auth_user.as_ref()?;
        let s = self.subscribers.get(u, d).ok()??;
        s.attr(name).map(str::to_string)
    }

    /// `KSR.auth.is_local_domain(domain)`: whether the server serves `domain`.
    pub fn is_local_domain(&self, core: &Core, domain: &[u8]) -> bool {
        core.myself.is_local_domain(domain)
    }
}

/// Credentials fields, checked.
struct Parsed<'a> {
    username: &'a [u8],
    nonce: &'a [u8],
    uri: &'a [u8],
    response: &'a [u8],
    qop: Qop,
    nc: u32,
    nc_raw: &'a [u8],
    cnonce: &'a [u8],
}

impl<'a> Parsed<'a> {
    fn of(d: &DigestCredentials<'a>, offer: QopOffer) -> Option<Parsed<'a>> {
        let username = d.username.filter(|u| !u.is_empty())?;
        let nonce = d.nonce.filter(|n| !n.is_empty())?;
        let uri = d.uri.filter(|u| !u.is_empty())?;
        let response = d.response.filter(|r| !r.is_empty())?;
        let qop = match d.qop {
            None => Qop::None,
            Some(q) if q.eq_ignore_ascii_case(b"auth") && offer.auth => Qop::Auth,
            Some(q) if q.eq_ignore_ascii_case(b"auth-int") && offer.auth_int => Qop::AuthInt,
            Some(_) => return None,
        };
        let (nc, nc_raw, cnonce) = match qop {
            Qop::None => (0, &b""[..], &b""[..]),
            _ => {
                let raw = d.nc?;
                if raw.len() != 8 || !raw.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let nc = u32::from_str_radix(std::str::from_utf8(raw).ok()?, 16).ok()?;
                let cnonce = d.cnonce.filter(|c| !c.is_empty())?;
                if nc == 0 {
                    return None;
                }
                (nc, raw, cnonce)
            }
        };
        Some(Parsed {
            username,
            nonce,
            uri,
            response,
            qop,
            nc,
            nc_raw,
            cnonce,
        })
    }
}

/// Removes quoted-pair escapes (`\"`, `\\`) from a value taken out of a quoted string.
fn unescape_quoted_pairs(v: &[u8]) -> Cow<'_, [u8]> {
    if !v.contains(&b'\\') {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            i += 1;
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Constant-time comparison of the expected response with the received one (hex digits,
/// compared case-insensitively as RFC 7616 §3.4.1 allows only lowercase but some clients
/// send uppercase).
fn response_eq(expected: &digest::Hex, got: &[u8]) -> bool {
    let e = expected.as_bytes();
    if got.len() != e.len() {
        return false;
    }
    let mut lower = [0u8; 64];
    for (d, c) in lower.iter_mut().zip(got) {
        *d = c.to_ascii_lowercase();
    }
    bool::from(e.ct_eq(&lower[..e.len()]))
}

/// Whether the authenticated `user` of `realm` owns the request: the To URI (REGISTER, the AOR
/// it registers) or the From URI (other requests) names them.
fn owns(msg: &SipMessage, kind: Kind, user: &[u8], realm: &[u8]) -> bool {
    let na = match kind {
        Kind::Www => msg.to(),
        Kind::Proxy => msg.from(),
    };
    let Some(uri) = na.and_then(|n| n.uri().ok()) else {
        return false;
    };
    uri_names(&uri, user, realm)
}

fn uri_names(uri: &Uri<'_>, user: &[u8], realm: &[u8]) -> bool {
    let u = match uri.user_unescaped() {
        Some(u) => u,
        None => return false,
    };
    &*u == user && uri.host().raw().eq_ignore_ascii_case(realm)
}

#[cfg(test)]
mod tests;
