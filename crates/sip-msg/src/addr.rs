//! `name-addr` / `addr-spec` values of From, To, Contact, Route, Record-Route, Path, Reply-To,
//! P-Asserted-Identity... (RFC 3261 §20.10, §20.20, §20.39, §25.1).

use std::borrow::Cow;
use std::fmt;

use crate::params::ParamScan;
use crate::params::Params;
use crate::scan::{
    find_byte, find_byte2, find_byte3, is_lws, is_token_byte, skip_lws, skip_quoted, trim_lws,
    unquote,
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
/// RFC 5626 §4.2). URI parameters stay inside [`uri`](Self::uri). Parsed in one pass; the tag
/// is located while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    raw: &'a [u8],
    display: Option<&'a [u8]>,
    uri: &'a [u8],
    angle: bool,
    params: Params<'a>,
    tag: Option<&'a [u8]>,
    params_ok: bool,
}

impl<'a> NameAddr<'a> {
    /// Parses one value (one element of a comma-separated list).
    pub fn parse(value: &'a [u8]) -> Result<NameAddr<'a>, InvalidNameAddr> {
        let v = trim_lws(value);
        let (mut a, end) = Self::parse_first(v)?;
        if end < v.len() {
            a.params_ok = false;
            a.raw = v;
        }
        Ok(a)
    }

    /// Parses the first value of a list; returns it and where it stopped (the `,` before the
    /// next value, or the end).
    #[inline]
    pub(crate) fn parse_first(value: &'a [u8]) -> Result<(NameAddr<'a>, usize), InvalidNameAddr> {
        let skip = skip_lws(value, 0);
        let v = &value[skip..];
        if v.is_empty() {
            return Err(InvalidNameAddr);
        }
        let (display, uri, angle, params_from) = if v[0] == b'"' {
            let end = skip_quoted(v, 0).ok_or(InvalidNameAddr)?;
            let lt = skip_lws(v, end);
            if v.get(lt) != Some(&b'<') {
                return Err(InvalidNameAddr);
            }
            let gt = find_byte(&v[lt + 1..], b'>').ok_or(InvalidNameAddr)? + lt + 1;
            (Some(&v[..end]), &v[lt + 1..gt], true, gt + 1)
        } else {
            // name-addr when a '<' comes before any ';' or ',' (addr-spec parameters could
            // quote one).
            match find_byte3(v, b'<', b';', b',') {
                Some(lt) if v[lt] == b'<' => {
                    let gt = find_byte(&v[lt + 1..], b'>').ok_or(InvalidNameAddr)? + lt + 1;
                    let d = trim_lws(&v[..lt]);
                    ((!d.is_empty()).then_some(d), &v[lt + 1..gt], true, gt + 1)
                }
                Some(semi) => (None, trim_lws(&v[..semi]), false, semi),
                None => (None, trim_lws(v), false, v.len()),
            }
        };
        if uri.is_empty() {
            return Err(InvalidNameAddr);
        }
        let mut tag = None;
        let mut scan = ParamScan::after(v, params_from, false);
        for p in scan.by_ref() {
            if tag.is_none() && p.name.len() == 3 && p.name.eq_ignore_ascii_case(b"tag") {
                tag = Some(p.value.unwrap_or(b""));
            }
        }
        let end = scan.pos;
        Ok((
            NameAddr {
                raw: trim_lws(&v[..end]),
                display,
                uri,
                angle,
                params: Params::new(trim_lws(&v[params_from.min(end)..end])),
                tag,
                params_ok: scan.ok,
            },
            skip + end,
        ))
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
        self.tag.filter(|t| !t.is_empty())
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
        if !self.params_ok {
            return false;
        }
        if let Some(d) = self.display
            && d.first() != Some(&b'"')
            && !d.iter().all(|&b| is_token_byte(b) || is_lws(b))
        {
            return false;
        }
        // No LWS check needed: no URI character class admits SP, HT, CR or LF.
        if !self.angle && find_byte2(self.uri, b'?', b',').is_some() {
            return false;
        }
        match Uri::parse(self.uri) {
            Ok(u) => u.is_valid(),
            Err(_) => false,
        }
    }
}

/// Parses a `qvalue` (`0`, `0.5`, `1.000`) into thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match crate::scan::find_byte_at(b'.', v) {
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
