//! `MetricsRegistry`: aggregation, exposition text, gauges, concurrency and kind conflicts.

use std::{io, sync::Arc};

use isopace_observe::{Error, MetricKind, MetricsRegistry, Observer, attr};

use crate::util::{Capture, allocations};

#[test]
fn a_labelled_counter_renders_exactly() {
    let metrics = MetricsRegistry::new();
    metrics.describe("requests", "Requests handled, by outcome.");
    let requests = metrics.counter("requests");
    requests.add(2, &[attr("outcome", "ok"), attr("component", "edge")]);
    requests.add(1, &[attr("component", "edge"), attr("outcome", "ok")]);
    requests.add(
        1,
        &[attr("outcome", "say \"no\"\\"), attr("component", "edge")],
    );
    assert_eq!(
        metrics.render(),
        "# HELP requests_total Requests handled, by outcome.\n\
         # TYPE requests_total counter\n\
         requests_total{component=\"edge\",outcome=\"ok\"} 3\n\
         requests_total{component=\"edge\",outcome=\"say \\\"no\\\"\\\\\"} 1\n"
    );
}

#[test]
fn a_histogram_renders_exactly() {
    let metrics = MetricsRegistry::builder()
        .buckets("latency_seconds", [0.1, 0.5, 1.0])
        .build();
    let latency = metrics.histogram("latency_seconds");
    for v in [0.0625, 0.5, 0.25, 2.0] {
        latency.observe(v, &[attr("route", "/a")]);
    }
    latency.observe(0.75, &[]);
    assert_eq!(
        metrics.render(),
        "# TYPE latency_seconds histogram\n\
         latency_seconds_bucket{le=\"0.1\"} 0\n\
         latency_seconds_bucket{le=\"0.5\"} 0\n\
         latency_seconds_bucket{le=\"1\"} 1\n\
         latency_seconds_bucket{le=\"+Inf\"} 1\n\
         latency_seconds_sum 0.75\n\
         latency_seconds_count 1\n\
         latency_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n\
         latency_seconds_bucket{route=\"/a\",le=\"0.5\"} 3\n\
         latency_seconds_bucket{route=\"/a\",le=\"1\"} 3\n\
         latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n\
         latency_seconds_sum{route=\"/a\"} 2.8125\n\
         latency_seconds_count{route=\"/a\"} 4\n"
    );
}

#[test]
fn the_default_buckets_are_prometheus_defaults() {
    let metrics = MetricsRegistry::new();
    metrics.histogram("h").observe(3.0, &[]);
    let text = metrics.render();
    let les: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect::<Vec<_>>();
    assert_eq!(
        les,
        [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"
        ]
    );
}

#[test]
fn metrics_are_sorted_by_name_and_names_are_sanitised() {
    let metrics = MetricsRegistry::new();
    metrics.gauge("z.active-connections").set(4.0, &[]);
    metrics
        .counter("http.requests")
        .add(1, &[attr("http.method", "GET")]);
    metrics.counter("a_total").add(5, &[]);
    let gauge = metrics.gauge("0state");
    gauge.set(3.0, &[attr("component", "edge")]);
    gauge.add(-1.0, &[attr("component", "edge")]);
    assert_eq!(
        metrics.render(),
        "# TYPE _0state gauge\n\
         _0state{component=\"edge\"} 2\n\
         # TYPE a_total counter\n\
         a_total 5\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{http_method=\"GET\"} 1\n\
         # TYPE z_active_connections gauge\n\
         z_active_connections 4\n"
    );
}

#[test]
fn handles_for_one_name_share_the_series() {
    let metrics = MetricsRegistry::new();
    metrics.counter("jobs").add(1, &[]);
    metrics.counter("jobs_total").add(2, &[]);
    let clone = metrics.clone();
    clone.counter("jobs").add(3, &[]);
    assert_eq!(
        metrics.render(),
        "# TYPE jobs_total counter\njobs_total 6\n"
    );
}

#[test]
fn a_fresh_counter_renders_zero_and_an_untouched_unlabelled_series_hides_behind_labels() {
    let metrics = MetricsRegistry::new();
    let _ = metrics.counter("idle");
    let busy = metrics.counter("busy");
    busy.add(1, &[attr("k", "v")]);
    assert_eq!(
        metrics.render(),
        "# TYPE busy_total counter\nbusy_total{k=\"v\"} 1\n# TYPE idle_total counter\nidle_total 0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_tasks_adding_concurrently_sum_exactly() {
    const ADDS: u64 = 20_000;
    let metrics = MetricsRegistry::new();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let counter = metrics.counter("ops");
            let histogram = metrics.histogram("sizes");
            tokio::spawn(async move {
                for i in 0..ADDS {
                    counter.add(1, &[]);
                    counter.add(
                        2,
                        &[attr("parity", if i % 2 == 0 { "even" } else { "odd" })],
                    );
                    if i % 100 == 0 {
                        histogram.observe(f64::from(t), &[]);
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("the task completes");
    }
    let text = metrics.render();
    assert!(text.contains("\nops_total 80000\n"), "{text}");
    assert!(
        text.contains("\nops_total{parity=\"even\"} 80000\n"),
        "{text}"
    );
    assert!(
        text.contains("\nops_total{parity=\"odd\"} 80000\n"),
        "{text}"
    );
    assert!(text.contains("\nsizes_count 800\n"), "{text}");
    assert!(text.contains("\nsizes_sum 1200\n"), "{text}");
}

#[test]
fn adds_to_existing_series_do_not_allocate() {
    let metrics = MetricsRegistry::new();
    let counter = metrics.counter("c");
    let histogram = metrics.histogram("h");
    let labels = [
        attr("outcome", "ok"),
        attr("http.method", "GET"),
        attr("n", 3_u64),
    ];
    // The first add on a thread may set up its per-thread cell; later ones must not allocate.
    counter.add(1, &[]);
    counter.add(1, &labels);
    histogram.observe(1.0, &labels);
    let n = allocations(|| {
        for _ in 0..100 {
            counter.add(1, &[]);
            counter.add(1, &labels);
            histogram.observe(0.5, &[]);
            histogram.observe(0.5, &labels);
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn a_span_records_its_duration_and_counts_errors() {
    let metrics = MetricsRegistry::builder()
        .buckets("forward_duration_seconds", [60.0])
        .build();
    metrics
        .start_span("forward", &[attr("component", "edge")])
        .end();
    let mut failed = metrics.start_span("forward", &[attr("component", "edge")]);
    failed.set_attr(attr("request_id", 42_u64));
    failed.set_error(&io::Error::other("reset"));
    drop(failed);
    let text = metrics.render();
    let expected_lines = [
        "# TYPE forward_duration_seconds histogram",
        "forward_duration_seconds_bucket{component=\"edge\",le=\"60\"} 2",
        "forward_duration_seconds_bucket{component=\"edge\",le=\"+Inf\"} 2",
        "forward_duration_seconds_count{component=\"edge\"} 2",
        "# TYPE forward_errors_total counter",
        "forward_errors_total{component=\"edge\"} 1",
    ];
    for line in expected_lines {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("request_id"), "{text}");
}

#[test]
fn one_name_as_two_kinds_is_an_error_or_an_inert_handle_logged_once() {
    let metrics = MetricsRegistry::new();
    metrics.counter("jobs").add(1, &[]);
    let err = metrics
        .try_histogram("jobs")
        .expect_err("jobs is a counter");
    assert!(matches!(
        err,
        Error::KindConflict {
            existing: MetricKind::Counter,
            requested: MetricKind::Histogram,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "metric `jobs` clashes with an existing counter, so it cannot be a histogram"
    );
    assert!(metrics.try_gauge("jobs_total").is_err());
    metrics.histogram("size").observe(1.0, &[]);
    assert!(
        metrics.try_gauge("size_count").is_err(),
        "would collide with size's series"
    );

    let capture = Capture::default();
    tracing::subscriber::with_default(capture.subscriber(), || {
        for _ in 0..3 {
            let h = metrics.histogram("jobs");
            assert!(!h.is_recording());
            h.observe(1.0, &[]);
            assert!(!metrics.gauge("jobs").is_recording());
        }
    });
    let text = capture.text();
    assert_eq!(text.matches("metric kind conflict").count(), 1, "{text}");
    assert!(text.contains("ERROR"), "{text}");
    assert!(metrics.render().contains("\njobs_total 1\n"));
}

#[test]
fn a_gauge_sets_adds_and_removes_series() {
    let metrics = MetricsRegistry::new();
    let queue = metrics.gauge("queue_depth");
    queue.set(2.5, &[attr("queue", "a")]);
    queue.add(-0.5, &[attr("queue", "a")]);
    queue.add(3.0, &[attr("queue", "b")]);
    queue.set(f64::NAN, &[attr("queue", "c")]);
    assert_eq!(
        metrics.render(),
        "# TYPE queue_depth gauge\n\
         queue_depth{queue=\"a\"} 2\n\
         queue_depth{queue=\"b\"} 3\n\
         queue_depth{queue=\"c\"} NaN\n"
    );

    queue.remove(&[attr("queue", "b")]);
    queue.remove(&[attr("queue", "c")]);
    queue.remove(&[attr("queue", "never")]);
    assert_eq!(
        metrics.render(),
        "# TYPE queue_depth gauge\nqueue_depth{queue=\"a\"} 2\n"
    );

    // A removed series starts again from zero.
    queue.add(1.0, &[attr("queue", "b")]);
    assert_eq!(
        metrics.render(),
        "# TYPE queue_depth gauge\nqueue_depth{queue=\"a\"} 2\nqueue_depth{queue=\"b\"} 1\n"
    );

    // The last series removed takes the metric with it; it does not come back as a zero.
    queue.remove(&[attr("queue", "a")]);
    queue.remove(&[attr("queue", "b")]);
    assert_eq!(metrics.render(), "");
}

#[test]
fn the_unlabelled_gauge_renders_zero_until_removed_and_again_once_set() {
    let metrics = MetricsRegistry::new();
    let load = metrics.gauge("load");
    assert_eq!(metrics.render(), "# TYPE load gauge\nload 0\n");
    load.set(0.75, &[]);
    assert_eq!(metrics.render(), "# TYPE load gauge\nload 0.75\n");
    load.remove(&[]);
    assert_eq!(metrics.render(), "");
    // Zero is a value like any other once written: it renders next to labelled series.
    load.set(0.0, &[]);
    load.set(1.0, &[attr("cpu", 1_u64)]);
    assert_eq!(
        metrics.render(),
        "# TYPE load gauge\nload 0\nload{cpu=\"1\"} 1\n"
    );
}

#[test]
fn gauges_through_arc_and_dyn_observer_share_the_registry_series() {
    let metrics = MetricsRegistry::new();
    let shared: Arc<MetricsRegistry> = Arc::new(metrics.clone());
    let obs: Arc<dyn Observer> = Arc::new(metrics.clone());
    shared.gauge("open").add(2.0, &[]);
    obs.gauge("open").add(-1.0, &[]);
    metrics.try_gauge("open").expect("a gauge").add(5.0, &[]);
    assert_eq!(metrics.render(), "# TYPE open gauge\nopen 6\n");
}

#[test]
fn gauge_writes_to_existing_series_do_not_allocate() {
    let metrics = MetricsRegistry::new();
    let gauge = metrics.gauge("g");
    let labels = [attr("component", "edge"), attr("n", 3_u64)];
    gauge.set(1.0, &labels);
    let n = allocations(|| {
        for i in 0..100 {
            gauge.set(f64::from(i), &[]);
            gauge.add(1.0, &labels);
        }
    });
    assert_eq!(n, 0);
    assert!(
        metrics
            .render()
            .contains("\ng{component=\"edge\",n=\"3\"} 101\n")
    );
}
