//! RFC 4475 torture tests, driven by `tests/data/rfc4475/INDEX.tsv`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use bytes::Bytes;
use sip_msg::{
    Contact, HeaderName, HostKind, Method, ParseErrorKind, SanityErrorKind, Scheme, SipMessage,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475")
}

fn load(file: &str) -> Bytes {
    Bytes::from(std::fs::read(data_dir().join(file)).expect("test data file"))
}

fn parse(file: &str) -> SipMessage {
    SipMessage::parse(load(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

struct Row {
    file: String,
    parser: String,
    answer: String,
}

fn index() -> Vec<Row> {
    let tsv = std::fs::read_to_string(data_dir().join("INDEX.tsv")).expect("INDEX.tsv");
    tsv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 5, "{l}");
            Row {
                file: cols[0].to_owned(),
                parser: cols[3].to_owned(),
                answer: cols[4].to_owned(),
            }
        })
        .collect()
}

/// Status that `check_request` must give for a message the parser accepts, from the last
/// column: a leading 3-digit code, except the codes that are a proxy's, registrar's or UAS's
/// own decision (420 Bad Extension, 401 challenge, 415/406 at a UAS).
fn expected_sanity_status(row: &Row) -> Option<u16> {
    let code: Option<u16> = row.answer.get(..3).and_then(|c| c.parse().ok());
    match code {
        Some(420 | 401 | 415 | 406) | None => None,
        Some(c) => Some(c),
    }
}

#[test]
fn every_torture_message_is_accepted_or_rejected_as_the_index_says() {
    let rows = index();
    assert_eq!(rows.len(), 50, "49 RFC 4475 messages + TC_TEST_I");
    for row in &rows {
        let raw = load(&row.file);
        let res = SipMessage::parse(raw.clone());
        match row.parser.as_str() {
            "parse" => {
                let msg = res.unwrap_or_else(|e| panic!("{} must parse: {e}", row.file));
                let want = expected_sanity_status(row);
                if msg.is_request() {
                    let got = msg.check_request().err().map(|e| e.status());
                    assert_eq!(got, want, "{}: check_request", row.file);
                } else {
                    assert_eq!(want, None, "{}", row.file);
                    assert_eq!(msg.check_response(), Ok(()), "{}", row.file);
                }
            }
            "reject" => {
                let err = res
                    .err()
                    .unwrap_or_else(|| panic!("{} must be rejected", row.file));
                // Framing still works, so a server can answer the request.
                let lenient = SipMessage::parse_lenient(raw)
                    .unwrap_or_else(|e| panic!("{} must frame: {e}", row.file));
                if lenient.is_request()
                    && let Some(code) = row.answer.get(..3).and_then(|c| c.parse::<u16>().ok())
                {
                    assert_eq!(err.status(), code, "{}: {err}", row.file);
                    let mut out = Vec::new();
                    lenient.write_error_response_raw(
                        err.status(),
                        b"Bad Request",
                        Some(b"x"),
                        &mut out,
                    );
                    let resp = SipMessage::parse_lenient(Bytes::from(out)).expect("reply frames");
                    assert_eq!(resp.status(), Some(code));
                }
            }
            other => panic!("unknown verdict {other}"),
        }
    }
}

#[test]
fn rejected_messages_report_the_defect_that_matters() {
    let kind = |f: &str| {
        SipMessage::parse(load(f))
            .err()
            .map(|e| e.kind())
            .unwrap_or_else(|| panic!("{f} rejected"))
    };
    assert_eq!(kind("TC_BADVERS_V.dat"), ParseErrorKind::UnsupportedVersion);
    assert_eq!(
        kind("TC_MISMATCH01_V.dat"),
        ParseErrorKind::CSeqMethodMismatch
    );
    assert_eq!(
        kind("TC_MISMATCH02_V.dat"),
        ParseErrorKind::CSeqMethodMismatch
    );
    assert_eq!(
        kind("TC_CLERR_I.dat"),
        ParseErrorKind::ContentLengthMismatch
    );
    assert_eq!(kind("TC_NCL_I.dat"), ParseErrorKind::ContentLength);
    assert_eq!(kind("TC_SCALAR02_V.dat"), ParseErrorKind::CSeq);
    assert_eq!(kind("TC_SCALARLG_V.dat"), ParseErrorKind::CSeq);
    assert_eq!(kind("TC_QUOTBAL_I.dat"), ParseErrorKind::To);
    assert_eq!(kind("TC_LTGTRURI_I.dat"), ParseErrorKind::RequestUri);
    assert_eq!(kind("TC_LWSRURI_I.dat"), ParseErrorKind::RequestUri);
    assert_eq!(kind("TC_LWSSTART_V.dat"), ParseErrorKind::RequestUri);
    assert_eq!(kind("TC_TRWS_I.dat"), ParseErrorKind::StartLine);
    assert_eq!(kind("TC_ESCRURI_V.dat"), ParseErrorKind::RequestUri);
    assert_eq!(kind("TC_BADDATE_V.dat"), ParseErrorKind::Date);
    assert_eq!(kind("TC_REGBADCT_I.dat"), ParseErrorKind::Contact);
    assert_eq!(kind("TC_BADASPEC_I.dat"), ParseErrorKind::To);
    assert_eq!(kind("TC_BADDN_I.dat"), ParseErrorKind::MissingEmptyLine);
    assert_eq!(kind("TC_BIGCODE_V.dat"), ParseErrorKind::StatusCode);
    assert_eq!(kind("TC_BADINV01_I.dat"), ParseErrorKind::Via);
    assert_eq!(kind("TC_TEST_I.dat"), ParseErrorKind::HeaderLine);
}

#[test]
fn bad_display_name_is_rejected_even_with_the_empty_line_restored() {
    let mut raw = load("TC_BADDN_I.dat").to_vec();
    raw.extend_from_slice(b"\r\n");
    let e = SipMessage::parse(Bytes::from(raw)).expect_err("bad display name");
    assert_eq!(e.kind(), ParseErrorKind::From);
}

#[test]
fn sanity_failures_name_their_kind() {
    let kind = |f: &str| parse(f).check_request().err().map(|e| e.kind());
    assert_eq!(kind("TC_INSUF_I.dat"), Some(SanityErrorKind::MissingHeader));
    assert_eq!(
        kind("TC_MULTI01_I.dat"),
        Some(SanityErrorKind::DuplicateHeader)
    );
    assert_eq!(
        kind("TC_MCL01_I.dat"),
        Some(SanityErrorKind::DuplicateHeader)
    );
    assert_eq!(
        kind("TC_UNKSCM_V.dat"),
        Some(SanityErrorKind::UnsupportedUriScheme)
    );
    assert_eq!(
        kind("TC_NOVELSC_V.dat"),
        Some(SanityErrorKind::UnsupportedUriScheme)
    );
    assert_eq!(kind("TC_ZEROMF_V.dat"), Some(SanityErrorKind::TooManyHops));
}

#[test]
fn short_tortuous_invite_yields_every_field_through_folding_and_odd_spacing() {
    let m = parse("TC_WSINV.dat");
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.to_tag(), Some(&b"1918181833n"[..]));
    let from = m.from().expect("from");
    assert_eq!(
        from.display_name().as_deref(),
        Some(&br#"J Rosenberg \""#[..])
    );
    assert_eq!(from.tag(), Some(&b"98asjd8"[..]));
    assert_eq!(m.max_forwards(), Some(68));
    let c = m.cseq().expect("cseq");
    assert_eq!((c.seq, c.method), (9, Method::Invite));
    let vias: Vec<_> = m.vias().collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host().raw(), b"192.0.2.2");
    assert_eq!(vias[0].branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(vias[1].transport(), b"TCP");
    assert_eq!(vias[1].host().raw(), b"spindle.example.com");
    assert_eq!(vias[2].branch(), Some(&b"z9hG4bK30239"[..]));
    assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
    assert_eq!(
        m.header_by_name(b"newfangledheader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
    let route = m.routes().next().expect("route");
    assert!(route.uri().expect("uri").has_lr());
    let contact = m.contacts().next().expect("contact");
    let Contact::Addr(a) = contact else {
        panic!("address expected")
    };
    assert_eq!(a.q(), Some(330));
    assert!(a.params().contains(b"secondparam"));
    assert_eq!(m.body().len(), 150);
}

#[test]
fn wide_range_of_valid_characters_is_kept_raw() {
    let m = parse("TC_INTMETH.dat");
    let method: &[u8] = b"!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(m.method(), Some(Method::Other(method)));
    assert_eq!(m.cseq().map(|c| c.method), Some(Method::Other(method)));
    let uri = m.request_uri().expect("r-uri");
    assert_eq!(
        uri.user(),
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!(
        m.call_id(),
        Some(&b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"[..])
    );
    assert_eq!(
        m.to()
            .and_then(|t| t.display_name().map(|d| d.into_owned())),
        Some(b"BEL:\x07 NUL:\x00 DEL:\x7f".to_vec())
    );
}

#[test]
fn escaped_null_in_uri_user_unescapes_to_a_nul_byte() {
    let m = parse("TC_ESCNULL_V.dat");
    let to = m.to().expect("to");
    let user = to
        .uri()
        .expect("uri")
        .user_unescaped()
        .expect("user")
        .into_owned();
    assert_eq!(user, b"null-\0-null");
    let users: Vec<Vec<u8>> = m
        .contacts()
        .filter_map(|c| c.addr().and_then(|a| a.uri().ok()))
        .filter_map(|u| u.user_unescaped().map(|c| c.into_owned()))
        .collect();
    assert_eq!(users, vec![b"\0".to_vec(), b"\0\0".to_vec()]);
}

#[test]
fn percent_escapes_are_kept_raw_and_decoded_on_demand() {
    let m = parse("TC_ESC01_V.dat");
    let r = m.request_uri().expect("r-uri");
    assert_eq!(
        r.user_unescaped().as_deref(),
        Some(&b"sips:user@example.com"[..])
    );
    let to = m.to().expect("to").uri().expect("uri");
    assert_eq!(to.user_unescaped().as_deref(), Some(&b"user"[..]));
    let c = m
        .contacts()
        .next()
        .and_then(|c| c.addr().copied())
        .expect("contact");
    let cu = c.uri().expect("uri");
    assert_eq!(cu.param(b"n%61me"), Some(&b"v%61lue%25%34%31"[..]));
}

#[test]
fn percent_that_is_not_an_escape_is_data() {
    let m = parse("TC_ESC02_V.dat");
    assert_eq!(m.method(), Some(Method::Other(b"RE%47IST%45R")));
    // "C%6Fntact" is an unknown header, not a Contact.
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        m.header_by_name(b"C%6Fntact"),
        Some(&b"<sip:alias2@host2.example.com>"[..])
    );
    assert_eq!(
        m.top_via().and_then(|v| v.branch()),
        Some(&b"z9hG4bK209%fzsnel234"[..])
    );
}

#[test]
fn no_lws_between_display_name_and_angle_bracket() {
    let m = parse("TC_LWSDISP_V.dat");
    assert_eq!(
        m.from()
            .and_then(|f| f.display_name().map(|d| d.into_owned())),
        Some(b"caller".to_vec())
    );
}

#[test]
fn long_values_and_forty_vias_are_indexed() {
    let m = parse("TC_LONGREQ_V.dat");
    assert_eq!(m.vias().count(), 34);
    assert_eq!(m.header_line_count(HeaderName::Via), 34);
    let last = m.vias().last().expect("via");
    assert_eq!(last.received(), Some(&b"192.0.2.5"[..]));
    assert_eq!(
        m.to().and_then(|t| t.uri().ok()).and_then(|u| u.port()),
        Some(6000)
    );
}

#[test]
fn datagram_with_two_requests_stops_at_content_length() {
    let raw = load("TC_DBLREQ.dat");
    let m = SipMessage::parse(raw.clone()).expect("first request");
    assert!(m.len() < raw.len());
    assert_eq!(m.method(), Some(Method::Register));
    assert!(m.as_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
    assert_eq!(m.body(), b"");
    assert_eq!(m.as_bytes(), &raw[..m.len()]);
}

#[test]
fn semicolon_in_uri_user_part_stays_in_the_user() {
    let m = parse("TC_SEMIURI_V.dat");
    let u = m.request_uri().expect("r-uri");
    assert_eq!(u.user(), Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(u.host().raw(), b"example.com");
    assert_eq!(m.values(HeaderName::Accept).count(), 6);
}

#[test]
fn unknown_transports_are_accepted() {
    let m = parse("TC_TRANSPORTS_V.dat");
    let t: Vec<&[u8]> = m.vias().map(|v| v.transport()).collect();
    assert_eq!(t, vec![&b"UDP"[..], b"SCTP", b"TLS", b"UNKNOWN", b"TCP"]);
}

#[test]
fn multipart_body_with_nul_and_bare_cr_is_byte_exact() {
    let raw = load("TC_MPART01.dat");
    let m = SipMessage::parse(raw.clone()).expect("parses");
    assert_eq!(m.content_length(), Some(553));
    assert_eq!(m.body().len(), 553);
    assert_eq!(m.body(), &raw[m.body_offset()..m.body_offset() + 553]);
    assert!(m.body().contains(&0));
    let mut out = Vec::new();
    m.write_with(&sip_msg::Edits::new(), &mut out);
    assert_eq!(&out[..], &raw[..m.len()]);
}

#[test]
fn response_reason_phrases_may_be_unusual_or_empty() {
    let m = parse("TC_UNREASON_V.dat");
    assert_eq!(m.status(), Some(200));
    assert!(
        m.reason_bytes()
            .is_some_and(|r| r.starts_with(b"= 2**3 * 5**2 ") && !r.is_ascii())
    );
    let m = parse("TC_NOREASON_V.dat");
    assert_eq!((m.status(), m.reason_bytes()), (Some(100), Some(&b""[..])));
}

#[test]
fn branch_that_is_only_the_magic_cookie_is_not_an_rfc3261_branch() {
    let m = parse("TC_BADBRANCH_V.dat");
    let v = m.top_via().expect("via");
    assert_eq!(v.branch(), Some(&b"z9hG4bK"[..]));
    assert!(!v.has_rfc3261_branch());
}

#[test]
fn require_and_proxy_require_are_exposed_for_the_proxy_to_answer_420() {
    let m = parse("TC_BEXT01_V.dat");
    assert_eq!(
        m.require().collect::<Vec<_>>(),
        vec![&b"nothingSupportsThis"[..], b"nothingSupportsThisEither"]
    );
    assert_eq!(
        m.proxy_require().collect::<Vec<_>>(),
        vec![&b"noProxiesSupportThis"[..], b"norDoAnyProxiesSupportThis"]
    );
}

#[test]
fn unknown_uri_schemes_in_headers_are_kept_raw() {
    let m = parse("TC_UNKSM2_V.dat");
    assert_eq!(
        m.to().and_then(|t| t.uri().ok()).map(|u| u.scheme()),
        Some(Scheme::Other)
    );
    assert_eq!(
        m.from().map(|f| f.uri_raw()),
        Some(&b"http://www.example.com"[..])
    );
}

#[test]
fn unknown_authorization_scheme_is_kept_raw() {
    let m = parse("TC_REGAUT01_V.dat");
    let a = m.authorizations().next().expect("authorization");
    assert_eq!(a.scheme(), b"NoOneKnowsThisScheme");
    assert!(a.digest_credentials().is_none());
}

#[test]
fn contact_header_param_and_uri_param_are_told_apart() {
    let m = parse("TC_CPARAM01_V.dat");
    let a = m
        .contacts()
        .next()
        .and_then(|c| c.addr().copied())
        .expect("contact");
    assert!(a.params().contains(b"unknownparam"));
    assert!(!a.uri().expect("uri").params().contains(b"unknownparam"));
    let m = parse("TC_CPARAM02_V.dat");
    let a = m
        .contacts()
        .next()
        .and_then(|c| c.addr().copied())
        .expect("contact");
    assert!(!a.params().contains(b"unknownparam"));
    assert!(a.uri().expect("uri").params().contains(b"unknownparam"));
}

#[test]
fn escaped_header_in_contact_uri_is_kept() {
    let m = parse("TC_REGESCRT_V.dat");
    let a = m
        .contacts()
        .next()
        .and_then(|c| c.addr().copied())
        .expect("contact");
    let u = a.uri().expect("uri");
    assert_eq!(
        u.headers().next(),
        Some((&b"Route"[..], &b"%3Csip:sip.example.com%3E"[..]))
    );
}

#[test]
fn broadcast_sent_by_is_an_ipv4_host() {
    let m = parse("TC_BCAST_V.dat");
    let v = m.vias().nth(1).expect("second via");
    assert_eq!(v.host().kind(), HostKind::Ipv4);
    assert_eq!(v.host().raw(), b"255.255.255.255");
}

#[test]
fn rfc2543_invite_without_branch_or_max_forwards_parses() {
    let m = parse("TC_INV2543_I.dat");
    assert_eq!(m.top_via().and_then(|v| v.branch()), None);
    assert_eq!(m.max_forwards(), None);
    assert_eq!(m.check_request(), Ok(()));
    assert!(m.body().starts_with(b"v=0"));
    assert_eq!(m.record_routes().count(), 1);
}
