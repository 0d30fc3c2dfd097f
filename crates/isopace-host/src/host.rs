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
use isopace_observe::{Counter, NopObserver, Observer, Rounded, attr};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    Component, Env, Restart, Supervision,
    call::{Call, Instruments, check_reentrant},
    error::{ComponentError, Error, Failure, Phase},
    error_chain,
    instance::{Event, EventKind, Instance},
    status::{ComponentStatus, Draining, Key, STATE_GAUGE, Slot, State, Table},
    supervise::Jitter,
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
    /// Where instances report failures and finishes, and backoff timers their end.
    events: mpsc::UnboundedSender<Event>,
    /// The supervisor's end of `events`, until the supervisor task takes it.
    pending_supervisor: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    /// Numbers instances host-wide, so a report from a replaced instance is recognised.
    generations: AtomicU64,
    jitter: Jitter,
    restarts: Counter,
    /// Retired instances still stopping in the background, by an id of their own.
    draining: parking_lot::Mutex<Vec<Retiring>>,
    /// The background stops, awaited by the host's own stop.
    drains: tokio_util::task::TaskTracker,
    next_drain: AtomicU64,
    /// Names retired since their last deploy: the next deploy under the name inherits their
    /// sockets, and keeps them even if it fails, for the rollback that follows.
    handed_over: HandedOver,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    shutdown_timeout: Duration,
    start_timeout: Duration,
    stop_timeout: Duration,
    jitter: f64,
}

impl Settings {
    /// How long an instance's stop may take: its own bound when it declared one, capped by
    /// the shutdown timeout, else the host's stop timeout.
    fn stop_bound(&self, instance: Option<&Instance>) -> Duration {
        instance
            .and_then(Instance::stop_timeout)
            .map_or(self.stop_timeout, |own| own.min(self.shutdown_timeout))
    }
}

/// The names retired since their last deploy. Nearly always empty, and consulted on every
/// deploy and undeploy: the count spares those the lock.
#[derive(Debug, Default)]
struct HandedOver {
    count: AtomicU64,
    names: parking_lot::Mutex<std::collections::HashSet<Arc<str>>>,
}

impl HandedOver {
    fn insert(&self, name: &str) {
        let mut names = self.names.lock();
        names.insert(Arc::from(name));
        self.count.store(names.len() as u64, Ordering::Release);
    }

    fn remove(&self, name: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut names = self.names.lock();
        let removed = names.remove(name);
        self.count.store(names.len() as u64, Ordering::Release);
        removed
    }

    fn contains(&self, name: &str) -> bool {
        self.count.load(Ordering::Acquire) != 0 && self.names.lock().contains(name)
    }

    fn clear(&self) {
        let mut names = self.names.lock();
        names.clear();
        self.count.store(0, Ordering::Release);
    }
}

/// What a stop call does once the component's `stop` has returned.
#[derive(Debug, Clone, Copy)]
struct AfterStop {
    /// Close the component's listening sockets (they are not handed to a next version).
    close_sockets: bool,
    /// Wait for the instance's tasks (otherwise the caller leaves them to drain).
    drain: bool,
}

impl AfterStop {
    /// Keep the sockets and wait for the tasks: a restart, or an unwinding start.
    const DRAIN: AfterStop = AfterStop {
        close_sockets: false,
        drain: true,
    };
}

/// A retired instance stopping in the background: its id, name, stop deadline and instance.
type Retiring = (u64, Arc<str>, SystemTime, Option<Arc<Instance>>);

/// Default spread of restart waits: each is drawn from ±10 % of its nominal value.
pub const DEFAULT_RESTART_JITTER: f64 = 0.1;

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
                jitter: DEFAULT_RESTART_JITTER,
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

    /// How much restart waits are spread: a fraction in `[0, 1]` (default
    /// [`DEFAULT_RESTART_JITTER`]); zero makes every wait exact, which tests want.
    pub fn restart_jitter(mut self, fraction: f64) -> Self {
        self.settings.jitter = fraction;
        self
    }

    /// Builds the host. Its env's extensions hold a [`WeakHost`] to it.
    pub fn build(self) -> Host {
        let instruments = Instruments::new(&*self.observer);
        self.observer.describe(
            STATE_GAUGE,
            "1 for the state each component is in and 0 for the other states, by component and state.",
        );
        self.observer.describe(
            "isopace_component_restarts_total",
            "Restarts of failed components after their backoff, by component.",
        );
        let table = Table::new(self.observer.gauge(STATE_GAUGE));
        let restarts = self.observer.counter("isopace_component_restarts_total");
        let (events, pending) = mpsc::unbounded_channel();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
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
                events,
                pending_supervisor: parking_lot::Mutex::new(Some(pending)),
                generations: AtomicU64::new(1),
                jitter: Jitter::new(self.settings.jitter, seed),
                restarts,
                draining: parking_lot::Mutex::new(Vec::new()),
                drains: tokio_util::task::TaskTracker::new(),
                next_drain: AtomicU64::new(1),
                handed_over: HandedOver::default(),
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
        self.register_with(component, Supervision::new())
    }

    /// [`register`](Host::register) with a restart policy, criticality and rebuild.
    pub fn register_with(
        &self,
        component: Box<dyn Component>,
        supervision: Supervision,
    ) -> Result<(), Error> {
        check_reentrant(self.inner.id, "register")?;
        let mut slots = self.inner.state.lock();
        if slots.phase != HostPhase::Idle {
            return Err(Error::Running);
        }
        slots
            .insert(component, &self.inner.env, supervision)
            .map(drop)
    }

    /// The component names in lifecycle (registration) order.
    pub fn components(&self) -> Vec<String> {
        self.inner.state.lock().table.names()
    }

    /// The state of every component, in lifecycle order.
    pub fn status(&self) -> Vec<ComponentStatus> {
        let statuses = self.inner.state.lock().table.statuses();
        statuses
            .into_iter()
            .map(|s| self.with_draining(s))
            .collect()
    }

    /// The state of one component.
    pub fn status_of(&self, name: &str) -> Option<ComponentStatus> {
        let status = self.inner.state.lock().table.status_of(name)?;
        Some(self.with_draining(status))
    }

    /// A receiver that is marked changed whenever a component changes [`State`], is
    /// registered or deployed, or is removed, or its reported readiness or health changes
    /// (its details do not mark it); read [`status`](Host::status) after each
    /// [`changed`](tokio::sync::watch::Receiver::changed) to see what changed.
    ///
    /// This is for watching the lifecycle without polling (a daemon that exits when a
    /// critical component is failed for good, a readiness tracker). Changes are coalesced:
    /// a slow reader sees the latest status, not every step. The receiver sees an error
    /// once the host is dropped.
    ///
    /// ```
    /// # use isopace_host::{async_trait, BoxError, Component, Env, Host, State};
    /// # struct Noop;
    /// # #[async_trait]
    /// # impl Component for Noop {
    /// #     fn name(&self) -> &str { "noop" }
    /// #     async fn start(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
    /// #     async fn stop(&mut self, _: &Env) -> Result<(), BoxError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), isopace_host::Error> {
    /// let host = Host::builder().build();
    /// let mut changes = host.changed();
    /// host.register(Noop)?;
    /// changes.changed().await.expect("the host is alive");
    /// assert_eq!(host.status()[0].state, State::Stopped);
    /// # Ok(())
    /// # }
    /// ```
    pub fn changed(&self) -> tokio::sync::watch::Receiver<()> {
        self.inner.state.lock().table.subscribe()
    }

    /// The critical components that are not running and ready, in lifecycle order: what
    /// keeps the host from being ready. Empty when every critical component serves (a
    /// critical component that finished counts as not running).
    pub fn not_ready(&self) -> Vec<ComponentStatus> {
        self.inner
            .state
            .lock()
            .table
            .statuses()
            .into_iter()
            .filter(ComponentStatus::blocks_readiness)
            .collect()
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
            // A component waiting out its backoff has nothing running: it is stopped now,
            // and its pending restart will find it so and do nothing.
            for key in slots.table.keys_in(State::Backoff) {
                slots.table.set(key, State::Stopped, None);
            }
            // Sockets kept for no running component (a retired one's, a failed one's)
            // close now; a running component's, when its turn to stop comes.
            self.inner.env.listeners().keep_only_for(|name| {
                slots
                    .table
                    .key_of(name)
                    .is_some_and(|key| slots.table.state(key) == Some(State::Running))
            });
            slots.table.keys_in(State::Running)
        };
        self.inner.handed_over.clear();
        let cancelled = OnCancel::new(|| self.settle_phase());
        tracing::info!(components = order.len(), "host stopping");
        const CLOSE_AND_DRAIN: AfterStop = AfterStop {
            close_sockets: true,
            drain: true,
        };
        let mut errors = Vec::new();
        let mut stopping = Vec::new();
        for key in order.into_iter().rev() {
            let Some(limit) = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()))
            else {
                if let Err(e) = self
                    .call_draining(key, Phase::Stop, None, CLOSE_AND_DRAIN)
                    .await
                {
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
            match self
                .call_draining(key, Phase::Stop, Some(limit), CLOSE_AND_DRAIN)
                .await
            {
                Ok(()) => {}
                Err(e) if matches!(e.failure(), Failure::TimedOut(t) if *t < self.inner.settings.stop_timeout) =>
                {
                    stopping.push(e.component().to_owned());
                }
                Err(e) => errors.push(e),
            }
        }
        // Earlier versions still stopping in the background finish within the same bound.
        let drains = &self.inner.drains;
        drains.close();
        let left = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()));
        let drained = match left {
            Some(left) => tokio::time::timeout(left, drains.wait()).await.is_ok(),
            None => {
                drains.wait().await;
                true
            }
        };
        drains.reopen();
        if !drained {
            let draining = self.inner.draining.lock();
            stopping.extend(
                draining
                    .iter()
                    .map(|(_, name, ..)| format!("{name} (a previous version)")),
            );
        }
        cancelled.defuse();
        self.inner.state.lock().phase = HostPhase::Idle;
        self.inner.env.listeners().release_all();
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
        self.deploy_with(component, Supervision::new()).await
    }

    /// [`deploy`](Host::deploy) with a restart policy, criticality and rebuild.
    pub async fn deploy_with(
        &self,
        component: Box<dyn Component>,
        supervision: Supervision,
    ) -> Result<(), Error> {
        check_reentrant(self.inner.id, "deploy")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let (key, running, inherited) = {
            let mut slots = self.inner.state.lock();
            let running = slots.phase == HostPhase::Running;
            let key = slots.insert(component, &self.inner.env, supervision)?;
            let name = slots.table.name(key).expect("just inserted");
            (key, running, self.inner.handed_over.remove(&name))
        };
        if !running {
            return Ok(());
        }
        // A deploy abandoned mid-start leaves nothing registered, like a failed one.
        // Its metric series stay: they record the failure.
        let cancelled = OnCancel::new(|| self.inner.remove(key, false));
        if let Err(failure) = self.call(key, Phase::Start, None).await {
            if let Err(e) = self.call(key, Phase::Stop, None).await {
                tracing::warn!(component = e.component(), error = %error_chain(&e), "stop after a failed deploy failed");
            }
            drop(cancelled);
            // Sockets (and series) a retired predecessor handed over stay for the rollback,
            // which inherits them in turn; nothing else will claim the ones this deploy bound.
            if inherited {
                self.inner.handed_over.insert(failure.component());
            } else {
                self.inner.env.listeners().release(failure.component());
            }
            return Err(Error::Component(failure));
        }
        cancelled.defuse();
        Ok(())
    }

    /// Stops the named component (if it is running) and removes it, with every metric series
    /// labelled with its name.
    ///
    /// Its listening sockets ([`Env::listen`]) close as soon as it stops listening: a client
    /// arriving after that is refused, not left waiting. The component's `stop` runs here,
    /// bounded as always, and its failure is returned, but the component is removed even
    /// then. The tasks it spawned through `Env` (a proxy's open connections) are cancelled
    /// and finish in the background within what is left of its stop bound, so an undeploy
    /// holds up no other lifecycle call for a drain; the host's own stop waits for them
    /// within its shutdown timeout. Its metric series go once they end.
    pub async fn undeploy(&self, name: &str) -> Result<(), Error> {
        check_reentrant(self.inner.id, "undeploy")?;

        let _lifecycle = self.inner.lifecycle.lock().await;
        let (key, running, instance) = {
            let mut slots = self.inner.state.lock();
            let key = slots
                .table
                .key_of(name)
                .ok_or_else(|| Error::NotFound(name.to_owned()))?;
            let running = slots.table.state(key) == Some(State::Running);
            let instance = slots.table.supervised(key).and_then(|r| r.instance.clone());
            (key, running, instance)
        };
        self.inner.handed_over.remove(name);
        // An undeploy abandoned mid-stop still removes the component.
        let removal = OnCancel::new(|| self.inner.remove(key, true));
        let began = Instant::now();
        let result = if running {
            let after = AfterStop {
                close_sockets: true,
                drain: false,
            };
            self.call_draining(key, Phase::Stop, None, after)
                .await
                .map_err(Error::Component)
        } else {
            Ok(())
        };
        removal.defuse();
        self.inner.remove(key, false);
        if !running {
            // Sockets it kept without running (a failed component's) close too.
            self.inner.env.listeners().release(name);
        }
        tracing::info!(component = name, "undeployed");
        match instance.filter(|_| running) {
            Some(instance) => self.drain_in_background(name, instance, began),
            None => self.inner.forget_if_unused(name),
        }
        result
    }

    /// Closes the listening sockets the host keeps for `name` while no component of that
    /// name is registered: those a [`retire`](Host::retire)d version handed over, when the
    /// version that was to take them over failed and none will follow (a rollback that
    /// could not even be built). Returns whether any were closed; does nothing while a
    /// component of that name is registered.
    pub fn close_listeners(&self, name: &str) -> bool {
        let slots = self.inner.state.lock();
        if slots.table.key_of(name).is_some() {
            return false;
        }
        self.inner.handed_over.remove(name);
        self.inner.env.listeners().release(name)
    }

    /// Stops the named component and removes it, keeping its metric series and listening
    /// sockets, and lets the tasks it spawned through `Env` finish in the background: for a
    /// redeploy, where the next version under the same name takes the sockets over without
    /// waiting for this one's drain.
    ///
    /// The component's `stop` runs here, bounded as always, and its failure is returned; the
    /// name is free when this returns. The instance's tasks are cancelled and get what is
    /// left of its stop bound (a proxy's open connections drain there); until they end, the
    /// status of a successor under the same name lists them in
    /// [`ComponentStatus::draining`]. The host's own stop waits for them within its shutdown
    /// timeout.
    pub async fn retire(&self, name: &str) -> Result<(), Error> {
        check_reentrant(self.inner.id, "retire")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let (key, running, instance) = {
            let mut slots = self.inner.state.lock();
            let key = slots
                .table
                .key_of(name)
                .ok_or_else(|| Error::NotFound(name.to_owned()))?;
            let running = slots.table.state(key) == Some(State::Running);
            let instance = slots.table.supervised(key).and_then(|r| r.instance.clone());
            (key, running, instance)
        };
        // A retire abandoned mid-stop still removes the component.
        let removal = OnCancel::new(|| self.inner.remove(key, false));
        let began = Instant::now();
        let result = if running {
            let after = AfterStop {
                close_sockets: false,
                drain: false,
            };
            self.call_draining(key, Phase::Stop, None, after)
                .await
                .map_err(Error::Component)
        } else {
            Ok(())
        };
        // Handed over before the name is free, so no drain ending meanwhile takes the name
        // for unused and forgets the series the successor carries on.
        self.inner.handed_over.insert(name);
        drop(removal);
        if let Some(instance) = instance.filter(|_| running) {
            self.drain_in_background(name, instance, began);
        }
        result
    }

    /// Lets a stopped instance's tasks (a proxy's open connections) finish in the
    /// background, within what is left of its stop bound since `began`, listed in
    /// [`ComponentStatus::draining`] of a successor meanwhile. The component's metric
    /// series go once they end, unless the name is in use again (see
    /// [`Inner::forget_if_unused`]).
    fn drain_in_background(&self, name: &str, instance: Arc<Instance>, began: Instant) {
        // Cancelled now rather than when the drain task first runs: tasks that end on
        // cancellation (an accept loop) start ending before the caller returns.
        instance.token.cancel();
        instance.tracker.close();
        if instance.tracker.is_empty() {
            self.inner.forget_if_unused(name);
            return;
        }
        let left = self
            .inner
            .settings
            .stop_bound(Some(&instance))
            .saturating_sub(began.elapsed());
        let id = self.inner.next_drain.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(name);
        self.inner.draining.lock().push((
            id,
            Arc::clone(&name),
            SystemTime::now() + left,
            Some(Arc::clone(&instance)),
        ));
        let weak = self.downgrade();
        self.inner.drains.spawn(async move {
            drain(&name, &instance, left).await;
            if let Some(host) = weak.upgrade() {
                host.inner.draining.lock().retain(|(i, ..)| *i != id);
                host.inner.state.lock().table.touch();
                host.inner.forget_if_unused(&name);
            }
        });
    }

    /// Adds the background stops of earlier versions to a status.
    fn with_draining(&self, mut status: ComponentStatus) -> ComponentStatus {
        status.draining = self
            .inner
            .draining
            .lock()
            .iter()
            .filter(|(_, name, ..)| **name == *status.name)
            .map(|(_, _, until, instance)| Draining {
                until: *until,
                details: instance
                    .as_ref()
                    .and_then(|i| i.live.read(|l| l.details.clone())),
            })
            .collect();
        status
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
        self.call_draining(key, phase, limit, AfterStop::DRAIN)
            .await
    }

    /// [`call`](Host::call); for a stop, `after` says whether to close the component's
    /// listening sockets once its `stop` has returned, and whether to wait for the
    /// instance's tasks here (or leave that to the caller).
    async fn call_draining(
        &self,
        key: Key,
        phase: Phase,
        limit: Option<Duration>,
        after: AfterStop,
    ) -> Result<(), ComponentError> {
        let transient = match phase {
            Phase::Start => State::Starting,
            Phase::Stop => State::Stopping,
        };
        let began = SystemTime::now();
        let (name, mut slot, instance) = {
            let mut slots = self.inner.state.lock();
            let (name, slot) = slots
                .table
                .take(key, transient, began)
                .expect("lifecycle calls are serialised, so a registered component is in its slot");
            let row = slots.table.supervised(key).expect("just taken");
            let instance = match phase {
                // Each start begins a new instance: new tasks, new reports.
                Phase::Start => {
                    let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
                    row.live.begin(generation);
                    let instance = Arc::new(Instance::new(
                        key,
                        generation,
                        Arc::clone(row.live),
                        self.inner.events.clone(),
                    ));
                    *row.instance = Some(Arc::clone(&instance));
                    Some(instance)
                }
                Phase::Stop => row.instance.clone(),
            };
            (name, slot, instance)
        };
        if let (Phase::Start, Some(instance)) = (phase, &instance) {
            slot.env = slot.env.with_instance(Arc::clone(instance));
            self.ensure_supervisor();
        }
        // If this call is abandoned (its future dropped), the component goes back in its slot.
        let mut guard = SlotGuard {
            inner: &self.inner,
            key,
            slot: Some(slot),
        };
        let settings = &self.inner.settings;
        let timeout = match phase {
            Phase::Start => settings.start_timeout,
            // A component that knows its stop takes longer (a child's grace period) says so;
            // the shutdown deadline still caps it.
            Phase::Stop => settings.stop_bound(instance.as_deref()),
        };
        let timeout = limit.map_or(timeout, |l| l.min(timeout));
        let Slot { component, env } = guard.slot.as_mut().expect("just filled");
        let (result, mut elapsed) = Call {
            host: self.inner.id,
            phase,
            timeout,
            env,
            instruments: &self.inner.instruments,
        }
        .run(&name, &mut **component)
        .await;
        if phase == Phase::Stop && after.close_sockets {
            // The component has stopped listening: from now on a client is refused, not
            // left in a backlog nobody accepts from while its connections drain.
            self.inner.env.listeners().release(&name);
        }
        match (phase, &instance) {
            (Phase::Stop, Some(instance)) if after.drain => {
                elapsed += drain(&name, instance, timeout.saturating_sub(elapsed)).await;
            }
            (Phase::Start, Some(instance)) if result.is_ok() => {
                if !instance.ready_later.load(Ordering::Acquire) {
                    instance.live.set_ready(instance.generation, true);
                }
                // An address the new version no longer listens on closes now.
                self.inner
                    .env
                    .listeners()
                    .keep_only(&name, instance.generation);
                let mut slots = self.inner.state.lock();
                if let Some(row) = slots.table.supervised(key) {
                    *row.running_since = Some(Instant::now());
                }
            }
            _ => {}
        }
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
                let chain = slot.env.redact(&error_chain(e));
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

    /// Starts the supervisor task the first time a component starts.
    fn ensure_supervisor(&self) {
        let Some(events) = self.inner.pending_supervisor.lock().take() else {
            return;
        };
        tokio::spawn(supervise(self.downgrade(), events));
    }

    /// Acts on one report from an instance, or on the end of a backoff.
    async fn handle(&self, event: Event) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let key = event.key;
        let (state, current) = {
            let mut slots = self.inner.state.lock();
            if slots.phase != HostPhase::Running {
                return;
            }
            let state = slots.table.state(key);
            let current = slots.table.supervised(key).is_some_and(|row| {
                row.instance
                    .as_ref()
                    .is_some_and(|i| i.generation == event.generation)
            });
            (state, current)
        };
        // Reports from an instance that has been replaced, stopped or undeployed since are
        // stale: the component they were about is gone.
        if !current {
            return;
        }
        match (event.kind, state) {
            (EventKind::Failed(error), Some(State::Running)) => {
                let name = self.name_of(key);
                tracing::error!(component = name, error = %error, "failed");
                self.end_instance(key).await;
                self.after_end(key, Some(error));
            }
            (EventKind::Finished, Some(State::Running)) => {
                let name = self.name_of(key);
                tracing::info!(component = name, "finished");
                self.end_instance(key).await;
                self.after_end(key, None);
            }
            (EventKind::Retry, Some(State::Backoff)) => self.try_again(key).await,
            _ => {}
        }
    }

    /// Stops an instance that failed or finished, so it releases what it holds. A stop
    /// failure is logged and kept as the last error by the call itself.
    async fn end_instance(&self, key: Key) {
        let _ = self.call(key, Phase::Stop, None).await;
    }

    /// Decides what follows an instance's end: a failure (`error`) or a clean finish. The
    /// restart policy says whether to restart, the intensity limit whether it may.
    fn after_end(&self, key: Key, error: Option<String>) {
        let mut slots = self.inner.state.lock();
        let name = slots.table.name(key).unwrap_or_else(|| Arc::from(""));
        let Some(row) = slots.table.supervised(key) else {
            return;
        };
        let policy = row.supervision.restart;
        let failed = error.is_some();
        let restart = match policy.policy {
            Restart::Never => false,
            Restart::OnFailure => failed,
            Restart::Always => true,
        };
        let ended = if failed {
            State::Failed
        } else {
            State::Stopped
        };
        if !restart {
            slots.table.set(key, ended, error);
            return;
        }
        let ran = row.running_since.map_or(Duration::ZERO, |at| at.elapsed());
        let Some(wait) = row
            .restarts
            .schedule(&policy, Instant::now(), ran, &self.inner.jitter)
        else {
            tracing::error!(
                component = &*name,
                max_restarts = policy.max_restarts,
                window = %Rounded(policy.window),
                "restart limit reached; failed until retried"
            );
            slots.table.set(key, State::Failed, error);
            return;
        };
        let generation = row.instance.as_ref().map_or(0, |i| i.generation);
        *row.next_try = None;
        slots.table.set(key, State::Backoff, error);
        if let Some(row) = slots.table.supervised(key) {
            *row.next_try = Some(SystemTime::now() + wait);
        }
        drop(slots);
        tracing::warn!(component = &*name, wait = %Rounded(wait), "restarting after backoff");
        let retry = Event {
            key,
            generation,
            kind: EventKind::Retry,
        };
        // The timer wheel ticks in milliseconds: a zero wait goes straight to the queue.
        if wait.is_zero() {
            let _ = self.inner.events.send(retry);
            return;
        }
        let events = self.inner.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = events.send(retry);
        });
    }

    /// Starts a component again: a fresh instance when it has a rebuild, the same one
    /// otherwise. A start that fails ends like any failure.
    async fn try_again(&self, key: Key) {
        let (name, rebuild) = {
            let mut slots = self.inner.state.lock();
            let name = slots.table.name(key).unwrap_or_else(|| Arc::from(""));
            let Some(row) = slots.table.supervised(key) else {
                return;
            };
            row.restarts.count += 1;
            (name, row.supervision.rebuild.clone())
        };
        self.inner.restarts.add(1, &[attr("component", &*name)]);
        if let Some(rebuild) = rebuild {
            let fresh = rebuild(&self.inner.env).and_then(|component| {
                if component.name() == &*name {
                    Ok(component)
                } else {
                    Err(format!(
                        "the rebuilt component is named `{}`, not `{name}`",
                        component.name()
                    )
                    .into())
                }
            });
            match fresh {
                Ok(component) => self.inner.state.lock().table.replace(key, component),
                Err(e) => {
                    let error = format!(
                        "rebuilding for a restart failed: {}",
                        self.redacted_chain(key, &*e)
                    );
                    tracing::error!(component = &*name, error = %error, "restart failed");
                    self.after_end(key, Some(error));
                    return;
                }
            }
        }
        match self.call(key, Phase::Start, None).await {
            Ok(()) => tracing::info!(component = &*name, "restarted"),
            Err(e) => {
                // The stop the Component contract promises after a failed start.
                self.end_instance(key).await;
                self.after_end(key, Some(self.redacted_chain(key, &e)));
            }
        }
    }

    /// Starts a component that is failed for good (or stopped after finishing) again, with
    /// its restart history forgotten: what an operator's retry, a SIGHUP or a changed file
    /// does. Does nothing to a component that is running, starting or in backoff; fails
    /// with [`Error::NotFound`] for an unknown name.
    ///
    /// Returns the start failure, if the new start failed; the restart policy then applies
    /// as after any failure.
    pub async fn retry(&self, name: &str) -> Result<(), Error> {
        check_reentrant(self.inner.id, "retry")?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        let key = {
            let mut slots = self.inner.state.lock();
            let key = slots
                .table
                .key_of(name)
                .ok_or_else(|| Error::NotFound(name.to_owned()))?;
            if slots.phase != HostPhase::Running
                || !matches!(slots.table.state(key), Some(State::Failed | State::Stopped))
            {
                return Ok(());
            }
            if let Some(row) = slots.table.supervised(key) {
                row.restarts.reset();
            }
            key
        };
        tracing::info!(component = name, "retrying");
        if let Err(failure) = self.call(key, Phase::Start, None).await {
            self.end_instance(key).await;
            self.after_end(key, Some(self.redacted_chain(key, &failure)));
            return Err(Error::Component(failure));
        }
        Ok(())
    }

    /// [`retry`](Self::retry) for every component that is failed for good, in registration
    /// order (what a SIGHUP does in `isopace run`). A retry that fails is logged at warn and
    /// the others still run. Returns how many were retried.
    pub async fn retry_failed(&self) -> usize {
        let failed: Vec<String> = self
            .status()
            .into_iter()
            .filter(|s| s.state == State::Failed)
            .map(|s| s.name)
            .collect();
        for name in &failed {
            if let Err(e) = self.retry(name).await {
                tracing::warn!(component = name.as_str(), error = %error_chain(&e), "retry failed");
            }
        }
        failed.len()
    }

    /// Completes with the name of the first [critical](Supervision::critical) component that
    /// is failed for good (its start failed, or its restart policy gave up), as soon as there
    /// is one: at once if one already is. Never completes while none is.
    pub async fn critical_failure(&self) -> String {
        let mut changes = self.changed();
        loop {
            let failed = self
                .status()
                .into_iter()
                .find(|s| s.critical && s.state == State::Failed);
            if let Some(status) = failed {
                return status.name;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
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
        // Before the lock: the redactor is read under it.
        let error = error.map(|e| self.redacted_chain(key, e));
        self.inner.state.lock().table.set(key, state, error);
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

    /// An error and its causes with the component's secrets redacted.
    fn redacted_chain(&self, key: Key, error: &(dyn std::error::Error + 'static)) -> String {
        let chain = error_chain(error);
        let redact = self
            .inner
            .state
            .lock()
            .table
            .supervised(key)
            .and_then(|row| row.supervision.redact.clone());
        match redact {
            Some(redact) => redact(&chain),
            None => chain,
        }
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

/// The host's supervisor: acts on what instances report, one report at a time, each under
/// the lifecycle lock. It holds the host weakly and ends with it.
async fn supervise(host: WeakHost, mut events: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(host) = host.upgrade() else { break };
        host.handle(event).await;
    }
}

/// After a component's `stop` returned: cancels its instance's tasks and waits for them
/// within `left`, then aborts those still running. Returns how long it waited.
async fn drain(name: &str, instance: &Instance, left: Duration) -> Duration {
    let began = Instant::now();
    instance.token.cancel();
    instance.tracker.close();
    if tokio::time::timeout(left, instance.tracker.wait())
        .await
        .is_err()
    {
        let aborted = instance.abort_all();
        tracing::warn!(
            component = name,
            tasks = aborted,
            "tasks still running when the stop bound passed; aborted"
        );
    }
    began.elapsed()
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
    fn insert(
        &mut self,
        component: Box<dyn Component>,
        env: &Env,
        supervision: Supervision,
    ) -> Result<Key, Error> {
        self.table
            .insert(component, env, supervision)
            .map_err(Error::Duplicate)
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
        // A retired component's sockets stay for its next version; a failed deploy's stay
        // for the rollback that follows it.
        if let Some(name) = name.filter(|_| forget) {
            self.env.listeners().release(&name);
            self.forget(&name);
        }
    }

    /// Drops every metric series labelled with `name`.
    fn forget(&self, name: &str) {
        self.env.observer().forget(&[attr("component", name)]);
    }

    /// [`forget`](Inner::forget), unless the name is in use: a component of that name is
    /// registered, an earlier one still drains (their series are still being written), or
    /// one was retired for a successor still to come (which carries them on).
    fn forget_if_unused(&self, name: &str) {
        // Under the state lock throughout, so no deploy or retire changes the answer
        // between the checks and the forgetting.
        let slots = self.state.lock();
        let registered = slots.table.key_of(name).is_some();
        let draining = self.draining.lock().iter().any(|(_, n, ..)| **n == *name);
        let handed_over = self.handed_over.contains(name);
        if !registered && !draining && !handed_over {
            self.forget(name);
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
