//! Messages tm writes itself: the CANCEL of a branch (RFC 3261 §9.1), the ACK of a non-2xx
//! final (§17.1.1.3), and responses relayed upstream (§16.7 step 9, with the step 6/7
//! rewrites).

use std::io::Write as _;

use sip_msg::{Edits, HeaderName, SipMessage};

/// Writes `METHOD <request-uri>` plus the headers a CANCEL and a non-2xx ACK share with the
/// request they refer to: the single top Via (ours, same branch), the Route set, From,
/// Call-ID and the CSeq number. `to` is the To value to use.
fn write_hop_request(
    method: &[u8],
    req: &SipMessage,
    to: &[u8],
    extra: Option<(&[u8], &[u8])>,
    out: &mut Vec<u8>,
) -> Option<()> {
    let ruri = req.request_uri_bytes()?;
    let via = req.top_via()?;
    let from = req.header(HeaderName::From)?;
    let call_id = req.call_id()?;
    let seq = req.cseq()?.seq;
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(ruri);
    out.extend_from_slice(b" SIP/2.0\r\nVia: ");
    out.extend_from_slice(via.raw());
    out.extend_from_slice(b"\r\n");
    // §9.1: "If the request being cancelled contains a Route header field, the CANCEL request
    // MUST include that Route header field's values." §17.1.1.3 says the same of the ACK.
    for route in req.headers(HeaderName::Route) {
        out.extend_from_slice(b"Route: ");
        out.extend_from_slice(route);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\nFrom: ");
    out.extend_from_slice(from);
    out.extend_from_slice(b"\r\nTo: ");
    out.extend_from_slice(to);
    out.extend_from_slice(b"\r\nCall-ID: ");
    out.extend_from_slice(call_id);
    let _ = write!(out, "\r\nCSeq: {seq} ");
    out.extend_from_slice(method);
    out.extend_from_slice(b"\r\n");
    if let Some((n, v)) = extra {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(())
}

/// The CANCEL for `req` as it was sent on a branch (RFC 3261 §9.1: "The Request-URI,
/// Call-ID, To, the numeric part of CSeq, and From header fields in the CANCEL request MUST be
/// identical to those in the request being cancelled, including tags. ... MUST have a single
/// Via header field value matching the top Via value in the request being cancelled"), with
/// an optional RFC 3326 `Reason`. Returns false when `req` lacks a needed header.
pub(crate) fn write_cancel(req: &SipMessage, reason: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
    let Some(to) = req.header(HeaderName::To) else {
        return false;
    };
    write_hop_request(b"CANCEL", req, to, reason.map(|r| (&b"Reason"[..], r)), out).is_some()
}

/// The ACK for a non-2xx final `resp` to `req` as sent on a branch (RFC 3261 §17.1.1.3:
/// Request-URI, Call-ID, From, CSeq number and the single top Via of the request; "The To
/// header field in the ACK MUST equal the To header field in the response being
/// acknowledged"; the request's Route header fields). Returns false when a header is missing.
pub(crate) fn write_ack(req: &SipMessage, resp: &SipMessage, out: &mut Vec<u8>) -> bool {
    let Some(to) = resp.header(HeaderName::To) else {
        return false;
    };
    write_hop_request(b"ACK", req, to, None, out).is_some()
}

/// A received response as relayed upstream: our top Via removed (§16.7 step 9), the status
/// line replaced when `status_line` is given (503 → 500, §16.7 step 6), and `extra` header
/// lines appended (the challenges of other branches, §16.7 step 7).
pub(crate) fn write_relayed(
    resp: &SipMessage,
    status_line: Option<&[u8]>,
    extra: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) {
    let mut e = Edits::new();
    e.remove_top_via(resp);
    if let Some(line) = status_line {
        e.replace_raw(0..resp.start_line_bytes().len(), line);
    }
    for (n, v) in extra {
        e.append_header(resp, n, v);
    }
    resp.write_with(&e, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parse(s: &str) -> SipMessage {
        match SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())) {
            Ok(m) => m,
            Err(e) => panic!("test message does not parse: {e:?}"),
        }
    }

    const SENT: &str = "INVITE sip:bob@192.0.2.2:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtX\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKcaller;rport=5062\r\n\
Route: <sip:edge.example.com;lr>\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
Max-Forwards: 69\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: call-1\r\n\
CSeq: 7 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn a_cancel_copies_the_request_uri_top_via_route_from_to_call_id_and_cseq_number() {
        let mut out = Vec::new();
        assert!(write_cancel(&parse(SENT), Some(b"SIP;cause=200"), &mut out));
        let c = parse(std::str::from_utf8(&out).expect("ascii"));
        assert_eq!(c.request_uri_bytes(), Some(&b"sip:bob@192.0.2.2:5060"[..]));
        assert_eq!(c.vias().count(), 1);
        assert_eq!(
            c.top_via().and_then(|v| v.branch()),
            Some(&b"z9hG4bKtX"[..])
        );
        assert_eq!(
            c.header(HeaderName::Route),
            Some(&b"<sip:edge.example.com;lr>"[..])
        );
        assert_eq!(
            c.header(HeaderName::To),
            Some(&b"<sip:bob@example.com>"[..])
        );
        assert_eq!(
            c.cseq().map(|s| (s.seq, s.method)),
            Some((7, sip_msg::Method::Cancel))
        );
        assert_eq!(c.header_by_name(b"Reason"), Some(&b"SIP;cause=200"[..]));
        assert!(c.header(HeaderName::RecordRoute).is_none());
        assert_eq!(c.body(), b"");
    }

    #[test]
    fn a_non_2xx_ack_takes_the_to_of_the_response() {
        let resp = parse(
            "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtX\r\n\
From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b9\r\n\
Call-ID: call-1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        let mut out = Vec::new();
        assert!(write_ack(&parse(SENT), &resp, &mut out));
        let a = parse(std::str::from_utf8(&out).expect("ascii"));
        assert_eq!(a.method(), Some(sip_msg::Method::Ack));
        assert_eq!(a.to_tag(), Some(&b"b9"[..]));
        assert_eq!(a.cseq().map(|s| s.seq), Some(7));
        assert_eq!(a.routes().count(), 1);
    }

    #[test]
    fn a_relayed_503_loses_our_via_and_becomes_500_with_the_extra_headers() {
        let resp = parse(
            "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtX\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKcaller\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        let mut out = Vec::new();
        write_relayed(
            &resp,
            Some(b"SIP/2.0 500 Server Internal Error"),
            &[(b"WWW-Authenticate", b"Digest realm=\"x\"")],
            &mut out,
        );
        let r = parse(std::str::from_utf8(&out).expect("ascii"));
        assert_eq!(r.status(), Some(500));
        assert_eq!(r.vias().count(), 1);
        assert_eq!(
            r.top_via().and_then(|v| v.branch()),
            Some(&b"z9hG4bKcaller"[..])
        );
        assert_eq!(
            r.header_by_name(b"www-authenticate"),
            Some(&b"Digest realm=\"x\""[..])
        );
    }
}
