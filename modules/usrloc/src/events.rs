//! Change events (Kamailio's `UL_CONTACT_INSERT/UPDATE/DELETE/EXPIRE` callbacks) on a bounded
//! channel. A slow consumer never blocks REGISTER processing: when the channel is full the event
//! is dropped and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use geosip_store::location::Binding;

/// What happened to a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A new binding.
    Insert,
    /// A binding was refreshed or changed.
    Update,
    /// A binding was removed (unregister, `Contact: *`, RPC).
    Delete,
    /// A binding expired (sweeper, or found expired on an update).
    Expire,
}

/// Who caused the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// This node (REGISTER, RPC, expiry).
    Local,
    /// Applied from another node by [`Location::apply_remote`](crate::Location::apply_remote);
    /// a replicator must not send these back out.
    Remote,
}

/// One change, with the full binding (for deletes: as it was before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Who caused it.
    pub origin: Origin,
    /// The binding.
    pub binding: Binding,
}

pub(crate) struct EventBus {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    subscribed: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> EventBus {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        EventBus {
            tx,
            rx,
            subscribed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        self.subscribed.store(true, Ordering::Release);
        self.rx.clone()
    }

    /// Whether anyone listens (no events are built otherwise).
    pub(crate) fn active(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    pub(crate) fn emit(&self, kind: EventKind, origin: Origin, binding: Binding) {
        if !self.active() {
            return;
        }
        match self.tx.try_send(Event {
            kind,
            origin,
            binding,
        }) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
