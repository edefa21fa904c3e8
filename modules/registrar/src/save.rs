//! REGISTER processing, RFC 3261 §10.3 (Kamailio's `save()`).
//!
//! Everything that can be decided from the request alone (steps 2, 5, 6 and the expiry of
//! each contact) is decided before the location table is touched; the per-AOR part (step 7:
//! Call-ID/CSeq ordering, binding identity, `max_contacts`) runs inside one
//! [`Location::update`](geosip_usrloc::Location::update), so it is atomic per AOR and a
//! refusal leaves nothing half-stored.

use bytes::Bytes;
use geosip_core::ctx::MsgCtx;
use geosip_store::location::limits;
use geosip_usrloc::{
    AorEntryMut, Binding, BindingKey, ContactInfo, Error as UlError, Received, Transport, Upserted,
};
use rand::Rng as _;
use sip_msg::{Contact, HeaderName, NameAddr, Uri};
use sip_transport::Proto;

use crate::aor::{AorError, aor_host, aor_user, canonical_aor, push_user, uri_equivalent};
use crate::config::{MaxContactsMode, MinExpiresMode};
use crate::format::{contact_value, http_date};
use crate::metrics::RejectReason;
use crate::{Registrar, SAVE_NO_EXPIRES_RANGE, SAVE_NO_REPLY, SAVE_ONE_CONTACT};

/// How long after a binding was written a REGISTER with the same Call-ID and CSeq is taken
/// for a retransmission of the one that wrote it: 64 × T1, the lifetime of a non-INVITE client
/// transaction (RFC 3261 §17.1.2.2, Timer F). Kamailio's `cseq_delay` (20 s) plays this role.
pub const RETRANSMISSION_WINDOW_MS: u64 = 32_000;

/// Option tags a REGISTER may `Require` (RFC 3261 §10.3 step 2).
const SUPPORTED_TAGS: [&[u8]; 1] = [b"path"];

/// The result of processing one REGISTER: the return code for the script, the reply to send
/// (status 0 = none) and, on success, the bindings the 200 OK lists.
#[derive(Clone, Debug)]
pub struct SaveOutcome {
    /// Kamailio return code: 1 inserted, 2 updated, 3 deleted, 4 contacts returned (query);
    /// -1 error, -2 too many contacts.
    pub code: i32,
    /// Status of the reply (200 on success); 0 when no reply should be sent (not a REGISTER).
    pub status: u16,
    /// Why it was refused (`None` on success).
    pub reject: Option<RejectReason>,
    /// Header lines of the reply (Contact, Date, Path, Supported, Min-Expires, Retry-After,
    /// Unsupported, P-Registrar-Error).
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// The AOR's current bindings (success only), highest q first.
    pub bindings: Vec<Binding>,
}

/// A refusal: why, and what the reply carries besides its status.
#[derive(Debug)]
pub(crate) struct Failure {
    reason: RejectReason,
    /// `P-Registrar-Error` text (Kamailio's error_info).
    info: &'static str,
    /// `Unsupported` value (420).
    unsupported: Option<Vec<u8>>,
}

impl Failure {
    fn new(reason: RejectReason, info: &'static str) -> Failure {
        Failure {
            reason,
            info,
            unsupported: None,
        }
    }
    fn bad(info: &'static str) -> Failure {
        Failure::new(RejectReason::BadRequest, info)
    }
}

/// One Contact of the request, with its granted expiry.
#[derive(Debug)]
struct ReqContact {
    uri: Bytes,
    /// Granted seconds; 0 removes the binding.
    expires: u32,
    q: u16,
    instance: Bytes,
    reg_id: u32,
}

impl ReqContact {
    fn key(&self) -> OwnedKey {
        if self.instance.is_empty() {
            OwnedKey::Contact(self.uri.clone())
        } else {
            OwnedKey::Instance(self.instance.clone(), self.reg_id)
        }
    }

    /// Whether stored binding `b` is the one this contact names: RFC 5626 instance + reg-id,
    /// or (RFC 3261) an equivalent contact URI. A contact with an instance also takes over a
    /// binding of the same URI registered without one.
    fn matches(&self, b: &Binding) -> bool {
        if self.instance.is_empty() {
            uri_equivalent(&b.contact, &self.uri)
        } else {
            (b.instance == self.instance && b.reg_id == self.reg_id)
                || (b.instance.is_empty() && uri_equivalent(&b.contact, &self.uri))
        }
    }
}

/// A binding identity that does not borrow the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnedKey {
    Instance(Bytes, u32),
    Contact(Bytes),
}

impl OwnedKey {
    fn of(b: &Binding) -> OwnedKey {
        match b.key() {
            BindingKey::Instance { instance, reg_id } => {
                OwnedKey::Instance(Bytes::copy_from_slice(instance), reg_id)
            }
            BindingKey::Contact(c) => OwnedKey::Contact(Bytes::copy_from_slice(c)),
        }
    }
    fn as_key(&self) -> BindingKey<'_> {
        match self {
            OwnedKey::Instance(i, r) => BindingKey::Instance {
                instance: i,
                reg_id: *r,
            },
            OwnedKey::Contact(c) => BindingKey::Contact(c),
        }
    }
}

#[derive(Debug)]
enum Body {
    /// No Contact: list the bindings (return code 4).
    Query,
    /// `Contact: *` with `Expires: 0`.
    Star,
    Contacts(Vec<ReqContact>),
}

#[derive(Debug)]
struct Request {
    aor: Vec<u8>,
    body: Body,
    call_id: Bytes,
    cseq: u32,
    path: Bytes,
    received: Option<Received>,
    user_agent: Bytes,
    echo_path: bool,
}

/// What the update did.
#[derive(Debug, Default)]
struct Applied {
    bindings: Vec<Binding>,
    inserted: u32,
    updated: u32,
    deleted: u32,
}

fn transport_of(p: Proto) -> Transport {
    match p {
        Proto::Udp => Transport::Udp,
        Proto::Tcp => Transport::Tcp,
        Proto::Tls => Transport::Tls,
        Proto::Ws => Transport::Ws,
        Proto::Wss => Transport::Wss,
    }
}

fn utf8(v: &[u8]) -> bool {
    std::str::from_utf8(v).is_ok() && !v.contains(&0)
}

/// At most `max` bytes of valid UTF-8 from `v` (lossy, cut at a character boundary).
fn bounded_text(v: &[u8], max: usize) -> Bytes {
    let s = String::from_utf8_lossy(v).replace('\0', "");
    let mut end = s.len().min(max);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    Bytes::copy_from_slice(&s.as_bytes()[..end])
}

impl Registrar {
    /// Step 7's expiry of one contact: `requested` is the contact's `expires` parameter or
    /// the Expires header (`None`: neither, use `default_expires`).
    fn grant(&self, requested: Option<u32>, flags: u32) -> Result<u32, Failure> {
        let c = &self.cfg;
        let mut e = match requested {
            Some(0) => return Ok(0),
            Some(e) if e < c.min_expires => {
                // RFC 3261 §10.3: 423 only for a request below one hour.
                if c.min_expires_mode == MinExpiresMode::Reject && e < 3600 {
                    return Err(Failure::new(
                        RejectReason::IntervalTooBrief,
                        "Interval too brief",
                    ));
                }
                c.min_expires
            }
            Some(e) => e,
            None => c.default_expires,
        };
        if c.max_expires != 0 {
            e = e.min(c.max_expires);
        }
        if c.expires_range > 0 && flags & SAVE_NO_EXPIRES_RANGE == 0 {
            let spread = u64::from(e) * u64::from(c.expires_range) / 100;
            let lo = (u64::from(e) - spread)
                .max(u64::from(c.min_expires.min(e)))
                .max(1);
            e = rand::rng().random_range(lo..=u64::from(e)) as u32;
        }
        Ok(e)
    }

    fn parse_request(&self, ctx: &MsgCtx, flags: u32) -> Result<Request, Failure> {
        let msg = &ctx.msg;
        let cfg = &self.cfg;

        // Step 2: extensions the REGISTER requires.
        let unsupported: Vec<&[u8]> = msg
            .require()
            .filter(|t| !SUPPORTED_TAGS.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            return Err(Failure {
                reason: RejectReason::BadExtension,
                info: "Extension not supported",
                unsupported: Some(unsupported.join(&b", "[..])),
            });
        }

        // Step 5: the address-of-record, from To, in canonical form.
        let to = msg.to().ok_or(Failure::bad("To header not found"))?;
        let aor = canonical_aor(to.uri_raw(), cfg.case_sensitive_user).map_err(|e| match e {
            AorError::TooLong => Failure::new(RejectReason::TooLong, e.as_str()),
            e => Failure::bad(e.as_str()),
        })?;
        if cfg.check_domain && !self.core.myself.is_local_domain(aor_host(&aor)) {
            return Err(Failure::new(
                RejectReason::ForeignDomain,
                "Domain not served here",
            ));
        }
        // Step 4: the authenticated user may only register its own AOR.
        if cfg.require_auth_user_match
            && let Some((user, _realm)) = &ctx.auth_user
        {
            let mut own = Vec::with_capacity(user.len());
            push_user(&mut own, user, cfg.case_sensitive_user);
            if own != aor_user(&aor) {
                return Err(Failure::new(
                    RejectReason::AuthMismatch,
                    "To user is not the authenticated user",
                ));
            }
        }

        let call_id = msg
            .call_id()
            .map(sip_msg::trim_lws)
            .filter(|c| !c.is_empty())
            .ok_or(Failure::bad("Call-ID header not found"))?;
        if call_id.len() > limits::CALL_ID {
            return Err(Failure::new(RejectReason::TooLong, "Callid too long"));
        }
        if !utf8(call_id) {
            return Err(Failure::bad("Call-ID is not UTF-8"));
        }
        let cseq = msg.cseq().ok_or(Failure::bad("CSeq header not found"))?.seq;
        let expires_hdr = match msg.header(HeaderName::Expires) {
            None => None,
            Some(_) => Some(msg.expires().ok_or(Failure::bad("Expires parse error"))?),
        };

        // Step 6: the Contact values.
        let mut values = 0usize;
        let mut star = false;
        let mut contacts = Vec::new();
        for v in msg.values(HeaderName::Contact) {
            values += 1;
            if values > cfg.max_contacts_per_request as usize {
                return Err(Failure::new(
                    RejectReason::TooLong,
                    "Too many contacts in request",
                ));
            }
            match Contact::parse(v).map_err(|_| Failure::bad("Contact parse error"))? {
                Contact::Wildcard => star = true,
                Contact::Addr(a) => contacts.push(self.parse_contact(&a, expires_hdr, flags)?),
            }
        }
        if star && values > 1 {
            return Err(Failure::new(
                RejectReason::BadWildcard,
                "* used in contact and more than 1 contact",
            ));
        }
        if star && expires_hdr != Some(0) {
            return Err(Failure::new(
                RejectReason::BadWildcard,
                "* used in contact and expires is not zero",
            ));
        }

        let mut path = Vec::new();
        if cfg.use_path {
            for v in msg.values(HeaderName::Path) {
                NameAddr::parse(v).map_err(|_| Failure::bad("Path parse error"))?;
                if !path.is_empty() {
                    path.extend_from_slice(b", ");
                }
                path.extend_from_slice(v);
                if path.len() > limits::PATH {
                    return Err(Failure::new(RejectReason::TooLong, "Path too long"));
                }
            }
            if !utf8(&path) {
                return Err(Failure::bad("Path parse error"));
            }
        }
        let echo_path =
            !path.is_empty() && msg.supported().any(|t| t.eq_ignore_ascii_case(b"path"));

        let body = if star {
            Body::Star
        } else if contacts.is_empty() {
            Body::Query
        } else {
            Body::Contacts(contacts)
        };
        Ok(Request {
            aor,
            body,
            call_id: Bytes::copy_from_slice(call_id),
            cseq,
            path: Bytes::from(path),
            received: Some(Received {
                transport: transport_of(ctx.rx.proto),
                source: ctx.rx.src,
                local: ctx.rx.local,
            }),
            user_agent: msg
                .user_agent()
                .map(|u| bounded_text(u, limits::USER_AGENT))
                .unwrap_or_default(),
            echo_path,
        })
    }

    fn parse_contact(
        &self,
        a: &NameAddr<'_>,
        expires_hdr: Option<u32>,
        flags: u32,
    ) -> Result<ReqContact, Failure> {
        let uri = sip_msg::trim_lws(a.uri_raw());
        if Uri::parse(uri).is_err() {
            return Err(Failure::bad("Contact parse error"));
        }
        if uri.len() > limits::CONTACT {
            return Err(Failure::new(
                RejectReason::TooLong,
                "Contact/received too long",
            ));
        }
        if !utf8(uri) {
            return Err(Failure::bad("Contact parse error"));
        }
        let params = a.params();
        let requested = if params.contains(b"expires") {
            Some(
                a.expires()
                    .ok_or(Failure::bad("Invalid expires param in contact"))?,
            )
        } else {
            expires_hdr
        };
        let q = if params.contains(b"q") {
            a.q().ok_or(Failure::bad("Invalid q param in contact"))?
        } else {
            1000
        };
        let (instance, reg_id) = match a.sip_instance() {
            None => (Bytes::new(), 0),
            Some(i) if i.is_empty() || !utf8(&i) => {
                return Err(Failure::bad("Invalid +sip.instance"));
            }
            Some(i) if i.len() > limits::INSTANCE => {
                return Err(Failure::new(
                    RejectReason::TooLong,
                    "+sip.instance too long",
                ));
            }
            Some(i) => {
                let reg_id = if params.contains(b"reg-id") {
                    a.reg_id()
                        .filter(|r| *r > 0)
                        .ok_or(Failure::bad("Invalid Reg-Id number"))?
                } else {
                    0
                };
                (Bytes::copy_from_slice(&i), reg_id)
            }
        };
        Ok(ReqContact {
            uri: Bytes::copy_from_slice(uri),
            expires: self.grant(requested, flags)?,
            q,
            instance,
            reg_id,
        })
    }

    /// Step 7 for a list of contacts, on the AOR's live bindings.
    fn apply_contacts(
        &self,
        e: &mut AorEntryMut,
        req: &Request,
        contacts: &[ReqContact],
        flags: u32,
    ) -> Result<Applied, Failure> {
        let now_s = e.now_ms() / 1000;
        let before = e.len();
        let max = self.cfg.max_contacts as usize;
        let mut a = Applied::default();
        let mut touched: Vec<OwnedKey> = Vec::new();
        for c in contacts {
            let mut matched: Vec<OwnedKey> = Vec::new();
            let mut retransmission = false;
            for b in e.bindings().iter().filter(|b| c.matches(b)) {
                if b.call_id == req.call_id {
                    if req.cseq < b.cseq {
                        return Err(Failure::new(
                            RejectReason::OutOfOrder,
                            "Out of order request",
                        ));
                    }
                    if req.cseq == b.cseq {
                        // A retransmission arrives within Timer F of the original; the same
                        // CSeq later is a UA reusing it, refused as the RFC says.
                        if e.now_ms().saturating_sub(b.last_modified) > RETRANSMISSION_WINDOW_MS {
                            return Err(Failure::new(
                                RejectReason::OutOfOrder,
                                "Out of order request",
                            ));
                        }
                        retransmission = true;
                    }
                }
                matched.push(OwnedKey::of(b));
            }
            let key = c.key();
            if retransmission {
                // The same REGISTER again (a retransmission answered statelessly): the
                // binding already reflects it.
                touched.push(key);
                continue;
            }
            if c.expires == 0 {
                for k in &matched {
                    if e.remove(k.as_key()).is_some() {
                        a.deleted += 1;
                    }
                }
                continue;
            }
            let mut replaced = false;
            for k in matched.iter().filter(|k| **k != key) {
                replaced |= e.remove(k.as_key()).is_some();
            }
            if max > 0
                && self.cfg.max_contacts_mode == MaxContactsMode::DropOldest
                && e.get(key.as_key()).is_none()
            {
                while e.len() >= max {
                    let Some(victim) = oldest(e, &touched, &key) else {
                        break;
                    };
                    if e.remove(victim.as_key()).is_none() {
                        break;
                    }
                    a.deleted += 1;
                }
            }
            let info = ContactInfo {
                contact: c.uri.clone(),
                expires: now_s + u64::from(c.expires),
                q: c.q,
                call_id: req.call_id.clone(),
                cseq: req.cseq,
                received: req.received,
                path: req.path.clone(),
                user_agent: req.user_agent.clone(),
                instance: c.instance.clone(),
                reg_id: c.reg_id,
                flags: 0,
            };
            match e.upsert(info) {
                Ok(Upserted::Inserted) if !replaced => a.inserted += 1,
                Ok(_) => a.updated += 1,
                Err(UlError::TooManyBindings(_)) => {
                    return Err(Failure::new(
                        RejectReason::TooManyContacts,
                        "Too many registered contacts",
                    ));
                }
                Err(UlError::InvalidBinding(_)) => {
                    return Err(Failure::new(
                        RejectReason::TooLong,
                        "Contact/received too long",
                    ));
                }
                Err(_) => {
                    return Err(Failure::new(
                        RejectReason::StoreError,
                        "usrloc_contact_insert failed",
                    ));
                }
            }
            touched.push(key);
        }
        if flags & SAVE_ONE_CONTACT != 0
            && let Some(keep) = contacts.iter().find(|c| c.expires > 0).map(ReqContact::key)
        {
            let others: Vec<OwnedKey> = e
                .bindings()
                .iter()
                .map(OwnedKey::of)
                .filter(|k| *k != keep)
                .collect();
            for k in others {
                if e.remove(k.as_key()).is_some() {
                    a.deleted += 1;
                }
            }
        }
        if max > 0
            && self.cfg.max_contacts_mode == MaxContactsMode::Reject
            && e.len() > max
            && e.len() > before
        {
            return Err(Failure::new(
                RejectReason::TooManyContacts,
                "Too many registered contacts",
            ));
        }
        a.bindings = e.bindings().to_vec();
        Ok(a)
    }

    /// `Contact: *` (step 6): remove every binding, unless one of the same Call-ID has a CSeq
    /// that is not lower than the request's.
    fn apply_star(e: &mut AorEntryMut, req: &Request) -> Result<Applied, Failure> {
        if e.bindings()
            .iter()
            .any(|b| b.call_id == req.call_id && req.cseq <= b.cseq)
        {
            return Err(Failure::new(
                RejectReason::OutOfOrder,
                "Out of order request",
            ));
        }
        Ok(Applied {
            deleted: e.clear() as u32,
            ..Applied::default()
        })
    }

    /// Processes the REGISTER of `ctx` (RFC 3261 §10.3) and returns what to answer, without
    /// sending anything. [`save_at`](Self::save_at) is this plus the reply.
    pub fn process_register(
        &self,
        ctx: &MsgCtx,
        table: &str,
        flags: u32,
        now_ms: u64,
    ) -> SaveOutcome {
        if !ctx.is_method(b"REGISTER") {
            return SaveOutcome {
                code: -1,
                status: 0,
                reject: None,
                headers: Vec::new(),
                bindings: Vec::new(),
            };
        }
        if table != crate::TABLE {
            self.log_bad(
                ctx,
                &format!(
                    "save: unknown location table `{table}` (only `{}`)",
                    crate::TABLE
                ),
            );
            return self.failure(Failure::new(
                RejectReason::StoreError,
                "Unknown location table",
            ));
        }
        let req = match self.parse_request(ctx, flags) {
            Ok(r) => r,
            Err(f) => {
                if f.reason != RejectReason::IntervalTooBrief {
                    self.log_bad(ctx, &format!("REGISTER refused: {}", f.info));
                }
                return self.failure(f);
            }
        };
        let now_s = now_ms / 1000;
        let (code, result) = match &req.body {
            Body::Query => (
                4,
                self.loc.lookup(&req.aor, now_ms).map(|bindings| {
                    Ok(Applied {
                        bindings,
                        ..Applied::default()
                    })
                }),
            ),
            Body::Star => (
                3,
                self.loc.update(&req.aor, now_ms, |e| {
                    rolled_back(e, |e| Self::apply_star(e, &req))
                }),
            ),
            Body::Contacts(cs) => (
                0,
                self.loc.update(&req.aor, now_ms, |e| {
                    rolled_back(e, |e| self.apply_contacts(e, &req, cs, flags))
                }),
            ),
        };
        let applied = match result {
            Ok(Ok(a)) => a,
            Ok(Err(f)) => return self.failure(f),
            Err(err) => {
                let f = match &err {
                    UlError::Store(se) if se.is_unavailable() => {
                        Failure::new(RejectReason::StoreUnavailable, "Location store unavailable")
                    }
                    UlError::InvalidBinding(_) => {
                        Failure::new(RejectReason::TooLong, "Address Of Record too long")
                    }
                    UlError::TooManyBindings(_) => Failure::new(
                        RejectReason::TooManyContacts,
                        "Too many registered contacts",
                    ),
                    _ => Failure::new(RejectReason::StoreError, "Location store error"),
                };
                tracing::warn!(target: "geosip_registrar", aor = %String::from_utf8_lossy(&req.aor), error = %err, "REGISTER not stored");
                return self.failure(f);
            }
        };
        let m = &self.metrics;
        m.accepted.inc();
        m.inserted.add(u64::from(applied.inserted));
        m.updated.add(u64::from(applied.updated));
        m.deleted.add(u64::from(applied.deleted));
        let code = match code {
            0 if applied.inserted > 0 => 1,
            0 if applied.updated > 0 => 2,
            0 => match &req.body {
                Body::Contacts(cs) if cs.iter().any(|c| c.expires > 0) => 2,
                _ => 3,
            },
            c => c,
        };
        let mut bindings = applied.bindings;
        bindings.retain(|b| b.is_live(now_s));
        bindings.sort_by(|a, b| b.q.cmp(&a.q).then(b.last_modified.cmp(&a.last_modified)));
        let mut headers: Vec<(&'static str, Vec<u8>)> = Vec::with_capacity(bindings.len() + 3);
        for b in &bindings {
            let mut v = Vec::with_capacity(b.contact.len() + 64);
            contact_value(b, now_s, &mut v);
            headers.push(("Contact", v));
        }
        headers.push(("Date", http_date(now_s).into_bytes()));
        if req.echo_path {
            // RFC 3327 §5.3: the UA supports Path, so it learns the route to itself.
            headers.push(("Path", req.path.to_vec()));
            headers.push(("Supported", b"path".to_vec()));
        }
        SaveOutcome {
            code,
            status: 200,
            reject: None,
            headers,
            bindings,
        }
    }

    fn failure(&self, f: Failure) -> SaveOutcome {
        self.metrics.reject(f.reason);
        let status = f.reason.status();
        let mut headers: Vec<(&'static str, Vec<u8>)> = Vec::new();
        match f.reason {
            RejectReason::IntervalTooBrief => {
                headers.push(("Min-Expires", self.cfg.min_expires.to_string().into_bytes()))
            }
            RejectReason::BadExtension => {
                headers.push(("Unsupported", f.unsupported.unwrap_or_default()))
            }
            // Temporary conditions: tell the phone when to come back, spread over
            // [retry_after, 1.5 × retry_after] so that a refused crowd does not return at once.
            RejectReason::TooManyContacts
            | RejectReason::StoreUnavailable
            | RejectReason::StoreError
                if self.cfg.retry_after > 0 =>
            {
                let base = self.cfg.retry_after;
                let v = rand::rng().random_range(base..=base.saturating_add(base / 2));
                headers.push(("Retry-After", v.to_string().into_bytes()));
            }
            _ => {}
        }
        headers.push(("P-Registrar-Error", f.info.as_bytes().to_vec()));
        let code = if f.reason == RejectReason::TooManyContacts {
            -2
        } else {
            -1
        };
        SaveOutcome {
            code,
            status,
            reject: Some(f.reason),
            headers,
            bindings: Vec::new(),
        }
    }

    /// Sends the reply of an outcome (nothing when its status is 0).
    pub fn send_reply(&self, ctx: &mut MsgCtx, out: &SaveOutcome) {
        if out.status == 0 {
            return;
        }
        let hdrs: Vec<(&[u8], &[u8])> = out
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), &v[..]))
            .collect();
        if let Err(e) = self.core.reply(ctx, out.status, None, &hdrs, None) {
            self.log_bad(
                ctx,
                &format!("cannot send the {} reply to a REGISTER: {e:?}", out.status),
            );
        }
    }

    /// [`save`](Self::save) at an explicit time (unix ms).
    pub fn save_at(&self, ctx: &mut MsgCtx, table: &str, flags: u32, now_ms: u64) -> i32 {
        let out = self.process_register(ctx, table, flags, now_ms);
        if flags & SAVE_NO_REPLY == 0 {
            self.send_reply(ctx, &out);
        }
        out.code
    }
}

/// Runs `f` on the entry and drops its changes if it fails, so a refused REGISTER stores
/// nothing.
fn rolled_back<T>(
    e: &mut AorEntryMut,
    f: impl FnOnce(&mut AorEntryMut) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let r = f(e);
    if r.is_err() {
        e.rollback();
    }
    r
}

/// The binding to drop for `drop-oldest`: the least recently modified one this request did
/// not touch, else the earliest one it did (never `keep`).
fn oldest(e: &AorEntryMut, touched: &[OwnedKey], keep: &OwnedKey) -> Option<OwnedKey> {
    let untouched = e
        .bindings()
        .iter()
        .map(|b| (b.last_modified, OwnedKey::of(b)))
        .filter(|(_, k)| !touched.contains(k) && k != keep)
        .min_by_key(|(lm, _)| *lm)
        .map(|(_, k)| k);
    untouched.or_else(|| {
        touched
            .iter()
            .find(|k| *k != keep && e.get(k.as_key()).is_some())
            .cloned()
    })
}
