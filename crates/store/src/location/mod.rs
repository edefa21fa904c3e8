//! The location table (Kamailio `location`): the data model of a binding and the object-safe
//! [`LocationBackend`] trait that every storage implements (SQL, Redis, and later a partitioning
//! layer that routes each AOR to a group of backends).

pub mod codec;
pub mod redis;
pub mod schema;
pub mod sql;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{StoreConfig, StoreError, StoreResult, StoreUrl};

/// A boxed, sendable future: what the object-safe backend traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Longest values the schemas accept. `geosip-usrloc` refuses longer values before they reach a
/// table, so memory and every backend agree.
pub mod limits {
    /// AOR (`sip:user@domain`).
    pub const AOR: usize = 255;
    /// Contact URI.
    pub const CONTACT: usize = 1024;
    /// Call-ID.
    pub const CALL_ID: usize = 255;
    /// User-Agent.
    pub const USER_AGENT: usize = 255;
    /// `+sip.instance`.
    pub const INSTANCE: usize = 255;
    /// Path (all Path header values, as registered).
    pub const PATH: usize = 4096;
}

/// Record unique id (Kamailio `ruid`): 128 bits = server id (32) | unix ms at process start (48) |
/// counter (48). Unique across nodes as long as server ids differ. Shown as 32 hex digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ruid(pub u128);

impl Ruid {
    /// "No ruid yet": usrloc assigns one when the binding is inserted.
    pub const NONE: Ruid = Ruid(0);

    /// A fresh ruid for a binding created on `server_id`.
    pub fn generate(server_id: u32) -> Ruid {
        static START_MS: AtomicU64 = AtomicU64::new(0);
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut start = START_MS.load(Ordering::Relaxed);
        if start == 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_millis() as u64)
                .max(1);
            start = match START_MS.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => now,
                Err(current) => current,
            };
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
        let mask48 = (1u128 << 48) - 1;
        Ruid((u128::from(server_id) << 96) | ((u128::from(start) & mask48) << 48) | u128::from(n))
    }

    /// True for [`Ruid::NONE`].
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Ruid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for Ruid {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16)
            .map(Ruid)
            .map_err(|_| StoreError::InvalidValue(format!("bad ruid {s:?}")))
    }
}

/// Transport a REGISTER arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Transport {
    /// UDP.
    Udp = 1,
    /// TCP.
    Tcp = 2,
    /// TLS over TCP.
    Tls = 3,
    /// SCTP.
    Sctp = 4,
    /// WebSocket.
    Ws = 5,
    /// Secure WebSocket.
    Wss = 6,
}

impl Transport {
    /// Lower-case name (`udp`, `tcp`, ...), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Sctp => "sctp",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// From the compact code used in encodings (1..=6).
    pub fn from_code(code: u8) -> Option<Transport> {
        Some(match code {
            1 => Transport::Udp,
            2 => Transport::Tcp,
            3 => Transport::Tls,
            4 => Transport::Sctp,
            5 => Transport::Ws,
            6 => Transport::Wss,
            _ => return None,
        })
    }

    /// Parses a name, case-insensitively.
    pub fn parse(s: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Sctp,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// Where a REGISTER really came from (for NAT traversal) and the local socket it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Received {
    /// Transport of the REGISTER.
    pub transport: Transport,
    /// Source address and port of the REGISTER.
    pub source: SocketAddr,
    /// Local socket that received it (requests to this contact leave from there).
    pub local: SocketAddr,
}

impl Received {
    /// Text of the `received` column: `udp:192.0.2.1:5060`, `tcp:[2001:db8::1]:5061`.
    pub fn source_text(&self) -> String {
        format!("{}:{}", self.transport.as_str(), self.source)
    }

    /// Text of the `socket` column: `udp:198.51.100.1:5060`.
    pub fn local_text(&self) -> String {
        format!("{}:{}", self.transport.as_str(), self.local)
    }

    /// Inverse of [`source_text`](Self::source_text) + [`local_text`](Self::local_text). Empty
    /// `received` means "none": `Ok(None)`.
    pub fn parse(received: &str, socket: &str) -> StoreResult<Option<Received>> {
        if received.is_empty() {
            return Ok(None);
        }
        let bad =
            || StoreError::InvalidValue(format!("bad received/socket {received:?} {socket:?}"));
        let (t, src) = received.split_once(':').ok_or_else(bad)?;
        let (_, local) = socket.split_once(':').ok_or_else(bad)?;
        Ok(Some(Received {
            transport: Transport::parse(t).ok_or_else(bad)?,
            source: src.parse().map_err(|_| bad())?,
            local: local.parse().map_err(|_| bad())?,
        }))
    }
}

/// One binding (contact) of an AOR, as stored and as returned by lookups.
///
/// Byte strings are the raw bytes the registrar handed over; empty means "absent" (no Path, no
/// `+sip.instance`). `reg_id` 0 means no `reg-id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// Canonical AOR, `sip:user@domain` in lower case.
    pub aor: Bytes,
    /// Contact URI as registered.
    pub contact: Bytes,
    /// Absolute expiry, unix seconds. Live while `expires > now`.
    pub expires: u64,
    /// q-value in per mille (0..=1000).
    pub q: u16,
    /// Call-ID of the REGISTER that created or refreshed the binding.
    pub call_id: Bytes,
    /// CSeq number of that REGISTER.
    pub cseq: u32,
    /// Source address, transport and local socket (NAT); `None` when not recorded.
    pub received: Option<Received>,
    /// Path header values (RFC 3327), raw; empty if none.
    pub path: Bytes,
    /// User-Agent header value.
    pub user_agent: Bytes,
    /// `+sip.instance` (RFC 5626), raw; empty if none.
    pub instance: Bytes,
    /// `reg-id` (RFC 5626); 0 if none.
    pub reg_id: u32,
    /// Branch/contact flags.
    pub flags: u32,
    /// Last modification time, unix milliseconds (last-write-wins for replication).
    pub last_modified: u64,
    /// Unique record id.
    pub ruid: Ruid,
    /// Node that wrote the binding.
    pub server_id: u32,
}

/// How a binding is identified inside its AOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingKey<'a> {
    /// RFC 5626: `+sip.instance` and `reg-id` (0 when absent).
    Instance {
        /// `+sip.instance` value.
        instance: &'a [u8],
        /// `reg-id`, 0 if absent.
        reg_id: u32,
    },
    /// RFC 3261 §10.3: the contact URI (raw bytes).
    Contact(&'a [u8]),
}

impl BindingKey<'_> {
    /// The `bkey` column: `c:<contact>` or `i:<instance>;<reg-id>`. Unambiguous and stable.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BindingKey::Contact(c) => {
                let mut v = Vec::with_capacity(c.len() + 2);
                v.extend_from_slice(b"c:");
                v.extend_from_slice(c);
                v
            }
            BindingKey::Instance { instance, reg_id } => {
                let mut v = Vec::with_capacity(instance.len() + 13);
                v.extend_from_slice(b"i:");
                v.extend_from_slice(instance);
                v.push(b';');
                v.extend_from_slice(reg_id.to_string().as_bytes());
                v
            }
        }
    }
}

impl Binding {
    /// Identity of the binding inside its AOR.
    pub fn key(&self) -> BindingKey<'_> {
        if self.instance.is_empty() {
            BindingKey::Contact(&self.contact)
        } else {
            BindingKey::Instance {
                instance: &self.instance,
                reg_id: self.reg_id,
            }
        }
    }

    /// The `bkey` column value, see [`BindingKey::encode`].
    pub fn bkey(&self) -> Vec<u8> {
        self.key().encode()
    }

    /// Live at `now_s` (unix seconds)?
    pub fn is_live(&self, now_s: u64) -> bool {
        self.expires > now_s
    }
}

/// One change to apply to a backend. A batch of them is applied in order; SQL backends use one
/// transaction per batch, Redis one atomic script per AOR.
// Upsert carries a Binding inline on purpose: ops are short-lived and boxing would add an
// allocation per op.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace the binding with the same (aor, bkey).
    Upsert(Binding),
    /// Delete one binding by its `bkey` (see [`BindingKey::encode`]).
    Delete {
        /// AOR.
        aor: Bytes,
        /// Encoded binding key.
        bkey: Bytes,
    },
    /// Delete every binding of an AOR.
    DeleteAor(Bytes),
    /// Make the stored AOR exactly these bindings (delete the others). Used by write-back flushes.
    ReplaceAor {
        /// AOR.
        aor: Bytes,
        /// The complete new set (may be empty: same as `DeleteAor`).
        bindings: Vec<Binding>,
    },
}

impl WriteOp {
    /// The AOR this operation touches (a partitioning layer routes on it).
    pub fn aor(&self) -> &Bytes {
        match self {
            WriteOp::Upsert(b) => &b.aor,
            WriteOp::Delete { aor, .. }
            | WriteOp::DeleteAor(aor)
            | WriteOp::ReplaceAor { aor, .. } => aor,
        }
    }
}

/// Opaque position in a paged full load. Each backend encodes its own; a wrapper may prefix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadCursor(pub Vec<u8>);

/// One page of a full load of live bindings.
#[derive(Debug, Default)]
pub struct LoadPage {
    /// Live bindings, grouped by AOR where the backend can (SQL: ordered by aor, bkey).
    pub bindings: Vec<Binding>,
    /// Where to continue; `None` when the load is complete.
    pub next: Option<LoadCursor>,
    /// Rows skipped because they could not be decoded (logged).
    pub skipped: u64,
}

/// Which implementation a backend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// Redis standalone.
    Redis,
    /// Redis Cluster.
    RedisCluster,
    /// Anything else (a wrapper such as a partitioning layer, a test double).
    Other,
}

impl BackendKind {
    /// Short name for logs and statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
            BackendKind::MySql => "mysql",
            BackendKind::Redis => "redis",
            BackendKind::RedisCluster => "redis-cluster",
            BackendKind::Other => "other",
        }
    }
}

/// Persistent storage of location bindings. Object-safe (`Arc<dyn LocationBackend>`) so a
/// partitioning layer can implement it over several inner backends.
///
/// Times are unix seconds (`now_s`); bindings with `expires <= now_s` are expired. Methods do not
/// apply their own timeout beyond the pool's connect/acquire timeout: callers wrap them.
pub trait LocationBackend: Send + Sync + 'static {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;

    /// Human-readable target without credentials, for logs.
    fn describe(&self) -> String;

    /// Creates the schema if missing (idempotent).
    fn init(&self) -> BoxFuture<'_, StoreResult<()>>;

    /// Applies a batch of changes (see [`WriteOp`]).
    fn apply<'a>(&'a self, ops: &'a [WriteOp]) -> BoxFuture<'a, StoreResult<()>>;

    /// Every stored binding of an AOR, expired ones included (the caller filters).
    fn lookup_aor<'a>(&'a self, aor: &'a [u8]) -> BoxFuture<'a, StoreResult<Vec<Binding>>>;

    /// One page of the live bindings (`expires > now_s`), for the startup reload and db-only
    /// dumps. Start with `cursor = None`; continue with `page.next` until it is `None`.
    fn load_page<'a>(
        &'a self,
        cursor: Option<&'a LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> BoxFuture<'a, StoreResult<LoadPage>>;

    /// Deletes every binding with `expires <= now_s`; returns how many were deleted.
    fn delete_expired(&self, now_s: u64) -> BoxFuture<'_, StoreResult<u64>>;

    /// Cheap round trip to tell whether the backend answers.
    fn health(&self) -> BoxFuture<'_, StoreResult<()>>;

    /// Upserts one binding (convenience over [`apply`](Self::apply)).
    fn upsert<'a>(&'a self, binding: &'a Binding) -> BoxFuture<'a, StoreResult<()>> {
        let ops = vec![WriteOp::Upsert(binding.clone())];
        Box::pin(async move { self.apply(&ops).await })
    }

    /// Upserts a batch of bindings in one transaction/pipeline.
    fn upsert_batch<'a>(&'a self, bindings: &'a [Binding]) -> BoxFuture<'a, StoreResult<()>> {
        let ops: Vec<WriteOp> = bindings.iter().cloned().map(WriteOp::Upsert).collect();
        Box::pin(async move { self.apply(&ops).await })
    }

    /// Deletes one binding.
    fn delete_binding<'a>(
        &'a self,
        aor: &'a [u8],
        key: BindingKey<'a>,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let ops = vec![WriteOp::Delete {
            aor: Bytes::copy_from_slice(aor),
            bkey: Bytes::from(key.encode()),
        }];
        Box::pin(async move { self.apply(&ops).await })
    }

    /// Deletes every binding of an AOR.
    fn delete_aor<'a>(&'a self, aor: &'a [u8]) -> BoxFuture<'a, StoreResult<()>> {
        let ops = vec![WriteOp::DeleteAor(Bytes::copy_from_slice(aor))];
        Box::pin(async move { self.apply(&ops).await })
    }
}

/// Opens the location backend named by `config.url` (see [`StoreUrl`]) and creates its schema.
pub async fn open_location(config: &StoreConfig) -> StoreResult<Arc<dyn LocationBackend>> {
    let url = StoreUrl::parse(&config.url, &config.data_dir)?;
    let backend: Arc<dyn LocationBackend> = match &url {
        StoreUrl::Sqlite { .. } | StoreUrl::Postgres(_) | StoreUrl::MySql(_) => {
            Arc::new(sql::SqlLocation::connect(&url, config).await?)
        }
        StoreUrl::Redis(_) | StoreUrl::RedisCluster(_) => {
            Arc::new(self::redis::RedisLocation::connect(&url, config).await?)
        }
    };
    backend.init().await?;
    Ok(backend)
}
