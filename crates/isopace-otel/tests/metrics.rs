//! Counters, histograms and gauges: totals, counts, sums and values per attribute set,
//! dropping gauge series, and instrument caching.

use std::sync::Arc;

use isopace_observe::{Observer, attr};
use opentelemetry::KeyValue;

use crate::util::Telemetry;

#[test]
fn counter_sums_per_attribute_set() {
    let t = Telemetry::new();
    let requests = t.observer.counter("requests");
    requests.add(1, &[attr("outcome", "approved"), attr("mti", "0200")]);
    requests.add(2, &[attr("mti", "0200"), attr("outcome", "approved")]);
    requests.add(5, &[attr("outcome", "declined"), attr("mti", "0200")]);
    requests.add(4, &[]);

    let approved = [
        KeyValue::new("outcome", "approved"),
        KeyValue::new("mti", "0200"),
    ];
    let declined = [
        KeyValue::new("outcome", "declined"),
        KeyValue::new("mti", "0200"),
    ];
    assert_eq!(t.counter_sum("requests", &approved), 3);
    assert_eq!(t.counter_sum("requests", &declined), 5);
    assert_eq!(t.counter_sum("requests", &[]), 4);
}

#[test]
fn counter_attributes_keep_their_types() {
    let t = Telemetry::new();
    t.observer.counter("frames").add(
        1,
        &[
            attr("port", 7000_u64),
            attr("tls", false),
            attr("shard", -1_i64),
        ],
    );

    let attrs = [
        KeyValue::new("port", 7000_i64),
        KeyValue::new("tls", false),
        KeyValue::new("shard", -1_i64),
    ];
    assert_eq!(t.counter_sum("frames", &attrs), 1);
}

#[test]
fn histogram_counts_and_sums_per_attribute_set() {
    let t = Telemetry::new();
    let latency = t.observer.histogram("latency");
    latency.observe(0.5, &[attr("route", "a")]);
    latency.observe(1.25, &[attr("route", "a")]);
    latency.observe(7.0, &[attr("route", "b")]);

    assert_eq!(
        t.histogram_count_sum("latency", &[KeyValue::new("route", "a")]),
        (2, 1.75)
    );
    assert_eq!(
        t.histogram_count_sum("latency", &[KeyValue::new("route", "b")]),
        (1, 7.0)
    );
}

#[test]
fn instruments_are_created_once_per_name_and_shared_by_clones() {
    let t = Telemetry::new();
    let clone = t.observer.clone();
    t.observer.counter("hits").add(1, &[]);
    clone.counter("hits").add(2, &[]);
    t.observer.counter("misses").add(1, &[]);
    clone.histogram("size").observe(3.0, &[]);
    t.observer.histogram("size").observe(4.0, &[]);
    clone.gauge("open").add(1.0, &[]);
    t.observer.gauge("open").add(1.0, &[]);

    let debug = format!("{:?}", t.observer);
    assert!(debug.contains("counters: 2"), "{debug}");
    assert!(debug.contains("histograms: 1"), "{debug}");
    assert!(debug.contains("gauges: 1"), "{debug}");
    assert_eq!(t.counter_sum("hits", &[]), 3);
    assert_eq!(t.histogram_count_sum("size", &[]), (2, 7.0));
    assert_eq!(t.gauge_series("open"), vec![(vec![], 2.0)]);
}

#[test]
fn gauge_sets_adds_and_removes_series() {
    let t = Telemetry::new();
    let active = t.observer.gauge("active");
    active.set(3.0, &[attr("component", "edge")]);
    active.add(-1.0, &[attr("component", "edge")]);
    active.add(0.5, &[attr("component", "core")]);
    active.set(7.0, &[]);
    let edge = vec![KeyValue::new("component", "edge")];
    let core = vec![KeyValue::new("component", "core")];
    assert_eq!(
        t.gauge_series("active"),
        vec![(vec![], 7.0), (core.clone(), 0.5), (edge.clone(), 2.0)]
    );

    active.remove(&[attr("component", "edge")]);
    active.remove(&[]);
    assert_eq!(t.gauge_series("active"), vec![(core.clone(), 0.5)]);

    // A removed series starts again from zero.
    active.add(1.0, &[attr("component", "edge")]);
    assert_eq!(t.gauge_series("active"), vec![(core, 0.5), (edge, 1.0)]);
}

#[test]
fn gauge_attributes_are_one_series_whatever_their_order() {
    let t = Telemetry::new();
    let depth = t.observer.gauge("depth");
    depth.add(1.0, &[attr("queue", "a"), attr("shard", 1_u64)]);
    depth.add(1.0, &[attr("shard", 1_i64), attr("queue", "a")]);
    t.observer
        .gauge("depth")
        .add(1.0, &[attr("shard", 1_u64), attr("queue", "a")]);
    assert_eq!(
        t.gauge_series("depth"),
        vec![(
            vec![KeyValue::new("queue", "a"), KeyValue::new("shard", 1_i64)],
            3.0
        )]
    );
}

#[test]
fn forget_drops_the_matching_gauge_series() {
    let t = Telemetry::new();
    let obs: Arc<dyn Observer> = Arc::new(t.observer.clone());
    let active = obs.gauge("active");
    active.set(1.0, &[attr("component", "edge"), attr("listener", "a")]);
    active.set(2.0, &[attr("component", "edge"), attr("listener", "b")]);
    active.set(4.0, &[attr("component", "core"), attr("listener", "a")]);
    obs.counter("requests").add(1, &[attr("component", "edge")]);

    obs.forget(&[]);
    assert_eq!(t.gauge_series("active").len(), 3);

    obs.forget(&[attr("component", "edge")]);
    assert_eq!(
        t.gauge_series("active"),
        vec![(
            vec![
                KeyValue::new("component", "core"),
                KeyValue::new("listener", "a")
            ],
            4.0
        )]
    );
    // Counters cannot be dropped through the API: the series stays.
    assert_eq!(
        t.counter_sum("requests", &[KeyValue::new("component", "edge")]),
        1
    );

    // The handle keeps working, from zero.
    active.add(1.0, &[attr("component", "edge"), attr("listener", "a")]);
    assert_eq!(t.gauge_series("active").len(), 2);
}

#[test]
fn described_instruments_carry_their_description() {
    let t = Telemetry::new();
    let obs = &t.observer;
    obs.describe("requests", "Requests handled, by outcome.");
    obs.describe("latency", "Time to answer, in seconds.");
    obs.describe("active", "Connections open now.");
    obs.counter("requests").add(1, &[]);
    obs.histogram("latency").observe(0.5, &[]);
    obs.gauge("active").set(2.0, &[]);
    obs.counter("undescribed").add(1, &[]);

    assert_eq!(t.description("requests"), "Requests handled, by outcome.");
    assert_eq!(t.description("latency"), "Time to answer, in seconds.");
    assert_eq!(t.description("active"), "Connections open now.");
    assert_eq!(t.description("undescribed"), "");
}
