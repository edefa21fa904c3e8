//! The usrloc RPC methods (Kamailio's names): `ul.dump`, `ul.lookup`, `ul.rm`,
//! `ul.rm_contact`, `ul.add`, `ul.flush`, `ul.stats`. Params are positional strings; like
//! `kamcmd`, a leading table name (`location`) is accepted and skipped.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use geosip_core::rpc::{RpcError, RpcRegistry, RpcResult, param_opt_str, param_str};
use geosip_store::location::limits;
use geosip_usrloc::{Binding, ContactInfo, Upserted, unix_ms};
use serde_json::{Value, json};
use sip_msg::{NameAddr, Uri};

use crate::Registrar;
use crate::aor::{canonical_aor, uri_equivalent};

/// Default and largest number of AORs in one `ul.dump` answer.
pub const DUMP_DEFAULT: usize = 1000;
/// Largest `ul.dump` page.
pub const DUMP_MAX: usize = 10_000;

fn not_found(what: &str) -> RpcError {
    RpcError {
        code: 404,
        message: format!("{what} not found"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A binding as `ul.dump` / `ul.lookup` show it.
pub fn binding_json(b: &Binding, now_s: u64) -> Value {
    json!({
        "contact": text(&b.contact),
        "expires_in": b.expires.saturating_sub(now_s),
        "expires": b.expires,
        "q": f64::from(b.q) / 1000.0,
        "call_id": text(&b.call_id),
        "cseq": b.cseq,
        "received": b.received.map(|r| r.source_text()),
        "socket": b.received.map(|r| r.local_text()),
        "path": (!b.path.is_empty()).then(|| text(&b.path)),
        "user_agent": text(&b.user_agent),
        "instance": (!b.instance.is_empty()).then(|| text(&b.instance)),
        "reg_id": b.reg_id,
        "flags": b.flags,
        "last_modified_ms": b.last_modified,
        "ruid": b.ruid.to_string(),
        "server_id": b.server_id,
    })
}

/// Params without a leading table name.
fn args(p: &[Value]) -> &[Value] {
    match p.first() {
        Some(Value::String(s)) if s == crate::TABLE && p.len() > 1 => &p[1..],
        _ => p,
    }
}

impl Registrar {
    fn rpc_aor(&self, p: &[Value], i: usize) -> Result<Vec<u8>, RpcError> {
        let s = param_str(p, i, "AOR")?;
        let uri = if s.contains(':') {
            s.to_string()
        } else {
            format!("sip:{s}")
        };
        canonical_aor(uri.as_bytes(), self.cfg.case_sensitive_user).map_err(|e| {
            RpcError::invalid_params(format!("AOR `{s}`: {e} (expected sip:user@domain)"))
        })
    }

    fn rpc_failed(e: impl std::fmt::Display) -> RpcError {
        RpcError::failed(format!("location store: {e}"))
    }

    fn rpc_dump(&self, p: &[Value]) -> RpcResult {
        let num = |i: usize, name: &str, dflt: usize| -> Result<usize, RpcError> {
            match param_opt_str(p, i) {
                None => Ok(dflt),
                Some(s) => s.parse().map_err(|_| {
                    RpcError::invalid_params(format!("{name} must be a number, got `{s}`"))
                }),
            }
        };
        let limit = num(0, "LIMIT", DUMP_DEFAULT)?.clamp(1, DUMP_MAX);
        let offset = num(1, "OFFSET", 0)?;
        let now = unix_ms();
        let now_s = now / 1000;
        let mut aors = Vec::new();
        let mut more = false;
        for (i, a) in self.loc.dump(now).enumerate() {
            let a = a.map_err(Self::rpc_failed)?;
            if i < offset {
                continue;
            }
            if aors.len() == limit {
                more = true;
                break;
            }
            let contacts: Vec<Value> = a.bindings.iter().map(|b| binding_json(b, now_s)).collect();
            aors.push(json!({"aor": text(&a.aor), "contacts": contacts}));
        }
        let count = aors.len();
        Ok(json!({
            "aors": aors,
            "offset": offset,
            "count": count,
            "next_offset": more.then_some(offset + count),
            "total_aors": self.loc.stats().aors,
        }))
    }

    fn rpc_lookup(&self, p: &[Value]) -> RpcResult {
        let aor = self.rpc_aor(p, 0)?;
        let now = unix_ms();
        let v = self.loc.lookup(&aor, now).map_err(Self::rpc_failed)?;
        if v.is_empty() {
            return Err(not_found("AOR"));
        }
        let contacts: Vec<Value> = v.iter().map(|b| binding_json(b, now / 1000)).collect();
        Ok(json!({"aor": text(&aor), "contacts": contacts}))
    }

    fn rpc_rm(&self, p: &[Value]) -> RpcResult {
        let aor = self.rpc_aor(p, 0)?;
        let n = self
            .loc
            .unregister(&aor, unix_ms())
            .map_err(Self::rpc_failed)?;
        if n == 0 {
            return Err(not_found("AOR"));
        }
        self.metrics.deleted.add(n as u64);
        Ok(json!({"aor": text(&aor), "removed": n}))
    }

    fn rpc_rm_contact(&self, p: &[Value]) -> RpcResult {
        let aor = self.rpc_aor(p, 0)?;
        let contact = strip_angle(param_str(p, 1, "CONTACT")?);
        let removed = self
            .loc
            .update(&aor, unix_ms(), |e| {
                let keys: Vec<Binding> = e
                    .bindings()
                    .iter()
                    .filter(|b| uri_equivalent(&b.contact, contact.as_bytes()))
                    .cloned()
                    .collect();
                for b in &keys {
                    e.remove(b.key());
                }
                keys.len()
            })
            .map_err(Self::rpc_failed)?;
        if removed == 0 {
            return Err(not_found("contact"));
        }
        self.metrics.deleted.add(removed as u64);
        Ok(json!({"aor": text(&aor), "contact": contact, "removed": removed}))
    }

    fn rpc_add(&self, p: &[Value]) -> RpcResult {
        let aor = self.rpc_aor(p, 0)?;
        let contact = strip_angle(param_str(p, 1, "CONTACT")?);
        if Uri::parse(contact.as_bytes()).is_err() || contact.len() > limits::CONTACT {
            return Err(RpcError::invalid_params(format!(
                "CONTACT `{contact}` is not a URI of at most {} bytes",
                limits::CONTACT
            )));
        }
        let expires = match param_opt_str(p, 2) {
            None => self.cfg.default_expires,
            Some(s) => s.parse::<u32>().ok().filter(|e| *e > 0).ok_or_else(|| {
                RpcError::invalid_params(format!("EXPIRES must be seconds above 0, got `{s}`"))
            })?,
        };
        let q = match param_opt_str(p, 3) {
            None => 1000,
            Some(s) => NameAddr::parse(format!("<sip:x>;q={s}").as_bytes())
                .ok()
                .and_then(|a| a.q())
                .ok_or_else(|| {
                    RpcError::invalid_params(format!("Q must be a qvalue such as 0.5, got `{s}`"))
                })?,
        };
        let mut path = String::new();
        for i in 4..p.len() {
            let hop = param_str(p, i, "PATH")?;
            if NameAddr::parse(hop.as_bytes()).is_err() {
                return Err(RpcError::invalid_params(format!(
                    "PATH `{hop}` is not a URI such as <sip:edge.example.com;lr>"
                )));
            }
            if !path.is_empty() {
                path.push_str(", ");
            }
            path.push_str(hop);
        }
        let now = unix_ms();
        let info = ContactInfo {
            contact: Bytes::from(contact.clone()),
            expires: now / 1000 + u64::from(expires),
            q,
            call_id: Bytes::from_static(b"ul.add"),
            cseq: 1,
            path: Bytes::from(path),
            user_agent: Bytes::from_static(b"geosip ul.add"),
            ..ContactInfo::default()
        };
        let r = self.loc.add(&aor, info, now).map_err(Self::rpc_failed)?;
        Ok(json!({
            "aor": text(&aor),
            "contact": contact,
            "expires": expires,
            "result": if r == Upserted::Inserted { "inserted" } else { "updated" },
        }))
    }

    fn rpc_flush(&self) -> RpcResult {
        let n = self.loc.flush().map_err(Self::rpc_failed)?;
        Ok(json!({"db_mode": self.loc.mode().as_str(), "flushed_aors": n}))
    }

    fn rpc_stats(&self) -> RpcResult {
        let usrloc =
            serde_json::to_value(self.loc.stats()).map_err(|e| RpcError::failed(e.to_string()))?;
        Ok(json!({"usrloc": usrloc, "registrar": self.metrics.json()}))
    }
}

fn strip_angle(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(t)
        .to_string()
}

/// Registers the `ul.*` methods; they hold a weak reference to the registrar.
pub(crate) fn register(rpc: &RpcRegistry, reg: &Arc<Registrar>) {
    fn with(w: &Weak<Registrar>, f: impl FnOnce(&Registrar) -> RpcResult) -> RpcResult {
        match w.upgrade() {
            Some(r) => f(&r),
            None => Err(RpcError::failed("the registrar is stopped")),
        }
    }
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.dump",
        "[LIMIT [OFFSET]]",
        "List AORs with their contacts (expires in, q, received, socket, path, user agent, instance...). At most LIMIT AORs (default 1000, max 10000) from OFFSET; `next_offset` continues.",
        move |p| with(&w, |r| r.rpc_dump(args(p))),
    );
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.lookup",
        "AOR",
        "The live contacts of an AOR, highest q first.",
        move |p| with(&w, |r| r.rpc_lookup(args(p))),
    );
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.rm",
        "AOR",
        "Remove every contact of an AOR.",
        move |p| with(&w, |r| r.rpc_rm(args(p))),
    );
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.rm_contact",
        "AOR CONTACT",
        "Remove one contact (URI compared per RFC 3261) of an AOR.",
        move |p| with(&w, |r| r.rpc_rm_contact(args(p))),
    );
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.add",
        "AOR CONTACT [EXPIRES [Q [PATH...]]]",
        "Add or refresh a contact: EXPIRES seconds (default registrar.default_expires), Q a qvalue (0.5), PATH hops as <sip:host;lr>.",
        move |p| with(&w, |r| r.rpc_add(args(p))),
    );
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.flush",
        "",
        "Write-back mode: write every pending change to the store now.",
        move |_| with(&w, |r| r.rpc_flush()),
    );
    let w = Arc::downgrade(reg);
    rpc.register(
        "ul.stats",
        "",
        "Location table counts (AORs, contacts, expired...), store calls/errors/latency, registrar counters.",
        move |_| with(&w, |r| r.rpc_stats()),
    );
}
