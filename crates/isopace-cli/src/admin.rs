//! The `admin` component type: health, readiness, metrics and status over HTTP.

use std::{collections::HashMap, fmt::Write as _, net::SocketAddr, sync::Arc, time::SystemTime};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use isopace_deploy::FileState;
use isopace_host::{BoxError, Component, Env, async_trait};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::Runtime;

/// The `config` of an `admin` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to listen on (default `127.0.0.1:9090`: loopback unless asked otherwise).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// When set, `/components` and `/deployments` require `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Serves `/healthz`, `/readyz`, `/metrics`, `/components` and `/deployments`.
pub struct Admin {
    name: String,
    config: AdminConfig,
    runtime: Runtime,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

impl Admin {
    /// An admin endpoint named `name` over the daemon's runtime.
    pub fn new(name: &str, config: AdminConfig, runtime: Runtime) -> Self {
        Admin {
            name: name.to_owned(),
            config,
            runtime,
            server: None,
        }
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> Value {
        json!({ "listen": "127.0.0.1:9090" })
    }
}

struct AdminState {
    runtime: Runtime,
    token: Option<String>,
}

#[async_trait]
impl Component for Admin {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.config.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AdminState {
            runtime: self.runtime.clone(),
            token: self.config.token.clone(),
        });
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/components", get(components))
            .route("/deployments", get(deployments))
            .with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = env.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "admin endpoint listening");
        self.server = Some((stop, server));
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        // Stop accepting, then let in-flight requests finish; the host bounds how long.
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            server.await??;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("name", &self.name)
            .field("listen", &self.config.listen)
            .field("token", &self.config.token.as_ref().map(|_| "***"))
            .finish()
    }
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
        .map(|f| json!({ "file": f.file.display().to_string(), "error": f.error }))
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
    let mut text = state.runtime.metrics.render();
    if let Some(host) = state.runtime.host.upgrade() {
        text.push_str(
            "# HELP isopace_component_state Lifecycle state of each component: 1 for its current state.\n\
             # TYPE isopace_component_state gauge\n",
        );
        for status in host.status() {
            for s in isopace_host::State::ALL {
                let _ = writeln!(
                    text,
                    "isopace_component_state{{component=\"{}\",state=\"{}\"}} {}",
                    escape_label(&status.name),
                    s.as_str(),
                    u8::from(status.state == s)
                );
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
                "error": f.error,
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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
