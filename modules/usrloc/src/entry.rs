//! What the registrar sees inside [`Location::update`](crate::Location::update): the live
//! bindings of one AOR, changed in place, committed atomically when the closure returns.

use bytes::Bytes;
use geosip_store::location::{Binding, BindingKey, Received, Ruid};

use crate::Error;
use crate::events::EventKind;

/// A contact as the registrar hands it over (from REGISTER). The location service adds the AOR,
/// ruid, `last_modified` and `server_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactInfo {
    /// Contact URI, raw bytes as registered.
    pub contact: Bytes,
    /// Absolute expiry, unix seconds (must be in the future).
    pub expires: u64,
    /// q in per mille, 0..=1000 (RFC 3261 default 1.0 = 1000).
    pub q: u16,
    /// Call-ID.
    pub call_id: Bytes,
    /// CSeq number.
    pub cseq: u32,
    /// Source address / transport / local socket (NAT).
    pub received: Option<Received>,
    /// Path (raw), empty if none.
    pub path: Bytes,
    /// User-Agent.
    pub user_agent: Bytes,
    /// `+sip.instance`, empty if none.
    pub instance: Bytes,
    /// `reg-id`, 0 if none.
    pub reg_id: u32,
    /// Flags.
    pub flags: u32,
}

impl ContactInfo {
    /// Identity inside the AOR (instance + reg-id, else the contact URI).
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
}

/// Result of [`AorEntryMut::upsert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upserted {
    /// A new binding.
    Inserted,
    /// An existing binding (same identity) was refreshed.
    Updated,
}

/// The live bindings of one AOR under the AOR's lock. Changes are committed (memory, store,
/// events) when the `update` closure returns; [`rollback`](Self::rollback) drops them.
/// Do no I/O in the closure: in memory modes it runs under a shard lock.
pub struct AorEntryMut {
    pub(crate) aor: Bytes,
    pub(crate) now_ms: u64,
    pub(crate) server_id: u32,
    pub(crate) max_bindings: usize,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) original: Vec<Binding>,
}

impl AorEntryMut {
    pub(crate) fn new(
        aor: Bytes,
        now_ms: u64,
        server_id: u32,
        max_bindings: usize,
        live: Vec<Binding>,
    ) -> Self {
        AorEntryMut {
            aor,
            now_ms,
            server_id,
            max_bindings,
            original: live.clone(),
            bindings: live,
        }
    }

    /// The AOR.
    pub fn aor(&self) -> &[u8] {
        &self.aor
    }

    /// The `now` of this update, unix ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The live bindings, with the changes made so far.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// Number of live bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// No live binding?
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The binding with this identity.
    pub fn get(&self, key: BindingKey<'_>) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.key() == key)
    }

    /// The binding with this contact URI (whatever its identity).
    pub fn find_contact(&self, contact: &[u8]) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.contact == contact)
    }

    /// Inserts a binding or refreshes the one with the same identity (keeping its ruid).
    pub fn upsert(&mut self, info: ContactInfo) -> Result<Upserted, Error> {
        if info.expires <= self.now_ms / 1000 {
            return Err(Error::InvalidBinding(
                "expires is not in the future (remove the binding instead)".into(),
            ));
        }
        let existing = self.bindings.iter().position(|b| b.key() == info.key());
        let ruid = match existing {
            Some(i) => self.bindings[i].ruid,
            None => Ruid::generate(self.server_id),
        };
        let b = Binding {
            aor: self.aor.clone(),
            contact: info.contact,
            expires: info.expires,
            q: info.q,
            call_id: info.call_id,
            cseq: info.cseq,
            received: info.received,
            path: info.path,
            user_agent: info.user_agent,
            instance: info.instance,
            reg_id: info.reg_id,
            flags: info.flags,
            last_modified: self.now_ms,
            ruid,
            server_id: self.server_id,
        };
        self.put(b, existing)
    }

    /// Stores a complete binding as is (reload, replication); its AOR is forced to this one.
    pub(crate) fn put_binding(&mut self, mut b: Binding) -> Result<Upserted, Error> {
        b.aor = self.aor.clone();
        if b.ruid.is_none() {
            b.ruid = Ruid::generate(self.server_id);
        }
        let existing = self.bindings.iter().position(|x| x.key() == b.key());
        self.put(b, existing)
    }

    fn put(&mut self, b: Binding, existing: Option<usize>) -> Result<Upserted, Error> {
        crate::record::validate(&b)?;
        match existing {
            Some(i) => {
                self.bindings[i] = b;
                Ok(Upserted::Updated)
            }
            None => {
                if self.bindings.len() >= self.max_bindings {
                    return Err(Error::TooManyBindings(self.max_bindings));
                }
                self.bindings.push(b);
                Ok(Upserted::Inserted)
            }
        }
    }

    /// Removes the binding with this identity.
    pub fn remove(&mut self, key: BindingKey<'_>) -> Option<Binding> {
        let i = self.bindings.iter().position(|b| b.key() == key)?;
        Some(self.bindings.remove(i))
    }

    /// Removes the binding with this contact URI.
    pub fn remove_contact(&mut self, contact: &[u8]) -> Option<Binding> {
        let i = self.bindings.iter().position(|b| b.contact == contact)?;
        Some(self.bindings.remove(i))
    }

    /// Removes every binding (`Contact: *`); returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.bindings.len();
        self.bindings.clear();
        n
    }

    /// Drops every change made in this closure so far.
    pub fn rollback(&mut self) {
        self.bindings = self.original.clone();
    }

    /// The changes against the state before the closure ran.
    pub(crate) fn changes(&self) -> Vec<(EventKind, Binding)> {
        let mut out = Vec::new();
        for b in &self.bindings {
            match self.original.iter().find(|o| o.key() == b.key()) {
                None => out.push((EventKind::Insert, b.clone())),
                Some(o) if o != b => out.push((EventKind::Update, b.clone())),
                Some(_) => {}
            }
        }
        for o in &self.original {
            if !self.bindings.iter().any(|b| b.key() == o.key()) {
                out.push((EventKind::Delete, o.clone()));
            }
        }
        out
    }
}
