//! A few hundred transactions of every outcome through one proxy, from several caller threads
//! at once; afterwards no transaction is left alive.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use geosip_tm::TmConfig;
use sip_msg::SipMessage;

/// Every outcome, by the name used as the R-URI user and the Call-ID prefix.
const SCENARIOS: [&str; 13] = [
    "ok",
    "busy",
    "cancel",
    "silent",
    "ring",
    "msg",
    "msgsilent",
    "tcpok",
    "fork",
    "nosock",
    "tcpdead",
    "serial",
    "forkdead",
];

/// The final status the caller must get (`None`: none at all, RFC 4320).
fn expected(s: &str) -> Option<u16> {
    match s {
        "ok" | "msg" | "tcpok" | "fork" | "serial" | "forkdead" => Some(200),
        "busy" => Some(486),
        "cancel" => Some(487),
        "silent" | "ring" | "tcpdead" => Some(408),
        "nosock" => Some(503),
        _ => None,
    }
}

/// An automatic callee: answers according to the scenario in the Call-ID.
fn responder(ua: Arc<Ua>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut invites: HashMap<Vec<u8>, (SipMessage, SocketAddr)> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let Some((m, src)) = ua.wait(Duration::from_millis(50), |_| true) else {
                continue;
            };
            let Some(method) = m.method_bytes().map(<[u8]>::to_vec) else {
                continue;
            };
            let cid = m.call_id().unwrap_or(b"").to_vec();
            let scen = String::from_utf8_lossy(&cid)
                .split('-')
                .next()
                .unwrap_or("")
                .to_string();
            let tag = format!("{}-tag", ua.name);
            match method.as_slice() {
                b"INVITE" => {
                    if invites.contains_key(&cid) {
                        continue; // a retransmission from the proxy
                    }
                    invites.insert(cid.clone(), (m.clone(), src));
                    if invites.len() > 2000 {
                        invites.clear();
                    }
                    match (scen.as_str(), ua.name.as_str()) {
                        ("ok" | "tcpok" | "forkdead", _) | ("fork", "bob") | ("serial", "bob2") => {
                            ua.reply(&m, src, 180, &tag);
                            ua.reply(&m, src, 200, &tag);
                        }
                        ("busy", _) | ("serial", "bob") => ua.reply(&m, src, 486, &tag),
                        ("cancel" | "ring" | "fork", _) => ua.reply(&m, src, 180, &tag),
                        _ => {}
                    }
                }
                b"CANCEL" => {
                    ua.reply(&m, src, 200, &tag);
                    if let Some((inv, isrc)) = invites.get(&cid) {
                        ua.reply(inv, *isrc, 487, &tag);
                    }
                }
                b"BYE" => ua.reply(&m, src, 200, &tag),
                b"MESSAGE" if scen == "msg" => ua.reply(&m, src, 200, &tag),
                _ => {}
            }
        }
    })
}

/// One call of scenario `scen`; returns the final status the caller got.
fn run_call(alice: &Ua, proxy: SocketAddr, scen: &str, n: usize) -> Option<u16> {
    let call_id = format!("{scen}-{}-{n}", alice.name);
    let ruri = format!("sip:{scen}@example.com");
    if scen.starts_with("msg") {
        let req = alice.request(
            "MESSAGE",
            &ruri,
            &call_id,
            "f",
            "<sip:x@example.com>",
            1,
            &token("z9hG4bKm"),
            &[],
            b"",
        );
        alice.send(proxy, &req);
        return if scen == "msg" {
            alice
                .wait_final("MESSAGE", &call_id, WAIT)
                .and_then(|m| m.status())
        } else {
            None
        };
    }
    let call = Call::invite_with_id(alice, &ruri, &call_id, b"");
    alice.send(proxy, &call.bytes);
    if n.is_multiple_of(3) {
        alice.send(proxy, &call.bytes); // a retransmission, absorbed
    }
    if scen == "cancel" {
        alice.wait(WAIT, |m| {
            m.status() == Some(180) && m.call_id() == Some(call_id.as_bytes())
        })?;
        alice.send(proxy, &call.cancel(alice));
        alice.wait_final("CANCEL", &call_id, WAIT)?;
    }
    let fin = alice.wait_final("INVITE", &call_id, WAIT)?;
    let status = fin.status()?;
    if status >= 300 {
        alice.send(proxy, &call.ack_non2xx(alice, &fin));
    } else {
        alice.send(proxy, &call.in_dialog(alice, "ACK", 1, &fin));
        alice.send(proxy, &call.in_dialog(alice, "BYE", 2, &fin));
        let bye = alice.wait_final("BYE", &call_id, WAIT)?;
        assert_eq!(bye.status(), Some(200), "BYE of {call_id}");
    }
    Some(status)
}

#[test]
fn a_soak_of_every_outcome_leaves_no_transaction_alive() {
    let bob = Arc::new(Ua::udp("bob"));
    let bob2 = Arc::new(Ua::udp("bob2"));
    let tbob = Arc::new(Ua::tcp_listener("tbob"));
    // A TCP port nobody listens on: the connect fails after the send was queued.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A UDP contact that never answers, forked in parallel with one that does.
    let mute = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mute_uri = format!("sip:mute@{}", mute.local_addr().unwrap());
    let (u1, u2, ut) = (bob.uri(), bob2.uri(), tbob.uri());
    let cfg = TmConfig {
        t1_ms: 200,
        fr_timer: 250,
        fr_inv_timer: 250,
        ..fast_cfg()
    };
    let p = Proxy::start(
        cfg,
        move |_, ctx| {
            let user = ctx
                .msg
                .request_uri()
                .and_then(|u| u.user().map(<[u8]>::to_vec))
                .unwrap_or_default();
            let t = |u: &str, q| (u.to_string(), q);
            let targets = match user.as_slice() {
                b"tcpok" => vec![t(&ut, 1000)],
                b"fork" => vec![t(&u1, 1000), t(&u2, 1000)],
                b"forkdead" => vec![t(&u1, 1000), t(&mute_uri, 1000)],
                b"serial" => vec![t(&u1, 1000), t(&u2, 500)],
                b"nosock" => vec![t("sip:x@[::1]:5060", 1000)],
                b"tcpdead" => vec![t(&format!("sip:x@{dead};transport=tcp"), 1000)],
                _ => vec![t(&u1, 1000)],
            };
            set_targets(ctx, &targets);
            if user == b"serial" {
                ctx.on_failure = Some("serial".into());
            }
        },
        |tm, _, ctx, _| {
            if tm.t_next_contacts(ctx) {
                let _ = tm.t_relay(ctx);
            }
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let responders: Vec<_> = [&bob, &bob2, &tbob]
        .iter()
        .map(|u| responder(Arc::clone(u), Arc::clone(&stop)))
        .collect();

    const CALLERS: usize = 4;
    const ROUNDS: usize = 6;
    let failures = Arc::new(Mutex::new(Vec::new()));
    // A failed t_relay forgets its transaction, so a retransmitted "nosock" INVITE makes
    // another one; everything else is one transaction per request.
    let invite_txns = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let resent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|k| {
            let (proxy, failures) = (p.udp, Arc::clone(&failures));
            let (invite_txns, resent) = (Arc::clone(&invite_txns), Arc::clone(&resent));
            thread::spawn(move || {
                let alice = Ua::udp(&format!("alice{k}"));
                for n in 0..ROUNDS * SCENARIOS.len() {
                    // Each thread starts at another scenario so that outcomes overlap.
                    let scen = SCENARIOS[(n + k * 3) % SCENARIOS.len()];
                    if !scen.starts_with("msg") {
                        let txns = if scen == "nosock" && n.is_multiple_of(3) {
                            2
                        } else {
                            1
                        };
                        invite_txns.fetch_add(txns, Ordering::Relaxed);
                        if n.is_multiple_of(3) && scen != "nosock" {
                            resent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let got = run_call(&alice, proxy, scen, n);
                    if got != expected(scen) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{scen} #{n} of alice{k}: got {got:?}"));
                    }
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} wrong outcomes: {failures:?}",
        failures.len()
    );

    p.assert_all_freed(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    for r in responders {
        r.join().unwrap();
    }

    // Exactly one transaction per request: retransmissions never created a second one.
    let per_round = |f: &dyn Fn(&str) -> u64| {
        SCENARIOS.iter().map(|s| f(s)).sum::<u64>() * (CALLERS * ROUNDS) as u64
    };
    let invites = invite_txns.load(Ordering::Relaxed);
    let non_invites = per_round(&|s| match s {
        "ok" | "tcpok" | "fork" | "serial" | "forkdead" => 1, // the BYE
        "msg" | "msgsilent" => 1,
        _ => 0,
    });
    let s = p.tm.stats();
    assert_eq!(
        (s.total_invite, s.total_non_invite),
        (invites, non_invites),
        "{s:?}"
    );
    let timeouts = per_round(&|s| u64::from(matches!(s, "silent" | "ring" | "tcpdead")));
    assert_eq!(s.local_408, timeouts, "{s:?}");
    assert_eq!(
        s.silent_non_invite,
        per_round(&|s| u64::from(s == "msgsilent"))
    );
    assert_eq!(s.cancels, per_round(&|s| u64::from(s == "cancel")));
    assert_eq!(
        s.retransmissions_absorbed,
        resent.load(Ordering::Relaxed),
        "each resent INVITE absorbed"
    );
    assert_eq!((s.forged_replies, s.rejected_full), (0, 0));
}
