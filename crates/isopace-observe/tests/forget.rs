//! `Observer::forget`: a component's series leave the exposition, and handles cached before
//! keep working afterwards.

use std::{io, sync::Arc};

use isopace_observe::{FanoutObserver, MetricsRegistry, NopObserver, Observer, attr};

/// A registry with a little of everything for two components, `edge` and `core`, and one
/// metric without labels.
fn two_components() -> MetricsRegistry {
    let metrics = MetricsRegistry::builder()
        .default_buckets([1.0])
        .buckets("call_duration_seconds", [60.0])
        .build();
    for component in ["edge", "core"] {
        let c = [attr("component", component)];
        metrics
            .counter("requests")
            .add(1, &[c[0].clone(), attr("outcome", "ok")]);
        metrics.histogram("bytes").observe(0.5, &c);
        metrics.gauge("connections").set(2.0, &c);
        let mut span = metrics.start_span("call", &c);
        span.set_error(&io::Error::other("refused"));
        span.end();
    }
    metrics.counter("scans").add(3, &[]);
    metrics
}

#[test]
fn forget_drops_every_series_of_the_component_and_keeps_the_rest() {
    let metrics = two_components();
    let before = metrics.render();
    assert_eq!(before.matches("component=\"edge\"").count(), 11, "{before}");

    metrics.forget(&[attr("component", "edge")]);
    assert_eq!(
        metrics.render(),
        "# TYPE bytes histogram\n\
         bytes_bucket{component=\"core\",le=\"1\"} 1\n\
         bytes_bucket{component=\"core\",le=\"+Inf\"} 1\n\
         bytes_sum{component=\"core\"} 0.5\n\
         bytes_count{component=\"core\"} 1\n\
         # TYPE call_duration_seconds histogram\n\
         call_duration_seconds_bucket{component=\"core\",le=\"60\"} 1\n\
         call_duration_seconds_bucket{component=\"core\",le=\"+Inf\"} 1\n\
         call_duration_seconds_sum{component=\"core\"} {SUM}\n\
         call_duration_seconds_count{component=\"core\"} 1\n\
         # TYPE call_errors_total counter\n\
         call_errors_total{component=\"core\"} 1\n\
         # TYPE connections gauge\n\
         connections{component=\"core\"} 2\n\
         # TYPE requests_total counter\n\
         requests_total{component=\"core\",outcome=\"ok\"} 1\n\
         # TYPE scans_total counter\n\
         scans_total 3\n"
            .replace("{SUM}", &duration_sum(&metrics, "core")),
    );
}

/// The rendered `_sum` of the span duration series of `component`: a measured time, so the
/// exact-text assertions take it from the output.
fn duration_sum(metrics: &MetricsRegistry, component: &str) -> String {
    let prefix = format!("call_duration_seconds_sum{{component=\"{component}\"}} ");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no duration sum for {component}"))
}

#[test]
fn a_metric_left_without_series_disappears_instead_of_rendering_a_zero() {
    let metrics = MetricsRegistry::new();
    metrics
        .counter("restarts")
        .add(1, &[attr("component", "edge")]);
    metrics.forget(&[attr("component", "edge")]);
    assert_eq!(metrics.render(), "");
}

#[test]
fn forget_matches_label_sets_that_contain_every_given_attribute() {
    let metrics = MetricsRegistry::new();
    let requests = metrics.counter("requests");
    requests.add(1, &[attr("component", "edge"), attr("outcome", "ok")]);
    requests.add(2, &[attr("component", "edge"), attr("outcome", "error")]);
    requests.add(4, &[attr("component", "core"), attr("outcome", "ok")]);
    requests.add(8, &[attr("component", "edge")]);

    // Both attributes must match; their order and the sanitising of names do not matter.
    metrics.forget(&[attr("outcome", "ok"), attr("component", "edge")]);
    assert_eq!(
        metrics.render(),
        "# TYPE requests_total counter\n\
         requests_total{component=\"core\",outcome=\"ok\"} 4\n\
         requests_total{component=\"edge\"} 8\n\
         requests_total{component=\"edge\",outcome=\"error\"} 2\n"
    );

    // Nothing matches, and an empty set forgets nothing rather than everything.
    metrics.forget(&[attr("component", "gone")]);
    metrics.forget(&[]);
    metrics.forget(&[attr("component", "edge"), attr("zone", "a")]);
    assert_eq!(metrics.render().lines().count(), 4);

    metrics.forget(&[attr("component", "edge")]);
    assert_eq!(
        metrics.render(),
        "# TYPE requests_total counter\nrequests_total{component=\"core\",outcome=\"ok\"} 4\n"
    );
}

#[test]
fn handles_cached_before_forget_start_their_series_again_from_zero() {
    let metrics = MetricsRegistry::builder().default_buckets([1.0]).build();
    let edge = [attr("component", "edge")];
    let requests = metrics.counter("requests");
    let bytes = metrics.histogram("bytes");
    let connections = metrics.gauge("connections");
    requests.add(5, &edge);
    bytes.observe(0.5, &edge);
    connections.set(7.0, &edge);

    metrics.forget(&edge);
    assert_eq!(metrics.render(), "");

    requests.add(1, &edge);
    bytes.observe(2.0, &edge);
    connections.add(1.0, &edge);
    assert_eq!(
        metrics.render(),
        "# TYPE bytes histogram\n\
         bytes_bucket{component=\"edge\",le=\"1\"} 0\n\
         bytes_bucket{component=\"edge\",le=\"+Inf\"} 1\n\
         bytes_sum{component=\"edge\"} 2\n\
         bytes_count{component=\"edge\"} 1\n\
         # TYPE connections gauge\n\
         connections{component=\"edge\"} 1\n\
         # TYPE requests_total counter\n\
         requests_total{component=\"edge\"} 1\n"
    );
}

#[test]
fn a_span_in_flight_across_forget_records_into_a_fresh_series() {
    let metrics = MetricsRegistry::builder()
        .buckets("call_duration_seconds", [60.0])
        .build();
    let edge = [attr("component", "edge")];
    metrics.start_span("call", &edge).end();
    let mut in_flight = metrics.start_span("call", &edge);
    assert!(
        metrics
            .render()
            .contains("\ncall_duration_seconds_count{component=\"edge\"} 1\n")
    );

    metrics.forget(&edge);
    assert_eq!(metrics.render(), "");

    in_flight.set_error(&io::Error::other("cancelled"));
    in_flight.end();
    let text = metrics.render();
    assert!(
        text.contains("\ncall_duration_seconds_count{component=\"edge\"} 1\n"),
        "the span that ended after forget, and not the one before: {text}"
    );
    assert!(
        text.contains("\ncall_errors_total{component=\"edge\"} 1\n"),
        "{text}"
    );
}

#[test]
fn forget_reaches_the_registry_through_fanout_and_arc() {
    let metrics = MetricsRegistry::new();
    let fanout = FanoutObserver::new(vec![Arc::new(NopObserver), Arc::new(metrics.clone())]);
    let obs: Arc<dyn Observer> = Arc::new(fanout);
    obs.counter("requests").add(1, &[attr("component", "edge")]);
    obs.gauge("connections")
        .set(1.0, &[attr("component", "edge")]);
    obs.counter("requests").add(1, &[attr("component", "core")]);

    obs.forget(&[attr("component", "edge")]);
    assert_eq!(
        metrics.render(),
        "# TYPE requests_total counter\nrequests_total{component=\"core\"} 1\n"
    );
}

#[test]
fn the_default_forget_and_gauge_of_an_observer_do_nothing() {
    /// An observer written before gauges existed: it implements only the required methods.
    #[derive(Debug)]
    struct Minimal;

    impl Observer for Minimal {
        fn start_span(&self, _: &str, _: &[isopace_observe::Attr<'_>]) -> isopace_observe::Span {
            isopace_observe::Span::noop()
        }
        fn counter(&self, _: &str) -> isopace_observe::Counter {
            isopace_observe::Counter::noop()
        }
        fn histogram(&self, _: &str) -> isopace_observe::Histogram {
            isopace_observe::Histogram::noop()
        }
    }

    let gauge = Minimal.gauge("g");
    assert!(!gauge.is_recording());
    gauge.set(1.0, &[]);
    Minimal.forget(&[attr("component", "edge")]);
}
