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
    /// Number of variants (for tables indexed by `name as usize`).
    pub(crate) const COUNT: usize = HeaderName::Other as usize + 1;

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
        if name.is_empty() || name.len() > 24 {
            return HeaderName::Other;
        }
        Self::classify(name.len(), name_key(name, 0, name.len()))
    }

    /// Classifies a name from its length and [`name_key`].
    #[inline]
    pub(crate) fn classify(len: usize, key: [u64; 3]) -> HeaderName {
        use HeaderName::*;
        if len == 1 {
            return match key[0] as u8 {
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
        // Dispatch on length, then compare the case-folded name 8 bytes at a time.
        for &(h, k) in Self::candidates(len) {
            if k[0] == key[0] && k[1] == key[1] && k[2] == key[2] {
                return h;
            }
        }
        Other
    }

    /// Known names of a given length with their folded keys, most frequent first.
    #[inline]
    pub(crate) fn candidates(len: usize) -> &'static [(HeaderName, [u64; 3])] {
        macro_rules! table {
            ($($h:ident),*) => {{
                const T: &[(HeaderName, [u64; 3])] =
                    &[$((HeaderName::$h, const_key(HeaderName::$h.as_str().as_bytes()))),*];
                T
            }};
        }
        match len {
            2 => table!(To),
            3 => table!(Via),
            4 => table!(From, CSeq, Path, Date, RAck, RSeq),
            5 => table!(Route, Allow, Event),
            6 => table!(Accept, Server, Reason, MinSe),
            7 => table!(CallId, Contact, Expires, Require, Subject, Warning, Privacy),
            8 => table!(Priority, ReplyTo, ReferTo, SipETag, Identity),
            9 => table!(Supported, CallInfo, Timestamp),
            10 => table!(UserAgent, AlertInfo, ErrorInfo),
            11 => table!(Unsupported, MinExpires, RetryAfter, InReplyTo, ReferredBy),
            12 => table!(
                MaxForwards,
                ContentType,
                RecordRoute,
                AllowEvents,
                MimeVersion,
                Organization,
                SipIfMatch
            ),
            13 => table!(Authorization, ProxyRequire, ServiceRoute),
            14 => table!(ContentLength),
            15 => table!(AcceptEncoding, AcceptLanguage, SessionExpires),
            16 => table!(ContentEncoding, WwwAuthenticate, ContentLanguage),
            18 => table!(ProxyAuthenticate, SubscriptionState),
            19 => table!(
                ProxyAuthorization,
                PAssertedIdentity,
                ContentDisposition,
                AuthenticationInfo
            ),
            20 => table!(PPreferredIdentity),
            _ => &[],
        }
    }
}

/// Byte mask keeping the low `len` bytes of a word (`len` in 1..=8).
#[inline(always)]
const fn low_bytes(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (len * 8)) - 1
    }
}

/// ASCII case folding of a name word: setting bit 5 lower-cases letters. Among `token`
/// characters only letters are changed onto letters (`_` becomes DEL), so two token names fold
/// equal exactly when they are equal ignoring ASCII case.
#[inline(always)]
const fn fold(w: u64, len: usize) -> u64 {
    (w | 0x2020_2020_2020_2020) & low_bytes(len)
}

const fn const_key(name: &[u8]) -> [u64; 3] {
    let mut k = [0u64; 3];
    let mut i = 0;
    while i < name.len() && i < 24 {
        k[i / 8] |= (name[i] as u64) << ((i % 8) * 8);
        i += 1;
    }
    let mut j = 0;
    while j < 3 {
        let start = j * 8;
        if start < name.len() {
            let len = if name.len() - start > 8 {
                8
            } else {
                name.len() - start
            };
            k[j] = fold(k[j], len);
        }
        j += 1;
    }
    k
}

/// Folded key of a name of `len` bytes (1..=24) from the raw words that hold it.
#[inline(always)]
pub(crate) fn key_from_words(words: [u64; 3], len: usize) -> [u64; 3] {
    let mut k = [0u64; 3];
    let mut j = 0;
    while j < 3 && j * 8 < len {
        let n = (len - j * 8).min(8);
        let w = words[j] & low_bytes(n);
        if has_cr(w) {
            return [u64::MAX; 3];
        }
        k[j] = fold(w, n);
        j += 1;
    }
    k
}

/// Folded key of the `len`-byte name starting at `start` of `buf` (`len` <= 24). Loads whole
/// words straight from the message when the bytes after the name are there (they always are
/// for a header line, which goes on with `:` and the value).
#[inline(always)]
pub(crate) fn name_key(buf: &[u8], start: usize, len: usize) -> [u64; 3] {
    let mut k = [0u64; 3];
    let mut j = 0;
    while j < 3 && j * 8 < len {
        let off = start + j * 8;
        let n = (len - j * 8).min(8);
        let w = if off + 8 <= buf.len() {
            crate::scan::load8(buf, off)
        } else {
            let mut a = [0u8; 8];
            for (d, s) in a.iter_mut().zip(buf.get(off..off + n).unwrap_or(&[])) {
                *d = *s;
            }
            u64::from_le_bytes(a)
        };
        // A CR folds onto '-': make such a name match nothing.
        if has_cr(w & low_bytes(n)) {
            return [u64::MAX; 3];
        }
        k[j] = fold(w, n);
        j += 1;
    }
    k
}

#[inline(always)]
fn has_cr(w: u64) -> bool {
    let x = w ^ 0x0d0d_0d0d_0d0d_0d0d;
    x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
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
