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
