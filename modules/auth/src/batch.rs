//! Batched subscriber reads: a request whose subscriber is not cached is set aside ("parked")
//! instead of blocking its SIP worker on a database round trip; one thread reads the
//! subscribers of every parked request in one query per domain, fills the cache, and runs
//! each request (again, when the script itself parked it), which now finds its subscriber
//! cached. On the embedded SQLite table there is no round trip to save but the batch still
//! pays: its lookups and requests run back to back with warm caches and their answers leave
//! in one `sendmmsg`; there the SIP worker that comes by once a batch is due runs it itself
//! ([`BatchReader::run_due`], between receives), and the thread only takes a batch no worker
//! came by for within [`INLINE_GRACE`]. The engine parks requests with credentials of an
//! uncached user before the script ([`crate::Auth::prefetch`]); the script parks the rest at
//! `www_authenticate` / `proxy_authenticate` ([`crate::AuthResult::Parked`]).
//!
//! Why: on loopback a PostgreSQL round trip costs the reading process about 60 µs of CPU
//! (system calls, wake-ups, the client's protocol code), twice the rest of an authenticated
//! REGISTER. Read `N` subscribers in one query and each pays a share of one round trip; the
//! worker never waits for the database, so a slow database slows authentication down but does
//! not stop the workers from answering everything else. OpenSIPS calls this async DB access;
//! Kamailio's `auth_db` blocks the worker instead.
//!
//! Bounds: at most `batch_max_parked` requests and [`MAX_PARKED_BYTES`] wait (a request
//! beyond that reads the table itself, as without batching), at most 8 per subscriber
//! (retransmissions), one query in flight on a remote table (on the embedded one each worker
//! may run a batch of its own). A request waits for at most `batch_window_ms` plus one query
//! (`timeout_ms`), and only when at least two more are expected within the window (at the
//! rate requests were parked lately); a lone request at a low rate is read at once. When the
//! query fails the parked requests run again anyway and read the table themselves, which
//! answers 503 while it is down. Nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use geosip_core::metrics::Counter;
use parking_lot::{Condvar, Mutex};

use crate::subscribers::Subscribers;

/// Continues a parked request (runs it again, marked as resumed).
pub type Resume = Box<dyn FnOnce() + Send>;

/// Runs the resumptions of one batch (the given closure) inside whatever the server needs
/// around them: the transports' corked sending, so the batch's answers leave in one syscall.
pub type Wrapper = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

/// Most users in one query (the store's `MANY_MAX`).
const MAX_BATCH: usize = geosip_store::subscriber::sql::MANY_MAX;
/// Where the SIP workers run batches themselves (an in-process table), how much longer than
/// a batch's window the thread leaves it to them: under load a worker comes by within a
/// fraction of a millisecond; the thread runs what is left when traffic stopped.
const INLINE_GRACE: Duration = Duration::from_millis(5);
/// Most requests parked on one subscriber: the request and its retransmissions.
const MAX_PER_KEY: usize = 8;
/// Most bytes of parked requests: `batch_max_parked` alone would allow 10,000 requests of
/// 64 KiB each while the database is slow. 32 MiB holds 40,000 ordinary REGISTERs.
pub const MAX_PARKED_BYTES: usize = 32 << 20;

/// A subscriber waited for: (user, domain).
pub(crate) type Key = (Box<[u8]>, Box<[u8]>);

#[derive(Default)]
struct State {
    /// Keys in order of arrival; each is in `parked`.
    order: VecDeque<Key>,
    parked: HashMap<Key, Vec<(usize, Resume)>>,
    total: usize,
    bytes: usize,
    first_at: Option<Instant>,
    stop: bool,
    /// Requests parked per second (moving average, updated at each batch).
    rate: f64,
    parked_since: u64,
    last_batch: Option<Instant>,
    /// [`INLINE_GRACE`]; longer in tests.
    grace: Duration,
}

/// Counters of the batch reader.
#[derive(Default, Debug)]
pub struct BatchStats {
    /// Requests parked.
    pub parked: Counter,
    /// Queries run.
    pub queries: Counter,
    /// Users asked for in those queries.
    pub users: Counter,
    /// Queries that failed (their requests read the table themselves).
    pub failures: Counter,
    /// Batches a SIP worker ran itself ([`BatchReader::run_due`], embedded table); the rest
    /// of `queries` ran on the reader's thread.
    pub on_worker: Counter,
    /// Requests not parked because `batch_max_parked` were waiting.
    pub overflows: Counter,
}

/// The parked requests and the thread that reads their subscribers.
pub struct BatchReader {
    state: Mutex<State>,
    cv: Condvar,
    window: Duration,
    max_parked: usize,
    wrapper: Mutex<Option<Wrapper>>,
    /// The table is read in-process (an SQLite file): the SIP workers run due batches
    /// themselves ([`run_due`](Self::run_due)), the thread only when none came by.
    inline: bool,
    /// Whether any request is parked (read without the lock by [`run_due`](Self::run_due)).
    pending: AtomicBool,
    subs: Weak<Subscribers>,
    /// Counters.
    pub stats: BatchStats,
}

impl BatchReader {
    /// Starts the reader thread over `subs` (which must batch reads: an SQL table read on the
    /// calling thread).
    pub fn start(
        subs: &Arc<Subscribers>,
        window: Duration,
        max_parked: usize,
    ) -> std::io::Result<Arc<BatchReader>> {
        let b = Arc::new(BatchReader {
            state: Mutex::new(State {
                grace: INLINE_GRACE,
                ..State::default()
            }),
            cv: Condvar::new(),
            window,
            max_parked: max_parked.max(1),
            wrapper: Mutex::new(None),
            inline: subs.reads_locally(),
            pending: AtomicBool::new(false),
            subs: Arc::downgrade(subs),
            stats: BatchStats::default(),
        });
        let me = Arc::downgrade(&b);
        std::thread::Builder::new()
            .name("auth-batch".into())
            .spawn(move || run(me))?;
        Ok(b)
    }

    /// Runs the next batch on the calling thread if one is due (its window has passed or it
    /// is full); a SIP worker calls this between receives. Only where the table is read
    /// in-process (an SQLite file): a batch there costs no wait, and running it on the
    /// worker saves the wake-ups of a second thread and the preemptions between the two.
    /// Returns whether a batch ran.
    pub fn run_due(&self) -> bool {
        if !self.inline || !self.pending.load(Ordering::Acquire) {
            return false;
        }
        let batch = {
            let mut s = self.state.lock();
            let now = Instant::now();
            if s.order.is_empty() || now < self.due(&s, now) {
                return false;
            }
            self.take(&mut s)
        };
        self.stats.on_worker.inc();
        self.execute(batch);
        true
    }

    /// Whether another request may be parked now.
    pub fn has_room(&self) -> bool {
        let s = self.state.lock();
        !s.stop && s.total < self.max_parked && s.bytes < MAX_PARKED_BYTES
    }

    /// Parks `resume`, holding a request of `bytes`, until the subscriber `user@domain` has
    /// been read. When it cannot be parked (stopped, full), `resume` is handed back: the caller
    /// runs it now.
    pub fn park(
        &self,
        user: &[u8],
        domain: &[u8],
        bytes: usize,
        resume: Resume,
    ) -> Result<(), Resume> {
        let mut s = self.state.lock();
        if s.stop || s.total >= self.max_parked || s.bytes + bytes > MAX_PARKED_BYTES {
            self.stats.overflows.inc();
            return Err(resume);
        }
        let key: Key = (user.into(), domain.into());
        let fresh = !s.parked.contains_key(&key);
        let list = s.parked.entry(key.clone()).or_default();
        if list.len() >= MAX_PER_KEY {
            return Err(resume);
        }
        list.push((bytes, resume));
        s.total += 1;
        s.bytes += bytes;
        s.parked_since += 1;
        if fresh {
            s.order.push_back(key);
        }
        // The reader sleeps until the window of the first key has passed: wake it only for
        // the first key and for a full batch (a wake-up per request would cost a context
        // switch each).
        let wake = s.first_at.is_none() || (fresh && s.order.len() == MAX_BATCH);
        if s.first_at.is_none() {
            s.first_at = Some(Instant::now());
        }
        self.pending.store(true, Ordering::Release);
        self.stats.parked.inc();
        drop(s);
        if wake {
            self.cv.notify_one();
        }
        Ok(())
    }

    /// How long the thread leaves a due batch to the workers where they run batches
    /// ([`INLINE_GRACE`] by default); tests lengthen it to tell who ran a batch.
    pub fn set_inline_grace(&self, grace: Duration) {
        self.state.lock().grace = grace;
    }

    /// Sets what runs around each batch's resumptions (see [`Wrapper`]).
    pub fn set_wrapper(&self, w: Wrapper) {
        *self.wrapper.lock() = Some(w);
    }

    /// Requests parked now.
    pub fn parked(&self) -> usize {
        self.state.lock().total
    }

    /// Stops the thread after it has run every parked request.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_one();
    }

    /// How long the oldest parked request waits for company: the window, or nothing when
    /// fewer than two more are expected in it at the recent rate (at a low rate a lone
    /// request is read at once).
    fn wait(&self, s: &State) -> Duration {
        if s.rate * self.window.as_secs_f64() >= 2.0 {
            self.window
        } else {
            Duration::ZERO
        }
    }

    /// When the next batch is due, seen at `now`: at once when it is full or the reader
    /// stops, else once the oldest request's wait has passed.
    fn due(&self, s: &State, now: Instant) -> Instant {
        if s.order.len() >= MAX_BATCH || s.stop {
            return now;
        }
        s.first_at.map_or(now, |t| t + self.wait(s))
    }

    /// Waits for the next batch: up to [`MAX_BATCH`] keys of one domain with their parked
    /// requests, once it is due. Where the workers run batches themselves, the thread gives
    /// them [`INLINE_GRACE`] more and takes only a batch none of them came by for.
    fn next_batch(&self) -> Option<(Vec<Key>, Vec<Resume>)> {
        let mut s = self.state.lock();
        loop {
            if s.order.is_empty() {
                if s.stop {
                    return None;
                }
                self.cv.wait_for(&mut s, Duration::from_millis(250));
                continue;
            }
            let now = Instant::now();
            // Where workers run batches, even a full one is theirs for a while: the thread
            // takes it only once the oldest request waited its time and the grace.
            let due = if self.inline && !s.stop {
                s.first_at.map_or(now, |t| t + self.wait(&s) + s.grace)
            } else {
                self.due(&s, now)
            };
            if now < due {
                self.cv.wait_until(&mut s, due);
                continue;
            }
            break;
        }
        Some(self.take(&mut s))
    }

    /// Takes the next batch out of `s` (which holds at least one key): the oldest key's
    /// domain, up to [`MAX_BATCH`] keys of it with their requests.
    fn take(&self, s: &mut State) -> (Vec<Key>, Vec<Resume>) {
        let now = Instant::now();
        if let Some(last) = s.last_batch {
            let secs = now.duration_since(last).as_secs_f64().max(1e-3);
            let r = s.parked_since as f64 / secs;
            s.rate = 0.7 * s.rate + 0.3 * r;
        }
        s.last_batch = Some(now);
        s.parked_since = 0;
        // The oldest key's domain; the others of that domain come along. Keys of other
        // domains met on the way keep their place at the front.
        let Some(domain) = s.order.front().map(|k| k.1.clone()) else {
            return (Vec::new(), Vec::new());
        };
        let mut keys = Vec::new();
        let mut others = Vec::new();
        while keys.len() < MAX_BATCH
            && let Some(k) = s.order.pop_front()
        {
            if k.1 == domain {
                keys.push(k);
            } else {
                others.push(k);
            }
        }
        for k in others.into_iter().rev() {
            s.order.push_front(k);
        }
        let mut resumes = Vec::new();
        for k in &keys {
            if let Some(v) = s.parked.remove(k) {
                s.total -= v.len();
                for (bytes, r) in v {
                    s.bytes -= bytes;
                    resumes.push(r);
                }
            }
        }
        // Keys left (other domains) have waited long enough: they go next.
        if s.order.is_empty() {
            s.first_at = None;
            self.pending.store(false, Ordering::Release);
        }
        (keys, resumes)
    }

    /// Reads the subscribers of a batch taken by [`take`](Self::take) and runs its requests
    /// again, in arrival order, inside the wrapper (corked sends). Each finds its subscriber
    /// cached, or reads it itself when the read failed.
    fn execute(&self, (keys, resumes): (Vec<Key>, Vec<Resume>)) {
        if let Some(subs) = self.subs.upgrade() {
            self.stats.queries.inc();
            self.stats.users.add(keys.len() as u64);
            if !subs.read_many(&keys) {
                self.stats.failures.inc();
            }
        }
        let wrapper = self.wrapper.lock().clone();
        let mut resumes = resumes.into_iter();
        // A request that panics must not stop the reader: every later one would wait forever.
        let mut all = || {
            for r in resumes.by_ref() {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(r)).is_err() {
                    tracing::error!(target: "geosip_auth", "a parked request panicked when it ran again");
                }
            }
        };
        match wrapper {
            Some(w) => w(&mut all),
            None => all(),
        }
    }
}

fn run(me: Weak<BatchReader>) {
    loop {
        let Some(b) = me.upgrade() else { return };
        let Some(batch) = b.next_batch() else {
            return;
        };
        b.execute(batch);
    }
}
