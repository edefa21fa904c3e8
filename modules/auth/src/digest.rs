//! Digest computations (RFC 2617 §3.2.2, RFC 7616 §3.4.1-3.4.3, RFC 8760) for MD5, SHA-256 and
//! SHA-512/256, into stack buffers (no allocation on the hot path).

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

/// A digest algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (RFC 2617; the only one most SIP phones know).
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
    /// SHA-512/256 (RFC 7616 `SHA-512-256`, RFC 8760).
    Sha512_256,
}

impl Algorithm {
    /// Every algorithm, in the order of the subscriber table's HA1 columns.
    pub const ALL: [Algorithm; 3] = [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256];

    /// The `algorithm` token (RFC 7616 §6.1).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    /// Parses an `algorithm` token (case-insensitive); `-sess` variants are not supported.
    pub fn parse(token: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(token))
    }

    /// Length of the lowercase hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 | Algorithm::Sha512_256 => 64,
        }
    }

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512_256 => "sha512_256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A lowercase hex digest (up to 64 digits) on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex {
    buf: [u8; 64],
    len: u8,
}

impl Hex {
    /// The hex digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The hex digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    fn from_raw(raw: &[u8]) -> Hex {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut h = Hex {
            buf: [0; 64],
            len: 0,
        };
        for (i, b) in raw.iter().take(32).enumerate() {
            h.buf[2 * i] = HEX[usize::from(b >> 4)];
            h.buf[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        h.len = (raw.len().min(32) * 2) as u8;
        h
    }

    /// Parses lowercase or uppercase hex of the right length for `alg` (stored HA1s).
    pub fn parse(alg: Algorithm, s: &[u8]) -> Option<Hex> {
        if s.len() != alg.hex_len() || !s.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut h = Hex {
            buf: [0; 64],
            len: s.len() as u8,
        };
        for (d, c) in h.buf.iter_mut().zip(s) {
            *d = c.to_ascii_lowercase();
        }
        Some(h)
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `H(p1:p2:...:pn)` in lowercase hex.
pub fn h(alg: Algorithm, parts: &[&[u8]]) -> Hex {
    fn run<D: Digest>(parts: &[&[u8]]) -> Hex {
        let mut d = D::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                d.update(b":");
            }
            d.update(p);
        }
        Hex::from_raw(&d.finalize())
    }
    match alg {
        Algorithm::Md5 => run::<Md5>(parts),
        Algorithm::Sha256 => run::<Sha256>(parts),
        Algorithm::Sha512_256 => run::<Sha512_256>(parts),
    }
}

/// HA1 = `H(username:realm:password)` (RFC 7616 §3.4.2, non-session variants).
pub fn ha1(alg: Algorithm, username: &[u8], realm: &[u8], password: &[u8]) -> Hex {
    h(alg, &[username, realm, password])
}

/// The quality of protection of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qop {
    /// No qop (RFC 2069 compatibility): `H(HA1:nonce:HA2)`.
    None,
    /// `auth`.
    Auth,
    /// `auth-int`: HA2 covers the body.
    AuthInt,
}

impl Qop {
    /// Token as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::None => "",
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// What a digest response is computed over, besides HA1.
#[derive(Clone, Copy, Debug)]
pub struct ResponseInput<'a> {
    /// Request method.
    pub method: &'a [u8],
    /// `uri` of the credentials (digest-uri).
    pub uri: &'a [u8],
    /// `nonce`.
    pub nonce: &'a [u8],
    /// `nc` as sent (8 hex digits), with a qop.
    pub nc: &'a [u8],
    /// `cnonce`, with a qop.
    pub cnonce: &'a [u8],
    /// qop used.
    pub qop: Qop,
    /// Message body (for `auth-int`).
    pub body: &'a [u8],
}

/// The expected `response` (request-digest) for HA1 and the request.
pub fn response(alg: Algorithm, ha1: &Hex, r: &ResponseInput<'_>) -> Hex {
    let ha2 = match r.qop {
        Qop::AuthInt => {
            let hb = h(alg, &[r.body]);
            h(alg, &[r.method, r.uri, hb.as_bytes()])
        }
        Qop::Auth | Qop::None => h(alg, &[r.method, r.uri]),
    };
    match r.qop {
        Qop::None => h(alg, &[ha1.as_bytes(), r.nonce, ha2.as_bytes()]),
        q => h(
            alg,
            &[
                ha1.as_bytes(),
                r.nonce,
                r.nc,
                r.cnonce,
                q.as_str().as_bytes(),
                ha2.as_bytes(),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_section_3_5_example() {
        let ha1 = ha1(
            Algorithm::Md5,
            b"Mufasa",
            b"testrealm@host.com",
            b"Circle Of Life",
        );
        assert_eq!(ha1.as_str(), "939e7578ed9e3c518a452acee763bce9");
        let r = ResponseInput {
            method: b"GET",
            uri: b"/dir/index.html",
            nonce: b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc: b"00000001",
            cnonce: b"0a4f113b",
            qop: Qop::Auth,
            body: b"",
        };
        assert_eq!(
            response(Algorithm::Md5, &ha1, &r).as_str(),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    const RFC7616_NONCE: &[u8] = b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &[u8] = b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(alg: Algorithm) -> (Hex, Hex) {
        let ha1 = ha1(alg, b"Mufasa", b"http-auth@example.org", b"Circle of Life");
        let r = ResponseInput {
            method: b"GET",
            uri: b"/dir/index.html",
            nonce: RFC7616_NONCE,
            nc: b"00000001",
            cnonce: RFC7616_CNONCE,
            qop: Qop::Auth,
            body: b"",
        };
        (ha1, response(alg, &ha1, &r))
    }

    #[test]
    fn rfc7616_section_3_9_1_examples_md5_and_sha256() {
        assert_eq!(
            rfc7616(Algorithm::Md5).1.as_str(),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        assert_eq!(
            rfc7616(Algorithm::Sha256).1.as_str(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn sha512_256_matches_pythons_hashlib() {
        // Computed with Python 3 hashlib.new("sha512_256") over the RFC 7616 §3.9.1 inputs.
        let (ha1, resp) = rfc7616(Algorithm::Sha512_256);
        assert_eq!(
            ha1.as_str(),
            "fb174f5c3c7802721517cae13b98e2b8dae2e0118cb705d94ee29946319204ce"
        );
        assert_eq!(
            resp.as_str(),
            "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0"
        );
        // And a SIP REGISTER.
        let ha1 = ha1_of("alice", "example.com", "secret");
        assert_eq!(
            ha1.as_str(),
            "9e413627514b03d0753229d450617d94a9b2a2a635222e49bad90404c29e97ad"
        );
        let r = ResponseInput {
            method: b"REGISTER",
            uri: b"sip:example.com",
            nonce: b"abc",
            nc: b"00000001",
            cnonce: b"xyz",
            qop: Qop::Auth,
            body: b"",
        };
        assert_eq!(
            response(Algorithm::Sha512_256, &ha1, &r).as_str(),
            "786b399fa0c87b224d07241651b2310266e737d578b7857772644f02ef75d758"
        );
    }

    fn ha1_of(u: &str, r: &str, p: &str) -> Hex {
        ha1(
            Algorithm::Sha512_256,
            u.as_bytes(),
            r.as_bytes(),
            p.as_bytes(),
        )
    }

    #[test]
    fn without_qop_the_rfc2069_form_is_used_and_auth_int_covers_the_body() {
        let ha1 = ha1(Algorithm::Md5, b"bob", b"biloxi.com", b"zanzibar");
        let base = ResponseInput {
            method: b"INVITE",
            uri: b"sip:bob@biloxi.com",
            nonce: b"n",
            nc: b"",
            cnonce: b"",
            qop: Qop::None,
            body: b"v=0\r\n",
        };
        let ha2 = h(Algorithm::Md5, &[b"INVITE", b"sip:bob@biloxi.com"]);
        assert_eq!(
            response(Algorithm::Md5, &ha1, &base),
            h(Algorithm::Md5, &[ha1.as_bytes(), b"n", ha2.as_bytes()])
        );
        let int = ResponseInput {
            qop: Qop::AuthInt,
            nc: b"00000001",
            cnonce: b"c",
            ..base
        };
        let other_body = ResponseInput {
            body: b"v=1\r\n",
            ..int
        };
        assert_ne!(
            response(Algorithm::Md5, &ha1, &int),
            response(Algorithm::Md5, &ha1, &other_body)
        );
        assert_eq!(Algorithm::parse(b"sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse(b"MD5-sess"), None);
        assert_eq!(
            Hex::parse(Algorithm::Md5, b"939E7578ED9E3C518A452ACEE763BCE9")
                .map(|h| h.as_str().to_string())
                .as_deref(),
            Some("939e7578ed9e3c518a452acee763bce9")
        );
        assert!(Hex::parse(Algorithm::Sha256, b"939e7578ed9e3c518a452acee763bce9").is_none());
    }
}
