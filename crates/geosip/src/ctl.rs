//! `geosip ctl`: calls a JSON-RPC method on a running server (Kamailio's `kamcmd`) and prints
//! the result for a person, or as raw JSON with `--json`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Calls `method` with positional string `args` on the admin server at `admin`.
pub fn call(admin: &str, method: &str, args: &[String]) -> anyhow::Result<Value> {
    let params: Vec<Value> = args.iter().map(|a| Value::String(a.clone())).collect();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let addr = admin
        .to_socket_addrs()
        .with_context(|| format!("admin address `{admin}` is not HOST:PORT"))?
        .next()
        .with_context(|| format!("admin address `{admin}` resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to the admin interface at {admin}; is `geosip run` up, and is --admin right?"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "POST /RPC HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response from the admin interface")?;
    let head = String::from_utf8_lossy(&resp[..split]);
    let mut payload = &resp[split + 4..];
    let chunked;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        chunked = dechunk(payload);
        payload = &chunked;
    }
    let v: Value =
        serde_json::from_slice(payload).context("admin interface did not answer JSON")?;
    if let Some(e) = v.get("error") {
        bail!(
            "{} (code {})",
            e.get("message").and_then(|m| m.as_str()).unwrap_or("error"),
            e.get("code").cloned().unwrap_or(Value::Null)
        );
    }
    Ok(v.get("result").cloned().unwrap_or(Value::Null))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
    out
}

/// Renders a JSON value as indented `key: value` lines.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    render_into(v, 0, &mut out);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.is_empty() => Some("(none)".into()),
        Value::Object(o) if o.is_empty() => Some("(none)".into()),
        _ => None,
    }
}

fn render_into(v: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(o) => {
            let w = o.keys().map(|k| k.len()).max().unwrap_or(0);
            for (k, val) in o {
                match scalar(val) {
                    Some(s) => out.push_str(&format!("{pad}{k:<w$}  {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        render_into(val, indent + 1, out);
                    }
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}-\n"));
                        render_into(item, indent + 1, out);
                    }
                }
            }
        }
        other => {
            if let Some(s) = scalar(other) {
                out.push_str(&format!("{pad}{s}\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_results_render_as_aligned_indented_lines() {
        let v = serde_json::json!({"aor": "sip:a@b", "contacts": [{"uri": "sip:a@1.2.3.4", "q": 1.0}], "n": 1});
        let s = render(&v);
        assert!(s.contains("aor       sip:a@b\n"), "{s}");
        assert!(
            s.contains("contacts:\n  -\n    q    1.0\n    uri  sip:a@1.2.3.4\n"),
            "{s}"
        );
    }
}
