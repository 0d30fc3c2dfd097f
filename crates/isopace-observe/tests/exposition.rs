//! The whole exposition: every family described and typed, the process metrics, and the
//! text read back by an independent, strict parser of the Prometheus text format.

use std::io;

use isopace_observe::{Error, MetricsRegistry, Observer, attr};
use openmetrics_parser::{
    MetricFamily, PrometheusType, PrometheusValue, prometheus::parse_prometheus,
};

type Family = MetricFamily<PrometheusType, PrometheusValue>;

/// A registry with every kind of metric, described, as a daemon sets one up.
fn busy_registry() -> MetricsRegistry {
    let metrics = MetricsRegistry::builder()
        .process_metrics(true)
        .buckets("latency_seconds", [0.1, 0.5, 1.0])
        .help("latency_seconds", "Time to answer, in seconds.")
        .build();
    metrics.set_info(
        "isopace_build_info",
        "The running build: its version, as a label; always 1.",
        &[attr("version", "1.2.3-rc.1+build \"7\"")],
    );
    let obs: &dyn Observer = &metrics;
    obs.describe("requests", "Requests handled, by component and outcome.");
    obs.describe("connections", "Connections open now, by component.");
    obs.describe("queue_depth", "Jobs waiting.");
    obs.describe(
        "authorize_duration_seconds",
        "Time to authorize, by message type.",
    );
    obs.describe(
        "authorize_errors",
        "Authorizations that failed, by message type.",
    );
    obs.describe(
        "odd_help",
        "A help text with a backslash \\ and a\nsecond line, kept as one line.",
    );

    let requests = obs.counter("requests");
    requests.add(3, &[attr("component", "edge"), attr("outcome", "ok")]);
    // Label values that need every escape the format has.
    requests.add(
        1,
        &[
            attr("component", "C:\\edge"),
            attr("outcome", "say \"no\"\nthen stop"),
        ],
    );
    let latency = obs.histogram("latency_seconds");
    for v in [0.0625, 0.5, 0.25, 2.0] {
        latency.observe(v, &[attr("route", "/a{b}")]);
    }
    let connections = obs.gauge("connections");
    connections.set(4.0, &[attr("component", "edge")]);
    connections.add(-1.5, &[attr("component", "core")]);
    obs.gauge("queue_depth").set(0.25, &[]);
    obs.gauge("odd_help").set(1.0, &[]);
    let mut span = obs.start_span("authorize", &[attr("mti", "0200")]);
    span.set_error(&io::Error::other("issuer unavailable"));
    span.end();
    metrics
}

/// The families whose samples are not preceded by both a `# HELP` and a `# TYPE` line.
fn families_without_help_or_type(text: &str) -> Vec<String> {
    // (name, has HELP, has TYPE) of each family, in order.
    let mut families: Vec<(String, bool, bool)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            families.push((name.to_owned(), true, false));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            match families.last_mut() {
                Some((last, true, typed @ false)) if last == name => *typed = true,
                _ => families.push((name.to_owned(), false, true)),
            }
        } else {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let belongs = families.last().is_some_and(|(name, ..)| {
                sample
                    .strip_prefix(name.as_str())
                    .is_some_and(|suffix| ["", "_bucket", "_sum", "_count"].contains(&suffix))
            });
            if !belongs {
                families.push((sample.to_owned(), false, false));
            }
        }
    }
    families
        .into_iter()
        .filter(|(_, help, typed)| !(*help && *typed))
        .map(|(name, ..)| name)
        .collect()
}

#[test]
fn every_family_has_help_and_type() {
    let metrics = busy_registry();
    assert_eq!(metrics.undescribed(), Vec::<String>::new());
    let text = metrics.render();
    assert_eq!(
        families_without_help_or_type(&text),
        Vec::<String>::new(),
        "{text}"
    );

    // An undescribed metric is caught both ways.
    metrics.counter("forgotten").add(1, &[]);
    metrics.gauge("described_later");
    assert_eq!(
        metrics.undescribed(),
        ["described_later", "forgotten_total"]
    );
    assert_eq!(
        families_without_help_or_type(&metrics.render()),
        ["described_later", "forgotten_total"]
    );
    metrics.describe("described_later", "Described after it was created.");
    metrics.describe("forgotten_total", "Described by its rendered name.");
    assert_eq!(metrics.undescribed(), Vec::<String>::new());
    assert_eq!(
        families_without_help_or_type(&metrics.render()),
        Vec::<String>::new()
    );
}

#[test]
fn the_whole_exposition_parses_back_to_what_was_recorded() {
    let text = busy_registry().render();
    // The parser wants one set of label names per family, which is stricter than the format
    // but what every family here (and every metric isopace itself creates) has.
    let exposition = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let family = |name: &str| -> &Family {
        exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in\n{text}"))
    };
    for f in exposition.families.values() {
        assert!(!f.help.is_empty(), "{} has no help text", f.family_name);
    }

    let requests = family("requests_total");
    assert_eq!(requests.family_type, PrometheusType::Counter);
    assert_eq!(requests.help, "Requests handled, by component and outcome.");
    assert_eq!(
        number(sample(
            requests,
            &[("component", "edge"), ("outcome", "ok")]
        )),
        3.0
    );
    let escaped = [
        ("component", "C:\\edge"),
        ("outcome", "say \"no\"\nthen stop"),
    ];
    assert_eq!(number(sample(requests, &escaped)), 1.0);

    let latency = family("latency_seconds");
    assert_eq!(latency.family_type, PrometheusType::Histogram);
    let PrometheusValue::Histogram(h) = sample(latency, &[("route", "/a{b}")]) else {
        panic!("latency_seconds is not a histogram");
    };
    let buckets: Vec<(f64, f64)> = h
        .buckets
        .iter()
        .map(|b| (b.upper_bound, b.count.as_f64()))
        .collect();
    assert_eq!(
        buckets,
        [(0.1, 1.0), (0.5, 3.0), (1.0, 3.0), (f64::INFINITY, 4.0)]
    );
    assert_eq!(h.count, Some(4));
    assert_eq!(h.sum.as_ref().map(|s| s.as_f64()), Some(2.8125));

    let connections = family("connections");
    assert_eq!(connections.family_type, PrometheusType::Gauge);
    assert_eq!(number(sample(connections, &[("component", "edge")])), 4.0);
    assert_eq!(number(sample(connections, &[("component", "core")])), -1.5);
    assert_eq!(number(sample(family("queue_depth"), &[])), 0.25);
    assert_eq!(
        family("odd_help").help,
        "A help text with a backslash \\ and a\nsecond line, kept as one line."
    );

    let durations = family("authorize_duration_seconds");
    assert_eq!(durations.family_type, PrometheusType::Histogram);
    assert_eq!(durations.help, "Time to authorize, by message type.");
    let errors = family("authorize_errors_total");
    assert_eq!(number(sample(errors, &[("mti", "0200")])), 1.0);

    let build = family("isopace_build_info");
    assert_eq!(build.family_type, PrometheusType::Gauge);
    let version = [("version", "1.2.3-rc.1+build \"7\"")];
    assert_eq!(number(sample(build, &version)), 1.0);

    let process = [
        ("process_cpu_seconds_total", PrometheusType::Counter),
        ("process_resident_memory_bytes", PrometheusType::Gauge),
        ("process_virtual_memory_bytes", PrometheusType::Gauge),
        ("process_open_fds", PrometheusType::Gauge),
        ("process_max_fds", PrometheusType::Gauge),
        ("process_start_time_seconds", PrometheusType::Gauge),
    ];
    if cfg!(target_os = "linux") {
        for (name, kind) in &process {
            let f = family(name);
            assert_eq!(f.family_type, *kind, "{name}");
            assert!(number(sample(f, &[])) >= 0.0, "{name}");
        }
    }
    let mut names: Vec<&str> = exposition.families.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = vec![
        "authorize_duration_seconds",
        "authorize_errors_total",
        "connections",
        "isopace_build_info",
        "latency_seconds",
        "odd_help",
        "queue_depth",
        "requests_total",
    ];
    if cfg!(target_os = "linux") {
        expected.extend(process.iter().map(|(name, _)| *name));
        expected.sort_unstable();
    }
    assert_eq!(names, expected);
}

#[test]
fn process_metrics_are_opt_in_and_their_names_reserved() {
    let plain = MetricsRegistry::new();
    assert!(!plain.render().contains("process_"));
    plain.gauge("process_open_fds").set(7.0, &[]);
    assert!(plain.render().contains("\nprocess_open_fds 7\n"));

    let metrics = MetricsRegistry::builder().process_metrics(true).build();
    for (name, err) in [
        (
            "process_open_fds",
            metrics.try_gauge("process_open_fds").err(),
        ),
        (
            "process_cpu_seconds_total",
            metrics.try_counter("process_cpu_seconds").err(),
        ),
        (
            "process_cpu_seconds",
            metrics.try_gauge("process_cpu_seconds").err(),
        ),
    ] {
        assert!(
            matches!(&err, Some(Error::Reserved { name: n }) if n == name),
            "{name}: {err:?}"
        );
    }
    let inert = metrics.gauge("process_max_fds");
    assert!(!inert.is_recording());
    assert_eq!(
        Error::Reserved {
            name: "process_max_fds".to_owned()
        }
        .to_string(),
        "metric `process_max_fds` is one the registry renders itself, so it cannot be registered"
    );
    assert!(
        metrics.undescribed().is_empty(),
        "process metrics are described"
    );
    metrics.describe("connections", "Connections open now.");
    metrics.describe("queue_depth", "Jobs waiting.");

    metrics.gauge("connections").set(1.0, &[]);
    metrics.gauge("queue_depth").set(2.0, &[]);
    let text = metrics.render();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    if cfg!(target_os = "linux") {
        assert_eq!(
            names,
            [
                "connections gauge",
                "process_cpu_seconds_total counter",
                "process_max_fds gauge",
                "process_open_fds gauge",
                "process_resident_memory_bytes gauge",
                "process_start_time_seconds gauge",
                "process_virtual_memory_bytes gauge",
                "queue_depth gauge",
            ],
            "sorted among the other families by name"
        );
        assert!(text.contains(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        ));
    } else {
        assert_eq!(names, ["connections gauge", "queue_depth gauge"]);
    }
}

/// The one sample of `family` whose labels are exactly `labels` (besides a histogram's `le`).
fn sample<'f>(family: &'f Family, labels: &[(&str, &str)]) -> &'f PrometheusValue {
    let found = family.iter_samples().find(|s| {
        let set = s.get_labelset().expect("a label set");
        set.iter().count() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
    });
    &found
        .unwrap_or_else(|| panic!("no sample {labels:?} in {}", family.family_name))
        .value
}

/// A counter's or a gauge's value.
fn number(value: &PrometheusValue) -> f64 {
    match value {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        other => panic!("not a single number: {other:?}"),
    }
}
