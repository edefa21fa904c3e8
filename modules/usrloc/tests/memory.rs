//! The table itself (memory mode): ordering, expiry, atomic updates, events, identity rules.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use geosip_usrloc::{
    Binding, BindingKey, ContactInfo, Error, EventKind, Location, Origin, Received, RemoteOutcome,
    Transport, Upserted, UsrlocConfig,
};

const T0: u64 = 1_900_000_000_000; // unix ms
const T0S: u64 = T0 / 1000;

fn loc() -> Location {
    Location::memory(UsrlocConfig {
        timer_interval_s: 0,
        ..UsrlocConfig::default()
    })
}

fn contact(c: &str, expires_in: u64, q: u16) -> ContactInfo {
    ContactInfo {
        contact: Bytes::from(c.to_string()),
        expires: T0S + expires_in,
        q,
        call_id: Bytes::from_static(b"a84b4c76e66710@pc33.atlanta.example.com"),
        cseq: 1,
        received: Some(Received {
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "198.51.100.1:5060".parse().unwrap(),
        }),
        user_agent: Bytes::from_static(b"Yealink SIP-T46S 66.86.0.15"),
        ..ContactInfo::default()
    }
}

fn contacts(v: &[Binding]) -> Vec<&[u8]> {
    v.iter().map(|b| &b.contact[..]).collect()
}

const ALICE: &[u8] = b"sip:alice@example.com";

#[test]
fn lookup_orders_bindings_by_q_then_most_recent() {
    let l = loc();
    l.add(ALICE, contact("sip:a@1", 3600, 500), T0).unwrap();
    l.add(ALICE, contact("sip:a@2", 3600, 1000), T0 + 1)
        .unwrap();
    l.add(ALICE, contact("sip:a@3", 3600, 500), T0 + 2).unwrap();
    l.add(ALICE, contact("sip:a@4", 3600, 0), T0 + 3).unwrap();
    let got = l.lookup(ALICE, T0 + 10).unwrap();
    assert_eq!(
        contacts(&got),
        vec![&b"sip:a@2"[..], b"sip:a@3", b"sip:a@1", b"sip:a@4"]
    );
    assert_eq!(got[0].aor, ALICE);
    assert!(l.registered(ALICE, T0).unwrap());
    assert!(!l.registered(b"sip:nobody@example.com", T0).unwrap());
}

#[test]
fn expired_bindings_are_never_returned_even_before_the_sweeper_runs() {
    let l = loc();
    l.add(ALICE, contact("sip:a@1", 60, 1000), T0).unwrap();
    l.add(ALICE, contact("sip:a@2", 3600, 1000), T0).unwrap();
    assert_eq!(l.lookup(ALICE, T0 + 59_999).unwrap().len(), 2);
    assert_eq!(
        contacts(&l.lookup(ALICE, T0 + 60_000).unwrap()),
        vec![&b"sip:a@2"[..]]
    );
    assert!(!l.registered(ALICE, T0 + 3_600_000).unwrap());
    assert_eq!(l.stats().contacts, 2, "still in memory until swept");
}

#[test]
fn the_sweeper_removes_expired_bindings_and_emits_expire_events() {
    let l = loc();
    let rx = l.subscribe();
    l.add(ALICE, contact("sip:a@1", 60, 1000), T0).unwrap();
    l.add(ALICE, contact("sip:a@2", 3600, 1000), T0).unwrap();
    l.add(b"sip:bob@example.com", contact("sip:b@1", 30, 1000), T0)
        .unwrap();
    assert_eq!(l.expire(T0 + 10_000), 0);
    assert_eq!(l.expire(T0 + 61_000), 2);
    let s = l.stats();
    assert_eq!((s.aors, s.contacts, s.expired), (1, 1, 2));
    let kinds: Vec<EventKind> = rx.try_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Insert,
            EventKind::Insert,
            EventKind::Insert,
            EventKind::Expire,
            EventKind::Expire
        ]
    );
    assert_eq!(l.expire(T0 + 4_000_000), 1);
    assert_eq!(l.stats().aors, 0);
    assert_eq!(
        l.stats().user_agents,
        0,
        "interned User-Agents are freed with their last binding"
    );
}

#[test]
fn an_update_sees_live_bindings_and_its_changes_become_events() {
    let l = loc();
    let rx = l.subscribe();
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0).unwrap();
    l.add(ALICE, contact("sip:a@old", 10, 1000), T0).unwrap();
    // At T0+20s the second binding is expired: the closure does not see it.
    let seen = l
        .update(ALICE, T0 + 20_000, |e| {
            let n = e.len();
            let mut c = contact("sip:a@1", 7200, 1000);
            c.cseq = 2;
            assert_eq!(e.upsert(c).unwrap(), Upserted::Updated);
            assert_eq!(
                e.upsert(contact("sip:a@3", 7200, 900)).unwrap(),
                Upserted::Inserted
            );
            n
        })
        .unwrap();
    assert_eq!(seen, 1);
    let events: Vec<(EventKind, Bytes)> =
        rx.try_iter().map(|e| (e.kind, e.binding.contact)).collect();
    assert_eq!(
        events,
        vec![
            (EventKind::Insert, Bytes::from_static(b"sip:a@1")),
            (EventKind::Insert, Bytes::from_static(b"sip:a@old")),
            (EventKind::Update, Bytes::from_static(b"sip:a@1")),
            (EventKind::Insert, Bytes::from_static(b"sip:a@3")),
            (EventKind::Expire, Bytes::from_static(b"sip:a@old")),
        ]
    );
    let got = l.lookup(ALICE, T0 + 20_000).unwrap();
    assert_eq!(got[0].cseq, 2);
    assert_eq!(got[0].last_modified, T0 + 20_000);
    let s = l.stats();
    assert_eq!((s.inserts, s.updates, s.expired), (3, 1, 1));
}

#[test]
fn a_refreshed_binding_keeps_its_ruid() {
    let l = loc();
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0).unwrap();
    let r1 = l.lookup(ALICE, T0).unwrap()[0].ruid;
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0 + 5)
        .unwrap();
    assert_eq!(l.lookup(ALICE, T0).unwrap()[0].ruid, r1);
    l.add(ALICE, contact("sip:a@2", 3600, 1000), T0 + 5)
        .unwrap();
    let ruids: Vec<_> = l
        .lookup(ALICE, T0)
        .unwrap()
        .iter()
        .map(|b| b.ruid)
        .collect();
    assert_ne!(ruids[0], ruids[1]);
}

#[test]
fn rollback_discards_the_changes_of_the_closure() {
    let l = loc();
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0).unwrap();
    l.update(ALICE, T0, |e| {
        e.clear();
        e.upsert(contact("sip:a@2", 3600, 1000)).unwrap();
        e.rollback();
    })
    .unwrap();
    assert_eq!(
        contacts(&l.lookup(ALICE, T0).unwrap()),
        vec![&b"sip:a@1"[..]]
    );
    assert_eq!(l.stats().inserts, 1);
}

#[test]
fn contact_star_and_unregister_remove_every_binding() {
    let l = loc();
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0).unwrap();
    l.add(ALICE, contact("sip:a@2", 3600, 1000), T0).unwrap();
    assert!(l.unregister_contact(ALICE, b"sip:a@1", T0).unwrap());
    assert!(!l.unregister_contact(ALICE, b"sip:a@1", T0).unwrap());
    assert_eq!(l.unregister(ALICE, T0).unwrap(), 1);
    assert!(l.lookup(ALICE, T0).unwrap().is_empty());
    let s = l.stats();
    assert_eq!((s.aors, s.contacts, s.deletes), (0, 0, 2));
}

#[test]
fn an_instance_and_reg_id_identify_a_binding_whatever_its_contact() {
    let l = loc();
    let mut c = contact("sip:a@192.0.2.1:5060", 3600, 1000);
    c.instance = Bytes::from_static(b"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>");
    c.reg_id = 1;
    l.add(ALICE, c.clone(), T0).unwrap();
    let mut moved = c.clone();
    moved.contact = Bytes::from_static(b"sip:a@203.0.113.7:6000");
    assert_eq!(l.add(ALICE, moved, T0 + 1).unwrap(), Upserted::Updated);
    let mut other_flow = c.clone();
    other_flow.reg_id = 2;
    assert_eq!(
        l.add(ALICE, other_flow, T0 + 2).unwrap(),
        Upserted::Inserted
    );
    let got = l.lookup(ALICE, T0).unwrap();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .any(|b| b.contact == "sip:a@203.0.113.7:6000" && b.reg_id == 1)
    );
    let key = BindingKey::Instance {
        instance: &c.instance,
        reg_id: 1,
    };
    assert!(l.update(ALICE, T0, |e| e.remove(key).is_some()).unwrap());
}

#[test]
fn bad_bindings_are_refused_and_the_per_aor_cap_holds() {
    let l = Location::memory(UsrlocConfig {
        max_bindings_per_aor: 2,
        ..UsrlocConfig::default()
    });
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0).unwrap();
    l.add(ALICE, contact("sip:a@2", 3600, 1000), T0).unwrap();
    assert!(matches!(
        l.add(ALICE, contact("sip:a@3", 3600, 1000), T0),
        Err(Error::TooManyBindings(2))
    ));
    assert!(matches!(
        l.add(ALICE, contact("sip:a@4", 0, 1000), T0),
        Err(Error::InvalidBinding(_))
    ));
    assert!(matches!(
        l.add(ALICE, contact("sip:a@5", 10, 1001), T0),
        Err(Error::InvalidBinding(_))
    ));
    let long = "x".repeat(2000);
    assert!(matches!(
        l.add(ALICE, contact(&long, 10, 1), T0),
        Err(Error::InvalidBinding(_))
    ));
    assert!(matches!(
        l.add(&[b'a'; 300], contact("sip:a@1", 10, 1), T0),
        Err(Error::InvalidBinding(_))
    ));
    let mut not_text = contact("sip:a@6", 10, 1);
    not_text.user_agent = Bytes::from_static(b"\xff\xfe");
    assert!(matches!(
        l.update(b"sip:x@y", T0, |e| e.upsert(not_text)).unwrap(),
        Err(Error::InvalidBinding(_))
    ));
    assert_eq!(l.lookup(ALICE, T0).unwrap().len(), 2);
}

#[test]
fn a_full_event_channel_drops_and_counts_instead_of_blocking() {
    let l = Location::memory(UsrlocConfig {
        event_queue: 4,
        ..UsrlocConfig::default()
    });
    let rx = l.subscribe();
    for i in 0..10 {
        l.add(
            format!("sip:u{i}@example.com").as_bytes(),
            contact("sip:c@1", 3600, 1000),
            T0,
        )
        .unwrap();
    }
    let s = l.stats();
    assert_eq!((s.events_sent, s.events_dropped), (4, 6));
    assert_eq!(rx.try_iter().count(), 4);
    l.add(b"sip:late@example.com", contact("sip:c@1", 3600, 1000), T0)
        .unwrap();
    assert_eq!(rx.try_iter().count(), 1);
}

#[test]
fn no_events_are_built_without_a_subscriber() {
    let l = loc();
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0).unwrap();
    let s = l.stats();
    assert_eq!((s.events_sent, s.events_dropped), (0, 0));
}

#[test]
fn remote_changes_apply_last_write_wins_on_last_modified() {
    let l = loc();
    let rx = l.subscribe();
    l.add(ALICE, contact("sip:a@1", 3600, 1000), T0 + 500)
        .unwrap();
    let mut remote = l.lookup(ALICE, T0).unwrap()[0].clone();
    let _ = rx.try_iter().count();

    remote.cseq = 99;
    remote.last_modified = T0 + 100; // older than ours
    assert_eq!(
        l.apply_remote(EventKind::Update, remote.clone(), T0)
            .unwrap(),
        RemoteOutcome::Stale
    );
    assert_eq!(l.lookup(ALICE, T0).unwrap()[0].cseq, 1);

    remote.last_modified = T0 + 900; // newer
    remote.server_id = 7;
    assert_eq!(
        l.apply_remote(EventKind::Update, remote.clone(), T0)
            .unwrap(),
        RemoteOutcome::Applied
    );
    let got = l.lookup(ALICE, T0).unwrap();
    assert_eq!(
        (
            got[0].cseq,
            got[0].last_modified,
            got[0].server_id,
            got[0].ruid
        ),
        (99, T0 + 900, 7, remote.ruid)
    );
    let e = rx.try_recv().unwrap();
    assert_eq!((e.kind, e.origin), (EventKind::Update, Origin::Remote));

    let mut del = remote.clone();
    del.last_modified = T0 + 800;
    assert_eq!(
        l.apply_remote(EventKind::Delete, del.clone(), T0).unwrap(),
        RemoteOutcome::Stale
    );
    del.last_modified = T0 + 901;
    assert_eq!(
        l.apply_remote(EventKind::Delete, del.clone(), T0).unwrap(),
        RemoteOutcome::Applied
    );
    assert!(l.lookup(ALICE, T0).unwrap().is_empty());
    assert_eq!(
        l.apply_remote(EventKind::Delete, del, T0).unwrap(),
        RemoteOutcome::Ignored
    );
}

#[test]
fn a_paged_dump_returns_every_live_aor_once() {
    let l = loc();
    for i in 0..1000 {
        l.add(
            format!("sip:u{i}@example.com").as_bytes(),
            contact("sip:c@1", 3600, 1000),
            T0,
        )
        .unwrap();
    }
    l.add(b"sip:gone@example.com", contact("sip:c@1", 1, 1000), T0)
        .unwrap();
    let all: Vec<_> = l.dump(T0 + 10_000).map(|r| r.unwrap()).collect();
    assert_eq!(all.len(), 1000);
    let mut names: Vec<_> = all.iter().map(|a| a.aor.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1000);
    assert!(all.iter().all(|a| a.bindings.len() == 1));
}

#[test]
fn the_table_is_safe_to_use_from_many_threads() {
    let l = std::sync::Arc::new(loc());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let aor = format!("sip:u{}@example.com", i % 50);
                    l.add(
                        aor.as_bytes(),
                        contact(&format!("sip:c{t}@1"), 3600, 1000),
                        T0 + i,
                    )
                    .unwrap();
                    assert!(!l.lookup(aor.as_bytes(), T0).unwrap().is_empty());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = l.stats();
    assert_eq!((s.aors, s.contacts), (50, 200));
}
