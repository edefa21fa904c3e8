//! Authorization / Proxy-Authorization credentials and WWW-Authenticate / Proxy-Authenticate
//! challenges (RFC 3261 §20.7, §20.27, §20.28, §20.44, §25.1; RFC 7616 digest).

use std::fmt;

use crate::scan::{
    SplitTop, TOKEN, is_lws, is_token, is_token_byte, skip_lws, skip_quoted, span, trim_lws,
};

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
        // One pass over well-formed parameters (what every UA sends); anything unusual goes
        // the general way, which gives the same result for well-formed input.
        if canonical_params(self.params, false, |n, v, _| d.set(n, v)) {
            return Some(d);
        }
        Some(self.digest_credentials_general())
    }

    /// [`digest_credentials`](Self::digest_credentials) through [`params`](Self::params), for
    /// any input.
    fn digest_credentials_general(&self) -> DigestCredentials<'a> {
        let mut d = DigestCredentials::default();
        for (n, v) in self.params() {
            d.set(n, v);
        }
        d
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
        let mut plain_ok = true;
        if canonical_params(self.params, true, |_, v, quoted| {
            plain_ok &= quoted || plain_value_ok(v);
        }) && plain_ok
        {
            return true;
        }
        self.params_valid_general()
    }

    /// The parameter check of [`is_valid`](Self::is_valid) item by item, for any input.
    fn params_valid_general(&self) -> bool {
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
                Some(_) => plain_value_ok(v),
                None => false,
            };
            if !is_token(n) || !v_ok {
                return false;
            }
        }
        true
    }
}

/// An unquoted parameter value: token characters, plus the `/` and `=` of base64 nonces.
fn plain_value_ok(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|&b| is_token_byte(b) || b == b'/' || b == b'=')
}

/// Walks `name LWS "=" LWS (quoted-string / plain value)` parameters separated by commas in
/// one pass, calling `f(name, value, quoted)` with quotes removed. Returns false, having
/// possibly called `f` for some, at the first thing outside that shape (a bare token, an
/// unclosed quote, a `<`, bytes after a closing quote): the caller then uses
/// [`AuthValue::params`], which yields the same pairs for every input this accepts. Empty
/// items (`,,`, a trailing comma) are skipped, or refused when `strict`.
fn canonical_params<'a>(
    s: &'a [u8],
    strict: bool,
    mut f: impl FnMut(&'a [u8], &'a [u8], bool),
) -> bool {
    let mut i = 0;
    let mut item_expected = false;
    loop {
        i = skip_lws(s, i);
        let Some(&c) = s.get(i) else {
            return !(strict && item_expected);
        };
        if c == b',' {
            if strict {
                return false;
            }
            i += 1;
            continue;
        }
        let n0 = i;
        i = span(s, i, TOKEN);
        if i == n0 {
            return false;
        }
        let name = &s[n0..i];
        i = skip_lws(s, i);
        if s.get(i) != Some(&b'=') {
            return false;
        }
        i = skip_lws(s, i + 1);
        match s.get(i) {
            None => return false,
            Some(b'"') => {
                let Some(end) = skip_quoted(s, i) else {
                    return false;
                };
                f(name, &s[i + 1..end - 1], true);
                i = skip_lws(s, end);
                match s.get(i) {
                    None => return true,
                    Some(b',') => {
                        i += 1;
                        item_expected = true;
                    }
                    Some(_) => return false,
                }
            }
            Some(_) => {
                let v0 = i;
                while let Some(&b) = s.get(i) {
                    match b {
                        b',' => break,
                        b'"' | b'<' => return false,
                        _ => i += 1,
                    }
                }
                let mut v1 = i;
                while v1 > v0 && is_lws(s[v1 - 1]) {
                    v1 -= 1;
                }
                f(name, &s[v0..v1], false);
                if i == s.len() {
                    return true;
                }
                i += 1;
                item_expected = true;
            }
        }
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

impl<'a> DigestCredentials<'a> {
    /// Records parameter `n` = `v` when `n` is a digest-response field not seen yet (the
    /// first occurrence wins).
    fn set(&mut self, n: &[u8], v: &'a [u8]) {
        let slot = match n.len() {
            2 if n.eq_ignore_ascii_case(b"nc") => &mut self.nc,
            3 if n.eq_ignore_ascii_case(b"uri") => &mut self.uri,
            3 if n.eq_ignore_ascii_case(b"qop") => &mut self.qop,
            5 if n.eq_ignore_ascii_case(b"realm") => &mut self.realm,
            5 if n.eq_ignore_ascii_case(b"nonce") => &mut self.nonce,
            6 if n.eq_ignore_ascii_case(b"cnonce") => &mut self.cnonce,
            6 if n.eq_ignore_ascii_case(b"opaque") => &mut self.opaque,
            8 if n.eq_ignore_ascii_case(b"username") => &mut self.username,
            8 if n.eq_ignore_ascii_case(b"response") => &mut self.response,
            8 if n.eq_ignore_ascii_case(b"userhash") => &mut self.userhash,
            9 if n.eq_ignore_ascii_case(b"algorithm") => &mut self.algorithm,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(v);
        }
    }
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

    /// What `digest_credentials` and `is_valid` give through the general, item-by-item walk.
    fn general<'a>(a: &AuthValue<'a>) -> (Option<DigestCredentials<'a>>, bool) {
        let d = a.is_digest().then(|| a.digest_credentials_general());
        let valid = is_token(a.scheme) && (a.params.is_empty() || a.params_valid_general());
        (d, valid)
    }

    #[test]
    fn the_one_pass_reading_gives_what_the_general_one_gives_for_odd_credentials() {
        for raw in [
            &br#"Digest username="bob", realm="b.com",nonce="n==",uri="sip:b.com",response="r""#[..],
            br#"Digest username = "bob" , realm=b.com,,, nc=00000001 ,qop=auth"#,
            br#"Digest realm="a"b", nonce=abc==, opaque="""#,
            br#"Digest realm="a"x, nonce=1"#,
            br#"Digest realm="unterminated, nonce=1"#,
            br#"Digest token68only"#,
            br#"Digest nc=, uri=<sip:x>, realm=r"#,
            br#"Digest realm=, nonce="#,
            b"Digest realm=\"x\"\r\n\t, nonce = y\t",
            br#"Digest REALM="upper", Realm="second", USERNAME=u"#,
        ] {
            let a = AuthValue::parse(raw).expect("parses");
            let (d, valid) = general(&a);
            assert_eq!(
                a.digest_credentials(),
                d,
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(a.is_valid(), valid, "{}", String::from_utf8_lossy(raw));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn the_one_pass_reading_agrees_with_the_general_one_on_any_input(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "username", "realm", "nc", "URI", "nonce", "=", "\"", ",", " ", "\t", "\r\n ",
                "a", "b=c", "\\", "<", ">", "/",
            ]), 0..24)
        ) {
            let raw = format!("Digest {}", pieces.concat()).into_bytes();
            if let Ok(a) = AuthValue::parse(&raw) {
                let (d, valid) = general(&a);
                proptest::prop_assert_eq!(a.digest_credentials(), d);
                proptest::prop_assert_eq!(a.is_valid(), valid);
            }
        }
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
