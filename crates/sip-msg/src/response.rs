//! Locally generated responses (RFC 3261 §8.2.6): [`ResponseBuilder`] and
//! [`SipMessage::write_error_response_raw`].

use smallvec::SmallVec;

use crate::addr::NameAddr;
use crate::edit::WriteBuf;
use crate::header::HeaderName;
use crate::message::SipMessage;
use crate::scan::{find_top_level, offset_in};
use crate::via::Via;

/// Default reason phrase for a status code (RFC 3261 §21 and common extensions).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        429 => "Provide Referrer Identity",
        439 => "First Hop Lacks Outbound Support",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// Builds a response to a request (RFC 3261 §8.2.6.2): the Via lines, From, To, Call-ID and
/// CSeq are copied from the request, a To tag is added when the request has none and the
/// status is above 100, `received`/`rport` can be set on the top Via (RFC 3261 §18.2.1,
/// RFC 3581 §4), extra headers and a body can be added, and Content-Length is always written.
///
/// It only copies raw header values, so it also works on a request that passed
/// [`parse_lenient`](SipMessage::parse_lenient) but not [`validate`](SipMessage::validate).
#[derive(Debug, Clone)]
pub struct ResponseBuilder<'a> {
    req: &'a SipMessage,
    status: u16,
    reason: Option<&'a [u8]>,
    to_tag: Option<&'a [u8]>,
    received: Option<&'a [u8]>,
    rport: Option<u16>,
    headers: SmallVec<[(&'a [u8], &'a [u8]); 8]>,
    body: Option<(&'a [u8], &'a [u8])>,
}

impl<'a> ResponseBuilder<'a> {
    /// A response with `status` to `req`, reason phrase from [`reason_phrase`].
    pub fn new(req: &'a SipMessage, status: u16) -> Self {
        ResponseBuilder {
            req,
            status,
            reason: None,
            to_tag: None,
            received: None,
            rport: None,
            headers: SmallVec::new(),
            body: None,
        }
    }

    /// Overrides the reason phrase.
    pub fn reason(mut self, reason: &'a [u8]) -> Self {
        self.reason = Some(reason);
        self
    }

    /// To tag to add when the request's To has none (ignored for 100, RFC 3261 §8.2.6.2).
    pub fn to_tag(mut self, tag: &'a [u8]) -> Self {
        self.to_tag = Some(tag);
        self
    }

    /// Adds `;received=<ip>` to the top Via (RFC 3261 §18.2.1: when the sent-by host differs
    /// from the packet's source address; the caller decides).
    pub fn received(mut self, ip: &'a [u8]) -> Self {
        self.received = Some(ip);
        self
    }

    /// Fills in `rport=<port>` on the top Via when the request carries a valueless `rport`,
    /// or adds it when it carries none (the server forces symmetric routing)
    /// (RFC 3581 §4).
    pub fn rport(mut self, port: u16) -> Self {
        self.rport = Some(port);
        self
    }

    /// Adds a header line `name: value` (Allow, Supported, Accept, Unsupported, Retry-After,
    /// Min-Expires, WWW-Authenticate, Contact...). Up to 8 are stored inline.
    pub fn header(mut self, name: &'a [u8], value: &'a [u8]) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a header by its [`HeaderName`] (canonical spelling).
    pub fn typed_header(self, name: HeaderName, value: &'a [u8]) -> Self {
        self.header(name.as_str().as_bytes(), value)
    }

    /// Adds a `Server` header.
    pub fn server(self, value: &'a [u8]) -> Self {
        self.header(b"Server", value)
    }

    /// Adds a `User-Agent` header.
    pub fn user_agent(self, value: &'a [u8]) -> Self {
        self.header(b"User-Agent", value)
    }

    /// Sets a body and its Content-Type.
    pub fn body(mut self, content_type: &'a [u8], body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Writes the response into `out` (appending).
    pub fn write<W: WriteBuf + ?Sized>(&self, out: &mut W) {
        let req = self.req;
        out.reserve_bytes(512 + self.body.map_or(0, |(_, b)| b.len()));
        out.put_bytes(b"SIP/2.0 ");
        let mut d = [0u8; 20];
        out.put_bytes(digits(u64::from(self.status), &mut d));
        out.put_bytes(b" ");
        out.put_bytes(
            self.reason
                .unwrap_or_else(|| reason_phrase(self.status).as_bytes()),
        );
        out.put_bytes(b"\r\n");

        let mut first_via = true;
        for v in req.headers(HeaderName::Via) {
            out.put_bytes(b"Via: ");
            if first_via {
                first_via = false;
                self.write_top_via(v, out);
            } else {
                out.put_bytes(v);
            }
            out.put_bytes(b"\r\n");
        }
        for (name, prefix) in [
            (HeaderName::From, &b"From: "[..]),
            (HeaderName::To, b"To: "),
            (HeaderName::CallId, b"Call-ID: "),
            (HeaderName::CSeq, b"CSeq: "),
        ] {
            let Some(v) = req.header(name) else { continue };
            out.put_bytes(prefix);
            out.put_bytes(v);
            if name == HeaderName::To
                && self.status > 100
                && let Some(tag) = self.to_tag
                && NameAddr::parse(v).is_ok_and(|a| a.tag().is_none())
            {
                out.put_bytes(b";tag=");
                out.put_bytes(tag);
            }
            out.put_bytes(b"\r\n");
        }
        for (n, v) in &self.headers {
            out.put_bytes(n);
            out.put_bytes(b": ");
            out.put_bytes(v);
            out.put_bytes(b"\r\n");
        }
        let body: &[u8] = match self.body {
            Some((ct, b)) => {
                out.put_bytes(b"Content-Type: ");
                out.put_bytes(ct);
                out.put_bytes(b"\r\n");
                b
            }
            None => b"",
        };
        out.put_bytes(b"Content-Length: ");
        out.put_bytes(digits(body.len() as u64, &mut d));
        out.put_bytes(b"\r\n\r\n");
        out.put_bytes(body);
    }

    /// Writes the first Via line value, with `rport` filled in and `received` added to its
    /// first value.
    fn write_top_via<W: WriteBuf + ?Sized>(&self, line: &[u8], out: &mut W) {
        let top_end = match find_top_level(line, b',') {
            Ok(Some(c)) => c,
            _ => line.len(),
        };
        let top = crate::scan::trim_lws(&line[..top_end]);
        let (Ok(via), true) = (
            Via::parse(top),
            self.received.is_some() || self.rport.is_some(),
        ) else {
            out.put_bytes(line);
            return;
        };
        let top_off = offset_in(line, top).unwrap_or(0);
        let mut cur = 0;
        let rport_param = via.params().get(b"rport");
        if let Some(port) = self.rport
            && let Some(p) = rport_param
            && p.value.is_none()
            && let Some(name_at) = offset_in(top, p.name)
        {
            let name_end = name_at + p.name.len();
            out.put_bytes(&line[..top_off + name_end]);
            out.put_bytes(b"=");
            let mut d = [0u8; 20];
            out.put_bytes(digits(u64::from(port), &mut d));
            cur = top_off + name_end;
        }
        let top_stop = top_off + top.len();
        out.put_bytes(&line[cur..top_stop]);
        if let Some(ip) = self.received {
            out.put_bytes(b";received=");
            out.put_bytes(ip);
        }
        // Symmetric response routing forced by the server (Kamailio's `force_rport`): say
        // which port the answer went to, as if the client had asked.
        if let (Some(port), None) = (self.rport, rport_param) {
            out.put_bytes(b";rport=");
            let mut d = [0u8; 20];
            out.put_bytes(digits(u64::from(port), &mut d));
        }
        out.put_bytes(&line[top_stop..]);
    }
}

fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

impl SipMessage {
    /// Starts a [`ResponseBuilder`] for this request.
    pub fn response(&self, status: u16) -> ResponseBuilder<'_> {
        ResponseBuilder::new(self, status)
    }

    /// Raw fallback for a request that only passed [`parse_lenient`](Self::parse_lenient):
    /// writes `status reason` copying the Via, From, To, Call-ID and CSeq lines as received,
    /// adding `to_tag` when To parses and has no tag, and `Content-Length: 0`. Use it to answer
    /// 400 (or the status of a [`ParseError`](crate::ParseError)) to a request that does not
    /// validate. Never call it for a response or an ACK: those get no answer.
    pub fn write_error_response_raw<W: WriteBuf + ?Sized>(
        &self,
        status: u16,
        reason: &[u8],
        to_tag: Option<&[u8]>,
        out: &mut W,
    ) {
        let mut b = ResponseBuilder::new(self, status).reason(reason);
        if let Some(t) = to_tag {
            b = b.to_tag(t);
        }
        b.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const REQ: &[u8] = b"REGISTER sip:registrar.biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP bobspc.biloxi.com:5060;rport;branch=z9hG4bKnashds7, SIP/2.0/UDP p2;branch=z9hG4bK2\r\n\
v: SIP/2.0/TCP p3;branch=z9hG4bK3\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Bob <sip:bob@biloxi.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\r\n";

    fn req() -> SipMessage {
        SipMessage::parse(Bytes::from_static(REQ)).expect("parses")
    }

    #[test]
    fn a_forced_rport_is_added_to_a_top_via_that_did_not_ask_for_it() {
        let raw = String::from_utf8_lossy(REQ).replace(";rport;branch", ";branch");
        let r = SipMessage::parse(Bytes::from(raw)).expect("parses");
        let mut out = Vec::new();
        r.response(200)
            .received(b"192.0.2.4")
            .rport(40000)
            .write(&mut out);
        let m = SipMessage::parse(Bytes::from(out)).expect("response parses");
        let top = m.top_via().expect("via");
        assert_eq!(top.rport(), crate::Rport::Value(40000));
        assert_eq!(top.received(), Some(&b"192.0.2.4"[..]));
        assert_eq!(top.branch(), Some(&b"z9hG4bKnashds7"[..]));
        assert_eq!(m.vias().count(), 3);
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_to_tag_received_rport() {
        let r = req();
        let mut out = Vec::new();
        r.response(200)
            .to_tag(b"srv1")
            .received(b"192.0.2.4")
            .rport(5062)
            .header(b"Contact", b"<sip:bob@192.0.2.4>;expires=7200")
            .server(b"geosip")
            .write(&mut out);
        let m = SipMessage::parse(Bytes::from(out)).expect("response parses");
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.reason_bytes(), Some(&b"OK"[..]));
        let vias: Vec<_> = m.vias().collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].received(), Some(&b"192.0.2.4"[..]));
        assert_eq!(vias[0].rport(), crate::Rport::Value(5062));
        assert_eq!(vias[0].branch(), Some(&b"z9hG4bKnashds7"[..]));
        assert_eq!(vias[1].received(), None);
        assert_eq!(m.to_tag(), Some(&b"srv1"[..]));
        assert_eq!(m.from_tag(), Some(&b"456248"[..]));
        assert_eq!(m.call_id(), r.call_id());
        assert_eq!(m.cseq(), r.cseq());
        assert_eq!(m.header(HeaderName::Server), Some(&b"geosip"[..]));
        assert_eq!(m.content_length(), Some(0));
        assert_eq!(m.check_response(), Ok(()));
    }

    #[test]
    fn trying_gets_no_to_tag_and_existing_tags_are_kept() {
        let r = req();
        let mut out = Vec::new();
        r.response(100).to_tag(b"x").write(&mut out);
        let m = SipMessage::parse(Bytes::from(out)).expect("parses");
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.reason_bytes(), Some(&b"Trying"[..]));
    }

    #[test]
    fn body_gets_content_type_and_length() {
        let r = req();
        let mut out = Vec::new();
        r.response(488)
            .body(b"application/sdp", b"v=0\r\n")
            .write(&mut out);
        let m = SipMessage::parse(Bytes::from(out)).expect("parses");
        assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
        assert_eq!(m.body(), b"v=0\r\n");
    }

    #[test]
    fn raw_fallback_answers_a_request_that_does_not_validate() {
        let bad = b"INVITE sip:user@example.com SIP/2.0\r\nTo: \"Mr. J. User <sip:j.user@example.com>\r\nFrom: sip:caller@example.net;tag=93334\r\nCall-ID: quotbal.aksdj\r\nCSeq: 8 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234\r\n\r\n";
        let m = SipMessage::parse_lenient(Bytes::from_static(bad)).expect("frames");
        let e = m.validate().expect_err("invalid");
        let mut out = Vec::new();
        m.write_error_response_raw(e.status(), b"Bad Request", Some(b"t1"), &mut out);
        let r = SipMessage::parse_lenient(Bytes::from(out)).expect("frames");
        assert_eq!(r.status(), Some(400));
        assert_eq!(
            r.top_via().and_then(|v| v.branch()),
            Some(&b"z9hG4bKkdjuw39234"[..])
        );
        assert_eq!(
            r.header(HeaderName::To),
            Some(&b"\"Mr. J. User <sip:j.user@example.com>"[..])
        );
        assert_eq!(r.call_id(), Some(&b"quotbal.aksdj"[..]));
    }
}
