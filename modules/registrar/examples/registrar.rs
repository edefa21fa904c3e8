//! A stand-alone registrar and redirect server on one socket, for trying the module with a
//! real phone or sipsak before the full server is wired:
//!
//! ```sh
//! cargo run -p geosip-registrar --example registrar -- udp:127.0.0.1:5060
//! sipsak -i -U -C sip:alice@127.0.0.1:5070 -x 3600 -s sip:alice@127.0.0.1:5060 -vv
//! ```
//!
//! REGISTER goes through `save("location")`; any other request (but ACK) is looked up and
//! answered `302 Moved Temporarily` with the contacts, or 404.

use std::sync::Arc;
use std::time::{Duration, Instant};

use geosip_core::Core;
use geosip_core::config::CoreConfig;
use geosip_core::ctx::{MsgCtx, RxInfo, ViaStamp};
use geosip_core::metrics::Registry;
use geosip_core::rpc::RpcRegistry;
use geosip_registrar::{LOOKUP_FOUND, Registrar, RegistrarConfig};
use geosip_usrloc::{Location, UsrlocConfig};
use sip_msg::SipMessage;
use sip_transport::{Handler, ListenSpec, Received, TransportConfig, Transports};

struct App {
    core: Arc<Core>,
    reg: Arc<Registrar>,
}

impl Handler for App {
    fn on_message(&self, rx: Received) {
        let Ok(msg) = SipMessage::parse(rx.data.clone()) else {
            return;
        };
        if !msg.is_request() {
            return;
        }
        let stamp = msg
            .top_via()
            .map(|v| ViaStamp::compute(&v, rx.src, self.core.cfg.force_rport))
            .unwrap_or_default();
        let mut ctx = MsgCtx::new(msg, RxInfo::of(&rx), Instant::now(), stamp);
        if ctx.is_method(b"REGISTER") {
            let rc = self.reg.save(&mut ctx, "location", 0);
            println!(
                "REGISTER from {} -> {:?}, save() = {rc}",
                rx.src, ctx.replied
            );
        } else if !ctx.is_method(b"ACK") {
            if self.reg.lookup(&mut ctx, "location") == LOOKUP_FOUND {
                let contacts: Vec<Vec<u8>> = ctx
                    .targets()
                    .iter()
                    .map(|t| [b"<", &t.uri[..], b">"].concat())
                    .collect();
                let hdrs: Vec<(&[u8], &[u8])> =
                    contacts.iter().map(|c| (&b"Contact"[..], &c[..])).collect();
                let _ = self.core.reply(&mut ctx, 302, None, &hdrs, None);
            } else {
                let _ = self.core.reply(&mut ctx, 404, None, &[], None);
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "udp:127.0.0.1:5060".into());
    let spec: ListenSpec = listen.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let transports = Transports::bind(TransportConfig::default(), &[spec], rt.handle().clone())?;
    let core = Arc::new(Core::new(
        CoreConfig::default(),
        transports,
        Registry::new(),
        RpcRegistry::new(),
        5,
    ));
    let loc = Arc::new(Location::memory(UsrlocConfig {
        timer_interval_s: 0,
        ..UsrlocConfig::default()
    }));
    let reg = Registrar::new(core.clone(), loc, RegistrarConfig::default());
    let _timers = reg.spawn_timers(Duration::from_secs(10))?;
    core.transports.start(Arc::new(App {
        core: core.clone(),
        reg,
    }))?;
    println!("registrar listening on {listen}; Ctrl-C stops");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
