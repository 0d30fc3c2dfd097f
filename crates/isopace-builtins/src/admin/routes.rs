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
use isopace_deploy::{DeployerHandle, DescriptorError, ErrorKind, FileState, FileStatus};
use isopace_host::{ComponentStatus, WeakHost, error_chain};
use isopace_observe::MetricsRegistry;
use serde_json::{Value, json};

use super::Readiness;

/// What every request handler sees.
pub(super) struct AdminState {
    pub(super) host: WeakHost,
    pub(super) deployer: Option<DeployerHandle>,
    pub(super) metrics: Option<MetricsRegistry>,
    pub(super) readiness: Readiness,
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

/// The 404 of an endpoint whose source this host does not have.
fn absent(what: &str) -> Response {
    json_response(StatusCode::NOT_FOUND, &json!({ "error": what }))
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

/// What a request's `Authorization` says about the configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No token is configured, or the request does not carry it.
    Without,
    /// A token is configured and the request carries it.
    With,
    /// A token is configured and the request has more than one `Authorization` header:
    /// which one counts would be a guess, so it is refused.
    Ambiguous,
}

/// The credentials of a `Bearer` authorization; the scheme is matched case-insensitively
/// (RFC 7235), the token exactly.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

fn auth(state: &AdminState, headers: &HeaderMap) -> Auth {
    let Some(token) = state.token.as_ref() else {
        return Auth::Without;
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        return Auth::Ambiguous;
    }
    let carried = first
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes()));
    if carried { Auth::With } else { Auth::Without }
}

fn ambiguous() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "more than one Authorization header\n",
    )
        .into_response()
}

/// The response that refuses a request to a guarded route, if it is refused: 401 when a
/// token is configured and the request does not carry it, 400 when it is ambiguous.
fn denied(state: &AdminState, headers: &HeaderMap) -> Option<Response> {
    match auth(state, headers) {
        Auth::With => None,
        Auth::Without if state.token.is_none() => None,
        Auth::Without => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response(),
        ),
        Auth::Ambiguous => Some(ambiguous()),
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

/// 200 when ready, 503 otherwise (see [`Readiness`]). Error texts only go to a request
/// that carries the configured token: a probe needs only which components hold readiness
/// back, by name and state.
async fn readyz(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let errors = match auth(&state, &headers) {
        Auth::With => true,
        Auth::Without => false,
        Auth::Ambiguous => return ambiguous(),
    };
    let Some(report) = state.readiness.check() else {
        return shutting_down();
    };
    let component = |s: &ComponentStatus| {
        let mut entry = json!({ "name": s.name, "state": s.state.as_str() });
        if errors {
            entry["last_error"] = json!(s.last_error);
        }
        entry
    };
    let failed_files: Vec<Value> = report
        .failed_files
        .iter()
        .map(|f| {
            let mut entry = json!({ "file": f.file.display().to_string() });
            if errors {
                entry["error"] = json!(f.error.as_ref().map(|e| error_chain(e)));
            }
            entry
        })
        .collect();
    let mut body = json!({
        "ready": report.ready,
        "initial_deploy_done": report.initial_deploy_done,
        "not_ready": report.not_ready.iter().map(component).collect::<Vec<_>>(),
        "not_running": report.not_running.iter().map(component).collect::<Vec<_>>(),
        "failed_files": failed_files,
    });
    if let Some(deployer) = &state.deployer {
        let mut dir = json!({
            "path": deployer.dir().display().to_string(),
            "readable": report.scan_error.is_none(),
        });
        if errors && let Some(error) = &report.scan_error {
            dir["error"] = json!(error_chain(&**error));
        }
        body["deploy_dir"] = dir;
    }
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let Some(metrics) = &state.metrics else {
        return absent("no metrics registry: the daemon provides none to this host");
    };
    // The host keeps `isopace_component_state` in its observer, which the registry backs.
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// The file and type of each component a descriptor file runs, by name. When two files
/// declare a name, the one that runs it wins: the one deployed, or the failed one that keeps
/// its previous version running, never one refused because another file or the host
/// already has the name.
fn files_by_name(deployer: &DeployerHandle) -> HashMap<String, FileStatus> {
    let mut files: HashMap<String, FileStatus> = HashMap::new();
    for file in deployer.status() {
        let runs = match (file.state, &file.error) {
            (FileState::Deployed, _) => true,
            (FileState::Failed, Some(error)) => !name_taken(error),
            (FileState::Failed, None) | (FileState::Disabled, _) => false,
        };
        let Some(name) = file.name.clone().filter(|_| runs) else {
            continue;
        };
        let better = files
            .get(&name)
            .is_none_or(|kept| kept.state != FileState::Deployed);
        if better {
            files.insert(name, file);
        }
    }
    files
}

/// Whether `error` refused a file because its name was taken: by an earlier file, or by a
/// component the host has from elsewhere (the deployer itself, one registered in code).
fn name_taken(error: &DescriptorError) -> bool {
    if matches!(error.kind(), ErrorKind::DuplicateName { .. }) {
        return true;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        if matches!(
            error.downcast_ref::<isopace_host::Error>(),
            Some(isopace_host::Error::Duplicate(_))
        ) {
            return true;
        }
        cause = error.source();
    }
    false
}

/// One component as `/components` shows it: the host's status, plus the file and type of
/// the descriptor that runs it.
fn component_entry(s: ComponentStatus, file: Option<&FileStatus>) -> Value {
    // Earlier versions still finishing their connections after a redeploy.
    let draining_until = s.draining.iter().map(|d| d.until).max().map(timestamp);
    let draining_connections: u64 = s
        .draining
        .iter()
        .filter_map(|d| d.details.as_ref()?.get("connections")?.as_u64())
        .sum();
    json!({
        "name": s.name,
        "type": file.and_then(|f| f.type_name.clone()),
        "file": file.map(|f| f.file.display().to_string()),
        "state": s.state.as_str(),
        "since": timestamp(s.since),
        "ready": s.ready,
        "health": s.health.as_str(),
        "health_reason": s.health.reason(),
        "critical": s.critical,
        "restarts": s.restarts,
        "last_error": s.last_error,
        "last_error_at": s.last_error_at.map(timestamp),
        "next_try": s.next_try.map(timestamp),
        "draining_until": draining_until,
        "draining_connections": draining_until.is_some().then_some(draining_connections),
        "details": s.details,
    })
}

async fn components(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let Some(host) = state.host.upgrade() else {
        return shutting_down();
    };
    let files = state
        .deployer
        .as_ref()
        .map(files_by_name)
        .unwrap_or_default();
    let body: Vec<Value> = host
        .status()
        .into_iter()
        .map(|s| {
            let file = files.get(&s.name);
            component_entry(s, file)
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(body))
}

async fn deployments(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = denied(&state, &headers) {
        return denied;
    }
    let Some(deployer) = &state.deployer else {
        return absent("no deployer: this host deploys no descriptor files");
    };
    let files: Vec<Value> = deployer
        .status()
        .into_iter()
        .map(|f| {
            json!({
                "file": f.file.display().to_string(),
                "name": f.name,
                "type": f.type_name,
                "state": f.state.as_str(),
                "error": f.error.as_ref().map(|e| error_chain(e)),
                "applied_at": timestamp(f.applied_at),
            })
        })
        .collect();
    match deployer.scan_error() {
        None => json_response(StatusCode::OK, &Value::Array(files)),
        // Scans fail as a whole (the directory is gone or cannot be listed): say so, with
        // the statuses of the last scan that worked, which still describe what runs.
        Some(error) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "error": error_chain(&*error),
                "dir": deployer.dir().display().to_string(),
                "files": files,
            }),
        ),
    }
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
    fn the_bearer_scheme_is_matched_in_any_case_and_the_token_exactly() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR  s3cret",
        ] {
            assert_eq!(bearer(value), Some("s3cret"), "{value}");
        }
        for value in ["Basic s3cret", "Bearers3cret", "Bearer", "s3cret"] {
            assert_eq!(bearer(value), None, "{value}");
        }
        assert_eq!(bearer("Bearer S3CRET"), Some("S3CRET"));
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_232_001_234);
        assert_eq!(timestamp(at), "2025-11-27T08:26:41.234Z");
    }
}
