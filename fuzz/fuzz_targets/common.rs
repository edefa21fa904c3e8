//! Shared by the fuzz targets: touch every accessor so that any panic path is reached.

use std::hint::black_box;

use sip_msg::{Contact, HeaderName, NameAddr, SipMessage, Uri};

fn uri(u: &Uri<'_>) {
    black_box((u.scheme(), u.user(), u.password(), u.host().raw(), u.port()));
    black_box((u.host().ip(), u.host().is_valid(), u.host().unbracketed()));
    black_box((u.user_unescaped(), u.tel_digits(), u.is_valid(), u.has_lr()));
    black_box((u.transport(), u.maddr(), u.user_param(), u.opaque()));
    for p in u.params() {
        black_box(p);
    }
    for h in u.headers() {
        black_box(sip_msg::percent_decode(h.1));
    }
}

fn name_addr(a: &NameAddr<'_>) {
    black_box((a.display_name(), a.uri_raw(), a.tag(), a.q(), a.expires()));
    black_box((a.sip_instance(), a.reg_id(), a.is_valid(), a.params().is_valid()));
    for p in a.params() {
        black_box(p.value_unquoted());
    }
    if let Ok(u) = a.uri() {
        uri(&u);
    }
}

pub fn exercise(m: &SipMessage) {
    black_box((m.is_request(), m.method(), m.method_bytes(), m.status(), m.reason_bytes()));
    black_box((m.request_uri_bytes(), m.version_bytes(), m.start_line_bytes()));
    if let Some(u) = m.request_uri() {
        uri(&u);
    }
    for l in m.header_lines() {
        black_box(m.header_by_name(l.name_bytes));
        black_box(m.values_by_name(l.name_bytes).count());
        black_box(m.values(l.name).count());
    }
    for v in m.vias() {
        black_box((v.branch(), v.received(), v.rport(), v.maddr(), v.ttl(), v.is_valid()));
        black_box((v.host().ip(), v.port(), v.transport(), v.has_rfc3261_branch()));
        for p in v.params() {
            black_box(p);
        }
    }
    black_box(m.top_via());
    for a in [m.from(), m.to(), m.top_route()].into_iter().flatten() {
        name_addr(&a);
    }
    for h in [
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Path,
        HeaderName::PAssertedIdentity,
    ] {
        for a in m.name_addrs(h) {
            name_addr(&a);
        }
    }
    for c in m.contacts() {
        if let Contact::Addr(a) = c {
            name_addr(&a);
        }
    }
    black_box((m.call_id(), m.cseq(), m.max_forwards(), m.expires(), m.content_length()));
    black_box((m.content_type(), m.user_agent(), m.body(), m.from_tag(), m.to_tag()));
    black_box((m.require().count(), m.proxy_require().count(), m.supported().count()));
    black_box(m.unsupported().count());
    for a in m
        .authorizations()
        .chain(m.proxy_authorizations())
        .chain(m.www_authenticates())
        .chain(m.proxy_authenticates())
    {
        black_box((a.digest_credentials(), a.digest_challenge(), a.is_valid()));
        black_box(a.params().count());
    }
    let _ = black_box((m.validate(), m.check_request(), m.check_response()));
    // The one-pass fast paths (cached routing headers, validation) must agree with the
    // general parsers on every input.
    m.fuzz_check_fast_paths();
}
