//! Authorization / Proxy-Authorization credentials and WWW-Authenticate / Proxy-Authenticate
//! challenges (RFC 3261 §20.7, §20.27, §20.28, §20.44, §25.1; RFC 7616 digest).

use std::fmt;

use crate::scan::{SplitTop, is_token, is_token_byte, skip_quoted, trim_lws};

/// The value is not `auth-scheme [LWS auth-params]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidAuth;

impl fmt::Display for InvalidAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid authentication header")
    }
}

impl std::error::Error for InvalidAuth {}

/// One credentials or challenge value: an auth scheme followed by comma-separated
/// `name=value` parameters. Any scheme is accepted; the Digest fields have typed views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthValue<'a> {
    raw: &'a [u8],
    scheme: &'a [u8],
    params: &'a [u8],
}

/// Credentials of an Authorization / Proxy-Authorization header (RFC 3261 §22.2, §22.3).
pub type Credentials<'a> = AuthValue<'a>;
/// Challenge of a WWW-Authenticate / Proxy-Authenticate header (RFC 3261 §22.1, §22.3).
pub type Challenge<'a> = AuthValue<'a>;

impl<'a> AuthValue<'a> {
    /// Parses `auth-scheme LWS auth-param *(COMMA auth-param)`.
    pub fn parse(value: &'a [u8]) -> Result<AuthValue<'a>, InvalidAuth> {
        let v = trim_lws(value);
        let e = v.iter().position(|&b| !is_token_byte(b)).unwrap_or(v.len());
        if e == 0 {
            return Err(InvalidAuth);
        }
        Ok(AuthValue {
            raw: v,
            scheme: &v[..e],
            params: trim_lws(&v[e..]),
        })
    }

    /// The whole value.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Auth scheme as received (`Digest`).
    pub fn scheme(&self) -> &'a [u8] {
        self.scheme
    }

    /// True for the `Digest` scheme (case-insensitive).
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"Digest")
    }

    /// Everything after the scheme, raw.
    pub fn params_raw(&self) -> &'a [u8] {
        self.params
    }

    /// Iterates `(name, value)` with quotes removed from quoted values (quoted-pairs are left
    /// as they are: apply [`unquote`](crate::unquote) to the raw value when they matter).
    pub fn params(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        SplitTop::new(self.params, b',')
            .filter(|p| !p.is_empty())
            .map(|p| match crate::scan::find_byte_at(b'=', p) {
                Some(eq) => (trim_lws(&p[..eq]), strip_quotes(trim_lws(&p[eq + 1..]))),
                None => (p, &b""[..]),
            })
    }

    /// Value of parameter `name` (case-insensitive), quotes removed.
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Digest credential fields (RFC 3261 §25.1 `digest-response`), when the scheme is Digest.
    pub fn digest_credentials(&self) -> Option<DigestCredentials<'a>> {
        if !self.is_digest() {
            return None;
        }
        let mut d = DigestCredentials::default();
        const NAMES: [&[u8]; 11] = [
            b"username",
            b"realm",
            b"nonce",
            b"uri",
            b"response",
            b"algorithm",
            b"cnonce",
            b"opaque",
            b"qop",
            b"nc",
            b"userhash",
        ];
        for (n, v) in self.params() {
            let Some(idx) = NAMES.iter().position(|k| n.eq_ignore_ascii_case(k)) else {
                continue;
            };
            let slot = match idx {
                0 => &mut d.username,
                1 => &mut d.realm,
                2 => &mut d.nonce,
                3 => &mut d.uri,
                4 => &mut d.response,
                5 => &mut d.algorithm,
                6 => &mut d.cnonce,
                7 => &mut d.opaque,
                8 => &mut d.qop,
                9 => &mut d.nc,
                _ => &mut d.userhash,
            };
            if slot.is_none() {
                *slot = Some(v);
            }
        }
        Some(d)
    }

    /// Digest challenge fields (RFC 3261 §25.1 `digest-cln`), when the scheme is Digest.
    pub fn digest_challenge(&self) -> Option<DigestChallenge<'a>> {
        if !self.is_digest() {
            return None;
        }
        let mut d = DigestChallenge::default();
        const NAMES: [&[u8]; 7] = [
            b"realm",
            b"domain",
            b"nonce",
            b"opaque",
            b"stale",
            b"algorithm",
            b"qop",
        ];
        for (n, v) in self.params() {
            let Some(idx) = NAMES.iter().position(|k| n.eq_ignore_ascii_case(k)) else {
                continue;
            };
            let slot = match idx {
                0 => &mut d.realm,
                1 => &mut d.domain,
                2 => &mut d.nonce,
                3 => &mut d.opaque,
                4 => &mut d.stale,
                5 => &mut d.algorithm,
                _ => &mut d.qop,
            };
            if slot.is_none() {
                *slot = Some(v);
            }
        }
        Some(d)
    }

    /// Strict check: every parameter is `token = (token / quoted-string)`.
    pub fn is_valid(&self) -> bool {
        if !is_token(self.scheme) {
            return false;
        }
        if self.params.is_empty() {
            return true;
        }
        for p in SplitTop::new(self.params, b',') {
            let Some(eq) = crate::scan::find_byte_at(b'=', p) else {
                // Some schemes carry a bare token68; accept a single token.
                if is_token(p) {
                    continue;
                }
                return false;
            };
            let (n, v) = (trim_lws(&p[..eq]), trim_lws(&p[eq + 1..]));
            let v_ok = match v.first() {
                Some(b'"') => skip_quoted(v, 0) == Some(v.len()),
                Some(_) => v
                    .iter()
                    .all(|&b| is_token_byte(b) || b == b'/' || b == b'='),
                None => false,
            };
            if !is_token(n) || !v_ok {
                return false;
            }
        }
        true
    }
}

fn strip_quotes(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Digest credentials (quotes removed). `qop`, `nc` and `cnonce` are present together when the
/// client used a qop (RFC 3261 §22.4, RFC 7616 §3.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCredentials<'a> {
    /// `username`.
    pub username: Option<&'a [u8]>,
    /// `realm`.
    pub realm: Option<&'a [u8]>,
    /// `nonce`.
    pub nonce: Option<&'a [u8]>,
    /// `uri` (digest-uri).
    pub uri: Option<&'a [u8]>,
    /// `response` (request-digest).
    pub response: Option<&'a [u8]>,
    /// `algorithm` (`MD5`, `SHA-256`...).
    pub algorithm: Option<&'a [u8]>,
    /// `cnonce`.
    pub cnonce: Option<&'a [u8]>,
    /// `opaque`.
    pub opaque: Option<&'a [u8]>,
    /// `qop` (`auth`, `auth-int`).
    pub qop: Option<&'a [u8]>,
    /// `nc` (nonce-count, 8 hex digits).
    pub nc: Option<&'a [u8]>,
    /// `userhash` (RFC 7616).
    pub userhash: Option<&'a [u8]>,
}

/// Digest challenge (quotes removed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestChallenge<'a> {
    /// `realm`.
    pub realm: Option<&'a [u8]>,
    /// `domain`.
    pub domain: Option<&'a [u8]>,
    /// `nonce`.
    pub nonce: Option<&'a [u8]>,
    /// `opaque`.
    pub opaque: Option<&'a [u8]>,
    /// `stale`.
    pub stale: Option<&'a [u8]>,
    /// `algorithm`.
    pub algorithm: Option<&'a [u8]>,
    /// `qop` options (comma-separated inside the quotes).
    pub qop: Option<&'a [u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_credentials_fields_are_unquoted() {
        let a = AuthValue::parse(
            br#"Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41", algorithm=MD5"#,
        )
        .expect("parses");
        assert!(a.is_digest());
        assert!(a.is_valid());
        let d = a.digest_credentials().expect("digest");
        assert_eq!(d.username, Some(&b"bob"[..]));
        assert_eq!(d.realm, Some(&b"biloxi.com"[..]));
        assert_eq!(d.uri, Some(&b"sip:bob@biloxi.com"[..]));
        assert_eq!(d.qop, Some(&b"auth"[..]));
        assert_eq!(d.nc, Some(&b"00000001"[..]));
        assert_eq!(d.cnonce, Some(&b"0a4f113b"[..]));
        assert_eq!(d.algorithm, Some(&b"MD5"[..]));
        assert_eq!(d.opaque, Some(&b"5ccc069c403ebaf9f0171e9517f40e41"[..]));
        assert_eq!(d.response, Some(&b"6629fae49393a05397450978507c4ef1"[..]));
    }

    #[test]
    fn unknown_scheme_is_kept_raw() {
        let a = AuthValue::parse(b"NoOneKnowsThisScheme opaque-data=here").expect("parses");
        assert_eq!(a.scheme(), b"NoOneKnowsThisScheme");
        assert!(!a.is_digest());
        assert!(a.digest_credentials().is_none());
        assert_eq!(a.param(b"opaque-data"), Some(&b"here"[..]));
        assert!(a.is_valid());
    }

    #[test]
    fn digest_challenge_with_commas_inside_quoted_qop() {
        let a = AuthValue::parse(
            br#"Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth,auth-int", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5"#,
        )
        .expect("parses");
        let c = a.digest_challenge().expect("digest");
        assert_eq!(c.qop, Some(&b"auth,auth-int"[..]));
        assert_eq!(c.opaque, Some(&b""[..]));
        assert_eq!(c.stale, Some(&b"FALSE"[..]));
        assert!(a.is_valid());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(AuthValue::parse(b"").is_err());
        assert!(AuthValue::parse(b"\"x\"").is_err());
        assert!(
            !AuthValue::parse(b"Digest realm=\"unterminated")
                .expect("parses")
                .is_valid()
        );
    }
}
