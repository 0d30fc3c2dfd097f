//! Spans: names, attributes, error status, and parent/child across threads and tasks.

use std::{error::Error as StdError, fmt, io, sync::Arc};

use isopace_observe::{Observer, attr};
use isopace_otel::{OtelObserver, in_span};
use opentelemetry::{
    Value,
    trace::{SpanId, Status},
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

use crate::util::{Telemetry, attribute};

#[test]
fn span_has_its_name_and_typed_attributes() {
    let t = Telemetry::new();
    let mut span = t.observer.start_span(
        "authorize",
        &[
            attr("mti", "0200"),
            attr("amount", -12_i64),
            attr("bytes", 512_u64),
            attr("ratio", 0.25_f64),
        ],
    );
    span.set_attr(attr("approved", true));
    span.set_attr(attr("issuer", String::from("acme")));
    span.end();

    let exported = t.span("authorize");
    assert_eq!(attribute(&exported, "mti"), Some(&Value::from("0200")));
    assert_eq!(attribute(&exported, "amount"), Some(&Value::I64(-12)));
    assert_eq!(attribute(&exported, "bytes"), Some(&Value::I64(512)));
    assert_eq!(attribute(&exported, "ratio"), Some(&Value::F64(0.25)));
    assert_eq!(attribute(&exported, "approved"), Some(&Value::Bool(true)));
    assert_eq!(attribute(&exported, "issuer"), Some(&Value::from("acme")));
    assert_eq!(exported.status, Status::Unset);
    assert_eq!(
        exported.instrumentation_scope.name(),
        isopace_otel::SCOPE_NAME
    );
}

#[test]
fn dropping_a_span_ends_it() {
    let t = Telemetry::new();
    {
        let _span = t.observer.start_span("scoped", &[]);
        assert!(t.spans().is_empty(), "not exported before it ends");
    }
    assert_eq!(t.span("scoped").name, "scoped");
}

#[derive(Debug)]
struct UpstreamError(io::Error);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream 10.0.0.7:7001 failed")
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn set_error_sets_error_status_with_message_and_records_an_exception() {
    let t = Telemetry::new();
    let mut span = t.observer.start_span("forward", &[]);
    let error = UpstreamError(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    span.set_error(&error);
    span.end();

    let exported = t.span("forward");
    assert_eq!(
        exported.status,
        Status::error("upstream 10.0.0.7:7001 failed: connection refused")
    );
    let exception = exported
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("an exception event");
    let message = exception
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "exception.message")
        .expect("exception.message");
    assert_eq!(message.value, Value::from("upstream 10.0.0.7:7001 failed"));
}

#[test]
fn the_last_error_sets_the_status() {
    let t = Telemetry::new();
    let mut span = t.observer.start_span("retry", &[]);
    span.set_error(&io::Error::other("z first"));
    span.set_error(&io::Error::other("a second"));
    span.end();

    let exported = t.span("retry");
    assert_eq!(exported.status, Status::error("a second"));
    let exceptions = exported.events.iter().filter(|e| e.name == "exception");
    assert_eq!(exceptions.count(), 2, "every error is recorded");
}

#[test]
fn a_span_without_a_current_context_starts_a_trace() {
    let t = Telemetry::new();
    let (outer, _cx) = t.observer.start_span_with_context("outer", &[]);
    // Holding a span does not make it current: this one is a root, not a child.
    let other = t.observer.start_span("other", &[]);
    other.end();
    outer.end();

    let outer = t.span("outer");
    let other = t.span("other");
    assert_eq!(other.parent_span_id, SpanId::INVALID);
    assert_ne!(other.span_context.trace_id(), outer.span_context.trace_id());
}

#[test]
fn a_span_started_in_an_attached_context_is_a_child() {
    let t = Telemetry::new();
    let (parent, cx) = t.observer.start_span_with_context("parent", &[]);
    {
        let _guard = cx.attach();
        let child = t.observer.start_span("child", &[]);
        child.end();
    }
    parent.end();

    let parent = t.span("parent");
    let child = t.span("child");
    assert_eq!(child.parent_span_id, parent.span_context.span_id());
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_started_after_an_await_in_another_task_has_its_parent() {
    let t = Telemetry::new();
    let otel = t.observer.clone();
    let obs: Arc<dyn Observer> = Arc::new(t.observer.clone());
    let (parent, cx) = otel.start_span_with_context("handle", &[attr("peer", "a")]);

    let worker = Arc::clone(&obs);
    let task = tokio::spawn(in_span(&cx, async move {
        // Suspend first, so the child starts on a later poll, possibly on another thread.
        tokio::task::yield_now().await;
        tokio::spawn(async {}).await.expect("inner task");
        let (child, child_cx) = otel.start_span_with_context("lookup", &[]);
        // Code that only sees the facade nests the same way, one level further down.
        in_span(&child_cx, async {
            tokio::task::yield_now().await;
            worker.start_span("decode", &[]).end();
        })
        .await;
        // Back in the outer context: a sibling of `lookup`, not its child.
        worker.start_span("reply", &[]).end();
        child.end();
    }));
    task.await.expect("task");
    // A span started in the test's own task, outside `in_span`, is not a child.
    obs.start_span("unrelated", &[]).end();
    parent.end();

    let parent = t.span("handle");
    let lookup = t.span("lookup");
    let decode = t.span("decode");
    let reply = t.span("reply");
    let unrelated = t.span("unrelated");
    assert_eq!(lookup.parent_span_id, parent.span_context.span_id());
    assert_eq!(
        lookup.span_context.trace_id(),
        parent.span_context.trace_id()
    );
    assert_eq!(decode.parent_span_id, lookup.span_context.span_id());
    assert_eq!(
        decode.span_context.trace_id(),
        parent.span_context.trace_id()
    );
    assert_eq!(reply.parent_span_id, parent.span_context.span_id());
    assert_eq!(unrelated.parent_span_id, SpanId::INVALID);
}

#[test]
fn global_uses_the_installed_providers() {
    // The only test that touches the global providers, so it cannot disturb the others.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let obs = OtelObserver::global();
    obs.start_span("via-global", &[attr("k", "v")]).end();
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("spans");
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "via-global");
    assert_eq!(
        spans[0].instrumentation_scope.name(),
        isopace_otel::SCOPE_NAME
    );
}
