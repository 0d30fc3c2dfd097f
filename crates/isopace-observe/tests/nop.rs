//! `NopObserver`: inert and allocation-free.

use std::io;

use isopace_observe::{NopObserver, Observer, attr};

use crate::util::allocations;

#[test]
fn nop_hands_out_handles_that_record_nothing() {
    let obs = NopObserver;
    let span = obs.start_span("work", &[attr("k", "v")]);
    assert!(!span.is_recording());
    assert!(!obs.counter("c").is_recording());
    assert!(!obs.histogram("h").is_recording());
    assert!(!obs.gauge("g").is_recording());
}

#[test]
fn nop_never_allocates() {
    let obs = NopObserver;
    let error = io::Error::other("boom");
    let n = allocations(|| {
        let mut span = obs.start_span("work", &[attr("mti", "0200"), attr("n", 3_u64)]);
        span.set_attr(attr("approved", true));
        span.set_error(&error);
        span.end();
        obs.counter("requests").add(1, &[attr("outcome", "ok")]);
        obs.histogram("latency").observe(0.25, &[]);
        let gauge = obs.gauge("active");
        gauge.set(1.0, &[attr("component", "edge")]);
        gauge.add(-1.0, &[]);
        gauge.remove(&[attr("component", "edge")]);
        obs.forget(&[attr("component", "edge")]);
    });
    assert_eq!(n, 0);
}
