//! The `exec` component type: a supervised child process, restarted per policy, its output
//! logged, and stopped with its whole process group.

mod config;
mod output;
mod process_group;
mod spawn;
mod supervise;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, async_trait};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{Details, DetailsSlot, RuntimeHandle};
pub use config::{Backoff, ExecConfig, RestartPolicy, StopSignal};
pub use process_group::kill_all_children;
use supervise::Supervision;

/// Where an `exec` component is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExecState {
    /// Not started yet.
    Idle,
    /// The child is running.
    Running,
    /// The child exited and is restarted after the backoff delay.
    Backoff,
    /// The child exited and the restart policy does not restart it.
    Exited,
    /// The child exited too often: more than `max_restarts` within `restart_window`. The
    /// host still lists the component as running; it stays failed until redeployed.
    Failed,
    /// Stopped by the host.
    Stopped,
}

/// What an `exec` component reports about its child; also published, as JSON, through
/// [`Details`] for `/components`:
/// `{"state": "running", "pid": 1234, "starts": 3, "restarts": 2, "last_exit": "exit status 1"}`,
/// plus `"reason"` when failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExecStatus {
    /// Where the component is in its life.
    pub state: ExecState,
    /// The child's process id while it runs.
    pub pid: Option<u32>,
    /// Children started, the first one included.
    pub starts: u64,
    /// Restarts after an exit.
    pub restarts: u64,
    /// How the last child ended: `exit status 1`, `killed by SIGKILL`, `cannot spawn: ...`.
    pub last_exit: Option<String>,
    /// Why the component failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Runs `command` as a child process and supervises it.
///
/// The child gets its own process group, `/dev/null` as stdin, and its stdout and stderr
/// logged line by line (`stream` = `stdout` or `stderr`) inside the component's span. When
/// it exits, the rest of its process group is stopped too, and the restart policy decides
/// whether it starts again after an exponential backoff. More than `max_restarts` restarts
/// within `restart_window` fail the component: it logs an error and reports
/// [`ExecState::Failed`] with the reason.
///
/// Stop sends `stop_signal` to the process group, waits up to `stop_grace`, then sends
/// `SIGKILL`; it returns once the child is reaped and no process of its group is left.
///
/// Children never outlive the daemon: on Linux each child is killed by the kernel when
/// isopace dies (`PR_SET_PDEATHSIG`), and `isopace run` kills every child's process group
/// with [`kill_all_children`] when a second signal cuts shutdown short.
///
/// Metrics, all labelled `component`: `exec_starts_total`, `exec_restarts_total`,
/// `exec_spawn_failures_total` and `exec_exits_total{status="0"|"1"|...|"SIGKILL"|...}`.
#[derive(Debug)]
pub struct Exec {
    name: String,
    config: Arc<ExecConfig>,
    status: Arc<Status>,
    supervisor: Option<Supervisor>,
}

#[derive(Debug)]
struct Supervisor {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Exec {
    /// A supervised child named `name`. Nothing runs until started.
    pub fn new(name: &str, config: ExecConfig) -> Result<Self, BoxError> {
        if config.command.first().is_none_or(String::is_empty) {
            return Err("`command` must name a program".into());
        }
        config.backoff.check()?;
        Ok(Exec {
            name: name.to_owned(),
            config: Arc::new(config),
            status: Arc::new(Status::new(None)),
            supervisor: None,
        })
    }

    /// Publishes the component's [`ExecStatus`] in `details` as it changes.
    #[must_use]
    pub fn with_details(mut self, details: &Details) -> Self {
        self.status = Arc::new(Status::new(Some(details.slot(&self.name))));
        self
    }

    /// The child's current status.
    pub fn status(&self) -> ExecStatus {
        self.status.current.lock().clone()
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> serde_json::Value {
        serde_json::json!({
            "command": ["/usr/bin/env", "sleep", "3600"],
            "env": { "LANG": "C.UTF-8" },
            "restart": "on-failure",
            "backoff": { "initial": "1s", "max": "30s" },
            "max_restarts": 5,
            "restart_window": "60s",
            "stop_signal": "SIGTERM",
            "stop_grace": "10s"
        })
    }
}

#[async_trait]
impl Component for Exec {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        if self.supervisor.is_some() {
            return Ok(());
        }
        let ctx = Supervision {
            component: Arc::from(self.name.as_str()),
            config: Arc::clone(&self.config),
            status: Arc::clone(&self.status),
            env: env.clone(),
            starts: env.observer().counter("exec_starts"),
            restarts: env.observer().counter("exec_restarts"),
            exits: env.observer().counter("exec_exits"),
            spawn_failures: env.observer().counter("exec_spawn_failures"),
        };
        let child = ctx.spawn().map_err(|e| e.to_string())?;
        let (stop, stopped) = oneshot::channel();
        let task = env.spawn(ctx.supervise(child, stopped));
        self.supervisor = Some(Supervisor { stop, task });
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        let Some(supervisor) = self.supervisor.take() else {
            return Ok(());
        };
        let _ = supervisor.stop.send(());
        match supervisor.task.await {
            Err(e) if e.is_panic() => Err("the supervisor panicked".into()),
            _ => Ok(()),
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        // Never stopped: aborting the supervisor drops the child, which kills its group.
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.task.abort();
        }
    }
}

/// Registers the `exec` type. Its components publish their [`ExecStatus`] in the runtime's
/// [`Details`].
pub(crate) fn register(
    registry: &mut Registry,
    runtime: &RuntimeHandle,
) -> Result<(), isopace_deploy::Error> {
    let handle = runtime.clone();
    registry.register_typed(
        "exec",
        "runs a command as a supervised child process, restarted per policy, stopped with its process group",
        Exec::example(),
        move |name: &str, config: ExecConfig, _env: &Env| {
            Ok(Exec::new(name, config)?.with_details(handle.details()))
        },
    )
}

/// The status, shared by the component and its supervisor, and published on each change.
#[derive(Debug)]
struct Status {
    current: Mutex<ExecStatus>,
    slot: Option<DetailsSlot>,
}

impl Status {
    fn new(slot: Option<DetailsSlot>) -> Self {
        Status {
            current: Mutex::new(ExecStatus {
                state: ExecState::Idle,
                pid: None,
                starts: 0,
                restarts: 0,
                last_exit: None,
                reason: None,
            }),
            slot,
        }
    }

    fn update(&self, change: impl FnOnce(&mut ExecStatus)) {
        let mut current = self.current.lock();
        change(&mut current);
        if let Some(slot) = &self.slot {
            // Serialising this plain struct cannot fail.
            slot.set(serde_json::to_value(&*current).unwrap_or_default());
        }
    }
}
