//! [`MetricsRegistry`]: an [`Observer`] that aggregates measurements in process and renders
//! them in the Prometheus text exposition format.
//!
//! The encoder is our own rather than prometheus-client's: counters here spread their adds
//! over sharded per-thread cells (prometheus-client keeps one shared atomic per counter,
//! which makes concurrent adds fight over one cache line), and the text format is small
//! enough that a thin encoder keeps the dependency tree lean.

mod encode;
mod labels;
mod process;
mod series;
mod sharded;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Instant,
};

use parking_lot::{Mutex, RwLock};

use self::{
    encode::{counter_name, metric_name},
    labels::SortedAttrs,
    series::{Family, GaugeCell, HistogramCell, Labelled},
    sharded::ShardedCounter,
};
use crate::{
    error::{Error, MetricKind},
    facade::{
        Attr, Counter, Gauge, GaugeBackend, Histogram, HistogramBackend, Observer, Span,
        SpanBackend,
    },
};

/// Prometheus's default histogram buckets, in seconds: 5 ms to 10 s.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An [`Observer`] that aggregates counters, histograms and gauges per name and label set and
/// renders them with [`render`](Self::render) in the Prometheus text format (0.0.4).
///
/// - Attributes become labels, so keep them low-cardinality (an outcome, a component name,
///   not a request id). Label names are sanitised like metric names; of two attributes with
///   one name the last wins.
/// - Metric names are sanitised to `[a-zA-Z_:][a-zA-Z0-9_:]*` (other characters become `_`).
///   Counters are rendered with a `_total` suffix, added if absent, so `counter("requests")`
///   and `counter("requests_total")` are the same counter.
/// - Handles are cached: asking for a name again returns a handle on the same series, and a
///   [`Counter::add`] without attributes writes a cell owned by the calling thread, with no
///   lock, no allocation and no contention. A labelled add finds an existing series under a
///   read lock without allocating.
/// - A span named `s` records its duration in the histogram `s_duration_seconds` (the span's
///   starting attributes are its labels; attributes added later are not), and a span ended
///   after [`Span::set_error`] also adds one to the counter `s_errors_total`.
/// - Asking for one name as two kinds (or for names whose series would collide, like a
///   gauge `x_count` next to a histogram `x`) never panics: [`try_counter`](Self::try_counter)
///   and friends return [`Error::KindConflict`], and the [`Observer`] methods return an inert
///   handle and log the error once per name.
/// - The series without labels is rendered when it has recorded something or when the
///   metric has never had a labelled series, so a metric that was asked for but not used
///   yet shows up as a zero. A metric with nothing to render is left out entirely.
/// - [`describe`](Self::describe) gives a metric its `# HELP` line; a metric without one
///   renders only its `# TYPE` line, and [`undescribed`](Self::undescribed) lists such
///   metrics, for a test that keeps every metric described. A span's metrics are described
///   by their own names (`s_duration_seconds`, `s_errors`).
/// - With [`process_metrics`](MetricsRegistryBuilder::process_metrics), the standard
///   `process_*` metrics are read from `/proc/self` at each render (on Linux; on other
///   systems they are absent).
/// - [`forget`](Observer::forget) drops every labelled series, of every metric (span
///   durations and span error counts included), whose labels include the given ones, and
///   [`Gauge::remove`] drops one gauge series. The metrics themselves stay registered, so
///   handles taken earlier keep working: a measurement through one after the drop starts
///   its series again from zero (a counter from the amount added, a gauge from the value
///   set or added, a histogram from that one observation), without the values recorded
///   before. A span that started before its series was forgotten and ends after records
///   its duration in such a fresh series. A measurement racing with `forget` lands either
///   before it (and is dropped with the series) or after it.
///
/// Cloning is cheap and clones share every metric.
///
/// ```
/// use isopace_observe::{MetricsRegistry, Observer, attr};
///
/// let metrics = MetricsRegistry::new();
/// metrics.counter("requests").add(2, &[attr("outcome", "ok")]);
/// assert_eq!(
///     metrics.render(),
///     "# TYPE requests_total counter\nrequests_total{outcome=\"ok\"} 2\n"
/// );
/// ```
#[derive(Clone)]
pub struct MetricsRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    /// Every name a metric claims (its own and its series' names) to the metric.
    metrics: RwLock<HashMap<String, Entry>>,
    help: RwLock<HashMap<String, String>>,
    /// Whether `render` reads the process metrics.
    process: bool,
    /// The names the process metrics claim, which no registered metric may claim too.
    reserved: HashSet<String>,
    buckets: HashMap<String, Arc<[f64]>>,
    default_buckets: Arc<[f64]>,
    conflicts_logged: Mutex<HashSet<String>>,
}

#[derive(Clone)]
struct Entry {
    name: Arc<str>,
    metric: Metric,
}

#[derive(Clone)]
enum Metric {
    Counter(Arc<Family<ShardedCounter>>),
    Histogram(Arc<Family<HistogramCell>>),
    Gauge(Arc<Family<GaugeCell>>),
}

impl Metric {
    fn kind(&self) -> MetricKind {
        match self {
            Metric::Counter(_) => MetricKind::Counter,
            Metric::Histogram(_) => MetricKind::Histogram,
            Metric::Gauge(_) => MetricKind::Gauge,
        }
    }
}

/// The names a metric's samples use; no two metrics may share one.
fn claims(kind: MetricKind, name: &str) -> Vec<String> {
    match kind {
        MetricKind::Counter => {
            let base = name.strip_suffix("_total").unwrap_or(name);
            vec![name.to_owned(), base.to_owned()]
        }
        MetricKind::Histogram => ["", "_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        MetricKind::Gauge => vec![name.to_owned()],
    }
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        MetricsRegistry::builder().build()
    }
}

impl MetricsRegistry {
    /// An empty registry with the default histogram buckets.
    pub fn new() -> Self {
        MetricsRegistry::default()
    }

    /// A builder for per-histogram buckets, help texts and the process metrics.
    pub fn builder() -> MetricsRegistryBuilder {
        MetricsRegistryBuilder::default()
    }

    /// The counter `name` (rendered as `<name>_total`), or the error if `name` is taken by
    /// another kind.
    pub fn try_counter(&self, name: &str) -> Result<Counter, Error> {
        let name = counter_name(name);
        match self.get(&name, MetricKind::Counter)? {
            Metric::Counter(f) => Ok(Counter::registry(f)),
            other => Err(self.conflict(&name, other.kind(), MetricKind::Counter)),
        }
    }

    /// The histogram `name`, or the error if `name` is taken by another kind.
    pub fn try_histogram(&self, name: &str) -> Result<Histogram, Error> {
        let name = metric_name(name);
        match self.get(&name, MetricKind::Histogram)? {
            Metric::Histogram(f) => Ok(Histogram::new(f)),
            other => Err(self.conflict(&name, other.kind(), MetricKind::Histogram)),
        }
    }

    /// The gauge `name`, or the error if `name` is taken by another kind.
    pub fn try_gauge(&self, name: &str) -> Result<Gauge, Error> {
        let name = metric_name(name);
        match self.get(&name, MetricKind::Gauge)? {
            Metric::Gauge(f) => Ok(Gauge::new(f)),
            other => Err(self.conflict(&name, other.kind(), MetricKind::Gauge)),
        }
    }

    /// Sets the `# HELP` text of the metric `name` (as given to `counter`, `histogram` or
    /// `gauge`; a counter may be named with or without `_total`), before or after the metric
    /// is first asked for. Metrics without help text render only their `# TYPE` line.
    ///
    /// The same as [`Observer::describe`], callable without the trait in scope.
    pub fn describe(&self, name: &str, help: &str) {
        self.shared
            .help
            .write()
            .insert(metric_name(name).into_owned(), help.to_owned());
    }

    /// The names (as rendered) of every metric asked for so far that has no help text,
    /// sorted; whether it has samples to render yet or not. A test that exercises a
    /// component and asserts this is empty keeps every metric it creates described.
    ///
    /// ```
    /// use isopace_observe::{MetricsRegistry, Observer};
    ///
    /// let metrics = MetricsRegistry::new();
    /// metrics.describe("jobs", "Jobs run.");
    /// metrics.counter("jobs").add(1, &[]);
    /// metrics.gauge("queue_depth").set(3.0, &[]);
    /// assert_eq!(metrics.undescribed(), ["queue_depth"]);
    /// ```
    pub fn undescribed(&self) -> Vec<String> {
        let metrics: Vec<(Arc<str>, MetricKind)> = self
            .shared
            .metrics
            .read()
            .iter()
            .filter(|(claim, e)| **claim == *e.name)
            .map(|(_, e)| (e.name.clone(), e.metric.kind()))
            .collect();
        let help = self.shared.help.read();
        let mut names: Vec<String> = metrics
            .into_iter()
            .filter(|(name, kind)| help_for(&help, name, *kind).is_none())
            .map(|(name, _)| name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Sets the info metric `name`: a gauge whose one series has the value 1 and carries
    /// the information in its labels, like Prometheus's own `prometheus_build_info`.
    ///
    /// ```
    /// use isopace_observe::{MetricsRegistry, attr};
    ///
    /// let metrics = MetricsRegistry::new();
    /// metrics.set_info("edge_build_info", "The running build.", &[attr("version", "2.7.1")]);
    /// let text = metrics.render();
    /// assert!(text.starts_with("# HELP edge_build_info The running build.\n"));
    /// assert!(text.ends_with("# TYPE edge_build_info gauge\nedge_build_info{version=\"2.7.1\"} 1\n"));
    /// ```
    pub fn set_info(&self, name: &str, help: &str, labels: &[Attr<'_>]) {
        self.describe(name, help);
        self.gauge(name).set(1.0, labels);
    }

    /// Every metric in the Prometheus text exposition format (0.0.4), sorted by metric name
    /// and then by label set, so the output is stable.
    pub fn render(&self) -> String {
        let mut families: Vec<Exposed> = self
            .shared
            .metrics
            .read()
            .iter()
            .filter(|(claim, e)| **claim == *e.name)
            .map(|(_, e)| Exposed::Metric(e.clone()))
            .collect();
        if self.shared.process {
            families.extend(
                process::read()
                    .into_iter()
                    .map(|(d, v)| Exposed::Process(d, v)),
            );
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let help = self.shared.help.read();
        let mut out = String::new();
        for family in families {
            let Entry { name, metric } = match family {
                Exposed::Metric(entry) => entry,
                Exposed::Process(d, value) => {
                    encode::header(&mut out, d.name, d.kind.as_str(), Some(d.help));
                    encode::sample(&mut out, d.name, &[], None, &encode::float(value));
                    continue;
                }
            };
            // The header goes first; it is taken back if the metric has no sample to show.
            let start = out.len();
            let help = help_for(&help, &name, metric.kind());
            encode::header(&mut out, &name, metric.kind().as_str(), help);
            let samples = out.len();
            match metric {
                Metric::Counter(f) => {
                    for (labels, v) in f.series() {
                        encode::sample(&mut out, &name, &labels, None, &v.to_string());
                    }
                }
                Metric::Gauge(f) => {
                    for (labels, v) in f.series() {
                        encode::sample(&mut out, &name, &labels, None, &encode::float(v));
                    }
                }
                Metric::Histogram(f) => {
                    let (bucket, sum, count) = (
                        format!("{name}_bucket"),
                        format!("{name}_sum"),
                        format!("{name}_count"),
                    );
                    for (labels, h) in f.series() {
                        for (le, n) in &h.buckets {
                            let le = encode::float(*le);
                            encode::sample(
                                &mut out,
                                &bucket,
                                &labels,
                                Some(("le", &le)),
                                &n.to_string(),
                            );
                        }
                        let inf = Some(("le", "+Inf"));
                        encode::sample(&mut out, &bucket, &labels, inf, &h.count.to_string());
                        encode::sample(&mut out, &sum, &labels, None, &encode::float(h.sum));
                        encode::sample(&mut out, &count, &labels, None, &h.count.to_string());
                    }
                }
            }
            if out.len() == samples {
                out.truncate(start);
            }
        }
        out
    }

    /// The metric rendered as `name`, created as `kind` if new.
    fn get(&self, name: &str, kind: MetricKind) -> Result<Metric, Error> {
        if let Some(e) = self.shared.metrics.read().get(name) {
            if *e.name == *name && e.metric.kind() == kind {
                return Ok(e.metric.clone());
            }
            return Err(self.conflict(name, e.metric.kind(), kind));
        }
        let claims = claims(kind, name);
        let mut metrics = self.shared.metrics.write();
        if let Some(e) = metrics.get(name)
            && *e.name == *name
            && e.metric.kind() == kind
        {
            return Ok(e.metric.clone());
        }
        if let Some(e) = claims.iter().find_map(|c| metrics.get(c)) {
            return Err(self.conflict(name, e.metric.kind(), kind));
        }
        if claims.iter().any(|c| self.shared.reserved.contains(c)) {
            return Err(Error::Reserved {
                name: name.to_owned(),
            });
        }
        let metric = match kind {
            MetricKind::Counter => {
                Metric::Counter(Arc::new(Family::new(ShardedCounter::default())))
            }
            MetricKind::Gauge => Metric::Gauge(Arc::new(Family::new(GaugeCell::default()))),
            MetricKind::Histogram => {
                let bounds = self
                    .shared
                    .buckets
                    .get(name)
                    .unwrap_or(&self.shared.default_buckets);
                Metric::Histogram(Arc::new(Family::new(HistogramCell::new(bounds.clone()))))
            }
        };
        let entry = Entry {
            name: Arc::from(name),
            metric: metric.clone(),
        };
        for claim in claims {
            metrics.insert(claim, entry.clone());
        }
        Ok(metric)
    }

    fn conflict(&self, name: &str, existing: MetricKind, requested: MetricKind) -> Error {
        Error::KindConflict {
            name: name.to_owned(),
            existing,
            requested,
        }
    }

    /// Logs a conflict the first time it happens for a name; the handle given out instead
    /// records nothing, so the log line is the only trace of the mistake.
    fn report(&self, error: Error) {
        let (Error::KindConflict { name, .. } | Error::Reserved { name }) = &error else {
            return;
        };
        if !self.shared.conflicts_logged.lock().insert(name.clone()) {
            return;
        }
        match error {
            Error::Reserved { .. } => tracing::error!(
                target: "isopace::metrics",
                error = %error,
                "metric name reserved; the handle records nothing"
            ),
            _ => tracing::error!(
                target: "isopace::metrics",
                error = %error,
                "metric kind conflict; the handle records nothing"
            ),
        }
    }

    fn family_histogram(&self, name: &str) -> Option<Arc<Family<HistogramCell>>> {
        match self.get(name, MetricKind::Histogram) {
            Ok(Metric::Histogram(f)) => Some(f),
            Ok(other) => {
                self.report(self.conflict(name, other.kind(), MetricKind::Histogram));
                None
            }
            Err(e) => {
                self.report(e);
                None
            }
        }
    }
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metrics = self.shared.metrics.read();
        let count = metrics.iter().filter(|(c, e)| **c == *e.name).count();
        f.debug_struct("MetricsRegistry")
            .field("metrics", &count)
            .finish()
    }
}

impl Observer for MetricsRegistry {
    fn start_span(&self, name: &str, attrs: &[Attr<'_>]) -> Span {
        let base = metric_name(name);
        let Some(durations) = self.family_histogram(&format!("{base}_duration_seconds")) else {
            return Span::noop();
        };
        let series = durations.labelled(&SortedAttrs::new(attrs));
        Span::new(Box::new(MetricsSpan {
            registry: self.clone(),
            base: base.into_owned(),
            durations,
            series,
            failed: false,
            start: Instant::now(),
        }))
    }

    fn counter(&self, name: &str) -> Counter {
        self.try_counter(name).unwrap_or_else(|e| {
            self.report(e);
            Counter::noop()
        })
    }

    fn histogram(&self, name: &str) -> Histogram {
        self.try_histogram(name).unwrap_or_else(|e| {
            self.report(e);
            Histogram::noop()
        })
    }

    /// The gauge `name`. If the name is taken by another kind, an inert gauge, and the error
    /// is logged once.
    fn gauge(&self, name: &str) -> Gauge {
        self.try_gauge(name).unwrap_or_else(|e| {
            self.report(e);
            Gauge::noop()
        })
    }

    fn describe(&self, name: &str, help: &str) {
        MetricsRegistry::describe(self, name, help);
    }

    fn forget(&self, attrs: &[Attr<'_>]) {
        if attrs.is_empty() {
            return;
        }
        let wanted = labels::to_owned(&SortedAttrs::new(attrs));
        // Collected first, so no family lock is taken under the registry's.
        let metrics: Vec<Metric> = self
            .shared
            .metrics
            .read()
            .iter()
            .filter(|(claim, e)| **claim == *e.name)
            .map(|(_, e)| e.metric.clone())
            .collect();
        for metric in metrics {
            match metric {
                Metric::Counter(f) => f.forget(&wanted),
                Metric::Histogram(f) => f.forget(&wanted),
                Metric::Gauge(f) => f.forget(&wanted),
            }
        }
    }
}

/// A registry counter. [`Counter`] calls it directly rather than through a vtable, so an
/// add without attributes inlines into the caller.
pub(crate) type CounterFamily = Family<ShardedCounter>;

impl CounterFamily {
    #[inline]
    pub(crate) fn add(&self, n: u64, attrs: &[Attr<'_>]) {
        if attrs.is_empty() {
            self.unlabelled.add(n);
        } else {
            self.add_labelled(n, attrs);
        }
    }

    // Out of line, so the inlined part of `add` stays small.
    #[inline(never)]
    fn add_labelled(&self, n: u64, attrs: &[Attr<'_>]) {
        self.with(&SortedAttrs::new(attrs), |c| c.fetch_add(n, Relaxed));
    }
}

impl HistogramBackend for Family<HistogramCell> {
    fn observe(&self, value: f64, attrs: &[Attr<'_>]) {
        self.with_any(attrs, |h| h.observe(value));
    }
}

impl GaugeBackend for Family<GaugeCell> {
    fn set(&self, value: f64, attrs: &[Attr<'_>]) {
        self.with_any(attrs, |g| g.set(value));
    }

    fn add(&self, delta: f64, attrs: &[Attr<'_>]) {
        self.with_any(attrs, |g| g.add(delta));
    }

    fn remove(&self, attrs: &[Attr<'_>]) {
        if attrs.is_empty() {
            self.unlabelled.clear();
            self.hide_idle();
        } else {
            self.remove_labelled(&SortedAttrs::new(attrs));
        }
    }
}

/// The registry's span: times the work and records it when it ends.
struct MetricsSpan {
    registry: MetricsRegistry,
    base: String,
    durations: Arc<Family<HistogramCell>>,
    series: Option<Arc<Labelled<HistogramCell>>>,
    failed: bool,
    start: Instant,
}

impl SpanBackend for MetricsSpan {
    fn set_attr(&mut self, _attr: &Attr<'_>) {
        // Labels are fixed when the span starts: one series per span would defeat aggregation.
    }

    fn set_error(&mut self, _error: &(dyn std::error::Error + 'static)) {
        self.failed = true;
    }

    fn end(self: Box<Self>) {
        let seconds = self.start.elapsed().as_secs_f64();
        match &self.series {
            Some(s) if !s.is_dropped() => s.cell.observe(seconds),
            // Forgotten while the span ran: record into the series as it is now.
            Some(s) => self.durations.with(&s.labels[..], |h| h.observe(seconds)),
            None => self.durations.unlabelled.observe(seconds),
        }
        if self.failed {
            let name = counter_name(&format!("{}_errors", self.base));
            match self.registry.get(&name, MetricKind::Counter) {
                Ok(Metric::Counter(errors)) => match &self.series {
                    Some(s) => errors.with(&s.labels[..], |c| {
                        c.fetch_add(1, Relaxed);
                    }),
                    None => errors.unlabelled.add(1),
                },
                Ok(other) => {
                    let e = self
                        .registry
                        .conflict(&name, other.kind(), MetricKind::Counter);
                    self.registry.report(e);
                }
                Err(e) => self.registry.report(e),
            }
        }
    }
}

/// Builds a [`MetricsRegistry`] with per-histogram buckets, help texts and the process
/// metrics.
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct MetricsRegistryBuilder {
    default_buckets: Option<Vec<f64>>,
    buckets: HashMap<String, Vec<f64>>,
    help: HashMap<String, String>,
    process: bool,
}

impl MetricsRegistryBuilder {
    /// The bucket upper bounds of the histogram `name` (span durations are histograms named
    /// `<span>_duration_seconds`). Bounds are sorted and deduplicated; NaN and `+Inf` are
    /// dropped (the `+Inf` bucket is always there).
    pub fn buckets(mut self, name: &str, bounds: impl IntoIterator<Item = f64>) -> Self {
        self.buckets
            .insert(metric_name(name).into_owned(), bounds.into_iter().collect());
        self
    }

    /// The bucket upper bounds of every histogram without its own; [`DEFAULT_BUCKETS`]
    /// unless set.
    pub fn default_buckets(mut self, bounds: impl IntoIterator<Item = f64>) -> Self {
        self.default_buckets = Some(bounds.into_iter().collect());
        self
    }

    /// The `# HELP` text of the metric `name`, like [`MetricsRegistry::describe`].
    pub fn help(mut self, name: &str, help: &str) -> Self {
        self.help
            .insert(metric_name(name).into_owned(), help.to_owned());
        self
    }

    /// Whether the registry renders the standard process metrics of the Prometheus client
    /// libraries (off unless set), read from `/proc/self` at each render:
    /// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
    /// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds` and
    /// `process_start_time_seconds`. On systems other than Linux they are absent.
    ///
    /// With them on, their names are reserved everywhere: asking for one as a metric of
    /// your own is [`Error::Reserved`] (and an inert handle through the [`Observer`]
    /// methods).
    ///
    /// ```
    /// use isopace_observe::MetricsRegistry;
    ///
    /// let metrics = MetricsRegistry::builder().process_metrics(true).build();
    /// let text = metrics.render();
    /// # #[cfg(target_os = "linux")]
    /// assert!(text.contains("\n# TYPE process_cpu_seconds_total counter\n"));
    /// ```
    pub fn process_metrics(mut self, on: bool) -> Self {
        self.process = on;
        self
    }

    /// The registry.
    pub fn build(self) -> MetricsRegistry {
        let default_buckets = bounds(
            self.default_buckets
                .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec()),
        );
        MetricsRegistry {
            shared: Arc::new(Shared {
                metrics: RwLock::default(),
                help: RwLock::new(self.help),
                process: self.process,
                reserved: if self.process {
                    process::ALL
                        .iter()
                        .flat_map(|d| claims(d.kind, d.name))
                        .collect()
                } else {
                    HashSet::new()
                },
                buckets: self
                    .buckets
                    .into_iter()
                    .map(|(k, v)| (k, bounds(v)))
                    .collect(),
                default_buckets,
                conflicts_logged: Mutex::default(),
            }),
        }
    }
}

/// One family to render: a registered metric, or a process metric as read just now.
enum Exposed {
    Metric(Entry),
    Process(&'static process::Definition, f64),
}

impl Exposed {
    fn name(&self) -> &str {
        match self {
            Exposed::Metric(e) => &e.name,
            Exposed::Process(d, _) => d.name,
        }
    }
}

/// The help text of the metric rendered as `name`; a counter's may be given without
/// `_total`.
fn help_for<'h>(
    help: &'h HashMap<String, String>,
    name: &str,
    kind: MetricKind,
) -> Option<&'h str> {
    help.get(name)
        .or_else(|| match kind {
            MetricKind::Counter => help.get(name.strip_suffix("_total")?),
            _ => None,
        })
        .map(String::as_str)
}

fn bounds(mut v: Vec<f64>) -> Arc<[f64]> {
    v.retain(|b| !b.is_nan() && *b != f64::INFINITY);
    v.sort_by(f64::total_cmp);
    v.dedup();
    v.into()
}
