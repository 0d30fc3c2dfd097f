//! The isopace observability facade: spans, counters and histograms behind one small trait.
//!
//! Instrumented code talks to an [`Observer`] and never to a telemetry SDK. The default,
//! [`NopObserver`], is inert and allocation-free, so code can call the facade
//! unconditionally.
//!
//! # Example
//!
//! ```
//! use isopace_observe::{attr, NopObserver, Observer};
//!
//! let obs = NopObserver;
//! let mut span = obs.start_span("authorize", &[attr("mti", "0200")]);
//! obs.counter("requests_total").add(1, &[attr("outcome", "approved")]);
//! obs.histogram("latency_seconds").observe(0.004, &[]);
//! span.set_attr(attr("approved", true));
//! span.end();
//! ```

mod facade;

pub use facade::{
    Attr, AttrValue, Counter, CounterBackend, Histogram, HistogramBackend, NopObserver, Observer,
    Span, SpanBackend, attr,
};
