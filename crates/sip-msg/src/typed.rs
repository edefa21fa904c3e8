//! Small typed header values: CSeq, Contact.

use std::fmt;

use crate::addr::NameAddr;
use crate::method::{Method, MethodCode};
use crate::scan::{is_lws, trim_lws};

/// A malformed typed header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidValue;

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid header value")
    }
}

impl std::error::Error for InvalidValue {}

/// CSeq: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number. RFC 3261 §8.1.1.5 requires it below 2**31; [`CSeq::parse`] accepts up
    /// to 2**32-1 and [`validate`](crate::SipMessage::validate) enforces the RFC bound.
    pub seq: u32,
    /// Method (case-sensitive).
    pub method: Method<'a>,
}

/// A parsed CSeq without its borrow: number, method code and where the method is.
pub(crate) struct CSeqParts {
    pub(crate) seq: u32,
    pub(crate) code: MethodCode,
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(value: &'a [u8]) -> Result<CSeq<'a>, InvalidValue> {
        let (c, ms, me) = Self::parse_parts(value)?;
        Ok(CSeq {
            seq: c.seq,
            method: c.code.to_method(&value[ms..me]),
        })
    }

    /// [`CSeq::parse`], giving the method as a code and a range of `value`.
    #[inline]
    pub(crate) fn parse_parts(value: &[u8]) -> Result<(CSeqParts, usize, usize), InvalidValue> {
        let v = trim_lws(value);
        let base = crate::scan::offset_in(value, v).unwrap_or(0);
        // 1*DIGIT, accumulated on the way (leading zeros allowed, overflow rejected).
        let mut seq: u64 = 0;
        let mut d = 0;
        while d < v.len() && v[d].is_ascii_digit() {
            seq = seq * 10 + u64::from(v[d] - b'0');
            if seq > u64::from(u32::MAX) && v[..=d].iter().any(|&c| c != b'0') {
                return Err(InvalidValue);
            }
            d += 1;
        }
        if d == 0 || d == v.len() || !is_lws(v[d]) {
            return Err(InvalidValue);
        }
        let seq = u32::try_from(seq).map_err(|_| InvalidValue)?;
        let ms = crate::scan::skip_lws(v, d);
        let m = &v[ms..];
        if m.is_empty() || crate::scan::span(m, 0, crate::scan::TOKEN) != m.len() {
            return Err(InvalidValue);
        }
        Ok((
            CSeqParts {
                seq,
                code: MethodCode::from_bytes(m),
            },
            base + ms,
            base + v.len(),
        ))
    }
}

/// One Contact value: `*` or an address with parameters (RFC 3261 §20.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (only valid in a REGISTER with `Expires: 0`, RFC 3261 §10.2.2).
    Wildcard,
    /// A contact address; `q`, `expires`, `+sip.instance`, `reg-id` through its params.
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(value: &'a [u8]) -> Result<Contact<'a>, InvalidValue> {
        let v = trim_lws(value);
        if v == b"*" {
            return Ok(Contact::Wildcard);
        }
        NameAddr::parse(v)
            .map(Contact::Addr)
            .map_err(|_| InvalidValue)
    }

    /// The address, unless this is the wildcard.
    pub fn addr(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Wildcard => None,
            Contact::Addr(a) => Some(a),
        }
    }

    /// True for `*`.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Contact::Wildcard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_accepts_leading_zeros_and_folding() {
        let c = CSeq::parse(b"0009\r\n  INVITE").expect("cseq");
        assert_eq!(c.seq, 9);
        assert_eq!(c.method, Method::Invite);
    }

    #[test]
    fn cseq_rejects_overflow_missing_method_and_missing_space() {
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"1").is_err());
        assert!(CSeq::parse(b"1INVITE").is_err());
        assert!(CSeq::parse(b"INVITE").is_err());
        assert!(CSeq::parse(b"1 INVITE x").is_err());
    }

    #[test]
    fn contact_wildcard_and_address() {
        assert!(Contact::parse(b" * ").expect("star").is_wildcard());
        let c = Contact::parse(b"<sip:a@b>;expires=60").expect("addr");
        assert_eq!(c.addr().and_then(|a| a.expires()), Some(60));
    }
}
