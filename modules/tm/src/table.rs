//! The sharded transaction table: id → transaction, request key → id, and a timer wheel per
//! shard. A shard lock is only held to look up, insert or remove entries and move timers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use geosip_core::ctx::MsgCtx;
use hashbrown::HashMap;
use parking_lot::Mutex;
use sip_txn::{ServerTransaction, TimerWheel, TxnKey, TxnKind};

use crate::txn::ProxyTxn;
use crate::{SHARDS, Tm, TmError, TxnGuard, TxnRef};

pub(crate) struct ShardInner {
    pub txns: HashMap<u64, TxnRef>,
    pub keys: HashMap<TxnKey, u64>,
    pub wheel: TimerWheel<u64>,
}

pub(crate) struct Shard(pub Mutex<ShardInner>);

impl Shard {
    pub(crate) fn new(start: Instant) -> Self {
        Shard(Mutex::new(ShardInner {
            txns: HashMap::new(),
            keys: HashMap::new(),
            // 10 ms ticks, 4096 slots: one revolution is ~41 s, longer than any usual wait.
            wheel: TimerWheel::new(start),
        }))
    }
}

/// What [`Tm::open`] found or made.
pub(crate) enum Open {
    /// A new transaction, locked by us, already in the table.
    New(TxnGuard),
    /// A transaction with this key exists.
    Existing(TxnRef),
}

#[inline]
fn shard_of_key(key: TxnKey) -> usize {
    (key.as_u128() as usize) & (SHARDS - 1)
}

#[inline]
pub(crate) fn shard_of_id(id: u64) -> usize {
    (id as usize) & (SHARDS - 1)
}

impl Tm {
    fn shard(&self, i: usize) -> &Mutex<ShardInner> {
        &self.shards[i & (SHARDS - 1)].0
    }

    /// The transaction with this id.
    pub(crate) fn lookup_id(&self, id: u64) -> Option<TxnRef> {
        self.shard(shard_of_id(id)).lock().txns.get(&id).cloned()
    }

    /// The transaction a request key points at.
    pub(crate) fn lookup_key(&self, key: TxnKey) -> Option<TxnRef> {
        let ks = shard_of_key(key);
        let id = {
            let s = self.shard(ks).lock();
            let id = *s.keys.get(&key)?;
            if shard_of_id(id) == ks {
                return s.txns.get(&id).cloned();
            }
            id
        };
        self.lookup_id(id)
    }

    /// Finds the transaction of `key`, or creates it (server transaction only) for the
    /// request of `ctx`.
    pub(crate) fn open(
        &self,
        ctx: &MsgCtx,
        key: TxnKey,
        rfc2543: bool,
        now: Instant,
    ) -> Result<Open, TmError> {
        if let Some(r) = self.lookup_key(key) {
            return Ok(Open::Existing(r));
        }
        if self.live_total.load(Ordering::Relaxed) >= self.cfg.max_transactions {
            self.counters.rejected_full.inc();
            return Err(TmError::TooManyTransactions {
                retry_after: self.cfg.retry_after,
            });
        }
        let via = ctx.msg.top_via().ok_or(TmError::BadRequest)?;
        let reply_dst = geosip_core::out::reply_destination(&ctx.rx, &via, &ctx.via_stamp);
        let kind = Tm::kind_of(&ctx.msg);
        let ks = shard_of_key(key);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let id = (seq << SHARDS.trailing_zeros()) | ks as u64;
        let server = ServerTransaction::new(kind, ctx.rx.proto.is_reliable(), now, &self.timers);
        let txn = ProxyTxn::new(id, rand::random(), kind, server, reply_dst, key, rfc2543);
        let r = Arc::new(Mutex::new(txn));
        let g = r.lock_arc();
        {
            let mut s = self.shard(ks).lock();
            if let Some(&other) = s.keys.get(&key) {
                // Lost a race with a retransmission on another thread.
                let existing = if shard_of_id(other) == ks {
                    s.txns.get(&other).cloned()
                } else {
                    None
                };
                drop(s);
                drop(g);
                return match existing.or_else(|| self.lookup_id(other)) {
                    Some(e) => Ok(Open::Existing(e)),
                    None => Err(TmError::NotAllowed),
                };
            }
            s.keys.insert(key, id);
            s.txns.insert(id, Arc::clone(&r));
        }
        let k = usize::from(kind != TxnKind::Invite);
        self.counters.live[k].inc();
        self.counters.total[k].inc();
        self.live_total.fetch_add(1, Ordering::SeqCst);
        self.wake_timer();
        Ok(Open::New(g))
    }

    /// Adds a request key for `t` (the RFC 2543 ACK key with our To tag).
    pub(crate) fn index_key(&self, t: &mut ProxyTxn, key: TxnKey) {
        if t.keys.len() >= 4 || t.keys.contains(&key) {
            return;
        }
        let mut s = self.shard(shard_of_key(key)).lock();
        s.keys.entry(key).or_insert(t.id);
        t.keys.push(key);
    }

    /// Removes the request keys of `t` (its server transaction is over: a new request with
    /// the same key is a new transaction).
    pub(crate) fn unindex(&self, t: &mut ProxyTxn) {
        for key in t.keys.drain(..) {
            let mut s = self.shard(shard_of_key(key)).lock();
            if s.keys.get(&key) == Some(&t.id) {
                s.keys.remove(&key);
            }
        }
    }

    /// Removes `t` from the table and its timer; counts it out.
    pub(crate) fn free(&self, t: &mut ProxyTxn) {
        if t.freed {
            return;
        }
        t.freed = true;
        self.unindex(t);
        {
            let mut s = self.shard(shard_of_id(t.id)).lock();
            s.txns.remove(&t.id);
            if let Some(h) = t.timer.take() {
                s.wheel.cancel(h);
            }
        }
        let k = usize::from(t.kind != TxnKind::Invite);
        self.counters.live[k].dec();
        self.counters.retrans_sent.add(t.retransmissions());
        self.live_total.fetch_sub(1, Ordering::Relaxed);
        // Drop the heavy parts now; the Arc may live on briefly in another thread's hands.
        t.req = None;
        t.branches.clear();
        t.pending.clear();
    }

    /// Moves the timer of `t` to its next deadline (`force`: even if unchanged, because the
    /// wheel just popped it). A deadline already passed is put one wheel tick ahead, so that
    /// nothing can be popped twice in one pass of the timer thread.
    pub(crate) fn schedule(&self, t: &mut ProxyTxn, now: Instant, force: bool) {
        let soon = now
            .checked_add(TimerWheel::<u64>::DEFAULT_RESOLUTION)
            .unwrap_or(now);
        let next = t
            .next_deadline(self.wait, now)
            // Nothing to wait for but not freeable: look again in a second rather than leak.
            .unwrap_or_else(|| {
                now.checked_add(std::time::Duration::from_secs(1))
                    .unwrap_or(now)
            })
            .max(soon);
        if !force && t.timer.is_some() && t.timer_at == Some(next) {
            return;
        }
        let mut s = self.shard(shard_of_id(t.id)).lock();
        let moved = t.timer.is_some_and(|h| s.wheel.reschedule(h, next));
        if !moved {
            t.timer = s.wheel.insert(next, t.id).ok();
        }
        t.timer_at = Some(next);
    }

    /// Pops the transactions whose timers are due in shard `i`, at most `max`.
    pub(crate) fn due(
        &self,
        i: usize,
        now: Instant,
        out: &mut smallvec::SmallVec<[TxnRef; 32]>,
        max: usize,
    ) {
        let mut s = self.shard(i).lock();
        while out.len() < max {
            match s.wheel.poll_expired(now) {
                Some(id) => {
                    if let Some(r) = s.txns.get(&id) {
                        out.push(Arc::clone(r));
                    }
                }
                None => break,
            }
        }
    }
}

impl Tm {
    /// A JSON view of up to `max` live transactions (the `tm.list` RPC). Transactions busy on
    /// another thread are skipped rather than waited for.
    pub(crate) fn list(&self, max: usize) -> serde_json::Value {
        let now = Instant::now();
        let ms = |t: Option<Instant>| -> serde_json::Value {
            match t {
                Some(t) if t >= now => serde_json::json!(t.duration_since(now).as_millis() as u64),
                Some(t) => serde_json::json!(-(now.duration_since(t).as_millis() as i64)),
                None => serde_json::Value::Null,
            }
        };
        let mut out = Vec::new();
        'shards: for i in 0..SHARDS {
            let refs: Vec<TxnRef> = self.shard(i).lock().txns.values().cloned().collect();
            for r in refs {
                if out.len() >= max {
                    break 'shards;
                }
                let Some(t) = r.try_lock() else { continue };
                let method = t
                    .req
                    .as_ref()
                    .map(|q| String::from_utf8_lossy(q.method()).into_owned())
                    .unwrap_or_default();
                let branches: Vec<serde_json::Value> = t
                    .branches
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "state": format!("{:?}", b.client.state()),
                            "status": b.status,
                            "cancel": b.cancel.as_ref().map(|c| format!("{:?}", c.state())),
                            "next_ms": ms(b.client.poll_timeout()),
                        })
                    })
                    .collect();
                out.push(serde_json::json!({
                    "id": t.id,
                    "method": method,
                    "server": format!("{:?}", t.server.state()),
                    "final": t.final_sent,
                    "canceled": t.canceled,
                    "silent": t.silent,
                    "final_ms": ms(t.final_at),
                    "next_ms": ms(t.next_deadline(self.wait, now)),
                    "timer_ms": ms(t.timer_at),
                    "branches": branches,
                    "pending_targets": t.pending.len(),
                }));
            }
        }
        serde_json::Value::Array(out)
    }
}
