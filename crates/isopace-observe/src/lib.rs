//! The isopace observability facade: spans, counters, histograms and gauges behind one small
//! trait.
//!
//! Instrumented code talks to an [`Observer`] and never to a telemetry SDK. The default,
//! [`NopObserver`], is inert and allocation-free, so code can call the facade
//! unconditionally; the process decides at startup where measurements go.
//!
//! | observer | what it is for |
//! |---|---|
//! | [`NopObserver`] | the default everywhere: records nothing, costs (almost) nothing |
//! | [`TracingObserver`] | development and debugging: spans and measurements as `tracing` spans and events |
//! | [`MetricsRegistry`] | production metrics: aggregates in process, renders Prometheus text for a `/metrics` endpoint |
//! | [`FanoutObserver`] | several at once, typically tracing plus metrics |
//!
//! Logging itself is `tracing`; [`LogOptions`] sets up the subscriber (level, text or JSON,
//! source location, per-module directives) and returns a [`LogHandle`] that changes the
//! level of the running process. Each line names the component it is about in one place
//! (`component=edge` after the level in text, a top-level `"component"` key in JSON), from
//! the event's field or the nearest span's; spans are recorded whatever the level, so a
//! level change never loses them; text is coloured only on a terminal and never with
//! `NO_COLOR` ([`use_colour`]). [`parse_level`] reads level names from configuration,
//! [`error_chain`] puts an error and its sources on one line for a log field, and
//! [`Rounded`] prints a duration as `2.5s` rather than `2.499990736s`.
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
//! obs.gauge("connections").set(3.0, &[attr("component", "edge")]);
//! span.set_attr(attr("approved", true));
//! span.end();
//!
//! let text = metrics.render();
//! assert!(text.contains("requests_total{outcome=\"approved\"} 1\n"));
//! assert!(text.contains("authorize_duration_seconds_count{mti=\"0200\"} 1\n"));
//! assert!(text.contains("connections{component=\"edge\"} 3\n"));
//!
//! // A component goes away: its series go with it.
//! obs.forget(&[attr("component", "edge")]);
//! assert!(!metrics.render().contains("component=\"edge\""));
//! ```
//!
//! # Feature flags
//!
//! The facade, the observers and the metrics registry are always available; the features
//! only shape the logging builder, and all are on by default. `env-filter` turns on the
//! `tracing-subscriber` feature of the same name; the crate writes its text and JSON lines
//! itself. Turning one off never removes an item from the API, so enabling it again
//! (anywhere in the dependency graph) breaks nothing:
//!
//! | feature | with it | without it |
//! |---|---|---|
//! | `json` | [`LogFormat::Json`] writes one JSON object per line | `json` still parses, but building a logger with it fails with [`Error::FeatureDisabled`] rather than quietly writing another format |
//! | `env-filter` | [`LogOptions::directives`] take the full `RUST_LOG` syntax | directives fall back to `target=level`, bare `target` and bare `level`; one with a span or field filter (`[...]`) fails with [`Error::FeatureDisabled`] naming it |
//! | `ansi` | text on a terminal is coloured, unless `NO_COLOR` is set | text is never coloured |
//!
//! The crate depends on no other isopace crate.

#![forbid(unsafe_code)]

mod error;
mod error_chain;
mod facade;
mod fanout;
mod filter_source;
mod logging;
mod metrics;
mod rounded;
mod tracing_observer;

pub use error::{Error, MetricKind};
pub use error_chain::error_chain;
pub use facade::{
    Attr, AttrValue, Counter, CounterBackend, Gauge, GaugeBackend, Histogram, HistogramBackend,
    NopObserver, Observer, Span, SpanBackend, attr,
};
pub use fanout::FanoutObserver;
pub use filter_source::{FilterOrigin, FilterSources, ResolvedFilter};
pub use logging::{LogFormat, LogHandle, LogOptions, parse_level, use_colour};
pub use metrics::{DEFAULT_BUCKETS, MetricsRegistry, MetricsRegistryBuilder};
pub use rounded::Rounded;
pub use tracing_observer::{METRICS_TARGET, SPAN_TARGET, TracingObserver};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
