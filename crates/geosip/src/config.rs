//! The TOML configuration: one section per module, unknown keys rejected, every error naming
//! the file, the line and what is allowed. `--set SECTION.KEY=VALUE` overrides any key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use geosip_core::config::{CoreConfig, LogConfig};

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[core]`: listening sockets, advertised address, `force_rport`...
    pub core: CoreConfig,
    /// `[transport]`: worker threads, buffers, TCP limits.
    pub transport: sip_transport::TransportConfig,
    /// `[admin]`: the HTTP admin interface.
    pub admin: AdminConfig,
    /// `[log]`: log format and level.
    pub log: LogConfig,
    /// `[script]`: the Lua routing script.
    pub script: geosip_lua::ScriptConfig,
    /// `[tm]`: transaction timers and limits.
    pub tm: geosip_tm::TmConfig,
    /// `[htable]`: shared key-value tables.
    pub htable: geosip_htable::HtableConfig,
    /// `[usrloc]`: the location table and its storage mode.
    pub usrloc: geosip_usrloc::UsrlocConfig,
    /// `[registrar]`: REGISTER processing.
    pub registrar: geosip_registrar::RegistrarConfig,
    /// `[auth]`: digest authentication and the subscriber table.
    pub auth: geosip_auth::AuthConfig,
    /// `[pike]`: flood detection and failed-authentication blocking.
    pub pike: geosip_pike::PikeConfig,
    /// `[ratelimit]`: per-method rate limits.
    pub ratelimit: geosip_pike::RateLimitConfig,
    /// `[overload]`: load shedding with 503 + Retry-After.
    pub overload: geosip_pike::OverloadConfig,
    /// `[location]`: location partitioned over groups of databases (p_usrloc). When present it
    /// is usrloc's store (`usrloc.db_url` is not used).
    pub location: Option<geosip_p_usrloc::LocationConfig>,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the JSON-RPC / metrics / status page listener; empty disables it.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:5080".into(),
        }
    }
}

/// A configuration error, already phrased for the operator.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the configuration came from, for messages and for resolving relative paths.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The parsed configuration.
    pub config: Config,
    /// The file, if any (`None` = embedded default).
    pub file: Option<PathBuf>,
    /// The file's text, to point at the line of a key in later (semantic) errors.
    pub text: String,
    /// The `--set` overrides, as given.
    pub sets: Vec<String>,
    /// Keys set by other command-line options (`core.listen` by `--listen`...), with the
    /// option as typed.
    pub cli: Vec<(String, String)>,
}

impl Loaded {
    /// Where `section.key` (e.g. `core.listen`, `location.expire_window_s`) was set:
    /// `--set section.key=…`, `FILE:LINE`, `FILE: [section]` when only the section is in
    /// the file, or the file name / `<embedded default>` when the default applies.
    pub fn origin(&self, dotted: &str) -> String {
        if let Some((_, opt)) = self.cli.iter().rev().find(|(k, _)| k == dotted) {
            return opt.clone();
        }
        if let Some(s) = self
            .sets
            .iter()
            .rev()
            .find(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == dotted))
        {
            return format!("--set {s}");
        }
        let name = match &self.file {
            Some(f) => f.display().to_string(),
            None => return "<embedded default>".into(),
        };
        let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
        let mut current = String::new();
        let mut section_line = None;
        for (i, line) in self.text.lines().enumerate() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix('[') {
                current = h
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if current == section && section_line.is_none() {
                    section_line = Some(i + 1);
                }
                continue;
            }
            if current == section
                && !key.is_empty()
                && let Some(rest) = t.strip_prefix(key)
                && rest.trim_start().starts_with('=')
            {
                return format!("{name}:{}", i + 1);
            }
        }
        match section_line {
            Some(l) => format!("{name}:{l}: [{section}]"),
            None => name,
        }
    }

    /// [`origin`](Self::origin) of the first `section.key` named in `msg` (validation
    /// messages name the key they refuse), else of the section itself.
    pub fn origin_in(&self, section: &str, msg: &str) -> String {
        let prefix = format!("{section}.");
        let key = msg
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .find(|w| w.starts_with(&prefix) && w.len() > prefix.len());
        match key {
            Some(k) => self.origin(k.trim_end_matches('.')),
            None => self.origin(&format!("{section}.")),
        }
    }
}

/// Loads `file` (or the embedded default when `None`) and applies `sets` (`section.key=value`).
pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Loaded, ConfigError> {
    let (text, name) = match file {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (String::new(), "<embedded default>".to_string()),
    };
    // First pass on the file alone, so that errors carry the file's line numbers.
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| located(&name, &text, &e))?;
    let _: Config = toml::from_str(&text).map_err(|e| located(&name, &text, &e))?;
    for s in sets {
        apply_set(&mut table, s)?;
    }
    let config: Config = Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        ConfigError(format!(
            "--set {}: {}",
            sets.join(" --set "),
            e.message().trim_end()
        ))
    })?;
    Ok(Loaded {
        config,
        file: file.map(Path::to_path_buf),
        text,
        sets: sets.to_vec(),
        cli: Vec::new(),
    })
}

fn located(name: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            let src = text.lines().nth(line - 1).unwrap_or("").trim_end();
            ConfigError(format!("{name}:{line}:{col}: {msg}\n    {line} | {src}"))
        }
        None => ConfigError(format!("{name}: {msg}")),
    }
}

/// Applies one `section.key=value` (or `section.sub.key=value`): the value is read as TOML
/// (`true`, `5`, `"x"`, `["a","b"]`) and, if that fails, taken as a plain string.
fn apply_set(table: &mut toml::Table, s: &str) -> Result<(), ConfigError> {
    let (path, raw) = s.split_once('=').ok_or_else(|| {
        ConfigError(format!(
            "--set {s}: expected SECTION.KEY=VALUE, e.g. --set core.force_rport=false"
        ))
    })?;
    let path: Vec<&str> = path.trim().split('.').collect();
    if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError(format!(
            "--set {s}: `{}` must be SECTION.KEY, e.g. registrar.min_expires",
            path.join(".")
        )));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut cur = table;
    for seg in &path[..path.len() - 1] {
        let entry = cur
            .entry((*seg).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError(format!("--set {s}: `{seg}` is not a section"))),
        };
    }
    if let Some(last) = path.last() {
        cur.insert((*last).to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, sets: &[&str]) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("geosip-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let p = dir.join(format!("t{}.toml", text.len()));
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load(Some(&p), &sets).map(|l| l.config).map_err(|e| e.0)
    }

    #[test]
    fn origin_names_the_line_of_a_key_the_set_that_overrode_it_or_the_default() {
        let dir = std::env::temp_dir().join(format!("geosip-origin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("g.toml");
        std::fs::write(
            &f,
            "[core]\nlisten = [\"udp:1.2.3.4:5060\"]\n\n[registrar]\nmin_expires = 60\n",
        )
        .unwrap();
        let l = load(Some(&f), &["admin.listen=x".into()]).unwrap();
        let name = f.display().to_string();
        assert_eq!(l.origin("core.listen"), format!("{name}:2"));
        assert_eq!(l.origin("registrar.min_expires"), format!("{name}:5"));
        assert_eq!(
            l.origin("registrar.max_expires"),
            format!("{name}:4: [registrar]")
        );
        assert_eq!(l.origin("admin.listen"), "--set admin.listen=x");
        assert_eq!(l.origin("log.level"), name);
        assert_eq!(
            l.origin_in(
                "registrar",
                "registrar.min_expires = 60 is above registrar.max_expires"
            ),
            format!("{name}:5")
        );
        assert_eq!(
            load(None, &[]).unwrap().origin("core.listen"),
            "<embedded default>"
        );
    }

    #[test]
    fn an_unknown_key_is_rejected_with_file_line_and_the_allowed_keys() {
        let e = load_str("[core]\nforce_rport = true\nfroce = 1\n", &[]).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
        assert!(e.contains("unknown field `froce`"), "{e}");
        assert!(e.contains("force_rport"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_line() {
        let e = load_str("[core]\n\nforce_rport = \"yes\"\n", &[]).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
    }

    #[test]
    fn set_overrides_a_key_and_reads_toml_values() {
        let c = load_str(
            "[core]\nforce_rport = true\n",
            &["core.force_rport=false", "admin.listen=127.0.0.1:9"],
        )
        .unwrap();
        assert!(!c.core.force_rport);
        assert_eq!(c.admin.listen, "127.0.0.1:9");
    }

    #[test]
    fn set_with_an_unknown_key_says_so() {
        let e = load_str("", &["core.nope=1"]).unwrap_err();
        assert!(e.contains("--set core.nope=1"), "{e}");
        assert!(e.contains("unknown field `nope`"), "{e}");
    }

    #[test]
    fn the_embedded_default_forces_rport_and_listens_on_udp_and_tcp() {
        let c = load(None, &[]).unwrap().config;
        assert!(c.core.force_rport);
        assert_eq!(
            c.core.listen,
            vec!["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
        );
        assert_eq!(c.admin.listen, "127.0.0.1:5080");
    }
}
