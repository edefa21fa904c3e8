//! Header field names (RFC 3261 §20 and extensions), including compact forms (§7.3.3).

/// A known header field name. Compact forms map to the same variant as the full name
/// (`v` is [`Via`](HeaderName::Via), `i` is [`CallId`](HeaderName::CallId), ...). Names are
/// case-insensitive (RFC 3261 §7.3.1). Anything else is [`Other`](HeaderName::Other), to be
/// compared by raw name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is the header of the same name
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    AlertInfo,
    Allow,
    /// `Allow-Events` (RFC 6665), compact `u`.
    AllowEvents,
    AuthenticationInfo,
    Authorization,
    /// `Call-ID`, compact `i`.
    CallId,
    CallInfo,
    /// `Contact`, compact `m`.
    Contact,
    ContentDisposition,
    /// `Content-Encoding`, compact `e`.
    ContentEncoding,
    ContentLanguage,
    /// `Content-Length`, compact `l`.
    ContentLength,
    /// `Content-Type`, compact `c`.
    ContentType,
    CSeq,
    Date,
    ErrorInfo,
    /// `Event` (RFC 6665), compact `o`.
    Event,
    Expires,
    /// `From`, compact `f`.
    From,
    /// `Identity` (RFC 8224), compact `y`.
    Identity,
    InReplyTo,
    MaxForwards,
    MimeVersion,
    MinExpires,
    MinSe,
    Organization,
    PAssertedIdentity,
    PPreferredIdentity,
    Path,
    Priority,
    Privacy,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    /// `Refer-To` (RFC 3515), compact `r`.
    ReferTo,
    /// `Referred-By` (RFC 3892), compact `b`.
    ReferredBy,
    ReplyTo,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    ServiceRoute,
    /// `Session-Expires` (RFC 4028), compact `x`.
    SessionExpires,
    SipETag,
    SipIfMatch,
    /// `Subject`, compact `s`.
    Subject,
    SubscriptionState,
    /// `Supported`, compact `k`.
    Supported,
    Timestamp,
    /// `To`, compact `t`.
    To,
    Unsupported,
    UserAgent,
    /// `Via`, compact `v`.
    Via,
    Warning,
    WwwAuthenticate,
    /// Any other name: compare the raw name.
    Other,
}

impl HeaderName {
    /// Canonical (long) name as written by this crate.
    pub const fn as_str(self) -> &'static str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            AcceptEncoding => "Accept-Encoding",
            AcceptLanguage => "Accept-Language",
            AlertInfo => "Alert-Info",
            Allow => "Allow",
            AllowEvents => "Allow-Events",
            AuthenticationInfo => "Authentication-Info",
            Authorization => "Authorization",
            CallId => "Call-ID",
            CallInfo => "Call-Info",
            Contact => "Contact",
            ContentDisposition => "Content-Disposition",
            ContentEncoding => "Content-Encoding",
            ContentLanguage => "Content-Language",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            ErrorInfo => "Error-Info",
            Event => "Event",
            Expires => "Expires",
            From => "From",
            Identity => "Identity",
            InReplyTo => "In-Reply-To",
            MaxForwards => "Max-Forwards",
            MimeVersion => "MIME-Version",
            MinExpires => "Min-Expires",
            MinSe => "Min-SE",
            Organization => "Organization",
            PAssertedIdentity => "P-Asserted-Identity",
            PPreferredIdentity => "P-Preferred-Identity",
            Path => "Path",
            Priority => "Priority",
            Privacy => "Privacy",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RAck => "RAck",
            Reason => "Reason",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            ReplyTo => "Reply-To",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            RSeq => "RSeq",
            Server => "Server",
            ServiceRoute => "Service-Route",
            SessionExpires => "Session-Expires",
            SipETag => "SIP-ETag",
            SipIfMatch => "SIP-If-Match",
            Subject => "Subject",
            SubscriptionState => "Subscription-State",
            Supported => "Supported",
            Timestamp => "Timestamp",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            WwwAuthenticate => "WWW-Authenticate",
            Other => "",
        }
    }

    /// The compact form (RFC 3261 §7.3.3, RFC 3515, RFC 3892, RFC 4028, RFC 6665, RFC 8224),
    /// if the header has one.
    pub const fn compact(self) -> Option<u8> {
        use HeaderName::*;
        Some(match self {
            Via => b'v',
            CallId => b'i',
            Contact => b'm',
            From => b'f',
            To => b't',
            ContentLength => b'l',
            ContentType => b'c',
            Supported => b'k',
            Subject => b's',
            ContentEncoding => b'e',
            Event => b'o',
            AllowEvents => b'u',
            ReferTo => b'r',
            ReferredBy => b'b',
            SessionExpires => b'x',
            Identity => b'y',
            _ => return None,
        })
    }

    /// True for headers whose value is a comma-separated list that may be split across several
    /// header lines (RFC 3261 §7.3.1), e.g. Via, Route, Contact, Supported.
    pub const fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Accept
                | AcceptEncoding
                | AcceptLanguage
                | AlertInfo
                | Allow
                | AllowEvents
                | CallInfo
                | Contact
                | ContentEncoding
                | ContentLanguage
                | ErrorInfo
                | InReplyTo
                | PAssertedIdentity
                | PPreferredIdentity
                | Path
                | ProxyRequire
                | Reason
                | RecordRoute
                | Require
                | Route
                | ServiceRoute
                | Supported
                | Unsupported
                | Via
                | Warning
        )
    }

    /// Classifies a raw field name (case-insensitive, compact forms included).
    #[inline]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        let Some(&first) = name.first() else {
            return Other;
        };
        let f = first | 0x20;
        if name.len() == 1 {
            return match f {
                b'v' => Via,
                b'i' => CallId,
                b'm' => Contact,
                b'f' => From,
                b't' => To,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b's' => Subject,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'u' => AllowEvents,
                b'r' => ReferTo,
                b'b' => ReferredBy,
                b'x' => SessionExpires,
                b'y' => Identity,
                _ => Other,
            };
        }
        // Dispatch on length, then on the first letter; one case-insensitive compare confirms.
        for &cand in Self::candidates(name.len()) {
            let canon = cand.as_str().as_bytes();
            if canon.first().map(|c| c | 0x20) == Some(f) && name.eq_ignore_ascii_case(canon) {
                return cand;
            }
        }
        Other
    }

    /// Known names of a given length, most frequent first.
    #[inline]
    fn candidates(len: usize) -> &'static [HeaderName] {
        use HeaderName::*;
        match len {
            2 => &[To],
            3 => &[Via],
            4 => &[From, CSeq, Path, Date, RAck, RSeq],
            5 => &[Route, Allow, Event],
            6 => &[Accept, Server, Reason, MinSe],
            7 => &[CallId, Contact, Expires, Require, Subject, Warning, Privacy],
            8 => &[Priority, ReplyTo, ReferTo, SipETag, Identity],
            9 => &[Supported, CallInfo, Timestamp],
            10 => &[UserAgent, AlertInfo, ErrorInfo],
            11 => &[Unsupported, MinExpires, RetryAfter, InReplyTo, ReferredBy],
            12 => &[
                MaxForwards,
                ContentType,
                RecordRoute,
                AllowEvents,
                MimeVersion,
                Organization,
                SipIfMatch,
            ],
            13 => &[Authorization, ProxyRequire, ServiceRoute],
            14 => &[ContentLength],
            15 => &[AcceptEncoding, AcceptLanguage, SessionExpires],
            16 => &[ContentEncoding, WwwAuthenticate, ContentLanguage],
            18 => &[ProxyAuthenticate, SubscriptionState],
            19 => &[
                ProxyAuthorization,
                PAssertedIdentity,
                ContentDisposition,
                AuthenticationInfo,
            ],
            20 => &[PPreferredIdentity],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[HeaderName] = &[
        HeaderName::Accept,
        HeaderName::AcceptEncoding,
        HeaderName::AcceptLanguage,
        HeaderName::AlertInfo,
        HeaderName::Allow,
        HeaderName::AllowEvents,
        HeaderName::AuthenticationInfo,
        HeaderName::Authorization,
        HeaderName::CallId,
        HeaderName::CallInfo,
        HeaderName::Contact,
        HeaderName::ContentDisposition,
        HeaderName::ContentEncoding,
        HeaderName::ContentLanguage,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::CSeq,
        HeaderName::Date,
        HeaderName::ErrorInfo,
        HeaderName::Event,
        HeaderName::Expires,
        HeaderName::From,
        HeaderName::Identity,
        HeaderName::InReplyTo,
        HeaderName::MaxForwards,
        HeaderName::MimeVersion,
        HeaderName::MinExpires,
        HeaderName::MinSe,
        HeaderName::Organization,
        HeaderName::PAssertedIdentity,
        HeaderName::PPreferredIdentity,
        HeaderName::Path,
        HeaderName::Priority,
        HeaderName::Privacy,
        HeaderName::ProxyAuthenticate,
        HeaderName::ProxyAuthorization,
        HeaderName::ProxyRequire,
        HeaderName::RAck,
        HeaderName::Reason,
        HeaderName::RecordRoute,
        HeaderName::ReferTo,
        HeaderName::ReferredBy,
        HeaderName::ReplyTo,
        HeaderName::Require,
        HeaderName::RetryAfter,
        HeaderName::Route,
        HeaderName::RSeq,
        HeaderName::Server,
        HeaderName::ServiceRoute,
        HeaderName::SessionExpires,
        HeaderName::SipETag,
        HeaderName::SipIfMatch,
        HeaderName::Subject,
        HeaderName::SubscriptionState,
        HeaderName::Supported,
        HeaderName::Timestamp,
        HeaderName::To,
        HeaderName::Unsupported,
        HeaderName::UserAgent,
        HeaderName::Via,
        HeaderName::Warning,
        HeaderName::WwwAuthenticate,
    ];

    #[test]
    fn every_canonical_name_classifies_to_itself_in_any_case() {
        for &h in ALL {
            let name = h.as_str();
            assert_eq!(HeaderName::from_bytes(name.as_bytes()), h, "{name}");
            assert_eq!(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                h,
                "{name}"
            );
            assert_eq!(
                HeaderName::from_bytes(name.to_ascii_uppercase().as_bytes()),
                h,
                "{name}"
            );
        }
    }

    #[test]
    fn compact_forms_classify_to_the_long_name() {
        for &h in ALL {
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), h);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), h);
            }
        }
    }

    #[test]
    fn unknown_and_look_alike_names_are_other() {
        for n in [
            &b""[..],
            b"C%6Fntact",
            b"Vias",
            b"Contacts",
            b"X-Via",
            b"q",
            b"Max-Forward5",
            b"NewFangledHeader",
        ] {
            assert_eq!(HeaderName::from_bytes(n), HeaderName::Other);
        }
    }
}
