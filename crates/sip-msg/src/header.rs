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
        Self::classify_words(name_words(name, 0, name.len()), name.len())
    }

    /// Classifies a name of `len` bytes (1..=24) from the raw little-endian words that hold
    /// it (bytes past `len` may be anything).
    ///
    /// One multiplicative hash of the case-folded words picks the only candidate, which is
    /// then compared in full: about 20 instructions whatever the name.
    #[inline(always)]
    pub(crate) fn classify_words(words: [u64; 3], len: usize) -> HeaderName {
        if len == 1 {
            return COMPACT[words[0] as u8 as usize];
        }
        // Most names fit one word (Via, From, To, CSeq, Route, Contact, Call-ID...): then
        // the other two words of the key are zero, for the candidate as for the name.
        if len <= 8 {
            let k0 = fold(words[0]) & LOW[len];
            let h = SLOTS[slot(k0, 0, 0, len)];
            let e = &ENTRIES[h as usize];
            return if e.len as usize == len && e.key[0] == k0 {
                h
            } else {
                HeaderName::Other
            };
        }
        let k0 = fold(words[0]);
        let k1 = fold(words[1]) & LOW[(len - 8).min(8)];
        let k2 = fold(words[2]) & LOW[len.saturating_sub(16).min(8)];
        let h = SLOTS[slot(k0, k1, k2, len)];
        let e = &ENTRIES[h as usize];
        if e.len as usize == len && (e.key[0] ^ k0 | e.key[1] ^ k1 | e.key[2] ^ k2) == 0 {
            h
        } else {
            HeaderName::Other
        }
    }

    /// Every variant but [`Other`](HeaderName::Other), in declaration order.
    pub(crate) const ALL: [HeaderName; HeaderName::COUNT - 1] = {
        use HeaderName::*;
        [
            Accept,
            AcceptEncoding,
            AcceptLanguage,
            AlertInfo,
            Allow,
            AllowEvents,
            AuthenticationInfo,
            Authorization,
            CallId,
            CallInfo,
            Contact,
            ContentDisposition,
            ContentEncoding,
            ContentLanguage,
            ContentLength,
            ContentType,
            CSeq,
            Date,
            ErrorInfo,
            Event,
            Expires,
            From,
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
            ReferTo,
            ReferredBy,
            ReplyTo,
            Require,
            RetryAfter,
            Route,
            RSeq,
            Server,
            ServiceRoute,
            SessionExpires,
            SipETag,
            SipIfMatch,
            Subject,
            SubscriptionState,
            Supported,
            Timestamp,
            To,
            Unsupported,
            UserAgent,
            Via,
            Warning,
            WwwAuthenticate,
        ]
    };
}

/// `LOW[n]` keeps the low `n` bytes of a word.
const LOW: [u64; 9] = {
    let mut t = [0u64; 9];
    let mut n = 1;
    while n <= 8 {
        t[n] = u64::MAX >> ((8 - n) * 8);
        n += 1;
    }
    t
};

/// ASCII case folding of a name word: bit 6 of each byte (set for letters, clear for `-`,
/// digits and control bytes) is copied into bit 5, which lower-cases letters and leaves
/// everything else alone. A byte folds onto a letter only from that letter in either case, and
/// onto `-` only from `-` (a plain `| 0x20` would also turn CR into `-`), so a name folds equal
/// to a known name exactly when it is equal ignoring ASCII case.
#[inline(always)]
const fn fold(w: u64) -> u64 {
    w | ((w >> 1) & 0x2020_2020_2020_2020)
}

/// Folded key of a `len`-byte name (1..=24) held in `words`; bytes past the name are zeroed.
const fn fold_key(words: [u64; 3], len: usize) -> [u64; 3] {
    const fn lo(n: usize) -> u64 {
        LOW[if n > 8 { 8 } else { n }]
    }
    [
        fold(words[0]) & lo(len),
        fold(words[1]) & lo(len.saturating_sub(8)),
        fold(words[2]) & lo(len.saturating_sub(16)),
    ]
}

/// Multiplier of the perfect hash below: no two known names (of 2 to 24 bytes) share a slot.
/// Found by search; the table builder refuses to compile if a name is added that collides.
const HASH_MUL: u64 = 0xcf8f_265a_ee20_856d;
const SLOT_BITS: u32 = 7;

#[inline(always)]
const fn slot(k0: u64, k1: u64, k2: u64, len: usize) -> usize {
    let x = k0 ^ k1.rotate_left(21) ^ k2.rotate_left(42) ^ len as u64;
    (x.wrapping_mul(HASH_MUL) >> (64 - SLOT_BITS)) as usize
}

/// What a known name looks like once folded.
struct NameEntry {
    key: [u64; 3],
    len: u8,
}

const fn name_bytes_words(name: &[u8]) -> [u64; 3] {
    let mut w = [0u64; 3];
    let mut i = 0;
    while i < name.len() && i < 24 {
        w[i / 8] |= (name[i] as u64) << ((i % 8) * 8);
        i += 1;
    }
    w
}

static ENTRIES: [NameEntry; HeaderName::COUNT] = {
    const NONE: NameEntry = NameEntry {
        key: [0; 3],
        len: 0,
    };
    let mut t = [NONE; HeaderName::COUNT];
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let h = HeaderName::ALL[i];
        let name = h.as_str().as_bytes();
        t[h as usize] = NameEntry {
            key: fold_key(name_bytes_words(name), name.len()),
            len: name.len() as u8,
        };
        i += 1;
    }
    t
};

static SLOTS: [HeaderName; 1 << SLOT_BITS] = {
    let mut t = [HeaderName::Other; 1 << SLOT_BITS];
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let h = HeaderName::ALL[i];
        let name = h.as_str().as_bytes();
        let k = fold_key(name_bytes_words(name), name.len());
        let s = slot(k[0], k[1], k[2], name.len());
        assert!(
            t[s] as u8 == HeaderName::Other as u8,
            "header name hash collision: pick another HASH_MUL"
        );
        t[s] = h;
        i += 1;
    }
    t
};

/// Compact forms (RFC 3261 §7.3.3 and extensions), indexed by the folded byte.
static COMPACT: [HeaderName; 256] = {
    let mut t = [HeaderName::Other; 256];
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let h = HeaderName::ALL[i];
        if let Some(c) = h.compact() {
            t[c as usize] = h;
            t[(c ^ 0x20) as usize] = h;
        }
        i += 1;
    }
    t
};

/// Raw words of the `len`-byte name (`len` <= 24) starting at `start` of `buf`. Loads whole
/// words straight from the message when the bytes after the name are there (they always are
/// for a header line, which goes on with `:` and the value).
#[inline(always)]
pub(crate) fn name_words(buf: &[u8], start: usize, len: usize) -> [u64; 3] {
    let mut k = [0u64; 3];
    let mut j = 0;
    while j < 3 && j * 8 < len {
        let off = start + j * 8;
        let n = (len - j * 8).min(8);
        k[j] = if off + 8 <= buf.len() {
            crate::scan::load8(buf, off)
        } else {
            let mut a = [0u8; 8];
            for (d, s) in a.iter_mut().zip(buf.get(off..off + n).unwrap_or(&[])) {
                *d = *s;
            }
            u64::from_le_bytes(a)
        };
        j += 1;
    }
    k
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
