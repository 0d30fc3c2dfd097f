//! Counters and histograms: totals, counts and sums per attribute set, and instrument caching.

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

    let debug = format!("{:?}", t.observer);
    assert!(debug.contains("counters: 2"), "{debug}");
    assert!(debug.contains("histograms: 1"), "{debug}");
    assert_eq!(t.counter_sum("hits", &[]), 3);
    assert_eq!(t.histogram_count_sum("size", &[]), (2, 7.0));
}
