//! SIP message layer for geosip: zero-copy parser, lazy typed accessors, edit list (Kamailio's
//! "lumps"), response builder and stream framer. No I/O, no async, no `unsafe`.
//!
//! # Parsing
//!
//! A [`SipMessage`] owns a [`bytes::Bytes`] holding exactly the message (RFC 3261 §7). Nothing
//! is copied and nothing requires UTF-8.
//!
//! * [`SipMessage::parse`] = [`SipMessage::parse_lenient`] + [`SipMessage::validate`].
//! * `parse_lenient` frames the start line and the header section and builds the header index;
//!   it fails only when that is impossible ([`ParseError`]). A datagram with octets after
//!   Content-Length is cut at Content-Length (RFC 3261 §18.3, RFC 4475 §3.1.1.8).
//! * `validate` checks the syntax of the start line and of the headers a proxy/registrar
//!   relies on (Via, From, To, Call-ID, CSeq and its method, Max-Forwards, Content-Length,
//!   Contact, Expires, Date, Route/Record-Route/Path, option tags, Content-Type, auth headers).
//!   The split lets a server answer 400 to a request that frames but does not validate, with
//!   [`SipMessage::write_error_response_raw`].
//! * [`SipMessage::check_request`] does the semantic checks of Kamailio's `sanity` module and
//!   returns the status to answer ([`SanityError::status`]: 400, 416, 483, 505).
//!
//! [`ParseError::kind`] and [`SanityError::kind`] have `as_str()` names for metrics labels and
//! a suggested `status()`.
//!
//! # Start line and headers
//!
//! [`SipMessage::is_request`], [`SipMessage::method`] ([`Method`], case-sensitive, unknown
//! methods as [`Method::Other`] raw bytes), [`SipMessage::request_uri_bytes`],
//! [`SipMessage::status`], [`SipMessage::reason_bytes`].
//!
//! The header index is a `SmallVec` of up to [`INLINE_HEADERS`] entries inline (at most
//! [`MAX_HEADERS`]); each entry has a [`HeaderName`] (compact forms `v i m f t l c k s e o u r
//! b x y` included), the name, the trimmed raw value (folding kept) and the whole line range.
//! Look up by kind ([`SipMessage::header`], [`SipMessage::headers`]) or by any name,
//! case-insensitive and compact-aware ([`SipMessage::header_by_name`]). List headers split on
//! commas outside quotes and `<>`, across all their lines, with [`SipMessage::values`].
//!
//! # Typed accessors (borrowing the message)
//!
//! The routing headers are parsed once, during framing, and kept as positions in the message
//! (the way Kamailio hangs parsed headers off its message): [`SipMessage::top_via`],
//! [`SipMessage::from`], [`SipMessage::to`] (and their tags), [`SipMessage::top_route`],
//! [`SipMessage::cseq`], [`SipMessage::max_forwards`], [`SipMessage::content_length`] and
//! [`SipMessage::call_id`] cost O(1) however often they are called; `validate` reuses those
//! parses. Everything else is parsed on call.
//!
//! Parsing takes a one-pass path for the common shapes (`SIP/2.0/UDP host:port;branch=...`,
//! `<sip:user@host;param>`, parameters without LWS or quotes...) and the general parser for
//! anything else; both give the same result, which the crate's tests and fuzz targets check
//! (the `fuzzing` feature exposes `SipMessage::fuzz_check_fast_paths` for that).
//!
//! [`Via`] ([`SipMessage::top_via`], [`SipMessage::vias`]: transport, sent-by, branch,
//! received, [`Rport`], maddr, ttl), From/To as [`NameAddr`] (display name, URI, tag, params),
//! Call-ID, [`CSeq`], Max-Forwards, [`Contact`] (`*` or address; q, expires, `+sip.instance`,
//! reg-id), Expires, Route / Record-Route / Path, Authorization / Proxy-Authorization and
//! WWW-Authenticate / Proxy-Authenticate as [`AuthValue`] ([`DigestCredentials`],
//! [`DigestChallenge`]), Content-Length, Content-Type, Require / Proxy-Require / Supported /
//! Unsupported, User-Agent, and [`SipMessage::body`].
//!
//! [`Uri`] parses `sip:`, `sips:`, `tel:` (RFC 3966) and keeps other schemes raw: user,
//! password, [`Host`] (name, IPv4, IPv6 reference per RFC 5118 / RFC 5954), port, parameters
//! ([`Params`], case-insensitive), headers; [`percent_decode`] and [`unquote`] return
//! `Cow<[u8]>`.
//!
//! # Editing and serialising
//!
//! [`Edits`] records changes against original byte offsets (insert/remove top Via, set
//! Max-Forwards, add/remove top Route, add Record-Route, rewrite the Request-URI, add / remove
//! / replace header lines, replace the body with Content-Length fixed).
//! [`SipMessage::write_with`] copies every untouched byte exactly, in one pass, into a reused
//! `Vec<u8>` or `BytesMut`. See the [`Edits`] docs for the ordering rules.
//!
//! ```
//! use bytes::Bytes;
//! use sip_msg::{Edits, SipMessage};
//!
//! let raw = Bytes::from_static(b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
//! To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
//! Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
//! let msg = SipMessage::parse(raw)?;
//! assert_eq!(msg.top_via().and_then(|v| v.branch()), Some(&b"z9hG4bK1"[..]));
//!
//! let mut edits = Edits::new();
//! edits.insert_via(&msg, b"SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2");
//! edits.set_max_forwards(&msg, msg.max_forwards().unwrap_or(70).saturating_sub(1));
//! let mut out = Vec::new();
//! msg.write_with(&edits, &mut out);
//! let fwd = SipMessage::parse(out.into())?;
//! assert_eq!(fwd.max_forwards(), Some(69));
//! # Ok::<(), sip_msg::ParseError>(())
//! ```
//!
//! # Responses
//!
//! [`ResponseBuilder`] (via [`SipMessage::response`]) writes a response per RFC 3261 §8.2.6:
//! Via lines (with `received` / `rport` on the top one, RFC 3581), From, To (+ tag), Call-ID,
//! CSeq, extra headers, optional body, Content-Length.
//!
//! # Streams
//!
//! [`StreamFramer::decode`] cuts a TCP/TLS byte stream into [`Frame`]s (messages and RFC 5626
//! double-CRLF pings), requires Content-Length, and enforces [`FramerLimits`] (defaults 64 KiB
//! of headers, 1 MiB of body) with a [`FrameError`] carrying the status to answer (513, 413,
//! 400) and whether to close.
//!
//! # Robustness
//!
//! All parsing is hand-written over bytes with `memchr`; no input panics, recursion is never
//! used, and every cost is linear in the message size.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

mod addr;
mod auth;
mod edit;
mod error;
mod framer;
mod header;
mod message;
mod method;
mod params;
#[cfg(any(test, feature = "fuzzing"))]
mod reference;
mod response;
mod scan;
mod span;
mod typed;
mod uri;
mod validate;
mod via;

pub use addr::{InvalidNameAddr, NameAddr};
pub use auth::{
    AuthValue, Challenge, Credentials, DigestChallenge, DigestCredentials, InvalidAuth,
};
pub use edit::{Edits, WriteBuf};
pub use error::{ParseError, ParseErrorKind, SanityError, SanityErrorKind};
pub use framer::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES, Frame, FrameError, FrameErrorKind,
    FramerLimits, StreamFramer,
};
pub use header::HeaderName;
pub use message::{HeaderLine, INLINE_HEADERS, MAX_HEADERS, SipMessage, Values};
pub use method::Method;
pub use params::{Param, ParamIter, Params};
pub use response::{ResponseBuilder, reason_phrase};
pub use scan::{CommaValues, is_token, percent_decode, trim_lws, unquote};
pub use typed::{CSeq, Contact, InvalidValue};
pub use uri::{Host, HostKind, InvalidUri, Scheme, Uri};
pub use via::{BRANCH_MAGIC_COOKIE, InvalidVia, Rport, Via};
