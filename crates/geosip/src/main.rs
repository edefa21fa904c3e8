//! `geosip`: SIP proxy, registrar, location service, load balancer and router in one binary.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod ctl;
mod engine;
mod server;
mod subscriber;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc rather than glibc malloc: glibc grows each thread's arena a page at a time with an
/// `mprotect` system call, which showed as ~3 % of the CPU of an authenticated REGISTER while
/// new contacts and cache entries are stored; mimalloc also has cheaper per-thread free lists.
/// Measured: 3–7 % less CPU per authenticated REGISTER (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "geosip",
    version,
    about = "Carrier-grade SIP proxy, registrar and router"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by every subcommand that opens the configuration or the store.
#[derive(Args, Clone, Debug, Default)]
pub struct CommonOpts {
    /// Configuration file (TOML). Without it the embedded default is used.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Data directory (embedded database, state). Default: ./geosip-data
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Override a configuration key, e.g. --set registrar.min_expires=60 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

/// Options of `geosip run`.
#[derive(Args, Clone, Debug, Default)]
pub struct RunOpts {
    #[command(flatten)]
    pub common: CommonOpts,
    /// Listening socket, udp:IP:PORT or tcp:IP:PORT (repeatable; replaces core.listen).
    #[arg(long, short = 'l')]
    pub listen: Vec<String>,
    /// Admin interface address IP:PORT (replaces admin.listen).
    #[arg(long)]
    pub admin: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Run(RunOpts),
    /// Check a configuration file and its routing script, then exit.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Provision subscribers (digest authentication users) in the configured store, without a
    /// running server. On a running server use `geosip ctl subscriber.add ...` instead (its
    /// cache sees the change at once).
    Subscriber {
        #[command(subcommand)]
        cmd: subscriber::SubscriberCmd,
    },
    /// Call an admin RPC method on a running server (like kamcmd), e.g. `geosip ctl ul.dump`.
    Ctl {
        /// Admin interface address.
        #[arg(long, default_value = "127.0.0.1:5080")]
        admin: String,
        /// Print the raw JSON result.
        #[arg(long)]
        json: bool,
        /// Method, e.g. core.uptime, stats.get, rpc.list.
        method: String,
        /// Positional parameters.
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(opts) => match server::run(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("geosip: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::CheckConfig { file, sets } => match server::check_config(&file, &sets) {
            Ok(()) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Subscriber { cmd } => match subscriber::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("geosip subscriber: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Ctl {
            admin,
            json,
            method,
            args,
        } => match ctl::call(&admin, &method, &args) {
            Ok(v) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    print!("{}", ctl::render(&v));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("geosip ctl {method}: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
