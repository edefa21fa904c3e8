//! Property tests: generated SIP messages (random headers, compact names, odd case, folding,
//! binary bodies) serialise byte-identically with no edits, and any sequence of edits yields a
//! message that still parses and carries the edits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use proptest::prelude::*;
use sip_msg::{Edits, HeaderName, SipMessage};

/// A header name in random case, sometimes in compact form.
fn name(long: &'static str, compact: Option<&'static str>) -> impl Strategy<Value = String> {
    let forms: Vec<&'static str> = std::iter::once(long).chain(compact).collect();
    (prop::sample::select(forms), any::<u64>()).prop_map(|(n, bits)| {
        n.chars()
            .enumerate()
            .map(|(i, c)| {
                if bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}"
}

/// Separator after the colon: usually one space, sometimes none, tabs, or a fold.
fn hcolon() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![": ", ":", " : ", ":\t", ":\r\n ", ":  "])
}

/// Folds a value at a space into a continuation line, sometimes.
fn maybe_fold(v: String, fold: bool) -> String {
    if fold {
        v.replacen(' ', "\r\n  ", 1)
    } else {
        v
    }
}

#[derive(Debug, Clone)]
struct Generated {
    raw: Vec<u8>,
    method: &'static str,
    custom: Vec<String>,
    routes: usize,
    body: Vec<u8>,
}

fn message() -> impl Strategy<Value = Generated> {
    let method = prop::sample::select(vec!["INVITE", "OPTIONS", "REGISTER", "BYE", "MESSAGE"]);
    let vias = prop::collection::vec(("[a-z0-9][a-z0-9-]{0,10}", 1u16..65535, token()), 1..4);
    let custom = prop::collection::vec((token(), token(), token(), any::<bool>()), 0..6);
    let body = prop::collection::vec(any::<u8>(), 0..200);
    (
        method,
        vias,
        custom,
        0usize..3,
        body,
        (
            name("Via", Some("v")),
            name("From", Some("f")),
            name("To", Some("t")),
            name("Call-ID", Some("i")),
            name("Content-Length", Some("l")),
        ),
        hcolon(),
        any::<bool>(),
        (token(), 0u8..=255, 1u32..1_000_000, token()),
    )
        .prop_map(
            |(
                method,
                vias,
                custom,
                routes,
                body,
                (via_n, from_n, to_n, cid_n, cl_n),
                sep,
                fold,
                (tag, mf, cseq, cid),
            )| {
                let mut s = format!("{method} sip:bob@biloxi.example.com SIP/2.0\r\n");
                for (i, (host, port, branch)) in vias.iter().enumerate() {
                    let v =
                        format!("SIP/2.0/UDP {host}.example.com:{port};branch=z9hG4bK{branch}{i}");
                    s += &format!("{via_n}{sep}{}\r\n", maybe_fold(v, fold && i == 0));
                }
                s += &format!("Max-Forwards: {mf}\r\n");
                s += &format!("{to_n}{sep}Bob <sip:bob@biloxi.example.com>\r\n");
                s += &format!(
                    "{from_n}{sep}{}\r\n",
                    maybe_fold(
                        format!("\"Alice A\" <sip:alice@atlanta.example.com>;tag={tag}"),
                        fold
                    )
                );
                s += &format!("{cid_n}{sep}{cid}@pc33.example.com\r\n");
                s += &format!("CSeq: {cseq} {method}\r\n");
                for r in 0..routes {
                    s += &format!("Route: <sip:p{r}.example.com;lr>\r\n");
                }
                let mut names = Vec::new();
                for (i, (n, a, b, f)) in custom.iter().enumerate() {
                    let hn = format!("X-{n}-{i}");
                    s += &format!("{hn}: {}\r\n", maybe_fold(format!("{a} {b}"), *f));
                    names.push(hn);
                }
                s += &format!("{cl_n}{sep}{}\r\n\r\n", body.len());
                let mut raw = s.into_bytes();
                raw.extend_from_slice(&body);
                Generated {
                    raw,
                    method,
                    custom: names,
                    routes,
                    body,
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    InsertVia,
    RemoveTopVia,
    AddRouteTop,
    SetMaxForwards(u8),
    RemoveTopRoute,
    AddRecordRoute,
    SetRequestUri,
    RemoveCustom(usize),
    AddHeader,
    SetBody(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::InsertVia),
        Just(Op::RemoveTopVia),
        Just(Op::AddRouteTop),
        any::<u8>().prop_map(Op::SetMaxForwards),
        Just(Op::RemoveTopRoute),
        Just(Op::AddRecordRoute),
        Just(Op::SetRequestUri),
        (0usize..6).prop_map(Op::RemoveCustom),
        Just(Op::AddHeader),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(Op::SetBody),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn parsing_then_serialising_without_edits_is_byte_identical(g in message()) {
        let m = SipMessage::parse(Bytes::from(g.raw.clone()))
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&g.raw))))?;
        let mut out = Vec::new();
        m.write_with(&Edits::new(), &mut out);
        prop_assert_eq!(&out, &g.raw);
        prop_assert_eq!(m.body(), &g.body[..]);
        prop_assert_eq!(m.method().map(|x| x.as_bytes()), Some(g.method.as_bytes()));
        prop_assert_eq!(m.routes().count(), g.routes);
        // Max-Forwards 0 is for the proxy to answer 483; everything else must be sane.
        if m.max_forwards() != Some(0) {
            prop_assert_eq!(m.check_request(), Ok(()));
        }
    }

    #[test]
    fn any_sequence_of_edits_yields_a_valid_message_carrying_the_edits(
        g in message(),
        ops in prop::collection::vec(op(), 0..10),
    ) {
        let m = SipMessage::parse(Bytes::from(g.raw.clone()))
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let mut e = Edits::new();
        let mut via = false;
        let mut via_removed = false;
        let mut route_added = false;
        let mut mf = None;
        let mut routes_removed = false;
        let mut rr = false;
        let mut ruri = false;
        let mut removed = Vec::new();
        let mut added = 0;
        let mut body = None;
        for o in &ops {
            match o {
                Op::InsertVia if !via => {
                    e.insert_via(&m, b"SIP/2.0/UDP proxy.example.net:5060;branch=z9hG4bKinserted");
                    via = true;
                }
                Op::InsertVia => {}
                // Only when another Via stays: a request needs one (RFC 3261 §8.1.1).
                Op::RemoveTopVia if !via_removed && m.vias().count() > 1 => {
                    prop_assert!(e.remove_top_via(&m));
                    via_removed = true;
                }
                Op::RemoveTopVia => {}
                Op::AddRouteTop if !route_added => {
                    e.add_route_top(&m, b"<sip:outbound.example.net;lr>");
                    route_added = true;
                }
                Op::AddRouteTop => {}
                Op::SetMaxForwards(v) => {
                    e.set_max_forwards(&m, *v);
                    mf = Some(*v);
                }
                Op::RemoveTopRoute => {
                    e.remove_top_route(&m);
                    routes_removed = true;
                }
                Op::AddRecordRoute if !rr => {
                    e.add_record_route_top(&m, b"<sip:proxy.example.net;lr>");
                    rr = true;
                }
                Op::AddRecordRoute => {}
                Op::SetRequestUri => {
                    e.set_request_uri(&m, b"sip:bob@192.0.2.44:5062;transport=tcp");
                    ruri = true;
                }
                Op::RemoveCustom(i) => {
                    if let Some(n) = g.custom.get(*i) {
                        for idx in m.header_indices_by_name(n.as_bytes()) {
                            e.remove_header(&m, idx);
                        }
                        removed.push(n.clone());
                    }
                }
                Op::AddHeader => {
                    e.append_header(&m, format!("X-Added-{added}").as_bytes(), b"yes");
                    added += 1;
                }
                Op::SetBody(b) => {
                    e.set_body(&m, Bytes::from(b.clone()));
                    body = Some(b.clone());
                }
            }
        }
        let mut out = Vec::new();
        m.write_with(&e, &mut out);
        let o = SipMessage::parse(Bytes::from(out.clone()))
            .map_err(|err| TestCaseError::fail(format!("{err}: {}", String::from_utf8_lossy(&out))))?;
        if o.max_forwards() != Some(0) {
            prop_assert_eq!(o.check_request(), Ok(()));
        }
        let want_vias = m.vias().count() + usize::from(via) - usize::from(via_removed);
        prop_assert_eq!(o.vias().count(), want_vias);
        if via {
            prop_assert_eq!(o.top_via().and_then(|v| v.branch()), Some(&b"z9hG4bKinserted"[..]));
        } else if via_removed {
            prop_assert_eq!(o.top_via().map(|v| v.raw()), m.vias().nth(1).map(|v| v.raw()));
        } else {
            prop_assert_eq!(o.top_via().map(|v| v.raw()), m.top_via().map(|v| v.raw()));
        }
        if via && via_removed {
            prop_assert_eq!(o.vias().nth(1).map(|v| v.raw()), m.vias().nth(1).map(|v| v.raw()));
        }
        prop_assert_eq!(o.max_forwards(), mf.or(m.max_forwards()));
        let expect_routes = if routes_removed { g.routes.saturating_sub(1) } else { g.routes }
            + usize::from(route_added);
        prop_assert_eq!(o.routes().count(), expect_routes);
        if route_added {
            prop_assert_eq!(
                o.top_route().map(|r| r.uri_raw()),
                Some(&b"sip:outbound.example.net;lr"[..])
            );
        }
        if rr {
            prop_assert_eq!(
                o.record_routes().next().map(|r| r.uri_raw()),
                Some(&b"sip:proxy.example.net;lr"[..])
            );
        }
        if ruri {
            prop_assert_eq!(o.request_uri_bytes(), Some(&b"sip:bob@192.0.2.44:5062;transport=tcp"[..]));
        } else {
            prop_assert_eq!(o.request_uri_bytes(), m.request_uri_bytes());
        }
        for n in &removed {
            prop_assert!(o.header_by_name(n.as_bytes()).is_none(), "{} still present", n);
        }
        for k in 0..added {
            let name = format!("X-Added-{k}");
            prop_assert_eq!(o.header_by_name(name.as_bytes()), Some(&b"yes"[..]));
        }
        let want_body = body.unwrap_or_else(|| g.body.clone());
        prop_assert_eq!(o.body(), &want_body[..]);
        prop_assert_eq!(o.content_length(), Some(want_body.len() as u64));
        prop_assert_eq!(o.header_line_count(HeaderName::ContentLength), 1);
        // Untouched headers are carried over byte for byte.
        prop_assert_eq!(o.call_id(), m.call_id());
        prop_assert_eq!(o.header(HeaderName::From), m.header(HeaderName::From));
    }
}
