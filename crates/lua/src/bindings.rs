//! The `KSR` table: native functions the script calls. Names and return conventions follow
//! Kamailio KEMI: action functions return an integer (positive = success, negative =
//! failure), predicates return booleans.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use geosip_auth::Auth;
use geosip_core::Core;
use geosip_core::ctx::{MsgCtx, Target};
use geosip_htable::{Htable, Value as HValue};
use geosip_pike::Protect;
use geosip_registrar::Registrar;
use geosip_tm::{Tm, TmError};
use mlua::{Lua, LuaString, Table, Value};
use sip_msg::{HeaderName, SipMessage, Uri};

use crate::pv::{self, Pv};
use crate::{CUR, DROPPED, EXIT, REPLY};

/// The modules the script can reach. Filled by the binary.
#[derive(Clone)]
pub struct Modules {
    /// Core services (sending, replies, stats).
    pub core: Arc<Core>,
    /// Shared tables.
    pub htable: Arc<Htable>,
    /// Transactions.
    pub tm: Arc<Tm>,
    /// Registrar (with its location service).
    pub registrar: Arc<Registrar>,
    /// Digest authentication and subscribers.
    pub auth: Arc<Auth>,
    /// Flood and overload protection.
    pub protect: Arc<Protect>,
}

fn no_ctx() -> mlua::Error {
    mlua::Error::RuntimeError("this KSR function needs a request, but none is being routed".into())
}

/// Runs `f` on the message being routed: the reply in a reply route, else the request.
pub(crate) fn with_msg<R>(f: impl FnOnce(&SipMessage) -> R) -> mlua::Result<R> {
    if REPLY.with(|r| r.borrow().is_some()) {
        return REPLY
            .with(|r| r.borrow().as_ref().map(|v| f(&v.msg)))
            .ok_or_else(no_ctx);
    }
    CUR.with(|c| c.borrow().as_ref().map(|ctx| f(&ctx.msg)))
        .ok_or_else(no_ctx)
}

/// Runs `f` on the current request context.
pub(crate) fn with_ctx<R>(f: impl FnOnce(&mut MsgCtx) -> R) -> mlua::Result<R> {
    CUR.with(|c| c.borrow_mut().as_mut().map(|b| f(b)))
        .ok_or_else(no_ctx)
}

/// Runs `f` on the current request with the context taken out of the slot, for calls that
/// may run other routes (t_relay → branch/failure routes).
pub(crate) fn take_ctx<R>(f: impl FnOnce(&mut MsgCtx) -> R) -> mlua::Result<R> {
    let Some(mut ctx) = CUR.with(|c| c.borrow_mut().take()) else {
        return Err(no_ctx());
    };
    let r = f(&mut ctx);
    CUR.with(|c| *c.borrow_mut() = Some(ctx));
    Ok(r)
}

fn bytes_of(s: &LuaString) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn str_of(s: &LuaString) -> String {
    s.to_string_lossy()
}

fn pv_to_lua(lua: &Lua, v: Pv) -> mlua::Result<Value> {
    Ok(match v {
        Pv::Null => Value::Nil,
        Pv::Int(i) => Value::Integer(i),
        Pv::Str(b) => Value::String(lua.create_string(&b)?),
    })
}

macro_rules! func {
    ($lua:expr, $t:expr, $name:expr, $f:expr) => {
        $t.set($name, $lua.create_function($f)?)?;
    };
}

/// Builds `KSR` in `lua`.
pub(crate) fn install(lua: &Lua, m: &Modules, vars: &BTreeMap<String, String>) -> mlua::Result<()> {
    let ksr = lua.create_table()?;
    core_fns(lua, &ksr, m)?;
    ksr.set("pv", pv_table(lua, m)?)?;
    ksr.set("hdr", hdr_table(lua)?)?;
    ksr.set("sl", sl_table(lua, m)?)?;
    ksr.set("options", options_table(lua, m)?)?;
    ksr.set("siputils", siputils_table(lua)?)?;
    ksr.set("rr", rr_table(lua, m)?)?;
    ksr.set("maxfwd", maxfwd_table(lua)?)?;
    ksr.set("sanity", sanity_table(lua, m)?)?;
    ksr.set("htable", htable_table(lua, m)?)?;
    ksr.set("x", x_table(lua)?)?;
    ksr.set("tm", tm_table(lua, m)?)?;
    ksr.set("registrar", registrar_table(lua, m)?)?;
    ksr.set("auth", auth_table(lua, m)?)?;
    ksr.set("subscriber", subscriber_table(lua, m)?)?;
    ksr.set("pike", pike_table(lua, m)?)?;
    let cfg = lua.create_table()?;
    let vars = vars.clone();
    func!(lua, cfg, "get", move |lua, name: LuaString| {
        match vars.get(&*name.to_str()?) {
            Some(v) => Ok(Value::String(lua.create_string(v)?)),
            None => Ok(Value::Nil),
        }
    });
    ksr.set("cfg", cfg)?;
    lua.globals().set("KSR", ksr)?;
    lua.load(STOPPERS).set_name("=ksr").call::<()>(EXIT)?;
    Ok(())
}

/// The functions that stop the script, written in Lua so that stopping is a plain
/// `error(EXIT, 0)`, with no traceback: `KSR.x.exit`, `KSR.x.drop`, and the authentication
/// checks when the request is parked for a batched subscriber read.
const STOPPERS: &str = r#"
local EXIT = ...
local x, auth = KSR.x, KSR.auth
local mark_drop = x.drop
x.exit = function() error(EXIT, 0) end
x.drop = function() mark_drop(); error(EXIT, 0) end
for _, name in ipairs({ "www_authenticate", "proxy_authenticate" }) do
    local check = auth[name]
    auth[name] = function(realm)
        local rc, parked = check(realm)
        if parked then error(EXIT, 0) end
        return rc
    end
end
"#;

fn log_fn(lua: &Lua, t: &Table, name: &str, level: tracing::Level) -> mlua::Result<()> {
    t.set(
        name,
        lua.create_function(move |_, msg: LuaString| {
            let msg = msg.to_string_lossy();
            let msg = msg.trim_end();
            match level {
                tracing::Level::ERROR => tracing::error!(target: "script", "{msg}"),
                tracing::Level::WARN => tracing::warn!(target: "script", "{msg}"),
                tracing::Level::INFO => tracing::info!(target: "script", "{msg}"),
                _ => tracing::debug!(target: "script", "{msg}"),
            }
            Ok(())
        })?,
    )
}

fn core_fns(lua: &Lua, ksr: &Table, m: &Modules) -> mlua::Result<()> {
    log_fn(lua, ksr, "err", tracing::Level::ERROR)?;
    log_fn(lua, ksr, "crit", tracing::Level::ERROR)?;
    log_fn(lua, ksr, "warn", tracing::Level::WARN)?;
    log_fn(lua, ksr, "notice", tracing::Level::INFO)?;
    log_fn(lua, ksr, "info", tracing::Level::INFO)?;
    log_fn(lua, ksr, "dbg", tracing::Level::DEBUG)?;
    func!(lua, ksr, "is_method", |_, name: LuaString| {
        let n = name.as_bytes();
        with_msg(|msg| match msg.method_bytes() {
            Some(mb) => n.split(|b| *b == b',').any(|x| x == mb),
            None => msg.cseq().is_some_and(|c| c.method.as_bytes() == &n[..]),
        })
    });
    for meth in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "REFER",
        "PUBLISH",
    ] {
        let mb = meth.as_bytes();
        ksr.set(
            format!("is_{meth}"),
            lua.create_function(move |_, ()| {
                with_msg(|msg| match msg.method_bytes() {
                    Some(x) => x == mb,
                    None => msg.cseq().is_some_and(|c| c.method.as_bytes() == mb),
                })
            })?,
        )?;
    }
    func!(lua, ksr, "setflag", |_, f: u32| with_ctx(|c| c.set_flag(f))
        .map(|_| 1));
    func!(lua, ksr, "resetflag", |_, f: u32| with_ctx(
        |c| c.reset_flag(f)
    )
    .map(|_| 1));
    func!(lua, ksr, "isflagset", |_, f: u32| with_ctx(
        |c| c.is_flag_set(f)
    ));
    let core = Arc::clone(&m.core);
    func!(lua, ksr, "forward", move |_, uri: Option<LuaString>| {
        take_ctx(|ctx| {
            if let Some(u) = &uri {
                ctx.dst_uri = Some(Bytes::from(bytes_of(u)));
            }
            match core.forward_stateless(ctx) {
                Ok(()) => 1,
                Err(e) => {
                    tracing::debug!(error = ?e, "forward failed");
                    -1
                }
            }
        })
    });
    let core = Arc::clone(&m.core);
    func!(lua, ksr, "is_myself", move |_, uri: LuaString| {
        Ok(Uri::parse(&uri.as_bytes()).is_ok_and(|u| core.myself.is_myself_uri(&u)))
    });
    let core = Arc::clone(&m.core);
    func!(lua, ksr, "is_myself_ruri", move |_, ()| {
        with_ctx(|ctx| Uri::parse(ctx.ruri()).is_ok_and(|u| core.myself.is_myself_uri(&u)))
    });
    for (name, hdr) in [
        ("is_myself_furi", HeaderName::From),
        ("is_myself_turi", HeaderName::To),
    ] {
        let core = Arc::clone(&m.core);
        ksr.set(
            name,
            lua.create_function(move |_, ()| {
                with_msg(|msg| {
                    msg.header(hdr)
                        .and_then(|v| sip_msg::NameAddr::parse(v).ok())
                        .and_then(|na| na.uri().ok().map(|u| core.myself.is_myself_uri(&u)))
                        .unwrap_or(false)
                })
            })?,
        )?;
    }
    func!(lua, ksr, "setdsturi", |_, uri: LuaString| with_ctx(|c| c
        .dst_uri =
        Some(Bytes::from(bytes_of(&uri))))
    .map(|_| 1));
    func!(lua, ksr, "resetdsturi", |_, ()| with_ctx(
        |c| c.dst_uri = None
    )
    .map(|_| 1));
    func!(lua, ksr, "seturi", |_, uri: LuaString| with_ctx(|c| c
        .new_ruri =
        Some(Bytes::from(bytes_of(&uri))))
    .map(|_| 1));
    func!(lua, ksr, "rewriteuri", |_, uri: LuaString| with_ctx(|c| {
        c.new_ruri = Some(Bytes::from(bytes_of(&uri)))
    })
    .map(|_| 1));
    func!(lua, ksr, "append_branch", |_, uri: Option<LuaString>| {
        with_ctx(|c| {
            let u = match &uri {
                Some(u) => Bytes::from(bytes_of(u)),
                None => Bytes::copy_from_slice(c.ruri()),
            };
            if c.branches.len() >= 12 {
                return -1;
            }
            c.branches.push(Target::uri(u));
            1
        })
    });
    func!(lua, ksr, "force_rport", |_, ()| {
        with_ctx(|c| {
            c.via_stamp.rport = Some(c.rx.src.port());
            1
        })
    });
    Ok(())
}

fn pv_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    fn get(name: &str) -> mlua::Result<Pv> {
        let r = REPLY.with(|r| {
            r.borrow().as_ref().map(|v| match name {
                "$si" => Pv::Str(Bytes::from(v.rx.src.ip().to_string())),
                "$sp" => Pv::Int(i64::from(v.rx.src.port())),
                "$pr" | "$proto" => Pv::Str(Bytes::from_static(v.rx.proto.name().as_bytes())),
                _ => pv::get_msg(&v.msg, name).unwrap_or(Pv::Null),
            })
        });
        if let Some(v) = r {
            return Ok(v);
        }
        with_ctx(|ctx| pv::get_req(ctx, name))
    }
    let get_tm = {
        let tm = Arc::clone(&m.tm);
        move |name: &str| -> mlua::Result<Pv> {
            if name == "$T_reply_code" || name == "$T_rpl_code" {
                return Ok(tm
                    .t_get_status_code()
                    .map_or(Pv::Null, |s| Pv::Int(i64::from(s))));
            }
            get(name)
        }
    };
    let g = get_tm.clone();
    func!(lua, t, "get", move |lua, name: LuaString| pv_to_lua(
        lua,
        g(&str_of(&name))?
    ));
    let g = get_tm.clone();
    func!(lua, t, "gete", move |lua, name: LuaString| {
        match g(&str_of(&name))? {
            Pv::Null => Ok(Value::String(lua.create_string("")?)),
            v => pv_to_lua(lua, v),
        }
    });
    let g = get_tm;
    func!(lua, t, "is_null", move |_, name: LuaString| Ok(g(
        &str_of(&name)
    )?
        == Pv::Null));
    func!(lua, t, "sets", |_, (name, val): (LuaString, LuaString)| {
        let name = str_of(&name);
        let val = bytes_of(&val);
        with_ctx(|ctx| pv::set_req(ctx, &name, Some(&val))).map(|ok| if ok { 1 } else { -1 })
    });
    func!(lua, t, "seti", |_, (name, val): (LuaString, i64)| {
        let name = str_of(&name);
        let val = val.to_string();
        with_ctx(|ctx| pv::set_req(ctx, &name, Some(val.as_bytes())))
            .map(|ok| if ok { 1 } else { -1 })
    });
    func!(lua, t, "unset", |_, name: LuaString| {
        let name = str_of(&name);
        with_ctx(|ctx| pv::set_req(ctx, &name, None)).map(|ok| if ok { 1 } else { -1 })
    });
    Ok(t)
}

thread_local! {
    /// The last tm error on this thread, for `KSR.sl.sl_reply_error()`.
    static LAST_ERROR: std::cell::Cell<Option<TmError>> = const { std::cell::Cell::new(None) };
}

fn hdr_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    // KEMI's append takes a whole header line, "Name: value\r\n".
    func!(lua, t, "append", |_, line: LuaString| {
        let line = bytes_of(&line);
        with_ctx(|ctx| match split_header_line(&line) {
            Some((n, v)) => {
                ctx.edits.append_header(&ctx.msg, n, v);
                1
            }
            None => -1,
        })
    });
    func!(lua, t, "insert", |_, line: LuaString| {
        let line = bytes_of(&line);
        with_ctx(|ctx| match split_header_line(&line) {
            Some((n, v)) => {
                if ctx.msg.header_count() > 0 {
                    ctx.edits.insert_header_before(&ctx.msg, 0, n, v);
                } else {
                    ctx.edits.append_header(&ctx.msg, n, v);
                }
                1
            }
            None => -1,
        })
    });
    func!(lua, t, "remove", |_, name: LuaString| {
        let name = bytes_of(&name);
        with_ctx(|ctx| {
            let idx: Vec<usize> = ctx.msg.header_indices_by_name(&name).collect();
            for i in &idx {
                ctx.edits.remove_header(&ctx.msg, *i);
            }
            if idx.is_empty() { -1 } else { idx.len() as i64 }
        })
    });
    func!(lua, t, "is_present", |_, name: LuaString| {
        let name = bytes_of(&name);
        with_msg(|m| m.header_by_name(&name).is_some())
    });
    func!(lua, t, "get", |lua, name: LuaString| {
        let name = bytes_of(&name);
        match with_msg(|m| m.header_by_name(&name).map(|v| v.to_vec()))? {
            Some(v) => Ok(Value::String(lua.create_string(v)?)),
            None => Ok(Value::Nil),
        }
    });
    Ok(t)
}

/// Splits `Name: value[\r\n]` into name and value.
fn split_header_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = sip_msg::trim_lws(&line[..colon]);
    let mut value = &line[colon + 1..];
    while let Some(v) = value
        .strip_suffix(b"\n")
        .or_else(|| value.strip_suffix(b"\r"))
    {
        value = v;
    }
    let value = sip_msg::trim_lws(value);
    (!name.is_empty() && sip_msg::is_token(name)).then_some((name, value))
}

fn sl_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let core = Arc::clone(&m.core);
    // Kamailio's sl_reply_error(): answers with the status of the last internal error
    // (t_relay's), 500 when there was none; 503 carries Retry-After.
    func!(lua, t, "sl_reply_error", move |_, ()| {
        let err = LAST_ERROR.with(|e| e.take());
        with_ctx(|ctx| {
            let (status, reason, retry) = match &err {
                Some(e) => (e.status(), e.reason(), e.retry_after()),
                None => (500, "Server Internal Error", None),
            };
            let ra = retry.map(|r| r.to_string());
            let hdrs: Vec<(&[u8], &[u8])> = ra
                .iter()
                .map(|r| (&b"Retry-After"[..], r.as_bytes()))
                .collect();
            match core.reply(ctx, status, Some(reason.as_bytes()), &hdrs, None) {
                Ok(()) => 1,
                Err(_) => -1,
            }
        })
    });
    for name in ["send_reply", "sl_send_reply"] {
        let core = Arc::clone(&m.core);
        t.set(
            name,
            lua.create_function(move |_, (code, reason): (u16, Option<LuaString>)| {
                let reason = reason.map(|r| bytes_of(&r));
                with_ctx(|ctx| {
                    if !(100..=699).contains(&code) {
                        return -1;
                    }
                    match core.reply(ctx, code, reason.as_deref(), &[], None) {
                        Ok(()) => 1,
                        Err(_) => -1,
                    }
                })
            })?,
        )?;
    }
    Ok(t)
}

/// What `options_reply` advertises.
pub const ALLOW: &[u8] = b"INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, MESSAGE, REFER";

fn options_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let core = Arc::clone(&m.core);
    // Kamailio's options module: answer an OPTIONS addressed to the server with 200 and
    // what it supports (RFC 3261 §11.2).
    func!(lua, t, "options_reply", move |_, ()| {
        with_ctx(|ctx| {
            if !ctx.is_method(b"OPTIONS") {
                return -1;
            }
            let hdrs: [(&[u8], &[u8]); 4] = [
                (b"Allow", ALLOW),
                (b"Accept", b"application/sdp"),
                (b"Accept-Language", b"en"),
                (b"Supported", b"path, outbound"),
            ];
            match core.reply(ctx, 200, None, &hdrs, None) {
                Ok(()) => 1,
                Err(_) => -1,
            }
        })
    });
    Ok(t)
}

fn siputils_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    func!(lua, t, "has_totag", |_, ()| with_msg(|m| m
        .to_tag()
        .is_some()));
    func!(lua, t, "is_request", |_, ()| with_msg(|m| m.is_request()));
    func!(lua, t, "is_reply", |_, ()| with_msg(|m| m.is_response()));
    Ok(t)
}

fn rr_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    func!(lua, t, "record_route", |_, ()| with_ctx(|c| {
        geosip_rr::record_route(c, None)
    })
    .map(|_| 1));
    func!(lua, t, "record_route_params", |_, p: LuaString| {
        let p = str_of(&p);
        with_ctx(|c| geosip_rr::record_route(c, Some(&p))).map(|_| 1)
    });
    let core = Arc::clone(&m.core);
    func!(lua, t, "loose_route", move |_, ()| {
        with_ctx(|c| match geosip_rr::loose_route(&core, c) {
            geosip_rr::LooseRoute::Routed => 1,
            geosip_rr::LooseRoute::NotRouted => -1,
        })
    });
    Ok(t)
}

fn maxfwd_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    func!(lua, t, "process_maxfwd", |_, _limit: Option<i64>| {
        with_ctx(|c| match geosip_sanity::process_maxfwd(c) {
            geosip_sanity::MaxFwd::Exhausted => -1,
            _ => 1,
        })
    });
    Ok(t)
}

fn sanity_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for name in ["check", "sanity_check"] {
        let core = Arc::clone(&m.core);
        t.set(
            name,
            lua.create_function(move |_, _args: mlua::MultiValue| {
                with_ctx(|c| match geosip_sanity::check(&core, c) {
                    geosip_sanity::Sanity::Ok => 1,
                    geosip_sanity::Sanity::Replied(_) => -1,
                })
            })?,
        )?;
    }
    let core = Arc::clone(&m.core);
    func!(lua, t, "check_require", move |_, ()| {
        with_ctx(|c| {
            if geosip_sanity::check_require(&core, c) {
                1
            } else {
                -1
            }
        })
    });
    Ok(t)
}

fn htable_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let h = Arc::clone(&m.htable);
    func!(lua, t, "sht_get", move |lua,
                                   (table, key): (
        LuaString,
        LuaString
    )| {
        match h.get(&table.to_str()?, &key.as_bytes(), Instant::now()) {
            Some(HValue::Int(i)) => Ok(Value::Integer(i)),
            Some(HValue::Str(s)) => Ok(Value::String(lua.create_string(s)?)),
            None => Ok(Value::Nil),
        }
    });
    let h = Arc::clone(&m.htable);
    func!(lua, t, "sht_sets", move |_,
                                    (table, key, val): (
        LuaString,
        LuaString,
        LuaString
    )| {
        let ok = h.set(
            &table.to_str()?,
            &key.as_bytes(),
            HValue::Str(bytes_of(&val)),
            Instant::now(),
        );
        Ok(if ok { 1 } else { -1 })
    });
    let h = Arc::clone(&m.htable);
    func!(lua, t, "sht_seti", move |_,
                                    (table, key, val): (
        LuaString,
        LuaString,
        i64
    )| {
        let ok = h.set(
            &table.to_str()?,
            &key.as_bytes(),
            HValue::Int(val),
            Instant::now(),
        );
        Ok(if ok { 1 } else { -1 })
    });
    for (name, by) in [("sht_inc", 1i64), ("sht_dec", -1i64)] {
        let h = Arc::clone(&m.htable);
        t.set(
            name,
            lua.create_function(move |_, (table, key): (LuaString, LuaString)| {
                Ok(h.add(&table.to_str()?, &key.as_bytes(), by, Instant::now()))
            })?,
        )?;
    }
    let h = Arc::clone(&m.htable);
    func!(lua, t, "sht_rm", move |_,
                                  (table, key): (
        LuaString,
        LuaString
    )| {
        Ok(if h.remove(&table.to_str()?, &key.as_bytes()) {
            1
        } else {
            -1
        })
    });
    Ok(t)
}

fn x_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    // `exit` and `drop` stop the script with a Lua `error(EXIT, 0)` (see [`STOPPERS`]): an
    // error returned by a Rust callback makes mlua build a traceback, which searches every
    // loaded table for the function's name (tens of µs per call).
    func!(lua, t, "drop", |_, ()| -> mlua::Result<()> {
        DROPPED.with(|d| d.set(true));
        Ok(())
    });
    Ok(t)
}

fn route_name(name: &LuaString) -> Option<Arc<str>> {
    let n = name.to_string_lossy();
    (!n.is_empty()).then(|| Arc::from(n.as_str()))
}

fn tm_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_relay", move |_, ()| {
        take_ctx(|ctx| match tm.t_relay(ctx) {
            Ok(()) => 1,
            Err(e) => {
                tracing::debug!(error = %e.reason(), "t_relay failed");
                LAST_ERROR.with(|l| l.set(Some(e)));
                -1
            }
        })
    });
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_reply", move |_,
                                   (code, reason): (
        u16,
        Option<LuaString>
    )| {
        let reason = reason.map(|r| bytes_of(&r));
        take_ctx(|ctx| match tm.t_reply(ctx, code, reason.as_deref(), &[]) {
            Ok(()) => 1,
            Err(e) => {
                LAST_ERROR.with(|l| l.set(Some(e)));
                -1
            }
        })
    });
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_newtran", move |_, ()| {
        take_ctx(|ctx| match tm.t_newtran(ctx) {
            Ok(true) => 1,
            Ok(false) => 0,
            Err(e) => {
                LAST_ERROR.with(|l| l.set(Some(e)));
                -1
            }
        })
    });
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_check_trans", move |_, ()| take_ctx(|ctx| {
        if tm.t_check_trans(ctx) { 1 } else { -1 }
    }));
    func!(lua, t, "t_on_failure", |_, name: LuaString| with_ctx(|c| {
        c.on_failure = route_name(&name)
    })
    .map(|_| 1));
    func!(lua, t, "t_on_branch", |_, name: LuaString| with_ctx(|c| {
        c.on_branch = route_name(&name)
    })
    .map(|_| 1));
    func!(lua, t, "t_on_reply", |_, name: LuaString| with_ctx(|c| c
        .on_reply =
        route_name(&name))
    .map(|_| 1));
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_next_contacts", move |_, ()| take_ctx(|ctx| {
        if tm.t_next_contacts(ctx) { 1 } else { -1 }
    }));
    // Kamailio needs t_load_contacts() before t_next_contacts(); here lookup() already
    // orders the contacts and t_relay() keeps the lower q groups, so it only says yes.
    func!(lua, t, "t_load_contacts", |_, ()| Ok(1));
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_is_canceled", move |_, ()| Ok(tm.t_is_canceled()));
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_branch_timeout", move |_, ()| Ok(
        tm.t_branch_timeout()
    ));
    let tm = Arc::clone(&m.tm);
    func!(lua, t, "t_get_status_code", move |_, ()| Ok(tm
        .t_get_status_code()
        .map_or(-1, i64::from)));
    Ok(t)
}

fn registrar_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let r = Arc::clone(&m.registrar);
    func!(lua, t, "save", move |_,
                                (table, flags): (
        LuaString,
        Option<u32>
    )| {
        let table = str_of(&table);
        take_ctx(|ctx| r.save(ctx, &table, flags.unwrap_or(0)))
    });
    let r = Arc::clone(&m.registrar);
    func!(lua, t, "lookup", move |_, table: LuaString| {
        let table = str_of(&table);
        with_ctx(|ctx| r.lookup(ctx, &table))
    });
    let r = Arc::clone(&m.registrar);
    func!(lua, t, "registered", move |_,
                                      (table, uri): (
        LuaString,
        Option<LuaString>
    )| {
        let table = str_of(&table);
        let uri = uri.map(|u| bytes_of(&u));
        with_ctx(|ctx| r.registered(ctx, &table, uri.as_deref()))
    });
    let r = Arc::clone(&m.registrar);
    func!(lua, t, "unregister", move |_,
                                      (table, uri): (
        LuaString,
        LuaString
    )| {
        Ok(r.unregister(&str_of(&table), &uri.as_bytes()))
    });
    Ok(t)
}

fn auth_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let a = Arc::clone(&m.auth);
    func!(lua, t, "enabled", move |_, ()| Ok(a.enabled()));
    for (name, www) in [("www_authenticate", true), ("proxy_authenticate", false)] {
        let a = Arc::clone(&m.auth);
        let core = Arc::clone(&m.core);
        t.set(
            name,
            lua.create_function(move |_, realm: Option<LuaString>| {
                let realm = realm.map(|r| bytes_of(&r)).unwrap_or_default();
                let (rc, parked) = take_ctx(|ctx| {
                    let rc = if www {
                        a.www_authenticate(&core, ctx, &realm)
                    } else {
                        a.proxy_authenticate(&core, ctx, &realm)
                    };
                    (rc, ctx.park.is_some())
                })?;
                // Parked: set aside until its subscriber is read; the Lua wrapper of
                // [`STOPPERS`] stops the script and the request runs again from the top.
                Ok((rc, parked))
            })?,
        )?;
    }
    let a = Arc::clone(&m.auth);
    func!(lua, t, "consume_credentials", move |_, ()| with_ctx(
        |ctx| a.consume_credentials(ctx) as i64
    ));
    let a = Arc::clone(&m.auth);
    func!(lua, t, "subscriber_exists", move |_,
                                             (user, domain): (
        Option<LuaString>,
        Option<LuaString>
    )| {
        Ok(match (user, domain) {
            (Some(u), Some(d)) => a.subscriber_exists(&u.as_bytes(), &d.as_bytes()),
            _ => false,
        })
    });
    let a = Arc::clone(&m.auth);
    let core = Arc::clone(&m.core);
    func!(lua, t, "is_local_domain", move |_, d: Option<LuaString>| {
        Ok(d.is_some_and(|d| a.is_local_domain(&core, &d.as_bytes())))
    });
    Ok(t)
}

fn subscriber_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let a = Arc::clone(&m.auth);
    func!(lua, t, "attr", move |lua, name: LuaString| {
        let name = str_of(&name);
        match with_ctx(|ctx| a.subscriber_attr(ctx, &name))? {
            Some(v) => Ok(Value::String(lua.create_string(v)?)),
            None => Ok(Value::Nil),
        }
    });
    Ok(t)
}

fn pike_table(lua: &Lua, m: &Modules) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let p = Arc::clone(&m.protect);
    let core = Arc::clone(&m.core);
    func!(lua, t, "pike_check_req", move |_, ()| with_ctx(
        // A request that runs again after a batched read was counted the first time.
        |ctx| if ctx.resumed {
            1
        } else {
            p.pike_check_req(&core, ctx)
        }
    ));
    Ok(t)
}
