//! Auth end to end against a real Core (replies on a UDP socket) and an SQLite subscriber
//! table.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use geosip_core::config::CoreConfig;
use geosip_core::testutil::{core_on, ctx_for};
use geosip_pike::{OverloadConfig, PikeConfig, Protect, RateLimitConfig};
use serde_json::Value;

use super::*;

struct Fx {
    core: Arc<Core>,
    rt: tokio::runtime::Runtime,
    auth: Arc<Auth>,
    subs: Arc<Subscribers>,
    phone: UdpSocket,
    dir: PathBuf,
}

impl Drop for Fx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn base_cfg() -> AuthConfig {
    AuthConfig {
        enabled: true,
        secret: "a cluster-wide secret of some length".into(),
        ..AuthConfig::default()
    }
}

fn fx_with(cfg: AuthConfig, protect: Option<Arc<Protect>>) -> Fx {
    let (core, rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let dir = std::env::temp_dir().join(format!(
        "geosip-auth-{}",
        geosip_store::testutil::random_name()
    ));
    let subs = Subscribers::open(&cfg, &dir, rt.handle().clone()).unwrap();
    subs.add(
        "alice@example.com",
        "secret",
        &BTreeMap::from([("group".to_string(), "sales".to_string())]),
    )
    .unwrap();
    let auth = Arc::new(Auth::new(cfg, Arc::clone(&subs), protect).unwrap());
    auth.register_metrics(&core.metrics);
    subs.register_rpcs(&core.rpc);
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    Fx {
        core,
        rt,
        auth,
        subs,
        phone,
        dir,
    }
}

fn fx() -> Fx {
    fx_with(base_cfg(), None)
}

struct Cred<'a> {
    alg: Algorithm,
    user: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a str,
    nc: Option<u32>,
    uri: &'a str,
    method: &'a str,
}

impl Cred<'_> {
    fn value(&self) -> String {
        let ha1 = digest::ha1(
            self.alg,
            self.user.as_bytes(),
            self.realm.as_bytes(),
            self.password.as_bytes(),
        );
        let nc = self.nc.map(|n| format!("{n:08x}"));
        let input = digest::ResponseInput {
            method: self.method.as_bytes(),
            uri: self.uri.as_bytes(),
            nonce: self.nonce.as_bytes(),
            nc: nc.as_deref().unwrap_or("").as_bytes(),
            cnonce: b"0a4f113b",
            qop: if self.nc.is_some() {
                Qop::Auth
            } else {
                Qop::None
            },
            body: b"",
        };
        let resp = digest::response(self.alg, &ha1, &input);
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            self.user,
            self.realm,
            self.nonce,
            self.uri,
            resp.as_str(),
            self.alg.name()
        );
        if let Some(nc) = nc {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"0a4f113b\""));
        }
        v
    }
}

fn cred<'a>(user: &'a str, password: &'a str, nonce: &'a str) -> Cred<'a> {
    Cred {
        alg: Algorithm::Md5,
        user,
        realm: "example.com",
        password,
        nonce,
        nc: Some(1),
        uri: "sip:example.com",
        method: "REGISTER",
    }
}

fn register(fx: &Fx, to_user: &str, auth_header: Option<(&str, &str)>) -> Vec<u8> {
    let port = fx.phone.local_addr().unwrap().port();
    let auth = auth_header
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKreg1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{to_user}@example.com>;tag=f1\r\nTo: <sip:{to_user}@example.com>\r\nCall-ID: reg-1@127.0.0.1\r\nCSeq: 2 REGISTER\r\n\
         Contact: <sip:{to_user}@127.0.0.1:{port}>\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite(fx: &Fx, from_user: &str, headers: &str) -> Vec<u8> {
    let port = fx.phone.local_addr().unwrap().port();
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKinv1;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{from_user}@example.com>;tag=f1\r\nTo: <sip:bob@example.com>\r\nCall-ID: inv-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:{from_user}@127.0.0.1:{port}>\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn ctx(fx: &Fx, raw: &[u8]) -> MsgCtx {
    ctx_for(&fx.core, raw, &fx.phone.local_addr().unwrap().to_string())
}

fn check(fx: &Fx, raw: &[u8], kind: Kind) -> (AuthResult, MsgCtx) {
    let mut c = ctx(fx, raw);
    let r = fx.auth.check(&mut c, b"", kind, SystemTime::now());
    (r, c)
}

fn reply(fx: &Fx) -> String {
    let mut buf = [0u8; 4096];
    let n = fx.phone.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn nonce_of(reply: &str) -> String {
    let i = reply.find("nonce=\"").unwrap() + 7;
    let j = reply[i..].find('"').unwrap();
    reply[i..i + j].to_string()
}

fn fresh_nonce(fx: &Fx) -> String {
    let v = fx.auth.challenges(b"example.com", false, SystemTime::now());
    let s = String::from_utf8(v[0].clone()).unwrap();
    nonce_of(&s)
}

fn mask_nonces(reply: &str) -> String {
    let mut out = String::new();
    let mut rest = reply;
    while let Some(i) = rest.find("nonce=\"") {
        out.push_str(&rest[..i + 7]);
        rest = &rest[i + 7..];
        let j = rest.find('"').unwrap();
        out.push_str("NONCE");
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

#[test]
fn register_without_credentials_gets_a_401_with_one_challenge_per_algorithm_in_order() {
    let fx = fx();
    let raw = register(&fx, "alice", None);
    let mut c = ctx(&fx, &raw);
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -5);
    let r = reply(&fx);
    assert!(r.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{r}");
    let lines: Vec<&str> = r
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .collect();
    assert_eq!(lines.len(), 2, "{r}");
    let nonce = nonce_of(&r);
    assert_eq!(nonce.len(), nonce::NONCE_LEN);
    assert_eq!(
        lines[0],
        format!(
            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"{nonce}\", qop=\"auth\", algorithm=SHA-256"
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5"
        )
    );
    // The challenges parse with sip-msg as a client would.
    let m = SipMessage::parse(bytes::Bytes::from(r.into_bytes())).unwrap();
    let chals: Vec<_> = m
        .www_authenticates()
        .filter_map(|a| a.digest_challenge())
        .collect();
    assert_eq!(chals.len(), 2);
    assert_eq!(chals[0].algorithm, Some(&b"SHA-256"[..]));
    assert!(c.auth_user.is_none());
    assert_eq!(fx.auth.metrics().challenges[0][0].get(), 1);
}

#[test]
fn correct_md5_sha256_and_sha512_256_credentials_authenticate() {
    let cfg = AuthConfig {
        algorithms: vec!["SHA-512-256".into(), "SHA-256".into(), "MD5".into()],
        ..base_cfg()
    };
    let fx = fx_with(cfg, None);
    for alg in Algorithm::ALL {
        let nonce = fresh_nonce(&fx);
        let v = Cred {
            alg,
            ..cred("alice", "secret", &nonce)
        }
        .value();
        let raw = register(&fx, "alice", Some(("Authorization", &v)));
        let mut c = ctx(&fx, &raw);
        assert_eq!(
            fx.auth.www_authenticate(&fx.core, &mut c, b"example.com"),
            1,
            "{alg}"
        );
        assert_eq!(
            c.auth_user,
            Some((
                Bytes::from_static(b"alice"),
                Bytes::from_static(b"example.com")
            ))
        );
        assert!(c.replied.is_none(), "nothing sent on success");
    }
    assert_eq!(fx.auth.metrics().count("ok"), 3);
    // An algorithm that is not offered counts as no credentials.
    let fx = fx_with(
        AuthConfig {
            algorithms: vec!["SHA-256".into()],
            ..base_cfg()
        },
        None,
    );
    let nonce = fresh_nonce(&fx);
    let v = cred("alice", "secret", &nonce).value();
    assert_eq!(
        check(
            &fx,
            &register(&fx, "alice", Some(("Authorization", &v))),
            Kind::Www
        )
        .0,
        AuthResult::NoCredentials
    );
}

#[test]
fn an_unknown_user_and_a_wrong_password_get_byte_identical_replies_but_for_the_nonce() {
    let fx = fx();
    let mut replies = Vec::new();
    let mut codes = Vec::new();
    for (user, pw) in [
        ("alice", "wrong"),
        ("mallory", "whatever"),
        ("alice", "wrong2"),
        ("nosuchuser", "x"),
    ] {
        let nonce = fresh_nonce(&fx);
        let v = cred(user, pw, &nonce).value();
        // Same request but for the credentials (the To user stays alice).
        let raw = register(&fx, "alice", Some(("Authorization", &v)));
        let mut c = ctx(&fx, &raw);
        codes.push(fx.auth.www_authenticate(&fx.core, &mut c, b""));
        replies.push(mask_nonces(&reply(&fx)));
    }
    assert_eq!(codes, vec![-2, -3, -2, -3]);
    assert!(replies.iter().all(|r| r == &replies[0]), "{replies:#?}");
    assert!(replies[0].starts_with("SIP/2.0 401 "));
    assert!(!replies[0].contains("stale"));
    // A disabled subscriber looks the same from outside.
    fx.subs.set_enabled("alice@example.com", false).unwrap();
    let nonce = fresh_nonce(&fx);
    let v = cred("alice", "secret", &nonce).value();
    let mut c = ctx(&fx, &register(&fx, "alice", Some(("Authorization", &v))));
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -3);
    assert_eq!(mask_nonces(&reply(&fx)), replies[0]);
    assert_eq!(fx.auth.metrics().count("disabled"), 1);
}

#[test]
fn an_expired_nonce_with_the_right_password_gets_stale_true_and_with_a_wrong_one_does_not() {
    let fx = fx();
    let old = SystemTime::now() - Duration::from_secs(400);
    let v = fx.auth.challenges(b"example.com", false, old);
    let nonce = nonce_of(&String::from_utf8(v[0].clone()).unwrap());
    let good = cred("alice", "secret", &nonce).value();
    let mut c = ctx(&fx, &register(&fx, "alice", Some(("Authorization", &good))));
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -4);
    let r = reply(&fx);
    assert_eq!(
        r.matches(", stale=true, qop=\"auth\", algorithm=").count(),
        2,
        "{r}"
    );
    assert_ne!(nonce_of(&r), nonce, "a fresh nonce");
    let bad = cred("alice", "nope", &nonce).value();
    let mut c = ctx(&fx, &register(&fx, "alice", Some(("Authorization", &bad))));
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -2);
    assert!(!reply(&fx).contains("stale"));
    // A nonce that is not ours (tampered, or from a node with another secret) is treated the
    // same way: stale only if the password was right.
    let mut t = fresh_nonce(&fx).into_bytes();
    t[10] = if t[10] == b'a' { b'b' } else { b'a' };
    let t = String::from_utf8(t).unwrap();
    assert_eq!(
        check(
            &fx,
            &register(
                &fx,
                "alice",
                Some(("Authorization", &cred("alice", "secret", &t).value()))
            ),
            Kind::Www
        )
        .0,
        AuthResult::StaleNonce
    );
    assert_eq!(
        check(
            &fx,
            &register(
                &fx,
                "alice",
                Some(("Authorization", &cred("alice", "x", &t).value()))
            ),
            Kind::Www
        )
        .0,
        AuthResult::InvalidPassword
    );
}

#[test]
fn a_nonce_from_another_node_with_the_same_secret_is_accepted() {
    let fx = fx();
    let other = Auth::new(base_cfg(), Arc::clone(&fx.subs), None).unwrap();
    let v = other.challenges(b"example.com", false, SystemTime::now());
    let nonce = nonce_of(&String::from_utf8(v[0].clone()).unwrap());
    let good = cred("alice", "secret", &nonce).value();
    assert!(
        check(
            &fx,
            &register(&fx, "alice", Some(("Authorization", &good))),
            Kind::Www
        )
        .0
        .is_ok()
    );
    let lone = Auth::new(
        AuthConfig {
            secret: String::new(),
            ..base_cfg()
        },
        Arc::clone(&fx.subs),
        None,
    )
    .unwrap();
    let v = lone.challenges(b"example.com", false, SystemTime::now());
    let nonce = nonce_of(&String::from_utf8(v[0].clone()).unwrap());
    let good = cred("alice", "secret", &nonce).value();
    assert_eq!(
        check(
            &fx,
            &register(&fx, "alice", Some(("Authorization", &good))),
            Kind::Www
        )
        .0,
        AuthResult::StaleNonce
    );
}

#[test]
fn reusing_a_nonce_with_the_same_or_a_lower_nc_is_a_replay() {
    let fx = fx();
    let nonce = fresh_nonce(&fx);
    let with_nc = |nc| {
        Cred {
            nc: Some(nc),
            ..cred("alice", "secret", &nonce)
        }
        .value()
    };
    let run = |v: String| {
        check(
            &fx,
            &register(&fx, "alice", Some(("Authorization", &v))),
            Kind::Www,
        )
        .0
    };
    assert!(run(with_nc(1)).is_ok());
    assert_eq!(run(with_nc(1)), AuthResult::Replay);
    assert!(run(with_nc(2)).is_ok());
    assert!(run(with_nc(7)).is_ok());
    assert_eq!(run(with_nc(5)), AuthResult::Replay);
    let mut c = ctx(
        &fx,
        &register(&fx, "alice", Some(("Authorization", &with_nc(7)))),
    );
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -6);
    assert!(
        reply(&fx).contains("stale=true"),
        "the client re-authenticates without asking the user"
    );
    // Without qop a nonce is good for one request.
    let n2 = fresh_nonce(&fx);
    let no_qop = Cred {
        nc: None,
        ..cred("alice", "secret", &n2)
    }
    .value();
    assert!(run(no_qop.clone()).is_ok());
    assert_eq!(run(no_qop), AuthResult::Replay);
    assert_eq!(fx.auth.nonce_table_len(), 2);
}

#[test]
fn malformed_credentials_get_400() {
    let fx = fx();
    let nonce = fresh_nonce(&fx);
    for bad in [
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\""
        ),
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"00\", qop=auth, cnonce=\"x\""
        ),
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"00\", qop=auth, nc=zz, cnonce=\"x\""
        ),
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"00\", qop=auth-conf, nc=00000001, cnonce=\"x\""
        ),
    ] {
        let mut c = ctx(&fx, &register(&fx, "alice", Some(("Authorization", &bad))));
        assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -1, "{bad}");
        assert!(reply(&fx).starts_with("SIP/2.0 400 "));
    }
    // Credentials for another realm are not ours: challenged.
    let other = Cred {
        realm: "other.org",
        ..cred("alice", "secret", &nonce)
    }
    .value();
    assert_eq!(
        check(
            &fx,
            &register(&fx, "alice", Some(("Authorization", &other))),
            Kind::Www
        )
        .0,
        AuthResult::NoCredentials
    );
}

#[test]
fn the_authenticated_user_must_own_the_aor_it_registers() {
    let fx = fx();
    fx.subs
        .add("bob@example.com", "bobpw", &BTreeMap::new())
        .unwrap();
    let nonce = fresh_nonce(&fx);
    let v = cred("alice", "secret", &nonce).value();
    let mut c = ctx(&fx, &register(&fx, "bob", Some(("Authorization", &v))));
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -8);
    assert!(reply(&fx).starts_with("SIP/2.0 403 Forbidden auth ID\r\n"));
    assert!(c.auth_user.is_none());
    // Off: alice may register bob's AOR (e.g. a receptionist's phone).
    let fx2 = fx_with(
        AuthConfig {
            owner_check: false,
            ..base_cfg()
        },
        None,
    );
    let nonce = fresh_nonce(&fx2);
    let v = cred("alice", "secret", &nonce).value();
    assert!(
        check(
            &fx2,
            &register(&fx2, "bob", Some(("Authorization", &v))),
            Kind::Www
        )
        .0
        .is_ok()
    );
}

#[test]
fn an_invite_is_challenged_with_407_and_its_credentials_consumed_but_not_other_realms() {
    let fx = fx();
    let raw = invite(&fx, "alice", "");
    let mut c = ctx(&fx, &raw);
    assert_eq!(fx.auth.proxy_authenticate(&fx.core, &mut c, b""), -5);
    let r = reply(&fx);
    assert!(
        r.starts_with("SIP/2.0 407 Proxy Authentication Required\r\n"),
        "{r}"
    );
    assert_eq!(
        r.matches("\r\nProxy-Authenticate: Digest realm=\"example.com\"")
            .count(),
        2
    );
    let nonce = nonce_of(&r);
    let v = Cred {
        method: "INVITE",
        uri: "sip:bob@example.com",
        ..cred("alice", "secret", &nonce)
    }
    .value();
    let hdrs = format!(
        "Proxy-Authorization: {v}\r\nProxy-Authorization: Digest username=\"x\", realm=\"carrier.net\", nonce=\"n\", uri=\"sip:bob@example.com\", response=\"0\"\r\n"
    );
    let raw = invite(&fx, "alice", &hdrs);
    let mut c = ctx(&fx, &raw);
    assert_eq!(
        fx.auth.proxy_authenticate(&fx.core, &mut c, b"example.com"),
        1
    );
    assert_eq!(fx.auth.consume_credentials(&mut c), 1);
    let out = c.msg.to_bytes_with(&c.edits);
    let out = String::from_utf8(out.to_vec()).unwrap();
    assert!(!out.contains("realm=\"example.com\""), "{out}");
    assert!(out.contains("realm=\"carrier.net\""), "{out}");
    assert_eq!(
        fx.auth.subscriber_attr(&c, "group").as_deref(),
        Some("sales")
    );
    assert_eq!(fx.auth.subscriber_attr(&c, "nope"), None);
    // Someone else's From: owner mismatch.
    let raw = invite(
        &fx,
        "carol",
        &format!(
            "Proxy-Authorization: {}\r\n",
            Cred {
                method: "INVITE",
                uri: "sip:bob@example.com",
                nc: Some(2),
                ..cred("alice", "secret", &nonce)
            }
            .value()
        ),
    );
    assert_eq!(check(&fx, &raw, Kind::Proxy).0, AuthResult::OwnerMismatch);
    // ACK and CANCEL are never challenged.
    let ack = String::from_utf8(invite(&fx, "alice", ""))
        .unwrap()
        .replace("INVITE", "ACK");
    assert_eq!(
        check(&fx, ack.as_bytes(), Kind::Proxy).0,
        AuthResult::NotChecked
    );
}

#[test]
fn with_auth_disabled_nothing_is_checked() {
    let fx = fx_with(
        AuthConfig {
            enabled: false,
            ..base_cfg()
        },
        None,
    );
    let mut c = ctx(&fx, &register(&fx, "alice", None));
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), 1);
    assert!(c.replied.is_none() && c.auth_user.is_none());
    assert!(!fx.auth.enabled());
}

#[test]
fn too_many_failures_block_the_user_with_the_same_reply_as_a_wrong_password() {
    let pike = PikeConfig {
        auth_fail_limit_user: 3,
        auth_fail_limit_ip: 100,
        ..PikeConfig::default()
    };
    let protect = Arc::new(
        Protect::new(pike, RateLimitConfig::default(), OverloadConfig::default()).unwrap(),
    );
    let fx = fx_with(base_cfg(), Some(Arc::clone(&protect)));
    let mut wrong_reply = String::new();
    for _ in 0..3 {
        let nonce = fresh_nonce(&fx);
        let mut c = ctx(
            &fx,
            &register(
                &fx,
                "alice",
                Some(("Authorization", &cred("alice", "guess", &nonce).value())),
            ),
        );
        assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -2);
        wrong_reply = mask_nonces(&reply(&fx));
    }
    assert!(
        protect
            .auth_user_blocked(b"alice@example.com", std::time::Instant::now())
            .is_some()
    );
    // Now even the right password is refused, and the reply does not tell.
    let nonce = fresh_nonce(&fx);
    let mut c = ctx(
        &fx,
        &register(
            &fx,
            "alice",
            Some(("Authorization", &cred("alice", "secret", &nonce).value())),
        ),
    );
    assert_eq!(fx.auth.www_authenticate(&fx.core, &mut c, b""), -7);
    assert_eq!(mask_nonces(&reply(&fx)), wrong_reply);
    // Unknown users are counted and blocked alike.
    for _ in 0..3 {
        let nonce = fresh_nonce(&fx);
        check(
            &fx,
            &register(
                &fx,
                "alice",
                Some(("Authorization", &cred("ghost", "x", &nonce).value())),
            ),
            Kind::Www,
        );
    }
    assert!(
        protect
            .auth_user_blocked(b"ghost@example.com", std::time::Instant::now())
            .is_some()
    );
    assert!(protect.unblock_user(b"alice@example.com"));
    let nonce = fresh_nonce(&fx);
    assert!(
        check(
            &fx,
            &register(
                &fx,
                "alice",
                Some(("Authorization", &cred("alice", "secret", &nonce).value()))
            ),
            Kind::Www
        )
        .0
        .is_ok()
    );
}

#[test]
fn writes_through_this_node_reach_authentication_at_once() {
    let fx = fx();
    let nonce = fresh_nonce(&fx);
    let dave = |pw: &str, nc| {
        Cred {
            nc: Some(nc),
            ..cred("dave", pw, &nonce)
        }
        .value()
    };
    let run = |v: String| {
        check(
            &fx,
            &register(&fx, "dave", Some(("Authorization", &v))),
            Kind::Www,
        )
        .0
    };
    assert_eq!(run(dave("pw1", 1)), AuthResult::UserNotFound);
    assert!(
        !fx.auth.subscriber_exists(b"dave", b"example.com"),
        "now cached as unknown"
    );
    fx.subs
        .add("dave@EXAMPLE.com", "pw1", &BTreeMap::new())
        .unwrap();
    assert!(fx.auth.subscriber_exists(b"dave", b"Example.com"));
    assert!(
        run(dave("pw1", 2)).is_ok(),
        "the negative cache entry is gone"
    );
    fx.subs.passwd("dave@example.com", "pw2").unwrap();
    assert_eq!(run(dave("pw1", 3)), AuthResult::InvalidPassword);
    assert!(run(dave("pw2", 4)).is_ok());
    fx.subs.rm("dave@example.com").unwrap();
    assert_eq!(run(dave("pw2", 5)), AuthResult::UserNotFound);
    assert!(fx.subs.stats().cache_hits.get() > 0);
}

#[test]
fn a_failing_subscriber_table_answers_503_with_retry_after() {
    let (core, rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let cfg = AuthConfig {
        db_url: "postgres://nobody@127.0.0.1:1/none".into(),
        timeout_ms: 300,
        ..base_cfg()
    };
    let subs = Subscribers::open_lazy(
        &cfg,
        std::path::Path::new("/nonexistent"),
        rt.handle().clone(),
    )
    .unwrap();
    let auth = Auth::new(cfg, subs, None).unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let fx_nonce = {
        let v = auth.challenges(b"example.com", false, SystemTime::now());
        nonce_of(&String::from_utf8(v[0].clone()).unwrap())
    };
    let port = phone.local_addr().unwrap().port();
    let raw = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKx\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=f\r\nTo: <sip:alice@example.com>\r\nCall-ID: e@x\r\nCSeq: 1 REGISTER\r\n\
         Authorization: {}\r\nContent-Length: 0\r\n\r\n",
        cred("alice", "secret", &fx_nonce).value()
    );
    let mut c = ctx_for(
        &core,
        raw.as_bytes(),
        &phone.local_addr().unwrap().to_string(),
    );
    assert_eq!(auth.www_authenticate(&core, &mut c, b""), -1);
    let mut buf = [0u8; 2048];
    let n = phone.recv(&mut buf).unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert!(
        r.starts_with("SIP/2.0 503 ") && r.contains("\r\nRetry-After: "),
        "{r}"
    );
    assert_eq!(auth.metrics().count("error"), 1);
    assert!(!auth.subscriber_exists(b"alice", b"example.com"));
    drop(rt);
}

fn rpc(fx: &Fx, name: &str, params: &[&str]) -> Result<Value, geosip_core::rpc::RpcError> {
    fx.rt.block_on(
        fx.core
            .rpc
            .call(name, params.iter().map(|p| Value::from(*p)).collect()),
    )
}

#[test]
fn rpcs_provision_subscribers_and_say_what_is_wrong() {
    let fx = fx();
    assert_eq!(
        rpc(
            &fx,
            "subscriber.add",
            &["erin@example.com", "pw", "lang=de;vip=1"]
        )
        .unwrap()["added"],
        "erin@example.com"
    );
    let e = rpc(&fx, "subscriber.add", &["erin@example.com", "pw"]).unwrap_err();
    assert!(e.message.contains("already exists"), "{e}");
    assert!(
        rpc(&fx, "subscriber.add", &["erin", "pw"])
            .unwrap_err()
            .message
            .contains("bad AOR")
    );
    assert!(
        rpc(&fx, "subscriber.add", &["frank@example.com", ""])
            .unwrap_err()
            .message
            .contains("password")
    );
    assert!(
        rpc(&fx, "subscriber.add", &["frank@example.com"])
            .unwrap_err()
            .message
            .contains("missing parameter 2")
    );
    let show = rpc(&fx, "subscriber.show", &["erin@example.com"]).unwrap();
    assert_eq!(show["attrs"]["lang"], "de");
    assert_eq!(
        show["algorithms"],
        serde_json::json!(["MD5", "SHA-256", "SHA-512-256"])
    );
    assert_eq!(show["password_stored"], false);
    assert!(
        !show.to_string().contains("ha1"),
        "no secrets in RPC output"
    );
    rpc(&fx, "subscriber.passwd", &["erin@example.com", "new"]).unwrap();
    assert!(
        rpc(&fx, "subscriber.passwd", &["nobody@example.com", "new"])
            .unwrap_err()
            .message
            .contains("does not exist")
    );
    let list = rpc(&fx, "subscriber.list", &["example.com"]).unwrap();
    let aors: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["aor"].as_str().unwrap())
        .collect();
    assert_eq!(aors, vec!["alice@example.com", "erin@example.com"]);
    assert_eq!(
        rpc(&fx, "subscriber.list", &["", "1"])
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    rpc(&fx, "subscriber.disable", &["erin@example.com"]).unwrap();
    assert_eq!(
        rpc(&fx, "subscriber.show", &["erin@example.com"]).unwrap()["enabled"],
        false
    );
    rpc(&fx, "subscriber.rm", &["erin@example.com"]).unwrap();
    assert!(
        rpc(&fx, "subscriber.rm", &["erin@example.com"])
            .unwrap_err()
            .message
            .contains("does not exist")
    );
    // Import from a file on the server.
    let path = fx.dir.join("subs.csv");
    std::fs::write(
        &path,
        "# bulk\ngina@example.com,pw1,team=a\n\n\"hank@example.com\",\"p,w\"\n",
    )
    .unwrap();
    assert_eq!(
        rpc(&fx, "subscriber.import", &[path.to_str().unwrap()]).unwrap()["added"],
        2
    );
    std::fs::write(
        &path,
        "ivan@example.com,pw\nbroken line\nalice@example.com,pw\njane@,pw\n",
    )
    .unwrap();
    let e = rpc(&fx, "subscriber.import", &[path.to_str().unwrap()]).unwrap_err();
    assert!(
        e.message.contains("line 2") && e.message.contains("line 4"),
        "{e}"
    );
    let e = rpc(
        &fx,
        "subscriber.import",
        &[fx.dir.join("missing.csv").to_str().unwrap()],
    )
    .unwrap_err();
    assert!(e.message.contains("cannot open"), "{e}");
}

#[test]
fn csv_import_is_all_or_nothing_and_names_duplicates() {
    let fx = fx();
    let n = fx
        .subs
        .import_csv("kim@example.com,pw\nlee@example.org,pw,x=1\n".as_bytes())
        .unwrap();
    assert_eq!(n, 2);
    let e = fx
        .subs
        .import_csv("max@example.com,pw\nkim@example.com,pw\n".as_bytes())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("line 2: kim@example.com already exists"),
        "{e}"
    );
    assert!(
        matches!(
            fx.subs.show("max@example.com"),
            Err(SubscriberError::NotFound(_))
        ),
        "rolled back"
    );
    let e = fx
        .subs
        .import_csv("max@example.com,pw\nmax@example.com,pw2\n".as_bytes())
        .unwrap_err();
    assert!(e.to_string().contains("appears twice"), "{e}");
    assert_eq!(fx.subs.list(None, 100, None).unwrap().len(), 3);
    assert_eq!(
        fx.subs.list(Some("example.org"), 100, None).unwrap()[0].attr("x"),
        Some("1")
    );
    let page = fx.subs.list(None, 1, Some("alice@example.com")).unwrap();
    assert_eq!(page[0].aor(), "kim@example.com");
}

#[test]
fn plaintext_passwords_are_kept_only_when_configured() {
    let fx = fx_with(
        AuthConfig {
            store_plaintext: true,
            ..base_cfg()
        },
        None,
    );
    assert!(fx.subs.show("alice@example.com").unwrap().has_password);
    let fx = self::fx();
    assert!(!fx.subs.show("alice@example.com").unwrap().has_password);
}

#[test]
fn metrics_are_registered_in_the_auth_group() {
    let fx = fx();
    let mut c = ctx(&fx, &register(&fx, "alice", None));
    fx.auth.www_authenticate(&fx.core, &mut c, b"");
    let _ = reply(&fx);
    let text = fx.core.metrics.render_prometheus();
    assert!(
        text.contains("geosip_auth_results_total{result=\"no_credentials\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("geosip_auth_challenges_total{kind=\"www\",stale=\"false\"} 1"),
        "{text}"
    );
    assert!(
        fx.core
            .metrics
            .flat("auth")
            .iter()
            .any(|(k, _)| k.starts_with("auth.auth_cache_entries"))
    );
}
