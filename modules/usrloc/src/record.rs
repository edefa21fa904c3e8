//! Compact in-memory form of one AOR: a single boxed byte blob holding the AOR and all its
//! bindings, with User-Agent strings interned per shard. A typical binding costs ~160 bytes here
//! (see docs/performance.md); a `Binding` is only materialised when someone reads it.
//!
//! Record: `aor_len u16 | count u16 | min_expires u32 | aor | binding*`.
//! Binding: fixed part of [`FIXED`] bytes, then the received addresses (0, 12, 24 or 36
//! bytes), then contact, call-id, path and instance.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use geosip_store::location::{Binding, Received, Ruid, Transport, limits};
use hashbrown::HashTable;

use crate::Error;

const HEADER: usize = 8;
const FIXED: usize = 59;
/// No User-Agent.
pub(crate) const NO_UA: u32 = u32::MAX;

/// Interned strings with reference counts; ids are reused after release.
#[derive(Default)]
pub(crate) struct Interner {
    index: HashTable<u32>,
    slots: Vec<(Box<[u8]>, u32)>,
    free: Vec<u32>,
}

fn h(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

impl Interner {
    /// Id of `s` with one more reference.
    pub(crate) fn intern(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return NO_UA;
        }
        let slots = &mut self.slots;
        if let Some(&id) = self.index.find(h(s), |&id| {
            slots.get(id as usize).is_some_and(|(b, _)| &**b == s)
        }) {
            if let Some(slot) = slots.get_mut(id as usize) {
                slot.1 += 1;
            }
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.slots.get_mut(id as usize) {
                    *slot = (s.into(), 1);
                }
                id
            }
            None => {
                self.slots.push((s.into(), 1));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(h(s), id, |&i| {
            slots.get(i as usize).map_or(0, |(b, _)| h(b))
        });
        id
    }

    /// Drops one reference of `id`; frees the string with the last one.
    pub(crate) fn release(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 > 0 {
            return;
        }
        let bytes = std::mem::take(&mut slot.0);
        if let Ok(e) = self.index.find_entry(h(&bytes), |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
    }

    /// The string of `id` (empty for [`NO_UA`] or an unknown id).
    pub(crate) fn get(&self, id: u32) -> &[u8] {
        self.slots.get(id as usize).map_or(&[], |(b, _)| b)
    }

    /// Distinct strings held.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

/// The AOR of a record.
pub(crate) fn aor(rec: &[u8]) -> &[u8] {
    let n = rec
        .get(..2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    rec.get(HEADER..HEADER + n).unwrap_or_default()
}

/// Smallest `expires` of the record's bindings (for a quick "anything expired?" check).
pub(crate) fn min_expires(rec: &[u8]) -> u32 {
    rec.get(4..8)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn addr_len(a: &SocketAddr) -> usize {
    if a.is_ipv4() { 6 } else { 18 }
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

/// Checks that a binding fits the record format and the store schemas.
pub(crate) fn validate(b: &Binding) -> Result<(), Error> {
    let checks: [(&[u8], usize, &'static str); 6] = [
        (&b.aor, limits::AOR, "AOR"),
        (&b.contact, limits::CONTACT, "contact"),
        (&b.call_id, limits::CALL_ID, "Call-ID"),
        (&b.user_agent, limits::USER_AGENT, "User-Agent"),
        (&b.instance, limits::INSTANCE, "+sip.instance"),
        (&b.path, limits::PATH, "Path"),
    ];
    for (v, max, what) in checks {
        if v.len() > max {
            return Err(Error::InvalidBinding(format!(
                "{what} longer than {max} bytes"
            )));
        }
    }
    // SIP messages are UTF-8 (RFC 3261 §7.3.1); PostgreSQL TEXT columns also refuse NUL. Refusing
    // such values here keeps one bad binding from failing a whole write-back batch later.
    for (v, what) in [
        (&b.aor, "AOR"),
        (&b.contact, "contact"),
        (&b.call_id, "Call-ID"),
        (&b.user_agent, "User-Agent"),
        (&b.instance, "+sip.instance"),
        (&b.path, "Path"),
    ] {
        if std::str::from_utf8(v).is_err() || v.contains(&0) {
            return Err(Error::InvalidBinding(format!("{what} is not UTF-8 text")));
        }
    }
    if b.contact.is_empty() {
        return Err(Error::InvalidBinding("empty contact".into()));
    }
    if b.q > 1000 {
        return Err(Error::InvalidBinding("q above 1000".into()));
    }
    Ok(())
}

/// Encodes an AOR record; interns the User-Agents (one reference each). `bindings` must have been
/// validated and be at most `u16::MAX` long.
pub(crate) fn encode(aor: &[u8], bindings: &[Binding], ua: &mut Interner) -> Box<[u8]> {
    let mut size = HEADER + aor.len();
    for b in bindings {
        size += FIXED + b.contact.len() + b.call_id.len() + b.path.len() + b.instance.len();
        if let Some(r) = &b.received {
            size += addr_len(&r.source) + addr_len(&r.local);
        }
    }
    let mut out = Vec::with_capacity(size);
    let min = bindings
        .iter()
        .map(|b| clamp32(b.expires))
        .min()
        .unwrap_or(0);
    out.extend_from_slice(&(aor.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&(bindings.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&min.to_le_bytes());
    out.extend_from_slice(aor);
    for b in bindings.iter().take(u16::MAX as usize) {
        out.extend_from_slice(&clamp32(b.expires).to_le_bytes());
        out.extend_from_slice(&b.q.to_le_bytes());
        out.extend_from_slice(&b.cseq.to_le_bytes());
        out.extend_from_slice(&b.flags.to_le_bytes());
        out.extend_from_slice(&b.reg_id.to_le_bytes());
        out.extend_from_slice(&b.server_id.to_le_bytes());
        out.extend_from_slice(&b.last_modified.to_le_bytes());
        out.extend_from_slice(&b.ruid.0.to_le_bytes());
        out.extend_from_slice(&ua.intern(&b.user_agent).to_le_bytes());
        for s in [&b.contact, &b.call_id, &b.path, &b.instance] {
            out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_le_bytes());
        }
        match &b.received {
            None => out.push(0),
            Some(r) => {
                let tag = (r.transport as u8)
                    | if r.source.is_ipv6() { 0x10 } else { 0 }
                    | if r.local.is_ipv6() { 0x20 } else { 0 };
                out.push(tag);
                put_addr(&mut out, &r.source);
                put_addr(&mut out, &r.local);
            }
        }
        for s in [&b.contact, &b.call_id, &b.path, &b.instance] {
            out.extend_from_slice(s);
        }
    }
    out.into_boxed_slice()
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A binding inside a record, borrowed.
pub(crate) struct Raw<'a> {
    pub(crate) expires: u32,
    q: u16,
    cseq: u32,
    flags: u32,
    reg_id: u32,
    server_id: u32,
    last_modified: u64,
    ruid: u128,
    pub(crate) ua: u32,
    received: Option<Received>,
    contact: &'a [u8],
    call_id: &'a [u8],
    path: &'a [u8],
    instance: &'a [u8],
}

impl Raw<'_> {
    /// An owned binding: one allocation for all its strings (sliced), the AOR shared.
    pub(crate) fn to_binding(&self, aor: &Bytes, ua: &Interner) -> Binding {
        let agent = ua.get(self.ua);
        let mut buf = BytesMut::with_capacity(
            self.contact.len()
                + self.call_id.len()
                + self.path.len()
                + agent.len()
                + self.instance.len(),
        );
        let mut take = |s: &[u8]| {
            buf.extend_from_slice(s);
            buf.split().freeze()
        };
        Binding {
            aor: aor.clone(),
            contact: take(self.contact),
            call_id: take(self.call_id),
            path: take(self.path),
            user_agent: take(agent),
            instance: take(self.instance),
            expires: u64::from(self.expires),
            q: self.q,
            cseq: self.cseq,
            received: self.received,
            reg_id: self.reg_id,
            flags: self.flags,
            last_modified: self.last_modified,
            ruid: Ruid(self.ruid),
            server_id: self.server_id,
        }
    }
}

struct Cur<'a> {
    buf: &'a [u8],
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Some(a)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }
    fn u16(&mut self) -> Option<u16> {
        self.arr().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.arr().map(u32::from_le_bytes)
    }
    fn addr(&mut self, v6: bool) -> Option<SocketAddr> {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(self.arr::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.arr::<4>()?))
        };
        Some(SocketAddr::new(ip, self.u16()?))
    }
    fn raw(&mut self) -> Option<Raw<'a>> {
        let expires = self.u32()?;
        let q = self.u16()?;
        let cseq = self.u32()?;
        let flags = self.u32()?;
        let reg_id = self.u32()?;
        let server_id = self.u32()?;
        let last_modified = u64::from_le_bytes(self.arr()?);
        let ruid = u128::from_le_bytes(self.arr()?);
        let ua = self.u32()?;
        let (lc, li, lp, ln) = (self.u16()?, self.u16()?, self.u16()?, self.u16()?);
        let tag = self.arr::<1>()?[0];
        let received = if tag == 0 {
            None
        } else {
            Some(Received {
                transport: Transport::from_code(tag & 0x0f)?,
                source: self.addr(tag & 0x10 != 0)?,
                local: self.addr(tag & 0x20 != 0)?,
            })
        };
        Some(Raw {
            expires,
            q,
            cseq,
            flags,
            reg_id,
            server_id,
            last_modified,
            ruid,
            ua,
            received,
            contact: self.take(lc.into())?,
            call_id: self.take(li.into())?,
            path: self.take(lp.into())?,
            instance: self.take(ln.into())?,
        })
    }
}

/// The bindings of a record. Stops early (never panics) if the blob is damaged.
pub(crate) fn bindings(rec: &[u8]) -> impl Iterator<Item = Raw<'_>> {
    let n = rec
        .get(2..4)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let mut cur = Cur {
        buf: rec.get(HEADER + aor(rec).len()..).unwrap_or_default(),
    };
    (0..n).map_while(move |_| cur.raw())
}

/// Releases the interned strings a record holds.
pub(crate) fn release(rec: &[u8], ua: &mut Interner) {
    for r in bindings(rec) {
        ua.release(r.ua);
    }
}

/// All bindings of a record as owned values.
pub(crate) fn decode(rec: &[u8], ua: &Interner) -> Vec<Binding> {
    let aor = Bytes::copy_from_slice(aor(rec));
    bindings(rec).map(|r| r.to_binding(&aor, ua)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_user_agents_are_shared_and_freed() {
        let mut ua = Interner::default();
        let mk = |c: &'static str, recv: Option<Received>| Binding {
            aor: Bytes::from_static(b"sip:a@x"),
            contact: Bytes::from_static(c.as_bytes()),
            expires: 100 + c.len() as u64,
            q: 900,
            call_id: Bytes::from_static(b"cid"),
            cseq: 5,
            received: recv,
            path: Bytes::from_static(b"<sip:p;lr>"),
            user_agent: Bytes::from_static(b"UA/1"),
            instance: Bytes::new(),
            reg_id: 0,
            flags: 3,
            last_modified: 123456,
            ruid: Ruid(77),
            server_id: 9,
        };
        let recv = Received {
            transport: Transport::Wss,
            source: "[2001:db8::2]:443".parse().unwrap(),
            local: "192.0.2.1:8443".parse().unwrap(),
        };
        let bs = vec![
            mk("sip:a@1.2.3.4", None),
            mk("sip:a@5.6.7.8:5061", Some(recv)),
        ];
        let rec = encode(b"sip:a@x", &bs, &mut ua);
        assert_eq!(aor(&rec), b"sip:a@x");
        assert_eq!(min_expires(&rec), 113);
        assert_eq!(decode(&rec, &ua), bs);
        assert_eq!(ua.len(), 1);
        release(&rec, &mut ua);
        assert_eq!(ua.len(), 0);
        // A damaged blob yields fewer bindings, not a panic.
        for cut in 0..rec.len() {
            let _ = decode(&rec[..cut], &ua);
        }
    }
}
