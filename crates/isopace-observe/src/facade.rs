//! The facade itself: the `Observer` trait, its handles, attributes and the no-op default.

use std::{borrow::Cow, error::Error as StdError, fmt, sync::Arc};

use crate::metrics::CounterFamily;

/// The traces-and-metrics facade.
///
/// Object-safe and `Send + Sync`, so a host can share one `Arc<dyn Observer>` with every
/// component. Implementations hand out cheap handles: a [`Span`] for a unit of work, a
/// [`Counter`], a [`Histogram`] and a [`Gauge`] by name. Callers may cache handles;
/// implementations should make repeated lookups of one name cheap too.
///
/// [`gauge`](Self::gauge), [`forget`](Self::forget) and [`describe`](Self::describe) have
/// defaults (an inert gauge, forgetting nothing, describing nothing), so an implementation
/// without gauges, series to drop or descriptions need not mention them.
pub trait Observer: Send + Sync + fmt::Debug {
    /// Begins a unit of work named `name`, annotated with `attrs`. The span ends when
    /// [`Span::end`] is called or when it is dropped, whichever comes first.
    fn start_span(&self, name: &str, attrs: &[Attr<'_>]) -> Span;
    /// A monotonically increasing instrument.
    fn counter(&self, name: &str) -> Counter;
    /// A distribution instrument (latencies, sizes).
    fn histogram(&self, name: &str) -> Histogram;
    /// An instrument whose value goes up and down (active connections, queue depth, a state).
    ///
    /// The default is [`Gauge::noop`].
    fn gauge(&self, _name: &str) -> Gauge {
        Gauge::noop()
    }
    /// Drops every series, of every instrument, whose label set contains all of `attrs`, so
    /// it is no longer exported: what a host calls when a component goes away, with
    /// `&[attr("component", name)]`.
    ///
    /// Handles stay valid: a later measurement through one starts its series again from
    /// nothing. An empty `attrs` forgets nothing. The default forgets nothing.
    fn forget(&self, _attrs: &[Attr<'_>]) {}
    /// Gives the instrument `name` (as passed to [`counter`](Self::counter),
    /// [`histogram`](Self::histogram) or [`gauge`](Self::gauge)) a one-line description of
    /// what it measures: the `# HELP` line of a Prometheus exposition, an OpenTelemetry
    /// instrument's description.
    ///
    /// Call it before asking for the instrument, since a backend may fix the description
    /// when it creates the instrument; describing a name again replaces its text. The
    /// default describes nothing.
    ///
    /// ```
    /// use isopace_observe::{MetricsRegistry, Observer};
    ///
    /// let metrics = MetricsRegistry::new();
    /// let obs: &dyn Observer = &metrics;
    /// obs.describe("jobs", "Jobs run, by outcome.");
    /// obs.counter("jobs").add(1, &[]);
    /// assert!(metrics.render().starts_with("# HELP jobs_total Jobs run, by outcome.\n"));
    /// ```
    fn describe(&self, _name: &str, _help: &str) {}
}

impl<O: Observer + ?Sized> Observer for Arc<O> {
    fn start_span(&self, name: &str, attrs: &[Attr<'_>]) -> Span {
        (**self).start_span(name, attrs)
    }
    fn counter(&self, name: &str) -> Counter {
        (**self).counter(name)
    }
    fn histogram(&self, name: &str) -> Histogram {
        (**self).histogram(name)
    }
    fn gauge(&self, name: &str) -> Gauge {
        (**self).gauge(name)
    }
    fn forget(&self, attrs: &[Attr<'_>]) {
        (**self).forget(attrs)
    }
    fn describe(&self, name: &str, help: &str) {
        (**self).describe(name, help)
    }
}

/// A key and a typed value annotating a span or a measurement.
///
/// Build one inline with [`attr`]: `attr("mti", "0200")`, `attr("bytes", 512_u64)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr<'a> {
    /// The attribute's name.
    pub key: &'a str,
    /// The attribute's value.
    pub value: AttrValue<'a>,
}

impl<'a> Attr<'a> {
    /// An attribute from a key and anything convertible into an [`AttrValue`].
    pub fn new(key: &'a str, value: impl Into<AttrValue<'a>>) -> Self {
        Attr {
            key,
            value: value.into(),
        }
    }
}

/// Shorthand for [`Attr::new`] that reads well inline: `attr("mti", "0200")`.
pub fn attr<'a>(key: &'a str, value: impl Into<AttrValue<'a>>) -> Attr<'a> {
    Attr::new(key, value)
}

/// The value of an [`Attr`].
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    /// Text, borrowed or owned.
    Str(Cow<'a, str>),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A floating-point number.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl AttrValue<'_> {
    /// The value with any borrowed text copied, so it can outlive the borrow.
    pub fn into_owned(self) -> AttrValue<'static> {
        match self {
            AttrValue::Str(s) => AttrValue::Str(Cow::Owned(s.into_owned())),
            AttrValue::I64(v) => AttrValue::I64(v),
            AttrValue::U64(v) => AttrValue::U64(v),
            AttrValue::F64(v) => AttrValue::F64(v),
            AttrValue::Bool(v) => AttrValue::Bool(v),
        }
    }
}

impl fmt::Display for AttrValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::I64(v) => write!(f, "{v}"),
            AttrValue::U64(v) => write!(f, "{v}"),
            AttrValue::F64(v) => write!(f, "{v}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl<'a> From<&'a str> for AttrValue<'a> {
    fn from(v: &'a str) -> Self {
        AttrValue::Str(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for AttrValue<'a> {
    fn from(v: &'a String) -> Self {
        AttrValue::Str(Cow::Borrowed(v))
    }
}
impl From<String> for AttrValue<'_> {
    fn from(v: String) -> Self {
        AttrValue::Str(Cow::Owned(v))
    }
}
impl<'a> From<Cow<'a, str>> for AttrValue<'a> {
    fn from(v: Cow<'a, str>) -> Self {
        AttrValue::Str(v)
    }
}
macro_rules! from_int {
    ($variant:ident as $target:ty: $($t:ty),*) => {$(
        impl From<$t> for AttrValue<'_> {
            fn from(v: $t) -> Self {
                AttrValue::$variant(<$target>::from(v))
            }
        }
    )*};
}
from_int!(I64 as i64: i8, i16, i32, i64);
from_int!(U64 as u64: u8, u16, u32, u64);
from_int!(F64 as f64: f32, f64);
impl From<usize> for AttrValue<'_> {
    fn from(v: usize) -> Self {
        AttrValue::U64(v as u64)
    }
}
impl From<bool> for AttrValue<'_> {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

/// What an [`Observer`] implementation provides behind a [`Span`].
pub trait SpanBackend: Send {
    /// Adds an attribute to the span.
    fn set_attr(&mut self, attr: &Attr<'_>);
    /// Marks the span failed with `error`.
    fn set_error(&mut self, error: &(dyn StdError + 'static));
    /// Completes the span. Called exactly once, by [`Span::end`] or on drop.
    fn end(self: Box<Self>);
}

/// An in-flight unit of work.
///
/// A span ends exactly once: [`Span::end`] consumes it, and dropping it without calling `end`
/// ends it too. It is `Send`, so it can live across `.await` in a spawned task.
#[must_use = "a span ends when dropped; bind it to a variable for the duration of the work"]
pub struct Span {
    inner: Option<Box<dyn SpanBackend>>,
}

impl Span {
    /// A span that records nothing. Does not allocate.
    pub const fn noop() -> Self {
        Span { inner: None }
    }

    /// A span backed by an implementation.
    pub fn new(backend: Box<dyn SpanBackend>) -> Self {
        Span {
            inner: Some(backend),
        }
    }

    /// Whether this span records anything.
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// Adds an attribute.
    pub fn set_attr(&mut self, attr: Attr<'_>) {
        if let Some(inner) = &mut self.inner {
            inner.set_attr(&attr);
        }
    }

    /// Marks the span failed with `error`.
    pub fn set_error(&mut self, error: &(dyn StdError + 'static)) {
        if let Some(inner) = &mut self.inner {
            inner.set_error(error);
        }
    }

    /// Ends the span now.
    pub fn end(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.end();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.end();
        }
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("recording", &self.is_recording())
            .finish()
    }
}

/// What an [`Observer`] implementation provides behind a [`Counter`].
pub trait CounterBackend: Send + Sync {
    /// Adds `n` to the series identified by `attrs`.
    fn add(&self, n: u64, attrs: &[Attr<'_>]);
}

/// A monotonically increasing instrument. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Counter {
    inner: CounterInner,
}

#[derive(Clone)]
enum CounterInner {
    Noop,
    Backend(Arc<dyn CounterBackend>),
    /// A [`MetricsRegistry`](crate::MetricsRegistry) counter, called without a vtable so the
    /// common add inlines into the caller.
    Registry(Arc<CounterFamily>),
}

impl Counter {
    /// A counter that records nothing. Does not allocate.
    pub const fn noop() -> Self {
        Counter {
            inner: CounterInner::Noop,
        }
    }

    /// A counter backed by an implementation.
    pub fn new(backend: Arc<dyn CounterBackend>) -> Self {
        Counter {
            inner: CounterInner::Backend(backend),
        }
    }

    pub(crate) fn registry(family: Arc<CounterFamily>) -> Self {
        Counter {
            inner: CounterInner::Registry(family),
        }
    }

    /// Whether this counter records anything.
    pub fn is_recording(&self) -> bool {
        !matches!(self.inner, CounterInner::Noop)
    }

    /// Adds `n` to the series identified by `attrs`.
    #[inline]
    pub fn add(&self, n: u64, attrs: &[Attr<'_>]) {
        match &self.inner {
            CounterInner::Noop => {}
            CounterInner::Backend(b) => b.add(n, attrs),
            CounterInner::Registry(f) => f.add(n, attrs),
        }
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("recording", &self.is_recording())
            .finish()
    }
}

/// What an [`Observer`] implementation provides behind a [`Histogram`].
pub trait HistogramBackend: Send + Sync {
    /// Records `value` in the series identified by `attrs`.
    fn observe(&self, value: f64, attrs: &[Attr<'_>]);
}

/// A distribution instrument. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Histogram {
    inner: Option<Arc<dyn HistogramBackend>>,
}

impl Histogram {
    /// A histogram that records nothing. Does not allocate.
    pub const fn noop() -> Self {
        Histogram { inner: None }
    }

    /// A histogram backed by an implementation.
    pub fn new(backend: Arc<dyn HistogramBackend>) -> Self {
        Histogram {
            inner: Some(backend),
        }
    }

    /// Whether this histogram records anything.
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// Records `value` in the series identified by `attrs`.
    #[inline]
    pub fn observe(&self, value: f64, attrs: &[Attr<'_>]) {
        if let Some(inner) = &self.inner {
            inner.observe(value, attrs);
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("recording", &self.is_recording())
            .finish()
    }
}

/// What an [`Observer`] implementation provides behind a [`Gauge`].
pub trait GaugeBackend: Send + Sync {
    /// Sets the series identified by `attrs` to `value`.
    fn set(&self, value: f64, attrs: &[Attr<'_>]);
    /// Adds `delta` (which may be negative) to the series identified by `attrs`.
    fn add(&self, delta: f64, attrs: &[Attr<'_>]);
    /// Drops the series identified by `attrs`, so it is no longer exported until it is set
    /// or added to again. A backend that cannot drop a series says so in its docs and does
    /// nothing here.
    fn remove(&self, attrs: &[Attr<'_>]);
}

/// A value that goes up and down: active connections, queue depth, a state. Cheap to clone;
/// clones share the series.
///
/// Unlike a [`Counter`], a gauge's series can be dropped on purpose with
/// [`remove`](Self::remove), for a label set that no longer exists (a closed listener, an
/// undeployed component); [`Observer::forget`] drops them in bulk.
#[derive(Clone)]
pub struct Gauge {
    inner: Option<Arc<dyn GaugeBackend>>,
}

impl Gauge {
    /// A gauge that records nothing. Does not allocate.
    pub const fn noop() -> Self {
        Gauge { inner: None }
    }

    /// A gauge backed by an implementation.
    pub fn new(backend: Arc<dyn GaugeBackend>) -> Self {
        Gauge {
            inner: Some(backend),
        }
    }

    /// Whether this gauge records anything.
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// Sets the series identified by `attrs` to `value`.
    #[inline]
    pub fn set(&self, value: f64, attrs: &[Attr<'_>]) {
        if let Some(inner) = &self.inner {
            inner.set(value, attrs);
        }
    }

    /// Adds `delta` (which may be negative) to the series identified by `attrs`; a series
    /// that does not exist yet starts at zero.
    #[inline]
    pub fn add(&self, delta: f64, attrs: &[Attr<'_>]) {
        if let Some(inner) = &self.inner {
            inner.add(delta, attrs);
        }
    }

    /// Drops the series identified by `attrs`, so it is no longer exported; a later
    /// [`set`](Self::set) or [`add`](Self::add) starts it again from zero.
    pub fn remove(&self, attrs: &[Attr<'_>]) {
        if let Some(inner) = &self.inner {
            inner.remove(attrs);
        }
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gauge")
            .field("recording", &self.is_recording())
            .finish()
    }
}

/// Discards everything: the zero-cost default, so instrumented code can call the facade
/// unconditionally. Nothing it hands out allocates.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopObserver;

impl Observer for NopObserver {
    fn start_span(&self, _name: &str, _attrs: &[Attr<'_>]) -> Span {
        Span::noop()
    }
    fn counter(&self, _name: &str) -> Counter {
        Counter::noop()
    }
    fn histogram(&self, _name: &str) -> Histogram {
        Histogram::noop()
    }
    fn gauge(&self, _name: &str) -> Gauge {
        Gauge::noop()
    }
    fn forget(&self, _attrs: &[Attr<'_>]) {}
    fn describe(&self, _name: &str, _help: &str) {}
}
