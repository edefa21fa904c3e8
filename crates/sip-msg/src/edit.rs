//! The edit list ("lumps" in Kamailio, `src/core/data_lump.h`) and serialisation.
//!
//! An [`Edits`] records insertions, deletions and replacements at byte offsets of the
//! *original* message. [`SipMessage::write_with`] then copies the message once into a caller
//! buffer, applying the edits on the way; every byte not touched by an edit is copied exactly
//! as received (folding, compact names, odd case, binary body).
//!
//! Ordering rules, so that the output is defined whatever the order of the calls:
//! * edits are applied by increasing original offset;
//! * at the same offset, insertions come before replacements/deletions, and insertions keep
//!   the order in which they were added;
//! * an edit that starts inside a range already deleted or replaced by an earlier edit is
//!   dropped (e.g. replacing the value of a header line that is also removed);
//! * replacing exactly the same range twice keeps the last replacement (`set_max_forwards`
//!   called twice sets the second value).

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::header::HeaderName;
use crate::message::SipMessage;
use crate::scan::find_top_level;

/// Where serialised bytes go: `Vec<u8>` or `BytesMut`, reused across messages.
pub trait WriteBuf {
    /// Reserves room for `additional` more bytes.
    fn reserve_bytes(&mut self, additional: usize);
    /// Appends bytes.
    fn put_bytes(&mut self, bytes: &[u8]);
}

impl WriteBuf for Vec<u8> {
    #[inline]
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
    #[inline]
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl WriteBuf for BytesMut {
    #[inline]
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
    #[inline]
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Where an edit takes its replacement bytes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    /// A range of [`Edits::arena`].
    Arena(u32, u32),
    /// The new body ([`Edits::body`]).
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    /// Original offset where the edit starts.
    at: u32,
    /// Original offset where the replaced range ends (`== at` for a pure insertion).
    end: u32,
    /// Order of addition, for ties.
    seq: u32,
    text: Text,
}

impl Op {
    #[inline]
    fn key(&self) -> (u32, bool, u32) {
        (self.at, self.end != self.at, self.seq)
    }
}

/// A list of edits against one [`SipMessage`] (Kamailio's lumps). Reuse it with
/// [`clear`](Self::clear); it allocates only when more than 8 edits or 256 bytes of new text
/// are recorded.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    ops: SmallVec<[Op; 8]>,
    arena: SmallVec<[u8; 256]>,
    body: Option<Bytes>,
    seq: u32,
    /// `seq` of the Content-Length line inserted by [`set_body`](Self::set_body), so that a
    /// second call replaces it instead of adding another one.
    cl_insert: Option<u32>,
    /// `seq` of the Max-Forwards line inserted by [`set_max_forwards`](Self::set_max_forwards).
    mf_insert: Option<u32>,
}

/// The header line index of `top value` edits.
fn first_value_range(msg: &SipMessage, name: HeaderName) -> Option<(usize, usize, usize)> {
    let idx = msg.header_index(name)?;
    let e = msg.entries().get(idx)?;
    let v = msg
        .as_bytes()
        .get(e.value_start as usize..e.value_end as usize)?;
    match find_top_level(v, b',') {
        Ok(Some(c)) => {
            // Delete "first, " up to the next value, so the line keeps its remaining values.
            let mut next = c + 1;
            while next < v.len() && crate::scan::is_lws(v[next]) {
                next += 1;
            }
            Some((idx, e.value_start as usize, e.value_start as usize + next))
        }
        _ => Some((idx, e.start as usize, msg.line_end(e) as usize)),
    }
}

/// Start of the first header line that is not a Via (keeps the Via block contiguous), or the
/// end of the header section.
fn after_vias(msg: &SipMessage) -> usize {
    msg.entries()
        .iter()
        .find(|e| e.name != HeaderName::Via)
        .map_or(msg.headers_end(), |e| e.start as usize)
}

fn u64_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
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

impl Edits {
    /// An empty edit list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every edit, keeping the allocated capacity.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.arena.clear();
        self.body = None;
        self.seq = 0;
        self.cl_insert = None;
        self.mf_insert = None;
    }

    /// True when no edit is recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of recorded edits.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    fn push_text(&mut self, parts: &[&[u8]]) -> Text {
        let start = self.arena.len() as u32;
        for p in parts {
            self.arena.extend_from_slice(p);
        }
        Text::Arena(start, self.arena.len() as u32)
    }

    fn push_op(&mut self, at: usize, end: usize, text: Text) {
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        let end = u32::try_from(end).unwrap_or(u32::MAX).max(at);
        // Replacing exactly the same range again: last one wins.
        if end != at
            && let Some(op) = self.ops.iter_mut().find(|o| o.at == at && o.end == end)
        {
            op.text = text;
            return;
        }
        let op = Op {
            at,
            end,
            seq: self.seq,
            text,
        };
        self.seq += 1;
        let pos = self
            .ops
            .iter()
            .position(|o| o.key() > op.key())
            .unwrap_or(self.ops.len());
        self.ops.insert(pos, op);
    }

    /// Inserts raw bytes at `offset` of the original message (must include any CRLF).
    pub fn insert_raw(&mut self, offset: usize, bytes: &[u8]) {
        let t = self.push_text(&[bytes]);
        self.push_op(offset, offset, t);
    }

    /// Replaces the original bytes `range` with `bytes` (empty `bytes` deletes).
    pub fn replace_raw(&mut self, range: std::ops::Range<usize>, bytes: &[u8]) {
        let t = self.push_text(&[bytes]);
        self.push_op(range.start, range.end, t);
    }

    /// Inserts `Via: <value>` above the topmost Via (RFC 3261 §16.6 item 8).
    pub fn insert_via(&mut self, msg: &SipMessage, value: &[u8]) {
        let at = msg
            .header_index(HeaderName::Via)
            .and_then(|i| msg.entries().get(i))
            .map_or_else(|| after_vias(msg), |e| e.start as usize);
        let t = self.push_text(&[b"Via: ", value, b"\r\n"]);
        self.push_op(at, at, t);
    }

    /// Removes the topmost Via value: the whole first Via line, or only its first value when
    /// that line carries several comma-separated values (RFC 3261 §16.7 item 3). Returns false
    /// when there is no Via.
    pub fn remove_top_via(&mut self, msg: &SipMessage) -> bool {
        self.remove_top_value(msg, HeaderName::Via)
    }

    /// Removes the topmost Route value (RFC 3261 §16.4, §16.12). Returns false when there is
    /// no Route.
    pub fn remove_top_route(&mut self, msg: &SipMessage) -> bool {
        self.remove_top_value(msg, HeaderName::Route)
    }

    /// Removes the first value of the first `name` line (the whole line if it has one value).
    pub fn remove_top_value(&mut self, msg: &SipMessage, name: HeaderName) -> bool {
        match first_value_range(msg, name) {
            Some((_, a, b)) => {
                let t = self.push_text(&[]);
                self.push_op(a, b, t);
                true
            }
            None => false,
        }
    }

    /// Sets Max-Forwards to `value`, replacing the first Max-Forwards value or inserting the
    /// header after the Via block when absent (RFC 3261 §16.6 item 3).
    pub fn set_max_forwards(&mut self, msg: &SipMessage, value: u8) {
        let mut d = [0u8; 20];
        let digits = u64_digits(u64::from(value), &mut d);
        match msg
            .header_index(HeaderName::MaxForwards)
            .and_then(|i| msg.entries().get(i))
        {
            Some(e) => {
                let (a, b) = (e.value_start as usize, e.value_end as usize);
                let t = self.push_text(&[digits]);
                self.push_op(a, b, t);
            }
            None => {
                let t = self.push_text(&[b"Max-Forwards: ", digits, b"\r\n"]);
                match self
                    .mf_insert
                    .and_then(|seq| self.ops.iter_mut().find(|o| o.seq == seq))
                {
                    Some(op) => op.text = t,
                    None => {
                        let at = after_vias(msg);
                        self.mf_insert = Some(self.seq);
                        self.push_op(at, at, t);
                    }
                }
            }
        }
    }

    /// Adds `Route: <value>` above the topmost Route (or after the Via block when there is no
    /// Route), e.g. for a pre-loaded route set or an outbound proxy.
    pub fn add_route_top(&mut self, msg: &SipMessage, value: &[u8]) {
        self.add_top(msg, HeaderName::Route, b"Route: ", value);
    }

    /// Adds `Record-Route: <value>` above the topmost Record-Route (or after the Via block)
    /// (RFC 3261 §16.6 item 4).
    pub fn add_record_route_top(&mut self, msg: &SipMessage, value: &[u8]) {
        self.add_top(msg, HeaderName::RecordRoute, b"Record-Route: ", value);
    }

    /// Adds `Path: <value>` above the topmost Path (RFC 3327 §5.1).
    pub fn add_path_top(&mut self, msg: &SipMessage, value: &[u8]) {
        self.add_top(msg, HeaderName::Path, b"Path: ", value);
    }

    fn add_top(&mut self, msg: &SipMessage, name: HeaderName, prefix: &[u8], value: &[u8]) {
        let at = msg
            .header_index(name)
            .and_then(|i| msg.entries().get(i))
            .map_or_else(|| after_vias(msg), |e| e.start as usize);
        let t = self.push_text(&[prefix, value, b"\r\n"]);
        self.push_op(at, at, t);
    }

    /// Rewrites the Request-URI (RFC 3261 §16.5, §16.6 item 2). No-op for a response.
    pub fn set_request_uri(&mut self, msg: &SipMessage, uri: &[u8]) {
        if let Some(r) = msg.request_uri_range() {
            let t = self.push_text(&[uri]);
            self.push_op(r.start, r.end, t);
        }
    }

    /// Inserts header `name: value` before header line `index` (at the end of the headers when
    /// `index` is out of range).
    pub fn insert_header_before(
        &mut self,
        msg: &SipMessage,
        index: usize,
        name: &[u8],
        value: &[u8],
    ) {
        let at = msg
            .entries()
            .get(index)
            .map_or(msg.headers_end(), |e| e.start as usize);
        let t = self.push_text(&[name, b": ", value, b"\r\n"]);
        self.push_op(at, at, t);
    }

    /// Inserts header `name: value` after header line `index` (at the end of the headers when
    /// `index` is out of range).
    pub fn insert_header_after(
        &mut self,
        msg: &SipMessage,
        index: usize,
        name: &[u8],
        value: &[u8],
    ) {
        let at = msg
            .entries()
            .get(index)
            .map_or(msg.headers_end(), |e| msg.line_end(e) as usize);
        let t = self.push_text(&[name, b": ", value, b"\r\n"]);
        self.push_op(at, at, t);
    }

    /// Appends header `name: value` at the end of the header section.
    pub fn append_header(&mut self, msg: &SipMessage, name: &[u8], value: &[u8]) {
        let at = msg.headers_end();
        let t = self.push_text(&[name, b": ", value, b"\r\n"]);
        self.push_op(at, at, t);
    }

    /// Removes header line `index` (with its continuation lines). Returns false when out of
    /// range.
    pub fn remove_header(&mut self, msg: &SipMessage, index: usize) -> bool {
        match msg.entries().get(index) {
            Some(e) => {
                let (a, b) = (e.start as usize, msg.line_end(e) as usize);
                let t = self.push_text(&[]);
                self.push_op(a, b, t);
                true
            }
            None => false,
        }
    }

    /// Removes every header line called `name`; returns how many.
    pub fn remove_headers(&mut self, msg: &SipMessage, name: HeaderName) -> usize {
        let mut n = 0;
        for i in msg.header_indices(name) {
            n += usize::from(self.remove_header(msg, i));
        }
        n
    }

    /// Replaces the value of header line `index`, keeping its name. Returns false when out of
    /// range.
    pub fn replace_header_value(&mut self, msg: &SipMessage, index: usize, value: &[u8]) -> bool {
        match msg.entries().get(index) {
            Some(e) => {
                let (a, b) = (e.value_start as usize, e.value_end as usize);
                let t = self.push_text(&[value]);
                self.push_op(a, b, t);
                true
            }
            None => false,
        }
    }

    /// Replaces the body and fixes Content-Length: the first Content-Length value is replaced,
    /// other Content-Length lines are removed, and one is appended when there was none. The
    /// caller sets Content-Type if it changes.
    pub fn set_body(&mut self, msg: &SipMessage, body: Bytes) {
        let mut d = [0u8; 20];
        let digits = u64_digits(body.len() as u64, &mut d);
        let mut first = true;
        for i in msg
            .header_indices(HeaderName::ContentLength)
            .collect::<SmallVec<[usize; 2]>>()
        {
            if first {
                first = false;
                self.replace_header_value(msg, i, digits);
            } else {
                self.remove_header(msg, i);
            }
        }
        if first {
            let t = self.push_text(&[b"Content-Length: ", digits, b"\r\n"]);
            match self
                .cl_insert
                .and_then(|seq| self.ops.iter_mut().find(|o| o.seq == seq))
            {
                Some(op) => op.text = t,
                None => {
                    let at = msg.headers_end();
                    self.cl_insert = Some(self.seq);
                    self.push_op(at, at, t);
                }
            }
        }
        let start = msg.body_offset();
        self.body = Some(body);
        self.ops.retain(|o| o.text != Text::Body);
        self.push_op(start, msg.len().max(start), Text::Body);
    }

    fn text(&self, t: Text) -> &[u8] {
        match t {
            Text::Arena(a, b) => self.arena.get(a as usize..b as usize).unwrap_or(&[]),
            Text::Body => self.body.as_deref().unwrap_or(&[]),
        }
    }

    /// Upper bound of the bytes the edits add.
    fn added_len(&self) -> usize {
        self.arena.len() + self.body.as_ref().map_or(0, Bytes::len)
    }
}

impl SipMessage {
    /// Serialises the message with `edits` applied into `out` (appending), in one pass. With an
    /// empty edit list the output is byte-identical to [`as_bytes`](Self::as_bytes).
    pub fn write_with<W: WriteBuf + ?Sized>(&self, edits: &Edits, out: &mut W) {
        let src = self.as_bytes();
        out.reserve_bytes(src.len() + edits.added_len());
        let mut cur = 0usize;
        for op in &edits.ops {
            let at = (op.at as usize).min(src.len());
            if at < cur {
                // Starts inside a range already removed or replaced: dropped.
                continue;
            }
            let end = (op.end as usize).clamp(at, src.len());
            out.put_bytes(&src[cur..at]);
            out.put_bytes(edits.text(op.text));
            cur = end;
        }
        out.put_bytes(&src[cur..]);
    }

    /// Serialises into a fresh [`Bytes`] (convenience; hot paths reuse a buffer with
    /// [`write_with`](Self::write_with)).
    pub fn to_bytes_with(&self, edits: &Edits) -> Bytes {
        let mut out = BytesMut::new();
        self.write_with(edits, &mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds, SIP/2.0/UDP h2;branch=z9hG4bK2\r\n\
v: SIP/2.0/TCP h3;branch=z9hG4bK3\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r\n";

    fn msg(s: &[u8]) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(s)).expect("parses")
    }

    fn apply(m: &SipMessage, e: &Edits) -> SipMessage {
        let mut out = Vec::new();
        m.write_with(e, &mut out);
        SipMessage::parse(Bytes::from(out)).expect("edited message parses")
    }

    #[test]
    fn no_edits_reproduce_the_message_byte_for_byte() {
        let m = msg(INVITE);
        let mut out = Vec::new();
        m.write_with(&Edits::new(), &mut out);
        assert_eq!(out, &INVITE[..INVITE.len() - 1]);
    }

    #[test]
    fn forward_edits_insert_via_set_max_forwards_drop_route_add_record_route() {
        let m = msg(INVITE);
        let mut e = Edits::new();
        e.insert_via(&m, b"SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew");
        e.set_max_forwards(&m, 69);
        assert!(e.remove_top_route(&m));
        e.add_record_route_top(&m, b"<sip:proxy.example.com;lr>");
        let o = apply(&m, &e);
        assert_eq!(
            o.top_via().and_then(|v| v.branch()),
            Some(&b"z9hG4bKnew"[..])
        );
        assert_eq!(o.vias().count(), 4);
        assert_eq!(o.max_forwards(), Some(69));
        assert_eq!(o.routes().count(), 0);
        assert_eq!(
            o.record_routes().next().map(|r| r.uri_raw()),
            Some(&b"sip:proxy.example.com;lr"[..])
        );
        assert_eq!(o.body(), b"v=0\r");
        // The Via block stays contiguous.
        let names: Vec<_> = o.header_lines().map(|l| l.name).collect();
        assert_eq!(
            &names[..4],
            &[
                HeaderName::Via,
                HeaderName::Via,
                HeaderName::Via,
                HeaderName::RecordRoute
            ]
        );
    }

    #[test]
    fn removing_the_top_via_of_a_multi_value_line_keeps_the_others() {
        let m = msg(INVITE);
        let mut e = Edits::new();
        assert!(e.remove_top_via(&m));
        let o = apply(&m, &e);
        let hosts: Vec<_> = o.vias().map(|v| v.host().raw().to_vec()).collect();
        assert_eq!(hosts, vec![b"h2".to_vec(), b"h3".to_vec()]);
        assert!(
            o.as_bytes()
                .starts_with(b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP h2;")
        );
    }

    #[test]
    fn removing_a_single_value_via_line_removes_the_line() {
        let m = msg(INVITE);
        let mut e = Edits::new();
        e.remove_top_via(&m);
        let o = apply(&m, &e);
        let mut e2 = Edits::new();
        e2.remove_top_via(&o);
        e2.remove_top_via(&o); // same range twice: still one removal
        let o2 = apply(&o, &e2);
        assert_eq!(o2.vias().count(), 1);
        assert_eq!(o2.header_line_count(HeaderName::Via), 1);
    }

    #[test]
    fn max_forwards_is_inserted_when_absent_and_last_set_wins() {
        let src = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let m = msg(src);
        let mut e = Edits::new();
        e.set_max_forwards(&m, 70);
        let o = apply(&m, &e);
        assert_eq!(o.max_forwards(), Some(70));
        let mut e = Edits::new();
        e.set_max_forwards(&o, 10);
        e.set_max_forwards(&o, 9);
        assert_eq!(apply(&o, &e).max_forwards(), Some(9));
    }

    #[test]
    fn request_uri_rewrite_and_header_edits() {
        let m = msg(INVITE);
        let mut e = Edits::new();
        e.set_request_uri(&m, b"sip:bob@192.0.2.4:5060");
        let cid = m.header_index(HeaderName::CallId).expect("call-id");
        e.insert_header_before(&m, cid, b"X-Before", b"1");
        e.insert_header_after(&m, cid, b"X-After", b"2");
        e.append_header(&m, b"X-End", b"3");
        let to = m.header_index(HeaderName::To).expect("to");
        e.replace_header_value(&m, to, b"<sip:carol@chicago.com>");
        let o = apply(&m, &e);
        assert_eq!(o.request_uri_bytes(), Some(&b"sip:bob@192.0.2.4:5060"[..]));
        assert_eq!(
            o.to().map(|t| t.uri_raw()),
            Some(&b"sip:carol@chicago.com"[..])
        );
        let names: Vec<_> = o.header_lines().map(|l| l.name_bytes.to_vec()).collect();
        let pos = |n: &[u8]| names.iter().position(|x| x == n).expect("present");
        assert_eq!(pos(b"X-Before") + 1, pos(b"Call-ID"));
        assert_eq!(pos(b"Call-ID") + 1, pos(b"X-After"));
        assert_eq!(pos(b"X-End"), names.len() - 1);
    }

    #[test]
    fn removed_header_wins_over_a_value_replacement_inside_it() {
        let m = msg(INVITE);
        let to = m.header_index(HeaderName::To).expect("to");
        let mut e = Edits::new();
        e.replace_header_value(&m, to, b"<sip:x@y>");
        e.remove_header(&m, to);
        let mut out = Vec::new();
        m.write_with(&e, &mut out);
        let o = SipMessage::parse_lenient(Bytes::from(out)).expect("frames");
        assert_eq!(o.header(HeaderName::To), None);
    }

    #[test]
    fn replacing_the_body_fixes_content_length() {
        let m = msg(INVITE);
        let mut e = Edits::new();
        e.set_body(&m, Bytes::from_static(b"hello\0world"));
        let o = apply(&m, &e);
        assert_eq!(o.body(), b"hello\0world");
        assert_eq!(o.content_length(), Some(11));

        let src = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let m = msg(src);
        let mut e = Edits::new();
        e.set_body(&m, Bytes::from_static(b"abc"));
        let o = apply(&m, &e);
        assert_eq!((o.body(), o.content_length()), (&b"abc"[..], Some(3)));
    }

    #[test]
    fn setting_the_body_twice_without_content_length_adds_one_content_length() {
        // Found by the parse_edit_serialise fuzz target.
        let src = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let m = msg(src);
        let mut e = Edits::new();
        e.set_body(&m, Bytes::from_static(b"short"));
        e.set_body(&m, Bytes::from_static(b"the longer body"));
        let o = apply(&m, &e);
        assert_eq!(o.header_line_count(HeaderName::ContentLength), 1);
        assert_eq!(o.body(), b"the longer body");
        assert_eq!(o.content_length(), Some(15));
    }

    #[test]
    fn setting_an_absent_max_forwards_twice_inserts_one_header_with_the_last_value() {
        // Found by the parse_edit_serialise fuzz target.
        let src = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        let m = msg(src);
        let mut e = Edits::new();
        e.set_max_forwards(&m, 1);
        e.set_max_forwards(&m, 73);
        let o = apply(&m, &e);
        assert_eq!(o.header_line_count(HeaderName::MaxForwards), 1);
        assert_eq!(o.max_forwards(), Some(73));
    }

    #[test]
    fn edits_from_another_message_never_panic() {
        let big = msg(INVITE);
        let small = msg(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        let mut e = Edits::new();
        e.remove_header(&big, 8);
        e.set_body(&big, Bytes::from_static(b"x"));
        let mut out = Vec::new();
        small.write_with(&e, &mut out);
    }
}
