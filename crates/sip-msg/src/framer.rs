//! Stream framing for TCP / TLS / WebSocket-less streams (RFC 3261 §18.3, RFC 5626 §4.4.1).
//!
//! Like a `tokio_util::codec::Decoder` but without tokio: feed bytes into a `BytesMut`, call
//! [`StreamFramer::decode`] until it returns `Ok(None)`.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::header::HeaderName;
use crate::scan::{is_token_byte, parse_u64, trim_lws};

/// Default [`FramerLimits::max_header_bytes`]: 64 KiB, the largest a UDP datagram can carry.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default [`FramerLimits::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Size limits of a [`StreamFramer`]. Together they bound what one connection may buffer:
/// `max_header_bytes + max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerLimits {
    /// Most bytes from the start line to the empty line included.
    pub max_header_bytes: usize,
    /// Largest Content-Length accepted.
    pub max_body_bytes: usize,
}

impl Default for FramerLimits {
    fn default() -> Self {
        FramerLimits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// What [`StreamFramer::decode`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete message (start line, headers, empty line, Content-Length body bytes),
    /// ready for [`SipMessage::parse`](crate::SipMessage::parse).
    Message(Bytes),
    /// A double-CRLF keep-alive "ping" (RFC 5626 §4.4.1): answer with a single CRLF "pong".
    Ping,
}

/// Why a stream can no longer be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameErrorKind {
    /// The header section exceeds `max_header_bytes` (513).
    HeadersTooLarge,
    /// Content-Length exceeds `max_body_bytes` (413).
    BodyTooLarge,
    /// No Content-Length: mandatory on streams (RFC 3261 §18.3, §20.14) (400).
    MissingContentLength,
    /// Content-Length not a number, or several different values (400).
    BadContentLength,
}

impl FrameErrorKind {
    /// Stable `snake_case` name, usable as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HeadersTooLarge => "headers_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::MissingContentLength => "missing_content_length",
            Self::BadContentLength => "bad_content_length",
        }
    }
}

/// A framing failure: answer `status` if the head was a request, then close the connection
/// when [`close`](Self::close) says so (the framer cannot find the next message boundary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    kind: FrameErrorKind,
    status: u16,
    close: bool,
    head: Option<Bytes>,
}

impl FrameError {
    /// What went wrong.
    pub fn kind(&self) -> FrameErrorKind {
        self.kind
    }

    /// SIP status to answer: 513 Message Too Large, 413 Request Entity Too Large, or 400.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// True when the connection must be closed after answering.
    pub fn close(&self) -> bool {
        self.close
    }

    /// The start line and headers (up to and including the empty line) when they were
    /// complete, so that a response can be built with
    /// [`SipMessage::parse_lenient`](crate::SipMessage::parse_lenient) and
    /// [`write_error_response_raw`](crate::SipMessage::write_error_response_raw).
    pub fn head(&self) -> Option<&Bytes> {
        self.head.as_ref()
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream framing error: {} ({})",
            self.kind.as_str(),
            self.status
        )
    }
}

impl std::error::Error for FrameError {}

/// Splits a byte stream into SIP messages and keep-alives.
///
/// Scans incrementally (bytes already searched for the end of the header section are not
/// searched again), never buffers more than the limits allow, and after a body-too-large
/// error discards that body so the connection may stay open.
#[derive(Debug, Clone, Default)]
pub struct StreamFramer {
    limits: FramerLimits,
    /// Bytes of the current head already scanned for the empty line.
    scanned: usize,
    /// Body bytes still to drop after a [`FrameErrorKind::BodyTooLarge`].
    discard: u64,
    /// Total length of the current message once its head has been framed.
    pending: Option<usize>,
}

impl StreamFramer {
    /// A framer with [`FramerLimits::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer with explicit limits.
    pub fn with_limits(limits: FramerLimits) -> Self {
        StreamFramer {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> FramerLimits {
        self.limits
    }

    /// Takes the next frame from the front of `buf`. `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.discard > 0 {
                let n = (buf.len() as u64).min(self.discard) as usize;
                buf.advance(n);
                self.discard -= n as u64;
                if self.discard > 0 {
                    return Ok(None);
                }
            }
            if let Some(total) = self.pending {
                if buf.len() < total {
                    return Ok(None);
                }
                self.pending = None;
                return Ok(Some(Frame::Message(buf.split_to(total).freeze())));
            }
            // Keep-alives and CRLFs between messages (RFC 3261 §7.5, RFC 5626 §4.4.1).
            if self.scanned == 0 {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'\r') | Some(b'\n') => {
                        if buf.starts_with(b"\r\n\r\n") {
                            buf.advance(4);
                            return Ok(Some(Frame::Ping));
                        }
                        if buf.len() < 4 && b"\r\n\r\n".starts_with(&buf[..]) {
                            // Could still become a ping.
                            return Ok(None);
                        }
                        // A lone CRLF (e.g. a pong) or stray LF: skip it.
                        let n = if buf.starts_with(b"\r\n") { 2 } else { 1 };
                        buf.advance(n);
                        continue;
                    }
                    Some(_) => {}
                }
            }
            return self.decode_message(buf);
        }
    }

    fn decode_message(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        // Find the empty line: "\n\r\n" or "\n\n", searching only the new bytes.
        let from = self.scanned.saturating_sub(2);
        let limit = self.limits.max_header_bytes;
        let mut head_end = None;
        let mut i = from;
        while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
            let nl = i + off;
            match (buf.get(nl + 1), buf.get(nl + 2)) {
                (Some(b'\n'), _) => {
                    head_end = Some(nl + 2);
                    break;
                }
                (Some(b'\r'), Some(b'\n')) => {
                    head_end = Some(nl + 3);
                    break;
                }
                (Some(b'\r'), None) | (None, _) => break,
                _ => i = nl + 1,
            }
        }
        let Some(head_end) = head_end else {
            self.scanned = buf.len();
            if buf.len() > limit {
                let head = partial_head(buf, limit);
                return Err(self.fail(FrameErrorKind::HeadersTooLarge, 513, true, head));
            }
            return Ok(None);
        };
        if head_end > limit {
            let head = partial_head(buf, limit);
            return Err(self.fail(FrameErrorKind::HeadersTooLarge, 513, true, head));
        }
        let cl = match content_length(&buf[..head_end]) {
            Ok(Some(cl)) => cl,
            Ok(None) => {
                let head = buf.split_to(head_end).freeze();
                return Err(self.fail(FrameErrorKind::MissingContentLength, 400, true, Some(head)));
            }
            Err(()) => {
                let head = buf.split_to(head_end).freeze();
                return Err(self.fail(FrameErrorKind::BadContentLength, 400, true, Some(head)));
            }
        };
        if cl > self.limits.max_body_bytes as u64 {
            let head = buf.split_to(head_end).freeze();
            self.discard = cl;
            return Err(self.fail(FrameErrorKind::BodyTooLarge, 413, false, Some(head)));
        }
        let total = head_end + cl as usize;
        self.scanned = 0;
        if buf.len() < total {
            self.pending = Some(total);
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        Ok(Some(Frame::Message(buf.split_to(total).freeze())))
    }

    fn fail(
        &mut self,
        kind: FrameErrorKind,
        status: u16,
        close: bool,
        head: Option<Bytes>,
    ) -> FrameError {
        self.scanned = 0;
        FrameError {
            kind,
            status,
            close,
            head,
        }
    }
}

/// The complete header lines among the first `limit` bytes, closed by an empty line, so that
/// a request whose header section is too large can still be answered 513 with its Via, From,
/// To, Call-ID and CSeq (when they came before the excess). `None` without a whole line.
fn partial_head(buf: &BytesMut, limit: usize) -> Option<Bytes> {
    let upto = &buf[..limit.min(buf.len())];
    let last_nl = memchr::memrchr(b'\n', upto)?;
    let mut head = Vec::with_capacity(last_nl + 3);
    head.extend_from_slice(&upto[..=last_nl]);
    head.extend_from_slice(b"\r\n");
    Some(Bytes::from(head))
}

/// Content-Length of a header section: `Ok(None)` when absent, `Err` when malformed or when
/// several lines disagree.
fn content_length(head: &[u8]) -> Result<Option<u64>, ()> {
    let mut found: Option<u64> = None;
    let mut pos = memchr::memchr(b'\n', head).map_or(head.len(), |p| p + 1);
    while pos < head.len() {
        let line_end = memchr::memchr(b'\n', &head[pos..]).map_or(head.len(), |p| pos + p + 1);
        let line = &head[pos..line_end];
        pos = line_end;
        let first = line.first().map_or(0, |c| c | 0x20);
        if first != b'l' && first != b'c' {
            continue;
        }
        let name_end = line
            .iter()
            .position(|&b| !is_token_byte(b))
            .unwrap_or(line.len());
        if HeaderName::from_bytes(&line[..name_end]) != HeaderName::ContentLength {
            continue;
        }
        let rest = trim_lws(&line[name_end..]);
        let Some(value) = rest.strip_prefix(b":") else {
            return Err(());
        };
        // A folded Content-Length would need the continuation lines; reject it.
        let v = trim_lws(value);
        let n = parse_u64(v).filter(|_| v.len() <= 19).ok_or(())?;
        match found {
            Some(prev) if prev != n => return Err(()),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    fn feed(f: &mut StreamFramer, buf: &mut BytesMut) -> Vec<Result<Frame, FrameError>> {
        let mut out = Vec::new();
        loop {
            match f.decode(buf) {
                Ok(Some(fr)) => out.push(Ok(fr)),
                Ok(None) => break,
                Err(e) => {
                    let close = e.close();
                    out.push(Err(e));
                    if close {
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn messages_split_across_reads_are_reassembled() {
        let mut f = StreamFramer::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let two = [MSG, MSG].concat();
        for chunk in two.chunks(7) {
            buf.extend_from_slice(chunk);
            got.extend(feed(&mut f, &mut buf));
        }
        assert_eq!(
            got,
            vec![
                Ok(Frame::Message(Bytes::from_static(MSG))),
                Ok(Frame::Message(Bytes::from_static(MSG)))
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn double_crlf_is_a_ping_and_a_lone_crlf_is_skipped() {
        let mut f = StreamFramer::new();
        let mut buf = BytesMut::from(&b"\r\n\r\n\r\n"[..]);
        buf.extend_from_slice(MSG);
        let got = feed(&mut f, &mut buf);
        assert_eq!(
            got,
            vec![Ok(Frame::Ping), Ok(Frame::Message(Bytes::from_static(MSG)))]
        );
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(f.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\r\n");
        assert_eq!(f.decode(&mut buf), Ok(Some(Frame::Ping)));
    }

    #[test]
    fn missing_content_length_is_a_400_that_closes() {
        let mut f = StreamFramer::new();
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"[..]);
        let e = f.decode(&mut buf).expect_err("no CL");
        assert_eq!(
            (e.kind(), e.status(), e.close()),
            (FrameErrorKind::MissingContentLength, 400, true)
        );
        assert!(e.head().is_some());
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let mut f = StreamFramer::new();
        let mut buf = BytesMut::from(
            &b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\nhello"[..],
        );
        let e = f.decode(&mut buf).expect_err("conflict");
        assert_eq!(e.kind(), FrameErrorKind::BadContentLength);
    }

    #[test]
    fn oversized_headers_are_a_513_without_unbounded_buffering() {
        let mut f = StreamFramer::with_limits(FramerLimits {
            max_header_bytes: 100,
            max_body_bytes: 10,
        });
        let mut buf = BytesMut::from(&b"OPTIONS sip:a@b SIP/2.0\r\n"[..]);
        assert_eq!(f.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[b'X'; 200]);
        let e = f.decode(&mut buf).expect_err("too big");
        assert_eq!((e.status(), e.close()), (513, true));
        // The complete lines before the excess come back, closed, to answer the 513 with.
        assert_eq!(
            e.head().map(|h| &h[..]),
            Some(&b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"[..])
        );
    }

    #[test]
    fn oversized_body_is_a_413_and_the_body_is_discarded() {
        let mut f = StreamFramer::with_limits(FramerLimits {
            max_header_bytes: 1000,
            max_body_bytes: 3,
        });
        let small: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";
        let mut buf = BytesMut::from(MSG);
        buf.extend_from_slice(small);
        let e = f.decode(&mut buf).expect_err("413");
        assert_eq!(
            (e.kind(), e.status(), e.close()),
            (FrameErrorKind::BodyTooLarge, 413, false)
        );
        assert!(e.head().is_some_and(|h| h.ends_with(b"\r\n\r\n")));
        // The oversized body is dropped and the next message frames normally.
        assert_eq!(
            f.decode(&mut buf),
            Ok(Some(Frame::Message(Bytes::from_static(small))))
        );
    }
}
