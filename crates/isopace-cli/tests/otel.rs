//! The `otel` feature end to end: the real `isopace` binary exports over OTLP/HTTP to a
//! receiver in this test, which decodes every protobuf body it gets.
//!
//! Built only with `--features otel` (`required-features` in Cargo.toml).

mod common;

use std::{
    fs,
    net::SocketAddr,
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::Daemon;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
};
use prost::Message;
use serde_json::json;
use tokio::{net::TcpListener, runtime::Runtime};

/// One request the receiver got, decoded by its path.
#[derive(Debug)]
enum Export {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// An OTLP/HTTP receiver on an ephemeral loopback port: each request's decoded body (or why
/// it could not be decoded) arrives on a channel.
struct Receiver {
    addr: SocketAddr,
    received: mpsc::Receiver<Result<Export, String>>,
    _runtime: Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, received) = mpsc::channel();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sender = sender.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let _ = sender.send(decode(request).await);
                        // An empty body is an `Export*ServiceResponse` with nothing rejected.
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Receiver {
            addr,
            received,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes what arrives until `wanted` finds what it looks for, for at most 15 s.
    fn wait_for<T>(&self, what: &str, mut wanted: impl FnMut(&Export) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.received.recv_timeout(left) {
                Ok(Ok(export)) => {
                    if let Some(found) = wanted(&export) {
                        return found;
                    }
                }
                Ok(Err(problem)) => panic!("the receiver got a bad request: {problem}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

async fn decode(request: Request<Incoming>) -> Result<Export, String> {
    let path = request.uri().path().to_owned();
    let content_type = request.headers().get("content-type").cloned();
    if content_type.as_ref().and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return Err(format!("{path}: content-type {content_type:?}"));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{path}: {e}"))?
        .to_bytes();
    match path.as_str() {
        "/v1/traces" => ExportTraceServiceRequest::decode(body).map(Export::Traces),
        "/v1/metrics" => ExportMetricsServiceRequest::decode(body).map(Export::Metrics),
        other => return Err(format!("unexpected path {other}")),
    }
    .map_err(|e| format!("{path}: {e}"))
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref() {
            Some(AnyValue {
                value: Some(Value::StringValue(s)),
            }) => Some(s.as_str()),
            _ => None,
        })
}

fn service_name(resource: Option<&Resource>) -> Option<&str> {
    text(&resource?.attributes, "service.name")
}

/// The `(service.name, phase)` of the `isopace_lifecycle` spans of component `pulse` in `traces`.
fn pulse_lifecycle(traces: &ExportTraceServiceRequest) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for resource in &traces.resource_spans {
        let service = service_name(resource.resource.as_ref()).unwrap_or_default();
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            if span.name == "isopace_lifecycle"
                && text(&span.attributes, "component") == Some("pulse")
            {
                let phase = text(&span.attributes, "phase").unwrap_or_default();
                found.push((service.to_owned(), phase.to_owned()));
            }
        }
    }
    found
}

/// A deploy dir with one heartbeat, `pulse`, ticking every 50 ms.
fn deploy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pulse = json!({
        "name": "pulse", "type": "heartbeat",
        "config": { "interval": "50ms", "message": "pulse" }
    });
    fs::write(dir.path().join("10_pulse.json"), pulse.to_string()).unwrap();
    dir
}

/// Only the `OTEL_*` variables a test sets reach the daemon.
fn without_otel_variables(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
}

fn start(dir: &tempfile::TempDir, extra: &[&str], env: &[(&str, String)]) -> Daemon {
    let env: Vec<(&str, String)> = env.to_vec();
    Daemon::start_with(dir.path(), extra, &[], |cmd| {
        without_otel_variables(cmd);
        cmd.envs(env);
    })
}

#[test]
fn lifecycle_spans_and_metrics_reach_an_otlp_receiver() {
    let receiver = Receiver::start();
    let dir = deploy_dir();
    let mut daemon = start(
        &dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            // Metrics every 100 ms, while the daemon runs.
            ("OTEL_METRIC_EXPORT_INTERVAL", "100".into()),
            // Spans never on schedule in this test: they can only come from the shutdown flush.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
        ],
    );

    let (service, ticks) = receiver.wait_for("the heartbeat's ticks as a metric", |export| {
        let Export::Metrics(metrics) = export else {
            return None;
        };
        metrics.resource_metrics.iter().find_map(|resource| {
            let names: Vec<&str> = resource
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .map(|m| m.name.as_str())
                .collect();
            names.contains(&"heartbeat_ticks_total").then(|| {
                let service = service_name(resource.resource.as_ref()).map(str::to_owned);
                (service, names.contains(&"isopace_lifecycle_calls_total"))
            })
        })
    });
    assert_eq!(
        service.as_deref(),
        Some("isopace"),
        "the default service name"
    );
    assert!(
        ticks,
        "the host's lifecycle calls are exported with the ticks"
    );

    daemon.signal("TERM");
    let status = daemon.wait();
    assert!(status.success(), "{status:?}\n{:#?}", daemon.log());

    // Everything the daemon sent arrived before it exited, so the spans are queued by now.
    let mut phases = Vec::new();
    while !phases.contains(&"stop".to_owned()) {
        let spans = receiver.wait_for("pulse's lifecycle spans", |export| match export {
            Export::Traces(traces) => Some(pulse_lifecycle(traces)),
            Export::Metrics(_) => None,
        });
        for (service, phase) in spans {
            assert_eq!(service, "isopace");
            phases.push(phase);
        }
    }
    assert_eq!(phases, ["start", "stop"], "{:#?}", daemon.log());
}

#[test]
fn a_bad_variable_stops_the_daemon_with_its_name_and_without_its_value() {
    let dir = deploy_dir();
    let mut daemon = start(
        &dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9".into()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cret%zz".into(),
            ),
        ],
    );
    let status = daemon.wait();
    assert_eq!(status.code(), Some(78), "{:#?}", daemon.log());
    let log = daemon.log().join("\n");
    assert!(
        log.contains("OTEL_EXPORTER_OTLP_HEADERS: entry 1: bad %-escape"),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_one_debug_line_says_so() {
    let dir = deploy_dir();
    let mut daemon = start(&dir, &["--log-level", "debug"], &[]);
    common::wait_until("the initial deploy", || {
        daemon.log_has("ready: initial deploy finished")
    });
    daemon.signal("TERM");
    assert!(daemon.wait().success(), "{:#?}", daemon.log());
    let log = daemon.log();
    let otlp: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("OTLP") || l.contains("opentelemetry"))
        .collect();
    assert_eq!(otlp.len(), 1, "{otlp:#?}");
    assert!(
        otlp[0].contains("DEBUG") && otlp[0].contains("no OTLP export"),
        "{otlp:#?}"
    );
}
