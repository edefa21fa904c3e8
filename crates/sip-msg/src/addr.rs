//! `name-addr` / `addr-spec` values of From, To, Contact, Route, Record-Route, Path, Reply-To,
//! P-Asserted-Identity... (RFC 3261 §20.10, §20.20, §20.39, §25.1).

use std::borrow::Cow;
use std::fmt;

use crate::params::{KnownName, ParamScan, Params, canonical_params};
use crate::scan::{
    find_byte, find_byte2, find_byte3, is_lws, is_token_byte, offset_in, skip_lws, skip_quoted,
    trim_lws, unquote,
};
use crate::span::{MAX_VALUE, Sp};
use crate::uri::{InvalidUri, Uri, canonical_sip_uri_valid_in, uri_valid};

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
/// is located while parsing. The value keeps the raw bytes and the positions of its parts,
/// which is also what [`SipMessage`](crate::SipMessage) caches for From, To and the top Route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    raw: &'a [u8],
    sp: AddrSpans,
}

/// Positions of the parts of a name-addr, relative to its raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddrSpans {
    display: Sp,
    uri: Sp,
    params: Sp,
    tag: Sp,
    angle: bool,
    params_ok: bool,
}

impl AddrSpans {
    pub(crate) const EMPTY: AddrSpans = AddrSpans {
        display: Sp::NONE,
        uri: Sp::NONE,
        params: Sp::NONE,
        tag: Sp::NONE,
        angle: false,
        params_ok: true,
    };

    /// [`NameAddr::parse_first`] with the parts written in place: returns the raw value as a
    /// range of `value` and where parsing stopped.
    #[inline]
    pub(crate) fn parse_first(
        &mut self,
        value: &[u8],
    ) -> Result<(usize, usize, usize), InvalidNameAddr> {
        self.parse_first_impl::<false>(value)
    }

    /// [`parse_first`](Self::parse_first) with `GENERAL`: parameters always through the
    /// general scanner (the reference the one-pass path is checked against).
    #[inline(always)]
    pub(crate) fn parse_first_impl<const GENERAL: bool>(
        &mut self,
        value: &[u8],
    ) -> Result<(usize, usize, usize), InvalidNameAddr> {
        let skip = skip_lws(value, 0);
        let v = &value[skip..];
        if v.is_empty() || v.len() > MAX_VALUE {
            return Err(InvalidNameAddr);
        }
        let params_from = if v[0] == b'<' {
            // The usual `<uri>`: no display name.
            let gt = find_byte(&v[1..], b'>').ok_or(InvalidNameAddr)? + 1;
            self.display = Sp::NONE;
            self.uri = Sp::new(1, gt);
            self.angle = true;
            gt + 1
        } else if v[0] == b'"' {
            let end = skip_quoted(v, 0).ok_or(InvalidNameAddr)?;
            let lt = skip_lws(v, end);
            if v.get(lt) != Some(&b'<') {
                return Err(InvalidNameAddr);
            }
            let gt = find_byte(&v[lt + 1..], b'>').ok_or(InvalidNameAddr)? + lt + 1;
            self.display = Sp::new(0, end);
            self.uri = Sp::new(lt + 1, gt);
            self.angle = true;
            gt + 1
        } else {
            // name-addr when a '<' comes before any ';' or ',' (addr-spec parameters could
            // quote one).
            match find_byte3(v, b'<', b';', b',') {
                Some(lt) if v[lt] == b'<' => {
                    let gt = find_byte(&v[lt + 1..], b'>').ok_or(InvalidNameAddr)? + lt + 1;
                    let d = trim_lws(&v[..lt]);
                    self.display = if d.is_empty() {
                        Sp::NONE
                    } else {
                        Sp::new(0, d.len())
                    };
                    self.uri = Sp::new(lt + 1, gt);
                    self.angle = true;
                    gt + 1
                }
                Some(semi) => {
                    self.display = Sp::NONE;
                    self.uri = trimmed(v, 0, semi);
                    self.angle = false;
                    semi
                }
                None => {
                    self.display = Sp::NONE;
                    self.uri = trimmed(v, 0, v.len());
                    self.angle = false;
                    v.len()
                }
            }
        };
        if self.uri.len() == 0 {
            return Err(InvalidNameAddr);
        }
        if GENERAL {
            return self.general_params(v, skip, params_from);
        }
        let mut tag = Sp::NONE;
        const TAG: [KnownName; 1] = [KnownName::new(b"tag")];
        match canonical_params(v, params_from, &TAG, |n, x, _, known| {
            if known.is_some() {
                // `tag=` itself: the first one wins.
                if !tag.is_some() {
                    tag = x.unwrap_or(n);
                }
            } else {
                note_tag(v, &mut tag, n, x);
            }
        }) {
            Some(end) => {
                // No LWS before the parameters nor after them (the last byte is a name or
                // value byte, or the `>`), so nothing to trim.
                self.tag = tag;
                self.params_ok = true;
                self.params = Sp::new(params_from, end);
                let raw_end = if end > params_from {
                    end
                } else {
                    trimmed_end(v, end)
                };
                Ok((skip, skip + raw_end, skip + end))
            }
            None => self.general_params(v, skip, params_from),
        }
    }

    /// The parameters of [`parse_first`](Self::parse_first) in any shape (LWS, quotes, empty
    /// or malformed parameters).
    #[cold]
    #[inline(never)]
    fn general_params(
        &mut self,
        v: &[u8],
        skip: usize,
        params_from: usize,
    ) -> Result<(usize, usize, usize), InvalidNameAddr> {
        let mut tag = Sp::NONE;
        let mut scan = ParamScan::after(v, params_from, false);
        for p in scan.by_ref() {
            let ns = offset(v, p.name);
            let value = p.value.map(|x| {
                let s = offset(v, x);
                Sp::new(s, s + x.len())
            });
            note_tag(v, &mut tag, Sp::new(ns, ns + p.name.len()), value);
        }
        let end = scan.pos;
        self.tag = tag;
        self.params_ok = scan.ok;
        self.params = trimmed(v, params_from.min(end), end);
        Ok((skip, skip + trimmed_end(v, end), skip + end))
    }

    /// [`NameAddr::is_valid`] of the value `raw` with these parts.
    pub(crate) fn valid(&self, raw: &[u8]) -> bool {
        self.valid_impl::<false>(raw)
    }

    /// [`valid`](Self::valid); with `GENERAL`, the URI is checked by the general parser only.
    #[inline(always)]
    pub(crate) fn valid_impl<const GENERAL: bool>(&self, raw: &[u8]) -> bool {
        if !self.params_ok {
            return false;
        }
        if let Some(d) = self.display.opt(raw)
            && d.first() != Some(&b'"')
            && !d.iter().all(|&b| is_token_byte(b) || is_lws(b))
        {
            return false;
        }
        let uri = self.uri.of(raw);
        if GENERAL {
            if !self.angle && find_byte2(uri, b'?', b',').is_some() {
                return false;
            }
            return crate::uri::uri_valid_general(uri);
        }
        if self.angle {
            // The URI goes on with the `>`, which lets the scans run in whole steps.
            if let Some(ext) = raw.get(self.uri.s as usize..)
                && canonical_sip_uri_valid_in(ext, uri.len())
            {
                return true;
            }
        } else if find_byte2(uri, b'?', b',').is_some() {
            // No LWS check needed: no URI character class admits SP, HT, CR or LF.
            return false;
        }
        uri_valid(uri)
    }

    /// The `name-addr` form (URI in `<>`).
    #[inline(always)]
    pub(crate) fn angle(&self) -> bool {
        self.angle
    }

    /// Marks the value as followed by garbage (what [`NameAddr::parse`] does when the value
    /// goes on after the first name-addr).
    #[inline]
    pub(crate) fn set_trailing_garbage(&mut self) {
        self.params_ok = false;
    }
}

impl<'a> NameAddr<'a> {
    /// Parses one value (one element of a comma-separated list).
    pub fn parse(value: &'a [u8]) -> Result<NameAddr<'a>, InvalidNameAddr> {
        let v = trim_lws(value);
        let (mut a, end) = Self::parse_first(v)?;
        if end < v.len() {
            a.sp.params_ok = false;
            a.raw = v;
        }
        Ok(a)
    }

    /// Rebuilds a value from its raw bytes and the positions found by parsing (what the
    /// message caches).
    #[inline(always)]
    pub(crate) fn from_parts(raw: &'a [u8], sp: AddrSpans) -> NameAddr<'a> {
        NameAddr { raw, sp }
    }

    /// The positions of the parts, relative to [`raw`](Self::raw).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn parts(&self) -> AddrSpans {
        self.sp
    }

    /// Parses the first value of a list; returns it and where it stopped (the `,` before the
    /// next value, or the end).
    #[inline]
    pub(crate) fn parse_first(value: &'a [u8]) -> Result<(NameAddr<'a>, usize), InvalidNameAddr> {
        let mut sp = AddrSpans::EMPTY;
        let (s, t, end) = sp.parse_first(value)?;
        Ok((
            NameAddr {
                raw: &value[s..t],
                sp,
            },
            end,
        ))
    }

    /// The whole value, trimmed.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Display name as received (quotes kept), if any.
    pub fn display_name_raw(&self) -> Option<&'a [u8]> {
        self.sp.display.opt(self.raw)
    }

    /// Display name with quotes removed and quoted-pairs resolved.
    pub fn display_name(&self) -> Option<Cow<'a, [u8]>> {
        self.display_name_raw().map(unquote)
    }

    /// The URI text (inside `<>` when present).
    #[inline]
    pub fn uri_raw(&self) -> &'a [u8] {
        self.sp.uri.of(self.raw)
    }

    /// Parses the URI.
    pub fn uri(&self) -> Result<Uri<'a>, InvalidUri> {
        Uri::parse(self.uri_raw())
    }

    /// True for the `name-addr` form (URI enclosed in `<>`).
    pub fn has_angle_brackets(&self) -> bool {
        self.sp.angle
    }

    /// Header parameters after the address.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.sp.params.of(self.raw))
    }

    /// `tag` parameter of From/To (RFC 3261 §19.3).
    #[inline]
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.sp.tag.opt(self.raw).filter(|t| !t.is_empty())
    }

    /// Contact `q` parameter, raw (`0.5`).
    pub fn q_raw(&self) -> Option<&'a [u8]> {
        self.params().value(b"q")
    }

    /// Contact `q` parameter in thousandths (`q=0.5` is 500, RFC 3261 §20.10 `qvalue`).
    pub fn q(&self) -> Option<u16> {
        parse_qvalue(self.q_raw()?)
    }

    /// Contact `expires` parameter in seconds; values above `u32::MAX` saturate.
    pub fn expires(&self) -> Option<u32> {
        let v = self.params().value(b"expires")?;
        crate::scan::parse_u64(v).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Contact `+sip.instance` parameter, unquoted (RFC 5626 §4.1), e.g. `<urn:uuid:...>`.
    pub fn sip_instance(&self) -> Option<Cow<'a, [u8]>> {
        self.params().get(b"+sip.instance")?.value_unquoted()
    }

    /// Contact `reg-id` parameter (RFC 5626 §4.2).
    pub fn reg_id(&self) -> Option<u32> {
        crate::scan::parse_u32(self.params().value(b"reg-id")?)
    }

    /// Strict check against RFC 3261 §25.1: display name made of tokens or one quoted string,
    /// no LWS inside `<>`, a valid URI, an addr-spec without `?` or `,`, and well-formed
    /// generic parameters.
    pub fn is_valid(&self) -> bool {
        self.sp.valid(self.raw)
    }
}

/// Keeps the first `tag` parameter (a flag `tag` reads as an empty value).
#[inline(always)]
fn note_tag(v: &[u8], tag: &mut Sp, name: Sp, value: Option<Sp>) {
    if !tag.is_some() && name.len() == 3 && name.of(v).eq_ignore_ascii_case(b"tag") {
        *tag = value.unwrap_or(Sp::new(name.e as usize, name.e as usize));
    }
}

/// Offset of `part` (a sub-slice of `whole`) in `whole`.
#[inline(always)]
fn offset(whole: &[u8], part: &[u8]) -> usize {
    offset_in(whole, part).unwrap_or(0)
}

/// End of `trim_lws(&v[..end])` for a `v` that starts with a non-LWS byte.
#[inline(always)]
fn trimmed_end(v: &[u8], mut end: usize) -> usize {
    while end > 0 && is_lws(v[end - 1]) {
        end -= 1;
    }
    end
}

/// `trim_lws(&v[a..b])` as a range of `v`.
#[inline(always)]
fn trimmed(v: &[u8], a: usize, b: usize) -> Sp {
    let t = trim_lws(&v[a..b]);
    let s = offset(v, t);
    Sp::new(s, s + t.len())
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
