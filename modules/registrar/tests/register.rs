//! REGISTER processing (RFC 3261 §10.3), asserted on what crosses the wire.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use geosip_core::config::CoreConfig;
use geosip_registrar::{
    MaxContactsMode, MinExpiresMode, RegistrarConfig, SAVE_DELETED, SAVE_ERROR, SAVE_INSERTED,
    SAVE_NO_REPLY, SAVE_ONE_CONTACT, SAVE_QUERIED, SAVE_TOO_MANY, SAVE_UPDATED,
};
use geosip_usrloc::{DbMode, Location, UsrlocConfig};

#[test]
fn a_register_is_answered_200_listing_the_binding_with_its_expires_and_a_date() {
    let env = env(cfg());
    let (code, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10:5060>")
            .expires("1800"),
    );
    assert_eq!(code, SAVE_INSERTED);
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(
        r.bindings(),
        vec![("sip:alice@192.0.2.10:5060".to_string(), 1800)]
    );
    assert!(r.header("Date").unwrap().ends_with(" GMT"), "{}", r.text());
    assert!(r.msg.to_tag().is_some());
    assert_eq!(env.stored(ALICE), vec!["sip:alice@192.0.2.10:5060"]);
}

#[test]
fn two_contacts_are_both_stored_and_listed_with_their_own_expires_and_q() {
    let env = env(cfg());
    let (code, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>;q=0.5;expires=600")
            .contact("<sip:alice@192.0.2.11>")
            .expires("900"),
    );
    assert_eq!(code, SAVE_INSERTED);
    assert_eq!(r.status(), 200);
    let mut b = r.bindings();
    b.sort();
    assert_eq!(
        b,
        vec![
            ("sip:alice@192.0.2.10".into(), 600),
            ("sip:alice@192.0.2.11".into(), 900)
        ]
    );
    let c = r.contacts();
    assert!(
        c.iter()
            .any(|v| v.contains("192.0.2.10") && v.contains(";q=0.5")),
        "{c:?}"
    );
    assert!(
        c.iter()
            .any(|v| v.contains("192.0.2.11") && !v.contains(";q=")),
        "{c:?}"
    );
}

#[test]
fn a_re_register_refreshes_the_binding_and_says_updated() {
    let env = env(cfg());
    let reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .expires("600");
    assert_eq!(env.save(&reg).0, SAVE_INSERTED);
    let ruid = env.bindings(ALICE)[0].ruid;
    let (code, r) = env.save(&reg.next().expires("1200"));
    assert_eq!(code, SAVE_UPDATED);
    assert_eq!(r.bindings(), vec![("sip:alice@192.0.2.10".into(), 1200)]);
    let b = env.bindings(ALICE);
    assert_eq!((b.len(), b[0].ruid, b[0].cseq), (1, ruid, 2));
}

#[test]
fn expires_zero_removes_the_binding_and_the_200_lists_the_rest() {
    let env = env(cfg());
    let reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .contact("<sip:alice@192.0.2.11>");
    env.save(&reg);
    let mut rm = reg.next();
    rm.contacts = vec!["<sip:alice@192.0.2.10>".into()];
    let rm = rm.expires("0");
    let (code, r) = env.save(&rm);
    assert_eq!(code, SAVE_DELETED);
    assert_eq!(r.bindings(), vec![("sip:alice@192.0.2.11".into(), 3600)]);
    // The contact parameter wins over the header.
    let mut rm2 = rm.next();
    rm2.contacts = vec!["<sip:alice@192.0.2.11>;expires=0".into()];
    let (code, r) = env.save(&rm2.expires("3600"));
    assert_eq!(code, SAVE_DELETED);
    assert!(r.contacts().is_empty(), "{}", r.text());
    assert!(env.stored(ALICE).is_empty());
}

#[test]
fn contact_star_with_expires_zero_removes_every_binding() {
    let env = env(cfg());
    let reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .contact("<sip:alice@192.0.2.11>");
    env.save(&reg);
    // Another phone of the same user, another Call-ID.
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.12>"));
    let mut star = reg.next();
    star.contacts = vec!["*".into()];
    let (code, r) = env.save(&star.expires("0"));
    assert_eq!(code, SAVE_DELETED);
    assert_eq!(r.status(), 200);
    assert!(r.contacts().is_empty());
    assert!(env.stored(ALICE).is_empty());
}

#[test]
fn contact_star_with_another_contact_or_a_non_zero_expires_is_a_400() {
    let env = env(cfg());
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.10>"));
    let (code, r) = env.save(
        &Reg::new(ALICE)
            .contact("*")
            .contact("<sip:alice@192.0.2.11>")
            .expires("0"),
    );
    assert_eq!((code, r.status()), (SAVE_ERROR, 400));
    let (_, r) = env.save(&Reg::new(ALICE).contact("*").expires("60"));
    assert_eq!(r.status(), 400);
    let (_, r) = env.save(&Reg::new(ALICE).contact("*"));
    assert_eq!(r.status(), 400);
    assert!(
        r.header("P-Registrar-Error")
            .unwrap()
            .contains("expires is not zero")
    );
    assert_eq!(env.stored(ALICE), vec!["sip:alice@192.0.2.10"]);
}

#[test]
fn an_expiry_below_min_expires_gets_423_with_min_expires_in_reject_mode() {
    let env = env(RegistrarConfig {
        min_expires: 120,
        ..cfg()
    });
    let (code, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>")
            .expires("30"),
    );
    assert_eq!((code, r.status()), (SAVE_ERROR, 423));
    assert_eq!(r.header("Min-Expires").as_deref(), Some("120"));
    assert!(env.stored(ALICE).is_empty());
    // One contact too brief refuses the whole request.
    let (_, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>")
            .contact("<sip:alice@192.0.2.11>;expires=5"),
    );
    assert_eq!(r.status(), 423);
    assert!(env.stored(ALICE).is_empty());
}

#[test]
fn an_expiry_below_min_expires_is_raised_in_raise_mode() {
    let env = env(RegistrarConfig {
        min_expires: 120,
        min_expires_mode: MinExpiresMode::Raise,
        ..cfg()
    });
    let (code, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>")
            .expires("30"),
    );
    assert_eq!(code, SAVE_INSERTED);
    assert_eq!(r.bindings(), vec![("sip:alice@192.0.2.10".into(), 120)]);
}

#[test]
fn an_expiry_above_max_expires_is_clamped() {
    let env = env(RegistrarConfig {
        max_expires: 600,
        ..cfg()
    });
    let (_, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>;expires=7200")
            .contact("<sip:alice@192.0.2.11>"),
    );
    let mut b = r.bindings();
    b.sort();
    // The default (3600) is clamped too.
    assert_eq!(
        b,
        vec![
            ("sip:alice@192.0.2.10".into(), 600),
            ("sip:alice@192.0.2.11".into(), 600)
        ]
    );
}

#[test]
fn expires_range_spreads_granted_values_within_the_range_and_never_below_min_expires() {
    let env = env(RegistrarConfig {
        expires_range: 50,
        min_expires: 60,
        ..RegistrarConfig::default()
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .expires("3600");
    for _ in 0..30 {
        let (_, r) = env.save(&reg);
        let e = r.bindings()[0].1;
        assert!((1800..=3600).contains(&e), "{e} outside [1800, 3600]");
        seen.insert(e);
        reg = reg.next();
    }
    assert!(seen.len() > 5, "expiries are spread: {seen:?}");
    // Close to the minimum the spread stops at min_expires.
    let bob = "sip:bob@example.com";
    let mut reg = Reg::new(bob).contact("<sip:bob@192.0.2.20>").expires("80");
    for _ in 0..30 {
        let (_, r) = env.save(&reg);
        let e = r.bindings()[0].1;
        assert!((60..=80).contains(&e), "{e} outside [60, 80]");
        reg = reg.next();
    }
    // Flag 0x08 turns the spreading off for one registration.
    let (_, r) = env.save_flags(
        &reg.expires("3600"),
        geosip_registrar::SAVE_NO_EXPIRES_RANGE,
    );
    assert_eq!(r.bindings()[0].1, 3600);
}

#[test]
fn an_older_cseq_on_the_same_call_id_is_refused_with_500_and_changes_nothing() {
    let env = env(cfg());
    let reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .expires("600")
        .cseq(10);
    env.save(&reg);
    let before = env.bindings(ALICE);
    let mut old = reg.clone().cseq(9).expires("0");
    old.contacts.push("<sip:alice@192.0.2.11>".into());
    let (code, r) = env.save(&old);
    assert_eq!((code, r.status()), (SAVE_ERROR, 500));
    assert!(
        r.header("P-Registrar-Error")
            .unwrap()
            .contains("Out of order")
    );
    assert!(
        r.header("Retry-After").is_none(),
        "retrying a stale request does not help"
    );
    assert_eq!(env.bindings(ALICE), before);
    // The same for Contact: * on that Call-ID.
    let mut star = reg.clone().cseq(10).expires("0");
    star.contacts = vec!["*".into()];
    assert_eq!(env.save(&star).1.status(), 500);
    assert_eq!(env.bindings(ALICE), before);
}

#[test]
fn a_retransmission_gets_the_same_200_and_changes_nothing() {
    let env = env(cfg());
    let reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .expires("600");
    let raw = reg.raw(env.ua_addr().port());
    assert_eq!(env.save_raw(&raw, 0), SAVE_INSERTED);
    let first = env.recv();
    let before = env.bindings(ALICE);
    assert_eq!(env.save_raw(&raw, 0), SAVE_UPDATED);
    let again = env.recv();
    assert_eq!(again.status(), 200);
    assert_eq!(again.msg.to_tag(), first.msg.to_tag());
    assert_eq!(again.bindings()[0].0, first.bindings()[0].0);
    assert!(first.bindings()[0].1 - again.bindings()[0].1 <= 1);
    assert_eq!(env.bindings(ALICE), before);
    // Past the retransmission window the same CSeq is a reused one, refused too.
    let mut ctx = env.ctx(&raw);
    let later = geosip_usrloc::unix_ms() + geosip_registrar::RETRANSMISSION_WINDOW_MS + 2000;
    assert_eq!(env.reg.save_at(&mut ctx, "location", 0, later), SAVE_ERROR);
    assert_eq!(env.recv().status(), 500);
    assert_eq!(env.bindings(ALICE), before);
}

#[test]
fn a_new_call_id_replaces_the_binding_whatever_its_cseq() {
    let env = env(cfg());
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.10>").cseq(50));
    // The phone rebooted: new Call-ID, CSeq starts again at 1.
    let (code, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>")
            .cseq(1)
            .expires("300"),
    );
    assert_eq!(code, SAVE_UPDATED);
    assert_eq!(r.bindings(), vec![("sip:alice@192.0.2.10".into(), 300)]);
    let b = env.bindings(ALICE);
    assert_eq!((b.len(), b[0].cseq), (1, 1));
}

#[test]
fn an_equivalent_contact_uri_names_the_same_binding() {
    let env = env(cfg());
    env.save(&Reg::new(ALICE).contact("<sip:alice@PC.Example.com;transport=TCP>"));
    let (_, r) = env.save(&Reg::new(ALICE).contact("<sip:%61lice@pc.example.com;transport=tcp>"));
    assert_eq!(r.bindings().len(), 1, "{}", r.text());
    assert_eq!(
        env.stored(ALICE),
        vec!["sip:%61lice@pc.example.com;transport=tcp"]
    );
}

#[test]
fn the_same_instance_from_a_new_address_replaces_the_old_contact() {
    let env = env(cfg());
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"";
    env.save(&Reg::new(ALICE).contact(&format!("<sip:alice@192.0.2.10:5060>;{inst};reg-id=1")));
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.99>"));
    // The phone moved to another network: new IP, new Call-ID, same instance and reg-id.
    let (code, r) = env
        .save(&Reg::new(ALICE).contact(&format!("<sip:alice@198.51.100.7:6000>;{inst};reg-id=1")));
    assert_eq!(code, SAVE_UPDATED);
    let mut stored = env.stored(ALICE);
    stored.sort();
    assert_eq!(
        stored,
        vec!["sip:alice@192.0.2.99", "sip:alice@198.51.100.7:6000"]
    );
    let c = r.contacts();
    assert!(
        c.iter().any(|v| v.contains("198.51.100.7")
            && v.contains("+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"")
            && v.contains(";reg-id=1")),
        "{c:?}"
    );
    // Another reg-id of the same instance is another flow, kept side by side.
    env.save(&Reg::new(ALICE).contact(&format!("<sip:alice@198.51.100.7:6000>;{inst};reg-id=2")));
    assert_eq!(env.stored(ALICE).len(), 3);
}

#[test]
fn max_contacts_in_reject_mode_answers_503_and_keeps_the_old_bindings() {
    let env = env(RegistrarConfig {
        max_contacts: 2,
        ..cfg()
    });
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .contact("<sip:alice@192.0.2.2>"),
    );
    let (code, r) = env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.3>"));
    assert_eq!((code, r.status()), (SAVE_TOO_MANY, 503));
    assert_eq!(
        r.header("P-Registrar-Error").as_deref(),
        Some("Too many registered contacts")
    );
    let ra: u32 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((30..=45).contains(&ra), "{ra}");
    let mut s = env.stored(ALICE);
    s.sort();
    assert_eq!(s, vec!["sip:alice@192.0.2.1", "sip:alice@192.0.2.2"]);
    // Refreshing an existing binding is still allowed at the limit.
    assert_eq!(
        env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.2>"))
            .1
            .status(),
        200
    );
}

#[test]
fn max_contacts_in_drop_oldest_mode_keeps_the_newest_bindings() {
    let env = env(RegistrarConfig {
        max_contacts: 2,
        max_contacts_mode: MaxContactsMode::DropOldest,
        ..cfg()
    });
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.1>"));
    std::thread::sleep(Duration::from_millis(5));
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.2>"));
    std::thread::sleep(Duration::from_millis(5));
    let (code, r) = env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.3>"));
    assert_eq!((code, r.status()), (SAVE_INSERTED, 200));
    let mut s = env.stored(ALICE);
    s.sort();
    assert_eq!(s, vec!["sip:alice@192.0.2.2", "sip:alice@192.0.2.3"]);
    assert_eq!(r.bindings().len(), 2);
}

#[test]
fn a_query_register_without_contact_lists_the_bindings() {
    let env = env(cfg());
    env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>;q=0.3")
            .contact("<sip:alice@192.0.2.11>;q=0.9"),
    );
    let (code, r) = env.save(&Reg::new(ALICE));
    assert_eq!((code, r.status()), (SAVE_QUERIED, 200));
    let b: Vec<String> = r.bindings().into_iter().map(|b| b.0).collect();
    assert_eq!(
        b,
        vec!["sip:alice@192.0.2.11", "sip:alice@192.0.2.10"],
        "highest q first"
    );
    let (code, r) = env.save(&Reg::new("sip:nobody@example.com"));
    assert_eq!((code, r.status()), (SAVE_QUERIED, 200));
    assert!(r.contacts().is_empty());
}

#[test]
fn a_register_for_a_foreign_domain_is_403_when_check_domain_is_on() {
    let core_cfg = CoreConfig {
        domains: vec!["example.com".into()],
        ..CoreConfig::default()
    };
    let env = env_with(cfg(), core_cfg.clone(), |_| {
        Location::memory(UsrlocConfig::default())
    });
    let (code, r) =
        env.save(&Reg::new("sip:mallory@evil.example.net").contact("<sip:m@192.0.2.66>"));
    assert_eq!((code, r.status()), (SAVE_ERROR, 403));
    assert!(env.stored("sip:mallory@evil.example.net").is_empty());
    assert_eq!(
        env.save(&Reg::new("sip:Alice@EXAMPLE.com").contact("<sip:a@192.0.2.1>"))
            .1
            .status(),
        200
    );
    assert_eq!(
        env.stored(ALICE),
        vec!["sip:a@192.0.2.1"],
        "the AOR is stored in canonical form"
    );
    let off = env_with(
        RegistrarConfig {
            check_domain: false,
            ..cfg()
        },
        core_cfg,
        |_| Location::memory(UsrlocConfig::default()),
    );
    assert_eq!(
        off.save(&Reg::new("sip:mallory@evil.example.net").contact("<sip:m@192.0.2.66>"))
            .1
            .status(),
        200
    );
}

#[test]
fn the_rfc_4475_register_messages_are_registered_with_parameters_and_escaped_headers_kept() {
    let env = env(cfg());
    // 3.3.12: `unknownparam` is a contact parameter, never a URI parameter of the binding.
    assert_eq!(
        env.save_raw(&rfc4475("TC_CPARAM01_V.dat"), 0),
        SAVE_INSERTED
    );
    let r = env.recv();
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(
        r.bindings(),
        vec![("sip:+19725552222@gw1.example.net".into(), 3600)]
    );
    assert_eq!(
        env.stored("sip:watson@example.com"),
        vec!["sip:+19725552222@gw1.example.net"]
    );
    // 3.3.13: inside <>, `unknownparam` is a URI parameter and stays in the contact. By
    // RFC 3261 §19.1.4 that URI is equivalent to the one above (a parameter present in one
    // URI only is ignored), so it replaces that binding (another Call-ID).
    assert_eq!(env.save_raw(&rfc4475("TC_CPARAM02_V.dat"), 0), SAVE_UPDATED);
    let r = env.recv();
    assert_eq!(
        r.contacts(),
        vec!["<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600".to_string()],
        "{}",
        r.text()
    );
    assert_eq!(
        env.stored("sip:watson@example.com"),
        vec!["sip:+19725552222@gw1.example.net;unknownparam"]
    );
    // 3.3.14: the escaped Route header of the contact URI is kept as it was escaped.
    assert_eq!(
        env.save_raw(&rfc4475("TC_REGESCRT_V.dat"), 0),
        SAVE_INSERTED
    );
    let r = env.recv();
    assert_eq!(
        r.bindings(),
        vec![(
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E".into(),
            3600
        )]
    );
    assert_eq!(
        env.stored("sip:user@example.com"),
        vec!["sip:user@example.com?Route=%3Csip:sip.example.com%3E"]
    );
}

#[test]
fn path_is_stored_and_echoed_with_supported_path_only_when_the_phone_supports_it() {
    let env = env(cfg());
    let (_, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@10.0.0.5:5060>")
            .header("Path: <sip:edge1.example.net;lr>")
            .header("Path: <sip:edge2.example.net;lr>")
            .header("Supported: path, outbound"),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.header("Path").as_deref(),
        Some("<sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>")
    );
    assert_eq!(r.header("Supported").as_deref(), Some("path"));
    assert_eq!(
        &env.bindings(ALICE)[0].path[..],
        b"<sip:edge1.example.net;lr>, <sip:edge2.example.net;lr>"
    );
    let bob = "sip:bob@example.com";
    let (_, r) = env.save(
        &Reg::new(bob)
            .contact("<sip:bob@10.0.0.6>")
            .header("Path: <sip:edge1.example.net;lr>"),
    );
    assert_eq!(r.status(), 200);
    assert!(
        r.header("Path").is_none() && r.header("Supported").is_none(),
        "{}",
        r.text()
    );
    assert_eq!(
        &env.bindings(bob)[0].path[..],
        b"<sip:edge1.example.net;lr>"
    );
    // use_path off: not stored.
    let off = common::env(RegistrarConfig {
        use_path: false,
        ..cfg()
    });
    off.save(
        &Reg::new(bob)
            .contact("<sip:bob@10.0.0.6>")
            .header("Path: <sip:edge1.example.net;lr>"),
    );
    assert!(off.bindings(bob)[0].path.is_empty());
}

#[test]
fn a_required_extension_we_lack_is_420_with_unsupported() {
    let env = env(cfg());
    let (_, r) = env.save(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.10>")
            .header("Require: path, foo"),
    );
    assert_eq!(r.status(), 420);
    assert_eq!(r.header("Unsupported").as_deref(), Some("foo"));
    assert!(env.stored(ALICE).is_empty());
}

#[test]
fn malformed_and_oversized_registers_are_400_and_store_nothing() {
    let env = env(cfg());
    for bad in [
        Reg::new(ALICE).contact("<sip:alice@192.0.2.10>;expires=soon"),
        Reg::new(ALICE).contact("<sip:alice@192.0.2.10>;q=1.5"),
        Reg::new(ALICE).contact("<sip:alice@192.0.2.10>;+sip.instance=\"<urn:x>\";reg-id=0"),
        Reg::new("sip:example.com").contact("<sip:alice@192.0.2.10>"),
        Reg::new(ALICE).contact(&format!("<sip:alice@192.0.2.10;x={}>", "a".repeat(1100))),
    ] {
        let (code, r) = env.save(&bad);
        assert_eq!((code, r.status()), (SAVE_ERROR, 400), "{:?}", bad.contacts);
        assert!(r.header("P-Registrar-Error").is_some());
    }
    let mut many = Reg::new(ALICE);
    for i in 0..33 {
        many = many.contact(&format!("<sip:alice@192.0.2.{i}>"));
    }
    assert_eq!(env.save(&many).1.status(), 400);
    assert!(env.stored(ALICE).is_empty());
    assert_eq!(
        env.reg
            .metrics()
            .rejected
            .iter()
            .map(|c| c.get())
            .sum::<u64>(),
        6
    );
}

#[test]
fn the_authenticated_user_may_only_register_its_own_aor_when_required() {
    let env = env(RegistrarConfig {
        require_auth_user_match: true,
        ..cfg()
    });
    let raw = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .raw(env.ua_addr().port());
    let mut ctx = env.ctx(&raw);
    ctx.auth_user = Some(("bob".into(), "example.com".into()));
    assert_eq!(env.reg.save(&mut ctx, "location", 0), SAVE_ERROR);
    assert_eq!(env.recv().status(), 403);
    let mut ctx = env.ctx(&raw);
    ctx.auth_user = Some(("Alice".into(), "example.com".into()));
    assert_eq!(env.reg.save(&mut ctx, "location", 0), SAVE_INSERTED);
    assert_eq!(env.recv().status(), 200);
}

#[test]
fn flags_suppress_the_reply_and_keep_one_contact_per_aor() {
    let env = env(cfg());
    let code = env.save_raw(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .raw(env.ua_addr().port()),
        SAVE_NO_REPLY,
    );
    assert_eq!(code, SAVE_INSERTED);
    assert!(env.nothing_received(Duration::from_millis(200)));
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.2>"));
    let (code, r) = env.save_flags(
        &Reg::new(ALICE).contact("<sip:alice@192.0.2.3>"),
        SAVE_ONE_CONTACT,
    );
    assert_eq!(code, SAVE_INSERTED);
    assert_eq!(r.bindings().len(), 1);
    assert_eq!(env.stored(ALICE), vec!["sip:alice@192.0.2.3"]);
}

#[test]
fn a_request_that_is_not_a_register_or_names_another_table_is_refused() {
    let env = env(cfg());
    let raw = String::from_utf8(
        Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .raw(env.ua_addr().port()),
    )
    .unwrap()
    .replace("REGISTER", "OPTIONS");
    assert_eq!(env.save_raw(raw.as_bytes(), 0), SAVE_ERROR);
    assert!(env.nothing_received(Duration::from_millis(200)));
    let mut ctx = env.ctx(
        &Reg::new(ALICE)
            .contact("<sip:alice@192.0.2.1>")
            .raw(env.ua_addr().port()),
    );
    assert_eq!(env.reg.save(&mut ctx, "subscribers", 0), SAVE_ERROR);
    assert_eq!(env.recv().status(), 500);
}

fn flaky_env(with: FailWith, dir: &TempDir) -> (Env, Arc<Flaky>) {
    let cell = std::sync::Mutex::new(None);
    let env = env_with(cfg(), CoreConfig::default(), |rt| {
        let ucfg = store_cfg(DbMode::WriteThrough, dir);
        let inner = rt
            .block_on(geosip_store::location::open_location(
                &ucfg.store_config(&dir.0),
            ))
            .unwrap();
        let flaky = Arc::new(Flaky {
            inner,
            fail: false.into(),
            with,
        });
        *cell.lock().unwrap() = Some(flaky.clone());
        Location::with_backend(ucfg, flaky, rt.handle().clone()).unwrap()
    });
    let flaky = cell.lock().unwrap().take().unwrap();
    (env, flaky)
}

#[test]
fn a_store_that_is_down_gets_503_with_retry_after_and_memory_is_unchanged() {
    let dir = TempDir::new();
    let (env, flaky) = flaky_env(FailWith::Timeout, &dir);
    let reg = Reg::new(ALICE)
        .contact("<sip:alice@192.0.2.10>")
        .expires("600");
    assert_eq!(env.save(&reg).1.status(), 200);
    let before = env.bindings(ALICE);
    flaky.fail.store(true, Ordering::SeqCst);
    let (code, r) = env.save(&reg.next().contact("<sip:alice@192.0.2.11>").expires("1200"));
    assert_eq!((code, r.status()), (SAVE_ERROR, 503));
    let ra: u32 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((30..=45).contains(&ra), "{ra}");
    assert_eq!(env.bindings(ALICE), before, "nothing half-stored");
    flaky.fail.store(false, Ordering::SeqCst);
    let (code, r) = env.save(&reg.next().next().contact("<sip:alice@192.0.2.11>"));
    assert_eq!((code, r.status()), (SAVE_INSERTED, 200));
    assert_eq!(env.stored(ALICE).len(), 2);
}

#[test]
fn a_store_that_refuses_the_write_gets_500_with_retry_after() {
    let dir = TempDir::new();
    let (env, flaky) = flaky_env(FailWith::Refused, &dir);
    flaky.fail.store(true, Ordering::SeqCst);
    let (code, r) = env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.10>"));
    assert_eq!((code, r.status()), (SAVE_ERROR, 500));
    assert!(r.header("Retry-After").is_some());
    assert!(env.stored(ALICE).is_empty());
}

#[test]
fn write_through_to_the_embedded_sqlite_store_survives_a_restart() {
    let dir = TempDir::new();
    let open = |rt: &tokio::runtime::Runtime| {
        Location::open(
            store_cfg(DbMode::WriteThrough, &dir),
            &dir.0,
            rt.handle().clone(),
        )
        .unwrap()
    };
    let first_ua = {
        let env = env_with(cfg(), CoreConfig::default(), open);
        let (code, r) = env.save(
            &Reg::new(ALICE)
                .contact("<sip:alice@192.0.2.10>;q=0.5")
                .header("Path: <sip:edge.example.net;lr>")
                .header("User-Agent: Phone/1.0"),
        );
        assert_eq!((code, r.status()), (SAVE_INSERTED, 200));
        env.ua_addr()
    };
    let env = env_with(cfg(), CoreConfig::default(), open);
    let b = env.bindings(ALICE);
    assert_eq!(b.len(), 1);
    assert_eq!(
        (
            &b[0].contact[..],
            b[0].q,
            &b[0].path[..],
            &b[0].user_agent[..]
        ),
        (
            &b"sip:alice@192.0.2.10"[..],
            500,
            &b"<sip:edge.example.net;lr>"[..],
            &b"Phone/1.0"[..]
        )
    );
    assert_eq!(
        b[0].received.unwrap().source,
        first_ua,
        "the source address was stored"
    );
    let (code, r) = env.save(&Reg::new(ALICE));
    assert_eq!((code, r.bindings().len()), (SAVE_QUERIED, 1));
}

#[test]
fn mutated_registers_never_panic_and_never_store_more_than_the_limits() {
    let env = env(RegistrarConfig {
        max_contacts: 3,
        ..cfg()
    });
    let valid = Reg::new(ALICE)
        .contact("\"A\" <sip:alice@192.0.2.10:5060;transport=udp>;q=0.5;expires=60;+sip.instance=\"<urn:uuid:1>\";reg-id=1")
        .contact("<sip:%61lice@[2001:db8::1]>")
        .expires("120")
        .header("Path: <sip:edge.example.net;lr>")
        .header("Supported: path")
        .header("User-Agent: Phone/1.0")
        .raw(env.ua_addr().port());
    let base = env.ctx(&valid);
    let now = geosip_usrloc::unix_ms();
    let mut runs = 0;
    for i in 0..valid.len() {
        for b in [
            b'<', b'>', b';', b'%', b',', b'"', b'*', b'=', b':', b'@', 0u8, 0xff, b' ', b'\n',
        ] {
            let mut m = valid.clone();
            m[i] = b;
            let Ok(msg) = sip_msg::SipMessage::parse_lenient(bytes::Bytes::from(m)) else {
                continue;
            };
            let mut ctx = base.clone();
            ctx.msg = msg;
            let out = env.reg.process_register(&ctx, "location", 0, now);
            assert!(out.code != 0 && (out.status == 0 || (200..700).contains(&out.status)));
            runs += 1;
        }
    }
    assert!(runs > 1000, "{runs}");
    let st = env.loc.stats();
    assert!(st.contacts <= st.aors * 3, "{st:?}");
}

#[test]
fn concurrent_registers_of_one_aor_keep_one_binding_per_phone_and_respect_max_contacts() {
    let env = Arc::new(env(RegistrarConfig {
        max_contacts: 6,
        ..cfg()
    }));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let env = env.clone();
            std::thread::spawn(move || {
                let mut reg = Reg::new(ALICE).contact(&format!("<sip:alice@192.0.2.{t}>"));
                let mut codes = Vec::new();
                for _ in 0..50 {
                    let ctx = env.ctx(&reg.raw(env.ua_addr().port()));
                    codes.push(
                        env.reg
                            .process_register(&ctx, "location", 0, geosip_usrloc::unix_ms())
                            .code,
                    );
                    reg = reg.next();
                }
                codes
            })
        })
        .collect();
    let codes: Vec<i32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let stored = env.stored(ALICE);
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert_eq!(codes.iter().filter(|c| **c == SAVE_INSERTED).count(), 6);
    assert!(
        codes
            .iter()
            .all(|c| [SAVE_INSERTED, SAVE_UPDATED, SAVE_TOO_MANY].contains(c))
    );
}
