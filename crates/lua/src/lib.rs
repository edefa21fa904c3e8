//! app_lua: routing logic as a Lua 5.4 script over a native API that Kamailio KEMI users
//! recognise (`KSR.tm.t_relay()`, `KSR.rr.loose_route()`, `KSR.registrar.save("location")`,
//! `KSR.pv.get("$ru")`...).
//!
//! # Model
//! - **One VM per worker thread**, created lazily from the current script source. There is no
//!   lock around Lua: each thread runs its own state (Kamailio runs one interpreter per
//!   process).
//! - **The current message is thread-local.** Before a route function runs, its context is
//!   installed in a thread-local slot; `KSR.*` functions act on it, like KEMI functions act on
//!   the current `sip_msg_t`. Calls that may run another route (tm's `t_relay` runs branch
//!   routes, and may run a failure route) take the context out of the slot while they run, so
//!   routes nest without aliasing.
//! - **Entry points**: `request_route()` (or KEMI's `ksr_request_route()`) for every request,
//!   `reply_route()` (`ksr_reply_route()`) for every reply when defined, and failure / branch /
//!   onreply routes by the function names given to `t_on_failure` / `t_on_branch` /
//!   `t_on_reply`.
//! - **Hot reload**: [`ScriptEngine::reload`] reads the file again, loads it in a scratch VM
//!   (syntax errors and a missing `request_route` are reported with file and line) and only then
//!   publishes it; each worker rebuilds its VM before its next message. Transactions in flight
//!   keep their route *names*, resolved in the new script when they fire. A broken script is
//!   refused and the old one keeps running.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod bindings;
pub mod pv;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use geosip_core::Core;
use geosip_core::ctx::{MsgCtx, RxInfo, Target, ViaStamp};
use geosip_core::metrics::{Counter, Family, Kind};
use geosip_core::routes::{FailureInfo, ReplyCtx, RouteHooks};
use mlua::{Function, Lua};
use serde::Deserialize;
use sip_msg::{Edits, SipMessage};

pub use bindings::Modules;

/// The default routing script, embedded in the binary (`etc/route.lua`).
pub const DEFAULT_SCRIPT: &str = include_str!("../../../etc/route.lua");

/// `[script]` configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptConfig {
    /// The routing script. Without it the embedded `etc/route.lua` runs. A relative path is
    /// relative to the configuration file.
    pub file: Option<PathBuf>,
    /// Memory limit of each worker's Lua state, in MiB.
    pub memory_limit_mb: usize,
    /// Values the script reads with `KSR.cfg.get("name")` (strings), e.g. a static
    /// destination: `[script.vars] static_target = "sip:10.0.0.5:5060"`.
    pub vars: BTreeMap<String, String>,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        ScriptConfig {
            file: None,
            memory_limit_mb: 64,
            vars: BTreeMap::new(),
        }
    }
}

/// A script that failed to load, with the file and line in the message.
#[derive(Debug, Clone)]
pub struct ScriptError(pub String);

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScriptError {}

/// A loaded script source.
struct Source {
    /// `@path` used as chunk name, so errors read `path:line:`.
    name: String,
    code: Arc<str>,
    generation: u64,
}

/// Script counters.
#[derive(Default)]
pub struct ScriptStats {
    /// Route executions.
    pub runs: Counter,
    /// Runtime errors raised by scripts.
    pub errors: Counter,
    /// Total nanoseconds spent in routes.
    pub nanos: Counter,
    /// Successful reloads.
    pub reloads: Counter,
    /// Refused reloads.
    pub reload_failures: Counter,
}

/// The script engine shared by all threads.
pub struct ScriptEngine {
    id: u64,
    source: ArcSwap<Source>,
    file: Option<PathBuf>,
    cfg: ScriptConfig,
    /// The modules `KSR.*` reaches.
    pub mods: Modules,
    /// Counters.
    pub stats: Arc<ScriptStats>,
}

static ENGINE_IDS: AtomicU64 = AtomicU64::new(1);

/// Per-thread interpreter.
struct Vm {
    engine: u64,
    generation: u64,
    lua: Lua,
    request_route: Option<Function>,
    reply_route: Option<Function>,
    /// Calls a route under a Lua `pcall` ([`RUNNER`]).
    runner: Function,
}

/// Runs a route. A route stops with `error(EXIT, 0)` (`KSR.x.exit`, a parked request): caught
/// here by a Lua `xpcall`, that costs nothing, whereas mlua's own protected call builds a
/// traceback for every error, searching every loaded table for function names (tens of µs).
/// Real errors are raised again for mlua to report.
const RUNNER: &str = r#"
local EXIT = ...
local function keep(e) return e end
return function(f)
    local ok, err = xpcall(f, keep)
    if not ok and err ~= EXIT then error(err, 0) end
end
"#;

thread_local! {
    static VM: RefCell<Option<Vm>> = const { RefCell::new(None) };
    /// The request being routed (request, failure and branch routes).
    // Boxed: bindings take the context out and put it back around calls that may run other
    // routes, and moving a pointer is cheaper than moving the context (about 1 KiB).
    pub(crate) static CUR: RefCell<Option<Box<MsgCtx>>> = const { RefCell::new(None) };
    /// The reply being routed (reply routes).
    pub(crate) static REPLY: RefCell<Option<ReplyView>> = const { RefCell::new(None) };
    /// Set by `KSR.x.drop()`.
    pub(crate) static DROPPED: Cell<bool> = const { Cell::new(false) };
    /// A context to swap into a borrowed `&mut MsgCtx` while it is installed.
    static SPARE: RefCell<Option<MsgCtx>> = const { RefCell::new(None) };
}

/// A reply as seen by `reply_route`.
pub(crate) struct ReplyView {
    pub msg: SipMessage,
    pub rx: RxInfo,
}

/// The error message `KSR.x.exit()` raises to stop the route; not an error.
pub(crate) const EXIT: &str = "__ksr_exit__";

impl ScriptEngine {
    /// Loads the configured script (or the embedded default) and checks it.
    pub fn load(
        cfg: ScriptConfig,
        base_dir: Option<&Path>,
        mods: Modules,
    ) -> Result<Arc<ScriptEngine>, ScriptError> {
        let file = cfg.file.as_ref().map(|f| match base_dir {
            Some(b) if f.is_relative() => b.join(f),
            _ => f.clone(),
        });
        let (name, code) = read_source(file.as_deref())?;
        let engine = ScriptEngine {
            id: ENGINE_IDS.fetch_add(1, Ordering::Relaxed),
            source: ArcSwap::from_pointee(Source {
                name,
                code: code.into(),
                generation: 1,
            }),
            file,
            cfg,
            mods,
            stats: Arc::new(ScriptStats::default()),
        };
        let src = engine.source.load();
        engine
            .build_vm(&src.name, &src.code)
            .map_err(|e| ScriptError(lua_error_text(&e)))?;
        drop(src);
        let engine = Arc::new(engine);
        engine.register_metrics();
        Ok(engine)
    }

    /// Checks a script without running a server (`geosip check-config`).
    pub fn check(
        cfg: ScriptConfig,
        base_dir: Option<&Path>,
        mods: Modules,
    ) -> Result<(), ScriptError> {
        Self::load(cfg, base_dir, mods).map(|_| ())
    }

    /// The script's display name (its path, or `<embedded route.lua>`).
    pub fn script_name(&self) -> String {
        self.source.load().name.trim_start_matches('@').to_string()
    }

    /// Generation of the running script (1, then +1 per successful reload).
    pub fn generation(&self) -> u64 {
        self.source.load().generation
    }

    /// Reads the script again and swaps it in if it loads; otherwise the old one stays and
    /// the error (with file and line) is returned.
    pub fn reload(&self) -> Result<u64, ScriptError> {
        let (name, code) = read_source(self.file.as_deref())?;
        if let Err(e) = self.build_vm(&name, &code) {
            self.stats.reload_failures.inc();
            return Err(ScriptError(lua_error_text(&e)));
        }
        let generation = self.source.load().generation + 1;
        self.source.store(Arc::new(Source {
            name,
            code: code.into(),
            generation,
        }));
        self.stats.reloads.inc();
        tracing::info!(script = %self.script_name(), generation, "routing script reloaded");
        Ok(generation)
    }

    fn build_vm(&self, name: &str, code: &str) -> mlua::Result<Vm> {
        let lua = Lua::new();
        lua.set_memory_limit(self.cfg.memory_limit_mb.max(1) << 20)?;
        bindings::install(&lua, &self.mods, &self.cfg.vars)?;
        lua.load(code).set_name(name).exec()?;
        let g = lua.globals();
        let request_route: Option<Function> = match g.get::<Option<Function>>("request_route")? {
            Some(f) => Some(f),
            None => g.get::<Option<Function>>("ksr_request_route")?,
        };
        if request_route.is_none() {
            return Err(mlua::Error::RuntimeError(format!(
                "{}: defines no request_route() function (the entry point for every request)",
                name.trim_start_matches('@')
            )));
        }
        let reply_route = match g.get::<Option<Function>>("reply_route")? {
            Some(f) => Some(f),
            None => g.get::<Option<Function>>("ksr_reply_route")?,
        };
        let runner: Function = lua.load(RUNNER).set_name("=runner").call(EXIT)?;
        Ok(Vm {
            engine: self.id,
            generation: 0,
            lua,
            request_route,
            reply_route,
            runner,
        })
    }

    /// Makes sure this thread's VM runs the current script.
    fn ensure_vm(&self) -> bool {
        let src = self.source.load();
        let fresh = VM.with(|v| {
            v.borrow()
                .as_ref()
                .is_some_and(|vm| vm.engine == self.id && vm.generation == src.generation)
        });
        if fresh {
            return true;
        }
        match self.build_vm(&src.name, &src.code) {
            Ok(mut vm) => {
                vm.generation = src.generation;
                VM.with(|v| *v.borrow_mut() = Some(vm));
                true
            }
            Err(e) => {
                self.stats.errors.inc();
                tracing::error!(error = %lua_error_text(&e), "cannot build the Lua state for this worker");
                false
            }
        }
    }

    /// Calls a route function chosen by `pick` (or a global by `name`), counting time and
    /// errors. Returns false when the function does not exist.
    fn call(&self, name: Option<&str>, pick: impl Fn(&Vm) -> Option<Function>) -> bool {
        if !self.ensure_vm() {
            return false;
        }
        let f = VM.with(|v| {
            let v = v.borrow();
            let vm = v.as_ref()?;
            let f = match name {
                Some(n) => vm.lua.globals().get::<Option<Function>>(n).ok().flatten(),
                None => pick(vm),
            };
            f.map(|f| (f, vm.runner.clone()))
        });
        let Some((f, runner)) = f else { return false };
        let t0 = Instant::now();
        self.stats.runs.inc();
        if let Err(e) = runner.call::<()>(f)
            && !is_exit(&e)
        {
            self.stats.errors.inc();
            tracing::error!(error = %lua_error_text(&e), "routing script error");
        }
        self.stats.nanos.add(t0.elapsed().as_nanos() as u64);
        true
    }

    /// Runs `request_route` on a request. Returns the context (the script may have replied,
    /// relayed, or done nothing).
    pub fn run_request(&self, ctx: MsgCtx) -> MsgCtx {
        *self.run_request_boxed(Box::new(ctx))
    }

    /// [`run_request`](Self::run_request) on a boxed context, as the server keeps it: the
    /// context (~2.5 KB) is not copied in and out of the script's slot.
    pub fn run_request_boxed(&self, ctx: Box<MsgCtx>) -> Box<MsgCtx> {
        CUR.with(|c| *c.borrow_mut() = Some(ctx));
        DROPPED.with(|d| d.set(false));
        self.call(None, |vm| vm.request_route.clone());
        match CUR.with(|c| c.borrow_mut().take()) {
            Some(ctx) => ctx,
            // Only reachable if a binding lost the context; rebuild an inert one.
            None => Box::new(placeholder()),
        }
    }

    /// Whether the script defines a global reply route.
    pub fn has_reply_route(&self) -> bool {
        self.ensure_vm()
            && VM.with(|v| {
                v.borrow()
                    .as_ref()
                    .is_some_and(|vm| vm.reply_route.is_some())
            })
    }

    fn register_metrics(self: &Arc<Self>) {
        let s = Arc::clone(&self.stats);
        self.mods.core.metrics.register("script", move |out| {
            out.family(Family {
                name: "geosip_script_runs_total",
                help: "Route executions.",
                kind: Kind::Counter,
            });
            out.sample(&[], s.runs.get() as f64);
            out.family(Family {
                name: "geosip_script_errors_total",
                help: "Runtime errors in routing scripts.",
                kind: Kind::Counter,
            });
            out.sample(&[], s.errors.get() as f64);
            out.family(Family {
                name: "geosip_script_seconds_total",
                help: "Time spent running routes.",
                kind: Kind::Counter,
            });
            out.sample(&[], s.nanos.get() as f64 / 1e9);
            out.family(Family {
                name: "geosip_script_reloads_total",
                help: "Script reloads by outcome.",
                kind: Kind::Counter,
            });
            out.sample(&[("result", "ok")], s.reloads.get() as f64);
            out.sample(&[("result", "refused")], s.reload_failures.get() as f64);
        });
    }
}

/// Runs `f` with `ctx` installed as the current request, restoring whatever was installed
/// before (routes nest: a failure route can run inside `t_relay` inside a request route).
fn with_installed<R>(ctx: &mut MsgCtx, f: impl FnOnce() -> R) -> R {
    let spare = SPARE
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(placeholder);
    let real = std::mem::replace(ctx, spare);
    let prev = CUR.with(|c| c.replace(Some(Box::new(real))));
    let r = f();
    let back = CUR.with(|c| c.replace(prev));
    if let Some(real) = back {
        let spare = std::mem::replace(ctx, *real);
        SPARE.with(|s| *s.borrow_mut() = Some(spare));
    }
    r
}

impl RouteHooks for ScriptEngine {
    fn failure_route(
        &self,
        name: &str,
        ctx: &mut MsgCtx,
        _info: FailureInfo,
        _reply: Option<&SipMessage>,
    ) {
        with_installed(ctx, || {
            if !self.call(Some(name), |_| None) {
                tracing::warn!(route = name, "failure route not defined in the script");
            }
        });
    }

    fn branch_route(
        &self,
        name: &str,
        ctx: &MsgCtx,
        target: &mut Target,
        edits: &mut Edits,
    ) -> bool {
        let mut bctx = ctx.clone();
        bctx.new_ruri = Some(target.uri.clone());
        bctx.dst_uri = target.dst_uri.clone();
        bctx.edits = edits.clone();
        DROPPED.with(|d| d.set(false));
        with_installed(&mut bctx, || self.call(Some(name), |_| None));
        if DROPPED.with(|d| d.replace(false)) {
            return false;
        }
        if let Some(u) = bctx.new_ruri.take() {
            target.uri = u;
        }
        target.dst_uri = bctx.dst_uri.take();
        *edits = std::mem::take(&mut bctx.edits);
        true
    }

    fn reply_route(&self, name: &str, reply: &ReplyCtx<'_>) -> bool {
        self.run_reply(name, reply.msg, reply.rx)
    }
}

impl ScriptEngine {
    /// The global `reply_route()` for a reply that matched no transaction (the answer to a
    /// stateless `KSR.forward`, or a late 2xx retransmission), as Kamailio runs
    /// `onreply_route` for every reply. False: the script dropped it. True when the script
    /// has no reply route.
    pub fn run_stateless_reply(&self, msg: &SipMessage, rx: RxInfo) -> bool {
        if !self.has_reply_route() {
            return true;
        }
        self.run_reply("", msg, rx)
    }

    fn run_reply(&self, name: &str, msg: &SipMessage, rx: RxInfo) -> bool {
        let prev = REPLY.with(|r| {
            r.replace(Some(ReplyView {
                msg: msg.clone(),
                rx,
            }))
        });
        DROPPED.with(|d| d.set(false));
        if name.is_empty() {
            self.call(None, |vm| vm.reply_route.clone());
        } else {
            self.call(Some(name), |_| None);
        }
        REPLY.with(|r| *r.borrow_mut() = prev);
        !DROPPED.with(|d| d.replace(false))
    }
}

fn read_source(file: Option<&Path>) -> Result<(String, String), ScriptError> {
    match file {
        Some(f) => {
            let code = std::fs::read_to_string(f).map_err(|e| {
                ScriptError(format!(
                    "{}: cannot read the routing script: {e}",
                    f.display()
                ))
            })?;
            Ok((format!("@{}", f.display()), code))
        }
        None => Ok((
            "@<embedded route.lua>".to_string(),
            DEFAULT_SCRIPT.to_string(),
        )),
    }
}

fn is_exit(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::RuntimeError(s) => s.contains(EXIT),
        mlua::Error::CallbackError { cause, .. } => is_exit(cause),
        mlua::Error::WithContext { cause, .. } => is_exit(cause),
        other => other.to_string().contains(EXIT),
    }
}

/// Error text with file:line and without Rust-side noise.
fn lua_error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", lua_error_text(cause))
        }
        other => other.to_string(),
    }
}

/// An inert context used as a placeholder while a real one is installed elsewhere.
fn placeholder() -> MsgCtx {
    static RAW: &[u8] = b"OPTIONS sip:placeholder.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK0\r\nFrom: <sip:x.invalid>;tag=0\r\nTo: <sip:x.invalid>\r\nCall-ID: 0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    // A constant that always frames (checked by a unit test); not network input.
    #[allow(clippy::expect_used)]
    let msg =
        SipMessage::parse_lenient(Bytes::from_static(RAW)).expect("placeholder message frames");
    let rx = RxInfo {
        src: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        proto: sip_transport::Proto::Udp,
        socket: sip_transport::SocketId(0),
        local: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        conn: None,
    };
    MsgCtx::new(msg, rx, Instant::now(), ViaStamp::default())
}

/// The engine's core handle.
impl ScriptEngine {
    /// The core.
    pub fn core(&self) -> &Arc<Core> {
        &self.mods.core
    }
}

#[cfg(test)]
mod tests;
