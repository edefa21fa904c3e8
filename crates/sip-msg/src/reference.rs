//! The reference the one-pass fast paths are checked against (tests, and the fuzz targets with
//! the `fuzzing` feature): validation and routing-header parsing written with the general
//! parsers only, as they were before the fast paths, and a check that a message's cached
//! routing headers and [`SipMessage::validate`] agree with them.

use crate::addr::{AddrSpans, NameAddr};
use crate::auth::AuthValue;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::header::HeaderName as H;
use crate::message::SipMessage;
use crate::scan::{SplitTop, has_lws, is_token_byte, parse_u64, trim_lws};
use crate::typed::CSeq;
use crate::uri::{Scheme, Uri};
use crate::validate::{check_version, rfc1123_date_valid};
use crate::via::Via;

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_byte(b))
}

/// `NameAddr::parse_first` with the general parameter scanner.
fn name_addr_first(value: &[u8]) -> Option<(NameAddr<'_>, usize)> {
    let mut sp = AddrSpans::EMPTY;
    let (s, t, end) = sp.parse_first_impl::<true>(value).ok()?;
    Some((NameAddr::from_parts(&value[s..t], sp), end))
}

/// `NameAddr::parse` with the general parameter scanner.
fn name_addr(value: &[u8]) -> Option<NameAddr<'_>> {
    let v = trim_lws(value);
    let (a, end) = name_addr_first(v)?;
    if end < v.len() {
        let mut sp = a.parts();
        sp.set_trailing_garbage();
        return Some(NameAddr::from_parts(v, sp));
    }
    Some(a)
}

fn name_addr_valid(a: &NameAddr<'_>) -> bool {
    a.parts().valid_impl::<true>(a.raw())
}

fn via_valid(v: &Via<'_>) -> bool {
    v.spans().valid_reference(v.raw())
}

fn name_addr_list_valid(v: &[u8], angle: bool) -> bool {
    let mut rest = v;
    loop {
        match name_addr_first(rest) {
            Some((a, end)) if name_addr_valid(&a) && (a.has_angle_brackets() || !angle) => {
                match rest.get(end) {
                    Some(b',') => rest = &rest[end + 1..],
                    _ => return end >= rest.len(),
                }
            }
            _ => return false,
        }
    }
}

fn call_id_valid(v: &[u8]) -> bool {
    let word = |b: u8| {
        is_token_byte(b)
            || matches!(
                b,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'{'
                    | b'}'
            )
    };
    let a = v.iter().position(|&b| !word(b)).unwrap_or(v.len());
    if a == 0 {
        return false;
    }
    match v.get(a) {
        None => true,
        Some(b'@') => {
            let rest = &v[a + 1..];
            !rest.is_empty() && rest.iter().all(|&b| word(b))
        }
        Some(_) => false,
    }
}

fn content_type_valid(v: &[u8]) -> bool {
    let semi = v.iter().position(|&b| b == b';').unwrap_or(v.len());
    let Some(slash) = v[..semi].iter().position(|&b| b == b'/') else {
        return false;
    };
    is_token(trim_lws(&v[..slash]))
        && is_token(trim_lws(&v[slash + 1..semi]))
        && (semi == v.len() || crate::params::Params::new(&v[semi..]).is_valid())
}

/// [`SipMessage::validate`] written with the general parsers only.
pub(crate) fn validate(m: &SipMessage) -> Result<(), ParseError> {
    if let Some(off) = m.bad_line() {
        return Err(ParseError::new(K::HeaderLine, off));
    }
    if !m.has_empty_line() {
        return Err(ParseError::new(K::MissingEmptyLine, m.headers_end()));
    }
    start_line(m)?;
    let request_method = m.method();
    for e in m.entries() {
        let v = m.slice(e.value_start, e.value_end);
        let at = e.value_start as usize;
        let err = |k| Err(ParseError::new(k, at));
        match e.name {
            H::Other if !is_token(m.slice(e.start, m.name_end(e))) => {
                return Err(ParseError::new(K::HeaderLine, e.start as usize));
            }
            H::Via => {
                let mut rest = v;
                loop {
                    match Via::parse_general(rest) {
                        Ok((via, end)) if via_valid(&via) => match rest.get(end) {
                            Some(b',') => rest = &rest[end + 1..],
                            _ => break,
                        },
                        _ => return err(K::Via),
                    }
                }
            }
            H::From | H::To if !name_addr(v).is_some_and(|a| name_addr_valid(&a)) => {
                return err(if e.name == H::From { K::From } else { K::To });
            }
            H::CallId if !call_id_valid(v) => return err(K::CallId),
            H::CSeq => match CSeq::parse(v) {
                Ok(c) if c.seq < 1 << 31 => {
                    if let Some(m) = request_method
                        && c.method != m
                    {
                        return err(K::CSeqMethodMismatch);
                    }
                }
                _ => return err(K::CSeq),
            },
            H::MaxForwards if parse_u64(v).is_none_or(|n| n > 255) => return err(K::MaxForwards),
            H::ContentLength if parse_u64(v).is_none() || v.len() > 19 => {
                return err(K::ContentLength);
            }
            H::Expires | H::MinExpires if parse_u64(v).is_none() => return err(K::Expires),
            H::Contact if trim_lws(v) != b"*" && !name_addr_list_valid(v, false) => {
                return err(K::Contact);
            }
            H::Route | H::RecordRoute | H::Path | H::ServiceRoute
                if !name_addr_list_valid(v, true) =>
            {
                return err(K::RouteSet);
            }
            H::Require | H::ProxyRequire | H::Supported | H::Unsupported
                if !(SplitTop::new(v, b',').all(is_token)
                    || v.is_empty() && e.name == H::Supported) =>
            {
                return err(K::OptionTags);
            }
            H::ContentType if !content_type_valid(v) => return err(K::ContentType),
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
    if m.content_length_too_big() {
        return Err(ParseError::new(K::ContentLengthMismatch, m.body_offset()));
    }
    Ok(())
}

fn start_line(m: &SipMessage) -> Result<(), ParseError> {
    let [a, b, c] = m.start_line_parts();
    if m.is_request() {
        if !is_token(a) {
            return Err(ParseError::new(K::StartLine, 0));
        }
        let uri_at = a.len() + 1;
        if b.is_empty() || c.is_empty() {
            return Err(ParseError::new(K::StartLine, uri_at));
        }
        if has_lws(b) {
            return Err(ParseError::new(K::RequestUri, uri_at));
        }
        check_version(c, uri_at + b.len() + 1)?;
        let uri = Uri::parse(b).map_err(|_| ParseError::new(K::RequestUri, uri_at))?;
        if !uri.is_valid() {
            return Err(ParseError::new(K::RequestUri, uri_at));
        }
        if matches!(uri.scheme(), Scheme::Sip | Scheme::Sips) && uri.headers_raw().is_some() {
            return Err(ParseError::new(K::RequestUri, uri_at));
        }
    } else {
        check_version(a, 0)?;
        let code_ok =
            b.len() == 3 && b.iter().all(u8::is_ascii_digit) && (b'1'..=b'6').contains(&b[0]);
        if !code_ok {
            return Err(ParseError::new(K::StatusCode, a.len() + 1));
        }
        if c.iter().any(|&x| x == b'\r' || x == b'\n') {
            return Err(ParseError::new(K::StartLine, 0));
        }
    }
    Ok(())
}

/// Checks that the routing headers cached during framing are what the general parsers give
/// for the first line of each header, and that `validate` agrees with [`validate`]. Panics on
/// a difference.
pub(crate) fn check(m: &SipMessage) {
    let first = |h| m.header(h);
    let via = first(H::Via).and_then(|v| Via::parse_general(v).ok().map(|(v, _)| v));
    assert_eq!(m.top_via(), via, "top Via");
    let from = first(H::From).and_then(name_addr);
    assert_eq!(m.from(), from, "From");
    let to = first(H::To).and_then(name_addr);
    assert_eq!(m.to(), to, "To");
    let route = first(H::Route).and_then(|v| name_addr_first(v).map(|(a, _)| a));
    assert_eq!(m.top_route(), route, "top Route");
    assert_eq!(
        m.cseq(),
        first(H::CSeq).and_then(|v| CSeq::parse(v).ok()),
        "CSeq"
    );
    let mf = first(H::MaxForwards).and_then(|v| parse_u64(v).and_then(|n| u8::try_from(n).ok()));
    assert_eq!(m.max_forwards(), mf, "Max-Forwards");
    assert_eq!(
        m.content_length(),
        first(H::ContentLength).and_then(parse_u64),
        "Content-Length"
    );
    let fast = m.validate().map_err(|e| (e.kind(), e.offset()));
    let reference = validate(m).map_err(|e| (e.kind(), e.offset()));
    assert_eq!(fast, reference, "validate verdict");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn check_bytes(raw: &[u8]) {
        if let Ok(m) = SipMessage::parse_lenient(Bytes::copy_from_slice(raw)) {
            check(&m);
        }
    }

    #[test]
    fn the_rfc4475_corpus_and_the_benchmark_invite_agree_with_the_general_parsers() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("corpus") {
            let raw = std::fs::read(e.expect("entry").path()).expect("file");
            check_bytes(&raw);
            n += 1;
        }
        assert!(n > 40);
        check_bytes(include_bytes!("../benches/data/invite_1k.sip"));
    }

    const VIAS: &[&str] = &[
        "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-5242;rport",
        "SIP/2.0/TCP host.example.com;branch=z9hG4bK77;received=192.0.2.1",
        "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1",
        "SIP/2.0/UDP h;branch=z9hG4bK[x]:1;maddr=224.2.0.1;ttl=16",
        "sip/2.0/udp 10.0.0.1;rport=5070;branch=abc, SIP/2.0/TLS h2:5061;branch=z9hG4bKx",
        "SIP / 2.0 / UDP h ; branch = z9hG4bK9",
        "SIP/2.0/UDP 256.1.1.1;branch=z9hG4bK1",
        "SIP/2.0/UDP 1.2.3;branch=z9hG4bK1;received=::1",
        "SIP/2.0/UDP h:99999;branch=z9hG4bK1",
        "SIP/2.0/UDP h;;branch=x",
        "SIP/2.0/UDP h;branch=\"q\";ttl=256",
        "SIP/2.0/UDP h_x.example.com;branch",
        "SIP/2.0/UDP -h.;branch=z9hG4bK1;rport=x",
    ];
    const ADDRS: &[&str] = &[
        "<sip:bob@biloxi.example.com>",
        "\"Alice Example\" <sip:alice@example.com>;tag=9fxced76sl",
        "Bob <sip:+14155550123@sip.example.net;user=phone>;tag=a;x=\"q\"",
        "sip:alice@atlanta.com;tag=88sja8x",
        "<sip:user:pass@host:5060;transport=tcp?subject=x>",
        "<sip:%61lice@host>;tag=1",
        "<sips:[2001:db8::10]:5070;lr>",
        "<tel:+1-201-555-0123;phone-context=example.com>",
        "<sip:edge1.example.net;lr;transport=udp>, <sip:core2.example.net;lr>",
        "<sip:a@b> ; tag = x",
        "<sip:a@b>;;",
        "< sip:a@b >",
        "<sip:a@1.2.3.400>",
        "<sip:a@-x..y>",
        "<sip:host;a=>",
        "<im:alice@example.com>",
        "sip:a@b?h=1",
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
        "*",
    ];
    const OTHER: &[(&str, &[&str])] = &[
        (
            "Call-ID",
            &[
                "3848276298220188511@198.51.100.7",
                "a b",
                "x@y@z",
                "abc",
                "a<b>@[c]",
            ],
        ),
        (
            "CSeq",
            &[
                "2 INVITE",
                "1 BYE",
                "2147483648 INVITE",
                "0009 INVITE",
                "1\r\n INVITE",
            ],
        ),
        ("Max-Forwards", &["69", "256", "7a", "0"]),
        (
            "Supported",
            &["replaces, timer, 100rel", "", "a,,b", "a b", "x ,y"],
        ),
        (
            "Content-Type",
            &[
                "application/sdp",
                "text/plain;charset=utf-8",
                "a/",
                "/b",
                "a / b",
            ],
        ),
        ("Expires", &["3600", "x"]),
    ];

    fn mangle(s: &str, at: usize, with: u8) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        if !v.is_empty() {
            let i = at % (v.len() + 1);
            if i < v.len() {
                v[i] = with;
            } else {
                v.push(with);
            }
        }
        v
    }

    fn message(picks: &[(usize, usize, u8, bool)]) -> Vec<u8> {
        let mut m = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n".to_vec();
        let mut line = |name: &str, value: Vec<u8>| {
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(b": ");
            m.extend_from_slice(&value);
            m.extend_from_slice(b"\r\n");
        };
        for (k, &(a, b, c, mangled)) in picks.iter().enumerate() {
            let pick = |list: &[&str]| {
                let s = list[a % list.len()];
                if mangled {
                    mangle(s, b, c)
                } else {
                    s.as_bytes().to_vec()
                }
            };
            match k % 8 {
                0 | 1 => line("Via", pick(VIAS)),
                2 => line("From", pick(ADDRS)),
                3 => line("To", pick(ADDRS)),
                4 => line("Route", pick(ADDRS)),
                5 => line("Contact", pick(ADDRS)),
                _ => {
                    let (name, values) = OTHER[a % OTHER.len()];
                    line(name, pick(values));
                }
            }
        }
        m.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        m
    }

    const SPECIAL: &[u8] = b" \t:;,=<>\"\\@[]?%/.-_+!~*'()09azAZ\x00\x7f\xff";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn generated_messages_agree_with_the_general_parsers(
            picks in prop::collection::vec(
                (any::<usize>(), any::<usize>(), prop::sample::select(SPECIAL), prop::bool::weighted(0.3)),
                1..12,
            ),
        ) {
            check_bytes(&message(&picks));
        }

        #[test]
        fn single_values_agree_with_the_general_parsers(
            which in any::<usize>(),
            at in any::<usize>(),
            with in prop::sample::select(SPECIAL),
        ) {
            let all: Vec<&str> = VIAS.iter().chain(ADDRS).copied().collect();
            let v = mangle(all[which % all.len()], at, with);
            // As the first line of each routing header, where the cache is filled.
            for name in ["Via", "From", "To", "Route", "Contact"] {
                let mut m = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
                m.extend_from_slice(name.as_bytes());
                m.extend_from_slice(b": ");
                m.extend_from_slice(&v);
                m.extend_from_slice(b"\r\n\r\n");
                check_bytes(&m);
            }
        }
    }
}
