//! Spans: the facade's span backend over an OpenTelemetry span, and running a future inside one.

use std::{error::Error as StdError, future::IntoFuture};

use isopace_observe::{Attr, SpanBackend, error_chain};
use opentelemetry::{
    Context,
    context::{FutureExt as _, WithContext},
    global::BoxedTracer,
    trace::{SpanBuilder, Status, TraceContextExt as _, Tracer as _},
};

use crate::attrs::{key_value, key_values};

/// An isopace span backed by an OpenTelemetry span.
///
/// The span lives in a `Context` rather than on its own: the same context is what a caller
/// makes current to start children, so both see one span.
pub(crate) struct OtelSpan {
    cx: Context,
    /// The last error's message and source chain; the status is set from it when the span
    /// ends, because the SDK orders two error statuses by their text rather than by time.
    error: Option<String>,
}

impl OtelSpan {
    /// Starts a span named `name` as a child of whatever span the current context holds.
    pub(crate) fn start(tracer: &BoxedTracer, name: &str, attrs: &[Attr<'_>]) -> Self {
        let parent = Context::current();
        // Attributes go on the builder, not after the start, so samplers see them.
        let builder = SpanBuilder::from_name(name.to_owned()).with_attributes(key_values(attrs));
        let span = tracer.build_with_context(builder, &parent);
        OtelSpan {
            cx: parent.with_span(span),
            error: None,
        }
    }

    /// The context that carries this span, for starting children inside it.
    pub(crate) fn context(&self) -> Context {
        self.cx.clone()
    }
}

impl SpanBackend for OtelSpan {
    fn set_attr(&mut self, attr: &Attr<'_>) {
        self.cx.span().set_attribute(key_value(attr));
    }

    fn set_error(&mut self, error: &(dyn StdError + 'static)) {
        self.cx.span().record_error(error);
        self.error = Some(error_chain(error));
    }

    fn end(self: Box<Self>) {
        let span = self.cx.span();
        if let Some(message) = self.error {
            span.set_status(Status::error(message));
        }
        span.end();
    }
}

/// Runs `future` with `cx` as the current OpenTelemetry context on every poll, so spans the
/// future starts through an [`OtelObserver`](crate::OtelObserver) become children of the
/// span `cx` carries, whichever thread polls it.
///
/// `cx` usually comes from [`OtelObserver::start_span_with_context`](crate::OtelObserver::start_span_with_context).
/// This is `opentelemetry`'s `FutureExt::with_context`; use that directly if you prefer.
#[must_use = "the future does nothing unless awaited or spawned"]
pub fn in_span<F: IntoFuture>(cx: &Context, future: F) -> WithContext<F::IntoFuture> {
    future.into_future().with_context(cx.clone())
}
