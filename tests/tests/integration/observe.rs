//! The observability facade as the other crates use it.

use std::sync::Arc;

use isopace_observe::{NopObserver, Observer, attr};

#[test]
fn a_shared_nop_observer_is_inert_through_a_trait_object() {
    let obs: Arc<dyn Observer> = Arc::new(NopObserver);
    let span = obs.start_span("work", &[attr("component", "edge")]);
    assert!(!span.is_recording());
    obs.counter("c").add(1, &[]);
    obs.histogram("h").observe(1.0, &[]);
}
