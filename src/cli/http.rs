//! The agent's HTTP port (`--http`): `/health`, `/ready`, `/status` (JSON), `/metrics`
//! (Prometheus text) and `/` (HTML).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ekka::{ApiError, ErrorCode, Node, Status};

use crate::cli::output;

/// Binds the HTTP port (`invalid_config` when it cannot).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidConfig,
            format!("http: cannot bind {addr}: {e}"),
        )
    })
}

/// Serves the HTTP endpoints of `node` on `listener`; returns the bound address.
pub fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
) -> Result<std::net::SocketAddr, ApiError> {
    let bound = listener
        .local_addr()
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(node);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "http server stopped");
        }
    });
    Ok(bound)
}

fn unavailable(e: ApiError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{}: {}\n", e.code, e.message),
    )
        .into_response()
}

/// 503 naming the fault once the node's storage has failed.
fn storage_fault(node: &Node) -> Option<Response> {
    let f = node.fault()?;
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage fault: {f}\n"),
        )
            .into_response(),
    )
}

/// Healthy unless the node's storage failed.
async fn health(State(node): State<Node>) -> Response {
    storage_fault(&node).unwrap_or_else(|| "ok\n".into_response())
}

/// Ready when the cluster has a leader and this node's storage works.
async fn ready(State(node): State<Node>) -> Response {
    if let Some(r) = storage_fault(&node) {
        return r;
    }
    match node.status().await {
        Ok(s) if s.leader.is_some() => "ready\n".into_response(),
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "no leader\n").into_response(),
        Err(e) => unavailable(e),
    }
}

async fn status(State(node): State<Node>) -> Response {
    match node.status().await {
        Ok(s) => Json(output::status_json(&s)).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn metrics(State(node): State<Node>) -> Response {
    let s = match node.status().await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let count = |f: &dyn Fn(&ekka::Member) -> bool| s.members.iter().filter(|m| f(m)).count();
    let body = format!(
        "# TYPE ekka_members gauge\nekka_members {}\n\
         # TYPE ekka_members_up gauge\nekka_members_up {}\n\
         # TYPE ekka_members_down gauge\nekka_members_down {}\n\
         # TYPE ekka_voters gauge\nekka_voters {}\n\
         # TYPE ekka_has_leader gauge\nekka_has_leader {}\n\
         # TYPE ekka_raft_term gauge\nekka_raft_term {}\n\
         # TYPE ekka_revision counter\nekka_revision {}\n\
         # TYPE ekka_storage_fault gauge\nekka_storage_fault {}\n",
        s.members.len(),
        count(&|m| m.status == Status::Up),
        count(&|m| m.status == Status::Down),
        count(&|m| m.role == ekka::Role::Voter),
        u8::from(s.leader.is_some()),
        s.term,
        s.revision,
        u8::from(node.fault().is_some()),
    );
    body.into_response()
}

async fn page(State(node): State<Node>) -> Response {
    match node.status().await {
        Ok(s) => {
            let table = output::status_table(&s)
                .replace('&', "&amp;")
                .replace('<', "&lt;");
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>ekka {}</title>\
                 <meta http-equiv=\"refresh\" content=\"2\"></head><body><h1>ekka</h1>\
                 <pre>{table}</pre><p><a href=\"/status\">JSON</a> · \
                 <a href=\"/metrics\">metrics</a></p></body></html>",
                s.node_name
            ))
            .into_response()
        }
        Err(e) => unavailable(e),
    }
}
