//! [`FanoutObserver`]: one observer that forwards to several (tracing plus metrics).

use std::{error::Error as StdError, sync::Arc};

use crate::facade::{
    Attr, Counter, CounterBackend, Gauge, GaugeBackend, Histogram, HistogramBackend, Observer,
    Span, SpanBackend,
};

/// Forwards every span, counter, histogram and gauge, and every
/// [`forget`](Observer::forget) and [`describe`](Observer::describe), to each of its
/// observers.
///
/// Children that hand out inert handles are skipped, and when only one child records, its
/// handle is returned as is, so fanning out costs nothing over the observers themselves.
/// Cloning is cheap and clones share the children.
///
/// ```
/// use std::sync::Arc;
/// use isopace_observe::{FanoutObserver, MetricsRegistry, Observer, TracingObserver};
///
/// let metrics = MetricsRegistry::new();
/// let obs = FanoutObserver::new(vec![Arc::new(TracingObserver::new()), Arc::new(metrics.clone())]);
/// obs.counter("jobs").add(1, &[]);
/// assert!(metrics.render().contains("jobs_total 1"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct FanoutObserver {
    children: Arc<[Arc<dyn Observer>]>,
}

impl FanoutObserver {
    /// An observer forwarding to each of `children`, in order.
    pub fn new(children: Vec<Arc<dyn Observer>>) -> Self {
        FanoutObserver {
            children: children.into(),
        }
    }

    /// The same observers plus `child`.
    #[must_use]
    pub fn with(self, child: impl Observer + 'static) -> Self {
        let mut children = self.children.to_vec();
        children.push(Arc::new(child));
        FanoutObserver::new(children)
    }

    /// The observers forwarded to.
    pub fn children(&self) -> &[Arc<dyn Observer>] {
        &self.children
    }
}

impl Observer for FanoutObserver {
    fn start_span(&self, name: &str, attrs: &[Attr<'_>]) -> Span {
        let mut spans: Vec<Span> = self
            .children
            .iter()
            .map(|c| c.start_span(name, attrs))
            .filter(Span::is_recording)
            .collect();
        match spans.len() {
            0 => Span::noop(),
            1 => spans.pop().unwrap_or_else(Span::noop),
            _ => Span::new(Box::new(FanoutSpan(spans))),
        }
    }

    fn counter(&self, name: &str) -> Counter {
        let mut counters: Vec<Counter> = self
            .children
            .iter()
            .map(|c| c.counter(name))
            .filter(Counter::is_recording)
            .collect();
        match counters.len() {
            0 => Counter::noop(),
            1 => counters.pop().unwrap_or_else(Counter::noop),
            _ => Counter::new(Arc::new(FanoutCounter(counters))),
        }
    }

    fn histogram(&self, name: &str) -> Histogram {
        let mut histograms: Vec<Histogram> = self
            .children
            .iter()
            .map(|c| c.histogram(name))
            .filter(Histogram::is_recording)
            .collect();
        match histograms.len() {
            0 => Histogram::noop(),
            1 => histograms.pop().unwrap_or_else(Histogram::noop),
            _ => Histogram::new(Arc::new(FanoutHistogram(histograms))),
        }
    }

    fn gauge(&self, name: &str) -> Gauge {
        let mut gauges: Vec<Gauge> = self
            .children
            .iter()
            .map(|c| c.gauge(name))
            .filter(Gauge::is_recording)
            .collect();
        match gauges.len() {
            0 => Gauge::noop(),
            1 => gauges.pop().unwrap_or_else(Gauge::noop),
            _ => Gauge::new(Arc::new(FanoutGauge(gauges))),
        }
    }

    fn forget(&self, attrs: &[Attr<'_>]) {
        for c in self.children.iter() {
            c.forget(attrs);
        }
    }

    fn describe(&self, name: &str, help: &str) {
        for c in self.children.iter() {
            c.describe(name, help);
        }
    }
}

struct FanoutSpan(Vec<Span>);

impl SpanBackend for FanoutSpan {
    fn set_attr(&mut self, attr: &Attr<'_>) {
        for s in &mut self.0 {
            s.set_attr(attr.clone());
        }
    }

    fn set_error(&mut self, error: &(dyn StdError + 'static)) {
        for s in &mut self.0 {
            s.set_error(error);
        }
    }

    fn end(self: Box<Self>) {
        self.0.into_iter().for_each(Span::end);
    }
}

struct FanoutCounter(Vec<Counter>);

impl CounterBackend for FanoutCounter {
    fn add(&self, n: u64, attrs: &[Attr<'_>]) {
        for c in &self.0 {
            c.add(n, attrs);
        }
    }
}

struct FanoutHistogram(Vec<Histogram>);

impl HistogramBackend for FanoutHistogram {
    fn observe(&self, value: f64, attrs: &[Attr<'_>]) {
        for h in &self.0 {
            h.observe(value, attrs);
        }
    }
}

struct FanoutGauge(Vec<Gauge>);

impl GaugeBackend for FanoutGauge {
    fn set(&self, value: f64, attrs: &[Attr<'_>]) {
        for g in &self.0 {
            g.set(value, attrs);
        }
    }

    fn add(&self, delta: f64, attrs: &[Attr<'_>]) {
        for g in &self.0 {
            g.add(delta, attrs);
        }
    }

    fn remove(&self, attrs: &[Attr<'_>]) {
        for g in &self.0 {
            g.remove(attrs);
        }
    }
}
