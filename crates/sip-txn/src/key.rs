//! Transaction matching keys: RFC 3261 §17.1.3 (responses), §17.2.3 (requests, including
//! RFC 2543 matching) and §9.2 (CANCEL).
//!
//! A key is a 128-bit xxh3 hash of the matching fields, length-prefixed and domain-separated,
//! so a lookup hashes a few dozen bytes once and compares 16 bytes; nothing is allocated and
//! no message bytes are kept alive by the table.

use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

/// The RFC 3261 magic cookie that starts every branch created by an RFC 3261 element.
///
/// RFC 3261 §8.1.1.7: "The branch ID inserted by an element compliant with this specification
/// MUST always begin with the characters "z9hG4bK". These 7 characters are used as a magic
/// cookie ... so that servers receiving the request can determine that the branch ID was
/// constructed in the fashion described by this specification".
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// Whether `branch` starts with the RFC 3261 magic cookie (case-sensitive), so that requests
/// are matched on it ([`TxnKey::for_request`]) rather than by RFC 2543 rules
/// ([`TxnKey::for_request_rfc2543`]).
///
/// A bare cookie with nothing after it is not unique and is treated as RFC 2543 (RFC 4475
/// §3.2.1 discusses such messages).
pub fn has_magic_cookie(branch: &[u8]) -> bool {
    branch.len() > MAGIC_COOKIE.len() && branch.starts_with(MAGIC_COOKIE)
}

/// A fixed-size, hashable transaction key: 128 bits of xxh3 over the length-prefixed
/// matching fields. Client and server keys are domain-separated, so one table may hold both.
///
/// # Collisions
///
/// Two different transactions collide only if their field tuples hash to the same 128 bits.
/// For `n` live keys the chance of any collision is about `n² / 2¹²⁹`: for ten million
/// transactions, ~10⁻²⁵. An attacker gains nothing from engineered collisions: to hit a
/// victim's transaction it must know the victim's fields (the branch is random), and whoever
/// knows them can spoof them byte for byte anyway; colliding its own transactions only merges
/// them. Table flooding is the table's hasher's business (hashbrown's default is seeded), not
/// the key's: equal keys are one entry, not a chain. So the key is not seeded and the same
/// fields give the same key on every thread and every run.
///
/// # Comparison rules
///
/// Fields are compared byte for byte, as Kamailio does, except the Via sent-by host (ASCII
/// case-insensitive, RFC 3261 §19.1.4 host comparison). Retransmissions are byte-identical, and
/// RFC 3261 requires the CANCEL and the non-2xx ACK to copy the top Via of the INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnKey(u128);

/// Domain separators: a key of one kind never equals a key of another.
const DOMAIN_CLIENT: u8 = 1;
const DOMAIN_SERVER_3261: u8 = 2;
const DOMAIN_SERVER_2543: u8 = 3;

impl TxnKey {
    /// The key of a client transaction, computed once from the request we send (our branch,
    /// our method) and for each response received (top Via branch, CSeq method).
    ///
    /// RFC 3261 §17.1.3: a response matches a client transaction "1. If the response has the
    /// same value of the branch parameter in the top Via header field as the branch parameter
    /// in the top Via header field of the request that created the transaction. 2. If the
    /// method parameter in the CSeq header field matches the method of the request that
    /// created the transaction. The method is needed since a CANCEL request constitutes a
    /// different transaction, but shares the same value of the branch parameter."
    pub fn for_response(branch: &[u8], cseq_method: &[u8]) -> TxnKey {
        let mut h = KeyHasher::new(DOMAIN_CLIENT);
        h.field(branch);
        h.field(cseq_method);
        TxnKey(h.finish())
    }

    /// The key of the server transaction a request belongs to, when its top Via branch
    /// carries the magic cookie; `None` otherwise (use
    /// [`for_request_rfc2543`](Self::for_request_rfc2543)).
    ///
    /// RFC 3261 §17.2.3: "1. the branch parameter in the request is equal to the one in the
    /// top Via header field of the request that created the transaction, and 2. the sent-by
    /// value in the top Via of the request is equal to the one in the request that created
    /// the transaction, and 3. the method of the request matches the one that created the
    /// transaction, except for ACK, where the method of the request that created the
    /// transaction is INVITE."
    ///
    /// `sent_by` is the top Via's `host[:port]` as written (host compared case-insensitively).
    /// An ACK yields the INVITE's key. A CANCEL yields the key of its *own* transaction; to find
    /// the INVITE it cancels use [`cancel_target`](Self::cancel_target).
    ///
    /// Note that the ACK for a 2xx carries a new branch (RFC 3261 §13.2.2.4, it is its own
    /// transaction) and so normally matches nothing here: the proxy routes it statelessly.
    pub fn for_request(method: &[u8], branch: &[u8], sent_by: &[u8]) -> Option<TxnKey> {
        if !has_magic_cookie(branch) {
            return None;
        }
        Some(Self::server_3261(
            if method == b"ACK" { b"INVITE" } else { method },
            branch,
            sent_by,
        ))
    }

    /// The key of the INVITE server transaction a CANCEL with this top Via refers to (RFC 3261
    /// §9.2: "the CANCEL ... matches ... using the procedures of Section 17.2.3 ... the
    /// transaction that is being cancelled"): same branch and sent-by, method INVITE. `None`
    /// without the magic cookie (use
    /// [`cancel_target_rfc2543`](Self::cancel_target_rfc2543)).
    pub fn cancel_target(branch: &[u8], sent_by: &[u8]) -> Option<TxnKey> {
        if !has_magic_cookie(branch) {
            return None;
        }
        Some(Self::server_3261(b"INVITE", branch, sent_by))
    }

    fn server_3261(method: &[u8], branch: &[u8], sent_by: &[u8]) -> TxnKey {
        let mut h = KeyHasher::new(DOMAIN_SERVER_3261);
        h.field(branch);
        h.field_ascii_lowercase(sent_by);
        h.field(method);
        TxnKey(h.finish())
    }

    /// The key of the server transaction for a request whose branch lacks the magic cookie
    /// (an RFC 2543 client), per RFC 3261 §17.2.3:
    ///
    /// > "The INVITE request matches a transaction if the Request-URI, To tag, From tag,
    /// > Call-ID, CSeq, and top Via header field match those of the INVITE request which
    /// > created the transaction. ... The ACK request matches a transaction if the
    /// > Request-URI, From tag, Call-ID, CSeq number (not the method), and top Via header
    /// > field match those of the INVITE request which created the transaction, and the To tag
    /// > of the ACK matches the To tag of the response sent by the server transaction. ...
    /// > For all other request methods, a request is matched to a transaction if the
    /// > Request-URI, To tag, From tag, Call-ID, CSeq (including the method), and top Via
    /// > header field match those of the request that created the transaction."
    ///
    /// ACK is keyed as INVITE, so an ACK's key (with the To tag it carries) equals the key of
    /// the INVITE *as answered*. Because the server adds a To tag to its response, the owner
    /// must also index an RFC 2543 INVITE transaction under
    /// `for_request_rfc2543(&fields.with_to_tag(tag_of_final_response))` when it sends a final
    /// response with a To tag the INVITE did not have (a re-INVITE, whose To tag is already
    /// set, needs no second entry).
    pub fn for_request_rfc2543(fields: &Rfc2543Fields<'_>) -> TxnKey {
        let method = if fields.method == b"ACK" {
            b"INVITE".as_slice()
        } else {
            fields.method
        };
        Self::server_2543(method, fields)
    }

    /// The key of the INVITE server transaction an RFC 2543 CANCEL refers to: the CANCEL's
    /// fields (which RFC 3261 §9.1 makes equal to the INVITE's: Request-URI, Call-ID, To,
    /// From, CSeq number, top Via) with the method taken as INVITE.
    pub fn cancel_target_rfc2543(fields: &Rfc2543Fields<'_>) -> TxnKey {
        Self::server_2543(b"INVITE", fields)
    }

    fn server_2543(method: &[u8], f: &Rfc2543Fields<'_>) -> TxnKey {
        let mut h = KeyHasher::new(DOMAIN_SERVER_2543);
        h.field(f.request_uri);
        h.field(f.to_tag);
        h.field(f.from_tag);
        h.field(f.call_id);
        h.field(&f.cseq_number.to_le_bytes());
        h.field(method);
        h.field(f.top_via);
        TxnKey(h.finish())
    }

    /// The raw 128 bits (for logging, or sharding: `key.as_u128() as usize % shards`).
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

/// The fields RFC 2543 matching compares (RFC 3261 §17.2.3, RFC 4475 §3.2.1), borrowed from
/// the parsed request. Absent tags are empty slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc2543Fields<'a> {
    /// The request method (`ACK` is keyed as `INVITE`).
    pub method: &'a [u8],
    /// The Request-URI as written.
    pub request_uri: &'a [u8],
    /// The To tag (empty if none).
    pub to_tag: &'a [u8],
    /// The From tag (empty if none; RFC 2543 did not require one).
    pub from_tag: &'a [u8],
    /// The Call-ID ("Call-IDs are case-sensitive and are simply compared byte-by-byte",
    /// RFC 3261 §20.8).
    pub call_id: &'a [u8],
    /// The CSeq sequence number (compared as an integer, so `0001` equals `1`).
    pub cseq_number: u32,
    /// The whole top Via header field value as written.
    pub top_via: &'a [u8],
}

impl<'a> Rfc2543Fields<'a> {
    /// The same fields with another To tag: used to index an RFC 2543 INVITE transaction by
    /// the To tag of the final response it sent, so the ACK finds it.
    pub fn with_to_tag(self, to_tag: &'a [u8]) -> Self {
        Rfc2543Fields { to_tag, ..self }
    }
}

/// Hashes length-prefixed fields: on a stack buffer with one-shot xxh3 for the common short
/// key, switching to streaming xxh3 when the fields do not fit. Which path runs depends only
/// on the bytes hashed, so equal inputs always give equal keys.
struct KeyHasher {
    buf: [u8; Self::BUF],
    len: usize,
    stream: Option<Box<Xxh3Default>>,
}

impl KeyHasher {
    const BUF: usize = 256;

    fn new(domain: u8) -> Self {
        let mut h = KeyHasher {
            buf: [0; Self::BUF],
            len: 0,
            stream: None,
        };
        h.write(&[domain]);
        h
    }

    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn field_ascii_lowercase(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        let mut chunk = [0u8; 64];
        for part in bytes.chunks(chunk.len()) {
            let out = &mut chunk[..part.len()];
            for (o, b) in out.iter_mut().zip(part) {
                *o = b.to_ascii_lowercase();
            }
            self.write(out);
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(s) = self.stream.as_mut() {
            s.update(bytes);
            return;
        }
        let end = self.len + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
        } else {
            let mut s = Box::new(Xxh3Default::new());
            s.update(&self.buf[..self.len]);
            s.update(bytes);
            self.stream = Some(s);
        }
    }

    fn finish(&self) -> u128 {
        match &self.stream {
            Some(s) => s.digest128(),
            None => xxh3_128(&self.buf[..self.len]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR: &[u8] = b"z9hG4bK74bf9";
    const SB: &[u8] = b"pc33.atlanta.com:5060";

    #[test]
    fn responses_match_on_branch_and_cseq_method() {
        let k = TxnKey::for_response(BR, b"INVITE");
        assert_eq!(k, TxnKey::for_response(BR, b"INVITE"));
        assert_ne!(
            k,
            TxnKey::for_response(BR, b"CANCEL"),
            "CANCEL shares the branch but not the transaction"
        );
        assert_ne!(k, TxnKey::for_response(b"z9hG4bK74bf8", b"INVITE"));
    }

    #[test]
    fn requests_match_on_branch_sent_by_and_method_with_ack_as_invite() {
        let invite = TxnKey::for_request(b"INVITE", BR, SB).unwrap();
        assert_eq!(TxnKey::for_request(b"ACK", BR, SB), Some(invite));
        assert_eq!(
            TxnKey::for_request(b"INVITE", BR, b"PC33.Atlanta.COM:5060"),
            Some(invite)
        );
        assert_ne!(
            TxnKey::for_request(b"INVITE", BR, b"pc33.atlanta.com:5061"),
            Some(invite)
        );
        assert_ne!(
            TxnKey::for_request(b"INVITE", BR, b"other.example.com"),
            Some(invite)
        );
        assert_ne!(TxnKey::for_request(b"BYE", BR, SB), Some(invite));
    }

    #[test]
    fn a_cancel_is_its_own_transaction_but_finds_the_invite_it_cancels() {
        let invite = TxnKey::for_request(b"INVITE", BR, SB).unwrap();
        let cancel = TxnKey::for_request(b"CANCEL", BR, SB).unwrap();
        assert_ne!(cancel, invite);
        assert_eq!(TxnKey::cancel_target(BR, SB), Some(invite));
    }

    #[test]
    fn client_and_server_keys_never_coincide() {
        assert_ne!(
            TxnKey::for_response(BR, b"INVITE"),
            TxnKey::for_request(b"INVITE", BR, b"").unwrap()
        );
    }

    #[test]
    fn branches_without_the_magic_cookie_need_rfc2543_matching() {
        assert!(has_magic_cookie(BR));
        assert!(!has_magic_cookie(b"z9hG4bK"));
        assert!(!has_magic_cookie(b"Z9HG4BK1234"));
        assert!(!has_magic_cookie(b"1234"));
        assert!(!has_magic_cookie(b""));
        assert_eq!(TxnKey::for_request(b"INVITE", b"1234", SB), None);
        assert_eq!(TxnKey::cancel_target(b"", SB), None);
    }

    fn f2543() -> Rfc2543Fields<'static> {
        Rfc2543Fields {
            method: b"INVITE",
            request_uri: b"sip:bob@biloxi.com",
            to_tag: b"",
            from_tag: b"1928301774",
            call_id: b"a84b4c76e66710",
            cseq_number: 314159,
            top_via: b"SIP/2.0/UDP pc33.atlanta.com",
        }
    }

    #[test]
    fn rfc2543_invite_retransmissions_match_and_any_differing_field_does_not() {
        let f = f2543();
        let k = TxnKey::for_request_rfc2543(&f);
        assert_eq!(k, TxnKey::for_request_rfc2543(&f2543()));
        let variants = [
            Rfc2543Fields {
                request_uri: b"sip:bob@biloxi.org",
                ..f
            },
            Rfc2543Fields {
                from_tag: b"x",
                ..f
            },
            Rfc2543Fields {
                call_id: b"A84B4C76E66710",
                ..f
            },
            Rfc2543Fields {
                cseq_number: 314160,
                ..f
            },
            Rfc2543Fields {
                top_via: b"SIP/2.0/UDP pc34.atlanta.com",
                ..f
            },
            Rfc2543Fields {
                method: b"BYE",
                ..f
            },
            f.with_to_tag(b"abc"),
        ];
        for v in variants {
            assert_ne!(TxnKey::for_request_rfc2543(&v), k, "{v:?}");
        }
    }

    #[test]
    fn rfc2543_ack_matches_with_the_to_tag_of_the_response_sent() {
        let invite = f2543();
        let answered = TxnKey::for_request_rfc2543(&invite.with_to_tag(b"8321234356"));
        let ack = Rfc2543Fields {
            method: b"ACK",
            to_tag: b"8321234356",
            ..invite
        };
        assert_eq!(TxnKey::for_request_rfc2543(&ack), answered);
        assert_ne!(
            TxnKey::for_request_rfc2543(&ack),
            TxnKey::for_request_rfc2543(&invite)
        );
    }

    #[test]
    fn rfc2543_cancel_is_its_own_transaction_but_finds_the_invite() {
        let invite = f2543();
        let cancel = Rfc2543Fields {
            method: b"CANCEL",
            ..invite
        };
        assert_ne!(
            TxnKey::for_request_rfc2543(&cancel),
            TxnKey::for_request_rfc2543(&invite)
        );
        assert_eq!(
            TxnKey::cancel_target_rfc2543(&cancel),
            TxnKey::for_request_rfc2543(&invite)
        );
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        assert_ne!(
            TxnKey::for_response(b"z9hG4bKab", b"c"),
            TxnKey::for_response(b"z9hG4bKa", b"bc")
        );
    }

    #[test]
    fn long_fields_take_the_streaming_path_and_stay_deterministic() {
        let long_uri = vec![b'a'; 5000];
        let f = Rfc2543Fields {
            request_uri: &long_uri,
            ..f2543()
        };
        let k = TxnKey::for_request_rfc2543(&f);
        assert_eq!(k, TxnKey::for_request_rfc2543(&f));
        let mut other = long_uri.clone();
        other[4999] = b'b';
        assert_ne!(
            k,
            TxnKey::for_request_rfc2543(&Rfc2543Fields {
                request_uri: &other,
                ..f2543()
            })
        );
        let long_sent_by = vec![b'H'; 1000];
        assert_eq!(
            TxnKey::for_request(b"INVITE", BR, &long_sent_by),
            TxnKey::for_request(b"INVITE", BR, &vec![b'h'; 1000])
        );
    }
}
