//! Routing scripts through the binary: hot reload by RPC and SIGHUP, broken scripts refused
//! with file and line, transactions in flight surviving a reload.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const DEFAULT: &str = include_str!("../../../etc/route.lua");

/// The default script with OPTIONS to the server answered `code`, so a test can tell which
/// script version runs.
fn script_answering(code: u16) -> String {
    DEFAULT.replace(
        "        KSR.options.options_reply()\n        return",
        &format!("        KSR.sl.send_reply({code}, \"Version {code}\")\n        return"),
    )
}

/// A server running `code` as its routing script; the script's path, to rewrite and reload.
fn with_script(tag: &str, code: &str) -> (Server, std::path::PathBuf) {
    let file = temp_dir(tag).join("route.lua");
    std::fs::write(&file, code).unwrap();
    let set = format!("script.file=\"{}\"", file.display());
    (Server::start(&["--set", &set]), file)
}

/// Sends `method` from `caller` through the server to `sip:bob@<callee>` and returns the
/// request as the callee got it.
fn through_to(s: &Server, caller: &Ua, callee: &Ua, method: &str) -> sip_msg::SipMessage {
    let req = request(
        method,
        &format!("sip:bob@{}", callee.addr),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, req.as_bytes());
    loop {
        let m = callee.expect(method);
        if m.method_bytes() == Some(method.as_bytes()) {
            break m;
        }
    }
}

fn options_status(s: &Server, ua: &Ua) -> u16 {
    let req = request("OPTIONS", &format!("sip:{}", s.udp), ua.addr, "UDP", "", "");
    ua.send(s.udp, req.as_bytes());
    ua.expect("OPTIONS answer").status().unwrap()
}

fn ctl(s: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args(["ctl", "--admin", &s.admin.to_string()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cfg_reload_swaps_the_script_and_a_broken_one_is_refused_with_file_and_line() {
    let dir = temp_dir("script");
    let file = dir.join("route.lua");
    std::fs::write(&file, script_answering(201)).unwrap();
    let set = format!("script.file=\"{}\"", file.display());
    let s = Server::start(&["--set", &set]);
    let ua = Ua::new();
    assert_eq!(options_status(&s, &ua), 201);

    std::fs::write(&file, script_answering(202)).unwrap();
    let out = ctl(&s, &["cfg.reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(options_status(&s, &ua), 202);

    std::fs::write(&file, "function request_route()\n  if then\nend\n").unwrap();
    let out = ctl(&s, &["cfg.reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    assert_eq!(options_status(&s, &ua), 202, "the old script keeps running");

    std::fs::write(&file, script_answering(203)).unwrap();
    s.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while options_status(&s, &ua) != 203 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_call_in_flight_completes_across_a_reload() {
    let dir = temp_dir("script2");
    let file = dir.join("route.lua");
    std::fs::write(&file, DEFAULT).unwrap();
    let set = format!("script.file=\"{}\"", file.display());
    let s = Server::start(&["--set", &set]);
    let callee = Ua::new();
    let r = register(
        "zoe",
        "127.0.0.1",
        &format!("sip:zoe@{}", callee.addr),
        callee.addr,
        600,
        "z1",
        1,
        "",
    );
    callee.send(s.udp, r.as_bytes());
    callee.expect_status(200);
    let caller = Ua::new();
    let inv = request(
        "INVITE",
        &format!("sip:zoe@127.0.0.1:{}", s.udp.port()),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, inv.as_bytes());
    let got = loop {
        let m = callee.expect("INVITE");
        if m.is_request() {
            break m;
        }
    };
    // Reload while the INVITE transaction (with its failure route armed) is pending.
    std::fs::write(
        &file,
        DEFAULT.replace("-- geosip default", "-- reloaded geosip default"),
    )
    .unwrap();
    assert!(ctl(&s, &["cfg.reload"]).status.success());
    let resp = response_to(&got, 486, "Busy Here", Some("zz"), "");
    callee.send(s.udp, resp.as_bytes());
    caller.expect_status(486);
}

#[test]
fn check_config_reports_a_broken_script_with_its_file_and_line() {
    let dir = temp_dir("check");
    std::fs::write(
        dir.join("route.lua"),
        "function request_route()\n  local = 1\nend\n",
    )
    .unwrap();
    let cfg = dir.join("geosip.toml");
    std::fs::write(&cfg, "[script]\nfile = \"route.lua\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("route.lua:2:"), "{e}");
}

#[test]
fn the_reference_configuration_file_is_valid() {
    let f = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/geosip.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .arg("check-config")
        .arg(f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A script using every route type: a branch route marks each branch, a per-transaction
/// reply route drops the 180, the global reply route counts replies in an htable that OPTIONS
/// reports back in its reason phrase, and sees (and here drops a 299 of) the replies to a
/// stateless `KSR.forward` too.
const ROUTES: &str = r#"
function request_route()
    if KSR.is_OPTIONS() then
        local r = KSR.htable.sht_get("t", "replies") or 0
        local b = KSR.htable.sht_get("t", "branches") or 0
        KSR.sl.send_reply(200, "replies " .. r .. " branches " .. b)
        return
    end
    if KSR.is_ACK() then
        KSR.tm.t_relay()
        return
    end
    if KSR.is_MESSAGE() then
        KSR.forward()
        return
    end
    KSR.tm.t_on_branch("each_branch")
    KSR.tm.t_on_reply("on_reply")
    KSR.tm.t_relay()
end

function each_branch()
    KSR.htable.sht_inc("t", "branches")
    KSR.hdr.append("X-Branch-Route: ran\r\n")
end

function on_reply()
    if tonumber(KSR.pv.get("$rs")) == 180 then
        KSR.x.drop()
    end
end

function reply_route()
    KSR.htable.sht_inc("t", "replies")
    if tonumber(KSR.pv.get("$rs")) == 299 then
        KSR.x.drop()
    end
end
"#;

#[test]
fn branch_route_reply_route_and_the_global_reply_route_run_from_lua() {
    let (s, _) = with_script("routes", ROUTES);
    let caller = Ua::new();
    let callee = Ua::new();
    let fwd = through_to(&s, &caller, &callee, "INVITE");
    assert_eq!(fwd.method_bytes(), Some(&b"INVITE"[..]));
    assert_eq!(
        fwd.header_by_name(b"X-Branch-Route"),
        Some(&b"ran"[..]),
        "the branch route edited the branch: {}",
        text(&fwd)
    );
    let back = via_addr(&fwd);
    callee.send(
        back,
        response_to(&fwd, 180, "Ringing", Some("b1"), "").as_bytes(),
    );
    callee.send(
        back,
        response_to(&fwd, 200, "OK", Some("b1"), "").as_bytes(),
    );
    // 100 Trying from the proxy, then the 200: the 180 was dropped by the reply route.
    let mut seen = Vec::new();
    while let Some(m) = caller.recv(Duration::from_secs(2)) {
        seen.push(m.status().unwrap_or(0));
        if m.status() == Some(200) {
            break;
        }
    }
    assert!(seen.contains(&200), "{seen:?}");
    assert!(!seen.contains(&180), "t_on_reply dropped the 180: {seen:?}");
    let req = request(
        "OPTIONS",
        &format!("sip:{}", s.udp),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, req.as_bytes());
    let r = caller.expect_status(200);
    let line = String::from_utf8_lossy(r.reason_bytes().unwrap_or(b"")).into_owned();
    assert_eq!(
        line, "replies 2 branches 1",
        "global reply route saw 180 and 200"
    );

    // Stateless: the replies match no transaction and still go through reply_route.
    let fwd = through_to(&s, &caller, &callee, "MESSAGE");
    let back = via_addr(&fwd);
    callee.send(
        back,
        response_to(&fwd, 299, "Odd", Some("m1"), "").as_bytes(),
    );
    callee.send(
        back,
        response_to(&fwd, 200, "OK", Some("m1"), "").as_bytes(),
    );
    let r = caller.expect("the MESSAGE reply");
    assert_eq!(r.status(), Some(200), "the 299 was dropped by reply_route");
    caller.send(s.udp, req.as_bytes());
    let r = caller.expect_status(200);
    let line = String::from_utf8_lossy(r.reason_bytes().unwrap_or(b"")).into_owned();
    assert_eq!(line, "replies 4 branches 1");
}

#[test]
fn script_runs_errors_time_and_reloads_are_counted_in_the_metrics() {
    let dir = temp_dir("script-metrics");
    let file = dir.join("route.lua");
    std::fs::write(
        &file,
        "function request_route()\n  if KSR.is_MESSAGE() then\n    no_such_function()\n  end\n  KSR.sl.send_reply(200, \"OK\")\nend\n",
    )
    .unwrap();
    let set = format!("script.file=\"{}\"", file.display());
    let s = Server::start(&["--set", &set]);
    let ua = Ua::new();
    assert_eq!(options_status(&s, &ua), 200);
    // A runtime error: logged, counted, the request dropped (as Kamailio drops it).
    let m = request("MESSAGE", &format!("sip:{}", s.udp), ua.addr, "UDP", "", "");
    ua.send(s.udp, m.as_bytes());
    ua.expect_silence(Duration::from_millis(300));
    assert_eq!(s.wait_metric("geosip_script_errors_total", 1.0), Some(1.0));
    assert_eq!(s.metric("geosip_script_runs_total"), Some(2.0));
    assert!(s.metric("geosip_script_seconds_total").unwrap() > 0.0);
    assert!(
        s.stderr().contains("route.lua:3"),
        "the error names file and line"
    );
    std::fs::write(&file, "function request_route(\n").unwrap();
    assert!(s.rpc("cfg.reload", &[]).is_err());
    std::fs::write(&file, script_answering(204)).unwrap();
    s.rpc("cfg.reload", &[]).unwrap();
    assert_eq!(
        s.metric("geosip_script_reloads_total{result=\"refused\"}"),
        Some(1.0)
    );
    assert_eq!(
        s.metric("geosip_script_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(options_status(&s, &ua), 204);
}

fn failure_script(answer: &str) -> String {
    format!(
        r#"
function request_route()
    if KSR.is_ACK() then
        KSR.tm.t_relay()
        return
    end
    KSR.tm.t_on_failure("call_failed")
    KSR.tm.t_relay()
end

function call_failed()
    {answer}
end
"#
    )
}

#[test]
fn a_transaction_in_flight_survives_a_reload_and_runs_the_new_scripts_failure_route() {
    let (s, file) = with_script(
        "script-inflight",
        &failure_script("-- v1: let the failure through"),
    );
    let (caller, callee) = (Ua::new(), Ua::new());
    let got = through_to(&s, &caller, &callee, "INVITE");
    assert_eq!(
        s.metric("geosip_tm_transactions{type=\"invite\"}"),
        Some(1.0)
    );
    // Reload while the INVITE is pending: the new failure route answers 599 itself.
    std::fs::write(
        &file,
        failure_script("KSR.tm.t_reply(599, \"Reloaded Failure Route\")"),
    )
    .unwrap();
    assert!(ctl(&s, &["cfg.reload"]).status.success());
    let back = via_addr(&got);
    callee.send(
        back,
        response_to(&got, 486, "Busy Here", Some("zz"), "").as_bytes(),
    );
    // The transaction was not dropped by the reload, and its failure route (armed by name
    // under the old script) ran in the new one.
    let r = loop {
        let m = caller.expect("final answer");
        if m.status().is_some_and(|c| c >= 200) {
            break m;
        }
    };
    assert_eq!(r.status(), Some(599), "{}", text(&r));
}
