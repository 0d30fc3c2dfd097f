//! The admin endpoint's routes: `/healthz`, `/readyz`, `/metrics`, `/components` and
//! `/deployments`, with the bearer-token check.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use isopace_deploy::FileState;
use isopace_host::error_chain;
use serde_json::{Value, json};

use crate::Runtime;

/// What every request handler sees.
pub(super) struct AdminState {
    pub(super) runtime: Runtime,
    pub(super) token: Option<String>,
}

/// The endpoint's routes over `state`.
pub(super) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/components", get(components))
        .route("/deployments", get(deployments))
        .with_state(state)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Compares in time independent of where the first difference is.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The 401 response when a token is configured and the request does not carry it.
fn denied(state: &AdminState, headers: &HeaderMap) -> Option<Response> {
    let token = state.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same_secret(given.as_bytes(), token.as_bytes()) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response(),
        ),
    }
}

fn shutting_down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the host is shutting down\n",
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let Some(host) = state.runtime.host.upgrade() else {
        return shutting_down();
    };
    let deployer = &state.runtime.deployer;
    let initial = deployer.initial_scan_done();
    let not_running: Vec<Value> = host
        .status()
        .into_iter()
        .filter(|s| s.state != isopace_host::State::Running)
        .map(|s| json!({ "name": s.name, "state": s.state.as_str(), "last_error": s.last_error }))
        .collect();
    let failed_files: Vec<Value> = deployer
        .status()
        .into_iter()
        .filter(|f| f.state == FileState::Failed)
        .map(|f| json!({ "file": f.file.display().to_string(), "error": f.error.as_ref().map(|e| error_chain(e)) }))
        .collect();
    let ready = initial && not_running.is_empty();
    let body = json!({
        "ready": ready,
        "initial_deploy_done": initial,
        "not_running": not_running,
        "failed_files": failed_files,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    // The host keeps `isopace_component_state` in its observer, which the registry backs.
    let text = state.runtime.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn components(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let Some(host) = state.runtime.host.upgrade() else {
        return shutting_down();
    };
    let files: HashMap<String, (String, Option<String>)> = state
        .runtime
        .deployer
        .status()
        .into_iter()
        .filter_map(|f| Some((f.name?, (f.file.display().to_string(), f.type_name))))
        .collect();
    let body: Vec<Value> = host
        .status()
        .into_iter()
        .map(|s| {
            let (file, type_name) = match files.get(&s.name) {
                Some((file, type_name)) => (Some(file.clone()), type_name.clone()),
                None => (None, None),
            };
            json!({
                "name": s.name,
                "type": type_name,
                "file": file,
                "state": s.state.as_str(),
                "since": timestamp(s.since),
                "last_error": s.last_error,
                "details": state.runtime.details.get(&s.name),
            })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(body))
}

async fn deployments(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let body: Vec<Value> = state
        .runtime
        .deployer
        .status()
        .into_iter()
        .map(|f| {
            json!({
                "file": f.file.display().to_string(),
                "name": f.name,
                "state": f.state.as_str(),
                "error": f.error.as_ref().map(|e| error_chain(e)),
                "applied_at": timestamp(f.applied_at),
            })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cres"));
        assert!(!same_secret(b"s3cret", b"s3cret!"));
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_232_001_234);
        assert_eq!(timestamp(at), "2025-11-27T08:26:41.234Z");
    }
}
