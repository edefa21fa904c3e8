//! [`SipMessage`]: framing of the start line and header section, the header index, and the
//! lazy typed accessors.

use std::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::addr::{AddrSpans, NameAddr};
use crate::auth::AuthValue;
use crate::error::{ParseError, ParseErrorKind};
use crate::header::{HeaderName, name_words};
use crate::method::{Method, MethodCode};
use crate::scan::{
    CommaValues, find_byte, find_nl, is_lws, is_token, name_colon, offset_in, parse_u64,
};
use crate::typed::{CSeq, Contact};
use crate::uri::Uri;
use crate::via::{Via, ViaSpans};

/// Most header lines a message may carry; more is [`ParseErrorKind::TooManyHeaders`].
pub const MAX_HEADERS: usize = 1000;

/// Header lines kept inline in [`SipMessage`] before the index spills to the heap.
pub const INLINE_HEADERS: usize = 32;

/// One entry of the header index. Offsets are into the message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: HeaderName,
    /// Start of the line (= start of the field name).
    pub(crate) start: u32,
    name_end: u32,
    /// Value, trimmed of LWS on both sides; folding inside is kept raw.
    pub(crate) value_start: u32,
    pub(crate) value_end: u32,
    /// End of the line, after its LF (continuation lines included).
    line_end: u32,
}

impl Entry {
    #[inline(always)]
    fn new(
        name: HeaderName,
        start: usize,
        name_end: usize,
        vs: usize,
        ve: usize,
        le: usize,
    ) -> Self {
        Entry {
            name,
            start: start as u32,
            name_end: name_end as u32,
            value_start: vs as u32,
            value_end: ve as u32,
            line_end: le as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request(MethodCode),
    Response(u16),
}

const FLAG_NO_EMPTY_LINE: u8 = 1;
const FLAG_BAD_LINE: u8 = 2;
const FLAG_CL_TOO_BIG: u8 = 4;

/// A SIP message (RFC 3261 §7) owning exactly its bytes.
///
/// Built by [`parse`](Self::parse) (framing + validation) or
/// [`parse_lenient`](Self::parse_lenient) (framing only). It keeps the received bytes
/// untouched, an index of the start line and of every header line, and parses typed header
/// values only when an accessor asks for them. Nothing requires UTF-8.
#[derive(Debug, Clone)]
pub struct SipMessage {
    buf: Bytes,
    kind: Kind,
    /// Request: method / Request-URI / SIP-Version. Response: SIP-Version / code / reason.
    sl: [(u32, u32); 3],
    headers: SmallVec<[Entry; INLINE_HEADERS]>,
    /// Index of the first line of each [`HeaderName`] (`u16::MAX`: absent), so that the
    /// single-value lookups cost nothing.
    first: [u16; HeaderName::COUNT],
    /// Offset of the empty line that ends the header section.
    headers_end: u32,
    body_start: u32,
    flags: u8,
    bad_line: u32,
    /// The routing headers, parsed once during framing.
    rt: Routing,
}

/// The routing headers of a message, parsed once during framing (Kamailio hangs its parsed
/// header structures off the message the same way): positions into the message, so that
/// `top_via()`, `from()`, `cseq()`... rebuild their value in O(1), and `validate` starts from
/// what is already known. Each holds exactly what the lazy parse of the first line of that
/// header gives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routing {
    /// Top Via (`Via::parse_first` of the first Via line).
    pub(crate) via: Parsed<ViaSpans>,
    /// From and To as `from()` / `to()` give them (`NameAddr::parse` of the first line).
    pub(crate) from: Parsed<AddrSpans>,
    pub(crate) to: Parsed<AddrSpans>,
    /// Top Route (`NameAddr::parse_first` of the first Route line).
    pub(crate) route: Parsed<AddrSpans>,
    /// CSeq number, method code and method bytes.
    pub(crate) cseq: Option<(u32, MethodCode, u32, u32)>,
    pub(crate) max_forwards: Option<u8>,
    pub(crate) content_length: Option<u64>,
}

/// A value parsed in place during framing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed<T> {
    /// Its parts, relative to its raw bytes.
    pub(crate) sp: T,
    /// Its raw bytes, as offsets into the message.
    pub(crate) raw: (u32, u32),
    /// Where parsing stopped (the `,` before the next value, or the end of the line value).
    pub(crate) end: u32,
    /// False when the header is absent or did not parse.
    pub(crate) ok: bool,
}

impl<T: Copy> Parsed<T> {
    const fn none(sp: T) -> Parsed<T> {
        Parsed {
            sp,
            raw: (0, 0),
            end: 0,
            ok: false,
        }
    }

    #[inline(always)]
    fn set(&mut self, raw: (usize, usize), end: usize) {
        self.raw = (raw.0 as u32, raw.1 as u32);
        self.end = end as u32;
        self.ok = true;
    }
}

/// A view of one header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine<'a> {
    /// Position in the header index (what [`Edits`](crate::Edits) take).
    pub index: usize,
    /// Classified name.
    pub name: HeaderName,
    /// Field name as received (`v`, `VIA`, `Via`...).
    pub name_bytes: &'a [u8],
    /// Value, trimmed, folding kept raw.
    pub value: &'a [u8],
    /// Byte range of the value in the message.
    pub value_range: Range<usize>,
    /// Byte range of the whole line, its CRLF and continuation lines included.
    pub line_range: Range<usize>,
}

#[inline]
fn r(a: u32, b: u32) -> Range<usize> {
    a as usize..b as usize
}

impl SipMessage {
    /// Frames and validates a message: [`parse_lenient`](Self::parse_lenient) then
    /// [`validate`](Self::validate).
    ///
    /// For a datagram carrying more bytes than Content-Length announces, the message stops at
    /// Content-Length and the rest is dropped (RFC 3261 §18.3, RFC 4475 §3.1.1.8).
    pub fn parse(buf: Bytes) -> Result<SipMessage, ParseError> {
        // Validated in place: the message is not moved out of the result and back (it is
        // about a kilobyte).
        let r = Self::parse_lenient(buf);
        if let Ok(msg) = &r
            && let Err(e) = msg.validate()
        {
            return Err(e);
        }
        r
    }

    /// Frames the start line and header section and builds the header index, without checking
    /// the syntax of values. Fails only when the message cannot be framed at all (no start
    /// line, no line end, too many headers, too large), so a server can still answer 400 to
    /// what it got (see [`write_error_response_raw`](Self::write_error_response_raw)).
    ///
    /// Leading CRLFs are skipped (RFC 3261 §7.5). Without Content-Length the body is the rest
    /// of the buffer (datagram semantics, §18.3).
    pub fn parse_lenient(buf: Bytes) -> Result<SipMessage, ParseError> {
        // The message is initialised once, before the start line is framed, and framed in
        // place (filling it in from the parts of the start line cost more).
        let mut r = Ok(SipMessage {
            kind: Kind::Response(0),
            sl: [(0, 0); 3],
            headers: SmallVec::new(),
            first: [u16::MAX; HeaderName::COUNT],
            headers_end: 0,
            body_start: 0,
            flags: 0,
            bad_line: 0,
            // Field by field: each part is copied from its own small constant with a few
            // vector moves, cheaper than one `memcpy` call for the whole (~300 bytes).
            rt: Routing {
                via: Parsed::none(ViaSpans::EMPTY),
                from: Parsed::none(AddrSpans::EMPTY),
                to: Parsed::none(AddrSpans::EMPTY),
                route: Parsed::none(AddrSpans::EMPTY),
                cseq: None,
                max_forwards: None,
                content_length: None,
            },
            buf: Bytes::new(),
        });
        if let Ok(msg) = &mut r
            && let Err(e) = msg.frame(buf)
        {
            r = Err(e);
        }
        r
    }

    /// [`parse_lenient`](Self::parse_lenient) into `self`, a message fresh from its initial
    /// state.
    #[inline(always)]
    fn frame(&mut self, mut buf: Bytes) -> Result<(), ParseError> {
        let msg = self;
        if buf.len() > u32::MAX as usize - 2 {
            return Err(ParseError::new(ParseErrorKind::TooLarge, 0));
        }
        // Ignore CRLFs before the start line (RFC 3261 §7.5).
        let lead = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(ParseError::new(ParseErrorKind::Empty, 0))?;
        if lead > 0 {
            buf = buf.slice(lead..);
        }
        let b: &[u8] = &buf;
        let n = b.len();

        // Start line.
        // The start line is short: the inline 16-byte search beats a `memchr` call over the
        // whole message.
        let nl = find_nl(b, 0);
        if nl >= n {
            return Err(ParseError::new(ParseErrorKind::Truncated, 0));
        }
        let sl_line_end = nl + 1;
        let sl_end = if nl > 0 && b[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let line = &b[..sl_end];
        let sp1 = crate::scan::find_byte_at(b' ', line)
            .ok_or(ParseError::new(ParseErrorKind::StartLine, 0))?;
        if sp1 == 0 {
            return Err(ParseError::new(ParseErrorKind::StartLine, 0));
        }
        let (kind, sl) = if line.len() > 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
            // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
            let cs = sp1 + 1;
            let ce = crate::scan::find_byte_at(b' ', &line[cs..]).map_or(sl_end, |p| cs + p);
            let rs = (ce + 1).min(sl_end);
            let code = &line[cs..ce];
            let status = if code.len() == 3 {
                crate::scan::parse_u32(code).map_or(0, |c| c as u16)
            } else {
                0
            };
            (Kind::Response(status), [(0, sp1), (cs, ce), (rs, sl_end)])
        } else {
            // Request-Line = Method SP Request-URI SP SIP-Version
            // The version is usually the 7 bytes `SIP/2.0` after the last space.
            let last = match line.len().checked_sub(8) {
                Some(k)
                    if k > sp1 && line[k] == b' ' && line[k + 1..].iter().all(|&c| c != b' ') =>
                {
                    k
                }
                _ => memchr::memrchr(b' ', line).unwrap_or(sp1),
            };
            let method = &line[..sp1];
            let (us, ue, vs) = if last > sp1 {
                (sp1 + 1, last, last + 1)
            } else {
                (sp1 + 1, sl_end, sl_end)
            };
            (
                Kind::Request(MethodCode::from_bytes(method)),
                [(0, sp1), (us, ue), (vs, sl_end)],
            )
        };

        msg.kind = kind;
        msg.sl = [
            (sl[0].0 as u32, sl[0].1 as u32),
            (sl[1].0 as u32, sl[1].1 as u32),
            (sl[2].0 as u32, sl[2].1 as u32),
        ];
        msg.headers_end = n as u32;
        msg.body_start = n as u32;

        // Header lines; `count` is `msg.headers.len()`, kept apart (cheaper than asking the
        // `SmallVec`, which first checks whether it spilled).
        let mut pos = sl_line_end;
        let mut count = 0usize;
        loop {
            let (name, name_end, vs, ve, line_end) = match fast_line(b, pos) {
                Some(l) => l,
                // The empty line ending the header section, without the call.
                None if b.get(pos..pos + 2) == Some(b"\r\n") => {
                    msg.headers_end = pos as u32;
                    msg.body_start = (pos + 2) as u32;
                    break;
                }
                None => match slow_line(b, pos) {
                    Line::Header(l) => l,
                    Line::Bad { line_end } => {
                        if msg.flags & FLAG_BAD_LINE == 0 {
                            msg.flags |= FLAG_BAD_LINE;
                            msg.bad_line = pos as u32;
                        }
                        pos = line_end;
                        continue;
                    }
                    Line::End {
                        headers_end,
                        body_start,
                    } => {
                        if headers_end == n {
                            msg.flags |= FLAG_NO_EMPTY_LINE;
                        }
                        msg.headers_end = headers_end as u32;
                        msg.body_start = body_start as u32;
                        break;
                    }
                },
            };
            if count >= MAX_HEADERS {
                return Err(ParseError::new(ParseErrorKind::TooManyHeaders, pos));
            }
            let slot = &mut msg.first[name as usize];
            if *slot == u16::MAX {
                *slot = count as u16;
            }
            msg.headers
                .push(Entry::new(name, pos, name_end, vs, ve, line_end));
            count += 1;
            pos = line_end;
        }

        // The first Content-Length line decides (RFC 3261 §20.14 allows one).
        let content_length = msg.parse_routing(b);
        msg.rt.content_length = content_length.flatten();

        // Body: Content-Length bytes when given; the rest of the datagram otherwise.
        let body_start = msg.body_start as usize;
        let mut end = n;
        if let Some(Some(cl)) = content_length {
            let avail = (n - body_start) as u64;
            if cl <= avail {
                end = body_start + cl as usize;
            } else {
                msg.flags |= FLAG_CL_TOO_BIG;
            }
        }
        buf.truncate(end);
        msg.buf = buf;
        Ok(())
    }

    /// Parses the routing headers (first line of each) into [`Routing`], in place; returns
    /// the parse of the first Content-Length line, when there is one.
    #[inline(never)]
    fn parse_routing(&mut self, b: &[u8]) -> Option<Option<u64>> {
        // The value of the first `name` line, as a slice of `b` (the message bytes during
        // framing), and where it starts; the index is borrowed once (a `SmallVec` checks
        // whether it spilled at each look-up).
        let hs: &[Entry] = &self.headers;
        let first = &self.first;
        let value = |name: HeaderName| {
            let e = hs.get(usize::from(first[name as usize]))?;
            let (s, t) = (e.value_start as usize, e.value_end as usize);
            Some((b.get(s..t)?, s))
        };
        let rt = &mut self.rt;
        if let Some((v, vs)) = value(HeaderName::Via) {
            let p = &mut rt.via;
            if let Some(end) = p.sp.parse_canonical(v) {
                p.set((vs, vs + end), vs + end);
            } else if let Ok((via, end)) = Via::parse_general(v) {
                p.sp = via.spans();
                let s = offset_in(b, via.raw()).unwrap_or(0);
                p.set((s, s + via.raw().len()), vs + end);
            }
        }
        for (name, p) in [
            (HeaderName::From, &mut rt.from),
            (HeaderName::To, &mut rt.to),
        ] {
            if let Some((v, vs)) = value(name) {
                // As `NameAddr::parse` (the value is trimmed): a value going on after the
                // first name-addr is one malformed name-addr.
                if let Ok((s, t, end)) = p.sp.parse_first(v) {
                    if end < v.len() {
                        p.sp.set_trailing_garbage();
                        p.set((vs, vs + v.len()), vs + v.len());
                    } else {
                        p.set((vs + s, vs + t), vs + end);
                    }
                }
            }
        }
        if let Some((v, vs)) = value(HeaderName::Route) {
            let p = &mut rt.route;
            if let Ok((s, t, end)) = p.sp.parse_first(v) {
                p.set((vs + s, vs + t), vs + end);
            }
        }
        if let Some((v, vs)) = value(HeaderName::CSeq)
            && let Ok((c, ms, me)) = CSeq::parse_parts(v)
        {
            rt.cseq = Some((c.seq, c.code, (vs + ms) as u32, (vs + me) as u32));
        }
        if let Some((v, _)) = value(HeaderName::MaxForwards) {
            rt.max_forwards = parse_u64(v).and_then(|n| u8::try_from(n).ok());
        }
        value(HeaderName::ContentLength).map(|(v, _)| parse_u64(v))
    }

    /// The routing headers parsed during framing.
    #[inline(always)]
    pub(crate) fn routing(&self) -> &Routing {
        &self.rt
    }

    #[inline(always)]
    pub(crate) fn parsed_addr(&self, p: &Parsed<AddrSpans>) -> Option<NameAddr<'_>> {
        p.ok.then(|| NameAddr::from_parts(self.slice(p.raw.0, p.raw.1), p.sp))
    }

    #[inline(always)]
    pub(crate) fn parsed_via(&self, p: &Parsed<ViaSpans>) -> Option<Via<'_>> {
        p.ok.then(|| Via::from_parts(self.slice(p.raw.0, p.raw.1), p.sp))
    }

    /// Checks the one-pass fast paths against the general parsers on this message: the
    /// cached routing headers and the [`validate`](Self::validate) verdict. Panics on a
    /// difference. Only with the `fuzzing` feature (the fuzz targets call it on every input).
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fuzz_check_fast_paths(&self) {
        crate::reference::check(self);
    }

    // ----- whole message -----

    /// The message bytes, exactly as received (trailing datagram octets excluded).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The message as a shared [`Bytes`] (cheap clone).
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    /// Gives the bytes back.
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }

    /// Length of the message in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Never true for a parsed message; present for API symmetry with [`len`](Self::len).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub(crate) fn slice(&self, a: u32, b: u32) -> &[u8] {
        self.buf.get(a as usize..b as usize).unwrap_or(&[])
    }

    // ----- start line -----

    /// True for a request (RFC 3261 §7.1).
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request(_))
    }

    /// True for a response (RFC 3261 §7.2).
    pub fn is_response(&self) -> bool {
        matches!(self.kind, Kind::Response(_))
    }

    /// The start line without its line end.
    pub fn start_line_bytes(&self) -> &[u8] {
        self.slice(0, self.sl[2].1)
    }

    /// Request method (case-sensitive, RFC 3261 §7.1); `None` for a response.
    #[inline]
    pub fn method(&self) -> Option<Method<'_>> {
        match self.kind {
            Kind::Request(code) => Some(code.to_method(self.slice(self.sl[0].0, self.sl[0].1))),
            Kind::Response(_) => None,
        }
    }

    /// Raw method bytes of a request.
    pub fn method_bytes(&self) -> Option<&[u8]> {
        self.is_request()
            .then(|| self.slice(self.sl[0].0, self.sl[0].1))
    }

    /// Raw Request-URI of a request.
    pub fn request_uri_bytes(&self) -> Option<&[u8]> {
        self.is_request()
            .then(|| self.slice(self.sl[1].0, self.sl[1].1))
    }

    /// Parsed Request-URI (`None` for a response or an unparsable URI).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        Uri::parse(self.request_uri_bytes()?).ok()
    }

    /// Byte range of the Request-URI (what [`Edits::set_request_uri`](crate::Edits::set_request_uri) replaces).
    pub fn request_uri_range(&self) -> Option<Range<usize>> {
        self.is_request().then(|| r(self.sl[1].0, self.sl[1].1))
    }

    /// SIP-Version as written (`SIP/2.0`).
    pub fn version_bytes(&self) -> &[u8] {
        match self.kind {
            Kind::Request(_) => self.slice(self.sl[2].0, self.sl[2].1),
            Kind::Response(_) => self.slice(self.sl[0].0, self.sl[0].1),
        }
    }

    /// Status code of a response (0 when the code is not three digits; such a message does
    /// not [`validate`](Self::validate)).
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Response(s) => Some(s),
            Kind::Request(_) => None,
        }
    }

    /// Reason-Phrase of a response (may be empty, may be any bytes, RFC 4475 §3.1.1.12).
    pub fn reason_bytes(&self) -> Option<&[u8]> {
        self.is_response()
            .then(|| self.slice(self.sl[2].0, self.sl[2].1))
    }

    pub(crate) fn start_line_parts(&self) -> [&[u8]; 3] {
        [
            self.slice(self.sl[0].0, self.sl[0].1),
            self.slice(self.sl[1].0, self.sl[1].1),
            self.slice(self.sl[2].0, self.sl[2].1),
        ]
    }

    // ----- header index -----

    /// Number of header lines.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.headers
    }

    /// End of the field name of `e`.
    #[inline(always)]
    pub(crate) fn name_end(&self, e: &Entry) -> u32 {
        e.name_end
    }

    /// End of the line of `e`, after its LF (continuation lines included).
    #[inline(always)]
    pub(crate) fn line_end(&self, e: &Entry) -> u32 {
        e.line_end
    }

    /// Offset of the empty line that closes the header section (where headers appended at the
    /// end go).
    pub fn headers_end(&self) -> usize {
        self.headers_end as usize
    }

    /// Offset of the first body byte.
    pub fn body_offset(&self) -> usize {
        (self.body_start as usize).min(self.buf.len())
    }

    pub(crate) fn has_empty_line(&self) -> bool {
        self.flags & FLAG_NO_EMPTY_LINE == 0
    }

    pub(crate) fn bad_line(&self) -> Option<usize> {
        (self.flags & FLAG_BAD_LINE != 0).then_some(self.bad_line as usize)
    }

    pub(crate) fn content_length_too_big(&self) -> bool {
        self.flags & FLAG_CL_TOO_BIG != 0
    }

    fn line(&self, index: usize, e: &Entry) -> HeaderLine<'_> {
        HeaderLine {
            index,
            name: e.name,
            name_bytes: self.slice(e.start, self.name_end(e)),
            value: self.slice(e.value_start, e.value_end),
            value_range: r(e.value_start, e.value_end),
            line_range: r(e.start, self.line_end(e)),
        }
    }

    /// Header line number `index`.
    pub fn header_line(&self, index: usize) -> Option<HeaderLine<'_>> {
        self.headers.get(index).map(|e| self.line(index, e))
    }

    /// All header lines in order.
    pub fn header_lines(&self) -> impl Iterator<Item = HeaderLine<'_>> + '_ {
        self.headers
            .iter()
            .enumerate()
            .map(|(i, e)| self.line(i, e))
    }

    /// Index of the first header line called `name`.
    #[inline]
    pub fn header_index(&self, name: HeaderName) -> Option<usize> {
        match self.first[name as usize] {
            u16::MAX => None,
            i => Some(i as usize),
        }
    }

    /// Indices of every header line called `name`, in order.
    pub fn header_indices(&self, name: HeaderName) -> impl Iterator<Item = usize> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.name == name)
            .map(|(i, _)| i)
    }

    /// Value of the first header line called `name` (whole line value: for list headers it may
    /// hold several comma-separated values).
    #[inline]
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        let e = self.headers.get(self.header_index(name)?)?;
        Some(self.slice(e.value_start, e.value_end))
    }

    /// Values of every header line called `name`, in order.
    pub fn headers(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers
            .iter()
            .filter(move |e| e.name == name)
            .map(|e| self.slice(e.value_start, e.value_end))
    }

    /// Number of header lines called `name`.
    pub fn header_line_count(&self, name: HeaderName) -> usize {
        self.headers.iter().filter(|e| e.name == name).count()
    }

    fn entry_matches(&self, e: &Entry, kind: HeaderName, raw: &[u8]) -> bool {
        e.name == kind
            && (kind != HeaderName::Other
                || self
                    .slice(e.start, self.name_end(e))
                    .eq_ignore_ascii_case(raw))
    }

    /// Value of the first header line whose name is `name` (case-insensitive; a compact form
    /// and its long form are the same header).
    pub fn header_by_name(&self, name: &[u8]) -> Option<&[u8]> {
        let kind = HeaderName::from_bytes(name);
        self.headers
            .iter()
            .find(|e| self.entry_matches(e, kind, name))
            .map(|e| self.slice(e.value_start, e.value_end))
    }

    /// Values of every header line whose name is `name` (case-insensitive, compact-aware).
    pub fn headers_by_name<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let kind = HeaderName::from_bytes(name);
        self.headers
            .iter()
            .filter(move |e| self.entry_matches(e, kind, name))
            .map(|e| self.slice(e.value_start, e.value_end))
    }

    /// Indices of every header line whose name is `name` (case-insensitive, compact-aware).
    pub fn header_indices_by_name<'a>(
        &'a self,
        name: &'a [u8],
    ) -> impl Iterator<Item = usize> + 'a {
        let kind = HeaderName::from_bytes(name);
        self.headers
            .iter()
            .enumerate()
            .filter(move |(_, e)| self.entry_matches(e, kind, name))
            .map(|(i, _)| i)
    }

    /// Comma-separated values of a list header across all its lines, in order
    /// (RFC 3261 §7.3.1). Commas inside quoted strings and `<...>` do not split. Empty
    /// items are skipped.
    pub fn values(&self, name: HeaderName) -> Values<'_, impl Iterator<Item = &[u8]> + '_> {
        Values {
            lines: self.headers(name),
            cur: None,
        }
    }

    /// Comma-separated values of header `name` (matched case-insensitively, compact-aware).
    pub fn values_by_name<'a>(
        &'a self,
        name: &'a [u8],
    ) -> Values<'a, impl Iterator<Item = &'a [u8]> + 'a> {
        Values {
            lines: self.headers_by_name(name),
            cur: None,
        }
    }

    // ----- typed accessors -----

    /// Topmost Via value (the first value of the first Via line). O(1): parsed during
    /// framing.
    #[inline]
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.parsed_via(&self.rt.via)
    }

    /// Every Via value, top first (unparsable values are skipped; none are in a message that
    /// passed [`validate`](Self::validate)).
    pub fn vias(&self) -> impl Iterator<Item = Via<'_>> + '_ {
        self.values(HeaderName::Via)
            .filter_map(|v| Via::parse(v).ok())
    }

    /// From (RFC 3261 §20.20). O(1): parsed during framing.
    #[inline]
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.parsed_addr(&self.rt.from)
    }

    /// To (RFC 3261 §20.39). O(1): parsed during framing.
    #[inline]
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.parsed_addr(&self.rt.to)
    }

    /// From tag.
    #[inline]
    pub fn from_tag(&self) -> Option<&[u8]> {
        self.from()?.tag()
    }

    /// To tag.
    #[inline]
    pub fn to_tag(&self) -> Option<&[u8]> {
        self.to()?.tag()
    }

    /// Call-ID value (RFC 3261 §20.8).
    #[inline]
    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderName::CallId)
    }

    /// CSeq (RFC 3261 §20.16). O(1): parsed during framing.
    #[inline]
    pub fn cseq(&self) -> Option<CSeq<'_>> {
        let (seq, code, ms, me) = self.rt.cseq?;
        Some(CSeq {
            seq,
            method: code.to_method(self.slice(ms, me)),
        })
    }

    /// Max-Forwards (RFC 3261 §20.22); `None` when absent or not a number in 0..=255.
    #[inline]
    pub fn max_forwards(&self) -> Option<u8> {
        self.rt.max_forwards
    }

    /// Contact values (RFC 3261 §20.10), across all Contact lines.
    pub fn contacts(&self) -> impl Iterator<Item = Contact<'_>> + '_ {
        self.values(HeaderName::Contact)
            .filter_map(|v| Contact::parse(v).ok())
    }

    /// Expires header in seconds (RFC 3261 §20.19); larger than `u32::MAX` saturates.
    pub fn expires(&self) -> Option<u32> {
        let v = self.header(HeaderName::Expires)?;
        parse_u64(v).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Route values, top first (RFC 3261 §20.34).
    pub fn routes(&self) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        self.name_addrs(HeaderName::Route)
    }

    /// Topmost Route value. O(1): parsed during framing.
    #[inline]
    pub fn top_route(&self) -> Option<NameAddr<'_>> {
        self.parsed_addr(&self.rt.route)
    }

    /// Record-Route values, top first (RFC 3261 §20.30).
    pub fn record_routes(&self) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        self.name_addrs(HeaderName::RecordRoute)
    }

    /// Path values, top first (RFC 3327).
    pub fn paths(&self) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        self.name_addrs(HeaderName::Path)
    }

    /// Values of any list header made of name-addrs (Route, Record-Route, Path,
    /// Service-Route, P-Asserted-Identity...).
    pub fn name_addrs(&self, name: HeaderName) -> impl Iterator<Item = NameAddr<'_>> + '_ {
        self.values(name).filter_map(|v| NameAddr::parse(v).ok())
    }

    /// Authorization credentials, one per header line (RFC 3261 §20.7).
    pub fn authorizations(&self) -> impl Iterator<Item = AuthValue<'_>> + '_ {
        self.auth_values(HeaderName::Authorization)
    }

    /// Proxy-Authorization credentials (RFC 3261 §20.28).
    pub fn proxy_authorizations(&self) -> impl Iterator<Item = AuthValue<'_>> + '_ {
        self.auth_values(HeaderName::ProxyAuthorization)
    }

    /// WWW-Authenticate challenges (RFC 3261 §20.44).
    pub fn www_authenticates(&self) -> impl Iterator<Item = AuthValue<'_>> + '_ {
        self.auth_values(HeaderName::WwwAuthenticate)
    }

    /// Proxy-Authenticate challenges (RFC 3261 §20.27).
    pub fn proxy_authenticates(&self) -> impl Iterator<Item = AuthValue<'_>> + '_ {
        self.auth_values(HeaderName::ProxyAuthenticate)
    }

    fn auth_values(&self, name: HeaderName) -> impl Iterator<Item = AuthValue<'_>> + '_ {
        self.headers(name).filter_map(|v| AuthValue::parse(v).ok())
    }

    /// Content-Length value (RFC 3261 §20.14); `None` when absent or not a number.
    #[inline]
    pub fn content_length(&self) -> Option<u64> {
        self.rt.content_length
    }

    /// Content-Type value, raw (RFC 3261 §20.15).
    pub fn content_type(&self) -> Option<&[u8]> {
        self.header(HeaderName::ContentType)
    }

    /// Option tags of Require (RFC 3261 §20.32).
    pub fn require(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(HeaderName::Require)
    }

    /// Option tags of Proxy-Require (RFC 3261 §20.29).
    pub fn proxy_require(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(HeaderName::ProxyRequire)
    }

    /// Option tags of Supported (RFC 3261 §20.37).
    pub fn supported(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(HeaderName::Supported)
    }

    /// Option tags of Unsupported (RFC 3261 §20.40).
    pub fn unsupported(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(HeaderName::Unsupported)
    }

    /// User-Agent value (RFC 3261 §20.41).
    pub fn user_agent(&self) -> Option<&[u8]> {
        self.header(HeaderName::UserAgent)
    }

    /// The body (Content-Length bytes, or the rest of the datagram without Content-Length).
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body_offset()..).unwrap_or(&[])
    }

    /// The body as shared [`Bytes`] (no copy).
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body_offset()..)
    }

    /// True when `method` is a `token` (used by validation).
    pub(crate) fn method_is_token(&self) -> bool {
        is_token(self.slice(self.sl[0].0, self.sl[0].1))
    }
}

/// A header line framed: name, end of the name, trimmed value, end of the line (after its LF).
type LineParts = (HeaderName, usize, usize, usize, usize);

/// What [`slow_line`] found at a line start.
enum Line {
    Header(LineParts),
    /// Not `name: value` (no colon, empty name, or a continuation line with nothing before).
    Bad {
        line_end: usize,
    },
    /// The empty line ending the header section (`headers_end == len` when the buffer ends
    /// first).
    End {
        headers_end: usize,
        body_start: usize,
    },
}

/// Frames the header line at `pos` when it has the common shape `Name: value\r\n`: a name of
/// at most 23 bytes right before the colon, one space, a value without leading or trailing
/// whitespace or control byte, CRLF, no continuation line, and a byte after the line.
/// `None` means "ask [`slow_line`]", which frames everything else (and gives the same result
/// for these lines): every test here only decides between the two paths.
#[inline(always)]
fn fast_line(b: &[u8], pos: usize) -> Option<LineParts> {
    // SP, HT (a continuation with no header), CR, LF (the empty line) and controls.
    if *b.get(pos)? <= b' ' {
        return None;
    }
    let (k, words) = name_colon(b, pos)?;
    let colon = pos + k;
    // A name (the first byte is not ':'), not ending in SP/HT, then ": " and a value byte.
    let around = b.get(colon - 1..colon + 3)?;
    if k == 0 || around[0] <= b' ' || around[2] != b' ' || around[3] <= b' ' {
        return None;
    }
    // Classified before the search so that the name words need not live across it.
    let name = HeaderName::classify_words(words, k);
    let nl = find_nl(b, colon + 3);
    // The value ends with a non-LWS byte, then CRLF, and the next line is not a continuation.
    let end = b.get(nl - 2..nl + 2)?;
    if end[1] != b'\r' || end[0] <= b' ' || end[3] == b' ' || end[3] == b'\t' {
        return None;
    }
    Some((name, colon, colon + 2, nl - 1, nl + 1))
}

/// Frames the line at `pos` whatever its shape (see [`fast_line`] for the common one).
#[inline(never)]
fn slow_line(b: &[u8], pos: usize) -> Line {
    let n = b.len();
    let Some(&c) = b.get(pos) else {
        return Line::End {
            headers_end: n,
            body_start: n,
        };
    };
    if c == b'\n' {
        return Line::End {
            headers_end: pos,
            body_start: pos + 1,
        };
    }
    if c == b'\r' && b.get(pos + 1) == Some(&b'\n') {
        return Line::End {
            headers_end: pos,
            body_start: pos + 2,
        };
    }
    let ws = c == b' ' || c == b'\t';
    let fast = if ws { None } else { name_colon(b, pos) };
    let (colon, words, mut nl) = match fast {
        Some((k, words)) => (Some(pos + k), Some(words), find_nl(b, pos + k + 1)),
        None => {
            let nl = find_nl(b, pos);
            let colon = if ws {
                None
            } else {
                find_byte(&b[pos..nl], b':').map(|k| pos + k)
            };
            (colon, None, nl)
        }
    };
    // Continuation lines start with SP/HT (RFC 3261 §7.3.1).
    while let Some(b' ' | b'\t') = b.get(nl + 1) {
        nl = find_nl(b, nl + 2);
    }
    let line_end = (nl + 1).min(n);
    let Some(colon) = colon else {
        return Line::Bad { line_end };
    };
    let mut name_end = colon;
    let mut trimmed = false;
    while name_end > pos && matches!(b[name_end - 1], b' ' | b'\t') {
        trimmed = true;
        name_end -= 1;
    }
    if name_end == pos {
        return Line::Bad { line_end };
    }
    let value_from = colon + 1;
    let end = if nl > value_from && b[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let (mut vs, mut ve) = (value_from, end);
    while vs < line_end && is_lws(b[vs]) {
        vs += 1;
    }
    while ve > vs && is_lws(b[ve - 1]) {
        ve -= 1;
    }
    if vs >= ve {
        // Empty value: anchor it right after the colon so that a replacement stays on the
        // line.
        vs = value_from;
        ve = value_from;
    }
    let name_len = name_end - pos;
    let name = match words {
        Some(w) if !trimmed => HeaderName::classify_words(w, name_len),
        _ if name_len <= 24 => HeaderName::classify_words(name_words(b, pos, name_len), name_len),
        _ => HeaderName::Other,
    };
    Line::Header((name, name_end, vs, ve, line_end))
}

/// Iterator over the comma-separated values of a list header across its lines.
#[derive(Debug, Clone)]
pub struct Values<'a, I> {
    lines: I,
    cur: Option<CommaValues<'a>>,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for Values<'a, I> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if let Some(cur) = &mut self.cur
                && let Some(v) = cur.next()
            {
                return Some(v);
            }
            self.cur = Some(CommaValues::new(self.lines.next()?));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &[u8]) -> SipMessage {
        SipMessage::parse_lenient(Bytes::copy_from_slice(s)).expect("frames")
    }

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds, SIP/2.0/UDP h2;branch=z9hG4bK2\r\n\
v: SIP/2.0/TCP h3;branch=z9hG4bK3\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n\
X-Custom: one\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r\n";

    #[test]
    fn request_line_parts_are_exposed() {
        let m = msg(INVITE);
        assert!(m.is_request());
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.method_bytes(), Some(&b"INVITE"[..]));
        assert_eq!(m.request_uri_bytes(), Some(&b"sip:bob@biloxi.com"[..]));
        assert_eq!(m.version_bytes(), b"SIP/2.0");
        assert_eq!(m.status(), None);
        assert_eq!(m.start_line_bytes(), b"INVITE sip:bob@biloxi.com SIP/2.0");
    }

    #[test]
    fn status_line_parts_are_exposed() {
        let m = msg(b"SIP/2.0 180 Ringing Now\r\nVia: SIP/2.0/UDP h\r\n\r\n");
        assert!(m.is_response());
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason_bytes(), Some(&b"Ringing Now"[..]));
        assert_eq!(m.method(), None);
        let m = msg(b"SIP/2.0 100 \r\n\r\n");
        assert_eq!(m.reason_bytes(), Some(&b""[..]));
    }

    #[test]
    fn header_index_classifies_names_and_keeps_raw_values() {
        let m = msg(INVITE);
        assert_eq!(m.header_count(), 12);
        assert_eq!(m.header(HeaderName::MaxForwards), Some(&b"70"[..]));
        assert_eq!(m.header_line_count(HeaderName::Via), 2);
        assert_eq!(
            m.headers(HeaderName::Via).nth(1),
            Some(&b"SIP/2.0/TCP h3;branch=z9hG4bK3"[..])
        );
        assert_eq!(m.header_by_name(b"x-custom"), Some(&b"one"[..]));
        assert_eq!(m.header_by_name(b"V"), m.header(HeaderName::Via));
        assert_eq!(
            m.header(HeaderName::Route),
            Some(&b"<sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>"[..])
        );
        let l = m.header_line(0).expect("line 0");
        assert_eq!(
            &m.as_bytes()[l.line_range.clone()],
            &INVITE[35..35 + l.line_range.len()]
        );
        assert!(m.as_bytes()[l.line_range].ends_with(b"\r\n"));
    }

    #[test]
    fn list_values_span_lines_and_folding() {
        let m = msg(INVITE);
        let vias: Vec<_> = m.vias().map(|v| v.host().raw()).collect();
        assert_eq!(vias, vec![&b"pc33.atlanta.com"[..], b"h2", b"h3"]);
        let routes: Vec<_> = m.routes().map(|r| r.uri_raw()).collect();
        assert_eq!(
            routes,
            vec![&b"sip:p1.example.com;lr"[..], b"sip:p2.example.com;lr"]
        );
    }

    #[test]
    fn routing_accessors_read_the_typed_values() {
        let m = msg(INVITE);
        let v = m.top_via().expect("via");
        assert_eq!(v.branch(), Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(m.from_tag(), Some(&b"1928301774"[..]));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.call_id(), Some(&b"a84b4c76e66710@pc33.atlanta.com"[..]));
        let c = m.cseq().expect("cseq");
        assert_eq!((c.seq, c.method), (314159, Method::Invite));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(
            m.top_route().map(|r| r.uri_raw()),
            Some(&b"sip:p1.example.com;lr"[..])
        );
        assert_eq!(m.content_length(), Some(4));
        assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
        assert_eq!(m.body(), b"v=0\r");
    }

    #[test]
    fn trailing_octets_after_content_length_are_not_part_of_the_message() {
        let m = msg(b"OPTIONS sip:a SIP/2.0\r\nl: 2\r\n\r\nabGARBAGE");
        assert_eq!(m.body(), b"ab");
        assert!(m.as_bytes().ends_with(b"\r\n\r\nab"));
    }

    #[test]
    fn without_content_length_the_body_is_the_rest_of_the_datagram() {
        let m = msg(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\nbody bytes");
        assert_eq!(m.body(), b"body bytes");
    }

    #[test]
    fn leading_crlfs_are_skipped() {
        let m = msg(b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\n\r\n");
        assert_eq!(m.method(), Some(Method::Options));
        assert!(m.as_bytes().starts_with(b"OPTIONS"));
    }

    #[test]
    fn whitespace_before_colon_and_empty_values_are_indexed() {
        let m = msg(b"OPTIONS sip:a SIP/2.0\r\nTO :\r\n sip:x@y ;tag=1\r\ns :\r\nVia  : v\r\n\r\n");
        assert_eq!(m.header(HeaderName::To), Some(&b"sip:x@y ;tag=1"[..]));
        assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
        assert_eq!(m.header(HeaderName::Via), Some(&b"v"[..]));
        assert_eq!(m.to_tag(), Some(&b"1"[..]));
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let m = msg(b"OPTIONS sip:a SIP/2.0\nVia: SIP/2.0/UDP h\nl: 0\n\n");
        assert_eq!(m.header_count(), 2);
        assert_eq!(m.header(HeaderName::Via), Some(&b"SIP/2.0/UDP h"[..]));
        assert_eq!(m.body(), b"");
    }

    #[test]
    fn unframeable_input_is_rejected() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"INVITE",
            b"NOSPACE\r\n\r\n",
            b" x\r\n\r\n",
        ] {
            assert!(SipMessage::parse_lenient(Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn too_many_headers_are_rejected() {
        let mut m = b"OPTIONS sip:a SIP/2.0\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            m.extend_from_slice(b"X: y\r\n");
        }
        m.extend_from_slice(b"\r\n");
        let e = SipMessage::parse_lenient(Bytes::from(m))
            .err()
            .map(|e| e.kind());
        assert_eq!(e, Some(ParseErrorKind::TooManyHeaders));
    }
}
