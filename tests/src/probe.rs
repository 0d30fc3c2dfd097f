//! The probe: a component type whose config asks it to misbehave, and that records every
//! lifecycle call so tests can tell exactly what ran.

use std::{collections::BTreeMap, fmt, sync::Arc};

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, Phase, async_trait};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// The descriptor `type` the probe is registered under.
pub const PROBE_TYPE: &str = "probe";

/// The probe's typed config: a version tag, and which lifecycle call should misbehave and how.
///
/// Unknown fields are rejected (`deny_unknown_fields`), so a typo in a test descriptor is a
/// `config.<field>` error like in a real component type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// A version label, recorded with every lifecycle event.
    pub tag: String,
    /// Panic in `start`.
    pub panic_start: bool,
    /// Panic in `stop`.
    pub panic_stop: bool,
    /// Never return from `start`.
    pub hang_start: bool,
    /// Never return from `stop`.
    pub hang_stop: bool,
    /// Return an error from `start`.
    pub fail_start: bool,
    /// Return an error from `stop`.
    pub fail_stop: bool,
    /// Make the factory refuse to build the component.
    pub fail_build: bool,
    /// Run a background task between start and stop (it shows in the runtime's task count).
    pub task: bool,
}

/// One lifecycle call a probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The component's name.
    pub component: String,
    /// The `tag` of the version that received the call.
    pub tag: String,
    /// Start or stop.
    pub phase: Phase,
}

/// The shared record of what every probe did: each call, and which probes run now.
///
/// Cheap to clone; clones share one record.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    inner: Arc<Mutex<Record>>,
}

#[derive(Debug, Default)]
struct Record {
    events: Vec<Event>,
    /// Component name → tag of the version whose start succeeded and that has not been
    /// asked to stop since.
    running: BTreeMap<String, String>,
}

impl Lifecycle {
    /// An empty record.
    pub fn new() -> Self {
        Lifecycle::default()
    }

    /// Every call so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().events.clone()
    }

    /// How many events there are so far; with [`events_since`](Self::events_since), what
    /// one step did.
    pub fn event_count(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// The events after the first `count`.
    pub fn events_since(&self, count: usize) -> Vec<Event> {
        self.inner
            .lock()
            .events
            .get(count..)
            .unwrap_or(&[])
            .to_vec()
    }

    /// How many times `component`'s start was called (whatever the outcome).
    pub fn starts(&self, component: &str) -> usize {
        self.count(component, Phase::Start)
    }

    /// How many times `component`'s stop was called (whatever the outcome).
    pub fn stops(&self, component: &str) -> usize {
        self.count(component, Phase::Stop)
    }

    fn count(&self, component: &str, phase: Phase) -> usize {
        self.inner
            .lock()
            .events
            .iter()
            .filter(|e| e.component == component && e.phase == phase)
            .count()
    }

    /// Every probe that started successfully and has not been asked to stop: name → tag.
    pub fn running(&self) -> BTreeMap<String, String> {
        self.inner.lock().running.clone()
    }

    /// The tag of the running version of `component`, if one runs.
    pub fn running_tag(&self, component: &str) -> Option<String> {
        self.inner.lock().running.get(component).cloned()
    }

    /// Forgets the events (not which probes run), so long runs do not accumulate them.
    pub fn clear_events(&self) {
        self.inner.lock().events.clear();
    }

    fn record(&self, component: &str, tag: &str, phase: Phase) {
        let mut record = self.inner.lock();
        record.events.push(Event {
            component: component.to_owned(),
            tag: tag.to_owned(),
            phase,
        });
        if phase == Phase::Stop {
            record.running.remove(component);
        }
    }

    fn started(&self, component: &str, tag: &str) {
        self.inner
            .lock()
            .running
            .insert(component.to_owned(), tag.to_owned());
    }
}

/// The error a probe returns when its config asks it to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(pub String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

/// A component that records its lifecycle in a [`Lifecycle`] and misbehaves as its
/// [`ProbeConfig`] asks.
#[derive(Debug)]
pub struct Probe {
    name: String,
    config: ProbeConfig,
    lifecycle: Lifecycle,
    task: Option<JoinHandle<()>>,
}

impl Probe {
    /// A probe named `name`.
    pub fn new(name: &str, config: ProbeConfig, lifecycle: &Lifecycle) -> Self {
        Probe {
            name: name.to_owned(),
            config,
            lifecycle: lifecycle.clone(),
            task: None,
        }
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let (name, config) = (&self.name, &self.config);
        self.lifecycle.record(name, &config.tag, Phase::Start);
        if config.panic_start {
            panic!("probe `{name}` asked to panic in start");
        }
        if config.hang_start {
            std::future::pending::<()>().await;
        }
        if config.fail_start {
            return Err(Box::new(ProbeError(format!(
                "probe `{name}` asked to fail in start (tag `{}`)",
                config.tag
            ))));
        }
        if config.task {
            self.task = Some(env.spawn(std::future::pending()));
        }
        self.lifecycle.started(name, &config.tag);
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        // The work stops first, then the probe misbehaves: a failed stop must not leave the
        // record claiming the probe still runs once the host has dropped it.
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let (name, config) = (&self.name, &self.config);
        self.lifecycle.record(name, &config.tag, Phase::Stop);
        if config.panic_stop {
            panic!("probe `{name}` asked to panic in stop");
        }
        if config.hang_stop {
            std::future::pending::<()>().await;
        }
        if config.fail_stop {
            return Err(Box::new(ProbeError(format!(
                "probe `{name}` asked to fail in stop"
            ))));
        }
        Ok(())
    }
}

/// A registry with the probe type, recording into `lifecycle`.
pub fn probe_registry(lifecycle: &Lifecycle) -> Arc<Registry> {
    let mut registry = Registry::new();
    let lifecycle = lifecycle.clone();
    registry
        .register_typed(
            PROBE_TYPE,
            "a test component that records its lifecycle and misbehaves on request",
            serde_json::json!({ "tag": "v1" }),
            move |name: &str, config: ProbeConfig, _env: &Env| {
                if config.fail_build {
                    return Err(Box::new(ProbeError(format!(
                        "probe `{name}` asked to fail to build (tag `{}`)",
                        config.tag
                    ))) as BoxError);
                }
                Ok(Probe::new(name, config, &lifecycle))
            },
        )
        .expect("a fresh registry has no types");
    Arc::new(registry)
}

/// The text of a probe descriptor named `name` with `config` (a JSON object).
pub fn probe_descriptor(name: &str, config: &serde_json::Value) -> String {
    serde_json::json!({ "name": name, "type": PROBE_TYPE, "config": config }).to_string()
}
