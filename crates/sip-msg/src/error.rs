//! Errors: [`ParseError`] (framing and syntax) and [`SanityError`] (semantic checks of a request
//! that parsed, the `sanity` module's job in Kamailio).
//!
//! Both carry a `kind()` whose [`as_str`](ParseErrorKind::as_str) is a stable `snake_case`
//! label for metrics, and a `status()`: the SIP status code a server should answer to a
//! *request* with that defect (responses with defects are dropped, RFC 3261 §18.1.2).

use std::fmt;

use crate::header::HeaderName;

/// What was wrong with a message that did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// No bytes, or only CRLFs.
    Empty,
    /// More bytes than the parser accepts (offsets are 32-bit).
    TooLarge,
    /// The header section does not end (no line end after the start line).
    Truncated,
    /// The start line is neither a Request-Line nor a Status-Line (RFC 3261 §7.1, §7.2).
    StartLine,
    /// The SIP-Version is well formed but not `SIP/2.0` (answer 505).
    UnsupportedVersion,
    /// The Request-URI is malformed (RFC 3261 §25.1 `Request-URI`).
    RequestUri,
    /// The Status-Code is not three digits (RFC 3261 §7.2).
    StatusCode,
    /// More header lines than [`MAX_HEADERS`](crate::MAX_HEADERS).
    TooManyHeaders,
    /// A header line without a colon, or with an invalid field name.
    HeaderLine,
    /// The header section is not closed by an empty line.
    MissingEmptyLine,
    /// A Via value is malformed (RFC 3261 §20.42).
    Via,
    /// The From value is malformed (RFC 3261 §20.20).
    From,
    /// The To value is malformed (RFC 3261 §20.39).
    To,
    /// The Call-ID value is malformed (RFC 3261 §20.8).
    CallId,
    /// The CSeq value is malformed or out of range (RFC 3261 §20.16).
    CSeq,
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5).
    CSeqMethodMismatch,
    /// Max-Forwards is not a number in 0..=255 (RFC 3261 §20.22).
    MaxForwards,
    /// Content-Length is not a number (RFC 3261 §20.14).
    ContentLength,
    /// Content-Length says more bytes than the datagram holds (RFC 3261 §18.3).
    ContentLengthMismatch,
    /// A Contact value is malformed (RFC 3261 §20.10).
    Contact,
    /// Expires is not `delta-seconds` (RFC 3261 §20.19).
    Expires,
    /// Date is not an RFC 1123 date in GMT (RFC 3261 §20.17).
    Date,
    /// A Route, Record-Route or Path value is malformed (RFC 3261 §20.34, §20.30; RFC 3327).
    RouteSet,
    /// A Require / Proxy-Require / Supported / Unsupported value is not a token list.
    OptionTags,
    /// A Content-Type value is not a media-type (RFC 3261 §20.15).
    ContentType,
    /// A Authorization / Proxy-Authorization / WWW-Authenticate / Proxy-Authenticate value is
    /// malformed (RFC 3261 §20.7, §20.28, §20.27, §20.44).
    Auth,
}

impl ParseErrorKind {
    /// Stable `snake_case` name, usable as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLarge => "too_large",
            Self::Truncated => "truncated",
            Self::StartLine => "start_line",
            Self::UnsupportedVersion => "unsupported_version",
            Self::RequestUri => "request_uri",
            Self::StatusCode => "status_code",
            Self::TooManyHeaders => "too_many_headers",
            Self::HeaderLine => "header_line",
            Self::MissingEmptyLine => "missing_empty_line",
            Self::Via => "via",
            Self::From => "from",
            Self::To => "to",
            Self::CallId => "call_id",
            Self::CSeq => "cseq",
            Self::CSeqMethodMismatch => "cseq_method_mismatch",
            Self::MaxForwards => "max_forwards",
            Self::ContentLength => "content_length",
            Self::ContentLengthMismatch => "content_length_mismatch",
            Self::Contact => "contact",
            Self::Expires => "expires",
            Self::Date => "date",
            Self::RouteSet => "route_set",
            Self::OptionTags => "option_tags",
            Self::ContentType => "content_type",
            Self::Auth => "auth",
        }
    }

    /// Suggested status for a request with this defect: 505 for a foreign SIP version, 513 for
    /// an oversized message, 400 otherwise.
    pub const fn status(self) -> u16 {
        match self {
            Self::UnsupportedVersion => 505,
            Self::TooLarge => 513,
            _ => 400,
        }
    }

    /// Human-readable description, also used as the reason phrase of a 400.
    pub const fn description(self) -> &'static str {
        match self {
            Self::Empty => "empty message",
            Self::TooLarge => "message too large",
            Self::Truncated => "header section truncated",
            Self::StartLine => "malformed start line",
            Self::UnsupportedVersion => "unsupported SIP version",
            Self::RequestUri => "malformed Request-URI",
            Self::StatusCode => "malformed status code",
            Self::TooManyHeaders => "too many header fields",
            Self::HeaderLine => "malformed header line",
            Self::MissingEmptyLine => "header section not terminated by an empty line",
            Self::Via => "malformed Via",
            Self::From => "malformed From",
            Self::To => "malformed To",
            Self::CallId => "malformed Call-ID",
            Self::CSeq => "malformed CSeq",
            Self::CSeqMethodMismatch => "CSeq method does not match the request method",
            Self::MaxForwards => "malformed Max-Forwards",
            Self::ContentLength => "malformed Content-Length",
            Self::ContentLengthMismatch => "Content-Length larger than the message body",
            Self::Contact => "malformed Contact",
            Self::Expires => "malformed Expires",
            Self::Date => "malformed Date",
            Self::RouteSet => "malformed Route, Record-Route or Path",
            Self::OptionTags => "malformed option-tag list",
            Self::ContentType => "malformed Content-Type",
            Self::Auth => "malformed authentication header",
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that could not be framed ([`SipMessage::parse_lenient`](crate::SipMessage::parse_lenient))
/// or did not validate ([`SipMessage::validate`](crate::SipMessage::validate)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    kind: ParseErrorKind,
    offset: u32,
}

impl ParseError {
    /// Builds an error of `kind` found at byte `offset` of the message.
    pub fn new(kind: ParseErrorKind, offset: usize) -> Self {
        ParseError {
            kind,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// Byte offset in the message where the defect was found (start of the line or value).
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    /// Suggested SIP status for a request with this defect (see [`ParseErrorKind::status`]).
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind.description(), self.offset)
    }
}

impl std::error::Error for ParseError {}

/// What a syntactically valid request lacks (the checks of Kamailio's `sanity` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SanityErrorKind {
    /// [`check_request`](crate::SipMessage::check_request) was called on a response.
    NotARequest,
    /// A mandatory header (To, From, Call-ID, CSeq, Via; RFC 3261 §8.1.1) is missing.
    MissingHeader,
    /// A header that takes one value appears more than once, or carries a list
    /// (RFC 3261 §7.3.1; RFC 4475 §3.3.8, §3.3.9).
    DuplicateHeader,
    /// The Request-URI scheme is not `sip`, `sips` or `tel` (RFC 3261 §8.2.2.1: 416).
    UnsupportedUriScheme,
    /// The SIP-Version is not 2.0 (RFC 3261 §8.2.2: 505 is not applicable here, see §21.5.20).
    UnsupportedVersion,
    /// Max-Forwards is 0 (RFC 3261 §16.3 step 2: 483). Reported last, so a server that is
    /// itself the target of the request (e.g. OPTIONS) can ignore it.
    TooManyHops,
}

impl SanityErrorKind {
    /// Stable `snake_case` name, usable as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotARequest => "not_a_request",
            Self::MissingHeader => "missing_header",
            Self::DuplicateHeader => "duplicate_header",
            Self::UnsupportedUriScheme => "unsupported_uri_scheme",
            Self::UnsupportedVersion => "unsupported_version",
            Self::TooManyHops => "too_many_hops",
        }
    }

    /// Status to answer: 416, 505, 483, or 400.
    pub const fn status(self) -> u16 {
        match self {
            Self::UnsupportedUriScheme => 416,
            Self::UnsupportedVersion => 505,
            Self::TooManyHops => 483,
            _ => 400,
        }
    }
}

impl fmt::Display for SanityErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that parsed but must not be processed; answer with [`status`](Self::status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanityError {
    kind: SanityErrorKind,
    header: Option<HeaderName>,
}

impl SanityError {
    /// Builds an error, optionally naming the header concerned.
    pub fn new(kind: SanityErrorKind, header: Option<HeaderName>) -> Self {
        SanityError { kind, header }
    }

    /// What was wrong.
    pub fn kind(&self) -> SanityErrorKind {
        self.kind
    }

    /// The header concerned, for [`MissingHeader`](SanityErrorKind::MissingHeader) and
    /// [`DuplicateHeader`](SanityErrorKind::DuplicateHeader).
    pub fn header(&self) -> Option<HeaderName> {
        self.header
    }

    /// SIP status code to answer the request with.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// Reason phrase for the response.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            SanityErrorKind::NotARequest => "Not a request",
            SanityErrorKind::MissingHeader => "Missing mandatory header",
            SanityErrorKind::DuplicateHeader => "Duplicate header",
            SanityErrorKind::UnsupportedUriScheme => "Unsupported URI Scheme",
            SanityErrorKind::UnsupportedVersion => "Version Not Supported",
            SanityErrorKind::TooManyHops => "Too Many Hops",
        }
    }
}

impl fmt::Display for SanityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.header {
            Some(h) => write!(f, "{}: {}", self.reason(), h.as_str()),
            None => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for SanityError {}
