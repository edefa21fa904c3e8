//! The `ul.*` RPC methods and the metrics.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use geosip_core::config::CoreConfig;
use geosip_registrar::RegistrarConfig;
use geosip_usrloc::{DbMode, Location};
use serde_json::{Value, json};

#[test]
fn ul_add_lookup_dump_rm_contact_and_rm_return_the_expected_json() {
    let env = env(cfg());
    let r = env
        .rpc(
            "ul.add",
            &[
                ALICE,
                "sip:alice@192.0.2.1",
                "600",
                "0.5",
                "<sip:edge.example.net;lr>",
            ],
        )
        .unwrap();
    assert_eq!(
        r,
        json!({"aor": ALICE, "contact": "sip:alice@192.0.2.1", "expires": 600, "result": "inserted"})
    );
    // Kamailio's spelling: a leading table name, an AOR without scheme, a contact in <>.
    let r = env
        .rpc(
            "ul.add",
            &["location", "Alice@Example.com", "<sip:alice@192.0.2.2>"],
        )
        .unwrap();
    assert_eq!(r["result"], "inserted");
    assert_eq!(r["expires"], 3600);
    assert_eq!(
        env.rpc("ul.add", &[ALICE, "sip:alice@192.0.2.2", "60"])
            .unwrap()["result"],
        "updated"
    );

    let r = env.rpc("ul.lookup", &[ALICE]).unwrap();
    assert_eq!(r["aor"], ALICE);
    let c = r["contacts"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0]["contact"].as_str(), c[0]["q"].as_f64()),
        (Some("sip:alice@192.0.2.2"), Some(1.0)),
        "highest q first"
    );
    assert_eq!(c[1]["q"].as_f64(), Some(0.5));
    assert_eq!(c[1]["path"], "<sip:edge.example.net;lr>");
    assert_eq!(c[1]["user_agent"], "geosip ul.add");
    let left = c[1]["expires_in"].as_u64().unwrap();
    assert!((598..=600).contains(&left), "{left}");
    assert_eq!(c[1]["received"], Value::Null);
    assert_eq!(c[1]["ruid"].as_str().unwrap().len(), 32);

    env.rpc("ul.add", &["sip:bob@example.com", "sip:bob@192.0.2.9"])
        .unwrap();
    let all = env.rpc("ul.dump", &[]).unwrap();
    assert_eq!(
        (
            all["count"].as_u64(),
            all["total_aors"].as_u64(),
            &all["next_offset"]
        ),
        (Some(2), Some(2), &Value::Null)
    );
    let p1 = env.rpc("ul.dump", &["1"]).unwrap();
    assert_eq!(
        (p1["count"].as_u64(), p1["next_offset"].as_u64()),
        (Some(1), Some(1))
    );
    let p2 = env.rpc("ul.dump", &["1", "1"]).unwrap();
    assert_eq!(p2["next_offset"], Value::Null);
    let mut names = vec![
        p1["aors"][0]["aor"].as_str().unwrap(),
        p2["aors"][0]["aor"].as_str().unwrap(),
    ];
    names.sort();
    assert_eq!(names, vec!["sip:alice@example.com", "sip:bob@example.com"]);

    let r = env
        .rpc("ul.rm_contact", &[ALICE, "sip:alice@192.0.2.1"])
        .unwrap();
    assert_eq!(r["removed"], 1);
    assert_eq!(
        env.rpc("ul.rm_contact", &[ALICE, "sip:alice@192.0.2.1"])
            .unwrap_err()
            .code,
        404
    );
    assert_eq!(env.rpc("ul.rm", &[ALICE]).unwrap()["removed"], 1);
    assert_eq!(env.rpc("ul.lookup", &[ALICE]).unwrap_err().code, 404);
    assert_eq!(env.rpc("ul.rm", &[ALICE]).unwrap_err().code, 404);
    assert_eq!(env.stored("sip:bob@example.com"), vec!["sip:bob@192.0.2.9"]);
}

#[test]
fn ul_methods_say_what_is_wrong_with_their_params() {
    let env = env(cfg());
    for (m, p) in [
        ("ul.lookup", vec![]),
        ("ul.lookup", vec!["tel:+4930123"]),
        ("ul.add", vec![ALICE]),
        ("ul.add", vec![ALICE, "sip:a@192.0.2.1", "soon"]),
        ("ul.add", vec![ALICE, "sip:a@192.0.2.1", "0"]),
        ("ul.add", vec![ALICE, "sip:a@192.0.2.1", "60", "2"]),
        (
            "ul.add",
            vec![ALICE, "sip:a@192.0.2.1", "60", "1", "not a uri <"],
        ),
        ("ul.dump", vec!["many"]),
    ] {
        let e = env.rpc(m, &p).unwrap_err();
        assert_eq!(e.code, -32602, "{m} {p:?}: {e}");
    }
    assert!(env.stored(ALICE).is_empty());
}

#[test]
fn ul_stats_and_the_metrics_report_the_table_and_the_registrar_counters() {
    let env = env(RegistrarConfig {
        min_expires: 120,
        ..cfg()
    });
    env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.1>"));
    assert_eq!(
        env.save(
            &Reg::new(ALICE)
                .contact("<sip:alice@192.0.2.2>")
                .expires("10")
        )
        .1
        .status(),
        423
    );
    let mut ctx = env.ctx(b"INVITE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nTo: <sip:alice@example.com>\r\nFrom: <sip:c@x>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    env.reg.lookup(&mut ctx, "location");

    let s = env.rpc("ul.stats", &[]).unwrap();
    assert_eq!(
        (
            s["usrloc"]["aors"].as_u64(),
            s["usrloc"]["contacts"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(s["usrloc"]["db_mode"], "memory");
    assert_eq!(s["registrar"]["accepted"], 1);
    assert_eq!(s["registrar"]["rejected"]["interval_too_brief"], 1);
    assert_eq!(s["registrar"]["contacts"]["inserted"], 1);
    assert_eq!(s["registrar"]["lookups"]["found"], 1);

    let text = env.core.metrics.render_prometheus();
    for line in [
        "geosip_registrar_accepted_total 1",
        "geosip_registrar_rejected_total{status=\"423\",reason=\"interval_too_brief\"} 1",
        "geosip_registrar_contacts_total{op=\"inserted\"} 1",
        "geosip_registrar_lookups_total{result=\"found\"} 1",
        "geosip_usrloc_contacts 1",
        "geosip_usrloc_changes_total{kind=\"insert\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    assert_eq!(
        env.rpc("ul.flush", &[]).unwrap(),
        json!({"db_mode": "memory", "flushed_aors": 0})
    );
}

#[test]
fn ul_flush_writes_the_pending_changes_of_write_back_mode_to_sqlite() {
    let dir = TempDir::new();
    let env = env_with(cfg(), CoreConfig::default(), |rt| {
        Location::open(
            store_cfg(DbMode::WriteBack, &dir),
            &dir.0,
            rt.handle().clone(),
        )
        .unwrap()
    });
    assert_eq!(
        env.save(&Reg::new(ALICE).contact("<sip:alice@192.0.2.1>"))
            .1
            .status(),
        200
    );
    let backend = env.loc.backend().unwrap();
    assert!(
        env.rt
            .block_on(backend.lookup_aor(ALICE.as_bytes()))
            .unwrap()
            .is_empty(),
        "not flushed yet"
    );
    assert_eq!(
        env.rpc("ul.flush", &[]).unwrap(),
        json!({"db_mode": "write-back", "flushed_aors": 1})
    );
    let stored = env
        .rt
        .block_on(backend.lookup_aor(ALICE.as_bytes()))
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].contact[..], b"sip:alice@192.0.2.1");
    let s = env.rpc("ul.stats", &[]).unwrap();
    assert_eq!(s["usrloc"]["store"]["backend"], "sqlite");
    assert!(s["usrloc"]["store"]["calls"].as_u64().unwrap() > 0);
}
