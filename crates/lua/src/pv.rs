//! Pseudo-variables (`KSR.pv.get("$ru")`): the names Kamailio users know, read from the
//! current request context or reply.

use bytes::Bytes;
use geosip_core::ctx::{MsgCtx, offset_in};
use sip_msg::{HeaderName, NameAddr, SipMessage, Uri};

/// A pseudo-variable value.
#[derive(Debug, Clone, PartialEq)]
pub enum Pv {
    /// `$null`.
    Null,
    /// Integer.
    Int(i64),
    /// Byte string.
    Str(Bytes),
}

fn s(b: &[u8]) -> Pv {
    Pv::Str(Bytes::copy_from_slice(b))
}

fn opt(b: Option<&[u8]>) -> Pv {
    b.map_or(Pv::Null, s)
}

fn uri_part(raw: &[u8], part: u8) -> Pv {
    let Ok(u) = Uri::parse(raw) else {
        return Pv::Null;
    };
    match part {
        b'u' => s(raw),
        b'U' => opt(u.user()),
        b'd' => s(u.host().raw()),
        b'p' => u.port().map_or(Pv::Null, |p| Pv::Int(i64::from(p))),
        b'z' => s(u.scheme_raw()),
        _ => Pv::Null,
    }
}

fn name_addr_part(v: Option<&[u8]>, part: u8) -> Pv {
    let Some(v) = v else { return Pv::Null };
    let Ok(na) = NameAddr::parse(v) else {
        return Pv::Null;
    };
    match part {
        b't' => opt(na.tag()),
        b'n' => opt(na.display_name_raw()),
        _ => uri_part(na.uri_raw(), part),
    }
}

/// Inner name of `$hdr(Name)`-style variables.
fn inner<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)?.strip_suffix(')')
}

/// Reads a variable that only needs the message (requests and replies).
pub fn get_msg(msg: &SipMessage, name: &str) -> Option<Pv> {
    if let Some(h) = inner(name, "$hdr(") {
        return Some(opt(msg.header_by_name(h.as_bytes())));
    }
    if let Some(h) = inner(name, "$hdrc(") {
        return Some(Pv::Int(msg.headers_by_name(h.as_bytes()).count() as i64));
    }
    Some(match name {
        "$ci" => opt(msg.call_id()),
        "$cs" => msg.cseq().map_or(Pv::Null, |c| Pv::Int(i64::from(c.seq))),
        "$rm" => match msg.method_bytes() {
            Some(m) => s(m),
            None => msg.cseq().map_or(Pv::Null, |c| s(c.method.as_bytes())),
        },
        "$rs" => msg.status().map_or(Pv::Null, |c| Pv::Int(i64::from(c))),
        "$rr" => opt(msg.reason_bytes()),
        "$ua" => opt(msg.user_agent()),
        "$ml" => Pv::Int(msg.len() as i64),
        "$rb" => s(msg.body()),
        "$cl" => msg.content_length().map_or(Pv::Null, |c| Pv::Int(c as i64)),
        "$ct" => opt(msg.header(HeaderName::Contact)),
        "$fu" | "$fU" | "$fd" | "$ft" | "$fn" => {
            name_addr_part(msg.header(HeaderName::From), name.as_bytes()[2])
        }
        "$tu" | "$tU" | "$td" | "$tt" | "$tn" => {
            name_addr_part(msg.header(HeaderName::To), name.as_bytes()[2])
        }
        _ => return None,
    })
}

/// Reads a variable of the current request.
pub fn get_req(ctx: &MsgCtx, name: &str) -> Pv {
    match name {
        "$ru" | "$rU" | "$rd" | "$rp" | "$rz" => uri_part(ctx.ruri(), name.as_bytes()[2]),
        "$ou" => opt(ctx.msg.request_uri_bytes()),
        "$oU" => ctx.msg.request_uri().map_or(Pv::Null, |u| opt(u.user())),
        "$du" => ctx
            .dst_uri
            .as_ref()
            .map_or(Pv::Null, |d| Pv::Str(d.clone())),
        "$si" => Pv::Str(Bytes::from(ctx.rx.src.ip().to_string())),
        "$sp" => Pv::Int(i64::from(ctx.rx.src.port())),
        "$Ri" => Pv::Str(Bytes::from(ctx.rx.local.ip().to_string())),
        "$Rp" => Pv::Int(i64::from(ctx.rx.local.port())),
        "$pr" | "$proto" => Pv::Str(Bytes::from_static(ctx.rx.proto.name().as_bytes())),
        "$au" => ctx
            .auth_user
            .as_ref()
            .map_or(Pv::Null, |(u, _)| Pv::Str(u.clone())),
        "$ad" => ctx
            .auth_user
            .as_ref()
            .map_or(Pv::Null, |(_, d)| Pv::Str(d.clone())),
        "$mf" => Pv::Int(i64::from(ctx.flags)),
        "$branches" => Pv::Int(ctx.branches.len() as i64),
        _ => get_msg(&ctx.msg, name).unwrap_or(Pv::Null),
    }
}

/// Replaces the `part` (`U` user, `d` host) of a URI.
fn rewrite_uri_part(raw: &[u8], part: u8, val: &[u8]) -> Option<Bytes> {
    let u = Uri::parse(raw).ok()?;
    let mut out = Vec::with_capacity(raw.len() + val.len());
    match part {
        b'U' => match u.user() {
            Some(user) => {
                let at = offset_in(raw, user)?;
                out.extend_from_slice(&raw[..at]);
                out.extend_from_slice(val);
                out.extend_from_slice(&raw[at + user.len()..]);
            }
            None => {
                let host = u.host().raw();
                let at = offset_in(raw, host)?;
                out.extend_from_slice(&raw[..at]);
                out.extend_from_slice(val);
                out.push(b'@');
                out.extend_from_slice(&raw[at..]);
            }
        },
        b'd' => {
            let host = u.host().raw();
            let at = offset_in(raw, host)?;
            out.extend_from_slice(&raw[..at]);
            out.extend_from_slice(val);
            out.extend_from_slice(&raw[at + host.len()..]);
        }
        _ => return None,
    }
    Some(Bytes::from(out))
}

/// Assigns a variable of the current request; false when it is read-only or unknown.
pub fn set_req(ctx: &mut MsgCtx, name: &str, val: Option<&[u8]>) -> bool {
    match (name, val) {
        ("$ru", Some(v)) => ctx.new_ruri = Some(Bytes::copy_from_slice(v)),
        ("$rU" | "$rd", Some(v)) => match rewrite_uri_part(ctx.ruri(), name.as_bytes()[2], v) {
            Some(u) => ctx.new_ruri = Some(u),
            None => return false,
        },
        ("$du", Some(v)) if !v.is_empty() => ctx.dst_uri = Some(Bytes::copy_from_slice(v)),
        ("$du", _) => ctx.dst_uri = None,
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_user_and_host_can_be_rewritten_in_place() {
        assert_eq!(
            rewrite_uri_part(b"sip:alice@example.com;transport=tcp", b'U', b"bob").unwrap(),
            Bytes::from_static(b"sip:bob@example.com;transport=tcp")
        );
        assert_eq!(
            rewrite_uri_part(b"sip:alice@example.com:5080", b'd', b"10.0.0.1").unwrap(),
            Bytes::from_static(b"sip:alice@10.0.0.1:5080")
        );
        assert_eq!(
            rewrite_uri_part(b"sip:example.com", b'U', b"carol").unwrap(),
            Bytes::from_static(b"sip:carol@example.com")
        );
    }

    #[test]
    fn message_variables_read_from_and_to_parts() {
        let m = SipMessage::parse(Bytes::from_static(
            b"INVITE sip:bob@b.example SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \"A\" <sip:alice@a.example>;tag=x1\r\nTo: <sip:bob@b.example>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nX-Foo: bar\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(
            get_msg(&m, "$fU"),
            Some(Pv::Str(Bytes::from_static(b"alice")))
        );
        assert_eq!(get_msg(&m, "$ft"), Some(Pv::Str(Bytes::from_static(b"x1"))));
        assert_eq!(
            get_msg(&m, "$td"),
            Some(Pv::Str(Bytes::from_static(b"b.example")))
        );
        assert_eq!(get_msg(&m, "$tt"), Some(Pv::Null));
        assert_eq!(get_msg(&m, "$cs"), Some(Pv::Int(7)));
        assert_eq!(
            get_msg(&m, "$hdr(x-foo)"),
            Some(Pv::Str(Bytes::from_static(b"bar")))
        );
        assert_eq!(get_msg(&m, "$nope"), None);
    }
}
