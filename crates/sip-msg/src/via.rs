//! Via header values (RFC 3261 §20.42, §18.2.1; RFC 3581 `rport`).

use std::fmt;

use crate::params::{KnownName, ParamScan, Params, canonical_params};
use crate::scan::{
    DIGIT, HOST, TOKEN, is_lws, is_token, load8, offset_in, skip_lws, span, trim_lws,
};
use crate::span::{MAX_VALUE, Sp};
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
/// `ttl`) are located during parsing, so their accessors cost nothing. The value keeps the
/// raw bytes and the positions of its parts (a hundred bytes to copy), which is also what
/// [`SipMessage`](crate::SipMessage) caches for its top Via.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    raw: &'a [u8],
    sp: ViaSpans,
}

/// Positions of the parts of a Via value, relative to its raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaSpans {
    protocol_name: Sp,
    protocol_version: Sp,
    transport: Sp,
    host: Sp,
    params: Sp,
    branch: Sp,
    received: Sp,
    maddr: Sp,
    ttl: Sp,
    /// `rport=value`; a flag `rport` is [`RPORT_FLAG`].
    rport: Sp,
    port: u16,
    host_kind: HostKind,
    flags: u8,
}

const HAS_PORT: u8 = 1;
const PARAMS_OK: u8 = 2;
const RPORT_FLAG: u8 = 4;
/// The branch is present and a `token` (what [`Via::is_valid`] requires of it).
const BRANCH_TOKEN: u8 = 8;
/// The host is a valid dotted-quad IPv4 address (known since parsing).
const HOST_IPV4_OK: u8 = 16;

/// [`parse_port`] of bytes known to be digits (a `DIGIT` span): one to five of them, at most
/// 65535.
#[inline(always)]
fn port_digits(d: &[u8]) -> Option<u16> {
    if d.is_empty() || d.len() > 5 {
        return None;
    }
    let p = d
        .iter()
        .fold(0u32, |p, &c| p * 10 + u32::from(c.wrapping_sub(b'0')));
    u16::try_from(p).ok()
}

/// Kind of a sent-by host, and [`HOST_IPV4_OK`] when it is a valid IPv4 address: one parse
/// instead of a classification now and a parse in [`Via::is_valid`].
#[inline(always)]
fn host_kind(h: &[u8]) -> (HostKind, u8) {
    if h.first().is_some_and(u8::is_ascii_digit) && parse_ipv4(h).is_some() {
        return (HostKind::Ipv4, HOST_IPV4_OK);
    }
    (Host::new(h).kind(), 0)
}

/// RFC 3261 §8.1.1.7 magic cookie that starts a compliant branch.
pub const BRANCH_MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// Case-folded name of 3, 5, 6 or 8 bytes (the only lengths compared here) at `name` in `v`,
/// else 0. Names are tokens, on which setting bit 5 folds exactly the letters.
#[inline(always)]
fn word(v: &[u8], name: Sp) -> u64 {
    let (e, n) = (name.e as usize, name.len());
    if !matches!(n, 3 | 5 | 6 | 8) {
        return 0;
    }
    // One load: the 8 bytes ending with the name (a Via value is longer than that), or
    // starting with it.
    let w = if e >= 8 {
        load8(v, e - 8) >> (64 - 8 * n)
    } else {
        name.of(v)
            .iter()
            .rev()
            .fold(0, |w, &b| w << 8 | u64::from(b))
    };
    w | (0x2020_2020_2020_2020 >> (64 - 8 * n))
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

const BRANCH: u64 = cw(b"branch");
const RECEIVED: u64 = cw(b"received");
const MADDR: u64 = cw(b"maddr");
const TTL: u64 = cw(b"ttl");
const RPORT: u64 = cw(b"rport");

impl ViaSpans {
    pub(crate) const EMPTY: ViaSpans = ViaSpans {
        protocol_name: Sp::NONE,
        protocol_version: Sp::NONE,
        transport: Sp::NONE,
        host: Sp::NONE,
        params: Sp::NONE,
        branch: Sp::NONE,
        received: Sp::NONE,
        maddr: Sp::NONE,
        ttl: Sp::NONE,
        rport: Sp::NONE,
        port: 0,
        host_kind: HostKind::Name,
        flags: PARAMS_OK,
    };

    /// Notes a parameter (first occurrence wins), given its name and value positions; returns
    /// the name (as its folded word) when this set a well-known parameter, else 0.
    #[inline(always)]
    fn param(&mut self, v: &[u8], name: Sp, value: Option<Sp>) -> u64 {
        self.param_word(word(v, name), name, value)
    }

    /// [`param`](Self::param) with the name's folded word already known.
    #[inline(always)]
    fn param_word(&mut self, w: u64, name: Sp, value: Option<Sp>) -> u64 {
        let slot = match w {
            BRANCH => &mut self.branch,
            RECEIVED => &mut self.received,
            MADDR => &mut self.maddr,
            TTL => &mut self.ttl,
            RPORT => {
                if !self.rport.is_some() && self.flags & RPORT_FLAG == 0 {
                    match value {
                        Some(x) => self.rport = x,
                        None => self.flags |= RPORT_FLAG,
                    }
                    return RPORT;
                }
                return 0;
            }
            _ => return 0,
        };
        if slot.is_some() {
            return 0;
        }
        // A flag parameter reads as an empty value.
        *slot = value.unwrap_or(Sp::new(name.e as usize, name.e as usize));
        w
    }

    fn rebase(mut self, by: usize) -> ViaSpans {
        for s in [
            &mut self.protocol_name,
            &mut self.protocol_version,
            &mut self.transport,
            &mut self.host,
            &mut self.params,
            &mut self.branch,
            &mut self.received,
            &mut self.maddr,
            &mut self.ttl,
            &mut self.rport,
        ] {
            *s = s.rebase(by);
        }
        self
    }
}

impl ViaSpans {
    /// The common shape, `SIP/2.0/TRANSPORT host[:port]*(;name[=value])` with no LWS but the
    /// one space after the transport, no quoted or IPv6 part: one pass, no backtracking, the
    /// parts written in place (relative to `v`, which is also the raw value: it starts with
    /// `SIP/` and ends where the via-parm does). Returns that end. `None` for anything else,
    /// which [`Via::parse_general`] then handles (for the shapes accepted here both give the
    /// same result); `self` is then left half-written.
    #[inline(always)]
    pub(crate) fn parse_canonical(&mut self, v: &[u8]) -> Option<usize> {
        const SIP20: u64 = u64::from_le_bytes(*b"sip/2.0/");
        if v.len() < 10 || v.len() > MAX_VALUE || load8(v, 0) | 0x20_2020 != SIP20 {
            return None;
        }
        let te = span(v, 8, TOKEN);
        // One SP, then the host (not a LWS, not an IPv6 reference).
        if te == 8 || v.get(te) != Some(&b' ') {
            return None;
        }
        let start = te + 1;
        let host_end = span(v, start, HOST);
        if host_end == start {
            return None;
        }
        *self = ViaSpans::EMPTY;
        self.protocol_name = Sp::new(0, 3);
        self.protocol_version = Sp::new(4, 7);
        self.transport = Sp::new(8, te);
        self.host = Sp::new(start, host_end);
        let (kind, ok) = host_kind(&v[start..host_end]);
        self.host_kind = kind;
        self.flags |= ok;
        let mut j = host_end;
        match v.get(j) {
            Some(b':') => {
                let pe = span(v, j + 1, DIGIT);
                self.port = port_digits(&v[j + 1..pe])?;
                self.flags |= HAS_PORT;
                j = pe;
            }
            None | Some(b';' | b',') => {}
            Some(_) => return None,
        }
        let params_from = j;
        let mut branch_token = false;
        const KNOWN: [KnownName; 2] = [KnownName::new(b"branch"), KnownName::new(b"rport")];
        let j = canonical_params(v, j, &KNOWN, |name, value, token, known| {
            let w = match known {
                Some(0) => BRANCH,
                Some(_) => RPORT,
                None => word(v, name),
            };
            if self.param_word(w, name, value) == BRANCH {
                branch_token = token;
            }
        })?;
        if branch_token {
            self.flags |= BRANCH_TOKEN;
        }
        self.params = Sp::new(params_from, j);
        Some(j)
    }

    /// [`Via::is_valid`] as it was written before the flags known from parsing: every part
    /// checked from its bytes (the reference the fast checks are tested against).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn valid_reference(&self, raw: &[u8]) -> bool {
        if self.flags & PARAMS_OK == 0
            || !Host::with_kind(self.host.of(raw), self.host_kind).is_valid()
        {
            return false;
        }
        if let Some(b) = self.branch.opt(raw)
            && (b.is_empty() || !b.iter().all(|&c| crate::scan::is_token_byte(c)))
        {
            return false;
        }
        let rest = ViaSpans {
            flags: self.flags | BRANCH_TOKEN | HOST_IPV4_OK,
            ..*self
        };
        rest.valid(raw)
    }

    /// [`Via::is_valid`] of the value `raw` with these parts.
    pub(crate) fn valid(&self, raw: &[u8]) -> bool {
        if self.flags & PARAMS_OK == 0
            || self.flags & HOST_IPV4_OK == 0
                && !Host::with_kind(self.host.of(raw), self.host_kind).is_valid()
        {
            return false;
        }
        // A branch must be a token; known since parsing.
        if self.branch.is_some() && self.flags & BRANCH_TOKEN == 0 {
            return false;
        }
        if let Some(t) = self.ttl.opt(raw)
            && !(t.len() <= 3 && crate::scan::parse_u32(t).is_some_and(|n| n <= 255))
        {
            return false;
        }
        if let Some(r) = self.received.opt(raw) {
            // RFC 3261 says IPv6address; RFC 5118 §4.5 also sees it bracketed.
            let ok = parse_ipv4(r).is_some()
                || parse_ipv6(r).is_some()
                || (Host::new(r).kind() == HostKind::Ipv6 && Host::new(r).is_valid());
            if !ok {
                return false;
            }
        }
        if let Some(m) = self.maddr.opt(raw)
            && !Host::new(m).is_valid()
        {
            return false;
        }
        if self.rport.is_some() && parse_port(self.rport.of(raw)).is_none() {
            return false;
        }
        true
    }
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

    /// Rebuilds a value from its raw bytes and the positions found by [`Via::parse_first`]
    /// (what the message caches).
    #[inline(always)]
    pub(crate) fn from_parts(raw: &'a [u8], sp: ViaSpans) -> Via<'a> {
        Via { raw, sp }
    }

    /// The positions of the parts, relative to [`raw`](Self::raw).
    #[inline(always)]
    pub(crate) fn spans(&self) -> ViaSpans {
        self.sp
    }

    /// Parses the first `via-parm` of a header value; returns it and the offset where it
    /// stopped (the `,` before the next value, or the end).
    #[inline]
    pub(crate) fn parse_first(v: &'a [u8]) -> Result<(Via<'a>, usize), InvalidVia> {
        let mut sp = ViaSpans::EMPTY;
        if let Some(end) = sp.parse_canonical(v) {
            return Ok((Via { raw: &v[..end], sp }, end));
        }
        Self::parse_general(v)
    }

    /// Any `via-parm`, LWS and folding included (RFC 4475 §3.1.1.1).
    #[cold]
    #[inline(never)]
    pub(crate) fn parse_general(v: &'a [u8]) -> Result<(Via<'a>, usize), InvalidVia> {
        if v.len() > MAX_VALUE {
            return Err(InvalidVia);
        }
        let mut sp = ViaSpans::EMPTY;
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, with LWS allowed
        // around each slash (RFC 4475 §3.1.1.1).
        let (name, i) = token_at(v, 0)?;
        let i = expect_slash(v, i)?;
        let (version, i) = token_at(v, i)?;
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
        sp.protocol_name = name;
        sp.protocol_version = version;
        sp.transport = transport;
        sp.host = Sp::new(start, host_end);
        let (kind, ok) = host_kind(&v[start..host_end]);
        sp.host_kind = kind;
        sp.flags |= ok;
        let mut j = host_end;
        let k = skip_lws(v, j);
        if v.get(k) == Some(&b':') {
            let ps = skip_lws(v, k + 1);
            let mut pe = ps;
            while pe < v.len() && v[pe].is_ascii_digit() {
                pe += 1;
            }
            sp.port = parse_port(&v[ps..pe]).ok_or(InvalidVia)?;
            sp.flags |= HAS_PORT;
            j = pe;
        }
        let mut scan = ParamScan::after(v, j, false);
        for p in scan.by_ref() {
            let name = Sp::new(offset(v, p.name), offset(v, p.name) + p.name.len());
            let value = p
                .value
                .map(|x| Sp::new(offset(v, x), offset(v, x) + x.len()));
            sp.param(v, name, value);
        }
        if sp.branch.is_some() && is_token(sp.branch.of(v)) {
            sp.flags |= BRANCH_TOKEN;
        }
        let end = scan.pos;
        if !scan.ok {
            // Garbage after the sent-by: the value is not a via-parm.
            if v.get(end).is_some_and(|&c| c != b';' && c != b',') {
                return Err(InvalidVia);
            }
            sp.flags &= !PARAMS_OK;
        }
        let params = trim_lws(&v[j..end]);
        let ps = offset(v, params);
        sp.params = Sp::new(ps, ps + params.len());
        let raw = trim_lws(&v[..end]);
        let r0 = offset(v, raw);
        Ok((
            Via {
                raw,
                sp: sp.rebase(r0),
            },
            end,
        ))
    }

    /// The whole value, trimmed.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// `protocol-name` (`SIP`).
    pub fn protocol_name(&self) -> &'a [u8] {
        self.sp.protocol_name.of(self.raw)
    }

    /// `protocol-version` (`2.0`).
    pub fn protocol_version(&self) -> &'a [u8] {
        self.sp.protocol_version.of(self.raw)
    }

    /// Transport token as received (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, `WSS`, or an extension).
    pub fn transport(&self) -> &'a [u8] {
        self.sp.transport.of(self.raw)
    }

    /// `sent-by` host.
    #[inline]
    pub fn host(&self) -> Host<'a> {
        Host::with_kind(self.sp.host.of(self.raw), self.sp.host_kind)
    }

    /// `sent-by` port, if explicit.
    #[inline]
    pub fn port(&self) -> Option<u16> {
        (self.sp.flags & HAS_PORT != 0).then_some(self.sp.port)
    }

    /// All `via-params`.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.sp.params.of(self.raw))
    }

    /// `branch` parameter (transaction id, RFC 3261 §8.1.1.7).
    #[inline]
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.sp.branch.opt(self.raw)
    }

    /// True when the branch starts with the RFC 3261 magic cookie `z9hG4bK`; otherwise
    /// transactions are matched the RFC 2543 way (§17.2.3, RFC 4475 §3.2.1). A branch that is
    /// the cookie alone carries no transaction id.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| {
            b.len() > BRANCH_MAGIC_COOKIE.len() && b.starts_with(BRANCH_MAGIC_COOKIE)
        })
    }

    /// `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&'a [u8]> {
        self.sp.received.opt(self.raw).filter(|v| !v.is_empty())
    }

    fn rport_raw(&self) -> Option<Option<&'a [u8]>> {
        if self.sp.rport.is_some() {
            Some(Some(self.sp.rport.of(self.raw)))
        } else if self.sp.flags & RPORT_FLAG != 0 {
            Some(None)
        } else {
            None
        }
    }

    /// `rport` parameter (RFC 3581).
    pub fn rport(&self) -> Rport {
        match self.rport_raw() {
            None => Rport::Absent,
            Some(None) => Rport::Requested,
            Some(Some(v)) => parse_port(v).map_or(Rport::Requested, Rport::Value),
        }
    }

    /// `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.sp.maddr.opt(self.raw).filter(|v| !v.is_empty())
    }

    /// `ttl` parameter (0..=255).
    pub fn ttl(&self) -> Option<u8> {
        let v = self.sp.ttl.opt(self.raw)?;
        if v.is_empty() || v.len() > 3 {
            return None;
        }
        crate::scan::parse_u32(v).and_then(|n| u8::try_from(n).ok())
    }

    /// Strict check (RFC 3261 §25.1 `via-parm`): valid host, `ttl` 0..=255, `received` an IP
    /// address, `maddr` a host, `branch` a token, `rport` empty or a port, no empty parameter.
    pub fn is_valid(&self) -> bool {
        self.sp.valid(self.raw)
    }
}

/// Offset of `part` (a sub-slice of `whole`) in `whole`.
#[inline(always)]
fn offset(whole: &[u8], part: &[u8]) -> usize {
    offset_in(whole, part).unwrap_or(0)
}

/// Reads a token starting at `i` after optional LWS; returns it and the index after it.
fn token_at(v: &[u8], i: usize) -> Result<(Sp, usize), InvalidVia> {
    let s = skip_lws(v, i);
    let e = span(v, s, TOKEN);
    if e == s {
        return Err(InvalidVia);
    }
    Ok((Sp::new(s, e), e))
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
