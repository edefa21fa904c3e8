//! sanity and maxfwd: request validation before routing (RFC 3261 §16.3) and Max-Forwards
//! processing.
//!
//! `check` answers the request itself when it fails (400, 416, 420, 505), like Kamailio's
//! `sanity_check()`; the script then stops. Max-Forwards 0 is left to `process_maxfwd`, so
//! that a request addressed to the server itself (OPTIONS) can still be answered
//! (RFC 3261 §16.3 item 2, RFC 4475 §3.3.11).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use geosip_core::Core;
use geosip_core::ctx::MsgCtx;
use sip_msg::SanityErrorKind;

/// Proxy extensions this server implements (none yet): anything in Proxy-Require is
/// unsupported (RFC 3261 §16.3 item 5).
pub const PROXY_EXTENSIONS: &[&[u8]] = &[];

/// UAS extensions understood when the server is the request's target (REGISTER, OPTIONS).
pub const UAS_EXTENSIONS: &[&[u8]] = &[b"path", b"outbound", b"gruu"];

/// Outcome of [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sanity {
    /// The request may be routed.
    Ok,
    /// The request failed; this status was sent.
    Replied(u16),
}

/// Comma-joined list of the options of `values` not in `supported`, for `Unsupported`.
fn unsupported<'a>(values: impl Iterator<Item = &'a [u8]>, supported: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        let v = sip_msg::trim_lws(v);
        if v.is_empty() || supported.iter().any(|s| s.eq_ignore_ascii_case(v)) {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    }
    out
}

/// `sanity.check()`: mandatory headers, single-valued headers not repeated, CSeq matching
/// the method, Content-Length, URI scheme (416), SIP version (505), and Proxy-Require
/// (420 with Unsupported naming the options). Replies on failure.
pub fn check(core: &Core, ctx: &mut MsgCtx) -> Sanity {
    if let Err(e) = ctx.msg.check_request()
        && e.kind() != SanityErrorKind::TooManyHops
    {
        core.stats.parse_error(e.kind().as_str());
        let status = e.status();
        let _ = core.reply(ctx, status, Some(e.reason().as_bytes()), &[], None);
        return Sanity::Replied(status);
    }
    let bad = unsupported(ctx.msg.proxy_require(), PROXY_EXTENSIONS);
    if !bad.is_empty() {
        let _ = core.reply(
            ctx,
            420,
            Some(b"Bad Extension"),
            &[(b"Unsupported", &bad)],
            None,
        );
        return Sanity::Replied(420);
    }
    Sanity::Ok
}

/// For a request the server answers itself (REGISTER, OPTIONS to us): Require options we do
/// not implement get 420 with Unsupported (RFC 3261 §8.2.2.3). Returns false when it replied.
pub fn check_require(core: &Core, ctx: &mut MsgCtx) -> bool {
    let bad = unsupported(ctx.msg.require(), UAS_EXTENSIONS);
    if bad.is_empty() {
        return true;
    }
    let _ = core.reply(
        ctx,
        420,
        Some(b"Bad Extension"),
        &[(b"Unsupported", &bad)],
        None,
    );
    false
}

/// Outcome of [`process_maxfwd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxFwd {
    /// Max-Forwards present and above zero (it is decremented when forwarding).
    Ok,
    /// No Max-Forwards: 70 is inserted when forwarding (RFC 3261 §16.6 step 3).
    Absent,
    /// Max-Forwards is 0: the script answers 483 (RFC 3261 §16.3 item 2).
    Exhausted,
}

/// `maxfwd.process_maxfwd(limit)`: checks Max-Forwards. Kamailio returns -1 for 0 and the
/// script sends 483; same here.
pub fn process_maxfwd(ctx: &MsgCtx) -> MaxFwd {
    match ctx.msg.max_forwards() {
        Some(0) => MaxFwd::Exhausted,
        Some(_) => MaxFwd::Ok,
        None => MaxFwd::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geosip_core::config::CoreConfig;
    use geosip_core::testutil::{core_on, ctx_for};
    use std::net::UdpSocket;
    use std::time::Duration;

    fn recv(s: &UdpSocket) -> String {
        let mut b = [0u8; 4096];
        let n = s.recv(&mut b).expect("reply");
        String::from_utf8_lossy(&b[..n]).into_owned()
    }

    #[test]
    fn proxy_require_with_unknown_options_is_answered_420_naming_them() {
        let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
        let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
        ua.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let src = ua.local_addr().unwrap().to_string();
        let raw = include_bytes!("../../../crates/sip-msg/tests/data/rfc4475/TC_BEXT01_V.dat");
        let mut ctx = ctx_for(&core, raw, &src);
        assert_eq!(check(&core, &mut ctx), Sanity::Replied(420));
        let r = recv(&ua);
        assert!(r.starts_with("SIP/2.0 420 "), "{r}");
        assert!(
            r.contains("Unsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n"),
            "{r}"
        );
    }

    #[test]
    fn a_request_missing_mandatory_headers_is_answered_400() {
        let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
        let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
        ua.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let src = ua.local_addr().unwrap().to_string();
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nCSeq: 1 OPTIONS\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n";
        let mut ctx = ctx_for(&core, raw, &src);
        assert_eq!(check(&core, &mut ctx), Sanity::Replied(400));
        assert!(recv(&ua).starts_with("SIP/2.0 400 "));
    }

    #[test]
    fn max_forwards_zero_is_exhausted_and_absent_is_reported() {
        let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
        let raw = include_bytes!("../../../crates/sip-msg/tests/data/rfc4475/TC_ZEROMF_V.dat");
        let ctx = ctx_for(&core, raw, "127.0.0.1:9");
        assert_eq!(process_maxfwd(&ctx), MaxFwd::Exhausted);
    }
}
