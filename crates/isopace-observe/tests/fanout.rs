//! `FanoutObserver`: tracing plus metrics from one observer.

use std::{io, sync::Arc};

use isopace_observe::{
    FanoutObserver, MetricsRegistry, NopObserver, Observer, TracingObserver, attr,
};

use crate::util::Capture;

#[test]
fn spans_counters_and_histograms_reach_every_child() {
    let metrics = MetricsRegistry::new();
    let obs = FanoutObserver::new(vec![
        Arc::new(TracingObserver::new()),
        Arc::new(metrics.clone()),
    ]);
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        let mut span = obs.start_span("deploy", &[attr("file", "edge.json")]);
        obs.counter("deploys").add(1, &[attr("outcome", "ok")]);
        obs.histogram("descriptor_bytes").observe(128.0, &[]);
        span.set_attr(attr("attempt", 2_i64));
        span.set_error(&io::Error::other("bad port"));
        span.end();
    });
    let log = capture.text();
    assert!(
        log.contains("span started") && log.contains("name=deploy"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("ERROR") && l.contains("error=bad port")),
        "{log}"
    );
    assert!(
        log.contains(r#"name=deploys kind="counter" delta=1 attrs=outcome=ok"#),
        "{log}"
    );
    assert!(
        log.contains(r#"name=descriptor_bytes kind="histogram" value=128"#),
        "{log}"
    );
    let text = metrics.render();
    assert!(
        text.contains("\ndeploys_total{outcome=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("\ndescriptor_bytes_count 1\n"), "{text}");
    assert!(
        text.contains("\ndeploy_duration_seconds_count{file=\"edge.json\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\ndeploy_errors_total{file=\"edge.json\"} 1\n"),
        "{text}"
    );
}

#[test]
fn inert_children_are_skipped() {
    let nothing = FanoutObserver::new(vec![Arc::new(NopObserver), Arc::new(NopObserver)]);
    assert!(!nothing.start_span("s", &[]).is_recording());
    assert!(!nothing.counter("c").is_recording());
    assert!(!nothing.histogram("h").is_recording());
    assert!(!nothing.gauge("g").is_recording());

    let metrics = MetricsRegistry::new();
    let one = FanoutObserver::default()
        .with(NopObserver)
        .with(metrics.clone());
    assert_eq!(one.children().len(), 2);
    one.counter("c").add(4, &[]);
    one.gauge("g").set(1.5, &[]);
    let text = metrics.render();
    assert!(text.contains("\nc_total 4\n"), "{text}");
    assert!(text.contains("\ng 1.5\n"), "{text}");
}

#[test]
fn gauges_reach_every_child() {
    let first = MetricsRegistry::new();
    let second = MetricsRegistry::new();
    let obs = FanoutObserver::new(vec![
        Arc::new(TracingObserver::new()),
        Arc::new(first.clone()),
        Arc::new(second.clone()),
    ]);
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        let active = obs.gauge("active");
        active.set(3.0, &[attr("component", "edge")]);
        active.add(-1.0, &[attr("component", "edge")]);
        active.set(1.0, &[attr("component", "core")]);
        active.remove(&[attr("component", "core")]);
    });
    for metrics in [&first, &second] {
        assert_eq!(
            metrics.render(),
            "# TYPE active gauge\nactive{component=\"edge\"} 2\n"
        );
    }
    let log = capture.text();
    assert_eq!(
        log.matches(r#"name=active kind="gauge""#).count(),
        4,
        "{log}"
    );
    assert!(log.contains("removed=true attrs=component=core"), "{log}");
}
