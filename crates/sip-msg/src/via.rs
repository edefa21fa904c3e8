//! Via header values (RFC 3261 §20.42, §18.2.1; RFC 3581 `rport`).

use std::fmt;

use crate::params::{ParamScan, Params};
use crate::scan::{is_lws, is_token, skip_lws, trim_lws};
use crate::uri::{Host, HostKind, parse_ipv4, parse_ipv6, parse_port};

/// The value is not a `via-parm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidVia;

impl fmt::Display for InvalidVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid Via")
    }
}

impl std::error::Error for InvalidVia {}

/// The `rport` parameter (RFC 3581 §3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rport {
    /// No `rport` parameter.
    Absent,
    /// `;rport` without value: the client asks for symmetric response routing.
    Requested,
    /// `;rport=5060`: the port the request was received from.
    Value(u16),
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;params`.
///
/// Parsed in one pass: the well-known parameters (`branch`, `received`, `rport`, `maddr`,
/// `ttl`) are located during parsing, so their accessors cost nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    raw: &'a [u8],
    protocol_name: &'a [u8],
    protocol_version: &'a [u8],
    transport: &'a [u8],
    host: Host<'a>,
    port: Option<u16>,
    params: Params<'a>,
    branch: Option<&'a [u8]>,
    received: Option<&'a [u8]>,
    rport: Option<Option<&'a [u8]>>,
    maddr: Option<&'a [u8]>,
    ttl: Option<&'a [u8]>,
    params_ok: bool,
}

/// RFC 3261 §8.1.1.7 magic cookie that starts a compliant branch.
pub const BRANCH_MAGIC_COOKIE: &[u8] = b"z9hG4bK";

#[inline]
fn word(s: &[u8]) -> u64 {
    // Case-folded name of 3, 5, 6 or 8 bytes (the only lengths compared here), else 0.
    if !matches!(s.len(), 3 | 5 | 6 | 8) {
        return 0;
    }
    let mut w = 0u64;
    for (i, &b) in s.iter().enumerate() {
        w |= u64::from(b | 0x20) << (i * 8);
    }
    w
}

const fn cw(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
        w |= ((s[i] | 0x20) as u64) << (i * 8);
        i += 1;
    }
    w
}

impl<'a> Via<'a> {
    /// Parses one `via-parm` (one element of the comma-separated list).
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, InvalidVia> {
        let v = trim_lws(value);
        let (via, end) = Self::parse_first(v)?;
        if end < v.len() {
            return Err(InvalidVia);
        }
        Ok(via)
    }

    /// Parses the first `via-parm` of a header value; returns it and the offset where it
    /// stopped (the `,` before the next value, or the end).
    #[inline]
    pub(crate) fn parse_first(v: &'a [u8]) -> Result<(Via<'a>, usize), InvalidVia> {
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, with LWS allowed
        // around each slash (RFC 4475 §3.1.1.1).
        let (protocol_name, i) = token_at(v, 0)?;
        let i = expect_slash(v, i)?;
        let (protocol_version, i) = token_at(v, i)?;
        let i = expect_slash(v, i)?;
        let (transport, i) = token_at(v, i)?;
        // sent-by follows after LWS.
        let start = skip_lws(v, i);
        if start == i {
            return Err(InvalidVia);
        }
        let host_end = if v.get(start) == Some(&b'[') {
            crate::scan::find_byte(&v[start..], b']').ok_or(InvalidVia)? + start + 1
        } else {
            let mut e = start;
            while e < v.len() && !matches!(v[e], b':' | b';' | b',') && !is_lws(v[e]) {
                e += 1;
            }
            e
        };
        if host_end == start {
            return Err(InvalidVia);
        }
        let host = Host::new(&v[start..host_end]);
        let mut port = None;
        let mut j = host_end;
        let k = skip_lws(v, j);
        if v.get(k) == Some(&b':') {
            let ps = skip_lws(v, k + 1);
            let mut pe = ps;
            while pe < v.len() && v[pe].is_ascii_digit() {
                pe += 1;
            }
            port = Some(parse_port(&v[ps..pe]).ok_or(InvalidVia)?);
            j = pe;
        }
        let mut via = Via {
            raw: v,
            protocol_name,
            protocol_version,
            transport,
            host,
            port,
            params: Params::new(b""),
            branch: None,
            received: None,
            rport: None,
            maddr: None,
            ttl: None,
            params_ok: true,
        };
        let mut scan = ParamScan::after(v, j, false);
        for p in scan.by_ref() {
            const BRANCH: u64 = cw(b"branch");
            const RECEIVED: u64 = cw(b"received");
            const MADDR: u64 = cw(b"maddr");
            const TTL: u64 = cw(b"ttl");
            const RPORT: u64 = cw(b"rport");
            let slot = match word(p.name) {
                BRANCH => &mut via.branch,
                RECEIVED => &mut via.received,
                MADDR => &mut via.maddr,
                TTL => &mut via.ttl,
                RPORT => {
                    if via.rport.is_none() {
                        via.rport = Some(p.value);
                    }
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(p.value.unwrap_or(b""));
            }
        }
        let end = scan.pos;
        if !scan.ok {
            // Garbage after the sent-by: the value is not a via-parm.
            if v.get(end).is_some_and(|&c| c != b';' && c != b',') {
                return Err(InvalidVia);
            }
            via.params_ok = false;
        }
        via.params = Params::new(trim_lws(&v[j..end]));
        via.raw = trim_lws(&v[..end]);
        Ok((via, end))
    }

    /// The whole value, trimmed.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// `protocol-name` (`SIP`).
    pub fn protocol_name(&self) -> &'a [u8] {
        self.protocol_name
    }

    /// `protocol-version` (`2.0`).
    pub fn protocol_version(&self) -> &'a [u8] {
        self.protocol_version
    }

    /// Transport token as received (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, `WSS`, or an extension).
    pub fn transport(&self) -> &'a [u8] {
        self.transport
    }

    /// `sent-by` host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// `sent-by` port, if explicit.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// All `via-params`.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// `branch` parameter (transaction id, RFC 3261 §8.1.1.7).
    #[inline]
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch
    }

    /// True when the branch starts with the RFC 3261 magic cookie `z9hG4bK`; otherwise
    /// transactions are matched the RFC 2543 way (§17.2.3, RFC 4475 §3.2.1). A branch that is
    /// the cookie alone carries no transaction id.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch.is_some_and(|b| {
            b.len() > BRANCH_MAGIC_COOKIE.len() && b.starts_with(BRANCH_MAGIC_COOKIE)
        })
    }

    /// `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&'a [u8]> {
        self.received.filter(|v| !v.is_empty())
    }

    /// `rport` parameter (RFC 3581).
    pub fn rport(&self) -> Rport {
        match self.rport {
            None => Rport::Absent,
            Some(None) => Rport::Requested,
            Some(Some(v)) => parse_port(v).map_or(Rport::Requested, Rport::Value),
        }
    }

    /// `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.maddr.filter(|v| !v.is_empty())
    }

    /// `ttl` parameter (0..=255).
    pub fn ttl(&self) -> Option<u8> {
        let v = self.ttl?;
        if v.is_empty() || v.len() > 3 {
            return None;
        }
        crate::scan::parse_u32(v).and_then(|n| u8::try_from(n).ok())
    }

    /// Strict check (RFC 3261 §25.1 `via-parm`): valid host, `ttl` 0..=255, `received` an IP
    /// address, `maddr` a host, `branch` a token, `rport` empty or a port, no empty parameter.
    pub fn is_valid(&self) -> bool {
        if !self.params_ok || !self.host.is_valid() {
            return false;
        }
        if let Some(b) = self.branch
            && !is_token(b)
        {
            return false;
        }
        if let Some(t) = self.ttl
            && !(t.len() <= 3 && crate::scan::parse_u32(t).is_some_and(|n| n <= 255))
        {
            return false;
        }
        if let Some(r) = self.received {
            // RFC 3261 says IPv6address; RFC 5118 §4.5 also sees it bracketed.
            let ok = parse_ipv4(r).is_some()
                || parse_ipv6(r).is_some()
                || (Host::new(r).kind() == HostKind::Ipv6 && Host::new(r).is_valid());
            if !ok {
                return false;
            }
        }
        if let Some(m) = self.maddr
            && !Host::new(m).is_valid()
        {
            return false;
        }
        if let Some(Some(p)) = self.rport
            && parse_port(p).is_none()
        {
            return false;
        }
        true
    }
}

/// Reads a token starting at `i` after optional LWS; returns it and the index after it.
fn token_at(v: &[u8], i: usize) -> Result<(&[u8], usize), InvalidVia> {
    let s = skip_lws(v, i);
    let e = crate::scan::span(v, s, crate::scan::TOKEN);
    if e == s {
        return Err(InvalidVia);
    }
    Ok((&v[s..e], e))
}

/// Skips `SWS "/" SWS`.
fn expect_slash(v: &[u8], i: usize) -> Result<usize, InvalidVia> {
    let s = skip_lws(v, i);
    if v.get(s) == Some(&b'/') {
        Ok(s + 1)
    } else {
        Err(InvalidVia)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &[u8]) -> Via<'_> {
        Via::parse(s).expect("via parses")
    }

    #[test]
    fn typical_via_fields_are_extracted() {
        let v = via(
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1",
        );
        assert_eq!(v.protocol_name(), b"SIP");
        assert_eq!(v.protocol_version(), b"2.0");
        assert_eq!(v.transport(), b"UDP");
        assert_eq!(v.host().raw(), b"pc33.atlanta.com");
        assert_eq!(v.port(), Some(5066));
        assert_eq!(v.branch(), Some(&b"z9hG4bK776asdhds"[..]));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.rport(), Rport::Requested);
        assert_eq!(v.received(), Some(&b"192.0.2.1"[..]));
        assert!(v.is_valid());
    }

    #[test]
    fn lws_and_folding_inside_sent_protocol_is_accepted() {
        let v = via(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw");
        assert_eq!(v.transport(), b"UDP");
        assert_eq!(v.host().raw(), b"192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        assert!(!v.has_rfc3261_branch());
        let v = via(b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8");
        assert_eq!(v.host().raw(), b"spindle.example.com");
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
        assert!(v.is_valid());
    }

    #[test]
    fn rport_value_ttl_and_maddr_are_typed() {
        let v = via(b"SIP/2.0/UDP 10.0.0.1;rport=5070;ttl=16;maddr=224.2.0.1;branch=z9hG4bKx");
        assert_eq!(v.rport(), Rport::Value(5070));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.maddr(), Some(&b"224.2.0.1"[..]));
        assert!(v.is_valid());
        assert_eq!(via(b"SIP/2.0/UDP h").rport(), Rport::Absent);
    }

    #[test]
    fn ipv6_sent_by_with_port() {
        let v = via(
            b"SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111;received=[2001:db8::9:255]",
        );
        assert_eq!(v.host().kind(), HostKind::Ipv6);
        assert_eq!(v.port(), Some(5070));
        assert!(v.is_valid());
        let v = via(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3");
        assert!(v.is_valid());
    }

    #[test]
    fn malformed_vias_are_rejected_or_invalid() {
        assert!(Via::parse(b"SIP/2.0 host").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP host:99999").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP [::1").is_err());
        assert!(!via(b"SIP/2.0/UDP 192.0.2.15;;").is_valid());
        assert!(!via(b"SIP/2.0/UDP h;ttl=256").is_valid());
        assert!(!via(b"SIP/2.0/UDP h;received=host.example.com").is_valid());
        assert!(!via(b"SIP/2.0/UDP h;branch").is_valid());
    }
}
