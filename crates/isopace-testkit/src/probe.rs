//! The probe: a component that records every lifecycle call and misbehaves on request, built
//! in code (per-phase [`Act`]s) or from a descriptor's typed [`ProbeConfig`].

use std::{borrow::Cow, fmt, sync::Arc, time::Duration};

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, Phase, async_trait};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::Lifecycle;

/// The descriptor `type` [`probe_registry`] registers the probe under.
pub const PROBE_TYPE: &str = "probe";

/// What a probe does in start or in stop, after recording the call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Act {
    /// Return `Ok` at once.
    #[default]
    Ok,
    /// Return a [`ProbeError`] with this message.
    Fail(Cow<'static, str>),
    /// Never return.
    Hang,
    /// Panic with ``probe `<name>` asked to panic in <phase>``.
    Panic,
    /// Sleep this long (on tokio's clock, so paused time skips it), then return `Ok`.
    Sleep(Duration),
}

impl Act {
    /// [`Act::Fail`] with `message`.
    pub fn fail(message: impl Into<Cow<'static, str>>) -> Act {
        Act::Fail(message.into())
    }
}

/// The error a probe returns when asked to fail; its message is all it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(pub String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

/// The probe's typed config in a descriptor: a version tag, and which lifecycle call should
/// misbehave and how.
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

/// A component that records its lifecycle calls in a [`Lifecycle`] and then does what it was
/// told for that phase.
///
/// In start it records the call, acts, and (if the act returned `Ok`) spawns its background
/// task when it has one and counts as running. In stop it ends that task first, then records
/// the call and acts: a failed stop does not leave the record claiming the probe still runs
/// once the host has dropped it.
#[derive(Debug)]
#[must_use = "a probe does nothing until a host runs it"]
pub struct Probe {
    name: String,
    tag: String,
    on_start: Act,
    on_stop: Act,
    task: bool,
    lifecycle: Lifecycle,
    running_task: Option<JoinHandle<()>>,
}

impl Probe {
    /// A probe named `name` that records into `lifecycle` and does [`Act::Ok`] in both
    /// phases.
    pub fn new(name: &str, lifecycle: &Lifecycle) -> Self {
        Probe {
            name: name.to_owned(),
            tag: String::new(),
            on_start: Act::Ok,
            on_stop: Act::Ok,
            task: false,
            lifecycle: lifecycle.clone(),
            running_task: None,
        }
    }

    /// A probe named `name` that behaves as `config` says (see [`ProbeConfig`]; where it
    /// asks for several faults in one phase, a panic wins over a hang, a hang over an error).
    /// `fail_build` is the factory's business: [`probe_registry`] refuses to build.
    pub fn from_config(name: &str, config: &ProbeConfig, lifecycle: &Lifecycle) -> Self {
        let act = |panic: bool, hang: bool, fail: Option<String>| {
            if panic {
                Act::Panic
            } else if hang {
                Act::Hang
            } else {
                fail.map_or(Act::Ok, Act::fail)
            }
        };
        let tag = &config.tag;
        let on_start = act(
            config.panic_start,
            config.hang_start,
            config
                .fail_start
                .then(|| format!("probe `{name}` asked to fail in start (tag `{tag}`)")),
        );
        let on_stop = act(
            config.panic_stop,
            config.hang_stop,
            config
                .fail_stop
                .then(|| format!("probe `{name}` asked to fail in stop")),
        );
        Probe {
            tag: tag.clone(),
            on_start,
            on_stop,
            task: config.task,
            ..Probe::new(name, lifecycle)
        }
    }

    /// Records its calls with this version tag.
    pub fn tag(mut self, tag: &str) -> Self {
        tag.clone_into(&mut self.tag);
        self
    }

    /// Does `act` in start.
    pub fn start_does(mut self, act: Act) -> Self {
        self.on_start = act;
        self
    }

    /// Does `act` in stop.
    pub fn stop_does(mut self, act: Act) -> Self {
        self.on_stop = act;
        self
    }

    /// Runs a background task (through [`Env::spawn`]) from a successful start until stop.
    pub fn with_task(mut self) -> Self {
        self.task = true;
        self
    }

    async fn act(&self, phase: Phase) -> Result<(), BoxError> {
        let act = match phase {
            Phase::Start => &self.on_start,
            Phase::Stop => &self.on_stop,
        };
        match act {
            Act::Ok => Ok(()),
            Act::Fail(message) => Err(Box::new(ProbeError(message.clone().into_owned()))),
            Act::Hang => std::future::pending().await,
            Act::Panic => panic!("probe `{}` asked to panic in {phase}", self.name),
            Act::Sleep(duration) => {
                tokio::time::sleep(*duration).await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        self.lifecycle.record(&self.name, &self.tag, Phase::Start);
        self.act(Phase::Start).await?;
        if self.task {
            self.running_task = Some(env.spawn(std::future::pending()));
        }
        self.lifecycle.started(&self.name, &self.tag);
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        if let Some(task) = self.running_task.take() {
            task.abort();
            let _ = task.await;
        }
        self.lifecycle.record(&self.name, &self.tag, Phase::Stop);
        self.act(Phase::Stop).await
    }
}

/// A registry with the probe type under [`PROBE_TYPE`], building [`Probe::from_config`]
/// probes that record into `lifecycle`.
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
                Ok(Probe::from_config(name, &config, &lifecycle))
            },
        )
        .expect("a fresh registry has no types");
    Arc::new(registry)
}

/// The text of a probe descriptor named `name` with `config` (a JSON object).
pub fn probe_descriptor(name: &str, config: &serde_json::Value) -> String {
    serde_json::json!({ "name": name, "type": PROBE_TYPE, "config": config }).to_string()
}

#[cfg(test)]
mod tests {
    use isopace_host::{Error, Failure, Host};
    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn acts_happen_after_the_call_is_recorded() {
        let lifecycle = Lifecycle::new();
        let host = Host::builder()
            .start_timeout(Duration::from_secs(5))
            .build();
        host.register(Probe::new("a", &lifecycle).tag("v1").with_task())
            .unwrap();
        host.register(Probe::new("b", &lifecycle).start_does(Act::Sleep(Duration::from_secs(1))))
            .unwrap();
        host.register(Probe::new("c", &lifecycle).start_does(Act::Hang))
            .unwrap();
        let err = host.start().await.unwrap_err();
        let Error::Start { failure, .. } = &err else {
            panic!("expected a start error, got {err:?}");
        };
        assert!(matches!(failure.failure(), Failure::TimedOut(_)), "{err:?}");
        assert_eq!(
            lifecycle.take_calls(),
            [
                "a:start", "b:start", "c:start", "c:stop", "b:stop", "a:stop"
            ]
        );
        assert_eq!(lifecycle.events().len(), 0);
        assert!(lifecycle.running().is_empty());
    }

    #[tokio::test]
    async fn a_config_names_the_probe_and_its_tag_in_what_it_reports() {
        let lifecycle = Lifecycle::new();
        let host = Host::builder().build();
        host.start().await.unwrap();
        let config: ProbeConfig =
            serde_json::from_value(json!({ "tag": "v2", "fail_start": true })).unwrap();
        let err = host
            .deploy(Probe::from_config("edge", &config, &lifecycle))
            .await
            .unwrap_err();
        assert_eq!(
            isopace_host::error_chain(&err),
            "component `edge` failed to start: probe `edge` asked to fail in start (tag `v2`)"
        );
        let config = ProbeConfig {
            panic_stop: true,
            fail_stop: true,
            ..ProbeConfig::default()
        };
        host.deploy(Probe::from_config("edge", &config, &lifecycle))
            .await
            .unwrap();
        let err = host.undeploy("edge").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("probe `edge` asked to panic in stop"),
            "{err}"
        );
        assert_eq!(lifecycle.starts("edge"), 2);
    }

    #[tokio::test]
    async fn the_registry_builds_probes_from_descriptors() {
        let lifecycle = Lifecycle::new();
        let registry = probe_registry(&lifecycle);
        assert!(registry.types().iter().any(|t| t.name == PROBE_TYPE));
        let text = probe_descriptor("a", &json!({ "tag": "v1" }));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({ "name": "a", "type": "probe", "config": { "tag": "v1" } })
        );
        assert!(serde_json::from_value::<ProbeConfig>(json!({ "tga": "x" })).is_err());
    }
}
