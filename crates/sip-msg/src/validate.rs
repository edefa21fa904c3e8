//! Syntax validation ([`SipMessage::validate`]) and request sanity checks
//! ([`SipMessage::check_request`], [`SipMessage::check_response`]).

use crate::addr::{AddrSpans, NameAddr};
use crate::auth::AuthValue;
use crate::error::{ParseError, ParseErrorKind as K, SanityError, SanityErrorKind as S};
use crate::header::HeaderName as H;
use crate::message::SipMessage;
use crate::scan::{TOKEN, has_lws, is_token, parse_u64, skip_lws, span, trim_lws};
use crate::typed::CSeq;
use crate::uri::{Scheme, Uri, canonical_sip_uri_valid_in};
use crate::via::{Via, ViaSpans};

impl SipMessage {
    /// Checks the syntax of the start line and of the headers a proxy or registrar relies on
    /// (RFC 3261 §25.1): Request-Line / Status-Line, every Via, From, To, Call-ID, CSeq (and
    /// its method against the Request-Line, §8.1.1.5), Max-Forwards, Content-Length (against
    /// the bytes present, §18.3), Contact, Expires, Date, Route, Record-Route, Path, option
    /// tag lists, Content-Type and authentication headers. Other headers are not looked at.
    ///
    /// Cardinality (a missing To, two CSeq...) is not a syntax matter: see
    /// [`check_request`](Self::check_request).
    pub fn validate(&self) -> Result<(), ParseError> {
        if let Some(off) = self.bad_line() {
            return Err(ParseError::new(K::HeaderLine, off));
        }
        if !self.has_empty_line() {
            return Err(ParseError::new(K::MissingEmptyLine, self.headers_end()));
        }
        self.validate_start_line()?;
        let request_method = self.method();
        let rt = self.routing();
        // The first line of Via, From, To, Route, CSeq and Max-Forwards was parsed during
        // framing: its result is reused instead of parsing again.
        let first = |h| self.header_index(h).unwrap_or(usize::MAX);
        let (via0, from0, to0) = (first(H::Via), first(H::From), first(H::To));
        let (route0, cseq0, mf0) = (first(H::Route), first(H::CSeq), first(H::MaxForwards));
        let buf = self.as_bytes();
        for (i, e) in self.entries().iter().enumerate() {
            let at = e.value_start as usize;
            // The value, and the value followed by the rest of the message: a value is
            // followed by LWS (or nothing), which no character class admits, so scans over
            // `ext` stop at the end of the value on their own, in whole 8-byte steps.
            let ext = buf.get(at..).unwrap_or(&[]);
            let v = ext
                .get(..(e.value_end - e.value_start) as usize)
                .unwrap_or(&[]);
            let err = |k| Err(ParseError::new(k, at));
            match e.name {
                H::Other => {
                    let name = self.slice(e.start, self.name_end(e));
                    if !is_token(name) {
                        return Err(ParseError::new(K::HeaderLine, e.start as usize));
                    }
                }
                H::Via => {
                    let mut rest = v;
                    if i == via0 {
                        // The top via-parm, then the rest of the line.
                        let p = &rt.via;
                        if !p.ok || !p.sp.valid(self.slice(p.raw.0, p.raw.1)) {
                            return err(K::Via);
                        }
                        let end = p.end;
                        match self.as_bytes().get(end as usize) {
                            Some(b',') if (end as usize) < e.value_end as usize => {
                                rest = self.slice(end + 1, e.value_end);
                            }
                            _ => continue,
                        }
                    }
                    if !via_list_valid(rest) {
                        return err(K::Via);
                    }
                }
                H::From | H::To => {
                    let cached = match (e.name, i) {
                        (H::From, i) if i == from0 => Some(&rt.from),
                        (H::To, i) if i == to0 => Some(&rt.to),
                        _ => None,
                    };
                    let ok = match cached {
                        Some(p) => p.ok && p.sp.valid(self.slice(p.raw.0, p.raw.1)),
                        None => NameAddr::parse(v).is_ok_and(|a| a.is_valid()),
                    };
                    if !ok {
                        return err(if e.name == H::From { K::From } else { K::To });
                    }
                }
                H::CallId if !call_id_valid(ext, v.len()) => return err(K::CallId),
                H::CSeq => {
                    let parsed = if i == cseq0 {
                        rt.cseq
                            .map(|(seq, code, ms, me)| (seq, code.to_method(self.slice(ms, me))))
                    } else {
                        CSeq::parse(v).ok().map(|c| (c.seq, c.method))
                    };
                    match parsed {
                        Some((seq, method)) if seq < 1 << 31 => {
                            if let Some(m) = request_method
                                && method != m
                            {
                                return err(K::CSeqMethodMismatch);
                            }
                        }
                        _ => return err(K::CSeq),
                    }
                }
                H::MaxForwards
                    if if i == mf0 {
                        rt.max_forwards.is_none()
                    } else {
                        parse_u64(v).is_none_or(|n| n > 255)
                    } =>
                {
                    return err(K::MaxForwards);
                }
                H::ContentLength if parse_u64(v).is_none() || v.len() > 19 => {
                    return err(K::ContentLength);
                }
                H::Expires | H::MinExpires if parse_u64(v).is_none() => return err(K::Expires),
                H::Contact if v != b"*" && !name_addr_list_valid(v, None, false) => {
                    return err(K::Contact);
                }
                H::Route | H::RecordRoute | H::Path | H::ServiceRoute => {
                    let cached = (i == route0).then(|| {
                        let p = &rt.route;
                        p.ok.then(|| {
                            let raw = self.slice(p.raw.0, p.raw.1);
                            (raw, p.sp, (p.end - e.value_start) as usize)
                        })
                    });
                    if !name_addr_list_valid(v, cached, true) {
                        return err(K::RouteSet);
                    }
                }
                // Supported may be empty (RFC 3261 §20.37: `[option-tag *(COMMA option-tag)]`).
                H::Require | H::ProxyRequire | H::Supported | H::Unsupported
                    if !(option_tags_valid(v, ext) || v.is_empty() && e.name == H::Supported) =>
                {
                    return err(K::OptionTags);
                }
                H::ContentType if !content_type_valid(v, ext) => return err(K::ContentType),
                H::Date if !rfc1123_date_valid(v) => return err(K::Date),
                H::Authorization
                | H::ProxyAuthorization
                | H::WwwAuthenticate
                | H::ProxyAuthenticate
                    if !AuthValue::parse(v).is_ok_and(|a| a.is_valid()) =>
                {
                    return err(K::Auth);
                }
                _ => {}
            }
        }
        if self.content_length_too_big() {
            return Err(ParseError::new(
                K::ContentLengthMismatch,
                self.body_offset(),
            ));
        }
        Ok(())
    }

    fn validate_start_line(&self) -> Result<(), ParseError> {
        let [a, b, c] = self.start_line_parts();
        if self.is_request() {
            // Request-Line = Method SP Request-URI SP SIP-Version CRLF, single spaces.
            if !self.method_is_token() {
                return Err(ParseError::new(K::StartLine, 0));
            }
            let uri_at = a.len() + 1;
            if b.is_empty() || c.is_empty() {
                return Err(ParseError::new(K::StartLine, uri_at));
            }
            // The usual valid `sip:` URI without headers (and so without LWS) is known in one
            // pass; anything else gets every check below, in order.
            let canonical = self
                .start_line_bytes()
                .get(uri_at..)
                .is_some_and(|ext| canonical_sip_uri_valid_in(ext, b.len()));
            if !canonical && has_lws(b) {
                return Err(ParseError::new(K::RequestUri, uri_at));
            }
            check_version(c, uri_at + b.len() + 1)?;
            if !canonical {
                let uri = Uri::parse(b).map_err(|_| ParseError::new(K::RequestUri, uri_at))?;
                if !uri.is_valid() {
                    return Err(ParseError::new(K::RequestUri, uri_at));
                }
                // URI headers are not allowed in a Request-URI (RFC 3261 §19.1.1 table;
                // RFC 4475 §3.1.2.11).
                if matches!(uri.scheme(), Scheme::Sip | Scheme::Sips) && uri.headers_raw().is_some()
                {
                    return Err(ParseError::new(K::RequestUri, uri_at));
                }
            }
        } else {
            check_version(a, 0)?;
            let code_ok =
                b.len() == 3 && b.iter().all(u8::is_ascii_digit) && (b'1'..=b'6').contains(&b[0]);
            if !code_ok {
                return Err(ParseError::new(K::StatusCode, a.len() + 1));
            }
            // Reason-Phrase may hold any byte but CR and LF.
            if c.iter().any(|&x| x == b'\r' || x == b'\n') {
                return Err(ParseError::new(K::StartLine, 0));
            }
        }
        Ok(())
    }

    /// Checks a request that [`validate`](Self::validate)s the way Kamailio's `sanity`
    /// module does, returning the status to answer on failure:
    ///
    /// * SIP-Version other than 2.0 → 505;
    /// * a mandatory header missing (To, From, Call-ID, CSeq, Via; RFC 3261 §8.1.1) → 400;
    /// * To, From, Call-ID, CSeq, Max-Forwards, Content-Length, Content-Type or Expires on
    ///   several lines (RFC 3261 §7.3.1; RFC 4475 §3.3.8, §3.3.9) → 400;
    /// * a Request-URI scheme other than `sip`, `sips`, `tel` (RFC 3261 §8.2.2.1) → 416;
    /// * Max-Forwards 0 → 483 ([`TooManyHops`](crate::SanityErrorKind::TooManyHops), reported
    ///   last: a server that is the request's target may go on, RFC 3261 §16.3 item 2).
    ///
    /// Require / Proxy-Require (420) are left to the caller, which knows its extensions.
    pub fn check_request(&self) -> Result<(), SanityError> {
        if !self.is_request() {
            return Err(SanityError::new(S::NotARequest, None));
        }
        let [_, uri, version] = self.start_line_parts();
        if !version.eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(SanityError::new(S::UnsupportedVersion, None));
        }
        self.check_common_headers()?;
        match Uri::parse(uri).map(|u| u.scheme()) {
            Ok(Scheme::Sip | Scheme::Sips | Scheme::Tel) => {}
            _ => return Err(SanityError::new(S::UnsupportedUriScheme, None)),
        }
        if self.max_forwards() == Some(0) {
            return Err(SanityError::new(S::TooManyHops, Some(H::MaxForwards)));
        }
        Ok(())
    }

    /// Checks a response before it is relayed: mandatory headers present and single-valued
    /// headers not repeated (a response failing this is dropped, RFC 3261 §18.1.2).
    pub fn check_response(&self) -> Result<(), SanityError> {
        if self.is_request() {
            return Err(SanityError::new(S::NotARequest, None));
        }
        self.check_common_headers()
    }

    fn check_common_headers(&self) -> Result<(), SanityError> {
        let mut counts = [0u32; 9];
        const SINGLE: [H; 9] = [
            H::To,
            H::From,
            H::CallId,
            H::CSeq,
            H::Via,
            H::MaxForwards,
            H::ContentLength,
            H::ContentType,
            H::Expires,
        ];
        for e in self.entries() {
            if let Some(i) = SINGLE.iter().position(|&h| h == e.name) {
                counts[i] += 1;
            }
        }
        for (i, &h) in SINGLE.iter().enumerate().take(5) {
            if counts[i] == 0 {
                return Err(SanityError::new(S::MissingHeader, Some(h)));
            }
        }
        for (i, &h) in SINGLE.iter().enumerate() {
            if h != H::Via && counts[i] > 1 {
                return Err(SanityError::new(S::DuplicateHeader, Some(h)));
            }
        }
        Ok(())
    }
}

/// A comma-separated list of valid name-addrs (with `<>` when `angle` is required).
/// `first`: the parse of the first value when already known (raw bytes, parts, end; `None`:
/// it did not parse).
fn name_addr_list_valid(
    v: &[u8],
    first: Option<Option<(&[u8], AddrSpans, usize)>>,
    angle: bool,
) -> bool {
    let mut rest = v;
    let mut first = first;
    loop {
        let mut sp = AddrSpans::EMPTY;
        let (raw, end) = match first.take() {
            Some(Some((raw, p, end))) => {
                sp = p;
                (raw, end)
            }
            Some(None) => return false,
            None => match sp.parse_first(rest) {
                Ok((s, t, end)) => (&rest[s..t], end),
                Err(_) => return false,
            },
        };
        if !sp.valid(raw) || angle && !sp.angle() {
            return false;
        }
        match rest.get(end) {
            Some(b',') => rest = &rest[end + 1..],
            _ => return end >= rest.len(),
        }
    }
}

/// A comma-separated list of valid via-parms.
fn via_list_valid(v: &[u8]) -> bool {
    let mut rest = v;
    loop {
        let mut sp = ViaSpans::EMPTY;
        let (raw, end) = match sp.parse_canonical(rest) {
            Some(end) => (&rest[..end], end),
            None => match Via::parse_general(rest) {
                Ok((via, end)) => {
                    sp = via.spans();
                    (via.raw(), end)
                }
                Err(_) => return false,
            },
        };
        if !sp.valid(raw) {
            return false;
        }
        match rest.get(end) {
            Some(b',') => rest = &rest[end + 1..],
            _ => return true,
        }
    }
}

/// `option-tag *(COMMA option-tag)`: what splitting on top-level commas and checking that
/// every trimmed item is a non-empty token decides, in one pass (a token holds no quote, `<`
/// or comma, so the split cannot differ). `ext`: `v` followed by LWS or nothing.
fn option_tags_valid(v: &[u8], ext: &[u8]) -> bool {
    let mut i = 0;
    loop {
        i = skip_lws(v, i);
        let e = span(ext, i, TOKEN);
        if e == i {
            return false;
        }
        i = skip_lws(v, e);
        match v.get(i) {
            None => return true,
            Some(b',') => i += 1,
            Some(_) => return false,
        }
    }
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT`; anything but 2.0 is a 505.
pub(crate) fn check_version(v: &[u8], at: usize) -> Result<(), ParseError> {
    // `SIP/2.0` in any case, as one word (only the three letters are folded).
    if let &[a, b, c, d, e, f, g] = v {
        let w = u64::from_le_bytes([a, b, c, d, e, f, g, 0]);
        if w | 0x20_2020 == u64::from_le_bytes(*b"sip/2.0\0") {
            return Ok(());
        }
    }
    let well_formed = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && match crate::scan::find_byte_at(b'.', &v[4..]) {
            Some(d) => {
                let (maj, min) = (&v[4..4 + d], &v[5 + d..]);
                !maj.is_empty()
                    && !min.is_empty()
                    && maj.iter().all(u8::is_ascii_digit)
                    && min.iter().all(u8::is_ascii_digit)
            }
            None => false,
        };
    Err(ParseError::new(
        if well_formed {
            K::UnsupportedVersion
        } else {
            K::StartLine
        },
        at,
    ))
}

/// `callid = word [ "@" word ]`, for the `n`-byte value at the start of `ext` (followed by
/// LWS or nothing).
fn call_id_valid(ext: &[u8], n: usize) -> bool {
    use crate::scan::WORD;
    let a = span(ext, 0, WORD);
    if a == 0 {
        return false;
    }
    if a == n {
        return true;
    }
    match ext.get(a) {
        Some(b'@') => {
            let b = span(ext, a + 1, WORD);
            b > a + 1 && b == n
        }
        _ => false,
    }
}

/// `media-type = m-type SLASH m-subtype *(SEMI m-parameter)`. `ext`: `v` followed by LWS or
/// nothing.
fn content_type_valid(v: &[u8], ext: &[u8]) -> bool {
    // The usual `type/subtype`, without LWS or parameters.
    let t = span(ext, 0, TOKEN);
    if t > 0 && t < v.len() && v[t] == b'/' && span(ext, t + 1, TOKEN) == v.len() {
        return v.len() > t + 1;
    }
    let semi = crate::scan::find_byte_at(b';', v).unwrap_or(v.len());
    let Some(slash) = crate::scan::find_byte_at(b'/', &v[..semi]) else {
        return false;
    };
    is_token(trim_lws(&v[..slash]))
        && is_token(trim_lws(&v[slash + 1..semi]))
        && (semi == v.len() || crate::params::Params::new(&v[semi..]).is_valid())
}

/// `rfc1123-date = wkday "," SP date1 SP time SP "GMT"` (RFC 3261 §20.17, §25.1).
pub(crate) fn rfc1123_date_valid(v: &[u8]) -> bool {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    // "Sat, 13 Nov 2010 23:29:00 GMT" is exactly 29 bytes.
    if v.len() != 29 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| v[r].iter().all(u8::is_ascii_digit);
    DAYS.contains(&&v[0..3])
        && &v[3..5] == b", "
        && digits(5..7)
        && v[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && v[11] == b' '
        && digits(12..16)
        && v[16] == b' '
        && digits(17..19)
        && v[19] == b':'
        && digits(20..22)
        && v[22] == b':'
        && digits(23..25)
        && &v[25..] == b" GMT"
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parse(s: &[u8]) -> Result<SipMessage, ParseError> {
        SipMessage::parse(Bytes::copy_from_slice(s))
    }

    const BASE: &str = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Length: 0\r\n\r\n";

    fn with(replace: &str, by: &str) -> Vec<u8> {
        assert!(BASE.contains(replace), "{replace}");
        BASE.replacen(replace, by, 1).into_bytes()
    }

    #[test]
    fn a_well_formed_invite_validates() {
        let m = parse(BASE.as_bytes()).expect("valid");
        assert_eq!(m.check_request(), Ok(()));
    }

    #[test]
    fn each_broken_header_maps_to_its_error_kind() {
        let cases = [
            ("Max-Forwards: 70", "Max-Forwards: 256", K::MaxForwards),
            ("Max-Forwards: 70", "Max-Forwards: 7a", K::MaxForwards),
            ("CSeq: 314159 INVITE", "CSeq: 2147483648 INVITE", K::CSeq),
            ("CSeq: 314159 INVITE", "CSeq: 1 BYE", K::CSeqMethodMismatch),
            (
                "CSeq: 314159 INVITE",
                "CSeq: 1 invite",
                K::CSeqMethodMismatch,
            ),
            (
                "Call-ID: a84b4c76e66710@pc33.atlanta.com",
                "Call-ID: a b",
                K::CallId,
            ),
            (
                "Call-ID: a84b4c76e66710@pc33.atlanta.com",
                "Call-ID: a@b@c",
                K::CallId,
            ),
            ("Content-Length: 0", "Content-Length: -1", K::ContentLength),
            (
                "Content-Length: 0",
                "Content-Length: 10",
                K::ContentLengthMismatch,
            ),
            (
                "Contact: <sip:alice@pc33.atlanta.com>",
                "Contact: *, <sip:a@b>",
                K::Contact,
            ),
            (
                "To: Bob <sip:bob@biloxi.com>",
                "To: Bob <sip:bob@biloxi.com",
                K::To,
            ),
            ("From: Alice", "From: Al,ice", K::From),
            ("Via: SIP/2.0/UDP pc33", "Via: SIP/2.0 pc33", K::Via),
            (
                "INVITE sip:bob@biloxi.com SIP/2.0",
                "INVITE sip:bob@biloxi.com SIP/3.0",
                K::UnsupportedVersion,
            ),
            (
                "INVITE sip:bob@biloxi.com SIP/2.0",
                "INVITE sip:bob@biloxi.com HTTP/1.1",
                K::StartLine,
            ),
            (
                "INVITE sip:bob@biloxi.com SIP/2.0",
                "INVITE sip:bob@[::1 SIP/2.0",
                K::RequestUri,
            ),
            (
                "INVITE sip:bob@biloxi.com SIP/2.0",
                "INV(ITE sip:bob@biloxi.com SIP/2.0",
                K::StartLine,
            ),
        ];
        for (from, to, kind) in cases {
            let e = parse(&with(from, to)).expect_err(to);
            assert_eq!(e.kind(), kind, "{to}");
        }
    }

    #[test]
    fn date_must_be_rfc1123_in_gmt() {
        assert!(rfc1123_date_valid(b"Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(!rfc1123_date_valid(b"Fri, 01 Jan 2010 16:00:00 EST"));
        assert!(!rfc1123_date_valid(b"Fri, 1 Jan 2010 16:00:00 GMT"));
    }

    #[test]
    fn status_code_must_be_three_digits_between_100_and_699() {
        for line in [
            "SIP/2.0 99 x",
            "SIP/2.0 4294967301 x",
            "SIP/2.0 700 x",
            "SIP/2.0 abc x",
        ] {
            let m = format!("{line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n");
            assert!(parse(m.as_bytes()).is_err(), "{line}");
        }
        assert!(parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n").is_ok());
    }

    #[test]
    fn sanity_reports_missing_and_duplicate_headers_and_hops() {
        let m = parse(&with("Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", "")).expect("parses");
        let e = m.check_request().expect_err("missing");
        assert_eq!(
            (e.kind(), e.header(), e.status()),
            (S::MissingHeader, Some(H::CallId), 400)
        );

        let m = parse(&with(
            "CSeq: 314159 INVITE\r\n",
            "CSeq: 314159 INVITE\r\nCSeq: 314159 INVITE\r\n",
        ))
        .expect("parses");
        assert_eq!(
            m.check_request().map_err(|e| e.kind()),
            Err(S::DuplicateHeader)
        );

        let m = parse(&with("Max-Forwards: 70", "Max-Forwards: 0")).expect("parses");
        let e = m.check_request().expect_err("hops");
        assert_eq!((e.kind(), e.status()), (S::TooManyHops, 483));

        let m = parse(&with(
            "INVITE sip:bob@biloxi.com",
            "INVITE im:bob@biloxi.com",
        ))
        .expect("parses");
        assert_eq!(m.check_request().map_err(|e| e.status()), Err(416));
        let m = parse(&with("INVITE sip:bob@biloxi.com", "INVITE tel:+1-555")).expect("parses");
        assert_eq!(m.check_request(), Ok(()));
    }

    #[test]
    fn header_line_without_colon_fails_validation_but_frames() {
        let raw = with(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nFoobar roobar\r\n",
        );
        let m = SipMessage::parse_lenient(Bytes::from(raw)).expect("frames");
        assert_eq!(m.validate().map_err(|e| e.kind()), Err(K::HeaderLine));
    }
}
