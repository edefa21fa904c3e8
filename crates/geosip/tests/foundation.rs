//! The foundation on the wire: the server answers OPTIONS, rejects what RFC 4475 says to
//! reject with the right status, survives garbage, and exposes admin and metrics.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const RFC4475: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sip-msg/tests/data/rfc4475");

#[test]
fn options_to_the_server_itself_gets_200_with_allow_accept_and_supported() {
    let s = Server::start(&[]);
    let ua = Ua::new();
    let req = request("OPTIONS", &format!("sip:{}", s.udp), ua.addr, "UDP", "", "");
    ua.send(s.udp, req.as_bytes());
    let r = ua.expect_status(200);
    assert!(
        r.header_by_name(b"Allow")
            .is_some_and(|a| a.windows(6).any(|w| w == b"INVITE")),
        "{}",
        text(&r)
    );
    assert!(r.header_by_name(b"Accept").is_some());
    assert!(r.header_by_name(b"Supported").is_some());
    assert!(r.to_tag().is_some(), "a final reply carries a To tag");
}

#[test]
fn options_over_tcp_is_answered_on_the_same_connection_and_crlf_pings_get_a_pong() {
    let s = Server::start(&[]);
    let tcp = s.tcp.expect("tcp listener");
    let mut ua = TcpUa::connect(tcp);
    let req = request(
        "OPTIONS",
        &format!("sip:{tcp};transport=tcp"),
        ua.addr,
        "TCP",
        "",
        "",
    );
    ua.send(req.as_bytes());
    ua.expect_status(200);
    ua.send(b"\r\n\r\n");
    assert_eq!(
        ua.recv_raw(Duration::from_secs(3)),
        b"\r\n",
        "RFC 5626 pong"
    );
}

/// What INDEX.tsv says the server must answer, for the answers that belong to the
/// foundation: a status, "nothing", or either.
fn expected(answer: &str) -> Option<(Option<u16>, bool)> {
    let a = answer.trim();
    let code = a
        .split(|c: char| !c.is_ascii_digit())
        .find(|t| t.len() == 3)
        .and_then(|t| t.parse::<u16>().ok());
    if a.starts_with("drop") {
        return Some((None, true));
    }
    match code {
        Some(c @ (400 | 505 | 416 | 420 | 483)) => Some((Some(c), a.contains("or drop"))),
        _ => None,
    }
}

#[test]
fn rfc4475_torture_messages_get_the_on_wire_answer_index_tsv_names() {
    let s = Server::start(&[]);
    let index = std::fs::read_to_string(format!("{RFC4475}/INDEX.tsv")).unwrap();
    let mut checked = 0;
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, answer) = (cols[0], cols[4]);
        let Some((status, may_drop)) = expected(answer) else {
            continue;
        };
        let data = std::fs::read(format!("{RFC4475}/{file}")).unwrap();
        let ua = Ua::new();
        ua.send(s.udp, &data);
        let got = ua.recv(Duration::from_millis(if status.is_some() {
            3000
        } else {
            700
        }));
        match (status, got) {
            (Some(c), Some(m)) => assert_eq!(
                m.status(),
                Some(c),
                "{file}: expected {c}, got\n{}",
                text(&m)
            ),
            (Some(c), None) => assert!(may_drop, "{file}: expected {c}, got nothing"),
            (None, Some(m)) => panic!("{file}: expected no answer, got\n{}", text(&m)),
            (None, None) => {}
        }
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} messages had a foundation-level answer"
    );
    // The 420 names the unsupported options.
    let ua = Ua::new();
    ua.send(
        s.udp,
        &std::fs::read(format!("{RFC4475}/TC_BEXT01_V.dat")).unwrap(),
    );
    let r = ua.expect_status(420);
    let unsup =
        String::from_utf8_lossy(r.header_by_name(b"Unsupported").unwrap_or(b"")).into_owned();
    assert!(unsup.contains("noProxiesSupportThis"), "{unsup}");
}

#[test]
fn garbage_oversized_datagrams_huge_header_counts_and_nul_bytes_do_not_stop_the_server() {
    let mut s = Server::start(&[]);
    let ua = Ua::new();
    // Random garbage.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..200 {
        let len = (x % 1400) as usize + 1;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        ua.send(s.udp, &data);
    }
    // A 65,000-byte datagram.
    let mut big = request("OPTIONS", "sip:x@example.com", ua.addr, "UDP", "", "").into_bytes();
    big.truncate(big.len() - 4);
    big.extend(std::iter::repeat_n(b'a', 65_000 - big.len()));
    ua.send(s.udp, &big);
    // 10,000 headers.
    let mut many = format!(
        "OPTIONS sip:x@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK10k\r\n",
        s.udp, ua.addr
    );
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: 10k\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    ua.send(s.udp, &many.as_bytes()[..many.len().min(65_000)]);
    // NUL bytes in header values.
    let nul = format!(
        "OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKnul\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c\0@d>\r\nCall-ID: n\0ul\r\nX-Nul: \0\0\0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ua.addr
    );
    ua.send(s.udp, nul.as_bytes());
    // Drain whatever was answered, then check the server still answers.
    while ua.recv(Duration::from_millis(300)).is_some() {}
    let req = request("OPTIONS", &format!("sip:{}", s.udp), ua.addr, "UDP", "", "");
    ua.send(s.udp, req.as_bytes());
    ua.expect_status(200);
    assert!(s.alive());
    assert!(
        s.metric("geosip_sip_parse_errors_total").is_none(),
        "labelled only"
    );
    assert!(
        s.metrics()
            .contains("geosip_sip_parse_errors_total{reason=")
    );
}

#[test]
fn a_tcp_message_over_the_body_limit_gets_413_and_the_connection_survives_or_closes_cleanly() {
    let s = Server::start(&["--set", "transport.tcp_max_body_bytes=1000"]);
    let tcp = s.tcp.unwrap();
    let mut ua = TcpUa::connect(tcp);
    let body = "v=0\r\n".repeat(400);
    let req = request("INVITE", "sip:bob@example.com", ua.addr, "TCP", "", &body);
    ua.send(req.as_bytes());
    let r = ua
        .recv(Duration::from_secs(3))
        .expect("an answer before close");
    assert_eq!(r.status(), Some(413));
}

#[test]
fn a_udp_request_over_core_max_message_bytes_gets_513_and_a_small_one_is_still_served() {
    let s = Server::start(&["--set", "core.max_message_bytes=1000"]);
    let ua = Ua::new();
    let body = "v=0\r\n".repeat(300);
    let big = request(
        "OPTIONS",
        &format!("sip:{}", s.udp),
        ua.addr,
        "UDP",
        "",
        &body,
    );
    assert!(big.len() > 1000);
    ua.send(s.udp, big.as_bytes());
    let r = ua.expect_status(513);
    assert!(r.to_tag().is_some());
    let small = request("OPTIONS", &format!("sip:{}", s.udp), ua.addr, "UDP", "", "");
    ua.send(s.udp, small.as_bytes());
    ua.expect_status(200);
    assert!(s.metrics().contains("reason=\"too_large\""));
}

#[test]
fn metrics_expose_message_counters_by_method_and_build_info() {
    let s = Server::start(&[]);
    let ua = Ua::new();
    for _ in 0..3 {
        let req = request("OPTIONS", &format!("sip:{}", s.udp), ua.addr, "UDP", "", "");
        ua.send(s.udp, req.as_bytes());
        ua.expect_status(200);
    }
    let m = s.metrics();
    assert!(
        m.contains("# TYPE geosip_sip_requests_received_total counter"),
        "{m}"
    );
    assert_eq!(
        s.wait_metric(
            "geosip_sip_requests_received_total{method=\"OPTIONS\"}",
            3.0
        ),
        Some(3.0)
    );
    assert_eq!(
        s.wait_metric("geosip_sip_replies_sent_total{class=\"2xx\"}", 3.0),
        Some(3.0)
    );
    assert!(m.contains("geosip_build_info{version="));
    // Bytes per transport: three OPTIONS in and three 200s out over UDP, one over TCP.
    let rx_udp = s
        .metric("geosip_net_rx_bytes_total{proto=\"udp\"}")
        .unwrap();
    assert!(rx_udp >= 3.0 * 200.0, "{rx_udp}");
    let req_len = tcp_options_ok(s.tcp.unwrap());
    assert!(s.wait_metric("geosip_tcp_connections", 1.0).is_some());
    let rx_tcp = s
        .metric("geosip_net_rx_bytes_total{proto=\"tcp\"}")
        .unwrap();
    assert_eq!(rx_tcp, req_len as f64);
    assert!(
        s.metric("geosip_net_tx_bytes_total{proto=\"tcp\"}")
            .unwrap()
            > 0.0
    );
    assert_eq!(s.metric("geosip_tcp_accepted_total"), Some(1.0));
    assert_eq!(s.metric("geosip_tcp_queue_full_total"), Some(0.0));
}

#[test]
fn json_rpc_answers_version_uptime_stats_and_lists_methods() {
    let s = Server::start(&[]);
    let v = s.rpc("core.version", &[]).unwrap();
    assert!(v["version"].is_string());
    assert!(s.rpc("core.uptime", &[]).unwrap()["uptime_secs"].is_u64());
    let st = s.rpc("stats.get", &["core"]).unwrap();
    assert!(
        st.as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("core.sip_requests_received_total")),
        "{st}"
    );
    let list = s.rpc("rpc.list", &[]).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["method"].as_str())
        .collect();
    for m in [
        "core.version",
        "core.uptime",
        "stats.get",
        "cfg.reload",
        "tm.stats",
    ] {
        assert!(names.contains(&m), "{m} missing from {names:?}");
    }
    assert!(s.rpc("no.such", &[]).unwrap_err().contains("not found"));
    // JSON-RPC 2.0 batches: one answer per call with an id, nothing for notifications.
    let batch = http(
        s.admin,
        "POST",
        "/RPC",
        r#"[{"jsonrpc":"2.0","method":"core.version","id":1},{"jsonrpc":"2.0","method":"core.uptime"}]"#,
    );
    let answers: serde_json::Value = serde_json::from_str(&batch).unwrap();
    assert_eq!(answers.as_array().map(Vec::len), Some(1), "{batch}");
    assert_eq!(answers[0]["id"], 1);
    let notes = http(
        s.admin,
        "POST",
        "/RPC",
        r#"[{"jsonrpc":"2.0","method":"core.uptime"}]"#,
    );
    assert_eq!(notes, "", "a batch of notifications gets no body");
    // The status page is served.
    assert!(http(s.admin, "GET", "/", "").contains("geosip"));
}

#[test]
fn geosip_ctl_prints_readable_output_and_raw_json_with_json() {
    let s = Server::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args(["ctl", "--admin", &s.admin.to_string(), "core.uptime"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("uptime_secs"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args([
            "ctl",
            "--json",
            "--admin",
            &s.admin.to_string(),
            "core.version",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["version"].is_string());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args(["ctl", "--admin", &s.admin.to_string(), "nope.nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn check_config_names_the_file_and_line_of_values_that_parse_but_are_wrong() {
    let dir = temp_dir("cfg-values");
    let cases: [(&str, &str, &str); 4] = [
        (
            "[core]\nlisten = [\"udp:127.0.0.1:5060\", \"sctp:127.0.0.1:5060\"]\n",
            ":2",
            "core.listen",
        ),
        (
            "[core]\nlisten = [\"udp:127.0.0.1:5060\"]\n[admin]\nlisten = \"localhost\"\n",
            ":4",
            "admin.listen",
        ),
        (
            "[core]\nlisten = [\"udp:127.0.0.1:5060\"]\n[log]\n\nlevel = \"info,=[\"\n",
            ":5",
            "log.level",
        ),
        (
            "[core]\nlisten = [\"udp:127.0.0.1:5060\"]\n[registrar]\nmin_expires = 600\nmax_expires = 60\n",
            ":5",
            "registrar.max_expires",
        ),
    ];
    for (i, (text, line, key)) in cases.iter().enumerate() {
        let f = dir.join(format!("v{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
            .args(["check-config"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(&format!("v{i}.toml{line}")), "{key}: {e}");
        assert!(e.contains(key), "{e}");
    }
    // The same from the command line names the option.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args(["run", "--listen", "udp:nowhere", "--admin", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--listen udp:nowhere"), "{e}");
}

#[test]
fn check_config_names_the_file_line_and_allowed_keys_for_a_typo() {
    let dir = temp_dir("cfg");
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[core]\nforce_rport = true\nlisten = [\"udp:127.0.0.1:5060\"]\nforse = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args(["check-config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("bad.toml:4:"), "{e}");
    assert!(
        e.contains("unknown field `forse`") && e.contains("force_rport"),
        "{e}"
    );
    let good = dir.join("good.toml");
    std::fs::write(&good, "[core]\nlisten = [\"udp:127.0.0.1:5060\"]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geosip"))
        .args(["check-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sipsak_gets_200_to_its_options() {
    if !have_tool("sipsak") {
        return;
    }
    // sipsak 0.9.8 writes only the first four digits of a five-digit port into the
    // Request-URI, so the server also listens on a free four-digit port for it.
    let base = 6000 + (std::process::id() % 3000) as u16;
    let port = (0..1000u16)
        .map(|i| 6000 + (base - 6000 + i) % 3999)
        .find(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free four-digit UDP port");
    let listen = format!("udp:127.0.0.1:{port}");
    let s = Server::start(&["--listen", &listen]);
    let out = std::process::Command::new("sipsak")
        .args(["-s", &format!("sip:127.0.0.1:{port}"), "-v"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("SIP/2.0 200"),
        "sipsak output: {t} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.stderr()
    );
}

#[test]
fn sipp_builtin_uac_gets_answers_from_the_server() {
    if !have_tool("sipp") {
        return;
    }
    let s = Server::start(&[]);
    // SIPp's built-in UAC sends INVITE to `service@server`; nobody is registered, so the
    // server answers 404 — the point is that SIPp receives final answers for every call.
    let dir = temp_dir("sipp");
    let out = std::process::Command::new("timeout")
        .args([
            "30",
            "sipp",
            &s.udp.to_string(),
            "-sn",
            "uac",
            "-m",
            "5",
            "-r",
            "5",
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "20s",
            "-trace_stat",
            "-stf",
        ])
        .arg(dir.join("stat.csv"))
        .current_dir(&dir)
        .output()
        .unwrap();
    let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
    // SIPp counts a 404 as a failed call (unexpected message): assert the server answered
    // every INVITE, i.e. no call ended by timeout.
    let last = stat.lines().last().unwrap_or("");
    let head: Vec<&str> = stat.lines().next().unwrap_or("").split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |k: &str| {
        head.iter()
            .position(|h| *h == k)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(
        get("OutgoingCall(C)"),
        Some(5),
        "{stat} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        get("FailedTimeoutOnRecv(C)").unwrap_or(0) + get("FailedMaxUDPRetrans(C)").unwrap_or(0),
        0,
        "{stat}"
    );
}

#[test]
fn the_server_listens_and_answers_over_ipv6_on_udp_and_tcp() {
    let Ok(ua) = std::net::UdpSocket::bind("[::1]:0") else {
        assert!(
            std::env::var("CI").is_err(),
            "no IPv6 loopback on this CI machine"
        );
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let s = Server::start(&["--listen", "udp:[::1]:0", "--listen", "tcp:[::1]:0"]);
    let socks = s.rpc("core.sockets", &[]).unwrap();
    let v6 = |proto: &str| -> std::net::SocketAddr {
        socks
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str())
            .find_map(|x| {
                x.strip_prefix(&format!("{proto}:"))
                    .filter(|a| a.starts_with('['))
            })
            .unwrap_or_else(|| panic!("an IPv6 {proto} socket in {socks}"))
            .parse()
            .unwrap()
    };
    let addr = v6("udp");
    let me = ua.local_addr().unwrap();
    let req = request("OPTIONS", &format!("sip:{addr}"), me, "UDP", "", "");
    ua.send_to(req.as_bytes(), addr).unwrap();
    ua.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 4096];
    let n = ua.recv(&mut b).expect("an answer over IPv6");
    assert!(
        b[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
    tcp_options_ok(v6("tcp"));
}

/// Connects to `addr` over TCP, sends an OPTIONS to the server and expects 200 on the same
/// connection; the length of the request sent.
fn tcp_options_ok(addr: std::net::SocketAddr) -> usize {
    let mut t = TcpUa::connect(addr);
    let req = request(
        "OPTIONS",
        &format!("sip:{addr};transport=tcp"),
        t.addr,
        "TCP",
        "",
        "",
    );
    t.send(req.as_bytes());
    t.expect_status(200);
    req.len()
}

#[test]
fn a_tcp_message_with_a_header_section_over_the_limit_gets_513() {
    let s = Server::start(&["--set", "transport.tcp_max_header_bytes=2000"]);
    let tcp = s.tcp.unwrap();
    let mut ua = TcpUa::connect(tcp);
    let big = format!("X-Padding: {}\r\n", "p".repeat(3000));
    let req = request(
        "OPTIONS",
        &format!("sip:{tcp};transport=tcp"),
        ua.addr,
        "TCP",
        &big,
        "",
    );
    ua.send(req.as_bytes());
    let r = ua
        .recv(Duration::from_secs(3))
        .expect("an answer before close");
    assert_eq!(r.status(), Some(513));
}

/// Relays every MESSAGE statefully to its Request-URI; answers OPTIONS.
const RELAY_MESSAGES: &str = r#"
function request_route()
    if KSR.is_OPTIONS() then
        KSR.sl.send_reply(200, "OK")
        return
    end
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
end
"#;

fn alias_scenario(accept_aliases: bool) -> (Option<sip_msg::SipMessage>, u16) {
    let dir = temp_dir("alias");
    let file = dir.join("route.lua");
    std::fs::write(&file, RELAY_MESSAGES).unwrap();
    let script = format!("script.file=\"{}\"", file.display());
    let aliases = format!("transport.tcp_accept_aliases={accept_aliases}");
    let s = Server::start(&["--set", &script, "--set", &aliases]);
    let tcp = s.tcp.unwrap();
    // The peer's "listening" port: nothing listens there, so only connection reuse reaches it.
    let listen_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut peer = TcpUa::connect(tcp);
    let opts = format!(
        "OPTIONS sip:{tcp} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{listen_port};branch=z9hG4bK{};alias\r\n\
         Max-Forwards: 70\r\nFrom: <sip:peer@127.0.0.1>;tag=a1\r\nTo: <sip:{tcp}>\r\nCall-ID: alias-{}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        uniq(),
        uniq()
    );
    peer.send(opts.as_bytes());
    peer.expect_status(200);
    let caller = Ua::new();
    let msg = request(
        "MESSAGE",
        &format!("sip:peer@127.0.0.1:{listen_port};transport=tcp"),
        caller.addr,
        "UDP",
        "",
        "",
    );
    caller.send(s.udp, msg.as_bytes());
    let got = peer.recv(Duration::from_secs(3));
    if let Some(m) = &got {
        peer.send(response_to(m, 200, "OK", Some("p1"), "").as_bytes());
    }
    let status = caller
        .recv(Duration::from_secs(8))
        .and_then(|r| r.status())
        .unwrap_or(0);
    (got, status)
}

#[test]
fn with_tcp_accept_aliases_a_peer_that_sent_via_alias_gets_requests_for_its_sent_by_on_the_same_connection()
 {
    let (got, status) = alias_scenario(true);
    let m = got.expect("the MESSAGE came over the peer's own connection (RFC 5923)");
    assert_eq!(m.method_bytes(), Some(&b"MESSAGE"[..]));
    assert_eq!(status, 200);
}

#[test]
fn without_tcp_accept_aliases_the_alias_is_ignored_and_the_refused_connection_fails_the_call_at_once()
 {
    let (got, status) = alias_scenario(false);
    assert!(got.is_none(), "no reuse without tcp_accept_aliases");
    // The connection to the sent-by port is refused: a transport error, which counts as a
    // 503 from the branch (RFC 3261 §8.1.3.1) at once, not after the 32 s transaction
    // timeout; a proxy answers that upstream as 500 (§16.7 step 6).
    assert_eq!(status, 500);
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object() {
    let s = Server::start(&["--set", "log.format=\"json\""]);
    // Something that logs: a request that fails validation (logged once, rate-limited).
    let ua = Ua::new();
    ua.send(
        s.udp,
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKj\r\n\r\n",
    );
    let _ = ua.recv(Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(200));
    let log = s.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the server logged something");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

#[test]
fn sigint_and_sigterm_stop_the_server_cleanly() {
    for sig in ["INT", "TERM"] {
        let mut s = Server::start(&[]);
        s.signal(sig);
        let t = std::time::Instant::now();
        while s.alive() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!s.alive(), "still running 10 s after SIG{sig}");
        let status = s.child.wait().unwrap();
        assert!(
            status.success(),
            "SIG{sig}: exit {status:?}\n{}",
            s.stderr()
        );
    }
}

#[test]
fn a_response_whose_top_via_is_not_ours_is_dropped_and_counted() {
    let s = Server::start(&[]);
    let ua = Ua::new();
    let other = Ua::new();
    // A 200 whose top Via names another host, with a second Via pointing at `other`: a proxy
    // that forwarded it would send it there.
    let stray = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.77:5060;branch=z9hG4bKstray\r\n\
         Via: SIP/2.0/UDP {};branch=z9hG4bKnext\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n\
         Call-ID: stray-{}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        other.addr,
        uniq()
    );
    ua.send(s.udp, stray.as_bytes());
    other.expect_silence(Duration::from_millis(500));
    ua.expect_silence(Duration::from_millis(100));
    assert_eq!(
        s.wait_metric("geosip_sip_dropped_replies_total", 1.0),
        Some(1.0)
    );
}

/// An OPTIONS sent from `from` whose Via claims `localhost:PORT` of `claimed`.
fn options_claiming(s: &Server, from: &Ua, claimed: &Ua, rport: bool) {
    let req = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP localhost:{};branch=z9hG4bK{}{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=r1\r\nTo: <sip:{}>\r\nCall-ID: rp-{}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        s.udp,
        claimed.addr.port(),
        uniq(),
        if rport { ";rport" } else { "" },
        s.udp,
        uniq()
    );
    from.send(s.udp, req.as_bytes());
}

#[test]
fn replies_go_to_the_source_port_with_rport_or_force_rport_and_to_the_sent_by_port_otherwise() {
    let phone = Ua::new();
    let claimed = Ua::new();
    // core.force_rport on (the embedded default): the source port, even without ;rport.
    let s = Server::start(&[]);
    options_claiming(&s, &phone, &claimed, false);
    let r = phone.expect_status(200);
    let via = r.top_via().unwrap();
    assert_eq!(via.received(), Some(&b"127.0.0.1"[..]), "{}", text(&r));
    assert_eq!(via.rport(), sip_msg::Rport::Value(phone.addr.port()));
    claimed.expect_silence(Duration::from_millis(200));
    drop(s);

    // Off: RFC 3261 §18.2.2, the received IP at the sent-by port...
    let s = Server::start(&["--set", "core.force_rport=false"]);
    options_claiming(&s, &phone, &claimed, false);
    let r = claimed.expect_status(200);
    assert_eq!(r.top_via().unwrap().received(), Some(&b"127.0.0.1"[..]));
    phone.expect_silence(Duration::from_millis(200));
    // ...unless the client asked with ;rport (RFC 3581).
    options_claiming(&s, &phone, &claimed, true);
    let r = phone.expect_status(200);
    assert_eq!(
        r.top_via().unwrap().rport(),
        sip_msg::Rport::Value(phone.addr.port())
    );
    claimed.expect_silence(Duration::from_millis(200));
}
