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
        self.live_total.fetch_add(1, Ordering::Relaxed);
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
    /// wheel just popped it).
    pub(crate) fn schedule(&self, t: &mut ProxyTxn, now: Instant, force: bool) {
        let next = t
            .next_deadline(self.wait)
            // Nothing to wait for but not freeable: look again in a second rather than leak.
            .unwrap_or_else(|| {
                now.checked_add(std::time::Duration::from_secs(1))
                    .unwrap_or(now)
            });
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
