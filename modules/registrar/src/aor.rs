//! Address-of-record canonical form (RFC 3261 §10.3 step 5) and contact URI comparison
//! (RFC 3261 §19.1.4).

use std::fmt;
use std::net::IpAddr;

use sip_msg::{HostKind, Scheme, Uri, percent_decode};

/// Longest canonical AOR (the location schemas' limit).
pub const MAX_AOR: usize = geosip_store::location::limits::AOR;

/// Why a URI has no AOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AorError {
    /// The URI does not parse.
    Parse,
    /// Not a `sip:`/`sips:` URI.
    Scheme,
    /// No user part (`sip:example.com`): Kamailio's "No username in To URI".
    NoUser,
    /// Longer than [`MAX_AOR`].
    TooLong,
}

impl AorError {
    /// Text for logs and `P-Registrar-Error`.
    pub fn as_str(self) -> &'static str {
        match self {
            AorError::Parse => "Error while parsing AOR",
            AorError::Scheme => "AOR is not a SIP URI",
            AorError::NoUser => "No username in To URI",
            AorError::TooLong => "Address Of Record too long",
        }
    }
}

impl fmt::Display for AorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for AorError {}

/// RFC 3261 §25.1 `unreserved` and `user-unreserved`: the bytes a user part may hold
/// unescaped. Everything else is written `%XX` in the canonical form.
fn user_byte_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends an unescaped user name in its canonical AOR form: lowercased unless
/// `case_sensitive`, escaped where RFC 3261 requires it.
pub(crate) fn push_user(out: &mut Vec<u8>, user: &[u8], case_sensitive: bool) {
    for &b in user {
        let b = if case_sensitive {
            b
        } else {
            b.to_ascii_lowercase()
        };
        if user_byte_plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The canonical AOR of a SIP URI: `sip:user@host`.
///
/// * `sip:` and `sips:` give the same AOR (`sip:`), as in Kamailio, so a call to
///   `sips:alice@example.com` finds the phones that registered `sip:alice@example.com`.
/// * The user part is unescaped (`%61lice` is `alice`) and re-escaped only where RFC 3261
///   requires it (`%40` stays `%40`), so equivalent spellings give one AOR; it is lowercased
///   unless `case_sensitive_user`.
/// * The host is lowercased, a trailing dot removed, IPv6 written in its canonical form.
/// * Password, port, URI parameters (`;user=phone`, `;transport=`) and headers are removed.
pub fn canonical_aor(uri: &[u8], case_sensitive_user: bool) -> Result<Vec<u8>, AorError> {
    let u = Uri::parse(sip_msg::trim_lws(uri)).map_err(|_| AorError::Parse)?;
    if !matches!(u.scheme(), Scheme::Sip | Scheme::Sips) {
        return Err(AorError::Scheme);
    }
    let user = u.user().filter(|s| !s.is_empty()).ok_or(AorError::NoUser)?;
    let host = u.host();
    if host.raw().is_empty() {
        return Err(AorError::Parse);
    }
    let mut out = Vec::with_capacity(4 + user.len() + 1 + host.raw().len());
    out.extend_from_slice(b"sip:");
    push_user(&mut out, &percent_decode(user), case_sensitive_user);
    out.push(b'@');
    match (host.kind(), host.ip()) {
        (HostKind::Ipv6, Some(IpAddr::V6(ip))) => {
            out.extend_from_slice(format!("[{ip}]").as_bytes())
        }
        _ => {
            let h = host.raw();
            let h = h.strip_suffix(b".").filter(|h| !h.is_empty()).unwrap_or(h);
            out.extend(h.iter().map(u8::to_ascii_lowercase));
        }
    }
    if out.len() > MAX_AOR {
        return Err(AorError::TooLong);
    }
    Ok(out)
}

/// The host part of a canonical AOR (after the last `@`).
pub fn aor_host(aor: &[u8]) -> &[u8] {
    match aor.iter().rposition(|&b| b == b'@') {
        Some(i) => &aor[i + 1..],
        None => aor,
    }
}

/// The user part of a canonical AOR (between `sip:` and the last `@`).
pub fn aor_user(aor: &[u8]) -> &[u8] {
    let body = aor.strip_prefix(b"sip:").unwrap_or(aor);
    match body.iter().rposition(|&b| b == b'@') {
        Some(i) => &body[..i],
        None => b"",
    }
}

/// Parameters that must match when present in either URI (RFC 3261 §19.1.4).
const STRICT_PARAMS: [&[u8]; 5] = [b"user", b"ttl", b"method", b"maddr", b"transport"];

fn param_value_eq(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => percent_decode(x).eq_ignore_ascii_case(&percent_decode(y)),
        _ => false,
    }
}

fn host_eq(a: &Uri<'_>, b: &Uri<'_>) -> bool {
    match (a.host().ip(), b.host().ip()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.host().raw().eq_ignore_ascii_case(b.host().raw()),
        _ => false,
    }
}

fn sorted_headers<'a>(u: &Uri<'a>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = u
        .headers()
        .map(|(n, v)| {
            (
                percent_decode(n).to_ascii_lowercase(),
                percent_decode(v).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Whether two contact URIs name the same binding, per RFC 3261 §19.1.4 for SIP/SIPS URIs:
/// same scheme, user and password compared case-sensitively after unescaping, host
/// case-insensitively (IP literals as addresses), the same port (an omitted port differs
/// from an explicit 5060), `user`/`ttl`/`method`/`maddr`/`transport` equal when present in
/// either, other parameters equal when present in both, and the same URI headers. Other
/// schemes compare byte for byte.
pub fn uri_equivalent(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (sip_msg::trim_lws(a), sip_msg::trim_lws(b));
    if a == b {
        return true;
    }
    let (Ok(x), Ok(y)) = (Uri::parse(a), Uri::parse(b)) else {
        return false;
    };
    if !matches!(x.scheme(), Scheme::Sip | Scheme::Sips) || x.scheme() != y.scheme() {
        return false;
    }
    let dec = |s: Option<&[u8]>| s.map(|s| percent_decode(s).into_owned());
    if dec(x.user()) != dec(y.user()) || dec(x.password()) != dec(y.password()) {
        return false;
    }
    if !host_eq(&x, &y) || x.port() != y.port() {
        return false;
    }
    for name in STRICT_PARAMS {
        if !param_value_eq(x.params().value(name), y.params().value(name))
            || x.params().contains(name) != y.params().contains(name)
        {
            return false;
        }
    }
    for p in x.params().iter() {
        if let Some(q) = y.params().get(p.name)
            && !param_value_eq(p.value, q.value)
        {
            return false;
        }
    }
    sorted_headers(&x) == sorted_headers(&y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aor(s: &str) -> String {
        String::from_utf8(canonical_aor(s.as_bytes(), false).unwrap()).unwrap()
    }

    #[test]
    fn the_canonical_aor_drops_params_port_and_password_and_unescapes_the_user() {
        assert_eq!(
            aor("sip:Alice@Example.COM:5060;transport=tcp?X=1"),
            "sip:alice@example.com"
        );
        assert_eq!(
            aor("sips:alice:secret@example.com"),
            "sip:alice@example.com"
        );
        assert_eq!(aor("sip:%61lice@example.com."), "sip:alice@example.com");
        assert_eq!(
            aor("sip:+1-212-555-1212@gw.example.com;user=phone"),
            "sip:+1-212-555-1212@gw.example.com"
        );
        assert_eq!(aor("sip:a%40b@example.com"), "sip:a%40b@example.com");
        assert_eq!(
            aor("sip:alice;day=tuesday@example.com"),
            "sip:alice;day=tuesday@example.com"
        );
        assert_eq!(aor("sip:bob@[2001:DB8:0::1]:5070"), "sip:bob@[2001:db8::1]");
        let cs = canonical_aor(b"sip:Alice@Example.com", true).unwrap();
        assert_eq!(cs, b"sip:Alice@example.com");
    }

    #[test]
    fn uris_without_user_or_of_other_schemes_have_no_aor() {
        assert_eq!(
            canonical_aor(b"sip:example.com", false),
            Err(AorError::NoUser)
        );
        assert_eq!(canonical_aor(b"tel:+4930123", false), Err(AorError::Scheme));
        assert_eq!(canonical_aor(b"garbage", false), Err(AorError::Parse));
        let long = format!("sip:{}@example.com", "a".repeat(300));
        assert_eq!(
            canonical_aor(long.as_bytes(), false),
            Err(AorError::TooLong)
        );
        assert_eq!(aor_user(b"sip:alice@example.com"), b"alice");
        assert_eq!(aor_host(b"sip:alice@example.com"), b"example.com");
    }

    #[test]
    fn contact_uris_compare_as_rfc_3261_section_19_1_4_says() {
        assert!(uri_equivalent(
            b"sip:%61lice@ATLANTA.com;transport=TCP",
            b"sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(uri_equivalent(
            b"sip:alice@192.0.2.4;newparam=5",
            b"sip:alice@192.0.2.4"
        ));
        assert!(!uri_equivalent(
            b"SIP:ALICE@AtLanTa.CoM",
            b"sip:alice@atlanta.com"
        ));
        assert!(!uri_equivalent(
            b"sip:bob@biloxi.com",
            b"sip:bob@biloxi.com:5060"
        ));
        assert!(!uri_equivalent(
            b"sip:bob@biloxi.com",
            b"sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!uri_equivalent(
            b"sip:alice@a.com;p=1",
            b"sip:alice@a.com;p=2"
        ));
        assert!(uri_equivalent(
            b"sip:a@b?Subject=x&Priority=y",
            b"sip:a@b?priority=y&subject=x"
        ));
        assert!(!uri_equivalent(b"sip:a@b?Subject=x", b"sip:a@b"));
        assert!(uri_equivalent(b"urn:x:y", b"urn:x:y"));
        assert!(!uri_equivalent(
            b"sip:a@[2001:db8::1]",
            b"sip:a@[2001:db8::2]"
        ));
        assert!(uri_equivalent(
            b"sip:a@[2001:db8::1]",
            b"sip:a@[2001:DB8:0::1]"
        ));
    }
}
