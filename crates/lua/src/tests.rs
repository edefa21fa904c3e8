use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use geosip_core::config::CoreConfig;
use geosip_core::testutil::{core_on, ctx_for};
use geosip_htable::{Htable, HtableConfig};
use geosip_registrar::{Registrar, RegistrarConfig};
use geosip_tm::{Tm, TmConfig};
use geosip_usrloc::{Location, UsrlocConfig};

static RT: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
});

fn mods(core: &Arc<Core>) -> Modules {
    let tm = Tm::new(Arc::clone(core), TmConfig::default());
    let loc = Arc::new(Location::memory(UsrlocConfig::default()));
    let registrar = Registrar::new(Arc::clone(core), loc, RegistrarConfig::default());
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "geosip-lua-subs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let subs = geosip_auth::Subscribers::open(
        &geosip_auth::AuthConfig::default(),
        &dir,
        RT.handle().clone(),
    )
    .unwrap();
    let protect = Arc::new(
        geosip_pike::Protect::new(Default::default(), Default::default(), Default::default())
            .unwrap(),
    );
    let auth = Arc::new(
        geosip_auth::Auth::new(Default::default(), subs, Some(Arc::clone(&protect))).unwrap(),
    );
    Modules {
        core: Arc::clone(core),
        htable: Arc::new(Htable::new(HtableConfig::default())),
        tm,
        registrar,
        auth,
        protect,
    }
}

use super::*;

fn engine_with(
    code: &str,
) -> (
    Result<Arc<ScriptEngine>, ScriptError>,
    Arc<Core>,
    tokio::runtime::Runtime,
    PathBuf,
) {
    let (core, rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let dir = std::env::temp_dir().join(format!(
        "geosip-lua-{}-{}",
        std::process::id(),
        ENGINE_IDS.load(Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("route{}.lua", code.len()));
    std::fs::write(&file, code).unwrap();
    let cfg = ScriptConfig {
        file: Some(file.clone()),
        ..ScriptConfig::default()
    };
    let m = mods(&core);
    (ScriptEngine::load(cfg, None, m), core, rt, file)
}

fn options_from(ua: &UdpSocket, core: &Core) -> MsgCtx {
    let raw = format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nX-Test: hello\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        ua.local_addr().unwrap()
    );
    ctx_for(core, raw.as_bytes(), &ua.local_addr().unwrap().to_string())
}

fn recv(ua: &UdpSocket) -> String {
    ua.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 4096];
    let n = ua.recv(&mut b).expect("a reply");
    String::from_utf8_lossy(&b[..n]).into_owned()
}

#[test]
fn the_embedded_default_script_loads() {
    let (core, _rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let e = ScriptEngine::load(ScriptConfig::default(), None, mods(&core)).unwrap();
    assert_eq!(e.script_name(), "<embedded route.lua>");
}

#[test]
fn a_syntax_error_is_reported_with_file_and_line() {
    let (r, _c, _rt, file) = engine_with("function request_route()\n  local x = \nend\n");
    let e = r.err().expect("refused").0;
    assert!(e.contains(&format!("{}:3:", file.display())), "{e}");
}

#[test]
fn a_script_without_request_route_is_refused() {
    let (r, _c, _rt, _f) = engine_with("function something_else() end\n");
    assert!(r.err().unwrap().0.contains("request_route"));
}

#[test]
fn request_route_replies_with_sl_and_reads_pseudo_variables_and_headers() {
    let (r, core, _rt, _f) = engine_with(
        r#"
function request_route()
    if KSR.pv.get("$rU") == "bob" and KSR.hdr.get("X-Test") == "hello" and KSR.is_OPTIONS() then
        KSR.sl.send_reply(202, "Read " .. KSR.pv.get("$ci"))
    else
        KSR.sl.send_reply(500, "wrong")
    end
end
"#,
    );
    let e = r.unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ctx = e.run_request(options_from(&ua, &core));
    assert_eq!(ctx.replied, Some(202));
    assert!(recv(&ua).starts_with("SIP/2.0 202 Read c\r\n"));
}

#[test]
fn pv_assignments_change_the_request_uri_and_destination() {
    let (r, core, _rt, _f) = engine_with(
        r#"
function request_route()
    KSR.pv.sets("$rU", "carol")
    KSR.pv.sets("$du", "sip:10.0.0.9:5070")
    KSR.setflag(3)
    KSR.hdr.append("X-Added: 1\r\n")
    KSR.hdr.remove("X-Test")
end
"#,
    );
    let e = r.unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ctx = e.run_request(options_from(&ua, &core));
    assert_eq!(ctx.ruri(), b"sip:carol@example.com");
    assert_eq!(ctx.dst_uri.as_deref(), Some(&b"sip:10.0.0.9:5070"[..]));
    assert!(ctx.is_flag_set(3));
    let mut out = Vec::new();
    ctx.msg.write_with(&ctx.edits, &mut out);
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("X-Added: 1\r\n") && !s.contains("X-Test"), "{s}");
}

#[test]
fn ksr_x_exit_stops_the_route_without_an_error() {
    let (r, core, _rt, _f) = engine_with(
        r#"
function request_route()
    KSR.sl.send_reply(200, "OK")
    KSR.x.exit()
    KSR.sl.send_reply(500, "not reached")
end
"#,
    );
    let e = r.unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ctx = e.run_request(options_from(&ua, &core));
    assert_eq!(ctx.replied, Some(200));
    assert_eq!(e.stats.errors.get(), 0);
}

#[test]
fn a_runtime_error_is_counted_and_the_context_survives() {
    let (r, core, _rt, _f) = engine_with("function request_route() error('boom') end\n");
    let e = r.unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ctx = e.run_request(options_from(&ua, &core));
    assert_eq!(ctx.replied, None);
    assert_eq!(e.stats.errors.get(), 1);
}

#[test]
fn reload_swaps_a_good_script_and_refuses_a_broken_one_keeping_the_old() {
    let (r, core, _rt, file) =
        engine_with("function request_route() KSR.sl.send_reply(201, 'one') end\n");
    let e = r.unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    e.run_request(options_from(&ua, &core));
    assert!(recv(&ua).starts_with("SIP/2.0 201 one"));
    std::fs::write(
        &file,
        "function request_route() KSR.sl.send_reply(202, 'two') end\n",
    )
    .unwrap();
    assert_eq!(e.reload().unwrap(), 2);
    e.run_request(options_from(&ua, &core));
    assert!(recv(&ua).starts_with("SIP/2.0 202 two"));
    std::fs::write(&file, "function request_route( broken\n").unwrap();
    let err = e.reload().unwrap_err().0;
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    assert_eq!(e.generation(), 2);
    e.run_request(options_from(&ua, &core));
    assert!(recv(&ua).starts_with("SIP/2.0 202 two"));
}

#[test]
fn htable_values_are_shared_between_threads() {
    let (r, core, _rt, _f) = engine_with(
        r#"
function request_route()
    local n = KSR.htable.sht_inc("calls", KSR.pv.get("$fU"))
    KSR.sl.send_reply(200, "n=" .. n)
end
"#,
    );
    let e = r.unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    e.run_request(options_from(&ua, &core));
    assert!(recv(&ua).contains("n=1"));
    let e2 = Arc::clone(&e);
    let c2 = Arc::clone(&core);
    let addr = ua.local_addr().unwrap();
    std::thread::spawn(move || {
        let ua2 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let raw = format!(
            "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = ua2;
        e2.run_request(ctx_for(&c2, raw.as_bytes(), &addr.to_string()));
    })
    .join()
    .unwrap();
    assert!(recv(&ua).contains("n=2"));
}

#[test]
fn the_placeholder_message_frames() {
    assert!(placeholder().msg.is_request());
}
