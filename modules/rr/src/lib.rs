//! rr: Record-Route insertion and loose routing (RFC 3261 §16.4, §16.6 step 4, §16.12;
//! RFC 5658 double record-routing).
//!
//! `record_route` only marks the request: the Record-Route value is written per branch by
//! the forwarding code, because RFC 5658 asks for two entries (`;r2=on`) when the request
//! leaves on another transport or interface than it came in on.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use bytes::Bytes;
use geosip_core::Core;
use geosip_core::ctx::{MsgCtx, RecordRoute, offset_in};
use sip_msg::{CommaValues, HeaderName, NameAddr, Uri};

/// `rr.record_route([params])`: asks for our Record-Route on the forwarded request, so
/// in-dialog requests come through this proxy (RFC 3261 §16.6 step 4).
pub fn record_route(ctx: &mut MsgCtx, params: Option<&str>) {
    let mut p = Vec::new();
    if let Some(params) = params.filter(|s| !s.is_empty()) {
        if !params.starts_with(';') {
            p.push(b';');
        }
        p.extend_from_slice(params.as_bytes());
    }
    ctx.record_route = Some(RecordRoute { params: p });
}

/// Outcome of [`loose_route`] (Kamailio's return codes in brackets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LooseRoute {
    /// No Route header addressed to us: an initial request, or a pre-loaded route to someone
    /// else [-1].
    NotRouted,
    /// Our Route entry (or two with `r2=on`) was consumed; the request goes to the next
    /// Route or, when none is left, to the Request-URI [1].
    Routed,
}

/// One Route value with where it sits in the message.
struct RouteValue {
    /// Header line index.
    line: usize,
    /// Offset range of the value.
    start: usize,
    end: usize,
    uri: Bytes,
    is_last_on_line: bool,
    is_first_on_line: bool,
}

fn route_values(ctx: &MsgCtx) -> Vec<RouteValue> {
    let msg = &ctx.msg;
    let whole = msg.as_bytes();
    let mut out = Vec::new();
    for idx in msg.header_indices(HeaderName::Route) {
        let Some(line) = msg.header_line(idx) else {
            continue;
        };
        let vals: Vec<&[u8]> = CommaValues::new(line.value).collect();
        let n = vals.len();
        for (i, v) in vals.into_iter().enumerate() {
            let Some(start) = offset_in(whole, v) else {
                continue;
            };
            let uri = NameAddr::parse(v)
                .map(|na| Bytes::copy_from_slice(na.uri_raw()))
                .unwrap_or_default();
            out.push(RouteValue {
                line: idx,
                start,
                end: start + v.len(),
                uri,
                is_last_on_line: i + 1 == n,
                is_first_on_line: i == 0,
            });
        }
    }
    out
}

/// Removes the first `n` Route values with edits (whole lines when all their values go).
fn remove_first_routes(ctx: &mut MsgCtx, vals: &[RouteValue], n: usize) {
    let mut i = 0;
    while i < n.min(vals.len()) {
        let line = vals[i].line;
        // All removed values of this line.
        let mut j = i;
        while j < n.min(vals.len()) && vals[j].line == line {
            j += 1;
        }
        let whole_line = vals[i].is_first_on_line && vals[j - 1].is_last_on_line;
        if whole_line {
            ctx.edits.remove_header(&ctx.msg, line);
        } else {
            // Cut from the first removed value up to the next kept value on the line.
            let end = vals
                .get(j)
                .filter(|v| v.line == line)
                .map_or(vals[j - 1].end, |v| v.start);
            ctx.edits.replace_raw(vals[i].start..end, b"");
        }
        i = j;
    }
}

fn is_mine(core: &Core, uri: &[u8]) -> bool {
    Uri::parse(uri).is_ok_and(|u| core.myself.is_myself_uri(&u))
}

/// `rr.loose_route()`: Route processing of RFC 3261 §16.4. Restores the Request-URI when
/// the previous hop was a strict router (the R-URI is one of our Record-Route URIs), removes
/// our top Route entry (and the second one of a double Record-Route), and sets the next hop:
/// the next Route if it is a loose router (`$du`), or, for a strict router, moves it into the
/// Request-URI and appends the old Request-URI as the last Route (§16.6 step 7, §16.12.1.2).
pub fn loose_route(core: &Core, ctx: &mut MsgCtx) -> LooseRoute {
    let mut vals = route_values(ctx);
    if vals.is_empty() {
        return LooseRoute::NotRouted;
    }
    // Previous hop was a strict router: it put our RR URI in the R-URI.
    let ruri_is_ours_rr = ctx
        .msg
        .request_uri()
        .is_some_and(|u| u.user().is_none() && core.myself.is_myself_uri(&u));
    if ruri_is_ours_rr && let Some(last) = vals.pop() {
        ctx.new_ruri = Some(last.uri.clone());
        let (s, e) = (last.start, last.end);
        // Remove the last value (and its separating comma).
        if last.is_first_on_line && last.is_last_on_line {
            ctx.edits.remove_header(&ctx.msg, last.line);
        } else if let Some(prev) = vals.last().filter(|p| p.line == last.line) {
            ctx.edits.replace_raw(prev.end..e, b"");
        } else {
            ctx.edits.replace_raw(s..e, b"");
        }
        ctx.loose_routed = true;
        if vals.is_empty() {
            return LooseRoute::Routed;
        }
    }
    if !is_mine(core, &vals[0].uri) {
        return if ctx.loose_routed {
            LooseRoute::Routed
        } else {
            LooseRoute::NotRouted
        };
    }
    let mut consumed = 1;
    let r2 = Uri::parse(&vals[0].uri).is_ok_and(|u| {
        u.param(b"r2")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"on"))
    });
    if r2 && vals.len() > 1 && is_mine(core, &vals[1].uri) {
        consumed = 2;
    }
    ctx.loose_routed = true;
    match vals.get(consumed) {
        Some(next) if !Uri::parse(&next.uri).is_ok_and(|u| u.has_lr()) => {
            // Next hop is a strict router: it gets the Request-URI, and the old Request-URI
            // becomes the last Route.
            let old = Bytes::copy_from_slice(ctx.ruri());
            ctx.new_ruri = Some(next.uri.clone());
            remove_first_routes(ctx, &vals, consumed + 1);
            let mut v = Vec::with_capacity(old.len() + 2);
            v.push(b'<');
            v.extend_from_slice(&old);
            v.push(b'>');
            ctx.edits.append_header(&ctx.msg, b"Route", &v);
        }
        Some(next) => {
            ctx.dst_uri = Some(next.uri.clone());
            remove_first_routes(ctx, &vals, consumed);
        }
        None => remove_first_routes(ctx, &vals, consumed),
    }
    LooseRoute::Routed
}

#[cfg(test)]
mod tests;
