//! `name-addr` / `addr-spec` values of From, To, Contact, Route, Record-Route, Path, Reply-To,
//! P-Asserted-Identity... (RFC 3261 §20.10, §20.20, §20.39, §25.1).

use std::borrow::Cow;
use std::fmt;

use crate::params::Params;
use crate::scan::{
    SplitTop, has_lws, is_lws, is_token, is_token_byte, skip_lws, skip_quoted, trim_lws, unquote,
};
use crate::uri::{InvalidUri, Uri};

/// The value is not a `name-addr` or `addr-spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidNameAddr;

impl fmt::Display for InvalidNameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid name-addr")
    }
}

impl std::error::Error for InvalidNameAddr {}

/// `[display-name] <URI> *(;param)` or `URI *(;param)`, borrowed from the message.
///
/// Header parameters (after `>` or after the addr-spec) are in [`params`](Self::params):
/// `tag` for From/To, `q`, `expires`, `+sip.instance`, `reg-id` for Contact (RFC 3261 §20.10,
/// RFC 5626 §4.2). URI parameters stay inside [`uri`](Self::uri).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    raw: &'a [u8],
    display: Option<&'a [u8]>,
    uri: &'a [u8],
    angle: bool,
    params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value (one element of a comma-separated list).
    pub fn parse(value: &'a [u8]) -> Result<NameAddr<'a>, InvalidNameAddr> {
        let v = trim_lws(value);
        if v.is_empty() {
            return Err(InvalidNameAddr);
        }
        let (display, lt) = if v[0] == b'"' {
            let end = skip_quoted(v, 0).ok_or(InvalidNameAddr)?;
            let lt = skip_lws(v, end);
            if v.get(lt) != Some(&b'<') {
                return Err(InvalidNameAddr);
            }
            (Some(&v[..end]), Some(lt))
        } else {
            // name-addr when a '<' comes before any ';' (addr-spec parameters could quote one).
            match memchr::memchr2(b'<', b';', v) {
                Some(i) if v[i] == b'<' => {
                    let d = trim_lws(&v[..i]);
                    ((!d.is_empty()).then_some(d), Some(i))
                }
                _ => (None, None),
            }
        };
        match lt {
            Some(lt) => {
                let gt = memchr::memchr(b'>', &v[lt + 1..]).ok_or(InvalidNameAddr)? + lt + 1;
                let uri = &v[lt + 1..gt];
                if uri.is_empty() {
                    return Err(InvalidNameAddr);
                }
                Ok(NameAddr {
                    raw: v,
                    display,
                    uri,
                    angle: true,
                    params: Params::new(trim_lws(&v[gt + 1..])),
                })
            }
            None => {
                let semi = memchr::memchr(b';', v).unwrap_or(v.len());
                let uri = trim_lws(&v[..semi]);
                if uri.is_empty() {
                    return Err(InvalidNameAddr);
                }
                Ok(NameAddr {
                    raw: v,
                    display: None,
                    uri,
                    angle: false,
                    params: Params::new(&v[semi..]),
                })
            }
        }
    }

    /// The whole value, trimmed.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Display name as received (quotes kept), if any.
    pub fn display_name_raw(&self) -> Option<&'a [u8]> {
        self.display
    }

    /// Display name with quotes removed and quoted-pairs resolved.
    pub fn display_name(&self) -> Option<Cow<'a, [u8]>> {
        self.display.map(unquote)
    }

    /// The URI text (inside `<>` when present).
    pub fn uri_raw(&self) -> &'a [u8] {
        self.uri
    }

    /// Parses the URI.
    pub fn uri(&self) -> Result<Uri<'a>, InvalidUri> {
        Uri::parse(self.uri)
    }

    /// True for the `name-addr` form (URI enclosed in `<>`).
    pub fn has_angle_brackets(&self) -> bool {
        self.angle
    }

    /// Header parameters after the address.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// `tag` parameter of From/To (RFC 3261 §19.3).
    #[inline]
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.value(b"tag")
    }

    /// Contact `q` parameter, raw (`0.5`).
    pub fn q_raw(&self) -> Option<&'a [u8]> {
        self.params.value(b"q")
    }

    /// Contact `q` parameter in thousandths (`q=0.5` is 500, RFC 3261 §20.10 `qvalue`).
    pub fn q(&self) -> Option<u16> {
        parse_qvalue(self.q_raw()?)
    }

    /// Contact `expires` parameter in seconds; values above `u32::MAX` saturate.
    pub fn expires(&self) -> Option<u32> {
        let v = self.params.value(b"expires")?;
        crate::scan::parse_u64(v).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Contact `+sip.instance` parameter, unquoted (RFC 5626 §4.1), e.g. `<urn:uuid:...>`.
    pub fn sip_instance(&self) -> Option<Cow<'a, [u8]>> {
        self.params.get(b"+sip.instance")?.value_unquoted()
    }

    /// Contact `reg-id` parameter (RFC 5626 §4.2).
    pub fn reg_id(&self) -> Option<u32> {
        crate::scan::parse_u32(self.params.value(b"reg-id")?)
    }

    /// Strict check against RFC 3261 §25.1: display name made of tokens or one quoted string,
    /// no LWS inside `<>`, a valid URI, an addr-spec without `?` or `,`, and well-formed
    /// generic parameters.
    pub fn is_valid(&self) -> bool {
        if let Some(d) = self.display
            && d.first() != Some(&b'"')
            && !d
                .split(|&b| is_lws(b))
                .filter(|w| !w.is_empty())
                .all(is_token)
        {
            return false;
        }
        if has_lws(self.uri) {
            return false;
        }
        if !self.angle && memchr::memchr2(b'?', b',', self.uri).is_some() {
            return false;
        }
        match Uri::parse(self.uri) {
            Ok(u) if u.is_valid() => {}
            _ => return false,
        }
        generic_params_valid(self.params.raw())
    }
}

/// Parses a `qvalue` (`0`, `0.5`, `1.000`) into thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(d) => (&v[..d], &v[d + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut f: u16 = 0;
    for i in 0..3 {
        f = f * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(f),
        b"1" if f == 0 => Some(1000),
        _ => None,
    }
}

/// Checks `*( SEMI generic-param )` with `generic-param = token [ EQUAL gen-value ]` and
/// `gen-value = token / host / quoted-string` (RFC 3261 §25.1). Empty parameters (`;;`) are
/// invalid (RFC 4475 §3.1.2.1).
pub(crate) fn generic_params_valid(raw: &[u8]) -> bool {
    let raw = trim_lws(raw);
    if raw.is_empty() {
        return true;
    }
    let Some(rest) = raw.strip_prefix(b";") else {
        return false;
    };
    for item in SplitTop::new(rest, b';') {
        let (name, value) = match memchr::memchr(b'=', item) {
            Some(eq) => (trim_lws(&item[..eq]), Some(trim_lws(&item[eq + 1..]))),
            None => (item, None),
        };
        if !is_token(name) {
            return false;
        }
        if let Some(v) = value
            && !gen_value_valid(v)
        {
            return false;
        }
    }
    true
}

/// `gen-value = token / host / quoted-string`.
pub(crate) fn gen_value_valid(v: &[u8]) -> bool {
    match v.first() {
        None => false,
        Some(b'"') => skip_quoted(v, 0) == Some(v.len()),
        Some(b'[') => {
            v.last() == Some(&b']') && crate::uri::parse_ipv6(&v[1..v.len() - 1]).is_some()
        }
        Some(_) => v.iter().all(|&b| is_token_byte(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn na(s: &[u8]) -> NameAddr<'_> {
        NameAddr::parse(s).expect("name-addr parses")
    }

    #[test]
    fn quoted_display_name_with_escapes_is_unquoted() {
        let a = na(br#""J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8"#);
        assert_eq!(a.display_name().as_deref(), Some(&br#"J Rosenberg \""#[..]));
        assert_eq!(a.uri_raw(), b"sip:jdrosen@example.com");
        assert_eq!(a.tag(), Some(&b"98asjd8"[..]));
        assert!(a.is_valid());
    }

    #[test]
    fn addr_spec_params_belong_to_the_header() {
        let a = na(b"sip:+19725552222@gw1.example.net;unknownparam");
        assert!(!a.has_angle_brackets());
        assert_eq!(a.uri_raw(), b"sip:+19725552222@gw1.example.net");
        assert!(a.params().contains(b"unknownparam"));
        let a = na(b"<sip:+19725552222@gw1.example.net;unknownparam>");
        assert!(a.params().is_empty());
        assert_eq!(
            a.uri()
                .ok()
                .and_then(|u| u.params().iter().next())
                .map(|p| p.name),
            Some(&b"unknownparam"[..])
        );
    }

    #[test]
    fn display_name_without_space_before_angle_bracket_is_valid() {
        let a = na(b"caller<sip:caller@example.com>;tag=323");
        assert_eq!(a.display_name().as_deref(), Some(&b"caller"[..]));
        assert!(a.is_valid());
    }

    #[test]
    fn unterminated_quote_is_rejected() {
        assert!(NameAddr::parse(b"\"Mr. J. User <sip:j.user@example.com>").is_err());
    }

    #[test]
    fn spaces_inside_angle_brackets_are_invalid() {
        assert!(!na(b"\"Watson, Thomas\" < sip:t.watson@example.org >").is_valid());
    }

    #[test]
    fn non_token_unquoted_display_name_is_invalid() {
        assert!(!na(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_valid());
        assert!(na(b"A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe").is_valid());
    }

    #[test]
    fn addr_spec_with_uri_headers_is_invalid() {
        assert!(!na(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_valid());
        assert!(na(b"<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").is_valid());
    }

    #[test]
    fn empty_header_params_are_invalid() {
        assert!(!na(b"\"Joe\" <sip:joe@example.org>;;;;").is_valid());
    }

    #[test]
    fn contact_params_are_typed() {
        let a = na(br#"<sip:a@192.0.2.1:5060;ob>;q=0.7;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1"#);
        assert_eq!(a.q(), Some(700));
        assert_eq!(a.expires(), Some(3600));
        assert_eq!(
            a.sip_instance().as_deref(),
            Some(&b"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"[..])
        );
        assert_eq!(a.reg_id(), Some(1));
        assert!(a.is_valid());
        let a = na(b"<sip:a@b>;expires=280297596632815;q=1");
        assert_eq!(a.expires(), Some(u32::MAX));
        assert_eq!(a.q(), Some(1000));
        assert_eq!(na(b"<sip:a@b>;q=1.5").q(), None);
    }

    #[test]
    fn unknown_scheme_uris_are_accepted() {
        assert!(na(b"isbn:2983792873").is_valid());
        assert!(na(b"<http://www.example.com>;tag=3234233").is_valid());
        assert!(na(b"<name:John_Smith>").is_valid());
    }

    #[test]
    fn quoted_param_values_may_hold_utf8() {
        let a = na("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.".as_bytes());
        assert!(a.is_valid());
        assert_eq!(a.tag(), Some(&b"_token~1'+`*%!-."[..]));
    }
}
