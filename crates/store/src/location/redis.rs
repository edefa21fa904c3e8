//! The location table on Redis, standalone or Cluster.
//!
//! One hash per AOR: key `<prefix>{<aor>}` (the AOR is the hash tag, so an AOR's data lives in
//! one slot), field = `bkey` (see [`BindingKey::encode`](super::BindingKey::encode)), value =
//! [`codec`] encoding of the binding. The key's TTL is the latest expiry written to
//! it (it only grows until the AOR is rewritten by a `ReplaceAor`). Every write to an AOR is one
//! Lua script, so it is atomic. Full loads SCAN every master.
//!
//! `delete_expired` is a SCAN over all keys that removes expired fields (whole AORs go away by
//! TTL); it is meant for startup and db-only timers, not for every request.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Script, Value};

use super::{
    BackendKind, Binding, BoxFuture, LoadCursor, LoadPage, LocationBackend, WriteOp, codec,
};
use crate::{StoreConfig, StoreError, StoreResult, StoreUrl};

/// KEYS[1] = AOR hash; ARGV = replace(0/1), expire-at (0 = none), ndel, del fields..., then
/// field/value pairs to set.
const WRITE_SCRIPT: &str = r"
local key = KEYS[1]
local replace = ARGV[1] == '1'
local exp = tonumber(ARGV[2])
local ndel = tonumber(ARGV[3])
if replace then redis.call('DEL', key) end
local i = 4
for _ = 1, ndel do
  redis.call('HDEL', key, ARGV[i])
  i = i + 1
end
while i < #ARGV do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
if exp > 0 and redis.call('EXISTS', key) == 1 then
  local cur = redis.call('EXPIRETIME', key)
  if replace or cur < 0 or cur < exp then redis.call('EXPIREAT', key, exp) end
end
return 1
";

/// The fields of one hash: (field, value) pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE_SCRIPT));

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&mut self, cmd: &Cmd) -> StoreResult<Value> {
        Ok(match self {
            Conn::Single(c) => cmd.query_async(c).await?,
            Conn::Cluster(c) => cmd.query_async(c).await?,
        })
    }

    /// Runs `cmd` on one node: `node` is `None` for standalone.
    async fn query_on(&mut self, node: Option<&(String, u16)>, cmd: Cmd) -> StoreResult<Value> {
        match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => Ok(c
                .route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    }),
                )
                .await?),
            (conn, _) => conn.query(&cmd).await,
        }
    }

    async fn script(&mut self, key: &[u8], args: &[Vec<u8>]) -> StoreResult<()> {
        let mut inv = SCRIPT.prepare_invoke();
        inv.key(key);
        for a in args {
            inv.arg(a.as_slice());
        }
        let _: Value = match self {
            Conn::Single(c) => inv.invoke_async(c).await?,
            Conn::Cluster(c) => inv.invoke_async(c).await?,
        };
        Ok(())
    }
}

/// The location table in Redis (standalone or Cluster).
pub struct RedisLocation {
    conn: Conn,
    prefix: Vec<u8>,
    target: String,
    cluster: bool,
}

impl std::fmt::Debug for RedisLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocation")
            .field("target", &self.target)
            .field("cluster", &self.cluster)
            .finish()
    }
}

fn parse_err(e: redis::ParsingError) -> StoreError {
    StoreError::Redis(e.into())
}

impl RedisLocation {
    /// Connects (standalone: lazily, reconnecting by itself; Cluster: fetches the topology now).
    pub async fn connect(url: &StoreUrl, cfg: &StoreConfig) -> StoreResult<RedisLocation> {
        if cfg.redis_prefix.contains(['{', '}']) {
            return Err(StoreError::Config(format!(
                "redis_prefix {:?} must not contain '{{' or '}}' (the AOR is the hash tag)",
                cfg.redis_prefix
            )));
        }
        let (conn, cluster) = match url {
            StoreUrl::Redis(u) => {
                let client = redis::Client::open(u.as_str())?;
                let mgr_cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.timeout))
                    .set_response_timeout(Some(cfg.timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(std::time::Duration::from_millis(500));
                (
                    Conn::Single(ConnectionManager::new_lazy_with_config(client, mgr_cfg)?),
                    false,
                )
            }
            StoreUrl::RedisCluster(nodes) => {
                let client =
                    redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                        .connection_timeout(cfg.timeout)
                        .response_timeout(cfg.timeout)
                        .retries(2)
                        .build()?;
                (Conn::Cluster(client.get_async_connection().await?), true)
            }
            other => {
                return Err(StoreError::Config(format!(
                    "not a Redis URL: {}",
                    other.redacted()
                )));
            }
        };
        Ok(RedisLocation {
            conn,
            prefix: cfg.redis_prefix.as_bytes().to_vec(),
            target: url.redacted(),
            cluster,
        })
    }

    fn key(&self, aor: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + aor.len() + 2);
        k.extend_from_slice(&self.prefix);
        k.push(b'{');
        k.extend_from_slice(aor);
        k.push(b'}');
        k
    }

    /// SCAN pattern matching every location key, with glob characters of the prefix escaped.
    fn pattern(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.prefix.len() + 3);
        for &c in &self.prefix {
            if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
                p.push(b'\\');
            }
            p.push(c);
        }
        p.extend_from_slice(b"{*");
        p
    }

    /// The masters to SCAN (`[None]` for standalone), in a stable order.
    async fn scan_nodes(&self) -> StoreResult<Vec<Option<(String, u16)>>> {
        if !self.cluster {
            return Ok(vec![None]);
        }
        let mut conn = self.conn.clone();
        let v = conn.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        let text: String = redis::from_redis_value(v).map_err(parse_err)?;
        let mut nodes = Vec::new();
        for line in text.lines() {
            let mut f = line.split(' ');
            let (_, Some(addr), Some(flags)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !flags.split(',').any(|x| x == "master")
                || flags.contains("fail")
                || flags.contains("noaddr")
            {
                continue;
            }
            let addr = addr.split(['@', ',']).next().unwrap_or_default();
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            nodes.push(Some((host, port)));
        }
        nodes.sort();
        if nodes.is_empty() {
            return Err(StoreError::InvalidValue(
                "CLUSTER NODES lists no master".into(),
            ));
        }
        Ok(nodes)
    }

    async fn hgetall(&self, key: &[u8]) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut conn = self.conn.clone();
        let v = conn.query(redis::cmd("HGETALL").arg(key)).await?;
        let map: HashMap<Vec<u8>, Vec<u8>> = redis::from_redis_value(v).map_err(parse_err)?;
        Ok(map.into_iter().collect())
    }

    /// HGETALL of many keys, concurrently over the multiplexed connection (one round trip per
    /// key would make a million-AOR reload take minutes).
    async fn hgetall_many(&self, keys: Vec<Vec<u8>>) -> StoreResult<Vec<(Vec<u8>, Fields)>> {
        const LANES: usize = 32;
        let keys = Arc::new(keys);
        let mut set = tokio::task::JoinSet::new();
        for lane in 0..LANES.min(keys.len()) {
            let (keys, mut conn) = (keys.clone(), self.conn.clone());
            set.spawn(async move {
                let mut out = Vec::new();
                for i in (lane..keys.len()).step_by(LANES) {
                    let v = conn.query(redis::cmd("HGETALL").arg(&keys[i])).await?;
                    let map: HashMap<Vec<u8>, Vec<u8>> =
                        redis::from_redis_value(v).map_err(parse_err)?;
                    out.push((i, map.into_iter().collect::<Vec<_>>()));
                }
                Ok::<_, StoreError>(out)
            });
        }
        let mut all: Vec<(usize, Fields)> = Vec::with_capacity(keys.len());
        while let Some(r) = set.join_next().await {
            match r {
                Ok(r) => all.extend(r?),
                Err(e) => {
                    return Err(StoreError::InvalidValue(format!(
                        "redis read task failed: {e}"
                    )));
                }
            }
        }
        all.sort_by_key(|(i, _)| *i);
        Ok(all
            .into_iter()
            .filter_map(|(i, f)| keys.get(i).map(|k| (k.clone(), f)))
            .collect())
    }

    /// One SCAN step on `node`; returns live bindings, the next SCAN cursor, expired fields
    /// removed (when `prune`) and undecodable fields skipped.
    async fn scan_step(
        &self,
        node: Option<&(String, u16)>,
        cursor: u64,
        count: usize,
        now_s: u64,
        prune: bool,
    ) -> StoreResult<(Vec<Binding>, u64, u64, u64)> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(self.pattern())
            .arg("COUNT")
            .arg(count);
        let v = conn.query_on(node, cmd).await?;
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(v).map_err(parse_err)?;
        let (mut live, mut pruned, mut skipped) = (Vec::new(), 0u64, 0u64);
        for (key, fields) in self.hgetall_many(keys).await? {
            let mut expired = Vec::new();
            for (field, value) in fields {
                match codec::decode(&value) {
                    Some(b) if b.is_live(now_s) => live.push(b),
                    Some(_) => expired.push(field),
                    None => {
                        skipped += 1;
                        tracing::warn!(target: "geosip_store", store = %self.target, key = %String::from_utf8_lossy(&key), "skipping undecodable location field");
                    }
                }
            }
            if prune && !expired.is_empty() {
                pruned += expired.len() as u64;
                let mut args = vec![
                    b"0".to_vec(),
                    b"0".to_vec(),
                    expired.len().to_string().into_bytes(),
                ];
                args.extend(expired);
                conn.script(&key, &args).await?;
            }
        }
        Ok((live, next, pruned, skipped))
    }
}

/// A field and its new value (`None` = delete) with the binding's expiry.
type FieldWrite = (Vec<u8>, Option<(u64, Vec<u8>)>);

/// The writes of one AOR after coalescing a batch: last operation per field wins.
struct AorWrite {
    aor: Bytes,
    replace: bool,
    fields: Vec<FieldWrite>,
}

impl AorWrite {
    fn set(&mut self, field: Vec<u8>, value: Option<(u64, Vec<u8>)>) {
        match self.fields.iter_mut().find(|(f, _)| *f == field) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((field, value)),
        }
    }

    fn args(&self) -> Vec<Vec<u8>> {
        let exp = self
            .fields
            .iter()
            .filter_map(|(_, v)| v.as_ref().map(|(e, _)| *e))
            .max()
            .unwrap_or(0);
        let dels: Vec<&Vec<u8>> = if self.replace {
            Vec::new()
        } else {
            self.fields
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(f, _)| f)
                .collect()
        };
        let mut args = vec![
            if self.replace {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            },
            exp.to_string().into_bytes(),
            dels.len().to_string().into_bytes(),
        ];
        args.extend(dels.into_iter().cloned());
        for (f, v) in &self.fields {
            if let Some((_, value)) = v {
                args.push(f.clone());
                args.push(value.clone());
            }
        }
        args
    }
}

fn coalesce(ops: &[WriteOp]) -> Vec<AorWrite> {
    let mut out: Vec<AorWrite> = Vec::new();
    let mut index: HashMap<Bytes, usize> = HashMap::new();
    for op in ops {
        let aor = op.aor().clone();
        let i = *index.entry(aor.clone()).or_insert_with(|| {
            out.push(AorWrite {
                aor,
                replace: false,
                fields: Vec::new(),
            });
            out.len() - 1
        });
        let w = &mut out[i];
        match op {
            WriteOp::Upsert(b) => w.set(b.bkey(), Some((b.expires, codec::encode(b)))),
            WriteOp::Delete { bkey, .. } => w.set(bkey.to_vec(), None),
            WriteOp::DeleteAor(_) => {
                w.replace = true;
                w.fields.clear();
            }
            WriteOp::ReplaceAor { bindings, .. } => {
                w.replace = true;
                w.fields.clear();
                for b in bindings {
                    w.set(b.bkey(), Some((b.expires, codec::encode(b))));
                }
            }
        }
    }
    out
}

fn encode_cursor(node: usize, scan: u64) -> LoadCursor {
    let mut v = (node as u32).to_le_bytes().to_vec();
    v.extend_from_slice(&scan.to_le_bytes());
    LoadCursor(v)
}

fn decode_cursor(c: &LoadCursor) -> StoreResult<(usize, u64)> {
    let bad = || StoreError::InvalidValue("bad Redis load cursor".into());
    let node =
        c.0.get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(bad)?;
    let scan =
        c.0.get(4..12)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(bad)?;
    Ok((u32::from_le_bytes(node) as usize, u64::from_le_bytes(scan)))
}

impl LocationBackend for RedisLocation {
    fn kind(&self) -> BackendKind {
        if self.cluster {
            BackendKind::RedisCluster
        } else {
            BackendKind::Redis
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }

    fn init(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { self.health().await })
    }

    fn apply<'a>(&'a self, ops: &'a [WriteOp]) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let writes = coalesce(ops);
            if writes.len() <= 1 {
                for w in &writes {
                    self.conn
                        .clone()
                        .script(&self.key(&w.aor), &w.args())
                        .await?;
                }
                return Ok(());
            }
            // Many AORs (write-back flushes): run the scripts concurrently; the multiplexed
            // connections pipeline them.
            let mut set = tokio::task::JoinSet::new();
            let writes: Vec<(Vec<u8>, Vec<Vec<u8>>)> = writes
                .iter()
                .map(|w| (self.key(&w.aor), w.args()))
                .collect();
            let writes = Arc::new(writes);
            const PARALLEL: usize = 32;
            for lane in 0..PARALLEL.min(writes.len()) {
                let mut conn = self.conn.clone();
                let writes = writes.clone();
                set.spawn(async move {
                    for (key, args) in writes.iter().skip(lane).step_by(PARALLEL) {
                        conn.script(key, args).await?;
                    }
                    Ok::<(), StoreError>(())
                });
            }
            let mut result = Ok(());
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(e),
                    Err(e) => {
                        result = Err(StoreError::InvalidValue(format!(
                            "redis write task failed: {e}"
                        )))
                    }
                }
            }
            result
        })
    }

    fn lookup_aor<'a>(&'a self, aor: &'a [u8]) -> BoxFuture<'a, StoreResult<Vec<Binding>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for (_, value) in self.hgetall(&self.key(aor)).await? {
                match codec::decode(&value) {
                    Some(b) => out.push(b),
                    None => {
                        tracing::warn!(target: "geosip_store", store = %self.target, "skipping undecodable location field")
                    }
                }
            }
            Ok(out)
        })
    }

    fn load_page<'a>(
        &'a self,
        cursor: Option<&'a LoadCursor>,
        limit: usize,
        now_s: u64,
    ) -> BoxFuture<'a, StoreResult<LoadPage>> {
        Box::pin(async move {
            let nodes = self.scan_nodes().await?;
            let (mut node, mut scan) = match cursor {
                Some(c) => decode_cursor(c)?,
                None => (0, 0),
            };
            let mut page = LoadPage::default();
            while node < nodes.len() && page.bindings.len() < limit.max(1) {
                let (live, next, _, skipped) = self
                    .scan_step(
                        nodes[node].as_ref(),
                        scan,
                        limit.clamp(10, 1000),
                        now_s,
                        false,
                    )
                    .await?;
                page.bindings.extend(live);
                page.skipped += skipped;
                if next == 0 {
                    node += 1;
                    scan = 0;
                } else {
                    scan = next;
                }
            }
            if node < nodes.len() {
                page.next = Some(encode_cursor(node, scan));
            }
            Ok(page)
        })
    }

    fn delete_expired(&self, now_s: u64) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let mut pruned = 0;
            for node in self.scan_nodes().await? {
                let mut scan = 0;
                loop {
                    let (_, next, p, _) = self
                        .scan_step(node.as_ref(), scan, 1000, now_s, true)
                        .await?;
                    pruned += p;
                    if next == 0 {
                        break;
                    }
                    scan = next;
                }
            }
            Ok(pruned)
        })
    }

    fn health(&self) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            self.conn.clone().query(&redis::cmd("PING")).await?;
            Ok(())
        })
    }
}
