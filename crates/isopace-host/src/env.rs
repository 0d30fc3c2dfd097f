//! `Env`: what the host shares with its components — config, observer, and a log context.

use std::{fmt, future::Future, sync::Arc};

use isopace_config::Config;
use isopace_observe::{NopObserver, Observer};
use tokio::task::JoinHandle;
use tracing::{Instrument, instrument::Instrumented};

/// The shared runtime context handed to components and factories.
///
/// Cheap to clone. A host's [`Env`](crate::Host::env) carries the root configuration and the
/// observer (a no-op one unless the host was built with another, so it is never absent).
/// The env a component receives in `start` and `stop` is additionally scoped to that
/// component: [`Env::span`] is a tracing span carrying its name, and [`Env::spawn`] runs a
/// background task inside that span so every log line of the task names the component.
///
/// ```
/// use isopace_host::Env;
///
/// let env = Env::default().for_component("edge");
/// assert_eq!(env.component(), Some("edge"));
/// assert_eq!(env.config().string("missing", "fallback"), "fallback");
/// ```
#[derive(Clone)]
pub struct Env {
    config: Config,
    observer: Arc<dyn Observer>,
    component: Option<Arc<str>>,
    span: tracing::Span,
}

impl Default for Env {
    fn default() -> Self {
        Env::new(Config::default(), Arc::new(NopObserver))
    }
}

impl Env {
    /// An env with the given config and observer, not scoped to any component.
    pub fn new(config: Config, observer: Arc<dyn Observer>) -> Self {
        Env {
            config,
            observer,
            component: None,
            span: tracing::Span::none(),
        }
    }

    /// The same env scoped to the component `name`.
    pub fn for_component(&self, name: &str) -> Env {
        Env {
            config: self.config.clone(),
            observer: Arc::clone(&self.observer),
            component: Some(Arc::from(name)),
            span: tracing::info_span!("component", component = name),
        }
    }

    /// The root configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The observability facade.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    /// The component this env is scoped to, if any.
    pub fn component(&self) -> Option<&str> {
        self.component.as_deref()
    }

    /// The tracing span that names the component (a disabled span when not scoped).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Wraps `future` so everything it logs carries the component's name.
    pub fn instrument<F: Future>(&self, future: F) -> Instrumented<F> {
        future.instrument(self.span.clone())
    }

    /// Spawns a background task on the current tokio runtime, instrumented with
    /// [`Env::instrument`].
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(self.instrument(future))
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("component", &self.component)
            .field("config", &self.config)
            .field("observer", &self.observer)
            .finish()
    }
}
