//! A hashed timing wheel for the owner of many transactions.
//!
//! Each live transaction has one entry, at its `poll_timeout()`. Entries live in a slab
//! (`Vec` of nodes plus a free list) and are linked, doubly, into one list per slot, so insert,
//! cancel and reschedule are O(1) with real removal: memory is the slot array plus the peak
//! number of live entries, whatever the insert/cancel churn. Handles carry a generation, so a
//! stale handle (entry already fired or cancelled, slot reused) is harmless.
//!
//! A deadline is rounded *up* to the next tick, so an entry never pops before its deadline,
//! and pops at most one resolution (plus the owner's polling delay) after it. Entries further
//! away than one revolution stay in their slot and are skipped (their tick is compared) until
//! their turn: a slot visit costs its length, amortised O(1) per entry per revolution.

use std::time::{Duration, Instant};

const NIL: u32 = u32::MAX;
/// The pseudo-slot of the ready list (entries found due, not yet popped).
const READY: u32 = u32::MAX - 1;
/// Largest slab: indices must stay below `READY`.
const MAX_ENTRIES: usize = (u32::MAX - 2) as usize;

/// Identifies one scheduled entry of a [`TimerWheel`]; stale once it fired or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Node<K> {
    key: Option<K>,
    tick: u64,
    /// Slot index, `READY`, or `NIL` when free.
    list: u32,
    prev: u32,
    next: u32,
    generation: u32,
}

/// A hashed timing wheel mapping deadlines to keys (typically transaction keys).
///
/// ```
/// use std::time::{Duration, Instant};
/// use sip_txn::TimerWheel;
///
/// let start = Instant::now();
/// let mut wheel = TimerWheel::new(start);
/// let h = wheel.insert(start + Duration::from_millis(500), "txn-1").unwrap();
/// wheel.insert(start + Duration::from_secs(2), "txn-2").unwrap();
/// assert_eq!(wheel.poll_expired(start + Duration::from_millis(499)), None);
/// assert_eq!(wheel.poll_expired(start + Duration::from_millis(510)), Some("txn-1"));
/// assert_eq!(wheel.cancel(h), None, "already fired");
/// ```
///
/// Not internally synchronised: a proxy keeps one per shard (or behind the shard's lock) and
/// has a timer task call [`poll_expired`](Self::poll_expired) every resolution tick.
#[derive(Debug)]
pub struct TimerWheel<K> {
    origin: Instant,
    resolution_nanos: u128,
    mask: u64,
    /// Head node index of each slot's list.
    slots: Box<[u32]>,
    nodes: Vec<Node<K>>,
    free: u32,
    ready_head: u32,
    ready_tail: u32,
    /// The next tick whose slot has not been swept.
    cursor: u64,
    len: usize,
    capacity: usize,
}

impl<K> TimerWheel<K> {
    /// The default tick: 10 ms.
    pub const DEFAULT_RESOLUTION: Duration = Duration::from_millis(10);
    /// The default number of slots: 4096 (one revolution ≈ 41 s at 10 ms, longer than
    /// `64*T1`, so most entries are visited once).
    pub const DEFAULT_SLOTS: usize = 4096;

    /// A wheel with a 10 ms tick and 4096 slots, starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self::with_config(
            now,
            Self::DEFAULT_RESOLUTION,
            Self::DEFAULT_SLOTS,
            MAX_ENTRIES,
        )
    }

    /// A wheel with the given tick (at least 1 µs), slot count (rounded up to a power of
    /// two, 1 to 2²⁰), and maximum number of live entries (`insert` refuses beyond it, which
    /// a proxy turns into a 503: an overload limit, like Kamailio's maximum transactions).
    pub fn with_config(
        now: Instant,
        resolution: Duration,
        slots: usize,
        max_entries: usize,
    ) -> Self {
        let slots = slots.clamp(1, 1 << 20).next_power_of_two();
        TimerWheel {
            origin: now,
            resolution_nanos: resolution.max(Duration::from_micros(1)).as_nanos(),
            mask: slots as u64 - 1,
            slots: vec![NIL; slots].into_boxed_slice(),
            nodes: Vec::new(),
            free: NIL,
            ready_head: NIL,
            ready_tail: NIL,
            cursor: 0,
            len: 0,
            capacity: max_entries.min(MAX_ENTRIES),
        }
    }

    /// Live (scheduled, not yet popped or cancelled) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first tick at or after `t`: deadlines round up, so nothing pops early.
    fn tick_ceil(&self, t: Instant) -> u64 {
        let n = t.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(n.div_ceil(self.resolution_nanos)).unwrap_or(u64::MAX)
    }

    /// The last tick that has fully elapsed at `now`.
    fn tick_floor(&self, now: Instant) -> u64 {
        let n = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(n / self.resolution_nanos).unwrap_or(u64::MAX)
    }

    fn slot_of(&self, tick: u64) -> u32 {
        // The mask is below 2^20, so this fits.
        (tick & self.mask) as u32
    }

    /// Schedules `key` at `deadline` (a deadline in the past pops at the next poll). Gives the
    /// key back if the wheel holds its maximum number of entries.
    pub fn insert(&mut self, deadline: Instant, key: K) -> Result<TimerHandle, K> {
        if self.len >= self.capacity {
            return Err(key);
        }
        let tick = self.tick_ceil(deadline);
        let index = if self.free != NIL {
            let i = self.free;
            let Some(node) = self.nodes.get_mut(i as usize) else {
                return Err(key);
            };
            self.free = node.next;
            node.key = Some(key);
            node.tick = tick;
            i
        } else {
            let i = self.nodes.len() as u32;
            self.nodes.push(Node {
                key: Some(key),
                tick,
                list: NIL,
                prev: NIL,
                next: NIL,
                generation: 0,
            });
            i
        };
        self.link(index, tick);
        self.len += 1;
        let generation = self.nodes.get(index as usize).map_or(0, |n| n.generation);
        Ok(TimerHandle { index, generation })
    }

    /// Moves a live entry to a new deadline, keeping its key and handle; `false` if the handle
    /// is stale.
    pub fn reschedule(&mut self, handle: TimerHandle, deadline: Instant) -> bool {
        if !self.is_live(handle) {
            return false;
        }
        let tick = self.tick_ceil(deadline);
        self.unlink(handle.index);
        if let Some(node) = self.nodes.get_mut(handle.index as usize) {
            node.tick = tick;
        }
        self.link(handle.index, tick);
        true
    }

    /// Removes a live entry and returns its key; `None` if the handle is stale.
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<K> {
        if !self.is_live(handle) {
            return None;
        }
        self.unlink(handle.index);
        self.release(handle.index)
    }

    /// The deadline tick's start of a live entry (its deadline rounded up to the resolution).
    pub fn deadline(&self, handle: TimerHandle) -> Option<Instant> {
        if !self.is_live(handle) {
            return None;
        }
        let tick = self.nodes.get(handle.index as usize)?.tick;
        let nanos = u64::try_from(u128::from(tick).saturating_mul(self.resolution_nanos)).ok()?;
        self.origin.checked_add(Duration::from_nanos(nanos))
    }

    fn is_live(&self, h: TimerHandle) -> bool {
        self.nodes
            .get(h.index as usize)
            .is_some_and(|n| n.generation == h.generation && n.key.is_some())
    }

    /// Pops one entry whose deadline is at or before `now`, or `None` when there is none.
    /// Call it in a loop each tick: `while let Some(k) = wheel.poll_expired(now) { ... }`.
    /// Sweeps at most one revolution of slots per call, however far `now` jumped.
    pub fn poll_expired(&mut self, now: Instant) -> Option<K> {
        if self.ready_head == NIL {
            self.sweep(now);
        }
        let index = self.ready_head;
        if index == NIL {
            return None;
        }
        self.unlink(index);
        self.release(index)
    }

    /// Moves due entries into the ready list, slot by slot from the cursor, stopping at the
    /// first slot that yields any.
    fn sweep(&mut self, now: Instant) {
        let now_tick = self.tick_floor(now);
        if now_tick < self.cursor {
            return;
        }
        let slot_count = self.mask + 1;
        if now_tick - self.cursor >= slot_count {
            // Every slot is due for a visit: one full sweep, then jump the cursor.
            for slot in 0..slot_count {
                self.collect_due(slot as u32, now_tick);
            }
            self.cursor = now_tick.saturating_add(1);
            return;
        }
        while self.cursor <= now_tick {
            let slot = self.slot_of(self.cursor);
            self.collect_due(slot, now_tick);
            if self.cursor == u64::MAX {
                return;
            }
            self.cursor += 1;
            if self.ready_head != NIL {
                return;
            }
        }
    }

    fn collect_due(&mut self, slot: u32, now_tick: u64) {
        let mut i = self.slots.get(slot as usize).copied().unwrap_or(NIL);
        while i != NIL {
            let Some(node) = self.nodes.get(i as usize) else {
                return;
            };
            let (next, due) = (node.next, node.tick <= now_tick);
            if due {
                self.unlink(i);
                self.push_ready(i);
            }
            i = next;
        }
    }

    /// Links node `i` into the list its tick belongs to.
    fn link(&mut self, i: u32, tick: u64) {
        if tick < self.cursor {
            // Its slot was already swept for this revolution.
            self.push_ready(i);
            return;
        }
        let slot = self.slot_of(tick);
        let Some(head) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let old = *head;
        *head = i;
        if let Some(n) = self.nodes.get_mut(old as usize) {
            n.prev = i;
        }
        if let Some(n) = self.nodes.get_mut(i as usize) {
            n.list = slot;
            n.prev = NIL;
            n.next = old;
        }
    }

    fn push_ready(&mut self, i: u32) {
        let tail = self.ready_tail;
        if let Some(n) = self.nodes.get_mut(i as usize) {
            n.list = READY;
            n.prev = tail;
            n.next = NIL;
        }
        match self.nodes.get_mut(tail as usize) {
            Some(t) => t.next = i,
            None => self.ready_head = i,
        }
        self.ready_tail = i;
    }

    /// Unlinks node `i` from whatever list holds it.
    fn unlink(&mut self, i: u32) {
        let Some(node) = self.nodes.get_mut(i as usize) else {
            return;
        };
        let (list, prev, next) = (node.list, node.prev, node.next);
        node.list = NIL;
        node.prev = NIL;
        node.next = NIL;
        match self.nodes.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None if list == READY => self.ready_head = next,
            None => {
                if let Some(h) = self.slots.get_mut(list as usize) {
                    *h = next;
                }
            }
        }
        match self.nodes.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None if list == READY => self.ready_tail = prev,
            None => {}
        }
    }

    /// Frees an unlinked node: bumps its generation (stale handles stop matching), pushes it on
    /// the free list, and returns its key.
    fn release(&mut self, i: u32) -> Option<K> {
        let node = self.nodes.get_mut(i as usize)?;
        let key = node.key.take();
        node.generation = node.generation.wrapping_add(1);
        node.next = self.free;
        self.free = i;
        if key.is_some() {
            self.len -= 1;
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn drain<K>(w: &mut TimerWheel<K>, now: Instant) -> Vec<K> {
        std::iter::from_fn(|| w.poll_expired(now)).collect()
    }

    #[test]
    fn entries_pop_at_or_after_their_deadline_never_before() {
        let start = Instant::now();
        let mut w = TimerWheel::new(start);
        w.insert(start + 15 * MS, 1).unwrap();
        w.insert(start + 20 * MS, 2).unwrap();
        assert_eq!(drain(&mut w, start + 14 * MS), Vec::<i32>::new());
        assert_eq!(
            drain(&mut w, start + 19 * MS),
            Vec::<i32>::new(),
            "15 ms rounds up to the 20 ms tick"
        );
        let mut got = drain(&mut w, start + 20 * MS);
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_deadline_in_the_past_pops_at_the_next_poll() {
        let start = Instant::now();
        let mut w = TimerWheel::new(start);
        assert!(drain(&mut w, start + Duration::from_secs(1)).is_empty());
        w.insert(start, "late").unwrap();
        assert_eq!(drain(&mut w, start + Duration::from_secs(1)), vec!["late"]);
    }

    #[test]
    fn cancelled_entries_never_pop_and_stale_handles_are_harmless() {
        let start = Instant::now();
        let mut w = TimerWheel::new(start);
        let a = w.insert(start + 100 * MS, 'a').unwrap();
        let b = w.insert(start + 100 * MS, 'b').unwrap();
        assert_eq!(w.cancel(a), Some('a'));
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.len(), 1);
        // The freed node is reused; the old handle must not touch the new entry.
        let c = w.insert(start + 200 * MS, 'c').unwrap();
        assert_eq!(w.cancel(a), None);
        assert!(!w.reschedule(a, start));
        assert_eq!(drain(&mut w, start + 150 * MS), vec!['b']);
        assert_eq!(w.cancel(b), None, "already fired");
        assert_eq!(drain(&mut w, start + 200 * MS), vec!['c']);
        assert_eq!(w.cancel(c), None);
    }

    #[test]
    fn reschedule_moves_an_entry_earlier_or_later() {
        let start = Instant::now();
        let mut w = TimerWheel::new(start);
        let h = w.insert(start + Duration::from_secs(30), 7).unwrap();
        assert!(w.reschedule(h, start + 50 * MS));
        assert_eq!(w.deadline(h), Some(start + 50 * MS));
        assert_eq!(drain(&mut w, start + 50 * MS), vec![7]);
        let h = w.insert(start + 100 * MS, 8).unwrap();
        assert!(w.reschedule(h, start + Duration::from_secs(5)));
        assert!(drain(&mut w, start + Duration::from_secs(4)).is_empty());
        assert_eq!(drain(&mut w, start + Duration::from_secs(5)), vec![8]);
    }

    #[test]
    fn deadlines_beyond_one_revolution_wait_for_their_round() {
        let start = Instant::now();
        let mut w = TimerWheel::with_config(start, 10 * MS, 8, usize::MAX);
        // 8 slots × 10 ms = 80 ms per revolution.
        w.insert(start + 30 * MS, "near").unwrap();
        w.insert(start + 270 * MS, "far").unwrap();
        let mut now = start;
        let mut popped = Vec::new();
        while now <= start + 300 * MS {
            for k in drain(&mut w, now) {
                popped.push((k, now - start));
            }
            now += 10 * MS;
        }
        assert_eq!(popped, vec![("near", 30 * MS), ("far", 270 * MS)]);
    }

    #[test]
    fn a_jump_of_many_revolutions_pops_everything_due_and_nothing_else() {
        let start = Instant::now();
        let mut w = TimerWheel::with_config(start, 10 * MS, 16, usize::MAX);
        for i in 0..100u64 {
            w.insert(start + Duration::from_millis(37 * i), i).unwrap();
        }
        // 37 * 49 = 1813 ms rounds up to the 1820 ms tick; 37 * 50 = 1850 ms is not due yet.
        let mut got = drain(&mut w, start + Duration::from_millis(1820));
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(w.len(), 50);
        let mut got = drain(&mut w, start + Duration::from_secs(100));
        got.sort();
        assert_eq!(got, (50..100).collect::<Vec<_>>());
    }

    #[test]
    fn memory_tracks_live_entries_not_churn() {
        let start = Instant::now();
        let mut w = TimerWheel::new(start);
        let mut handles = Vec::new();
        for i in 0..100 {
            handles.push(w.insert(start + Duration::from_secs(100), i).unwrap());
        }
        for round in 0..1000 {
            for h in handles.iter_mut() {
                let k = w.cancel(*h).unwrap();
                *h = w
                    .insert(start + Duration::from_secs(100 + round), k)
                    .unwrap();
            }
        }
        assert_eq!(w.len(), 100);
        assert_eq!(w.nodes.len(), 100, "freed nodes are reused");
    }

    #[test]
    fn insert_refuses_beyond_the_capacity_and_gives_the_key_back() {
        let start = Instant::now();
        let mut w = TimerWheel::with_config(start, 10 * MS, 64, 2);
        let a = w.insert(start, 1).unwrap();
        w.insert(start, 2).unwrap();
        assert_eq!(w.insert(start, 3), Err(3));
        w.cancel(a);
        assert!(w.insert(start, 3).is_ok());
    }

    #[test]
    fn time_going_backwards_pops_nothing_and_does_not_panic() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut w = TimerWheel::new(start);
        w.insert(start + MS, 1).unwrap();
        assert!(drain(&mut w, start - Duration::from_secs(5)).is_empty());
        assert_eq!(drain(&mut w, start + 10 * MS), vec![1]);
    }

    #[test]
    fn entries_popped_in_one_tick_can_be_reinserted_for_later() {
        let start = Instant::now();
        let mut w = TimerWheel::new(start);
        w.insert(start + 10 * MS, 1).unwrap();
        let now = start + 10 * MS;
        let k = w.poll_expired(now).unwrap();
        w.insert(now + 500 * MS, k).unwrap();
        assert_eq!(w.poll_expired(now), None);
        assert_eq!(drain(&mut w, now + 500 * MS), vec![1]);
    }
}
