//! auth_db: the subscriber table behind a cache, with provisioning (add, rm, passwd, list, show,
//! CSV import) shared by the RPCs and the CLI.
//!
//! The API is synchronous for worker threads and the CLI: database futures run on a tokio
//! runtime [`Handle`] (a multi-thread runtime), each with `timeout_ms`. The RPCs run the same
//! code as tasks on that runtime.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use geosip_core::rpc::{RpcError, RpcRegistry, param_opt_str, param_str};
use geosip_store::StoreError;
use geosip_store::subscriber::{SubscriberRow, SubscriberStore, is_duplicate, limits};
use serde_json::{Value, json};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::cache::{Cache, Lookup};
use crate::config::AuthConfig;
use crate::digest::{Algorithm, Hex, ha1};

/// A subscriber as the auth module sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// User part of the AOR.
    pub username: String,
    /// Domain (lowercase), also the digest realm.
    pub domain: String,
    ha1: [Option<Hex>; 3],
    /// Whether a plaintext password is stored.
    pub has_password: bool,
    /// A disabled subscriber cannot authenticate.
    pub enabled: bool,
    /// Attributes for routing scripts (`KSR.subscriber.attr(name)`).
    pub attrs: BTreeMap<String, String>,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Last change, unix seconds.
    pub updated: i64,
}

impl Subscriber {
    fn from_row(r: &SubscriberRow) -> Subscriber {
        Subscriber::from_owned_row(r.clone())
    }

    /// [`from_row`](Self::from_row) without copying the names (the read paths).
    fn from_owned_row(r: SubscriberRow) -> Subscriber {
        let col = |a: Algorithm| {
            let s = match a {
                Algorithm::Md5 => &r.ha1_md5,
                Algorithm::Sha256 => &r.ha1_sha256,
                Algorithm::Sha512_256 => &r.ha1_sha512_256,
            };
            Hex::parse(a, s.as_bytes())
        };
        let ha1 = Algorithm::ALL.map(col);
        let attrs = parse_attrs_json(&r.attrs);
        Subscriber {
            username: r.username,
            domain: r.domain,
            ha1,
            has_password: r.password.is_some(),
            enabled: r.enabled,
            attrs,
            created: r.created,
            updated: r.updated,
        }
    }

    /// The stored HA1 for `alg`, if provisioned.
    pub fn ha1(&self, alg: Algorithm) -> Option<&Hex> {
        self.ha1[alg_index(alg)].as_ref()
    }

    /// `user@domain`.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.username, self.domain)
    }

    /// An attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    /// JSON for `subscriber.show` / `subscriber.list` (never HA1s or passwords).
    pub fn to_json(&self) -> Value {
        json!({
            "aor": self.aor(),
            "username": self.username,
            "domain": self.domain,
            "enabled": self.enabled,
            "algorithms": Algorithm::ALL.iter().filter(|a| self.ha1(**a).is_some()).map(|a| a.name()).collect::<Vec<_>>(),
            "password_stored": self.has_password,
            "attrs": self.attrs,
            "created": self.created,
            "updated": self.updated,
        })
    }
}

fn alg_index(a: Algorithm) -> usize {
    match a {
        Algorithm::Md5 => 0,
        Algorithm::Sha256 => 1,
        Algorithm::Sha512_256 => 2,
    }
}

fn parse_attrs_json(s: &str) -> BTreeMap<String, String> {
    // Most subscribers have none: no JSON parse on each cache miss for them.
    if matches!(s.trim(), "" | "{}") {
        return BTreeMap::new();
    }
    match serde_json::from_str::<BTreeMap<String, Value>>(s) {
        Ok(m) => m
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// What went wrong with a subscriber operation; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// Not `user@domain`.
    #[error("bad AOR {0}")]
    BadAor(String),
    /// Empty, too long or with control characters.
    #[error("bad password: {0}")]
    BadPassword(String),
    /// Bad attribute syntax.
    #[error("bad attribute: {0}")]
    BadAttr(String),
    /// `add` of a subscriber that exists.
    #[error("subscriber {0} already exists")]
    Exists(String),
    /// No such subscriber.
    #[error("subscriber {0} does not exist")]
    NotFound(String),
    /// Bad lines in a CSV import (line number, problem); nothing was imported.
    #[error("import refused, nothing added: {}", .0.iter().map(|(l, m)| format!("line {l}: {m}")).collect::<Vec<_>>().join("; "))]
    Import(Vec<(usize, String)>),
    /// Reading the import file.
    #[error("cannot read {0}")]
    Io(String),
    /// The database failed (or timed out).
    #[error("subscriber table: {0}")]
    Store(#[from] StoreError),
    /// A blocking call from a current-thread tokio runtime (use the async RPC path).
    #[error("blocking subscriber call on a current-thread tokio runtime")]
    WouldBlock,
}

/// Validates `[sip:]user@domain`; returns (user, lowercase domain).
pub fn parse_aor(aor: &str) -> Result<(String, String), SubscriberError> {
    let bad = |why: &str| SubscriberError::BadAor(format!("{aor:?}: {why} (expected user@domain)"));
    let s = aor.trim();
    let s = s
        .strip_prefix("sip:")
        .or_else(|| s.strip_prefix("sips:"))
        .unwrap_or(s);
    let (user, domain) = s.rsplit_once('@').ok_or_else(|| bad("no @"))?;
    if user.is_empty() {
        return Err(bad("empty user"));
    }
    if user.len() > limits::USERNAME {
        return Err(bad(&format!("user longer than {} bytes", limits::USERNAME)));
    }
    // RFC 3261 §25.1 user: unreserved / escaped / user-unreserved.
    if let Some(c) = user
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(*c)))
    {
        return Err(bad(&format!("character {c:?} not allowed in a SIP user")));
    }
    if domain.is_empty() {
        return Err(bad("empty domain"));
    }
    if domain.len() > limits::DOMAIN {
        return Err(bad(&format!("domain longer than {} bytes", limits::DOMAIN)));
    }
    let is_v6 = domain.starts_with('[')
        && domain.ends_with(']')
        && domain[1..domain.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    let is_name = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !is_v6 && !is_name {
        return Err(bad("domain is not a host name or IP address"));
    }
    Ok((user.to_string(), domain.to_ascii_lowercase()))
}

fn check_password(p: &str) -> Result<(), SubscriberError> {
    if p.is_empty() {
        return Err(SubscriberError::BadPassword("empty".into()));
    }
    if p.len() > limits::PASSWORD {
        return Err(SubscriberError::BadPassword(format!(
            "longer than {} bytes",
            limits::PASSWORD
        )));
    }
    if p.chars().any(char::is_control) {
        return Err(SubscriberError::BadPassword(
            "control characters are not allowed".into(),
        ));
    }
    Ok(())
}

/// Parses `name=value;name=value` (names: letters, digits, `_ . -`, at most 64; values at
/// most 1024 bytes, no `;`).
pub fn parse_attrs(s: &str) -> Result<BTreeMap<String, String>, SubscriberError> {
    let mut m = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| SubscriberError::BadAttr(format!("{part:?} is not name=value")))?;
        let k = k.trim();
        if k.is_empty()
            || k.len() > 64
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(SubscriberError::BadAttr(format!(
                "{k:?}: names are 1-64 letters, digits, _ . -"
            )));
        }
        if v.len() > 1024 || v.chars().any(char::is_control) {
            return Err(SubscriberError::BadAttr(format!(
                "{k}: value too long or with control characters"
            )));
        }
        m.insert(k.to_string(), v.trim().to_string());
    }
    Ok(m)
}

fn attrs_json(attrs: &BTreeMap<String, String>) -> Result<String, SubscriberError> {
    let s = serde_json::to_string(attrs).map_err(|e| SubscriberError::BadAttr(e.to_string()))?;
    if s.len() > limits::ATTRS {
        return Err(SubscriberError::BadAttr(format!(
            "attributes take more than {} bytes",
            limits::ATTRS
        )));
    }
    Ok(s)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Counters of the subscriber layer.
#[derive(Default, Debug)]
pub struct SubscriberStats {
    /// Lookups answered by the cache (subscriber or known-unknown).
    pub cache_hits: geosip_core::metrics::Counter,
    /// Lookups that read the table.
    pub cache_misses: geosip_core::metrics::Counter,
    /// Table calls that failed or timed out.
    pub store_errors: geosip_core::metrics::Counter,
}

/// The subscriber table with its cache.
pub struct Subscribers {
    store: SubscriberStore,
    handle: Handle,
    timeout: Duration,
    store_plaintext: bool,
    cache: Cache,
    stats: SubscriberStats,
}

impl Subscribers {
    /// Opens the table of `cfg` (`db_url`, `read_db_url`), creating the schema on the master.
    /// `data_dir` resolves `sqlite:` URLs; `handle` is the (multi-thread) runtime database
    /// calls run on. A master that cannot be reached is an error unless a replica is
    /// configured (then reads work and writes fail until it is back).
    pub fn open(
        cfg: &AuthConfig,
        data_dir: &Path,
        handle: Handle,
    ) -> Result<Arc<Subscribers>, SubscriberError> {
        let s = Self::open_lazy(cfg, data_dir, handle)?;
        let init = s.block_on(s.call(s.store.init()));
        match init {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) if s.store.has_replica() => {
                tracing::error!(target: "geosip_auth", store = %s.store.describe(), error = %e, "cannot create the subscriber schema on the master; reading the replica");
            }
            Ok(Err(e)) | Err(e) => return Err(e),
        }
        Ok(s)
    }

    /// Builds the pools and cache without touching the database (the schema is not created).
    pub fn open_lazy(
        cfg: &AuthConfig,
        data_dir: &Path,
        handle: Handle,
    ) -> Result<Arc<Subscribers>, SubscriberError> {
        let replica = Some(cfg.read_db_url.as_str()).filter(|u| !u.trim().is_empty());
        // sqlx pools spawn their maintenance tasks on the runtime they are created in.
        let store = {
            let _rt = handle.enter();
            SubscriberStore::open(&cfg.store_config(data_dir), replica)?
        };
        Ok(Arc::new(Subscribers {
            store,
            handle,
            timeout: cfg.timeout(),
            store_plaintext: cfg.store_plaintext,
            cache: Cache::new(
                cfg.cache_size,
                Duration::from_secs(cfg.cache_ttl),
                Duration::from_secs(cfg.cache_negative_ttl),
            ),
            stats: SubscriberStats::default(),
        }))
    }

    /// Creates the schema on the master (what [`open`](Self::open) does), async.
    pub async fn init(&self) -> Result<(), SubscriberError> {
        self.call(self.store.init()).await
    }

    /// Counters.
    pub fn stats(&self) -> &SubscriberStats {
        &self.stats
    }

    /// Where the table lives (redacted URLs).
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Cached entries (subscribers, known-unknown users).
    pub fn cache_len(&self) -> (usize, usize) {
        self.cache.len()
    }

    /// Forgets every cached entry (e.g. after provisioning straight into the database).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// The runtime handle database calls run on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    fn block_on<F: Future>(&self, fut: F) -> Result<F::Output, SubscriberError> {
        match Handle::try_current() {
            Err(_) => Ok(self.handle.block_on(fut)),
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Ok(tokio::task::block_in_place(|| self.handle.block_on(fut)))
            }
            Ok(_) => Err(SubscriberError::WouldBlock),
        }
    }

    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, SubscriberError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.stats.store_errors.inc();
                Err(e.into())
            }
            Err(_) => {
                self.stats.store_errors.inc();
                Err(StoreError::Timeout(self.timeout.as_millis() as u64).into())
            }
        }
    }

    /// The subscriber `user` of `domain` for authentication: from the cache, else from the
    /// replica (or master). `Ok(None)` = no such user. Names that cannot be in the table (too
    /// long, not UTF-8) are `Ok(None)` without a database call. `domain` must be lowercase.
    pub fn get(
        &self,
        user: &[u8],
        domain: &[u8],
    ) -> Result<Option<Arc<Subscriber>>, SubscriberError> {
        if let Some(s) = self.cached(user, domain) {
            return Ok(s);
        }
        self.read(user, domain)
    }

    /// The cached answer for `user@domain`, if any (`Some(None)`: known to be unknown).
    pub fn cached(&self, user: &[u8], domain: &[u8]) -> Option<Option<Arc<Subscriber>>> {
        match self.cache.get(user, domain, Instant::now()) {
            Lookup::Hit(s) => {
                self.stats.cache_hits.inc();
                Some(s)
            }
            _ => None,
        }
    }

    /// Whether `user@domain` is cached (not counted as a lookup).
    pub fn is_cached(&self, user: &[u8], domain: &[u8]) -> bool {
        matches!(self.cache.get(user, domain, Instant::now()), Lookup::Hit(_))
    }

    /// Names that can be in the table (UTF-8, within the column sizes).
    fn storable<'a>(user: &'a [u8], domain: &'a [u8]) -> Option<(&'a str, &'a str)> {
        let (Ok(u), Ok(d)) = (std::str::from_utf8(user), std::str::from_utf8(domain)) else {
            return None;
        };
        let ok = !u.is_empty()
            && u.len() <= limits::USERNAME
            && !d.is_empty()
            && d.len() <= limits::DOMAIN;
        ok.then_some((u, d))
    }

    /// Whether the table batches reads (every SQL table read on the calling thread: SQLite
    /// file, PostgreSQL, MySQL).
    pub fn batches_reads(&self) -> bool {
        self.store.batches_reads()
    }

    /// Whether the table is read in-process (an SQLite file): a batch read costs no wait.
    pub fn reads_locally(&self) -> bool {
        self.store.reads_locally()
    }

    /// Whether a miss for `user@domain` can wait for a batched read: the reader batches
    /// and the names can be in the table.
    pub fn batches(&self, user: &[u8], domain: &[u8]) -> bool {
        self.store.batches_reads() && Self::storable(user, domain).is_some()
    }

    /// Reads the subscribers of `keys` (user, domain; one domain) in one query and caches
    /// each answer, unknown users as unknown. False when the query failed.
    pub(crate) fn read_many(&self, keys: &[crate::batch::Key]) -> bool {
        let Some((_, domain)) = keys.first() else {
            return true;
        };
        let Ok(d) = std::str::from_utf8(domain) else {
            return false;
        };
        let users: Vec<&str> = keys
            .iter()
            .filter(|(_, kd)| kd == domain)
            .filter_map(|(u, kd)| Self::storable(u, kd).map(|(u, _)| u))
            .collect();
        self.stats.cache_misses.add(users.len() as u64);
        let gen_at_read = self.cache.generation();
        let Some(rows) = self.store.get_many_sync(d, &users) else {
            self.stats.store_errors.inc();
            return false;
        };
        let now = Instant::now();
        let mut found = vec![false; users.len()];
        for r in rows {
            // Users are unique per batch key; a row answers the first user it names.
            let Some(i) = users.iter().position(|u| *u == r.username) else {
                continue;
            };
            if std::mem::replace(&mut found[i], true) {
                continue;
            }
            let sub = Arc::new(Subscriber::from_owned_row(r));
            self.cache
                .fill(users[i].as_bytes(), domain, Some(sub), gen_at_read, now);
        }
        for (u, _) in users.iter().zip(&found).filter(|(_, f)| !**f) {
            self.cache
                .fill(u.as_bytes(), domain, None, gen_at_read, now);
        }
        true
    }

    /// Periodic upkeep of the table readers: an idle in-process SQLite reader lets go of its
    /// snapshot after at most 100 ms, so it does not hold back WAL checkpoints.
    pub fn tick(&self) {
        self.store.tick();
    }

    /// Reads `user@domain` from the table (after [`cached`](Self::cached) missed) and caches
    /// the answer.
    pub(crate) fn read(
        &self,
        user: &[u8],
        domain: &[u8],
    ) -> Result<Option<Arc<Subscriber>>, SubscriberError> {
        self.stats.cache_misses.inc();
        let Some((u, d)) = Self::storable(user, domain) else {
            return Ok(None);
        };
        let gen_at_read = self.cache.generation();
        // The embedded table is read on this thread; other backends through the runtime.
        let row = match self.store.get_sync(u, d) {
            Some(row) => row,
            None => self.block_on(self.call(self.store.get(u, d)))??,
        };
        let sub = row.map(|r| Arc::new(Subscriber::from_owned_row(r)));
        self.cache
            .fill(user, domain, sub.clone(), gen_at_read, Instant::now());
        Ok(sub)
    }

    /// Whether `user@domain` is a subscriber (enabled or not); false when the table fails.
    pub fn exists(&self, user: &[u8], domain: &[u8]) -> bool {
        let d = domain.to_ascii_lowercase();
        matches!(self.get(user, &d), Ok(Some(_)))
    }

    fn row_for(
        &self,
        user: &str,
        domain: &str,
        password: &str,
        attrs: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<SubscriberRow, SubscriberError> {
        check_password(password)?;
        let h = |a| {
            ha1(a, user.as_bytes(), domain.as_bytes(), password.as_bytes())
                .as_str()
                .to_string()
        };
        Ok(SubscriberRow {
            username: user.to_string(),
            domain: domain.to_string(),
            ha1_md5: h(Algorithm::Md5),
            ha1_sha256: h(Algorithm::Sha256),
            ha1_sha512_256: h(Algorithm::Sha512_256),
            password: self.store_plaintext.then(|| password.to_string()),
            enabled: true,
            attrs: attrs_json(attrs)?,
            created: now,
            updated: now,
        })
    }

    /// Adds `user@domain` with `password` (HA1s for every algorithm) and attributes.
    pub async fn add_async(
        &self,
        aor: &str,
        password: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Subscriber, SubscriberError> {
        let (user, domain) = parse_aor(aor)?;
        let row = self.row_for(&user, &domain, password, attrs, unix_now())?;
        match self.call(self.store.insert(&row)).await {
            Ok(()) => {}
            Err(SubscriberError::Store(e)) if is_duplicate(&e) => {
                return Err(SubscriberError::Exists(format!("{user}@{domain}")));
            }
            Err(e) => return Err(e),
        }
        let sub = Subscriber::from_row(&row);
        // Write-through: the next REGISTER authenticates at once, even before a replica has
        // the row, and a cached "unknown user" is replaced.
        self.cache.written(
            user.as_bytes(),
            domain.as_bytes(),
            Some(Arc::new(sub.clone())),
            Instant::now(),
        );
        Ok(sub)
    }

    /// Removes `user@domain`.
    pub async fn rm_async(&self, aor: &str) -> Result<(), SubscriberError> {
        let (user, domain) = parse_aor(aor)?;
        let found = self.call(self.store.delete(&user, &domain)).await?;
        self.cache
            .written(user.as_bytes(), domain.as_bytes(), None, Instant::now());
        if !found {
            return Err(SubscriberError::NotFound(format!("{user}@{domain}")));
        }
        Ok(())
    }

    /// Reads `user@domain` from the master, lets `change` modify the row, writes it back and
    /// refreshes the cache (so this node sees the change at once). The row as written.
    async fn modify(
        &self,
        aor: &str,
        change: impl FnOnce(&mut SubscriberRow) -> Result<(), SubscriberError>,
    ) -> Result<SubscriberRow, SubscriberError> {
        let (user, domain) = parse_aor(aor)?;
        let not_found = || SubscriberError::NotFound(format!("{user}@{domain}"));
        let Some(mut row) = self.call(self.store.get_master(&user, &domain)).await? else {
            return Err(not_found());
        };
        change(&mut row)?;
        row.updated = unix_now();
        if !self.call(self.store.update(&row)).await? {
            return Err(not_found());
        }
        self.cache.written(
            user.as_bytes(),
            domain.as_bytes(),
            Some(Arc::new(Subscriber::from_row(&row))),
            Instant::now(),
        );
        Ok(row)
    }

    /// Sets a new password (every HA1; the plaintext only with `store_plaintext`).
    pub async fn passwd_async(&self, aor: &str, password: &str) -> Result<(), SubscriberError> {
        check_password(password)?;
        self.modify(aor, |row| {
            let fresh = self.row_for(&row.username, &row.domain, password, &BTreeMap::new(), 0)?;
            row.ha1_md5 = fresh.ha1_md5;
            row.ha1_sha256 = fresh.ha1_sha256;
            row.ha1_sha512_256 = fresh.ha1_sha512_256;
            row.password = fresh.password;
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Enables or disables `user@domain`.
    pub async fn set_enabled_async(&self, aor: &str, enabled: bool) -> Result<(), SubscriberError> {
        self.modify(aor, |row| {
            row.enabled = enabled;
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Changes attributes of `user@domain`: each `name=value` of `changes` sets one, `name=`
    /// (empty value) removes it; the others are kept. Returns the attributes now stored.
    pub async fn set_attrs_async(
        &self,
        aor: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, SubscriberError> {
        let row = self
            .modify(aor, |row| {
                let mut attrs = parse_attrs_json(&row.attrs);
                for (k, v) in changes {
                    if v.is_empty() {
                        attrs.remove(k);
                    } else {
                        attrs.insert(k.clone(), v.clone());
                    }
                }
                row.attrs = attrs_json(&attrs)?;
                Ok(())
            })
            .await?;
        Ok(parse_attrs_json(&row.attrs))
    }

    /// One subscriber, read from the master (what an operator just changed).
    pub async fn show_async(&self, aor: &str) -> Result<Subscriber, SubscriberError> {
        let (user, domain) = parse_aor(aor)?;
        match self.call(self.store.get_master(&user, &domain)).await? {
            Some(r) => Ok(Subscriber::from_owned_row(r)),
            None => Err(SubscriberError::NotFound(format!("{user}@{domain}"))),
        }
    }

    /// Up to `limit` subscribers (of `domain` if given), ordered by domain and user, after
    /// `after` = `user@domain` of the last one seen (paging). Read from the master.
    pub async fn list_async(
        &self,
        domain: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<Subscriber>, SubscriberError> {
        let domain = domain
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        let after = after.map(parse_aor).transpose()?;
        let rows = self
            .call(self.store.writer().list(
                domain.as_deref(),
                after.as_ref().map(|(u, d)| (d.as_str(), u.as_str())),
                limit,
            ))
            .await?;
        Ok(rows.into_iter().map(Subscriber::from_owned_row).collect())
    }

    /// Bulk import: one subscriber per line, `user@domain,password[,name=value;name=value]`
    /// (fields may be double-quoted, `""` inside quotes is a quote; empty lines and lines
    /// starting with `#` are skipped). Every line is checked first and all errors are
    /// reported with their line numbers; then all rows are added in one transaction, or none.
    /// Returns how many were added.
    pub async fn import_csv_async(&self, reader: impl BufRead) -> Result<usize, SubscriberError> {
        let now = unix_now();
        let mut rows = Vec::new();
        let mut lines_of = Vec::new();
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| SubscriberError::Io(format!("line {n}: {e}")))?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let r = csv_fields(t).map_err(|e| e.to_string()).and_then(|f| {
                if f.len() < 2 || f.len() > 3 {
                    return Err(format!(
                        "{} fields, expected user@domain,password[,attrs]",
                        f.len()
                    ));
                }
                let (user, domain) = parse_aor(&f[0]).map_err(|e| e.to_string())?;
                let attrs =
                    parse_attrs(f.get(2).map_or("", String::as_str)).map_err(|e| e.to_string())?;
                if !seen.insert((user.clone(), domain.clone())) {
                    return Err(format!("{user}@{domain} appears twice"));
                }
                self.row_for(&user, &domain, &f[1], &attrs, now)
                    .map_err(|e| e.to_string())
            });
            match r {
                Ok(row) => {
                    rows.push(row);
                    lines_of.push(n);
                }
                Err(e) if errors.len() < 50 => errors.push((n, e)),
                Err(_) => {}
            }
        }
        if !errors.is_empty() {
            return Err(SubscriberError::Import(errors));
        }
        let r = match tokio::time::timeout(self.timeout * 10, self.store.insert_all(&rows)).await {
            Ok(r) => r,
            Err(_) => Err((0, StoreError::Timeout(self.timeout.as_millis() as u64 * 10))),
        };
        if let Err((i, e)) = r {
            let line = lines_of.get(i).copied().unwrap_or(0);
            let msg = if is_duplicate(&e) {
                format!(
                    "{}@{} already exists",
                    rows.get(i).map_or("", |r| &r.username),
                    rows.get(i).map_or("", |r| &r.domain)
                )
            } else {
                self.stats.store_errors.inc();
                e.to_string()
            };
            return Err(SubscriberError::Import(vec![(line, msg)]));
        }
        for r in &rows {
            self.cache
                .invalidate(r.username.as_bytes(), r.domain.as_bytes());
        }
        Ok(rows.len())
    }

    /// [`add_async`](Self::add_async), blocking.
    pub fn add(
        &self,
        aor: &str,
        password: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Subscriber, SubscriberError> {
        self.block_on(self.add_async(aor, password, attrs))?
    }

    /// [`rm_async`](Self::rm_async), blocking.
    pub fn rm(&self, aor: &str) -> Result<(), SubscriberError> {
        self.block_on(self.rm_async(aor))?
    }

    /// [`passwd_async`](Self::passwd_async), blocking.
    pub fn passwd(&self, aor: &str, password: &str) -> Result<(), SubscriberError> {
        self.block_on(self.passwd_async(aor, password))?
    }

    /// [`set_enabled_async`](Self::set_enabled_async), blocking.
    pub fn set_enabled(&self, aor: &str, enabled: bool) -> Result<(), SubscriberError> {
        self.block_on(self.set_enabled_async(aor, enabled))?
    }

    /// [`set_attrs_async`](Self::set_attrs_async), blocking.
    pub fn set_attrs(
        &self,
        aor: &str,
        changes: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, SubscriberError> {
        self.block_on(self.set_attrs_async(aor, changes))?
    }

    /// [`show_async`](Self::show_async), blocking.
    pub fn show(&self, aor: &str) -> Result<Subscriber, SubscriberError> {
        self.block_on(self.show_async(aor))?
    }

    /// [`list_async`](Self::list_async), blocking.
    pub fn list(
        &self,
        domain: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<Subscriber>, SubscriberError> {
        self.block_on(self.list_async(domain, limit, after))?
    }

    /// [`import_csv_async`](Self::import_csv_async), blocking.
    pub fn import_csv(&self, reader: impl BufRead) -> Result<usize, SubscriberError> {
        self.block_on(self.import_csv_async(reader))?
    }

    /// Registers `subscriber.add`, `.rm`, `.passwd`, `.enable`, `.disable`, `.attr`, `.list`,
    /// `.show` and `.import`. They run as tasks on this table's runtime.
    pub fn register_rpcs(self: &Arc<Self>, rpc: &RpcRegistry) {
        fn reg<F, Fut>(
            rpc: &RpcRegistry,
            s: &Arc<Subscribers>,
            name: &str,
            usage: &str,
            help: &str,
            f: F,
        ) where
            F: Fn(Arc<Subscribers>, Vec<Value>) -> Fut + Send + Sync + Clone + 'static,
            Fut: Future<Output = Result<Value, RpcError>> + Send + 'static,
        {
            let w: Weak<Subscribers> = Arc::downgrade(s);
            rpc.register_async(name, usage, help, move |params| {
                let w = w.clone();
                let f = f.clone();
                Box::pin(async move {
                    let s = w
                        .upgrade()
                        .ok_or_else(|| RpcError::failed("the subscriber table is closed"))?;
                    let h = s.handle.clone();
                    match h.spawn(f(s, params)).await {
                        Ok(r) => r,
                        Err(e) => Err(RpcError::failed(format!("subscriber task failed: {e}"))),
                    }
                })
            });
        }
        fn err(e: SubscriberError) -> RpcError {
            match e {
                SubscriberError::Store(_)
                | SubscriberError::WouldBlock
                | SubscriberError::Io(_) => RpcError::failed(e.to_string()),
                _ => RpcError::invalid_params(e.to_string()),
            }
        }
        reg(
            rpc,
            self,
            "subscriber.add",
            "USER@DOMAIN PASSWORD [NAME=VALUE;...]",
            "Add a subscriber (HA1 for every digest algorithm); it can authenticate at once.",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                let pw = param_str(&p, 1, "PASSWORD")?;
                let attrs = parse_attrs(param_opt_str(&p, 2).unwrap_or("")).map_err(err)?;
                let sub = s.add_async(aor, pw, &attrs).await.map_err(err)?;
                Ok(json!({ "added": sub.aor() }))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.rm",
            "USER@DOMAIN",
            "Remove a subscriber.",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                s.rm_async(aor).await.map_err(err)?;
                Ok(json!({ "removed": aor }))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.passwd",
            "USER@DOMAIN PASSWORD",
            "Change a subscriber's password.",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                let pw = param_str(&p, 1, "PASSWORD")?;
                s.passwd_async(aor, pw).await.map_err(err)?;
                Ok(json!({ "changed": aor }))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.enable",
            "USER@DOMAIN",
            "Allow a disabled subscriber to authenticate again.",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                s.set_enabled_async(aor, true).await.map_err(err)?;
                Ok(json!({ "enabled": aor }))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.disable",
            "USER@DOMAIN",
            "Stop a subscriber from authenticating (kept in the table).",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                s.set_enabled_async(aor, false).await.map_err(err)?;
                Ok(json!({ "disabled": aor }))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.list",
            "[DOMAIN] [LIMIT] [AFTER_USER@DOMAIN]",
            "List subscribers (default limit 100, at most 10000), ordered by domain and user.",
            |s, p| async move {
                let domain = param_opt_str(&p, 0).filter(|d| !d.is_empty() && *d != "*");
                let limit = match p.get(1) {
                    None => 100,
                    Some(Value::Number(n)) => n.as_u64().unwrap_or(100) as usize,
                    Some(Value::String(v)) => v.parse().map_err(|_| {
                        RpcError::invalid_params(format!("LIMIT {v:?} is not a number"))
                    })?,
                    Some(other) => {
                        return Err(RpcError::invalid_params(format!(
                            "LIMIT must be a number, got {other}"
                        )));
                    }
                };
                let after = param_opt_str(&p, 2);
                let subs = s
                    .list_async(domain, limit.clamp(1, 10_000), after)
                    .await
                    .map_err(err)?;
                Ok(Value::Array(subs.iter().map(Subscriber::to_json).collect()))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.attr",
            "USER@DOMAIN NAME=VALUE[;NAME=VALUE...]",
            "Set attributes of a subscriber (NAME= removes one); the others are kept.",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                let changes = parse_attrs(param_str(&p, 1, "NAME=VALUE")?).map_err(err)?;
                if changes.is_empty() {
                    return Err(RpcError::invalid_params(
                        "give at least one NAME=VALUE (NAME= removes it)",
                    ));
                }
                let attrs = s.set_attrs_async(aor, &changes).await.map_err(err)?;
                Ok(json!({ "subscriber": aor, "attrs": attrs }))
            },
        );
        reg(
            rpc,
            self,
            "subscriber.show",
            "USER@DOMAIN",
            "Show a subscriber (algorithms provisioned, enabled, attributes; never the password).",
            |s, p| async move {
                let aor = param_str(&p, 0, "USER@DOMAIN")?;
                Ok(s.show_async(aor).await.map_err(err)?.to_json())
            },
        );
        reg(
            rpc,
            self,
            "subscriber.import",
            "PATH",
            "Add subscribers from a CSV file on the server: user@domain,password[,name=value;...] per line; all or nothing.",
            |s, p| async move {
                let path = param_str(&p, 0, "PATH")?.to_string();
                let f = std::fs::File::open(&path)
                    .map_err(|e| RpcError::invalid_params(format!("cannot open {path}: {e}")))?;
                let n = s
                    .import_csv_async(std::io::BufReader::new(f))
                    .await
                    .map_err(err)?;
                Ok(json!({ "added": n }))
            },
        );
    }
}

/// Splits one CSV line (RFC 4180 subset: commas, optional double quotes, `""` escapes).
fn csv_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(if was_quoted {
                    std::mem::take(&mut cur)
                } else {
                    std::mem::take(&mut cur).trim().to_string()
                });
                was_quoted = false;
            }
            (false, '"') => return Err("stray double quote"),
            (false, c) => {
                if was_quoted && !c.is_whitespace() {
                    return Err("text after a closing quote");
                }
                if !was_quoted {
                    cur.push(c);
                }
            }
        }
    }
    if quoted {
        return Err("unterminated double quote");
    }
    out.push(if was_quoted {
        cur
    } else {
        cur.trim().to_string()
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aors_are_validated_and_domains_lowercased() {
        assert_eq!(
            parse_aor("alice@Example.COM").unwrap(),
            ("alice".into(), "example.com".into())
        );
        assert_eq!(
            parse_aor("sip:+4930123@10.0.0.1").unwrap(),
            ("+4930123".into(), "10.0.0.1".into())
        );
        assert_eq!(parse_aor("bob@[2001:db8::1]").unwrap().1, "[2001:db8::1]");
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "al ice@example.com",
            "a\"b@x.com",
            "alice@exa mple.com",
            "alice@-x.com",
            "alice@x..com",
        ] {
            let e = parse_aor(bad).unwrap_err().to_string();
            assert!(e.contains("bad AOR"), "{bad}: {e}");
        }
        assert!(
            parse_aor(&format!("{}@x.com", "u".repeat(65)))
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
        assert!(check_password("").is_err());
        assert!(check_password("a\nb").is_err());
        assert!(check_password("correct horse, battery \"staple\"").is_ok());
    }

    #[test]
    fn attributes_parse_as_name_value_pairs() {
        let a = parse_attrs("group=sales; lang = de ;;").unwrap();
        assert_eq!(a.get("group").map(String::as_str), Some("sales"));
        assert_eq!(a.get("lang").map(String::as_str), Some("de"));
        assert!(parse_attrs("novalue").is_err());
        assert!(parse_attrs("bad name=x").is_err());
        assert_eq!(parse_attrs_json(&attrs_json(&a).unwrap()), a);
        assert!(parse_attrs_json("not json").is_empty());
    }

    #[test]
    fn csv_lines_split_on_commas_with_quotes() {
        assert_eq!(csv_fields("a@b.c,pw").unwrap(), vec!["a@b.c", "pw"]);
        assert_eq!(
            csv_fields(r#"a@b.c, "p,w ""x""" ,g=1;h=2"#).unwrap(),
            vec!["a@b.c", r#"p,w "x""#, "g=1;h=2"]
        );
        assert!(csv_fields(r#"a@b.c,"pw"#).is_err());
        assert!(csv_fields(r#"a@b.c,p"w"#).is_err());
        assert!(csv_fields(r#"a@b.c,"pw"x"#).is_err());
    }
}
