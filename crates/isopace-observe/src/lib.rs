//! The isopace observability facade: spans, counters and histograms behind one small trait.
//!
//! Instrumented code talks to an [`Observer`] and never to a telemetry SDK. The default,
//! [`NopObserver`], is inert and allocation-free, so code can call the facade
//! unconditionally; the process decides at startup where measurements go.
//!
//! | observer | what it is for |
//! |---|---|
//! | [`NopObserver`] | the default everywhere: records nothing, costs (almost) nothing |
//! | [`TracingObserver`] | development and debugging: spans and measurements as `tracing` spans and events |
//! | [`MetricsRegistry`] | production metrics: aggregates in process, renders Prometheus text for a `/metrics` endpoint; also hands out [`Gauge`]s |
//! | [`FanoutObserver`] | several at once, typically tracing plus metrics |
//!
//! Logging itself is `tracing`; [`LogOptions`] sets up the subscriber (level, text or JSON,
//! source location, per-module directives) and returns a [`LogHandle`] that changes the
//! level of the running process. [`parse_level`] reads level names from configuration.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use isopace_observe::{FanoutObserver, MetricsRegistry, Observer, TracingObserver, attr};
//!
//! let metrics = MetricsRegistry::new();
//! let obs: Arc<dyn Observer> = Arc::new(FanoutObserver::new(vec![
//!     Arc::new(TracingObserver::new()),
//!     Arc::new(metrics.clone()),
//! ]));
//!
//! let mut span = obs.start_span("authorize", &[attr("mti", "0200")]);
//! obs.counter("requests").add(1, &[attr("outcome", "approved")]);
//! obs.histogram("message_bytes").observe(512.0, &[]);
//! span.set_attr(attr("approved", true));
//! span.end();
//!
//! let text = metrics.render();
//! assert!(text.contains("requests_total{outcome=\"approved\"} 1\n"));
//! assert!(text.contains("authorize_duration_seconds_count{mti=\"0200\"} 1\n"));
//! ```
//!
//! # Feature flags
//!
//! None: everything above is always available. The crate depends on no other isopace crate.

mod error;
mod facade;
mod fanout;
mod logging;
mod metrics;
mod tracing_observer;

pub use error::{Error, MetricKind};
pub use facade::{
    Attr, AttrValue, Counter, CounterBackend, Histogram, HistogramBackend, NopObserver, Observer,
    Span, SpanBackend, attr,
};
pub use fanout::FanoutObserver;
pub use logging::{LogFormat, LogHandle, LogOptions, parse_level};
pub use metrics::{DEFAULT_BUCKETS, Gauge, MetricsRegistry, MetricsRegistryBuilder};
pub use tracing_observer::{METRICS_TARGET, SPAN_TARGET, TracingObserver};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
