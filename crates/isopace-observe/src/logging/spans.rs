//! [`SpansAlways`]: a level filter that filters events only, so a span outlives level changes.

use tracing::{
    Event, Metadata, Subscriber, level_filters::LevelFilter, span, subscriber::Interest,
};
use tracing_subscriber::layer::{Context, Layer};

/// Wraps the (reloadable) level filter so that it never disables a span.
///
/// A span disabled when it is created stays disabled for its whole life: a component's span
/// created while the level was `error` would leave every later line of that component without
/// its name, even after the level is lowered. So spans are always enabled, and the level and
/// the directives decide about events alone. Everything else still reaches the inner filter —
/// the callsite registration, and each span's creation, entry, exit and close — so the span
/// directives of `EnvFilter` (`[component{component=edge}]=debug`) keep their scope tracking.
pub(super) struct SpansAlways<L> {
    inner: L,
}

impl<L> SpansAlways<L> {
    pub(super) fn new(inner: L) -> Self {
        SpansAlways { inner }
    }
}

impl<S, L> Layer<S> for SpansAlways<L>
where
    S: Subscriber,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Always asked, spans included: `EnvFilter` learns here which span callsites its span
        // directives match.
        let interest = self.inner.register_callsite(metadata);
        if metadata.is_span() {
            Interest::always()
        } else {
            interest
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        metadata.is_span() || self.inner.enabled(metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // A span of any level may be created, whatever the inner filter lets through; the
        // hint would turn spans above it off before the subscriber is even asked.
        Some(LevelFilter::TRACE)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}
