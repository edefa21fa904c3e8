//! SIP request methods (RFC 3261 §7.1 and extensions).

use std::fmt;

/// A request method. Methods are case-sensitive (RFC 3261 §7.1): `invite` is an extension
/// method, not INVITE. Unknown methods are kept as their raw bytes in [`Method::Other`], so
/// two `Other` values compare by bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE (RFC 3261 §13).
    Invite,
    /// ACK (RFC 3261 §13).
    Ack,
    /// BYE (RFC 3261 §15).
    Bye,
    /// CANCEL (RFC 3261 §9).
    Cancel,
    /// REGISTER (RFC 3261 §10).
    Register,
    /// OPTIONS (RFC 3261 §11).
    Options,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// MESSAGE (RFC 3428).
    Message,
    /// REFER (RFC 3515).
    Refer,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other `extension-method` token, raw.
    Other(&'a [u8]),
}

/// Compact code of a known method, stored in the message so that `method()` costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodCode {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Message,
    Refer,
    Publish,
    Other,
}

impl MethodCode {
    #[inline]
    pub(crate) fn from_bytes(b: &[u8]) -> MethodCode {
        use MethodCode::*;
        // Dispatch on length and first byte, then compare the whole name (case-sensitive), in
        // each arm against a name of known length (a few loads and compares, no `memcmp`).
        let is = |m: MethodCode, name: &[u8]| if b == name { m } else { Other };
        match (b.len(), b.first()) {
            (3, Some(b'A')) => is(Ack, b"ACK"),
            (3, Some(b'B')) => is(Bye, b"BYE"),
            (4, Some(b'I')) => is(Info, b"INFO"),
            (5, Some(b'P')) => is(Prack, b"PRACK"),
            (5, Some(b'R')) => is(Refer, b"REFER"),
            (6, Some(b'I')) => is(Invite, b"INVITE"),
            (6, Some(b'C')) => is(Cancel, b"CANCEL"),
            (6, Some(b'U')) => is(Update, b"UPDATE"),
            (6, Some(b'N')) => is(Notify, b"NOTIFY"),
            (7, Some(b'O')) => is(Options, b"OPTIONS"),
            (7, Some(b'M')) => is(Message, b"MESSAGE"),
            (7, Some(b'P')) => is(Publish, b"PUBLISH"),
            (8, Some(b'R')) => is(Register, b"REGISTER"),
            (9, Some(b'S')) => is(Subscribe, b"SUBSCRIBE"),
            _ => Other,
        }
    }

    #[inline]
    pub(crate) fn to_method(self, raw: &[u8]) -> Method<'_> {
        match self {
            MethodCode::Invite => Method::Invite,
            MethodCode::Ack => Method::Ack,
            MethodCode::Bye => Method::Bye,
            MethodCode::Cancel => Method::Cancel,
            MethodCode::Register => Method::Register,
            MethodCode::Options => Method::Options,
            MethodCode::Info => Method::Info,
            MethodCode::Update => Method::Update,
            MethodCode::Prack => Method::Prack,
            MethodCode::Subscribe => Method::Subscribe,
            MethodCode::Notify => Method::Notify,
            MethodCode::Message => Method::Message,
            MethodCode::Refer => Method::Refer,
            MethodCode::Publish => Method::Publish,
            MethodCode::Other => Method::Other(raw),
        }
    }
}

impl<'a> Method<'a> {
    /// Classifies raw method bytes (case-sensitive).
    pub fn from_bytes(raw: &'a [u8]) -> Method<'a> {
        MethodCode::from_bytes(raw).to_method(raw)
    }

    /// The method name as it appears on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Register => b"REGISTER",
            Method::Options => b"OPTIONS",
            Method::Info => b"INFO",
            Method::Update => b"UPDATE",
            Method::Prack => b"PRACK",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Message => b"MESSAGE",
            Method::Refer => b"REFER",
            Method::Publish => b"PUBLISH",
            Method::Other(raw) => raw,
        }
    }

    /// True for methods that are never answered by a response of their own (ACK).
    pub fn is_ack(&self) -> bool {
        matches!(self, Method::Ack)
    }
}

impl fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_round_trip_through_their_names() {
        for m in [
            Method::Invite,
            Method::Ack,
            Method::Bye,
            Method::Cancel,
            Method::Register,
            Method::Options,
            Method::Info,
            Method::Update,
            Method::Prack,
            Method::Subscribe,
            Method::Notify,
            Method::Message,
            Method::Refer,
            Method::Publish,
        ] {
            assert_eq!(Method::from_bytes(m.as_bytes()), m);
        }
    }

    #[test]
    fn method_names_are_case_sensitive() {
        assert_eq!(Method::from_bytes(b"invite"), Method::Other(b"invite"));
        assert_ne!(Method::from_bytes(b"invite"), Method::Invite);
    }

    #[test]
    fn unknown_methods_compare_by_bytes() {
        assert_eq!(
            Method::from_bytes(b"NEWMETHOD"),
            Method::Other(b"NEWMETHOD")
        );
        assert_ne!(
            Method::from_bytes(b"NEWMETHOD"),
            Method::from_bytes(b"OTHER")
        );
    }
}
