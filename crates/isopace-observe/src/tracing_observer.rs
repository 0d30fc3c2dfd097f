//! [`TracingObserver`]: spans and measurements as `tracing` spans and events.

use std::{error::Error as StdError, fmt, sync::Arc, time::Instant};

use tracing::{Level, field};

use crate::{
    error_chain::error_chain,
    facade::{
        Attr, AttrValue, Counter, CounterBackend, Gauge, GaugeBackend, Histogram, HistogramBackend,
        Observer, Span, SpanBackend,
    },
};

/// The target of the events for counters, histograms and gauges.
pub const METRICS_TARGET: &str = "isopace::metrics";
/// The target of the spans and their start and end events.
pub const SPAN_TARGET: &str = "isopace::span";

/// An [`Observer`] that emits everything through `tracing`: a useful default in development
/// and a stand-in until a metrics backend is wired in.
///
/// - A span becomes a `tracing` span named `span` (level debug, target
///   [`SPAN_TARGET`], fields `span.name` (not `name`, which JSON output uses for the span's
///   own name) and `attrs`) with a debug event `span started` when it
///   starts and `span ended` (with `duration_ms`) when it ends. A span ended after
///   [`Span::set_error`] logs `span ended` at error level instead, with `error` (the error's
///   message) and, if it has sources, `error.sources` (the chain, outermost first, joined by
///   `: `). The
///   `tracing` span is never entered, so holding a [`Span`] across `.await` is fine.
/// - Measurements are *trace* events on [`METRICS_TARGET`]: they come with every request,
///   connection or queued item, far too often for debug output, and the totals are what a
///   [`MetricsRegistry`](crate::MetricsRegistry) is for. A counter add or histogram
///   observation has the fields `name`, `kind` (`counter` or `histogram`), `delta` or
///   `value`, and `attrs`; a gauge change has `name`, `kind` (`gauge`), `value` for
///   [`Gauge::set`], `delta` for [`Gauge::add`] or `removed=true` for [`Gauge::remove`], and
///   `attrs`. Turn them on with the directive `isopace::metrics=trace`.
/// - [`forget`](Observer::forget) does nothing: there is nothing to drop.
///
/// Attributes are rendered as space-separated `key=value` pairs in one `attrs` field;
/// string values with spaces, quotes or `=` are quoted.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingObserver;

impl TracingObserver {
    /// The observer.
    pub const fn new() -> Self {
        TracingObserver
    }
}

impl Observer for TracingObserver {
    fn start_span(&self, name: &str, attrs: &[Attr<'_>]) -> Span {
        let attrs: Vec<(String, OwnedValue)> = attrs
            .iter()
            .map(|a| (a.key.to_owned(), a.value.clone().into_owned()))
            .collect();
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "span",
            span.name = %name,
            attrs = %AttrsDisplay(&attrs),
        );
        tracing::debug!(
            target: SPAN_TARGET,
            parent: &span,
            name = %name,
            attrs = %AttrsDisplay(&attrs),
            "span started"
        );
        Span::new(Box::new(TracingSpan {
            span,
            name: name.to_owned(),
            attrs,
            error: None,
            start: Instant::now(),
        }))
    }

    fn counter(&self, name: &str) -> Counter {
        Counter::new(Arc::new(Instrument {
            name: name.to_owned(),
        }))
    }

    fn histogram(&self, name: &str) -> Histogram {
        Histogram::new(Arc::new(Instrument {
            name: name.to_owned(),
        }))
    }

    fn gauge(&self, name: &str) -> Gauge {
        Gauge::new(Arc::new(Instrument {
            name: name.to_owned(),
        }))
    }
}

struct TracingSpan {
    span: tracing::Span,
    name: String,
    attrs: Vec<(String, OwnedValue)>,
    /// The error's message and its source chain, if it has one.
    error: Option<(String, Option<String>)>,
    start: Instant,
}

impl SpanBackend for TracingSpan {
    fn set_attr(&mut self, attr: &Attr<'_>) {
        self.attrs
            .push((attr.key.to_owned(), attr.value.clone().into_owned()));
        self.span
            .record("attrs", field::display(AttrsDisplay(&self.attrs)));
    }

    fn set_error(&mut self, error: &(dyn StdError + 'static)) {
        self.error = Some((error.to_string(), error.source().map(error_chain)));
    }

    fn end(self: Box<Self>) {
        // A span may end on another thread (a spawned task) than the one that started it:
        // send the end to the subscriber that saw the start, not to that thread's default.
        match self.span.with_subscriber(|(_, dispatch)| dispatch.clone()) {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, || self.log_end()),
            None => self.log_end(),
        }
    }
}

impl TracingSpan {
    fn log_end(&self) {
        // Whole microseconds: sub-microsecond digits are noise in a log line.
        let duration_ms = self.start.elapsed().as_micros() as f64 / 1000.0;
        let attrs = AttrsDisplay(&self.attrs);
        match &self.error {
            None => tracing::event!(
                target: SPAN_TARGET,
                parent: &self.span,
                Level::DEBUG,
                name = %self.name,
                attrs = %attrs,
                duration_ms,
                "span ended"
            ),
            Some((error, sources)) => tracing::event!(
                target: SPAN_TARGET,
                parent: &self.span,
                Level::ERROR,
                name = %self.name,
                attrs = %attrs,
                duration_ms,
                error = %error,
                error.sources = sources.as_ref().map(field::display),
                "span ended"
            ),
        }
    }
}

/// A counter, histogram or gauge that logs each measurement at trace level.
struct Instrument {
    name: String,
}

impl CounterBackend for Instrument {
    fn add(&self, n: u64, attrs: &[Attr<'_>]) {
        tracing::trace!(
            target: METRICS_TARGET,
            name = %self.name,
            kind = "counter",
            delta = n,
            attrs = %BorrowedAttrs(attrs),
        );
    }
}

impl HistogramBackend for Instrument {
    fn observe(&self, value: f64, attrs: &[Attr<'_>]) {
        tracing::trace!(
            target: METRICS_TARGET,
            name = %self.name,
            kind = "histogram",
            value,
            attrs = %BorrowedAttrs(attrs),
        );
    }
}

impl GaugeBackend for Instrument {
    fn set(&self, value: f64, attrs: &[Attr<'_>]) {
        tracing::trace!(
            target: METRICS_TARGET,
            name = %self.name,
            kind = "gauge",
            value,
            attrs = %BorrowedAttrs(attrs),
        );
    }

    fn add(&self, delta: f64, attrs: &[Attr<'_>]) {
        tracing::trace!(
            target: METRICS_TARGET,
            name = %self.name,
            kind = "gauge",
            delta,
            attrs = %BorrowedAttrs(attrs),
        );
    }

    fn remove(&self, attrs: &[Attr<'_>]) {
        tracing::trace!(
            target: METRICS_TARGET,
            name = %self.name,
            kind = "gauge",
            removed = true,
            attrs = %BorrowedAttrs(attrs),
        );
    }
}

/// An attribute value that outlives the caller's borrow.
type OwnedValue = AttrValue<'static>;

fn write_pair(
    f: &mut fmt::Formatter<'_>,
    first: bool,
    key: &str,
    value: &AttrValue<'_>,
) -> fmt::Result {
    if !first {
        f.write_str(" ")?;
    }
    match value {
        AttrValue::Str(s) if s.is_empty() || s.contains([' ', '"', '=', '\n', '\t']) => {
            write!(f, "{key}={s:?}")
        }
        v => write!(f, "{key}={v}"),
    }
}

struct AttrsDisplay<'a>(&'a [(String, OwnedValue)]);

impl fmt::Display for AttrsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            write_pair(f, i == 0, k, v)?;
        }
        Ok(())
    }
}

struct BorrowedAttrs<'s, 'a>(&'s [Attr<'a>]);

impl fmt::Display for BorrowedAttrs<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            write_pair(f, i == 0, a.key, &a.value)?;
        }
        Ok(())
    }
}
