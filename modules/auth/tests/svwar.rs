#![allow(clippy::unwrap_used)]
//! sipvicious `svwar` (Debian package `sipvicious`) against a minimal registrar built on this
//! module: it must not find which extensions exist. Skipped loudly when svwar is missing
//! (fails under CI=true).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use geosip_auth::{Auth, AuthConfig, Subscribers};
use geosip_core::Core;
use geosip_core::config::CoreConfig;
use geosip_core::ctx::{MsgCtx, RxInfo, ViaStamp};
use geosip_core::testutil::core_on;
use sip_msg::SipMessage;
use sip_transport::{Handler, Received};

struct Registrar {
    core: Arc<Core>,
    auth: Arc<Auth>,
    /// Control: answer 404 to unknown users first, as a careless script would.
    leaky: bool,
}

impl Handler for Registrar {
    fn on_message(&self, rx: Received) {
        let Ok(msg) = SipMessage::parse(rx.data.clone()) else {
            return;
        };
        if !msg.is_request() || msg.method_bytes() == Some(b"ACK") {
            return;
        }
        let stamp = msg
            .top_via()
            .map(|v| ViaStamp::compute(&v, rx.src, true))
            .unwrap_or_default();
        let mut ctx = MsgCtx::new(msg, RxInfo::of(&rx), Instant::now(), stamp);
        if self.leaky
            && let Some(to) = ctx
                .msg
                .to()
                .and_then(|t| t.uri().ok())
                .map(|u| (u.user().unwrap_or(b"").to_vec(), u.host().raw().to_vec()))
            && !self.auth.subscriber_exists(&to.0, &to.1)
        {
            let _ = self.core.reply(&mut ctx, 404, None, &[], None);
            return;
        }
        let rc = if ctx.is_method(b"REGISTER") {
            self.auth.www_authenticate(&self.core, &mut ctx, b"")
        } else if ctx.is_method(b"INVITE") {
            self.auth.proxy_authenticate(&self.core, &mut ctx, b"")
        } else {
            1
        };
        if rc > 0 {
            let _ = self.core.reply(&mut ctx, 200, None, &[], None);
        }
    }
}

fn svwar(port: u16, method: &str) -> String {
    let out = Command::new("svwar")
        .args([
            "-e",
            "100-110",
            "-m",
            method,
            "-t",
            "0.02",
            "--maximumtime",
            "5",
            "--force",
            &format!("udp://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn svwar_cannot_tell_which_extensions_exist() {
    if Command::new("svwar").arg("--version").output().is_err() {
        geosip_store::testutil::missing("svwar (Debian package sipvicious)");
        return;
    }
    let (core, rt) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    let dir = std::env::temp_dir().join(format!(
        "geosip-svwar-{}",
        geosip_store::testutil::random_name()
    ));
    let cfg = AuthConfig {
        enabled: true,
        secret: "svwar test secret, long enough".into(),
        ..AuthConfig::default()
    };
    let subs = Subscribers::open(&cfg, &dir, rt.handle().clone()).unwrap();
    for ext in ["101", "105", "107"] {
        subs.add(&format!("{ext}@127.0.0.1"), "pw", &BTreeMap::new())
            .unwrap();
    }
    let auth = Arc::new(Auth::new(cfg, subs, None).unwrap());
    let registrar = Arc::new(Registrar {
        core: Arc::clone(&core),
        auth: Arc::clone(&auth),
        leaky: false,
    });
    core.transports.start(registrar).unwrap();
    let port = core.transports.sockets()[0].addr.port();
    for method in ["REGISTER", "INVITE"] {
        let out = svwar(port, method);
        eprintln!("svwar -m {method}:\n{out}");
        // svwar compares each answer with the one for a surely-unknown extension: all alike.
        assert!(out.contains("found nothing"), "svwar -m {method}:\n{out}");
        for ext in ["101", "105", "107"] {
            assert!(
                !out.contains(&format!("| {ext} ")),
                "svwar -m {method} found {ext}:\n{out}"
            );
        }
    }
    assert!(
        auth.metrics().challenges[0][0].get() >= 1,
        "svwar was answered"
    );
    core.transports.shutdown();

    // Control: the same tool does find them on a server that answers unknown users with 404.
    let (core2, _rt2) = core_on(&["udp:127.0.0.1:0"], CoreConfig::default());
    core2
        .transports
        .start(Arc::new(Registrar {
            core: Arc::clone(&core2),
            auth,
            leaky: true,
        }))
        .unwrap();
    let out = svwar(core2.transports.sockets()[0].addr.port(), "REGISTER");
    eprintln!("svwar against a leaky server:\n{out}");
    assert!(out.contains("| 105 "), "the control should leak:\n{out}");
    core2.transports.shutdown();
    core.transports.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
