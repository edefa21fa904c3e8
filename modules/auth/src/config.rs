//! `[auth]` configuration.

use std::path::Path;
use std::time::Duration;

use geosip_store::StoreConfig;
use serde::Deserialize;

use crate::digest::Algorithm;

/// The `[auth]` section. Every key is optional; defaults are listed per field.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Digest authentication on (the script's `KSR.auth.enabled()`). Default false.
    pub enabled: bool,
    /// Seconds a nonce stays valid; an older one gets a new challenge with `stale=true`.
    /// Default 300.
    pub nonce_expires: u64,
    /// Algorithms offered, one challenge header each, in this order (RFC 7616 §3.7: clients
    /// take the first they support): `MD5`, `SHA-256`, `SHA-512-256`. Default
    /// `["SHA-256", "MD5"]`.
    pub algorithms: Vec<String>,
    /// Secret of the nonce HMAC. Every node of a cluster must have the same one, or a nonce
    /// issued by one node is refused by the others. Empty = a random secret per process
    /// start (single node; a restart makes outstanding nonces stale). Default empty.
    pub secret: String,
    /// The authenticated user must be the one in the To URI (REGISTER) or From URI (other
    /// requests), user and domain; otherwise 403. Default true.
    pub owner_check: bool,
    /// qop offered: `auth`, `auth-int`, `auth,auth-int`, or empty (none, RFC 2069 clients).
    /// Default `auth`.
    pub qop: String,
    /// How many nonce counts below the highest seen may still be used once (requests that
    /// overtook each other), 0..=64. 0 = any count not above the highest seen is a replay.
    /// Default 0.
    pub nc_window: u32,
    /// Realm when the script passes an empty one; empty = the To domain (REGISTER) or the From
    /// domain (other requests). Default empty.
    pub realm: String,
    /// Seconds a nonce may be dated in the future (clock differences between nodes).
    /// Default 30.
    pub nonce_skew: u64,
    /// Most nonces remembered for replay protection (about 32 bytes each). Default 500000.
    pub nonce_table_size: usize,
    /// Subscriber table, master (all writes): `sqlite:` (file `geosip.db` in the data dir),
    /// `sqlite://PATH`, `postgres://...`, `mysql://...`, `mariadb://...`. Default `sqlite:`.
    pub db_url: String,
    /// Read-only replica for every read of the authentication path (e.g. a local PostgreSQL
    /// or MariaDB replica, or an SQLite copy); empty = read the master. Default empty.
    pub read_db_url: String,
    /// Keep the plaintext password in the `password` column as well as the HA1s.
    /// Default false.
    pub store_plaintext: bool,
    /// SQL pool size (each of master and replica). Default 4.
    pub pool_size: u32,
    /// Timeout of every subscriber-table call, ms. Default 2000.
    pub timeout_ms: u64,
    /// Seconds a subscriber read from the table is cached. Changes made through this node
    /// (RPC, [`Subscribers`](crate::Subscribers) API) update the cache at once; changes made
    /// elsewhere (another node, the CLI on the database) show after at most this. Default 60.
    pub cache_ttl: u64,
    /// Seconds an unknown user is cached as unknown. Default 10.
    pub cache_negative_ttl: u64,
    /// Most subscribers cached (unknown users: a quarter of it). Default 100000.
    pub cache_size: usize,
    /// A request whose subscriber is not cached is set aside while one thread reads the
    /// subscribers of all such requests (one query on PostgreSQL / MySQL, one lookup each on
    /// the embedded SQLite file), then runs again (see the module README, "Batched reads").
    /// The SIP workers never wait for the database. false = each worker reads its subscriber
    /// itself, as Kamailio's `auth_db`. Default true.
    pub batch_reads: bool,
    /// How long the first request of a batch waits for others, ms (0..=100); it only waits
    /// when at least two more are expected in that time at the recent rate. Default 30.
    pub batch_window_ms: u64,
    /// Most requests set aside at once; beyond that a request reads its subscriber itself.
    /// Default 10000.
    pub batch_max_parked: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            nonce_expires: 300,
            algorithms: vec!["SHA-256".into(), "MD5".into()],
            secret: String::new(),
            owner_check: true,
            qop: "auth".into(),
            nc_window: 0,
            realm: String::new(),
            nonce_skew: 30,
            nonce_table_size: 500_000,
            db_url: "sqlite:".into(),
            read_db_url: String::new(),
            store_plaintext: false,
            pool_size: 4,
            timeout_ms: 2000,
            cache_ttl: 60,
            cache_negative_ttl: 10,
            cache_size: 100_000,
            batch_reads: true,
            batch_window_ms: 30,
            batch_max_parked: 10_000,
        }
    }
}

/// The qop values offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QopOffer {
    /// `auth`.
    pub auth: bool,
    /// `auth-int`.
    pub auth_int: bool,
}

impl QopOffer {
    /// The quoted list for the challenge (`auth`, `auth,auth-int`), empty for none.
    pub fn value(&self) -> &'static str {
        match (self.auth, self.auth_int) {
            (true, true) => "auth,auth-int",
            (true, false) => "auth",
            (false, true) => "auth-int",
            (false, false) => "",
        }
    }
}

impl AuthConfig {
    /// The algorithms, parsed; says which name is wrong.
    pub fn algorithms(&self) -> Result<Vec<Algorithm>, String> {
        let mut out = Vec::new();
        for a in &self.algorithms {
            let alg = Algorithm::parse(a.trim().as_bytes()).ok_or_else(|| {
                format!("auth.algorithms: unknown algorithm {a:?} (MD5, SHA-256, SHA-512-256)")
            })?;
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
        if out.is_empty() {
            return Err("auth.algorithms must name at least one algorithm".into());
        }
        Ok(out)
    }

    /// The qop offer, parsed.
    pub fn qop_offer(&self) -> Result<QopOffer, String> {
        let mut q = QopOffer::default();
        for t in self.qop.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match t {
                "auth" => q.auth = true,
                "auth-int" => q.auth_int = true,
                other => return Err(format!("auth.qop: {other:?} is not auth or auth-int")),
            }
        }
        Ok(q)
    }

    /// Checks every value; says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.algorithms()?;
        self.qop_offer()?;
        if self.nonce_expires == 0 {
            return Err("auth.nonce_expires must be at least 1 second".into());
        }
        if self.nc_window > 64 {
            return Err(format!(
                "auth.nc_window must be 0..=64, got {}",
                self.nc_window
            ));
        }
        if !self.secret.is_empty() && self.secret.len() < 16 {
            return Err(
                "auth.secret must be at least 16 characters (or empty for a random one)".into(),
            );
        }
        if self.batch_window_ms > 100 {
            return Err(format!(
                "auth.batch_window_ms must be 0..=100, got {}",
                self.batch_window_ms
            ));
        }
        if self.db_url.trim().is_empty() {
            return Err("auth.db_url must not be empty (default sqlite:)".into());
        }
        Ok(())
    }

    /// Store settings of the master; `data_dir` resolves `sqlite:` URLs.
    pub fn store_config(&self, data_dir: &Path) -> StoreConfig {
        StoreConfig {
            url: self.db_url.clone(),
            data_dir: data_dir.to_path_buf(),
            pool_size: self.pool_size.max(1),
            timeout: self.timeout(),
            ..StoreConfig::default()
        }
    }

    /// `timeout_ms` as a duration (at least 1 ms).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_from_an_empty_section_and_bad_values_are_named() {
        let c: AuthConfig = toml::from_str("").unwrap();
        assert_eq!(c, AuthConfig::default());
        assert_eq!(
            c.algorithms().unwrap(),
            vec![Algorithm::Sha256, Algorithm::Md5]
        );
        assert_eq!(c.qop_offer().unwrap().value(), "auth");
        c.validate().unwrap();
        let c: AuthConfig =
            toml::from_str("enabled = true\nnonce_expires = 60\nalgorithms = [\"MD5\", \"sha-512-256\"]\nqop = \"\"").unwrap();
        assert_eq!(
            c.algorithms().unwrap(),
            vec![Algorithm::Md5, Algorithm::Sha512_256]
        );
        assert_eq!(c.qop_offer().unwrap(), QopOffer::default());
        assert!(
            toml::from_str::<AuthConfig>("nonce_expire = 5").is_err(),
            "unknown keys are refused"
        );
        let bad = AuthConfig {
            algorithms: vec!["SHA-1".into()],
            ..AuthConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("SHA-1"));
        let bad = AuthConfig {
            secret: "short".into(),
            ..AuthConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("16"));
        let bad = AuthConfig {
            qop: "auth,conf".into(),
            ..AuthConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("conf"));
    }
}
