//! Admin interface over HTTP: JSON-RPC 2.0 at `POST /RPC` (Kamailio's `jsonrpcs` path),
//! Prometheus text at `GET /metrics` (Kamailio's `xhttp_prom`), and a status page at `GET /`.
//!
//! The admin server only dispatches: the methods and the metrics come from the registries the
//! modules filled in ([`geosip_core::rpc::RpcRegistry`], [`geosip_core::metrics::Registry`]).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use geosip_core::metrics::Registry;
use geosip_core::rpc::RpcRegistry;
use serde_json::{Value, json};

/// What the admin server serves.
#[derive(Clone)]
pub struct Admin {
    /// RPC methods.
    pub rpc: RpcRegistry,
    /// Metrics.
    pub metrics: Registry,
}

/// Largest JSON-RPC request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Builds the router (exposed for tests).
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/RPC", post(rpc))
        .route("/rpc", post(rpc))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(admin)
}

/// Binds and serves until `shutdown` resolves. Returns the bound address through `bound`
/// before serving.
pub async fn serve(
    admin: Admin,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn metrics(State(a): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        a.metrics.render_prometheus(),
    )
        .into_response()
}

async fn status_page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

async fn rpc(State(a): State<Admin>, body: axum::body::Bytes) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(json!({
                "jsonrpc": "2.0", "id": null,
                "error": {"code": -32700, "message": format!("parse error: {e}")}
            }));
        }
    };
    match req {
        Value::Array(batch) => {
            if batch.is_empty() {
                return json_response(error_obj(Value::Null, -32600, "empty batch"));
            }
            let mut out = Vec::with_capacity(batch.len());
            for r in batch {
                if let Some(v) = call_one(&a, r).await {
                    out.push(v);
                }
            }
            if out.is_empty() {
                // JSON-RPC 2.0 §6: a batch of notifications gets nothing back, not `[]`.
                return StatusCode::NO_CONTENT.into_response();
            }
            json_response(Value::Array(out))
        }
        r => match call_one(&a, r).await {
            Some(v) => json_response(v),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

fn error_obj(id: Value, code: i64, msg: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": msg}})
}

/// Runs one request; `None` for a notification (no id).
async fn call_one(a: &Admin, r: Value) -> Option<Value> {
    let Value::Object(o) = r else {
        return Some(error_obj(Value::Null, -32600, "request must be an object"));
    };
    let id = o.get("id").cloned();
    let Some(method) = o.get("method").and_then(|m| m.as_str()) else {
        return Some(error_obj(
            id.unwrap_or(Value::Null),
            -32600,
            "missing method",
        ));
    };
    let params = match o.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(v)) => v.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        Some(v) => vec![v.clone()],
    };
    let res = a.rpc.call(method, params).await;
    let id = id?;
    Some(match res {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
        }
    })
}

fn json_response(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}
