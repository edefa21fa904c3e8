//! The RPC registry: every module registers its admin commands here (Kamailio's `rpc_lookup`),
//! the admin server exposes them as JSON-RPC 2.0 methods and `geosip ctl` calls them.
//!
//! Method names follow Kamailio (`core.uptime`, `tm.stats`, `ul.dump`...). Params are
//! positional (`geosip ctl ul.lookup sip:alice@example.com`), as `kamcmd` users expect.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

/// JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// JSON-RPC error code (-32602 invalid params, -32601 method not found, 500 internal...).
    pub code: i64,
    /// Readable message saying what is wrong and what is expected.
    pub message: String,
}

impl RpcError {
    /// Invalid parameters (-32602), with a message saying what is expected.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32602,
            message: msg.into(),
        }
    }
    /// The method exists but failed (-32000).
    pub fn failed(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32000,
            message: msg.into(),
        }
    }
    /// No such method (-32601).
    pub fn not_found(name: &str) -> Self {
        RpcError {
            code: -32601,
            message: format!("method `{name}` not found; `geosip ctl rpc.list` lists them"),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

/// Result of an RPC method.
pub type RpcResult = Result<Value, RpcError>;
/// The future an async RPC method returns.
pub type RpcFuture = Pin<Box<dyn Future<Output = RpcResult> + Send>>;
type Handler = Arc<dyn Fn(Vec<Value>) -> RpcFuture + Send + Sync>;

struct Entry {
    usage: String,
    help: String,
    f: Handler,
}

/// Registered RPC methods.
#[derive(Clone, Default)]
pub struct RpcRegistry {
    methods: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl RpcRegistry {
    /// An empty registry (with `rpc.list` built in).
    pub fn new() -> Self {
        let r = RpcRegistry::default();
        let r2 = r.clone();
        r.register("rpc.list", "", "List the RPC methods with their parameters and help.", move |_| {
            let m = r2.methods.read();
            Ok(Value::Array(
                m.iter()
                    .map(|(k, e)| serde_json::json!({"method": k, "params": e.usage, "help": e.help}))
                    .collect(),
            ))
        });
        r
    }

    /// Registers a synchronous method. `usage` names the positional params (`"AOR [CONTACT]"`).
    pub fn register(
        &self,
        name: &str,
        usage: &str,
        help: &str,
        f: impl Fn(&[Value]) -> RpcResult + Send + Sync + 'static,
    ) {
        let f = Arc::new(f);
        self.register_async(name, usage, help, move |p| {
            let f = Arc::clone(&f);
            Box::pin(async move { f(&p) })
        });
    }

    /// Registers an asynchronous method (one that talks to a database).
    pub fn register_async(
        &self,
        name: &str,
        usage: &str,
        help: &str,
        f: impl Fn(Vec<Value>) -> RpcFuture + Send + Sync + 'static,
    ) {
        self.methods.write().insert(
            name.to_string(),
            Entry {
                usage: usage.to_string(),
                help: help.to_string(),
                f: Arc::new(f),
            },
        );
    }

    /// Calls a method.
    pub fn call(&self, name: &str, params: Vec<Value>) -> RpcFuture {
        let f = self.methods.read().get(name).map(|e| Arc::clone(&e.f));
        match f {
            Some(f) => f(params),
            None => {
                let e = RpcError::not_found(name);
                Box::pin(async move { Err(e) })
            }
        }
    }

    /// Whether a method exists.
    pub fn contains(&self, name: &str) -> bool {
        self.methods.read().contains_key(name)
    }
}

/// Reads positional param `i` as a string, or says which one is missing.
pub fn param_str<'a>(p: &'a [Value], i: usize, name: &str) -> Result<&'a str, RpcError> {
    match p.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(RpcError::invalid_params(format!(
            "parameter {} ({name}) must be a string, got {other}",
            i + 1
        ))),
        None => Err(RpcError::invalid_params(format!(
            "missing parameter {} ({name})",
            i + 1
        ))),
    }
}

/// Reads optional positional param `i` as a string.
pub fn param_opt_str(p: &[Value], i: usize) -> Option<&str> {
    p.get(i).and_then(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_method_is_called_with_positional_params_and_unknown_methods_say_so() {
        let r = RpcRegistry::new();
        r.register("echo.first", "X", "echo", |p| {
            Ok(Value::String(param_str(p, 0, "X")?.to_string()))
        });
        let rt = tokio_free_block_on(r.call("echo.first", vec![Value::String("a".into())]));
        assert_eq!(rt, Ok(Value::String("a".into())));
        let e = tokio_free_block_on(r.call("nope", vec![])).unwrap_err();
        assert_eq!(e.code, -32601);
        let e = tokio_free_block_on(r.call("echo.first", vec![])).unwrap_err();
        assert!(e.message.contains("missing parameter 1 (X)"));
        assert!(r.contains("rpc.list"));
    }

    fn tokio_free_block_on(f: RpcFuture) -> RpcResult {
        // These futures never wait on I/O; poll once with a no-op waker.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = f;
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("pending"),
        }
    }
}
