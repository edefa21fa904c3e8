//! Stateless nonces: `base64url(ts | salt | HMAC-SHA256(secret, ts | salt | realm)[..16])`.
//!
//! Any node holding the same secret can check a nonce another node issued: nothing is stored
//! when a challenge is sent. `ts` (unix seconds, 32 bits) gives the expiry; `salt` (64 random
//! bits) makes every challenge unique and keys the nonce-count table; binding the realm stops a
//! nonce issued for one realm being used in another.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const TS: usize = 4;
const SALT: usize = 8;
const MAC: usize = 16;
/// Decoded length.
const RAW: usize = TS + SALT + MAC;
/// Encoded length (base64url, no padding).
pub const NONCE_LEN: usize = (RAW * 4).div_ceil(3);

/// What a received nonce turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceState {
    /// Issued by a node with our secret for this realm, not expired.
    Valid {
        /// Issue time, unix seconds.
        ts: u32,
        /// Random salt.
        salt: u64,
    },
    /// Genuine but older than `nonce_expires`.
    Expired,
    /// Not ours (tampered, another secret or realm, garbage, or from the future).
    Invalid,
}

/// The nonce secret.
pub struct NonceKey {
    mac: Hmac<Sha256>,
}

impl NonceKey {
    /// A key from the shared secret.
    pub fn new(secret: &[u8]) -> NonceKey {
        // HMAC accepts keys of any length.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        NonceKey { mac }
    }

    fn tag(&self, ts: u32, salt: u64, realm: &[u8]) -> [u8; MAC] {
        let mut m = self.mac.clone();
        m.update(b"geosip-nonce-v1");
        m.update(&ts.to_be_bytes());
        m.update(&salt.to_be_bytes());
        m.update(realm);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC];
        out.copy_from_slice(&full[..MAC]);
        out
    }

    /// A nonce for `realm` issued at `now_s` (unix seconds) with `salt`.
    pub fn issue(&self, realm: &[u8], now_s: u64, salt: u64) -> String {
        let ts = now_s.min(u64::from(u32::MAX)) as u32;
        let mut raw = [0u8; RAW];
        raw[..TS].copy_from_slice(&ts.to_be_bytes());
        raw[TS..TS + SALT].copy_from_slice(&salt.to_be_bytes());
        raw[TS + SALT..].copy_from_slice(&self.tag(ts, salt, realm));
        b64_encode(&raw)
    }

    /// Checks a received nonce for `realm` at `now_s`: valid for `expires_s` seconds after
    /// issue, and at most `skew_s` seconds in the future (clocks of cluster nodes differ).
    pub fn check(
        &self,
        nonce: &[u8],
        realm: &[u8],
        now_s: u64,
        expires_s: u64,
        skew_s: u64,
    ) -> NonceState {
        let Some(raw) = b64_decode::<RAW>(nonce) else {
            return NonceState::Invalid;
        };
        let mut ts_b = [0u8; TS];
        ts_b.copy_from_slice(&raw[..TS]);
        let mut salt_b = [0u8; SALT];
        salt_b.copy_from_slice(&raw[TS..TS + SALT]);
        let (ts, salt) = (u32::from_be_bytes(ts_b), u64::from_be_bytes(salt_b));
        let want = self.tag(ts, salt, realm);
        if !bool::from(want.ct_eq(&raw[TS + SALT..])) {
            return NonceState::Invalid;
        }
        let ts64 = u64::from(ts);
        if ts64 > now_s + skew_s {
            return NonceState::Invalid;
        }
        if now_s.saturating_sub(ts64) > expires_s {
            return NonceState::Expired;
        }
        NonceState::Valid { ts, salt }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    } as u32)
}

fn b64_decode<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let mut out = [0u8; N];
    let mut o = 0;
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= b64_value(c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            *out.get_mut(o)? = (n >> (16 - 8 * i)) as u8;
            o += 1;
        }
    }
    (o == N).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000;

    #[test]
    fn a_nonce_is_valid_until_it_expires_then_stale() {
        let k = NonceKey::new(b"cluster secret");
        let n = k.issue(b"example.com", NOW, 42);
        assert_eq!(n.len(), NONCE_LEN);
        assert!(
            n.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(
            k.check(n.as_bytes(), b"example.com", NOW + 300, 300, 30),
            NonceState::Valid {
                ts: NOW as u32,
                salt: 42
            }
        );
        assert_eq!(
            k.check(n.as_bytes(), b"example.com", NOW + 301, 300, 30),
            NonceState::Expired
        );
    }

    #[test]
    fn another_node_with_the_same_secret_accepts_it_and_other_secrets_or_realms_do_not() {
        let n = NonceKey::new(b"s3cret").issue(b"example.com", NOW, 7);
        let other_node = NonceKey::new(b"s3cret");
        assert!(matches!(
            other_node.check(n.as_bytes(), b"example.com", NOW, 300, 30),
            NonceState::Valid { .. }
        ));
        assert_eq!(
            NonceKey::new(b"other").check(n.as_bytes(), b"example.com", NOW, 300, 30),
            NonceState::Invalid
        );
        assert_eq!(
            other_node.check(n.as_bytes(), b"example.org", NOW, 300, 30),
            NonceState::Invalid
        );
    }

    #[test]
    fn tampered_truncated_garbage_and_future_nonces_are_invalid() {
        let k = NonceKey::new(b"k");
        let n = k.issue(b"r", NOW, 1);
        for i in 0..n.len() {
            let mut t = n.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(
                k.check(&t, b"r", NOW, 300, 30),
                NonceState::Invalid,
                "byte {i}"
            );
        }
        // Move the timestamp forward by re-issuing with a later time under another key: invalid.
        assert_eq!(
            k.check(&n.as_bytes()[1..], b"r", NOW, 300, 30),
            NonceState::Invalid
        );
        assert_eq!(k.check(b"", b"r", NOW, 300, 30), NonceState::Invalid);
        assert_eq!(
            k.check(b"dcd98b7102dd2f0e8b11d0f600bfb0c093", b"r", NOW, 300, 30),
            NonceState::Invalid
        );
        assert_eq!(
            k.check("é".repeat(19).as_bytes(), b"r", NOW, 300, 30),
            NonceState::Invalid
        );
        let future = k.issue(b"r", NOW + 31, 1);
        assert_eq!(
            k.check(future.as_bytes(), b"r", NOW, 300, 30),
            NonceState::Invalid
        );
        let slightly = k.issue(b"r", NOW + 29, 1);
        assert!(matches!(
            k.check(slightly.as_bytes(), b"r", NOW, 300, 30),
            NonceState::Valid { .. }
        ));
    }

    #[test]
    fn base64url_round_trips() {
        let raw: [u8; RAW] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let e = b64_encode(&raw);
        assert_eq!(b64_decode::<RAW>(e.as_bytes()), Some(raw));
        assert_eq!(b64_decode::<RAW>(&e.as_bytes()[..e.len() - 1]), None);
    }
}
