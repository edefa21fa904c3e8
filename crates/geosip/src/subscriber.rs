//! `geosip subscriber add|rm|passwd|enable|disable|list|show|import`: provisioning of the
//! subscriber table of a configuration (embedded SQLite in the data dir, or `auth.db_url`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use geosip_auth::Subscribers;

use crate::CommonOpts;

/// One subcommand with the options every subcommand takes.
#[derive(Subcommand, Debug)]
pub enum SubscriberCmd {
    /// Add USER@DOMAIN with PASSWORD (HA1s for MD5, SHA-256 and SHA-512-256 are stored).
    Add {
        #[command(flatten)]
        common: CommonOpts,
        /// user@domain
        aor: String,
        /// The password (it is not stored unless auth.store_plaintext = true).
        password: String,
        /// Attribute for routing scripts, NAME=VALUE (repeatable): KSR.subscriber.attr(NAME).
        #[arg(long = "attr", value_name = "NAME=VALUE")]
        attrs: Vec<String>,
    },
    /// Remove a subscriber.
    Rm(Aor),
    /// Change a password.
    Passwd {
        #[command(flatten)]
        common: CommonOpts,
        /// user@domain
        aor: String,
        /// The new password.
        password: String,
    },
    /// Allow a subscriber to authenticate again.
    Enable(Aor),
    /// Refuse a subscriber's authentication without removing it.
    Disable(Aor),
    /// List subscribers, optionally of one domain.
    List {
        #[command(flatten)]
        common: CommonOpts,
        /// Only this domain.
        domain: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show one subscriber.
    Show(Aor),
    /// Set attributes: NAME=VALUE sets one, NAME= removes it; the others are kept.
    Attr {
        #[command(flatten)]
        common: CommonOpts,
        /// user@domain
        aor: String,
        /// NAME=VALUE (repeatable; NAME= removes the attribute).
        #[arg(required = true, value_name = "NAME=VALUE")]
        changes: Vec<String>,
    },
    /// Bulk import from CSV: `user@domain,password[,name=value;name=value]` per line
    /// (`#` comments and blank lines ignored); all or nothing.
    Import {
        #[command(flatten)]
        common: CommonOpts,
        /// The CSV file (`-` for standard input).
        file: PathBuf,
    },
}

/// Options of the subcommands that take just an AOR.
#[derive(Args, Debug)]
pub struct Aor {
    #[command(flatten)]
    common: CommonOpts,
    /// user@domain
    aor: String,
}

fn open(
    common: &CommonOpts,
) -> anyhow::Result<(std::sync::Arc<Subscribers>, tokio::runtime::Runtime)> {
    let loaded = crate::config::load(common.config.as_deref(), &common.sets)?;
    let data_dir = common
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("geosip-data"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let subs = Subscribers::open(&loaded.config.auth, &data_dir, rt.handle().clone())
        .map_err(|e| anyhow::anyhow!("cannot open the subscriber table: {e}"))?;
    Ok((subs, rt))
}

fn attrs(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for a in list {
        if !a.contains('=') {
            anyhow::bail!("--attr {a}: expected NAME=VALUE, e.g. --attr tariff=gold");
        }
        // The same rules as the RPC and the CSV import (names of letters, digits, _ . -).
        let one = geosip_auth::parse_attrs(a).map_err(|e| anyhow::anyhow!("--attr {a}: {e}"))?;
        m.extend(one);
    }
    Ok(m)
}

/// Runs one subcommand.
pub fn run(cmd: SubscriberCmd) -> anyhow::Result<()> {
    let e = |e: geosip_auth::SubscriberError| anyhow::anyhow!("{e}");
    match cmd {
        SubscriberCmd::Add {
            common,
            aor,
            password,
            attrs: a,
        } => {
            let (s, _rt) = open(&common)?;
            s.add(&aor, &password, &attrs(&a)?).map_err(e)?;
            println!("added {aor}");
        }
        SubscriberCmd::Rm(Aor { common, aor }) => {
            let (s, _rt) = open(&common)?;
            s.rm(&aor).map_err(e)?;
            println!("removed {aor}");
        }
        SubscriberCmd::Passwd {
            common,
            aor,
            password,
        } => {
            let (s, _rt) = open(&common)?;
            s.passwd(&aor, &password).map_err(e)?;
            println!("password changed for {aor}");
        }
        SubscriberCmd::Enable(Aor { common, aor }) => {
            let (s, _rt) = open(&common)?;
            s.set_enabled(&aor, true).map_err(e)?;
            println!("enabled {aor}");
        }
        SubscriberCmd::Disable(Aor { common, aor }) => {
            let (s, _rt) = open(&common)?;
            s.set_enabled(&aor, false).map_err(e)?;
            println!("disabled {aor}");
        }
        SubscriberCmd::List {
            common,
            domain,
            limit,
        } => {
            let (s, _rt) = open(&common)?;
            for sub in s.list(domain.as_deref(), limit, None).map_err(e)? {
                println!(
                    "{}@{}{}",
                    sub.username,
                    sub.domain,
                    if sub.enabled { "" } else { "  (disabled)" }
                );
            }
        }
        SubscriberCmd::Attr {
            common,
            aor,
            changes,
        } => {
            let (s, _rt) = open(&common)?;
            let now = s.set_attrs(&aor, &attrs(&changes)?).map_err(e)?;
            println!("attributes of {aor}:");
            for (k, v) in now {
                println!("  {k} = {v}");
            }
        }
        SubscriberCmd::Show(Aor { common, aor }) => {
            let (s, _rt) = open(&common)?;
            let sub = s.show(&aor).map_err(e)?;
            print!("{}", crate::ctl::render(&sub.to_json()));
        }
        SubscriberCmd::Import { common, file } => {
            let (s, _rt) = open(&common)?;
            let n = if file.as_os_str() == "-" {
                s.import_csv(std::io::stdin().lock()).map_err(e)?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                s.import_csv(std::io::BufReader::new(f)).map_err(e)?
            };
            println!("imported {n} subscribers");
        }
    }
    Ok(())
}
