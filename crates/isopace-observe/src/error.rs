//! The crate's one error type.

use std::fmt;

/// The kind of a metric in a [`MetricsRegistry`](crate::MetricsRegistry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A distribution in buckets.
    Histogram,
    /// A value that goes up and down.
    Gauge,
}

impl MetricKind {
    /// The kind as the Prometheus `# TYPE` line spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
            MetricKind::Gauge => "gauge",
        }
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One metric name was asked for as two different kinds, or a name would clash with the
    /// series of another metric (a gauge `x_count` next to a histogram `x`).
    #[error("metric `{name}` clashes with an existing {existing}, so it cannot be a {requested}")]
    KindConflict {
        /// The metric's name as rendered (sanitised, counters with `_total`).
        name: String,
        /// The kind the name was first registered as.
        existing: MetricKind,
        /// The kind asked for this time.
        requested: MetricKind,
    },
    /// The name is one the registry renders itself: a process metric, when
    /// [`process_metrics`](crate::MetricsRegistryBuilder::process_metrics) is on.
    #[error("metric `{name}` is one the registry renders itself, so it cannot be registered")]
    Reserved {
        /// The metric's name as rendered (sanitised, counters with `_total`).
        name: String,
    },
    /// A log filter directive did not parse.
    #[error("invalid log directive `{directive}` in `{directives}`")]
    InvalidDirective {
        /// The directive that failed.
        directive: String,
        /// The whole directive string it came from.
        directives: String,
        /// Why it failed.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A log format name was neither `text` nor `json`.
    #[error("unknown log format `{value}` (expected `text` or `json`)")]
    InvalidLogFormat {
        /// The text that was given.
        value: String,
    },
    /// A log level name was none of the accepted spellings.
    #[error(
        "unknown log level `{value}` (expected `trace`, `debug`, `info`, `warn`, `warning`, `error` or `err`)"
    )]
    InvalidLogLevel {
        /// The text that was given.
        value: String,
    },
    /// A logging option needs a cargo feature of this crate that the build left out.
    #[error("{option} needs the `{feature}` feature of isopace-observe, which this build lacks")]
    FeatureDisabled {
        /// What was asked for: `JSON log output`, or the log directive that needs the feature.
        option: String,
        /// The feature that provides it.
        feature: &'static str,
    },
    /// The process already has a global tracing subscriber.
    #[error("a global logger is already installed in this process")]
    LoggerAlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
    /// The logger a [`LogHandle`](crate::LogHandle) controls could not be changed (it was
    /// dropped, or a panic poisoned its lock).
    #[error("could not change the log filter of the running logger")]
    LoggerUnavailable(#[source] tracing_subscriber::reload::Error),
}
