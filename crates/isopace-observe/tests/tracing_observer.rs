//! `TracingObserver`: spans and measurements as tracing output, captured and asserted.

use std::{error::Error as StdError, fmt};

use isopace_observe::{LogOptions, Observer, TracingObserver, attr};
use tracing::Level;

use crate::util::Capture;

fn lines_with<'t>(text: &'t str, needle: &str) -> Vec<&'t str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_span_logs_its_start_and_end_at_debug_with_name_and_attributes() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        let mut span = TracingObserver::new().start_span("authorize", &[attr("mti", "0200")]);
        span.set_attr(attr("approved", true));
        span.end();
    });
    let text = capture.text();
    let started = lines_with(&text, "span started");
    assert_eq!(started.len(), 1, "{text}");
    assert!(started[0].starts_with("DEBUG"), "{text}");
    assert!(started[0].contains("isopace::span"), "{text}");
    assert!(started[0].contains("name=authorize"), "{text}");
    assert!(started[0].contains("attrs=mti=0200"), "{text}");
    let ended = lines_with(&text, "span ended");
    assert_eq!(ended.len(), 1, "{text}");
    assert!(ended[0].starts_with("DEBUG"), "{text}");
    assert!(ended[0].contains("attrs=mti=0200 approved=true"), "{text}");
    assert!(ended[0].contains("duration_ms="), "{text}");
    // The events are emitted inside the tracing span, whose fields show in the context.
    assert!(ended[0].contains("span{span.name=authorize"), "{text}");
}

#[derive(Debug)]
struct Outer(Inner);
#[derive(Debug)]
struct Inner;

impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream refused the request")
    }
}
impl StdError for Outer {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}
impl fmt::Display for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset")
    }
}
impl StdError for Inner {}

#[test]
fn a_failed_span_ends_at_error_level_with_the_error_and_its_sources() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        let mut span = TracingObserver::new().start_span("forward", &[]);
        span.set_error(&Outer(Inner));
        // Dropping ends it too, exactly once.
        drop(span);
    });
    let text = capture.text();
    let ended = lines_with(&text, "span ended");
    assert_eq!(ended.len(), 1, "{text}");
    assert!(ended[0].starts_with("ERROR"), "{text}");
    assert!(
        ended[0].contains("error=upstream refused the request"),
        "{text}"
    );
    assert!(
        ended[0].contains("error.sources=connection reset"),
        "{text}"
    );
}

#[test]
fn measurements_are_trace_events_with_name_kind_value_and_attributes() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        let obs = TracingObserver::new();
        obs.counter("requests")
            .add(3, &[attr("outcome", "ok"), attr("peer", "a b")]);
        obs.histogram("latency_seconds").observe(0.25, &[]);
    });
    let text = capture.text();
    let metrics = lines_with(&text, "isopace::metrics");
    assert_eq!(metrics.len(), 2, "{text}");
    assert!(metrics.iter().all(|l| l.starts_with("TRACE")), "{text}");
    assert!(
        metrics[0].ends_with(r#"name=requests kind="counter" delta=3 attrs=outcome=ok peer="a b""#),
        "{text}"
    );
    assert!(
        metrics[1].ends_with(r#"name=latency_seconds kind="histogram" value=0.25 attrs="#),
        "{text}"
    );
}

#[test]
fn nothing_is_logged_above_debug_for_a_successful_span() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let obs = TracingObserver::new();
        obs.start_span("quiet", &[]).end();
        obs.counter("c").add(1, &[]);
        let mut failed = obs.start_span("loud", &[]);
        failed.set_error(&Inner);
        failed.end();
    });
    let text = capture.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("ERROR") && text.contains("name=loud"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_lives_across_await_in_a_spawned_task() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let obs = TracingObserver::new();
    let span = obs.start_span("job", &[attr("id", 7_i64)]);
    let ended = tokio::spawn(async move {
        let mut span = span;
        tokio::task::yield_now().await;
        span.set_attr(attr("done", true));
        span.end();
        "ended"
    })
    .await
    .expect("the task completes");
    assert_eq!(ended, "ended");
    // The span ended on a worker thread, yet its end reaches the subscriber that saw it start.
    let text = capture.text();
    assert!(text.contains("span started"), "{text}");
    assert!(text.contains("attrs=id=7 done=true"), "{text}");
}

#[test]
fn gauge_changes_are_trace_events_with_name_kind_value_and_attributes() {
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        let active = TracingObserver::new().gauge("active");
        active.set(2.0, &[attr("component", "edge")]);
        active.add(-0.5, &[]);
        active.remove(&[attr("component", "edge")]);
    });
    let text = capture.text();
    let gauges = lines_with(&text, "isopace::metrics");
    assert_eq!(gauges.len(), 3, "{text}");
    assert!(gauges.iter().all(|l| l.starts_with("TRACE")), "{text}");
    assert!(
        gauges[0].ends_with(r#"name=active kind="gauge" value=2.0 attrs=component=edge"#),
        "{text}"
    );
    assert!(
        gauges[1].ends_with(r#"name=active kind="gauge" delta=-0.5 attrs="#),
        "{text}"
    );
    assert!(
        gauges[2].ends_with(r#"name=active kind="gauge" removed=true attrs=component=edge"#),
        "{text}"
    );
}

#[test]
fn measurements_are_silent_at_debug() {
    let capture = Capture::default();
    let (subscriber, _handle) = LogOptions {
        level: Level::DEBUG,
        ..LogOptions::default()
    }
    .build_with_writer(capture.clone())
    .expect("valid");
    tracing::subscriber::with_default(subscriber, || {
        let obs = TracingObserver::new();
        obs.counter("c").add(1, &[attr("outcome", "ok")]);
        obs.histogram("h").observe(0.5, &[]);
        let gauge = obs.gauge("active");
        gauge.set(1.0, &[]);
        gauge.add(1.0, &[]);
        gauge.remove(&[]);
        tracing::debug!(target: "app", "debug is on");
    });
    let text = capture.text();
    assert_eq!(text.lines().count(), 1, "only the marker: {text}");
    assert!(text.contains("debug is on"), "{text}");
}
