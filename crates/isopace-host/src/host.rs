//! `Host`: registration, ordered start, reverse stop, deploy and undeploy while running, run.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use isopace_config::Config;
use isopace_observe::{NopObserver, Observer, attr};
use tokio::time::Instant;

use crate::{
    Component, Env,
    call::{Call, Instruments, check_reentrant},
    error::{ComponentError, Error, Failure, Phase},
    error_chain,
    status::{ComponentStatus, Key, STATE_GAUGE, Slot, State, Table},
};

/// Default bound on [`Host::run`]'s stop after the shutdown signal.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on one component's start.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on one component's stop.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT_HOST_ID: AtomicU64 = AtomicU64::new(1);

/// Owns the lifecycle of a set of [`Component`]s.
///
/// Components start in registration order and stop in reverse, so each starts after — and
/// stops before — the components registered ahead of it. Components can also be deployed and
/// undeployed while the host runs.
///
/// `Host` is cheap to clone: clones share one set of components. Lifecycle calls are
/// serialised inside, so any task may call them concurrently; [`status`](Host::status) and
/// [`components`](Host::components) never wait for a lifecycle call in progress. Dropping the
/// last handle drops every component (without stopping them: call [`stop`](Host::stop)
/// first). Hand a component that needs the host a [`WeakHost`] so the host can be released.
///
/// ```
/// # use isopace_host::{async_trait, BoxError, Component, Env, Host};
/// # struct Noop(&'static str);
/// # #[async_trait]
/// # impl Component for Noop {
/// #     fn name(&self) -> &str { self.0 }
/// #     async fn start(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
/// #     async fn stop(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), isopace_host::Error> {
/// let host = Host::builder().build();
/// host.register(Noop("link"))?;
/// host.register(Noop("switch"))?;
/// host.start().await?;
/// host.deploy(Noop("flow")).await?;
/// assert_eq!(host.components(), ["link", "switch", "flow"]);
/// host.stop().await?; // flow, switch, link
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

/// A handle that does not keep the host alive; see [`Host::downgrade`].
#[derive(Clone)]
pub struct WeakHost {
    inner: Weak<Inner>,
}

struct Inner {
    id: u64,
    env: Env,
    settings: Settings,
    instruments: Instruments,
    /// Serialises lifecycle calls. Held across the components' awaits.
    lifecycle: tokio::sync::Mutex<()>,
    /// Names, states and the components themselves. Held only briefly, never across an await.
    state: parking_lot::Mutex<Slots>,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    shutdown_timeout: Duration,
    start_timeout: Duration,
    stop_timeout: Duration,
}

/// Whether the host as a whole is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostPhase {
    Idle,
    Starting,
    Running,
    Stopping,
}

struct Slots {
    phase: HostPhase,
    table: Table,
}

/// Builds a [`Host`]; see [`Host::builder`].
#[must_use = "call build() to get the host"]
#[derive(Debug)]
pub struct HostBuilder {
    config: Config,
    observer: Arc<dyn Observer>,
    settings: Settings,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            config: Config::default(),
            observer: Arc::new(NopObserver),
            settings: Settings {
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                start_timeout: DEFAULT_START_TIMEOUT,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
            },
        }
    }
}

impl HostBuilder {
    /// The root configuration shared with components (default: empty).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The observability facade shared with components (default: [`NopObserver`]).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// How long [`Host::run`] waits for every component to stop after the shutdown signal
    /// (default [`DEFAULT_SHUTDOWN_TIMEOUT`], 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.settings.shutdown_timeout = timeout;
        self
    }

    /// How long one component's start may take before it is abandoned and reported
    /// (default [`DEFAULT_START_TIMEOUT`], 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.settings.start_timeout = timeout;
        self
    }

    /// How long one component's stop may take before it is abandoned and reported
    /// (default [`DEFAULT_STOP_TIMEOUT`], 15 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop_timeout = timeout;
        self
    }

    /// Builds the host. Its env's extensions hold a [`WeakHost`] to it.
    pub fn build(self) -> Host {
        let instruments = Instruments::new(&*self.observer);
        let table = Table::new(self.observer.gauge(STATE_GAUGE));
        let env = Env::new(self.config, self.observer);
        let inner = Arc::new_cyclic(|weak| {
            env.insert_extension(WeakHost {
                inner: Weak::clone(weak),
            });
            Inner {
                id: NEXT_HOST_ID.fetch_add(1, Ordering::Relaxed),
                env,
                settings: self.settings,
                instruments,
                lifecycle: tokio::sync::Mutex::new(()),
                state: parking_lot::Mutex::new(Slots {
                    phase: HostPhase::Idle,
                    table,
                }),
            }
        });
        Host { inner }
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::builder().build()
    }
}

impl Host {
    /// A builder with the documented defaults.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The env shared with components: config and observer.
    pub fn env(&self) -> &Env {
        &self.inner.env
    }

    /// A handle that does not keep the host alive.
    pub fn downgrade(&self) -> WeakHost {
        WeakHost {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Whether the host is started (its start finished and its stop has not begun).
    pub fn is_running(&self) -> bool {
        self.inner.state.lock().phase == HostPhase::Running
    }

    /// Registers a component to be started by [`start`](Host::start).
    ///
    /// Fails with [`Error::Running`] once the host is started (use
    /// [`deploy`](Host::deploy) then) and with [`Error::Duplicate`] when the name is taken.
    pub fn register(&self, component: impl Component) -> Result<(), Error> {
        self.register_boxed(Box::new(component))
    }

    /// [`register`](Host::register) for an already boxed component.
    pub fn register_boxed(&self, component: Box<dyn Component>) -> Result<(), Error> {
        check_reentrant(self.inner.id, "register")?;
        let mut slots = self.inner.state.lock();
        if slots.phase != HostPhase::Idle {
            return Err(Error::Running);
        }
        slots.insert(component, &self.inner.env).map(drop)
    }

    /// The component names in lifecycle (registration) order.
    pub fn components(&self) -> Vec<String> {
        self.inner.state.lock().table.names()
    }

    /// The state of every component, in lifecycle order.
    pub fn status(&self) -> Vec<ComponentStatus> {
        self.inner.state.lock().table.statuses()
    }

    /// The state of one component.
    pub fn status_of(&self, name: &str) -> Option<ComponentStatus> {
        self.inner.state.lock().table.status_of(name)
    }

    /// Starts every registered component in registration order.
    ///
    /// If one fails, it is stopped (see the [`Component`] contract) and so are the components
    /// already started, in reverse; the returned [`Error::Start`] carries the failure and
    /// every failure while unwinding. The host is then stopped and may be started again.
    pub async fn start(&self) -> Result<(), Error> {
        check_reentrant(self.inner.id, "start")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let order = {
            let mut slots = self.inner.state.lock();
            if slots.phase != HostPhase::Idle {
                return Err(Error::Running);
            }
            slots.phase = HostPhase::Starting;
            slots.table.keys()
        };
        let cancelled = OnCancel::new(|| self.settle_phase());
        tracing::info!(components = order.len(), "host starting");
        let mut started = Vec::with_capacity(order.len());
        for key in order {
            if let Err(failure) = self.call(key, Phase::Start, None).await {
                let mut unwind = Vec::new();
                if let Err(e) = self.call(key, Phase::Stop, None).await {
                    unwind.push(e);
                }
                self.mark(key, State::Failed, Some(&failure));
                for &key in started.iter().rev() {
                    if let Err(e) = self.call(key, Phase::Stop, None).await {
                        unwind.push(e);
                    }
                }
                cancelled.defuse();
                self.inner.state.lock().phase = HostPhase::Idle;
                let error = Error::Start { failure, unwind };
                tracing::error!(error = %format_args!("{error:#}"), "host start failed");
                return Err(error);
            }
            started.push(key);
        }
        cancelled.defuse();
        self.inner.state.lock().phase = HostPhase::Running;
        tracing::info!("host started");
        Ok(())
    }

    /// Stops every running component in reverse order, each bounded by the stop timeout.
    ///
    /// Every component is asked to stop even when some fail; the failures are joined in
    /// [`Error::Stop`]. Afterwards the host can be started again. Stopping a host that is
    /// not running does nothing.
    pub async fn stop(&self) -> Result<(), Error> {
        self.stop_until(None).await
    }

    /// Like [`stop`](Host::stop), but the whole stop must finish within `timeout`: components
    /// whose turn comes after it has passed, or whose stop it cuts short, are reported in
    /// [`Error::ShutdownTimeout`].
    pub async fn stop_within(&self, timeout: Duration) -> Result<(), Error> {
        self.stop_until(Some((Instant::now() + timeout, timeout)))
            .await
    }

    async fn stop_until(&self, deadline: Option<(Instant, Duration)>) -> Result<(), Error> {
        check_reentrant(self.inner.id, "stop")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let order = {
            let mut slots = self.inner.state.lock();
            if slots.phase != HostPhase::Running {
                return Ok(());
            }
            slots.phase = HostPhase::Stopping;
            slots.table.keys_in(State::Running)
        };
        let cancelled = OnCancel::new(|| self.settle_phase());
        tracing::info!(components = order.len(), "host stopping");
        let mut errors = Vec::new();
        let mut stopping = Vec::new();
        for key in order.into_iter().rev() {
            let Some(limit) = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()))
            else {
                if let Err(e) = self.call(key, Phase::Stop, None).await {
                    errors.push(e);
                }
                continue;
            };
            if limit.is_zero() {
                let name = self.name_of(key);
                self.mark_abandoned(key, &name);
                stopping.push(name);
                continue;
            }
            match self.call(key, Phase::Stop, Some(limit)).await {
                Ok(()) => {}
                Err(e) if matches!(e.failure(), Failure::TimedOut(t) if *t < self.inner.settings.stop_timeout) =>
                {
                    stopping.push(e.component().to_owned());
                }
                Err(e) => errors.push(e),
            }
        }
        cancelled.defuse();
        self.inner.state.lock().phase = HostPhase::Idle;
        if !stopping.is_empty() {
            let timeout = deadline.map(|(_, t)| t).unwrap_or_default();
            let error = Error::ShutdownTimeout {
                timeout,
                stopping,
                errors,
            };
            tracing::error!(error = %format_args!("{error:#}"), "host stop timed out");
            return Err(error);
        }
        if errors.is_empty() {
            tracing::info!("host stopped");
            Ok(())
        } else {
            let error = Error::Stop(errors);
            tracing::error!(error = %format_args!("{error:#}"), "host stopped with errors");
            Err(error)
        }
    }

    /// Adds a component and, if the host is running, starts it at once.
    ///
    /// A deploy whose start fails leaves nothing registered: the component is stopped (see
    /// the [`Component`] contract), dropped, and the start failure returned. Before the host
    /// starts, this is [`register`](Host::register).
    pub async fn deploy(&self, component: impl Component) -> Result<(), Error> {
        self.deploy_boxed(Box::new(component)).await
    }

    /// [`deploy`](Host::deploy) for an already boxed component.
    pub async fn deploy_boxed(&self, component: Box<dyn Component>) -> Result<(), Error> {
        check_reentrant(self.inner.id, "deploy")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let (key, running) = {
            let mut slots = self.inner.state.lock();
            let running = slots.phase == HostPhase::Running;
            (slots.insert(component, &self.inner.env)?, running)
        };
        if !running {
            return Ok(());
        }
        // A deploy abandoned mid-start leaves nothing registered, like a failed one.
        // Its metric series stay: they record the failure.
        let cancelled = OnCancel::new(|| self.inner.remove(key, false));
        if let Err(failure) = self.call(key, Phase::Start, None).await {
            if let Err(e) = self.call(key, Phase::Stop, None).await {
                tracing::warn!(error = %error_chain(&e), "stop after a failed deploy failed");
            }
            drop(cancelled);
            return Err(Error::Component(failure));
        }
        cancelled.defuse();
        Ok(())
    }

    /// Stops the named component (if it is running) and removes it.
    ///
    /// The component is removed even when its stop fails; the failure is returned.
    pub async fn undeploy(&self, name: &str) -> Result<(), Error> {
        check_reentrant(self.inner.id, "undeploy")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let (key, state) = {
            let slots = self.inner.state.lock();
            let key = slots
                .table
                .key_of(name)
                .ok_or_else(|| Error::NotFound(name.to_owned()))?;
            (key, slots.table.state(key))
        };
        // An undeploy abandoned mid-stop still removes the component.
        let removal = OnCancel::new(|| self.inner.remove(key, true));
        let result = if state == Some(State::Running) {
            self.call(key, Phase::Stop, None)
                .await
                .map_err(Error::Component)
        } else {
            Ok(())
        };
        drop(removal);
        tracing::info!(component = name, "undeployed");
        result
    }

    /// Starts the host, waits for `shutdown` to complete, then stops within the shutdown
    /// timeout.
    ///
    /// Returns the start error (the host then never waits for `shutdown`), or the stop
    /// result: [`Error::Stop`] with every failed stop, or [`Error::ShutdownTimeout`] naming
    /// the components still stopping when the timeout passed.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.start().await?;
        shutdown.await;
        tracing::info!("shutdown requested");
        self.stop_within(self.inner.settings.shutdown_timeout).await
    }

    /// Runs one lifecycle call of the component at `key`, keeping its state current.
    async fn call(
        &self,
        key: Key,
        phase: Phase,
        limit: Option<Duration>,
    ) -> Result<(), ComponentError> {
        let transient = match phase {
            Phase::Start => State::Starting,
            Phase::Stop => State::Stopping,
        };
        let began = SystemTime::now();
        let (name, slot) = self
            .inner
            .state
            .lock()
            .table
            .take(key, transient, began)
            .expect("lifecycle calls are serialised, so a registered component is in its slot");
        // If this call is abandoned (its future dropped), the component goes back in its slot.
        let mut guard = SlotGuard {
            inner: &self.inner,
            key,
            slot: Some(slot),
        };
        let settings = &self.inner.settings;
        let timeout = match phase {
            Phase::Start => settings.start_timeout,
            Phase::Stop => settings.stop_timeout,
        };
        let Slot { component, env } = guard.slot.as_mut().expect("just filled");
        let (result, elapsed) = Call {
            host: self.inner.id,
            phase,
            timeout: limit.map_or(timeout, |l| l.min(timeout)),
            env,
            instruments: &self.inner.instruments,
        }
        .run(&name, &mut **component)
        .await;
        let slot = guard.slot.take().expect("still filled");
        let ended = began + elapsed;
        let (state, error) = match &result {
            Ok(()) => {
                tracing::info!(component = &*name, "{}", past(phase));
                let done = match phase {
                    Phase::Start => State::Running,
                    Phase::Stop => State::Stopped,
                };
                (done, None)
            }
            Err(e) => {
                let chain = error_chain(e);
                tracing::error!(component = &*name, error = %chain, "{phase} failed");
                (State::Failed, Some(chain))
            }
        };
        self.inner
            .state
            .lock()
            .table
            .put(key, slot, state, ended, error);
        result
    }

    /// After an abandoned start or stop: running if anything runs, idle otherwise.
    fn settle_phase(&self) {
        let mut slots = self.inner.state.lock();
        slots.phase = if slots.table.keys_in(State::Running).is_empty() {
            HostPhase::Idle
        } else {
            HostPhase::Running
        };
    }

    fn mark(&self, key: Key, state: State, error: Option<&ComponentError>) {
        self.inner
            .state
            .lock()
            .table
            .set(key, state, error.map(|e| error_chain(e)));
    }

    fn mark_abandoned(&self, key: Key, name: &str) {
        tracing::error!(
            component = name,
            "not stopped: the shutdown timeout passed before its turn"
        );
        self.inner.state.lock().table.set(
            key,
            State::Failed,
            Some("not stopped: the shutdown timeout passed before its turn".to_owned()),
        );
    }

    fn name_of(&self, key: Key) -> String {
        self.inner
            .state
            .lock()
            .table
            .name(key)
            .map(|n| n.to_string())
            .unwrap_or_default()
    }
}

fn past(phase: Phase) -> &'static str {
    match phase {
        Phase::Start => "started",
        Phase::Stop => "stopped",
    }
}

/// Runs a closure when dropped unless defused: restores the host's invariants when a
/// lifecycle future is dropped before it finishes.
struct OnCancel<F: FnOnce()> {
    on_drop: Option<F>,
}

impl<F: FnOnce()> OnCancel<F> {
    fn new(on_drop: F) -> Self {
        OnCancel {
            on_drop: Some(on_drop),
        }
    }

    fn defuse(mut self) {
        self.on_drop = None;
    }
}

impl<F: FnOnce()> Drop for OnCancel<F> {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop.take() {
            on_drop();
        }
    }
}

/// Holds a component out of its slot during a call and puts it back if the call is dropped.
struct SlotGuard<'a> {
    inner: &'a Inner,
    key: Key,
    slot: Option<Slot>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.inner.state.lock().table.put(
                self.key,
                slot,
                State::Failed,
                SystemTime::now(),
                Some("the lifecycle call was cancelled before it finished".to_owned()),
            );
        }
    }
}

impl Slots {
    fn insert(&mut self, component: Box<dyn Component>, env: &Env) -> Result<Key, Error> {
        self.table.insert(component, env).map_err(Error::Duplicate)
    }
}

impl Inner {
    /// Removes a component with its details and state gauge, and with `forget` every metric
    /// series labelled with its name.
    fn remove(&self, key: Key, forget: bool) {
        let name = {
            let mut slots = self.state.lock();
            let name = slots.table.name(key);
            slots.table.remove(key);
            name
        };
        if let Some(name) = name.filter(|_| forget) {
            self.env.observer().forget(&[attr("component", &*name)]);
        }
    }
}

impl WeakHost {
    /// The host, if any handle to it is still alive.
    pub fn upgrade(&self) -> Option<Host> {
        self.inner.upgrade().map(|inner| Host { inner })
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.inner.state.lock();
        f.debug_struct("Host")
            .field("phase", &slots.phase)
            .field("components", &slots.table.len())
            .field("settings", &self.inner.settings)
            .finish()
    }
}

impl fmt::Debug for WeakHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakHost")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}
