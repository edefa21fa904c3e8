//! A compact, versioned binary encoding of one [`Binding`]: the value of a Redis hash field, and
//! usable by replication to ship bindings between nodes.
//!
//! Layout (little endian), version 1:
//! `0x01 | expires u64 | q u16 | cseq u32 | reg_id u32 | flags u32 | last_modified u64 |
//! ruid u128 | server_id u32 | received | aor, contact, call_id, path, user_agent, instance`
//! where each byte string is `u32 length | bytes` and `received` is `0` (none) or
//! `transport code | address | address` with an address `4|6, ip, port u16`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::{Binding, Received, Ruid, Transport};

const VERSION: u8 = 1;

/// Encodes a binding.
pub fn encode(b: &Binding) -> Vec<u8> {
    let strings = b.aor.len()
        + b.contact.len()
        + b.call_id.len()
        + b.path.len()
        + b.user_agent.len()
        + b.instance.len();
    let mut out = Vec::with_capacity(96 + strings);
    out.push(VERSION);
    out.extend_from_slice(&b.expires.to_le_bytes());
    out.extend_from_slice(&b.q.to_le_bytes());
    out.extend_from_slice(&b.cseq.to_le_bytes());
    out.extend_from_slice(&b.reg_id.to_le_bytes());
    out.extend_from_slice(&b.flags.to_le_bytes());
    out.extend_from_slice(&b.last_modified.to_le_bytes());
    out.extend_from_slice(&b.ruid.0.to_le_bytes());
    out.extend_from_slice(&b.server_id.to_le_bytes());
    match &b.received {
        None => out.push(0),
        Some(r) => {
            out.push(r.transport as u8);
            put_addr(&mut out, r.source);
            put_addr(&mut out, r.local);
        }
    }
    for s in [
        &b.aor,
        &b.contact,
        &b.call_id,
        &b.path,
        &b.user_agent,
        &b.instance,
    ] {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|a| a[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> Option<u128> {
        self.array().map(u128::from_le_bytes)
    }
    fn addr(&mut self) -> Option<SocketAddr> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.u16()?))
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        self.take(n).map(Bytes::copy_from_slice)
    }
}

/// Decodes a binding; `None` if the bytes are not a valid version-1 encoding (never panics).
pub fn decode(buf: &[u8]) -> Option<Binding> {
    let mut r = Reader { buf };
    if r.u8()? != VERSION {
        return None;
    }
    let expires = r.u64()?;
    let q = r.u16()?;
    let cseq = r.u32()?;
    let reg_id = r.u32()?;
    let flags = r.u32()?;
    let last_modified = r.u64()?;
    let ruid = Ruid(r.u128()?);
    let server_id = r.u32()?;
    let received = match r.u8()? {
        0 => None,
        t => Some(Received {
            transport: Transport::from_code(t)?,
            source: r.addr()?,
            local: r.addr()?,
        }),
    };
    let b = Binding {
        aor: r.bytes()?,
        contact: r.bytes()?,
        call_id: r.bytes()?,
        path: r.bytes()?,
        user_agent: r.bytes()?,
        instance: r.bytes()?,
        expires,
        q,
        cseq,
        received,
        reg_id,
        flags,
        last_modified,
        ruid,
        server_id,
    };
    r.buf.is_empty().then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_binding_decodes_to_the_same_binding_and_garbage_decodes_to_none() {
        let b = Binding {
            aor: Bytes::from_static(b"sip:alice@example.com"),
            contact: Bytes::from_static(b"sip:alice@[2001:db8::1]:5060;transport=tcp"),
            expires: 1_800_000_000,
            q: 500,
            call_id: Bytes::from_static(b"abc@host"),
            cseq: 42,
            received: Some(Received {
                transport: Transport::Tcp,
                source: "[2001:db8::1]:40000".parse().unwrap(),
                local: "192.0.2.10:5060".parse().unwrap(),
            }),
            path: Bytes::from_static(b"<sip:edge;lr>"),
            user_agent: Bytes::from_static(b"phone/1.0"),
            instance: Bytes::from_static(b"<urn:uuid:1>"),
            reg_id: 1,
            flags: 7,
            last_modified: 1_800_000_000_123,
            ruid: Ruid::generate(3),
            server_id: 3,
        };
        let enc = encode(&b);
        assert_eq!(decode(&enc), Some(b));
        for cut in 0..enc.len() {
            assert_eq!(decode(&enc[..cut]), None);
        }
        assert_eq!(decode(b"\x02garbage"), None);
    }
}
