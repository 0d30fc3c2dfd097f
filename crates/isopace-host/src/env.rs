//! `Env`: what the host shares with its components — config, observer, typed extensions,
//! a log context and the component's published details.

use std::{fmt, future::Future, sync::Arc};

use isopace_config::Config;
use isopace_observe::{NopObserver, Observer};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::{Instrument, instrument::Instrumented};

use crate::Extensions;

/// Where a component's published details live; shared by its env and the host's status row.
pub(crate) type DetailsCell = Arc<Mutex<Option<Value>>>;

/// The shared runtime context handed to components and factories.
///
/// Cheap to clone. A host's [`Env`](crate::Host::env) carries the root configuration, the
/// observer (a no-op one unless the host was built with another, so it is never absent) and
/// the [`Extensions`] the host and the daemon provide (a host always provides a
/// [`WeakHost`](crate::WeakHost) to itself).
///
/// The env a component receives in `start` and `stop` is additionally scoped to that
/// component: [`Env::span`] is a tracing span carrying its name, [`Env::spawn`] runs a
/// background task inside that span so every log line of the task names the component, and
/// [`Env::set_details`] publishes what the component wants its status to show.
///
/// ```
/// use isopace_host::Env;
/// use serde_json::json;
///
/// let env = Env::default().for_component("edge");
/// assert_eq!(env.component(), Some("edge"));
/// assert_eq!(env.config().string("missing", "fallback"), "fallback");
/// env.set_details(json!({ "connections": 3 }));
/// assert_eq!(env.details(), Some(json!({ "connections": 3 })));
/// ```
#[derive(Clone)]
pub struct Env {
    config: Config,
    observer: Arc<dyn Observer>,
    extensions: Extensions,
    component: Option<Arc<str>>,
    span: tracing::Span,
    details: Option<DetailsCell>,
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
            extensions: Extensions::default(),
            component: None,
            span: tracing::Span::none(),
            details: None,
        }
    }

    /// The same env scoped to the component `name`, with no details published yet. It
    /// shares the config, the observer and the extensions.
    pub fn for_component(&self, name: &str) -> Env {
        Env {
            config: self.config.clone(),
            observer: Arc::clone(&self.observer),
            extensions: self.extensions.clone(),
            component: Some(Arc::from(name)),
            span: tracing::info_span!("component", component = name),
            details: Some(DetailsCell::default()),
        }
    }

    /// The cell this env publishes details into, shared with the host's status row.
    pub(crate) fn details_cell(&self) -> Option<&DetailsCell> {
        self.details.as_ref()
    }

    /// The root configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The observability facade.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    /// The extensions shared by the host, the daemon and every component.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// A clone of the extension of type `T`, if the host or the daemon provided one.
    pub fn extension<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.extensions.get()
    }

    /// Provides `value` to every env that shares these extensions (the host's and every
    /// component's), returning the value of the same type it replaced.
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.extensions.insert(value)
    }

    /// Publishes `details` as this component's live details (an `exec` child's pid, a
    /// proxy's open connections), replacing what it published before.
    ///
    /// The host's [`ComponentStatus::details`](crate::ComponentStatus::details) carries them,
    /// so every view of the component (`/components`, logs, metrics) reads one source. They
    /// live as long as the component is registered: an undeploy removes them with it, and a
    /// redeployed successor starts with none. On an env not scoped to a component this does
    /// nothing.
    pub fn set_details(&self, details: Value) {
        if let Some(cell) = &self.details {
            *cell.lock() = Some(details);
        }
    }

    /// Removes this component's published details.
    pub fn clear_details(&self) {
        if let Some(cell) = &self.details {
            *cell.lock() = None;
        }
    }

    /// The details this component published last.
    pub fn details(&self) -> Option<Value> {
        self.details.as_ref().and_then(|cell| cell.lock().clone())
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
            .field("extensions", &self.extensions)
            .finish()
    }
}
