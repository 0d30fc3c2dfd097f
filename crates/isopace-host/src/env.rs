//! `Env`: what the host shares with its components — config, observer, typed extensions,
//! a log context and the component's published details.

use std::{
    fmt,
    future::Future,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use isopace_config::Config;
use isopace_observe::{NopObserver, Observer};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{Instrument, instrument::Instrumented};

use crate::{
    BoxError, Extensions, Health, ListenAddr, Listener, Redact, error_chain,
    instance::{Instance, Live, TaskGuard},
    listen::Listeners,
};

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
/// # Supervision
///
/// A component's life does not end with `start` returning, and the host watches all of it
/// through the env its instance was started with:
/// - tasks spawned with [`Env::spawn`] and [`Env::spawn_fallible`] belong to the instance: a
///   panic in one, or an `Err` from a fallible one, is the component's failure; after the
///   component's `stop` returns, the host cancels [`Env::cancellation`] and waits for them
///   within what is left of the stop bound, then aborts what still runs;
/// - [`Env::fail`] reports a failure directly, [`Env::finish`] a clean end of its work;
/// - [`Env::ready_later`] in `start` defers readiness until [`Env::set_ready`];
/// - [`Env::set_health`] reports health; unhealthy past [`Env::set_unhealthy_threshold`]
///   is a failure.
///
/// What follows a failure is the component's [`RestartPolicy`](crate::RestartPolicy).
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
    /// The host's bound sockets, shared by every env of one host.
    listeners: Arc<Listeners>,
    component: Option<Arc<str>>,
    span: tracing::Span,
    /// What the component reports, shared with its status row.
    live: Option<Arc<Live>>,
    /// The started instance this env belongs to, when the host started it.
    instance: Option<Arc<Instance>>,
    /// Hides the component's secrets in texts about it.
    redact: Option<Redact>,
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
            listeners: Arc::default(),
            component: None,
            span: tracing::Span::none(),
            live: None,
            instance: None,
            redact: None,
        }
    }

    /// The same env scoped to the component `name`, with no details published yet. It
    /// shares the config, the observer and the extensions.
    pub fn for_component(&self, name: &str) -> Env {
        self.scoped(name, Arc::default())
    }

    /// [`for_component`](Env::for_component), reporting into `live` (the host's record
    /// for the component).
    pub(crate) fn scoped(&self, name: &str, live: Arc<Live>) -> Env {
        Env {
            config: self.config.clone(),
            observer: Arc::clone(&self.observer),
            extensions: self.extensions.clone(),
            listeners: Arc::clone(&self.listeners),
            component: Some(Arc::from(name)),
            span: tracing::info_span!("component", component = name),
            live: Some(live),
            instance: None,
            redact: None,
        }
    }

    pub(crate) fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// Listens on `addr` with the [default backlog](crate::DEFAULT_BACKLOG); see
    /// [`listen_with_backlog`](Env::listen_with_backlog).
    pub async fn listen(&self, addr: &ListenAddr) -> std::io::Result<Listener> {
        self.listen_with_backlog(addr, crate::DEFAULT_BACKLOG).await
    }

    /// A listener on `addr` whose socket belongs to the host, not to this instance.
    ///
    /// The first instance of a component to ask binds the socket (resolving a host name,
    /// creating a Unix socket with mode 0600); a later version of the same component — a
    /// redeploy or a restart — gets the same socket and accepts at once, so connections
    /// arriving in between wait in the backlog instead of being refused. The socket closes
    /// when the component is undeployed, when the host stops, or when a newly started
    /// version did not ask for that address. Call it in `start`. `backlog` applies when the
    /// socket is first bound. Outside a host, it binds a socket of its own.
    pub async fn listen_with_backlog(
        &self,
        addr: &ListenAddr,
        backlog: u32,
    ) -> std::io::Result<Listener> {
        match (&self.component, &self.instance) {
            (Some(component), Some(instance)) => {
                self.listeners
                    .listen(component, instance.generation, addr, backlog)
                    .await
            }
            // Not started by a host: a registry of its own, so nothing is shared.
            _ => {
                Arc::new(Listeners::default())
                    .listen(&Arc::from(""), 0, addr, backlog)
                    .await
            }
        }
    }

    /// The same env with a redactor for the component's secrets.
    pub(crate) fn with_redact(mut self, redact: Option<Redact>) -> Env {
        self.redact = redact;
        self
    }

    /// `text` with the component's secrets replaced by references to them (a value its
    /// descriptor took from the environment becomes `${VAR}`): for logging anything built
    /// from its configuration, such as a command line. Unchanged when there is nothing to
    /// hide.
    pub fn redact(&self, text: &str) -> String {
        match &self.redact {
            Some(redact) => redact(text),
            None => text.to_owned(),
        }
    }

    /// The same env bound to a newly started instance.
    pub(crate) fn with_instance(&self, instance: Arc<Instance>) -> Env {
        Env {
            instance: Some(instance),
            ..self.clone()
        }
    }

    fn generation(&self) -> u64 {
        self.instance.as_ref().map_or(0, |i| i.generation)
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
        if let Some(live) = &self.live {
            live.set_details(self.generation(), Some(details));
        }
    }

    /// Removes this component's published details.
    pub fn clear_details(&self) {
        if let Some(live) = &self.live {
            live.set_details(self.generation(), None);
        }
    }

    /// The details this component published last.
    pub fn details(&self) -> Option<Value> {
        self.live
            .as_ref()
            .and_then(|l| l.read(|s| s.details.clone()))
    }

    /// Declares, during `start`, that the component becomes ready later than `start`
    /// returning; it is not ready until [`set_ready`](Env::set_ready)`(true)`. Without it, a
    /// component is ready once `start` returns.
    pub fn ready_later(&self) {
        if let Some(instance) = &self.instance {
            instance.ready_later.store(true, Ordering::Release);
        }
    }

    /// Says whether the component is ready to serve. Reports from an instance that has since
    /// been replaced are ignored.
    pub fn set_ready(&self, ready: bool) {
        if let Some(live) = &self.live {
            live.set_ready(self.generation(), ready);
        }
    }

    /// Reports the component's health. [`Health::Unhealthy`] that lasts longer than the
    /// [unhealthy threshold](Env::set_unhealthy_threshold) is the component's failure.
    pub fn set_health(&self, health: Health) {
        // The reason shows in the status, in logs and in a failure: hide secrets in it.
        let health = match health {
            Health::Degraded(reason) => Health::Degraded(self.redact(&reason)),
            Health::Unhealthy(reason) => Health::Unhealthy(self.redact(&reason)),
            healthy => healthy,
        };
        match (&self.instance, &self.live) {
            (Some(instance), _) => instance.set_health(health),
            (None, Some(live)) => {
                live.set_health(0, health);
            }
            (None, None) => {}
        }
    }

    /// How long the component may stay unhealthy before that is a failure (zero unless set:
    /// an unhealthy report is a failure at once).
    pub fn set_unhealthy_threshold(&self, threshold: Duration) {
        if let Some(instance) = &self.instance {
            instance.set_unhealthy_threshold(threshold);
        }
    }

    /// Declares how long this instance's stop may take, instead of the host's stop timeout:
    /// for a component whose stop has a known length of its own (a child process's grace
    /// period before it is killed), capped by the host's shutdown timeout. The component
    /// stays `stopping` until its stop returns or this bound passes.
    pub fn set_stop_timeout(&self, timeout: Duration) {
        if let Some(instance) = &self.instance {
            instance.set_stop_timeout(timeout);
        }
    }

    /// Reports that the component failed after `start` returned. The host stops it and
    /// applies its restart policy. Only an instance's first report counts; on an env the
    /// host did not start this only logs.
    pub fn fail(&self, error: impl Into<BoxError>) {
        let error: BoxError = error.into();
        let chain = self.redact(&error_chain(error.as_ref()));
        match &self.instance {
            Some(instance) => instance.fail(chain),
            None => {
                tracing::error!(parent: &self.span, error = %chain, "component failed");
            }
        }
    }

    /// Reports that the component finished its work cleanly (a one-shot job, a child that
    /// exited 0). The host stops it, and restarts it only under
    /// [`Restart::Always`](crate::Restart::Always).
    pub fn finish(&self) {
        if let Some(instance) = &self.instance {
            instance.finish();
        }
    }

    /// A token the host cancels when the component's `stop` has returned, for its tasks to
    /// wind down; a fresh, never-cancelled token on an env the host did not start.
    pub fn cancellation(&self) -> CancellationToken {
        self.instance
            .as_ref()
            .map_or_else(CancellationToken::new, |i| i.token.clone())
    }

    /// Completes once the host cancels this instance's tasks (see
    /// [`cancellation`](Env::cancellation)).
    pub fn cancelled(&self) -> WaitForCancellationFutureOwned {
        self.cancellation().cancelled_owned()
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

    /// Spawns a background task of the component on the current tokio runtime,
    /// instrumented with [`Env::instrument`].
    ///
    /// When the host started the component, the task belongs to that instance: a panic in
    /// it is the component's failure (the returned handle still sees the panic), and the
    /// host awaits it after the component's `stop`, aborting it if it outlives the stop
    /// bound.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(instance) = &self.instance else {
            return tokio::spawn(self.instrument(future));
        };
        let id = instance.reserve();
        let env = self.clone();
        let guard = TaskGuard {
            instance: Arc::clone(instance),
            id,
        };
        let task = async move {
            let guard = guard;
            match crate::call::CatchUnwind(Box::pin(future)).await {
                Ok(output) => output,
                Err(panic) => {
                    let message = env.redact(&crate::call::panic_message(&*panic));
                    guard
                        .instance
                        .fail(format!("a task of the component panicked: {message}"));
                    std::panic::resume_unwind(panic)
                }
            }
        };
        let handle = instance.tracker.spawn(self.instrument(task));
        instance.register(id, handle.abort_handle());
        handle
    }

    /// Spawns a fallible background task of the component, like [`spawn`](Env::spawn): an
    /// `Err` it returns is the component's failure, an `Ok` is not.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime, like [`tokio::spawn`].
    pub fn spawn_fallible<F, E>(&self, future: F) -> JoinHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let env = self.clone();
        self.spawn(async move {
            if let Err(error) = future.await {
                env.fail(error);
            }
        })
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
