//! The stateful proxy with the default script, on the wire: callees register, callers call
//! through the server; every assertion is about who received what.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use sip_msg::SipMessage;

/// Registers `user` at the server with a contact pointing at `ua`.
fn reg(s: &Server, ua: &Ua, user: &str, _q: Option<&str>) {
    let contact = format!("sip:{user}@{}", ua.addr);
    let r = register(
        user,
        "127.0.0.1",
        &contact,
        ua.addr,
        3600,
        &format!("reg-{}", uniq()),
        1,
        "",
    );
    ua.send(s.udp, r.as_bytes());
    ua.expect_status(200);
}

fn invite(caller: &Ua, s: &Server, user: &str) -> (String, String) {
    let u = uniq();
    let call_id = format!("call-{u}");
    let msg = format!(
        "INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {ca};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{u}\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{ca}>\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
        port = s.udp.port(),
        ca = caller.addr
    );
    caller.send(s.udp, msg.as_bytes());
    (msg, call_id)
}

/// The CANCEL of an INVITE built by [`invite`]: same R-URI, Via, From, To, Call-ID and CSeq
/// number (RFC 3261 §9.1).
fn cancel_of(inv_text: &str) -> String {
    inv_text
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
            "Content-Length: 0\r\n\r\n",
        )
}

/// Receives the next request with `method`, skipping anything else.
fn expect_request(ua: &Ua, method: &str) -> SipMessage {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        if let Some(m) = ua.recv(left)
            && m.method_bytes() == Some(method.as_bytes())
        {
            return m;
        }
    }
    panic!("{method} not received");
}

/// The callee's 2xx/1xx to an INVITE it received: copies Via, Record-Route etc.
fn answer(callee: &Ua, inv: &SipMessage, status: u16, reason: &str, tag: &str) {
    let contact = format!("Contact: <sip:callee@{}>\r\n", callee.addr);
    let r = response_to(inv, status, reason, Some(tag), &contact);
    let top = inv.top_via().unwrap();
    let host = String::from_utf8_lossy(top.host().raw()).into_owned();
    let port = top.port().unwrap_or(5060);
    let to: SocketAddr = format!("{host}:{port}").parse().unwrap();
    callee.send(to, r.as_bytes());
}

/// An in-dialog request from a UA, following the route set `routes` (in order) to `target`.
#[allow(clippy::too_many_arguments)]
fn in_dialog(
    from: &Ua,
    s: &Server,
    method: &str,
    target: &str,
    routes: &[String],
    call_id: &str,
    from_tag: &str,
    to_tag: &str,
    cseq: u32,
) {
    let u = uniq();
    let route_hdr = if routes.is_empty() {
        String::new()
    } else {
        format!("Route: {}\r\n", routes.join(", "))
    };
    let msg = format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\n{route_hdr}From: <sip:x@example.com>;tag={from_tag}\r\nTo: <sip:y@example.com>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        a = from.addr
    );
    from.send(s.udp, msg.as_bytes());
}

fn record_routes(m: &SipMessage) -> Vec<String> {
    m.record_routes()
        .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
        .collect()
}

#[test]
fn a_basic_call_goes_through_record_route_and_either_side_can_hang_up() {
    let s = Server::start(&[]);
    let callee = Ua::new();
    reg(&s, &callee, "bob", None);
    for bye_from_callee in [false, true] {
        let caller = Ua::new();
        let (_inv, call_id) = invite(&caller, &s, "bob");
        caller.expect_status(100);
        let inv = expect_request(&callee, "INVITE");
        assert_eq!(
            inv.request_uri_bytes(),
            Some(format!("sip:bob@{}", callee.addr).as_bytes())
        );
        let rr = record_routes(&inv);
        assert_eq!(rr.len(), 1, "one Record-Route from the proxy");
        answer(&callee, &inv, 180, "Ringing", "t1");
        caller.expect_status(180);
        answer(&callee, &inv, 200, "OK", "t1");
        let ok = caller.expect_status(200);
        let caller_routes = record_routes(&ok);
        assert_eq!(
            caller_routes, rr,
            "the caller sees the proxy's Record-Route"
        );
        let from_tag = String::from_utf8_lossy(ok.from_tag().unwrap()).into_owned();
        // ACK and BYE follow the route set.
        in_dialog(
            &caller,
            &s,
            "ACK",
            &format!("sip:callee@{}", callee.addr),
            &caller_routes,
            &call_id,
            &from_tag,
            "t1",
            1,
        );
        let ack = expect_request(&callee, "ACK");
        assert!(
            ack.header_by_name(b"Route").is_none(),
            "our Route entry was consumed"
        );
        if bye_from_callee {
            in_dialog(
                &callee,
                &s,
                "BYE",
                &format!("sip:caller@{}", caller.addr),
                &rr,
                &call_id,
                "t1",
                &from_tag,
                1,
            );
            let bye = expect_request(&caller, "BYE");
            answer_req(&caller, &bye);
            callee.expect_status(200);
        } else {
            in_dialog(
                &caller,
                &s,
                "BYE",
                &format!("sip:callee@{}", callee.addr),
                &caller_routes,
                &call_id,
                &from_tag,
                "t1",
                2,
            );
            let bye = expect_request(&callee, "BYE");
            answer_req(&callee, &bye);
            caller.expect_status(200);
        }
    }
}

fn answer_req(ua: &Ua, req: &SipMessage) {
    answer(ua, req, 200, "OK", "t1");
}

#[test]
fn cancel_before_answer_gets_200_and_487_and_the_callee_gets_the_cancel() {
    let s = Server::start(&[]);
    let callee = Ua::new();
    reg(&s, &callee, "carol", None);
    let caller = Ua::new();
    let (inv_text, _) = invite(&caller, &s, "carol");
    caller.expect_status(100);
    let inv = expect_request(&callee, "INVITE");
    answer(&callee, &inv, 180, "Ringing", "t9");
    caller.expect_status(180);
    caller.send(s.udp, cancel_of(&inv_text).as_bytes());
    let c = caller.expect_status(200);
    assert_eq!(c.cseq().unwrap().method.as_bytes(), b"CANCEL");
    let fwd_cancel = expect_request(&callee, "CANCEL");
    answer(&callee, &fwd_cancel, 200, "OK", "t9");
    answer(&callee, &inv, 487, "Request Terminated", "t9");
    let r = caller.expect_status(487);
    assert_eq!(r.cseq().unwrap().method.as_bytes(), b"INVITE");
    // The proxy ACKs the 487 hop by hop.
    let ack = expect_request(&callee, "ACK");
    assert_eq!(ack.cseq().unwrap().method.as_bytes(), b"ACK");
}

#[test]
fn invite_retransmissions_are_absorbed_so_the_callee_sees_one_invite() {
    let s = Server::start(&[]);
    let callee = Ua::new();
    reg(&s, &callee, "dave", None);
    let caller = Ua::new();
    let (inv_text, _) = invite(&caller, &s, "dave");
    for _ in 0..3 {
        caller.send(s.udp, inv_text.as_bytes());
    }
    let first = expect_request(&callee, "INVITE");
    // A provisional stops the proxy's own retransmissions (Timer A); the caller's three
    // retransmissions must not reach the callee.
    answer(&callee, &first, 180, "Ringing", "td");
    callee.expect_silence(Duration::from_millis(700));
    // Each retransmission was answered from the transaction (100 or the latest 180).
    assert!(caller.recv(Duration::from_secs(2)).is_some());
}

#[test]
fn parallel_forking_relays_the_first_2xx_and_cancels_the_other_branch() {
    let s = Server::start(&[]);
    let a = Ua::new();
    let b = Ua::new();
    reg(&s, &a, "erin", None);
    // A second contact for the same AOR, same q: both ring in parallel.
    reg(&s, &b, "erin", None);
    let caller = Ua::new();
    invite(&caller, &s, "erin");
    let ia = expect_request(&a, "INVITE");
    let ib = expect_request(&b, "INVITE");
    answer(&a, &ia, 180, "Ringing", "ta");
    answer(&b, &ib, 180, "Ringing", "tb");
    answer(&a, &ia, 200, "OK", "ta");
    let ok = caller.expect_status(200);
    assert_eq!(ok.to_tag(), Some(&b"ta"[..]));
    let c = expect_request(&b, "CANCEL");
    answer(&b, &c, 200, "OK", "tb");
    answer(&b, &ib, 487, "Request Terminated", "tb");
    // The caller never sees the 487 of the cancelled branch.
    caller.expect_silence(Duration::from_millis(500));
}

#[test]
fn serial_forking_tries_the_lower_q_contact_after_486_through_the_failure_route() {
    let s = Server::start(&[]);
    let (hi, lo) = (Ua::new(), Ua::new());
    reg_two_q(&s, "frank", &hi, &lo);
    let caller = Ua::new();
    invite(&caller, &s, "frank");
    let ih = expect_request(&hi, "INVITE");
    lo.expect_silence(Duration::from_millis(300));
    answer(&hi, &ih, 486, "Busy Here", "th");
    let il = expect_request(&lo, "INVITE");
    answer(&lo, &il, 200, "OK", "tl");
    let ok = caller.expect_status(200);
    assert_eq!(ok.to_tag(), Some(&b"tl"[..]));
}

/// Registers `user` with two contacts, `hi` at q=1.0 and `lo` at q=0.5.
fn reg_two_q(s: &Server, user: &str, hi: &Ua, lo: &Ua) {
    for (ua, q) in [(hi, "1.0"), (lo, "0.5")] {
        let r = register(
            user,
            "127.0.0.1",
            &format!("sip:{user}@{}>;q={q};x=<y", ua.addr),
            ua.addr,
            3600,
            &format!("reg-{}", uniq()),
            1,
            "",
        )
        .replace(";x=<y>", "");
        ua.send(s.udp, r.as_bytes());
        ua.expect_status(200);
    }
}

#[test]
fn serial_forking_tries_the_lower_q_contact_when_the_first_times_out_408() {
    let s = Server::start(&["--set", "tm.fr_timer=800", "--set", "tm.fr_inv_timer=800"]);
    let (hi, lo) = (Ua::new(), Ua::new());
    reg_two_q(&s, "kate", &hi, &lo);
    let caller = Ua::new();
    invite(&caller, &s, "kate");
    let _ = expect_request(&hi, "INVITE");
    // hi never answers: after fr_timer its branch ends as 408 and the q=0.5 group is tried.
    let il = expect_request(&lo, "INVITE");
    answer(&lo, &il, 200, "OK", "tk");
    let ok = caller.expect_status(200);
    assert_eq!(ok.to_tag(), Some(&b"tk"[..]));
}

#[test]
fn serial_forking_stops_after_a_6xx_and_the_caller_gets_it() {
    let s = Server::start(&[]);
    let (hi, lo) = (Ua::new(), Ua::new());
    reg_two_q(&s, "gina", &hi, &lo);
    let caller = Ua::new();
    invite(&caller, &s, "gina");
    let ih = expect_request(&hi, "INVITE");
    answer(&hi, &ih, 603, "Decline", "tg");
    let r = caller.expect_status(603);
    assert_eq!(r.to_tag(), Some(&b"tg"[..]));
    // RFC 3261 §16.7 step 5 / §16.6: a 6xx ends the search, the lower q group is not tried.
    let _ = expect_request(&hi, "ACK");
    lo.expect_silence(Duration::from_millis(700));
}

#[test]
fn serial_forking_stops_after_a_cancel_and_the_caller_gets_487() {
    let s = Server::start(&[]);
    let (hi, lo) = (Ua::new(), Ua::new());
    reg_two_q(&s, "hank", &hi, &lo);
    let caller = Ua::new();
    let (inv_text, _) = invite(&caller, &s, "hank");
    let ih = expect_request(&hi, "INVITE");
    answer(&hi, &ih, 180, "Ringing", "th");
    caller.expect_status(180);
    caller.send(s.udp, cancel_of(&inv_text).as_bytes());
    caller.expect_status(200);
    let c = expect_request(&hi, "CANCEL");
    answer(&hi, &c, 200, "OK", "th");
    answer(&hi, &ih, 487, "Request Terminated", "th");
    caller.expect_status(487);
    // Cancelled: the q=0.5 contact must not ring.
    lo.expect_silence(Duration::from_millis(700));
}

#[test]
fn every_2xx_of_a_forked_invite_is_forwarded_to_the_caller() {
    let s = Server::start(&[]);
    let (a, b) = (Ua::new(), Ua::new());
    reg(&s, &a, "ivy", None);
    reg(&s, &b, "ivy", None);
    let caller = Ua::new();
    invite(&caller, &s, "ivy");
    let ia = expect_request(&a, "INVITE");
    let ib = expect_request(&b, "INVITE");
    // Both answer before the CANCEL can reach b (RFC 3261 §16.7 step 5: every 2xx is
    // forwarded; the caller sorts out the two dialogs).
    answer(&a, &ia, 200, "OK", "ta");
    answer(&b, &ib, 200, "OK", "tb");
    let mut tags = Vec::new();
    while tags.len() < 2 {
        let m = caller
            .recv(Duration::from_secs(3))
            .expect("both 200s reach the caller");
        if m.status() == Some(200) {
            tags.push(String::from_utf8_lossy(m.to_tag().unwrap()).into_owned());
        }
    }
    tags.sort();
    assert_eq!(tags, vec!["ta".to_string(), "tb".to_string()]);
}

#[test]
fn a_final_answer_never_acked_is_retransmitted_at_t1_doubling_up_to_t2_until_timer_h() {
    // T1 = 20 ms, T2 = 80 ms: Timer G fires at 20, 40, 80, 80, 80... ms and Timer H at
    // 64 × T1 = 1.28 s (RFC 3261 §17.2.1). With the default T2 (4 s) there would be about 6.
    let s = Server::start(&["--set", "tm.t1_ms=20", "--set", "tm.t2_ms=80"]);
    let callee = Ua::new();
    reg(&s, &callee, "jack", None);
    let caller = Ua::new();
    invite(&caller, &s, "jack");
    let inv = expect_request(&callee, "INVITE");
    answer(&callee, &inv, 486, "Busy Here", "tj");
    let _ = expect_request(&callee, "ACK");
    // The caller never ACKs.
    let start = std::time::Instant::now();
    let mut copies = 0;
    while start.elapsed() < Duration::from_secs(3) {
        match caller.recv(Duration::from_millis(500)) {
            Some(m) if m.status() == Some(486) => copies += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert!((10..=20).contains(&copies), "{copies} copies of the 486");
    assert_eq!(
        s.wait_metric("geosip_tm_server_timeouts_total", 1.0),
        Some(1.0)
    );
    // Freed once the callee side's wait (tm.wt_timer, 5 s: Timer D) is over too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.metric("geosip_tm_transactions{type=\"invite\"}") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "transaction not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unanswered_invite_ends_with_408_after_fr_inv_timer() {
    let s = Server::start(&["--set", "tm.fr_inv_timer=1000", "--set", "tm.fr_timer=1000"]);
    let callee = Ua::new();
    reg(&s, &callee, "gina", None);
    let caller = Ua::new();
    invite(&caller, &s, "gina");
    let inv = expect_request(&callee, "INVITE");
    answer(&callee, &inv, 180, "Ringing", "tg");
    caller.expect_status(180);
    // No final answer: after fr_inv_timer the proxy CANCELs the branch and answers 408.
    let c = expect_request(&callee, "CANCEL");
    answer(&callee, &c, 200, "OK", "tg");
    answer(&callee, &inv, 487, "Request Terminated", "tg");
    caller.expect_status(408);
}

#[test]
fn a_call_to_an_unknown_user_gets_404_and_max_forwards_zero_gets_483() {
    let s = Server::start(&[]);
    let caller = Ua::new();
    invite(&caller, &s, "nobody");
    caller.expect_status(404);
    let msg = request("MESSAGE", "sip:x@example.com", caller.addr, "UDP", "", "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    caller.send(s.udp, msg.as_bytes());
    caller.expect_status(483);
}

#[test]
fn a_udp_caller_reaches_a_tcp_callee_and_a_30_kb_invite_crosses_tcp() {
    let s = Server::start(&[]);
    let tcp = s.tcp.unwrap();
    // The callee listens on TCP and registers a transport=tcp contact over TCP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let la = listener.local_addr().unwrap();
    let mut reg_conn = TcpUa::connect(tcp);
    let r = register(
        "hank",
        "127.0.0.1",
        &format!("sip:hank@{la};transport=tcp"),
        reg_conn.addr,
        3600,
        &format!("reg-{}", uniq()),
        1,
        "",
    )
    .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    reg_conn.send(r.as_bytes());
    reg_conn.expect_status(200);
    // A 30 KB INVITE from a UDP caller would not fit a datagram path MTU but fits the 64 KB
    // limit; the proxy relays it over TCP to the callee.
    let caller = Ua::new();
    let body = "a=x-filler:".to_string() + &"y".repeat(30_000) + "\r\n";
    let u = uniq();
    let msg = format!(
        "INVITE sip:hank@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{u}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{u}\r\nTo: <sip:hank@127.0.0.1>\r\nCall-ID: big-{u}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        s.udp.port(),
        caller.addr,
        caller.addr,
        body.len()
    );
    caller.send(s.udp, msg.as_bytes());
    // The registered contact is on our own listener, or the registration connection (NAT
    // rule: registered over TCP → back over that connection).
    listener.set_nonblocking(false).unwrap();
    let inv = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = None;
        while got.is_none() && std::time::Instant::now() < deadline {
            if let Some(m) = reg_conn.recv(Duration::from_millis(200))
                && m.method_bytes() == Some(b"INVITE")
            {
                got = Some((m, None));
                break;
            }
            listener.set_nonblocking(true).unwrap();
            if let Ok((st, _)) = listener.accept() {
                st.set_nonblocking(false).unwrap();
                let mut c = TcpUa::from_stream(st);
                if let Some(m) = c.recv(Duration::from_secs(5)) {
                    got = Some((m, Some(c)));
                }
            }
        }
        got.expect("INVITE over TCP")
    };
    let (m, conn) = inv;
    assert_eq!(m.body().len(), body.len(), "body intact");
    assert!(String::from_utf8_lossy(m.top_via().unwrap().raw()).contains("SIP/2.0/TCP"));
    let resp = response_to(&m, 486, "Busy Here", Some("th"), "");
    match conn {
        Some(mut c) => c.send(resp.as_bytes()),
        None => reg_conn.send(resp.as_bytes()),
    }
    caller.expect_status(486);
}

#[test]
fn transactions_are_freed_after_calls_of_every_outcome() {
    let s = Server::start(&["--set", "tm.fr_inv_timer=500", "--set", "tm.fr_timer=500"]);
    let callee = Ua::new();
    reg(&s, &callee, "ivan", None);
    for i in 0..20 {
        let caller = Ua::new();
        invite(&caller, &s, "ivan");
        let inv = expect_request(&callee, "INVITE");
        match i % 3 {
            0 => {
                answer(&callee, &inv, 486, "Busy", "tx");
                caller.expect_status(486);
            }
            1 => {
                answer(&callee, &inv, 200, "OK", "tx");
                caller.expect_status(200);
            }
            _ => {
                // no answer at all → 408
                caller.expect_status(408);
            }
        }
    }
    // RFC 6026 Accepted (64·T1) and Timer D keep transactions a while; wait them out.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let live = s.rpc("tm.stats", &[]).unwrap();
        let n = live["live"]["total"]
            .as_u64()
            .or_else(|| live["current"].as_u64())
            .unwrap_or(u64::MAX);
        if n == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "transactions still live: {live}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn sipp_calls_through_the_proxy_with_the_bench_scenarios() {
    sipp_calls(false);
}

#[test]
fn sipp_calls_through_the_proxy_over_tcp_on_both_sides() {
    sipp_calls(true);
}

/// 60 SIPp calls (INVITE/100/180/200/ACK/BYE/200) through the proxy to a registered SIPp
/// callee, over UDP or over TCP on both legs; every call must succeed.
fn sipp_calls(tcp: bool) {
    if !have_tool("sipp") {
        return;
    }
    let transport = if tcp { "t1" } else { "u1" };
    // The record-route-aware caller/callee scenarios of ../shared/bench (copied here).
    let s = Server::start(&["--set", "pike.whitelist=[\"127.0.0.1\"]"]);
    let dir = temp_dir("sipp-call");
    let sc = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp");
    let uas_port = if tcp {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    } else {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap().port()
    };
    let contact = if tcp {
        format!("sip:callee@127.0.0.1:{uas_port};transport=tcp")
    } else {
        format!("sip:callee@127.0.0.1:{uas_port}")
    };
    let target = if tcp { s.tcp.unwrap() } else { s.udp };
    // The callee registers its SIPp address.
    let reg = Ua::new();
    let r = register(
        "callee",
        "127.0.0.1",
        &contact,
        reg.addr,
        600,
        "sipp-callee",
        1,
        "",
    );
    reg.send(s.udp, r.as_bytes());
    reg.expect_status(200);
    let mut uas = std::process::Command::new("timeout")
        .args([
            "60",
            "sipp",
            "-sf",
            &format!("{sc}/uas_call.xml"),
            "-p",
            &uas_port.to_string(),
            "-i",
            "127.0.0.1",
            "-t",
            transport,
            "-nostdin",
            "-m",
            "60",
        ])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "sipp",
            &target.to_string(),
            "-t",
            transport,
            "-sf",
            &format!("{sc}/uac_call.xml"),
            "-s",
            "callee",
            "-r",
            "20",
            "-m",
            "60",
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "50s",
            "-timeout_error",
            "-trace_stat",
            "-stf",
        ])
        .arg(dir.join("uac.csv"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = uas.wait();
    let stat = std::fs::read_to_string(dir.join("uac.csv")).unwrap_or_default();
    let head: Vec<&str> = stat.lines().next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = stat.lines().last().unwrap_or("").split(';').collect();
    let get = |k: &str| {
        head.iter()
            .position(|h| *h == k)
            .and_then(|i| last.get(i))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(
        out.status.success(),
        "SIPp caller failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get("SuccessfulCall(C)"), Some(60), "{stat}");
    assert_eq!(get("FailedCall(C)"), Some(0));
}

#[test]
fn a_stateless_script_forwards_requests_and_replies_without_transactions() {
    let dir = temp_dir("stateless");
    let callee = Ua::new();
    let script = dir.join("stateless.lua");
    std::fs::write(
        &script,
        format!(
            "-- Stateless proxy: everything to one destination, no transactions.\nfunction request_route()\n  if KSR.maxfwd.process_maxfwd(10) < 0 then KSR.sl.send_reply(483, \"Too Many Hops\") return end\n  KSR.forward(\"sip:{}\")\nend\n",
            callee.addr
        ),
    )
    .unwrap();
    let s = Server::start(&["--set", &format!("script.file=\"{}\"", script.display())]);
    let caller = Ua::new();
    let (inv_text, _) = invite(&caller, &s, "anyone");
    let inv = expect_request(&callee, "INVITE");
    assert_eq!(inv.vias().count(), 2, "our Via on top of the caller's");
    // A retransmission is forwarded again, with the same branch (RFC 3261 §16.11).
    caller.send(s.udp, inv_text.as_bytes());
    let again = expect_request(&callee, "INVITE");
    assert_eq!(
        again.top_via().unwrap().branch(),
        inv.top_via().unwrap().branch()
    );
    answer(&callee, &inv, 486, "Busy Here", "sl");
    let r = caller.expect_status(486);
    assert_eq!(r.vias().count(), 1, "our Via removed from the reply");
    // No transaction was created.
    let st = s.rpc("tm.stats", &[]).unwrap();
    assert!(st.to_string().contains("\"total\""), "{st}");
    assert_eq!(
        st["live"]["total"].as_u64().or(st["current"].as_u64()),
        Some(0),
        "{st}"
    );
}

#[test]
fn an_in_dialog_request_that_spirals_through_an_application_server_is_routed_not_a_loop() {
    let s = Server::start(&[]);
    let (app, bob, alice) = (Ua::new(), Ua::new(), Ua::new());
    // The Route set of a dialog that both proxy passes record-routed: us, the application
    // server, us again.
    let us = format!("<sip:{};lr>", s.udp);
    let routes = vec![us.clone(), format!("<sip:{};lr>", app.addr), us];
    let target = format!("sip:bob@{}", bob.addr);
    let call_id = format!("spiral-{}", uniq());
    in_dialog(&alice, &s, "BYE", &target, &routes, &call_id, "fa", "tb", 2);
    let at_app = expect_request(&app, "BYE");
    // The application server routes it on: its own Route entry removed, its Via on top; the
    // Request-URI, tags, Call-ID and CSeq are those of the request it got from us (which
    // carries our Via with its loop hash): only the Route set differs.
    let raw = String::from_utf8_lossy(at_app.as_bytes()).into_owned();
    let line_end = raw.find("\r\n").unwrap();
    let rest = raw[line_end + 2..].replace(&format!("<sip:{};lr>, ", app.addr), "");
    let back = format!(
        "{}\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKapp{}\r\n{}",
        &raw[..line_end],
        app.addr,
        uniq(),
        rest
    );
    assert!(back.contains("Route: "), "{back}");
    app.send(s.udp, back.as_bytes());
    let at_bob = expect_request(&bob, "BYE");
    assert_eq!(at_bob.vias().count(), 4, "alice, us, the app server, us");
    assert_eq!(at_bob.routes().count(), 0);
}
