//! URIs: `sip:` / `sips:` (RFC 3261 §19.1, §25.1), `tel:` (RFC 3966), any other scheme kept
//! raw (RFC 3261 `absoluteURI`). IPv6 references follow RFC 5118 and the corrected ABNF of
//! RFC 5954.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::params::Params;
use crate::scan::{
    DIGITDOT, HOST, PARAM, PARAM_NP, PASSWORD, USER, USER_NP, escapes_valid, is_hnv_byte,
    is_host_byte, percent_decode, span,
};

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip:` (RFC 3261 §19.1).
    Sip,
    /// `sips:` (RFC 3261 §19.1).
    Sips,
    /// `tel:` (RFC 3966).
    Tel,
    /// Anything else (`im:`, `http:`, `urn:` ...): only the raw text is available.
    Other,
}

/// Kind of a URI or Via host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// A domain name (or anything that is not an IP literal).
    Name,
    /// Dotted-quad IPv4 address.
    Ipv4,
    /// IPv6 reference, written `[...]` (RFC 3261 §25.1 `IPv6reference`).
    Ipv6,
}

/// A host as written in a URI or Via `sent-by`: raw bytes plus the detected kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Host<'a> {
    raw: &'a [u8],
    kind: HostKind,
}

impl<'a> Host<'a> {
    /// Classifies a raw host. `[..]` is IPv6, digits and dots IPv4, anything else a name.
    #[inline]
    pub fn new(raw: &'a [u8]) -> Host<'a> {
        let kind = match raw.first() {
            Some(b'[') => HostKind::Ipv6,
            // Only a name starting with a digit can be a dotted quad.
            Some(b'0'..=b'9') if span(raw, 0, DIGITDOT) == raw.len() => HostKind::Ipv4,
            _ => HostKind::Name,
        };
        Host { raw, kind }
    }

    /// A host whose kind is already known (what [`Host::new`] gave for these bytes).
    #[inline(always)]
    pub(crate) fn with_kind(raw: &'a [u8], kind: HostKind) -> Host<'a> {
        Host { raw, kind }
    }

    /// Host bytes as received (IPv6 with its brackets).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Host kind.
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// Host without the brackets of an IPv6 reference.
    pub fn unbracketed(&self) -> &'a [u8] {
        match (self.kind, self.raw.len()) {
            (HostKind::Ipv6, n) if n >= 2 && self.raw[n - 1] == b']' => &self.raw[1..n - 1],
            _ => self.raw,
        }
    }

    /// The IP address, when the host is an IP literal that parses.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.kind {
            HostKind::Ipv4 => parse_ipv4(self.raw).map(IpAddr::V4),
            HostKind::Ipv6 => parse_ipv6(self.unbracketed()).map(IpAddr::V6),
            HostKind::Name => None,
        }
    }

    /// Strict syntax check: a valid IPv4 address, IPv6 reference or RFC 3261 `hostname`.
    pub fn is_valid(&self) -> bool {
        match self.kind {
            HostKind::Ipv4 => parse_ipv4(self.raw).is_some(),
            HostKind::Ipv6 => {
                self.raw.len() >= 2
                    && self.raw.last() == Some(&b']')
                    && parse_ipv6(self.unbracketed()).is_some()
            }
            HostKind::Name => is_hostname(self.raw),
        }
    }
}

/// `Host::new(s).is_valid()` for an `s` made of alphanumerics, `-` and `.` only (what a
/// [`HOST`] span gives): a dotted quad, or a hostname.
#[inline]
pub(crate) fn host_chars_valid(s: &[u8]) -> bool {
    if s.first().is_some_and(u8::is_ascii_digit) {
        if parse_ipv4(s).is_some() {
            return true;
        }
        if span(s, 0, DIGITDOT) == s.len() {
            // Digits and dots: an IPv4 address, and a broken one.
            return false;
        }
    }
    hostname_chars_valid(s)
}

/// [`is_hostname`] for an `s` made of alphanumerics, `-` and `.` only.
#[inline]
fn hostname_chars_valid(s: &[u8]) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let s = s.strip_suffix(b".").unwrap_or(s);
    let mut start = 0;
    while let Some(k) = crate::scan::find_byte(&s[start..], b'.') {
        if k == 0 {
            return false;
        }
        start += k + 1;
    }
    start < s.len() && s[start..].iter().any(u8::is_ascii_alphabetic)
}

/// `Uri::parse(u)` is a valid `sip:`/`sips:` URI without URI headers, decided in one pass
/// for the common shape: `sip[s]:[user@]host[:port]*(;name[=value])`, no escape, no
/// password, no IPv6 reference. `false` means "not that shape, or not valid": the caller then
/// asks [`Uri::parse`] and [`Uri::is_valid`].
#[inline]
pub(crate) fn canonical_sip_uri_valid(u: &[u8]) -> bool {
    canonical_sip_uri_valid_in(u, u.len())
}

/// [`canonical_sip_uri_valid`] of `u[..end]`, where `u` may go on after `end` with a byte
/// that no URI character class admits (the `>` closing a name-addr, the SP after a
/// Request-URI): the scans then run to that byte on their own, in whole 8-byte steps.
#[inline]
pub(crate) fn canonical_sip_uri_valid_in(u: &[u8], end: usize) -> bool {
    let Some(h) = u.get(..4) else { return false };
    if end < 5 {
        return false;
    }
    let head = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let mut i = if head | 0x0020_2020 == u32::from_le_bytes(*b"sip:") {
        4
    } else if head | 0x2020_2020 == u32::from_le_bytes(*b"sips") && u[4] == b':' {
        5
    } else {
        return false;
    };
    let Some(within) = u.get(i..end) else {
        return false;
    };
    if let Some(k) = crate::scan::find_byte(within, b'@') {
        let at = i + k;
        if at == i || span(u, i, USER_NP) != at {
            return false;
        }
        i = at + 1;
    }
    let he = span(u, i, HOST);
    if he == i || he > end || !host_chars_valid(&u[i..he]) {
        return false;
    }
    let mut j = he;
    if j == end {
        return true;
    }
    match u[j] {
        b';' => {}
        b':' => {
            let pe = span(u, j + 1, crate::scan::DIGIT);
            if pe > end || parse_port(&u[j + 1..pe]).is_none() {
                return false;
            }
            j = pe;
        }
        _ => return false,
    }
    while j < end && u[j] == b';' {
        let ne = span(u, j + 1, PARAM_NP);
        if ne == j + 1 {
            return false;
        }
        j = ne;
        if j < end && u[j] == b'=' {
            let ve = span(u, j + 1, PARAM_NP);
            if ve == j + 1 {
                return false;
            }
            j = ve;
        }
    }
    j == end
}

/// `Uri::parse(u)` succeeds and the URI [`is_valid`](Uri::is_valid).
#[inline]
pub(crate) fn uri_valid(u: &[u8]) -> bool {
    canonical_sip_uri_valid(u) || uri_valid_general(u)
}

#[cold]
#[inline(never)]
pub(crate) fn uri_valid_general(u: &[u8]) -> bool {
    Uri::parse(u).is_ok_and(|x| x.is_valid())
}

/// RFC 3261 `hostname = *( domainlabel "." ) toplabel [ "." ]`, checked loosely: labels of
/// alphanumerics and `-` (underscore tolerated), non-empty, and not all-numeric at the top.
fn is_hostname(s: &[u8]) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let s = s.strip_suffix(b".").unwrap_or(s);
    // Fast path: only alphanumerics, '-' and '.'; then check the dots and the top label.
    if span(s, 0, HOST) == s.len() {
        let mut start = 0;
        loop {
            let end = crate::scan::find_byte(&s[start..], b'.').map_or(s.len(), |k| start + k);
            if end == start {
                return false;
            }
            if end == s.len() {
                return s[start..].iter().any(u8::is_ascii_alphabetic);
            }
            start = end + 1;
        }
    }
    let mut label_len = 0usize;
    let mut label_alpha = false;
    for &b in s {
        if b == b'.' {
            if label_len == 0 {
                return false;
            }
            label_len = 0;
            label_alpha = false;
        } else if is_host_byte(b) || b == b'_' {
            label_len += 1;
            label_alpha |= b.is_ascii_alphabetic();
        } else {
            return false;
        }
    }
    // The top label has a letter; a name made of digits only would be a broken IPv4 address.
    label_len > 0 && label_alpha
}

/// Parses a dotted-quad IPv4 address (exactly four decimal octets of one to three digits).
#[inline]
pub(crate) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let digit = |i: usize| s.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9);
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, o) in octets.iter_mut().enumerate() {
        if k > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let mut v = u16::from(digit(i)?);
        i += 1;
        if let Some(d) = digit(i) {
            v = v * 10 + u16::from(d);
            i += 1;
            if let Some(d) = digit(i) {
                v = v * 10 + u16::from(d);
                i += 1;
            }
        }
        *o = u8::try_from(v).ok()?;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

/// Parses an IPv6 address without brackets (RFC 4291 text forms, as corrected for SIP by
/// RFC 5954: `2001:db8::192.0.2.1` is valid, `2001:db8:::192.0.2.1` is not).
pub(crate) fn parse_ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    if s.len() > 45
        || !s
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
    {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The URI could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUri;

impl fmt::Display for InvalidUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid URI")
    }
}

impl std::error::Error for InvalidUri {}

/// A parsed URI borrowing the message bytes.
///
/// For `sip:`/`sips:` every component is available. For `tel:`, [`user`](Self::user) is the
/// telephone number and [`params`](Self::params) its parameters (`phone-context`...). For other
/// schemes only [`raw`](Self::raw) and [`opaque`](Self::opaque) are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a [u8],
    scheme: Scheme,
    scheme_raw: &'a [u8],
    user: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
    host: Host<'a>,
    port: Option<u16>,
    params: &'a [u8],
    headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    /// Parses the structure of a URI (scheme, userinfo, host, port, parameters, headers).
    ///
    /// This is the lenient structural parse used by the accessors; [`is_valid`](Self::is_valid)
    /// adds the character-class checks of RFC 3261 §25.1.
    pub fn parse(raw: &'a [u8]) -> Result<Uri<'a>, InvalidUri> {
        // Fast path for the schemes we know (case-insensitive), else the generic rule
        // `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
        let head = |n: usize| {
            raw.get(..n).map(|h| {
                let mut w = 0u64;
                for (i, &b) in h.iter().enumerate() {
                    w |= u64::from(b | 0x20) << (i * 8);
                }
                w
            })
        };
        const SIP: u64 = u64::from_le_bytes(*b"sip:\0\0\0\0");
        const SIPS: u64 = u64::from_le_bytes(*b"sips:\0\0\0");
        const TEL: u64 = u64::from_le_bytes(*b"tel:\0\0\0\0");
        // Folding maps 0x1a onto ':', hence the explicit colon checks.
        let (scheme, colon) = if head(4) == Some(SIP) && raw[3] == b':' {
            (Scheme::Sip, 3)
        } else if head(5) == Some(SIPS) && raw[4] == b':' {
            (Scheme::Sips, 4)
        } else if head(4) == Some(TEL) && raw[3] == b':' {
            (Scheme::Tel, 3)
        } else {
            let colon = crate::scan::find_byte(raw, b':').ok_or(InvalidUri)?;
            let scheme_raw = &raw[..colon];
            let valid_scheme = scheme_raw.first().is_some_and(|b| b.is_ascii_alphabetic())
                && scheme_raw
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
            if !valid_scheme {
                return Err(InvalidUri);
            }
            let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
                Scheme::Sip
            } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
                Scheme::Sips
            } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
                Scheme::Tel
            } else {
                Scheme::Other
            };
            (scheme, colon)
        };
        let scheme_raw = &raw[..colon];
        let rest = &raw[colon + 1..];
        let mut uri = Uri {
            raw,
            scheme,
            scheme_raw,
            user: None,
            password: None,
            host: Host {
                raw: b"",
                kind: HostKind::Name,
            },
            port: None,
            params: b"",
            headers: None,
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => uri.parse_sip(rest)?,
            Scheme::Tel => {
                let end = crate::scan::find_byte_at(b';', rest).unwrap_or(rest.len());
                if end == 0 {
                    return Err(InvalidUri);
                }
                uri.user = Some(&rest[..end]);
                uri.params = &rest[end..];
            }
            Scheme::Other => {
                if rest.is_empty() {
                    return Err(InvalidUri);
                }
            }
        }
        Ok(uri)
    }

    fn parse_sip(&mut self, rest: &'a [u8]) -> Result<(), InvalidUri> {
        // '@' may appear only in userinfo (not in host, uri-parameters or hvalue), so the first
        // one ends the userinfo even when the user part holds ';' or '?' (RFC 4475 §3.1.1.9).
        let hostport_start = match crate::scan::find_byte_at(b'@', rest) {
            Some(at) => {
                let userinfo = &rest[..at];
                match crate::scan::find_byte_at(b':', userinfo) {
                    Some(c) => {
                        self.user = Some(&userinfo[..c]);
                        self.password = Some(&userinfo[c + 1..]);
                    }
                    None => self.user = Some(userinfo),
                }
                at + 1
            }
            None => 0,
        };
        let hp = &rest[hostport_start..];
        let (host_end, after_host) = if hp.first() == Some(&b'[') {
            let close = crate::scan::find_byte_at(b']', hp).ok_or(InvalidUri)?;
            (close + 1, close + 1)
        } else {
            let e = hp
                .iter()
                .position(|&b| matches!(b, b':' | b';' | b'?'))
                .unwrap_or(hp.len());
            (e, e)
        };
        if host_end == 0 {
            return Err(InvalidUri);
        }
        self.host = Host::new(&hp[..host_end]);
        let mut i = after_host;
        if hp.get(i) == Some(&b':') {
            let start = i + 1;
            let end = hp[start..]
                .iter()
                .position(|&b| matches!(b, b';' | b'?'))
                .map_or(hp.len(), |p| start + p);
            self.port = Some(parse_port(&hp[start..end]).ok_or(InvalidUri)?);
            i = end;
        }
        let rest2 = &hp[i..];
        match crate::scan::find_byte_at(b'?', rest2) {
            Some(q) => {
                self.params = &rest2[..q];
                self.headers = Some(&rest2[q + 1..]);
            }
            None => self.params = rest2,
        }
        // Anything between host[:port] and the parameters is garbage.
        if !self.params.is_empty() && self.params[0] != b';' {
            return Err(InvalidUri);
        }
        Ok(())
    }

    /// The whole URI as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Scheme as written (before the colon).
    pub fn scheme_raw(&self) -> &'a [u8] {
        self.scheme_raw
    }

    /// Everything after `scheme:`.
    pub fn opaque(&self) -> &'a [u8] {
        &self.raw[self.scheme_raw.len() + 1..]
    }

    /// User part, escaped as received (for `tel:`, the telephone number).
    pub fn user(&self) -> Option<&'a [u8]> {
        self.user
    }

    /// User part with `%HH` escapes decoded (may contain NUL, RFC 4475 §3.1.1.4).
    pub fn user_unescaped(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(percent_decode)
    }

    /// Password, escaped as received (its use is NOT RECOMMENDED, RFC 3261 §19.1.1).
    pub fn password(&self) -> Option<&'a [u8]> {
        self.password
    }

    /// Host (empty for `tel:` and other schemes).
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// Explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// URI parameters (`;transport=tcp;lr`), compared case-insensitively by name.
    pub fn params(&self) -> Params<'a> {
        Params::new_uri(self.params)
    }

    /// Value of URI parameter `name` (`None` when absent or a flag).
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.params().value(name)
    }

    /// True when the `lr` parameter is present (loose routing, RFC 3261 §19.1.1).
    pub fn has_lr(&self) -> bool {
        self.params().contains(b"lr")
    }

    /// `transport` parameter.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.param(b"transport")
    }

    /// `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.param(b"maddr")
    }

    /// `user` parameter (`phone`, `ip`...).
    pub fn user_param(&self) -> Option<&'a [u8]> {
        self.param(b"user")
    }

    /// Raw headers part after `?` (RFC 3261 §19.1.1), escaped as received.
    pub fn headers_raw(&self) -> Option<&'a [u8]> {
        self.headers
    }

    /// Iterates `name=value` URI headers, raw (use [`percent_decode`] on values).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.headers
            .unwrap_or(b"")
            .split(|&b| b == b'&')
            .filter(|h| !h.is_empty())
            .map(|h| match crate::scan::find_byte_at(b'=', h) {
                Some(eq) => (&h[..eq], &h[eq + 1..]),
                None => (h, &b""[..]),
            })
    }

    /// For `tel:` URIs, the number with visual separators (`-`, `.`, `(`, `)`) removed
    /// (RFC 3966 §5.1.1).
    pub fn tel_digits(&self) -> Option<Cow<'a, [u8]>> {
        if self.scheme != Scheme::Tel {
            return None;
        }
        let n = self.user?;
        if !n.iter().any(|b| matches!(b, b'-' | b'.' | b'(' | b')')) {
            return Some(Cow::Borrowed(n));
        }
        Some(Cow::Owned(
            n.iter()
                .copied()
                .filter(|b| !matches!(b, b'-' | b'.' | b'(' | b')'))
                .collect(),
        ))
    }

    /// Strict syntax check of the whole URI per RFC 3261 §25.1 / RFC 3966 / RFC 5954.
    pub fn is_valid(&self) -> bool {
        match self.scheme {
            Scheme::Sip | Scheme::Sips => {
                if let Some(u) = self.user
                    && (u.is_empty() || span(u, 0, USER) != u.len() || !escapes_valid(u))
                {
                    return false;
                }
                if let Some(p) = self.password
                    && (span(p, 0, PASSWORD) != p.len() || !escapes_valid(p))
                {
                    return false;
                }
                if !self.host.is_valid() {
                    return false;
                }
                if !params_valid(self.params) {
                    return false;
                }
                match self.headers {
                    Some(h) => h.split(|&b| b == b'&').all(|kv| {
                        !kv.is_empty()
                            && crate::scan::find_byte_at(b'=', kv).is_some()
                            && kv.iter().all(|&b| b == b'=' || is_hnv_byte(b))
                            && escapes_valid(kv)
                    }),
                    None => true,
                }
            }
            Scheme::Tel => {
                let Some(n) = self.user else { return false };
                let global = n.first() == Some(&b'+');
                let digits = if global { &n[1..] } else { n };
                !digits.is_empty()
                    && digits.iter().all(|&b| {
                        b.is_ascii_digit()
                            || matches!(b, b'-' | b'.' | b'(' | b')')
                            || (!global && (b.is_ascii_hexdigit() || b == b'*' || b == b'#'))
                    })
                    && params_valid(self.params)
            }
            Scheme::Other => {
                let o = self.opaque();
                !o.is_empty()
                    && o.iter().all(|&b| {
                        b.is_ascii_alphanumeric()
                            || matches!(
                                b,
                                b'-' | b'_'
                                    | b'.'
                                    | b'!'
                                    | b'~'
                                    | b'*'
                                    | b'\''
                                    | b'('
                                    | b')'
                                    | b'%'
                                    | b';'
                                    | b'/'
                                    | b'?'
                                    | b':'
                                    | b'@'
                                    | b'&'
                                    | b'='
                                    | b'+'
                                    | b'$'
                                    | b','
                                    | b'['
                                    | b']'
                                    | b'#'
                            )
                    })
            }
        }
    }
}

/// Every `;name[=value]` item non-empty and made of `paramchar`s, escapes well formed.
fn params_valid(params: &[u8]) -> bool {
    let mut i = 0;
    while i < params.len() {
        // ";" pname [ "=" pvalue ], both non-empty runs of paramchar.
        if params[i] != b';' {
            return false;
        }
        let e = span(params, i + 1, PARAM);
        if e == i + 1 {
            return false;
        }
        i = e;
        if params.get(i) == Some(&b'=') {
            let e = span(params, i + 1, PARAM);
            if e == i + 1 {
                return false;
            }
            i = e;
        }
    }
    escapes_valid(params)
}

/// Parses a port: 1 to 5 digits, at most 65535.
pub(crate) fn parse_port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    let mut v: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    u16::try_from(v).ok()
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Uri<'_> {
        Uri::parse(s).expect("uri parses")
    }

    #[test]
    fn sip_uri_components_are_split() {
        let u = p(
            b"sip:alice:secret@atlanta.com:5061;transport=TCP;lr?subject=project&priority=urgent",
        );
        assert_eq!(u.scheme(), Scheme::Sip);
        assert_eq!(u.user(), Some(&b"alice"[..]));
        assert_eq!(u.password(), Some(&b"secret"[..]));
        assert_eq!(u.host().raw(), b"atlanta.com");
        assert_eq!(u.host().kind(), HostKind::Name);
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.transport(), Some(&b"TCP"[..]));
        assert!(u.has_lr());
        assert_eq!(
            u.headers().collect::<Vec<_>>(),
            vec![
                (&b"subject"[..], &b"project"[..]),
                (&b"priority"[..], &b"urgent"[..])
            ]
        );
        assert!(u.is_valid());
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(p(b"SIPS:host").scheme(), Scheme::Sips);
        assert_eq!(p(b"Tel:+1").scheme(), Scheme::Tel);
    }

    #[test]
    fn user_with_semicolons_and_escapes_is_kept_whole() {
        let u = p(b"sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user(), Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(
            u.user_unescaped().as_deref(),
            Some(&b"user;par=u@example.net"[..])
        );
        assert_eq!(u.host().raw(), b"example.com");
        assert!(u.params().is_empty());
        assert!(u.is_valid());
    }

    #[test]
    fn escaped_nul_unescapes_to_a_nul_byte() {
        let u = p(b"sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().as_deref(), Some(&b"null-\0-null"[..]));
    }

    #[test]
    fn ipv6_reference_and_port_after_bracket() {
        let u = p(b"sip:[2001:db8::10]:5070;transport=udp");
        assert_eq!(u.host().kind(), HostKind::Ipv6);
        assert_eq!(u.host().unbracketed(), b"2001:db8::10");
        assert_eq!(u.port(), Some(5070));
        assert!(u.is_valid());
        let u = p(b"sip:[2001:db8::10:5070]");
        assert_eq!(u.port(), None);
        assert!(u.is_valid());
    }

    #[test]
    fn unbracketed_ipv6_is_rejected() {
        assert!(Uri::parse(b"sip:user@2001:db8::10").is_err());
    }

    #[test]
    fn unbalanced_ipv6_bracket_is_rejected() {
        assert!(Uri::parse(b"sip:[::1").is_err());
    }

    #[test]
    fn ipv6_with_trailing_ipv4_needs_two_colons_not_three() {
        assert!(p(b"sip:[2001:db8::192.0.2.1]").is_valid());
        assert!(!p(b"sip:[2001:db8:::192.0.2.1]").is_valid());
        assert!(p(b"sip:[::ffff:192.0.2.1]").is_valid());
    }

    #[test]
    fn ipv4_host_is_detected_and_checked() {
        let u = p(b"sip:192.0.2.1:5060");
        assert_eq!(u.host().kind(), HostKind::Ipv4);
        assert_eq!(u.host().ip(), Some("192.0.2.1".parse().expect("ip")));
        assert!(!p(b"sip:192.0.2.256").is_valid());
        assert!(!p(b"sip:1.2.3").is_valid());
    }

    #[test]
    fn bad_ports_are_rejected() {
        assert!(Uri::parse(b"sip:host:65536").is_err());
        assert!(Uri::parse(b"sip:host:").is_err());
        assert!(Uri::parse(b"sip:host:5x").is_err());
    }

    #[test]
    fn tel_uri_with_visual_separators_yields_digits() {
        let u = p(b"tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.scheme(), Scheme::Tel);
        assert_eq!(u.user(), Some(&b"+1-201-555-0123"[..]));
        assert_eq!(u.tel_digits().as_deref(), Some(&b"+12015550123"[..]));
        assert_eq!(u.param(b"phone-context"), Some(&b"example.com"[..]));
        assert!(u.is_valid());
        assert!(p(b"tel:7042;phone-context=example.com").is_valid());
        assert!(!p(b"tel:+").is_valid());
    }

    #[test]
    fn other_schemes_are_kept_raw() {
        let u = p(b"soap.beep://192.0.2.103:3002");
        assert_eq!(u.scheme(), Scheme::Other);
        assert_eq!(u.opaque(), b"//192.0.2.103:3002");
        assert!(u.is_valid());
        assert!(p(b"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").is_valid());
    }

    #[test]
    fn missing_or_bad_scheme_is_rejected() {
        assert!(Uri::parse(b"<sip:user@example.com>").is_err());
        assert!(Uri::parse(b"user@example.com").is_err());
        assert!(Uri::parse(b":x").is_err());
        assert!(Uri::parse(b"sip:").is_err());
    }

    #[test]
    fn escaped_params_and_uri_headers_are_valid() {
        let u = p(b"sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert!(u.is_valid());
        assert!(u.params().contains(b"%6C%72"));
        let u = p(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E");
        assert!(u.is_valid());
        assert_eq!(
            u.headers()
                .next()
                .map(|(_, v)| percent_decode(v).into_owned()),
            Some(b"<sip:sip.example.com>".to_vec())
        );
    }

    #[test]
    fn empty_uri_parameter_is_invalid() {
        assert!(!p(b"sip:host;;lr").is_valid());
        assert!(!p(b"sip:host;a=").is_valid());
    }

    #[test]
    fn unusual_user_and_password_characters_are_valid() {
        let u = p(b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.password(),
            Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
        );
        assert!(u.is_valid());
    }
}
