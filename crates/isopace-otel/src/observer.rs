//! [`OtelObserver`]: the facade's observer over the OpenTelemetry tracing and metrics API.

use std::{collections::HashMap, fmt, sync::Arc};

use isopace_observe::{
    Attr, Counter, CounterBackend, Gauge, Histogram, HistogramBackend, Observer, Span,
};
use opentelemetry::{
    Context, InstrumentationScope, global,
    global::BoxedTracer,
    metrics::{self, Meter, MeterProvider},
    trace::{Tracer, TracerProvider},
};
use parking_lot::RwLock;

use crate::{
    attrs::with_key_values,
    gauge::{OtelGauge, canonical},
    span::OtelSpan,
};

/// The instrumentation scope name [`OtelObserver::from_providers`] and
/// [`OtelObserver::global`] use; the scope's version is this crate's.
pub const SCOPE_NAME: &str = "isopace";

/// An [`Observer`] that records through the OpenTelemetry API: spans become OpenTelemetry
/// spans, counters `u64` counters, histograms `f64` histograms, gauges `f64` observable
/// gauges, attributes key-values.
///
/// The observer only talks to the `opentelemetry` API crate; the application installs the
/// SDK and its exporters and hands the observer a tracer and a meter, or the providers they
/// come from. Cheap to clone: clones share the tracer, the meter and the instrument cache.
///
/// - A span's parent is the span in the OpenTelemetry context current when it starts
///   (`opentelemetry::Context::current()`). Nothing makes an isopace span current by itself:
///   run the work that should be its children with [`in_span`](crate::in_span) (across
///   `.await`) or `cx.attach()` (synchronously), where `cx` comes from
///   [`start_span_with_context`](Self::start_span_with_context).
/// - [`Span::set_error`] records the error as an `exception` event and, when the span ends,
///   sets its status to error with the message and its sources joined by `: `. The last
///   error wins.
/// - Instruments are created once per name and cached, so looking one up again is a map
///   read; keep the handle anyway on hot paths.
/// - [`describe`](Observer::describe) gives the instruments created with that name
///   afterwards their description; an instrument created before keeps the one it has.
/// - A gauge is an observable gauge whose series the observer keeps: [`Gauge::add`] is
///   exact, and [`Gauge::remove`] drops the series, which the SDK then stops exporting at
///   its next collection. Each collection reports every series' current value. Once every
///   handle on a gauge and the observer itself are dropped, it reports nothing.
/// - [`forget`](Observer::forget) drops the matching gauge series. Counter and histogram
///   series stay: the OpenTelemetry API has no way to drop a series of a synchronous
///   instrument (with delta temporality they stop being exported once nothing records).
/// - Attributes map by type; a `u64` above `i64::MAX` becomes its decimal text, since
///   OpenTelemetry has no unsigned integers.
#[derive(Clone)]
pub struct OtelObserver {
    inner: Arc<Inner>,
}

struct Inner {
    tracer: BoxedTracer,
    meter: Meter,
    counters: RwLock<HashMap<Box<str>, Counter>>,
    histograms: RwLock<HashMap<Box<str>, Histogram>>,
    gauges: RwLock<HashMap<Box<str>, Arc<OtelGauge>>>,
    descriptions: RwLock<HashMap<Box<str>, Box<str>>>,
}

impl Inner {
    /// The description given to `name`, empty if none was.
    fn description(&self, name: &str) -> String {
        self.descriptions
            .read()
            .get(name)
            .map(|d| d.to_string())
            .unwrap_or_default()
    }
}

impl OtelObserver {
    /// An observer that starts spans with `tracer` and creates instruments with `meter`.
    ///
    /// Use this to choose the instrumentation scope yourself, e.g.
    /// `OtelObserver::new(tracer_provider.tracer("my-daemon"), meter_provider.meter("my-daemon"))`.
    pub fn new<T>(tracer: T, meter: Meter) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        OtelObserver {
            inner: Arc::new(Inner {
                tracer: BoxedTracer::new(Box::new(tracer)),
                meter,
                counters: RwLock::default(),
                histograms: RwLock::default(),
                gauges: RwLock::default(),
                descriptions: RwLock::default(),
            }),
        }
    }

    /// An observer over a tracer and a meter from these providers, in the [`SCOPE_NAME`]
    /// scope.
    pub fn from_providers<TP, MP>(tracer_provider: &TP, meter_provider: &MP) -> Self
    where
        TP: TracerProvider,
        TP::Tracer: Send + Sync + 'static,
        <TP::Tracer as Tracer>::Span: Send + Sync + 'static,
        MP: MeterProvider,
    {
        let scope = scope();
        Self::new(
            tracer_provider.tracer_with_scope(scope.clone()),
            meter_provider.meter_with_scope(scope),
        )
    }

    /// An observer over the global tracer and meter providers, in the [`SCOPE_NAME`] scope.
    ///
    /// Install the providers (`opentelemetry::global::set_tracer_provider` and
    /// `set_meter_provider`) first: the tracer and the meter are taken from whichever
    /// providers are installed when this is called.
    pub fn global() -> Self {
        let scope = scope();
        Self::new(
            global::tracer_with_scope(scope.clone()),
            global::meter_with_scope(scope),
        )
    }

    /// Starts a span like [`Observer::start_span`] and also returns the OpenTelemetry context
    /// that carries it, to run child work in with [`in_span`](crate::in_span) or
    /// `cx.attach()`.
    ///
    /// Ending the [`Span`] ends the OpenTelemetry span; the context stays usable (children
    /// started in it afterwards still name the span as their parent).
    #[must_use = "the span ends when dropped; bind both to variables for the duration of the work"]
    pub fn start_span_with_context(&self, name: &str, attrs: &[Attr<'_>]) -> (Span, Context) {
        let span = OtelSpan::start(&self.inner.tracer, name, attrs);
        let cx = span.context();
        (Span::new(Box::new(span)), cx)
    }

    /// The meter instruments are created with, for kinds the facade does not have (up-down
    /// counters, observable counters).
    pub fn meter(&self) -> &Meter {
        &self.inner.meter
    }
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The handle cached under `name`, created by `create` on first use.
fn cached<H: Clone>(
    cache: &RwLock<HashMap<Box<str>, H>>,
    name: &str,
    create: impl FnOnce() -> H,
) -> H {
    if let Some(handle) = cache.read().get(name) {
        return handle.clone();
    }
    // Another thread may have created it between the two locks: keep whichever came first.
    cache
        .write()
        .entry(name.into())
        .or_insert_with(create)
        .clone()
}

impl Observer for OtelObserver {
    fn start_span(&self, name: &str, attrs: &[Attr<'_>]) -> Span {
        Span::new(Box::new(OtelSpan::start(&self.inner.tracer, name, attrs)))
    }

    fn counter(&self, name: &str) -> Counter {
        cached(&self.inner.counters, name, || {
            let counter = self
                .inner
                .meter
                .u64_counter(name.to_owned())
                .with_description(self.inner.description(name))
                .build();
            Counter::new(Arc::new(OtelCounter(counter)))
        })
    }

    fn histogram(&self, name: &str) -> Histogram {
        cached(&self.inner.histograms, name, || {
            let histogram = self
                .inner
                .meter
                .f64_histogram(name.to_owned())
                .with_description(self.inner.description(name))
                .build();
            Histogram::new(Arc::new(OtelHistogram(histogram)))
        })
    }

    fn gauge(&self, name: &str) -> Gauge {
        let gauge: Arc<OtelGauge> = cached(&self.inner.gauges, name, || {
            Arc::new(OtelGauge::new(
                &self.inner.meter,
                name,
                self.inner.description(name),
            ))
        });
        Gauge::new(gauge)
    }

    fn describe(&self, name: &str, help: &str) {
        self.inner
            .descriptions
            .write()
            .insert(name.into(), help.into());
    }

    fn forget(&self, attrs: &[Attr<'_>]) {
        if attrs.is_empty() {
            return;
        }
        let wanted = canonical(attrs);
        for gauge in self.inner.gauges.read().values() {
            gauge.forget(&wanted);
        }
    }
}

impl fmt::Debug for OtelObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelObserver")
            .field("meter", &self.inner.meter)
            .field("counters", &self.inner.counters.read().len())
            .field("histograms", &self.inner.histograms.read().len())
            .field("gauges", &self.inner.gauges.read().len())
            .finish_non_exhaustive()
    }
}

struct OtelCounter(metrics::Counter<u64>);

impl CounterBackend for OtelCounter {
    fn add(&self, n: u64, attrs: &[Attr<'_>]) {
        with_key_values(attrs, |kvs| self.0.add(n, kvs));
    }
}

struct OtelHistogram(metrics::Histogram<f64>);

impl HistogramBackend for OtelHistogram {
    fn observe(&self, value: f64, attrs: &[Attr<'_>]) {
        with_key_values(attrs, |kvs| self.0.record(value, kvs));
    }
}
