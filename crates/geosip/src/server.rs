//! Start-up and shutdown: configuration, runtimes, transports, modules, admin, signals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use geosip_auth::{Auth, Subscribers};
use geosip_core::Core;
use geosip_core::metrics::Registry;
use geosip_core::rpc::{RpcError, RpcRegistry};
use geosip_htable::Htable;
use geosip_lua::{Modules, ScriptEngine};
use geosip_pike::Protect;
use geosip_registrar::Registrar;
use geosip_tm::Tm;
use geosip_usrloc::Location;
use serde_json::json;
use sip_transport::{ListenSpec, Transports};

use crate::config::{self, Config};
use crate::engine::Engine;
use crate::{CommonOpts, RunOpts};

/// Everything that is running.
pub struct Server {
    pub core: Arc<Core>,
    pub script: Arc<ScriptEngine>,
    pub location: Arc<Location>,
    /// The partitioned backend, kept alive for its reloader and watcher.
    #[allow(dead_code)]
    pub partitions: Option<Arc<geosip_p_usrloc::PartitionedBackend>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn base_dir(file: Option<&Path>) -> Option<PathBuf> {
    file.and_then(|f| f.parent().map(Path::to_path_buf))
}

/// Loads the configuration with the CLI overrides of `run` applied.
fn load_config(
    common: &CommonOpts,
    listen: &[String],
    admin: Option<&str>,
) -> anyhow::Result<config::Loaded> {
    let mut loaded = config::load(common.config.as_deref(), &common.sets)?;
    if !listen.is_empty() {
        loaded.config.core.listen = listen.to_vec();
        loaded.cli.push((
            "core.listen".into(),
            format!("--listen {}", listen.join(" --listen ")),
        ));
    }
    if let Some(a) = admin {
        loaded.config.admin.listen = a.to_string();
        loaded
            .cli
            .push(("admin.listen".into(), format!("--admin {a}")));
    }
    Ok(loaded)
}

fn listen_specs(loaded: &config::Loaded) -> anyhow::Result<Vec<ListenSpec>> {
    let cfg = &loaded.config;
    if cfg.core.listen.is_empty() {
        bail!(
            "{}: core.listen is empty: give at least one socket, e.g. listen = [\"udp:127.0.0.1:5060\"] or --listen udp:127.0.0.1:5060",
            loaded.origin("core.listen")
        );
    }
    cfg.core
        .listen
        .iter()
        .map(|s| {
            s.parse::<ListenSpec>()
                .map_err(|e| anyhow::anyhow!("{}: core.listen: {e}", loaded.origin("core.listen")))
        })
        .collect()
}

/// An error of `[pike]`, `[ratelimit]` or `[overload]`, located at the key it names.
fn protect_error(loaded: &config::Loaded, msg: &str) -> anyhow::Error {
    let section = ["pike", "ratelimit", "overload"]
        .into_iter()
        .find(|s| msg.contains(&format!("{s}.")))
        .unwrap_or("pike");
    anyhow::anyhow!("{}: {msg}", loaded.origin_in(section, msg))
}

/// `log.level` must be a tracing filter (`info`, `warn,geosip_tm=debug`...).
fn check_log_level(loaded: &config::Loaded) -> anyhow::Result<()> {
    tracing_subscriber::EnvFilter::try_new(&loaded.config.log.level).map_err(|e| {
        anyhow::anyhow!(
            "{}: log.level `{}` is not a log filter ({e}): use error, warn, info, debug or trace, optionally per target (\"info,geosip_tm=debug\")",
            loaded.origin("log.level"),
            loaded.config.log.level
        )
    })?;
    Ok(())
}

/// `admin.listen` as a socket address (`None` when the admin interface is off).
fn admin_addr(loaded: &config::Loaded) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let a = &loaded.config.admin.listen;
    if a.is_empty() {
        return Ok(None);
    }
    a.parse().map(Some).map_err(|_| {
        anyhow::anyhow!(
            "{}: admin.listen `{a}` is not IP:PORT: use e.g. \"127.0.0.1:5080\", or \"\" to turn the admin interface off",
            loaded.origin("admin.listen")
        )
    })
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("GEOSIP_LOG").unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        geosip_core::config::LogFormat::Json => b.json().try_init(),
        geosip_core::config::LogFormat::Text => b.try_init(),
    };
}

/// `geosip check-config FILE`: parses the file and loads its routing script.
pub fn check_config(file: &Path, sets: &[String]) -> anyhow::Result<()> {
    let loaded = config::load(Some(file), sets)?;
    let cfg = &loaded.config;
    listen_specs(&loaded)?;
    check_log_level(&loaded)?;
    admin_addr(&loaded)?;
    if let Some(lc) = &cfg.location {
        lc.validate().map_err(|e| {
            anyhow::anyhow!(
                "{}: [location] {e}",
                loaded.origin_in("location", &e.to_string())
            )
        })?;
    }
    // Load the script against a core with no sockets so its errors are reported with line.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let transports = Transports::bind(cfg.transport.clone(), &[], rt.handle().clone())?;
    let core = Arc::new(Core::new(
        cfg.core.clone(),
        transports,
        Registry::new(),
        RpcRegistry::new(),
        1,
    ));
    let tm = Tm::new(Arc::clone(&core), cfg.tm.clone());
    let location = Arc::new(Location::memory(cfg.usrloc.clone()));
    let registrar = Registrar::new(Arc::clone(&core), location, cfg.registrar.clone());
    cfg.registrar.validate().map_err(|e| {
        anyhow::anyhow!(
            "{}: [registrar] {e}",
            loaded.origin_in("registrar", &e.to_string())
        )
    })?;
    let protect = Arc::new(
        Protect::new(
            cfg.pike.clone(),
            cfg.ratelimit.clone(),
            cfg.overload.clone(),
        )
        .map_err(|e| protect_error(&loaded, &e.to_string()))?,
    );
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let scratch = std::env::temp_dir().join(format!("geosip-check-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let check_auth = geosip_auth::AuthConfig {
        db_url: "sqlite:".into(),
        read_db_url: String::new(),
        ..cfg.auth.clone()
    };
    let subs = Subscribers::open_lazy(&check_auth, &scratch, io.handle().clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let auth = Arc::new(
        Auth::new(cfg.auth.clone(), subs, Some(Arc::clone(&protect)))
            .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.origin_in("auth", &e.to_string())))?,
    );
    let mods = Modules {
        core,
        htable: Arc::new(Htable::new(cfg.htable.clone())),
        tm,
        registrar,
        auth,
        protect,
    };
    ScriptEngine::check(cfg.script.clone(), base_dir(Some(file)).as_deref(), mods)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// `geosip run`.
/// With a partitioned location, a database that comes back is written but not read for
/// `expire_window_s`; that only guarantees it holds every live contact when no binding lives
/// longer. An unlimited `registrar.max_expires` (0, the default) is therefore capped at the
/// window; an explicit longer one is refused by `check_max_expires`.
fn clamp_expires_to_location_window(cfg: &mut Config) {
    if let Some(lc) = &cfg.location
        && cfg.registrar.max_expires == 0
    {
        let window = u32::try_from(lc.expire_window_s).unwrap_or(u32::MAX);
        cfg.registrar.max_expires = window;
        tracing::info!(
            max_expires = window,
            "registrar.max_expires unset: capped at [location] expire_window_s"
        );
    }
}

pub fn run(opts: RunOpts) -> anyhow::Result<()> {
    let loaded = load_config(&opts.common, &opts.listen, opts.admin.as_deref())?;
    let mut cfg = loaded.config.clone();
    check_log_level(&loaded)?;
    init_logging(&cfg);
    clamp_expires_to_location_window(&mut cfg);
    let data_dir = opts
        .common
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("geosip-data"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("geosip-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;

    let specs = listen_specs(&loaded)?;
    let transports = Transports::bind(cfg.transport.clone(), &specs, rt.handle().clone())
        .with_context(|| {
            format!(
                "{}: cannot bind {}",
                loaded.origin("core.listen"),
                cfg.core.listen.join(", ")
            )
        })?;
    let admin_listener = match admin_addr(&loaded)? {
        None => None,
        Some(addr) => Some(rt.block_on(geosip_admin::bind(addr)).with_context(|| {
            format!(
                "{}: cannot bind the admin interface on {addr}",
                loaded.origin("admin.listen")
            )
        })?),
    };

    let metrics = Registry::new();
    let rpc = RpcRegistry::new();
    let core = Arc::new(Core::new(
        cfg.core.clone(),
        transports.clone(),
        metrics.clone(),
        rpc.clone(),
        cfg.log.bad_message_per_minute,
    ));
    register_transport_metrics(&core);
    let htable = Arc::new(Htable::new(cfg.htable.clone()));
    let tm = Tm::new(Arc::clone(&core), cfg.tm.clone());
    let (location, partitions) = match &cfg.location {
        Some(lc) => {
            lc.validate().map_err(|e| {
                anyhow::anyhow!(
                    "{}: [location] {e}",
                    loaded.origin_in("location", &e.to_string())
                )
            })?;
            lc.check_max_expires(u64::from(cfg.registrar.max_expires))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: [location] {e}: raise location.expire_window_s or lower registrar.max_expires",
                        loaded.origin("location.expire_window_s")
                    )
                })?;
            let (loc, backend) =
                geosip_p_usrloc::open_location(lc, &cfg.usrloc, &data_dir, rt.handle().clone())
                    .map_err(|e| {
                        anyhow::anyhow!("[location]: cannot open the partitioned location: {e}")
                    })?;
            backend.register_rpc(&core.rpc);
            backend.register_metrics(&core.metrics);
            (Arc::new(loc), Some(backend))
        }
        None => (
            Arc::new(
                Location::open(cfg.usrloc.clone(), &data_dir, rt.handle().clone())
                    .map_err(|e| anyhow::anyhow!("usrloc: cannot open the location store: {e}"))?,
            ),
            None,
        ),
    };
    cfg.registrar.validate().map_err(|e| {
        anyhow::anyhow!(
            "{}: [registrar] {e}",
            loaded.origin_in("registrar", &e.to_string())
        )
    })?;
    let registrar = Registrar::new(
        Arc::clone(&core),
        Arc::clone(&location),
        cfg.registrar.clone(),
    );
    let protect = Arc::new(
        Protect::new(
            cfg.pike.clone(),
            cfg.ratelimit.clone(),
            cfg.overload.clone(),
        )
        .map_err(|e| protect_error(&loaded, &e.to_string()))?,
    );
    protect.register(&core.metrics, &core.rpc);
    let subscribers = Subscribers::open(&cfg.auth, &data_dir, rt.handle().clone())
        .map_err(|e| anyhow::anyhow!("auth: cannot open the subscriber table: {e}"))?;
    subscribers.register_rpcs(&core.rpc);
    let auth = Arc::new(
        Auth::new(cfg.auth.clone(), subscribers, Some(Arc::clone(&protect)))
            .map_err(|e| anyhow::anyhow!("{}: {e}", loaded.origin_in("auth", &e.to_string())))?,
    );
    auth.register_metrics(&core.metrics);
    if !cfg.auth.enabled {
        tracing::warn!(
            "AUTHENTICATION IS OFF: anyone can register any user and call through this server. \
             Enable it with [auth] enabled = true (or --set auth.enabled=true) and provision users \
             with `geosip subscriber add USER@DOMAIN PASSWORD`."
        );
    }
    let mods = Modules {
        core: Arc::clone(&core),
        htable: Arc::clone(&htable),
        tm: Arc::clone(&tm),
        registrar: Arc::clone(&registrar),
        auth: Arc::clone(&auth),
        protect: Arc::clone(&protect),
    };
    let script = ScriptEngine::load(
        cfg.script.clone(),
        base_dir(loaded.file.as_deref()).as_deref(),
        mods,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tm.set_routes(script.clone());

    let mut server = Server {
        core: Arc::clone(&core),
        script: Arc::clone(&script),
        location: Arc::clone(&location),
        partitions,
        threads: Vec::new(),
    };
    // The location service sweeps expired bindings and flushes write-back on its own runtime
    // when usrloc.timer_interval_s > 0; otherwise the registrar's timer does it.
    let _registrar_timers = if cfg.usrloc.timer_interval_s == 0 {
        Some(registrar.spawn_timers(Duration::from_secs(10))?)
    } else {
        None
    };
    server.threads.push(Tm::spawn_timer(&tm));
    {
        // Every 100 ms: the transaction count feeds overload control, idle subscriber readers
        // end their snapshot; every 5 s: htable sweep.
        let h = Arc::clone(&htable);
        let p = Arc::clone(&protect);
        let t = Arc::clone(&tm);
        let a = Arc::clone(&auth);
        server.threads.push(
            std::thread::Builder::new()
                .name("housekeeping".into())
                .spawn(move || {
                    let mut n = 0u64;
                    loop {
                        std::thread::sleep(Duration::from_millis(100));
                        p.overload().set_transactions(t.live() as u64);
                        a.tick();
                        n += 1;
                        if n.is_multiple_of(50) {
                            h.sweep(std::time::Instant::now());
                        }
                    }
                })?,
        );
    }
    register_core_rpcs(&server);

    let engine = Arc::new_cyclic(|me| Engine {
        core: Arc::clone(&core),
        script: Arc::clone(&script),
        tm: Arc::clone(&tm),
        protect: Arc::clone(&protect),
        auth: Arc::clone(&auth),
        stale: Duration::from_millis(cfg.overload.stale_ms),
        me: me.clone(),
    });
    if let Some(b) = auth.batch() {
        // A batch's answers leave together (one sendmmsg, one wake-up of each peer).
        let c = Arc::clone(&core);
        b.set_wrapper(Arc::new(move |run: &mut dyn FnMut()| {
            c.transports.corked(&mut *run)
        }));
    }
    transports
        .start(engine)
        .context("cannot start the transports")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(l) = admin_listener {
        let admin = geosip_admin::Admin {
            rpc: rpc.clone(),
            metrics: metrics.clone(),
        };
        let mut srx = stop_rx.clone();
        rt.spawn(async move {
            let shutdown = async move {
                let _ = srx.changed().await;
            };
            if let Err(e) = geosip_admin::serve(admin, l, shutdown).await {
                tracing::error!(error = %e, "admin interface stopped");
            }
        });
    }
    let mut ready = String::from("geosip ready:");
    for s in transports.sockets() {
        ready.push_str(&format!(" {}:{}", s.proto.name(), s.addr));
    }
    if let Some(a) = admin_addr {
        ready.push_str(&format!(" admin:{a}"));
    }
    tracing::info!(script = %script.script_name(), "{ready}");
    // Tests and scripts wait for this line.
    println!("{ready}");

    rt.block_on(wait_for_signals(Arc::clone(&script)));
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    transports.shutdown();
    tm.shutdown();
    // Write-back: the last dirty bindings reach the store before exit.
    if let Err(e) = server.location.flush() {
        tracing::warn!(error = %e, "final location flush failed");
    }
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

async fn wait_for_signals(script: Arc<ScriptEngine>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                if let Err(e) = script.reload() {
                    tracing::error!(error = %e, "SIGHUP: script reload refused, the running script stays");
                }
            }
        }
    }
}

fn register_core_rpcs(s: &Server) {
    let rpc = &s.core.rpc;
    rpc.register("core.version", "", "Version and build of the running server.", |_| {
        Ok(json!({"version": geosip_core::VERSION, "commit": option_env!("GEOSIP_COMMIT").unwrap_or("dev")}))
    });
    let core = Arc::clone(&s.core);
    rpc.register("core.uptime", "", "Seconds since start.", move |_| {
        Ok(json!({"uptime_secs": core.started.elapsed().as_secs()}))
    });
    let core = Arc::clone(&s.core);
    rpc.register(
        "stats.get",
        "[GROUP]",
        "Statistics, all or one group (core, tm, usrloc...).",
        move |p| {
            let group = geosip_core::rpc::param_opt_str(p, 0).unwrap_or("all");
            let mut m = serde_json::Map::new();
            for (k, v) in core.metrics.flat(group) {
                m.insert(k, json!(v));
            }
            Ok(serde_json::Value::Object(m))
        },
    );
    let script = Arc::clone(&s.script);
    rpc.register(
        "cfg.reload",
        "",
        "Reload the routing script; a broken script is refused.",
        move |_| match script.reload() {
            Ok(g) => Ok(json!({"reloaded": true, "generation": g, "script": script.script_name()})),
            Err(e) => Err(RpcError::failed(format!(
                "reload refused, the running script stays: {e}"
            ))),
        },
    );
    let core = Arc::clone(&s.core);
    rpc.register("core.sockets", "", "Listening sockets.", move |_| {
        Ok(json!(
            core.transports
                .sockets()
                .iter()
                .map(|s| format!("{}:{}", s.proto.name(), s.addr))
                .collect::<Vec<_>>()
        ))
    });
}

fn register_transport_metrics(core: &Arc<Core>) {
    use geosip_core::metrics::{Family, Kind};
    use std::sync::atomic::Ordering::Relaxed;
    let t = core.transports.clone();
    core.metrics.register("net", move |out| {
        let s = t.stats();
        out.family(Family {
            name: "geosip_net_rx_bytes_total",
            help: "Bytes received.",
            kind: Kind::Counter,
        });
        out.sample(&[("proto", "udp")], s.udp_rx_bytes.load(Relaxed) as f64);
        out.sample(&[("proto", "tcp")], s.tcp.rx_bytes.load(Relaxed) as f64);
        out.family(Family {
            name: "geosip_net_tx_bytes_total",
            help: "Bytes sent.",
            kind: Kind::Counter,
        });
        out.sample(&[("proto", "udp")], s.udp_tx_bytes.load(Relaxed) as f64);
        out.sample(&[("proto", "tcp")], s.tcp.tx_bytes.load(Relaxed) as f64);
        out.family(Family {
            name: "geosip_net_rx_packets_total",
            help: "UDP datagrams received.",
            kind: Kind::Counter,
        });
        out.sample(&[], s.udp_rx_packets.load(Relaxed) as f64);
        out.family(Family {
            name: "geosip_net_rx_truncated_total",
            help: "UDP datagrams dropped as larger than 64 KiB.",
            kind: Kind::Counter,
        });
        out.sample(&[], s.udp_rx_truncated.load(Relaxed) as f64);
        out.family(Family {
            name: "geosip_tcp_connections",
            help: "Open TCP connections.",
            kind: Kind::Gauge,
        });
        out.sample(&[], t.tcp_connections() as f64);
        out.family(Family {
            name: "geosip_tcp_accepted_total",
            help: "TCP connections accepted.",
            kind: Kind::Counter,
        });
        out.sample(&[], s.tcp.accepted.load(Relaxed) as f64);
        out.family(Family {
            name: "geosip_tcp_framing_errors_total",
            help: "TCP streams closed on framing errors.",
            kind: Kind::Counter,
        });
        out.sample(&[], s.tcp.framing_errors.load(Relaxed) as f64);
        for (name, help, v) in [
            ("geosip_tcp_connected_total", "Outgoing TCP connections established.", &s.tcp.connected),
            ("geosip_tcp_connect_failed_total", "Outgoing TCP connection attempts that failed.", &s.tcp.connect_failed),
            ("geosip_tcp_refused_full_total", "TCP connections refused at tcp_max_connections.", &s.tcp.refused_full),
            ("geosip_tcp_queue_full_total", "TCP sends refused: the connection's queue was full (tcp_send_queue / tcp_send_queue_bytes).", &s.tcp.queue_full),
            ("geosip_tcp_send_timeouts_total", "TCP connections closed by tcp_send_timeout_ms.", &s.tcp.send_timeouts),
        ] {
            out.family(Family {
                name,
                help,
                kind: Kind::Counter,
            });
            out.sample(&[], v.load(Relaxed) as f64);
        }
    });
}
