//! The `exec` component type: a child process whose end is the component's end — a clean
//! finish when it exits 0, a failure otherwise — with its output logged, and stopped with
//! every process it started.
//!
//! An `exec` component does not restart its child itself: the host supervises it like any
//! component and applies the descriptor's `restart` policy, starting a fresh `exec` built
//! from the descriptor, with a new child, for every restart.
//!
//! ```json
//! { "name": "worker", "type": "exec",
//!   "restart": { "policy": "on-failure", "backoff": "1s", "max_backoff": "30s",
//!                "max_restarts": 5, "window": "60s" },
//!   "config": { "command": ["/usr/local/bin/worker", "--queue", "jobs"],
//!               "env": { "LANG": "C.UTF-8" }, "cwd": "/srv/worker",
//!               "stop_signal": "SIGTERM", "stop_grace": "10s",
//!               "stdout_level": "info", "stderr_level": "warn" } }
//! ```
//!
//! Each output line is logged in the component's span with the fields `stream` (`stdout`
//! or `stderr`) and `pid`, at `stdout_level` and `stderr_level` (`info` by default). The
//! child inherits isopace's environment, less systemd's `NOTIFY_SOCKET`, `WATCHDOG_USEC`
//! and `WATCHDOG_PID`, plus `env`.
//!
//! # Deprecated fields
//!
//! exec's own restart fields from when it restarted its child itself are still accepted
//! in `config`, with a warning naming the file, and moved to the descriptor's `restart`
//! wherever the descriptor does not set that field itself:
//!
//! | deprecated | use instead |
//! |---|---|
//! | `config.restart` (`never`, `on-failure`, `always`) | `restart.policy` (the same names) |
//! | `config.backoff.initial` (default 1s when `backoff` is given) | `restart.backoff` |
//! | `config.backoff.max` (default 30s when `backoff` is given) | `restart.max_backoff` |
//! | `config.max_restarts` | `restart.max_restarts` |
//! | `config.restart_window` | `restart.window` |
//!
//! A descriptor without them gets the descriptor's defaults: on failure, a backoff from
//! 100 ms to 30 s, at most 5 restarts in 60 s.
//!
//! # Every descendant goes with the child
//!
//! A child runs in a session and process group of its own. A stop — `stop`, an undeploy, a
//! restart, the daemon's shutdown — ends everything the child started, not only the child:
//!
//! - **In a cgroup, where there is one to have.** When this process may create cgroups in
//!   a cgroup v2 hierarchy (found through `/proc/self/mountinfo`, so also on hosts that
//!   mount it at `/sys/fs/cgroup/unified`), each child joins a cgroup of its own under the
//!   process's cgroup before it runs its program: `<own cgroup>/isopace-exec.<pid>.<start
//!   time>/<n>.<component>`. `stop_signal` goes to every process in it, `cgroup.kill` after
//!   `stop_grace`, and the stop returns once `cgroup.events` says `populated 0` (or a bound
//!   passes) and the cgroup is removed. Nothing escapes it: not a grandchild that calls
//!   `setsid`, not a daemon that double-forks. [`ExecStatus::cgroup`] names it.
//! - **Else through `/proc`.** The child's tree is every process in its session or process
//!   group, every descendant of one, and every process seen in the tree before (by pid and
//!   start time). A grandchild that calls `setsid` is in it while its parent lives, and once
//!   seen, also after. One that left the session *and* lost its parent before any scan
//!   saw it (a double fork) is not: with [`ChildSupervisor`]'s `adopt_orphans`, which
//!   `isopace run` turns on, such orphans are re-parented to the daemon instead of to init
//!   and killed when it exits.
//!
//! Which of the two applies is [`ChildSupervisor::containment`]; `isopace run` logs it at
//! startup, and `--exec-cgroups off` chooses the second.
//!
//! # When the daemon itself is killed
//!
//! The kernel kills each direct child when the daemon dies, however it dies
//! (`PR_SET_PDEATHSIG`; children are forked by a thread that lives as long as the process,
//! since the signal follows the forking thread). What the children started survives that.
//! So with a state directory ([`ChildSupervisor`], `isopace run --state-dir`), every running
//! child is recorded — pid, start time, cgroup — until it and everything it started are
//! gone, and [`ChildSupervisor::reclaim`] at the next start kills what a killed daemon
//! left: the recorded cgroup, or the recorded session and process group while the child's
//! pid still names it (a pid with another start time is another process, left alone).
//! Daemons that still run keep theirs, so several may share one directory.
//!
//! # Under systemd and Kubernetes
//!
//! A service manager already guarantees part of this, for the daemon as a whole:
//!
//! - **systemd** puts the service in a cgroup. With `KillMode=control-group` (the default)
//!   or `KillMode=mixed` (the example unit's: `SIGTERM` to isopace alone, so it stops its
//!   components in order, then `SIGKILL` to whatever is left), nothing of the unit survives
//!   a stop, and when isopace dies, systemd kills the rest of the cgroup before any restart.
//!   What it does not do is stop one component's descendants while the daemon runs: give
//!   the unit `Delegate=yes` so isopace may create a cgroup per child under its own
//!   (a `DynamicUser=` service otherwise cannot write there, and a root service must not
//!   write into a cgroup systemd did not delegate).
//! - **Kubernetes** runs isopace as the container's PID 1. When PID 1 dies, the kernel kills
//!   every process of the container's PID namespace, so nothing outlives a crash; but PID 1
//!   also inherits every orphan of the container, and must reap it: `isopace run` does,
//!   with [`reap_orphans`], whenever it is PID 1. The container's `/sys/fs/cgroup` is
//!   usually read-only, so children are tracked through `/proc`.

mod cgroup;
mod child;
mod config;
mod legacy;
mod output;
mod procfs;
mod reaper;
mod spawn;
mod state;
mod supervisor;
#[cfg(test)]
mod tests;
mod tree;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, async_trait};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle};

use child::Runner;
pub use config::{ExecConfig, OutputLevel, StopSignal};
pub use reaper::{reap_orphans, reap_zombies};
pub use supervisor::{
    ChildSupervisor, ChildSupervisorBuilder, Containment, Reclaimed, SupervisorError,
    default_state_dir,
};
pub use tree::kill_all_children;

/// What an `exec` component reports about its child, published as the component's details
/// ([`ComponentStatus::details`](isopace_host::ComponentStatus::details), `/components`):
///
/// ```json
/// {"pid": 1234, "started_at": "2025-01-02T03:04:05.678Z", "exited_at": null, "last_exit": null,
///  "cgroup": "/sys/fs/cgroup/isopace-exec.812.4711/1.worker"}
/// {"pid": null, "started_at": "...", "exited_at": "...", "last_exit": "exit status 1", "exit_code": 1}
/// {"pid": null, "started_at": "...", "exited_at": "...", "last_exit": "killed by SIGKILL", "signal": "SIGKILL"}
/// ```
///
/// Whether the component runs, failed or was restarted is the host's status, not this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ExecStatus {
    /// The child's process id while it runs.
    pub pid: Option<u32>,
    /// When the child was started.
    #[serde(serialize_with = "timestamp")]
    pub started_at: Option<SystemTime>,
    /// When the child ended.
    #[serde(serialize_with = "timestamp")]
    pub exited_at: Option<SystemTime>,
    /// How the child ended: `exit status 1`, `killed by SIGKILL`; `None` while it runs.
    pub last_exit: Option<String>,
    /// The status it exited with, when it exited by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it, such as `SIGKILL`, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// While the child runs, the cgroup it and everything it starts run in, if it has one
    /// (see [the module docs](self#every-descendant-goes-with-the-child)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl ExecStatus {
    fn to_json(&self) -> serde_json::Value {
        // Serialising this plain struct cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn timestamp<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.collect_str(&humantime::format_rfc3339_millis(*at)),
        None => s.serialize_none(),
    }
}

/// Runs `command` as a child process; its end is the component's end.
///
/// `start` spawns the child in its own session and process group (and cgroup, where it can;
/// see the [module docs](self)), with `/dev/null` as stdin, its stdout and stderr logged
/// line by line (`stream` = `stdout` or `stderr`) inside the component's span, and the
/// open-file limit isopace started with. A program that cannot run fails the start. The
/// [`ChildSupervisor`] it reads from the env's extensions, if there is one, decides how
/// children are contained and where they are recorded.
///
/// Built from a descriptor, an `exec` whose program does not exist or may not be run by
/// this user, or whose `cwd` is not a directory, is not built at all: the type's preflight
/// check refuses it, naming the field, as `isopace validate` does beforehand.
///
/// When the child ends on its own, what is left of what it started is stopped too, and the
/// end is reported to the host through the component's [`Env`]: exit status 0 is a clean
/// finish ([`Env::finish`]: the component is `stopped`), any other status or a signal a
/// failure naming it ([`Env::fail`]). The host's restart policy decides what follows; a
/// restart is a new component with a new child. [`ExecStatus`] is published as the
/// component's details.
///
/// `stop` sends `stop_signal` to every process the child started, waits up to
/// `stop_grace`, then kills them all (`cgroup.kill`, or `SIGKILL` to each); it returns once
/// the child is reaped and none of them is left. It declares that bound, plus a margin for
/// the kill, as its stop timeout ([`Env::set_stop_timeout`]).
///
/// Children never outlive the daemon: on Linux each child is killed by the kernel when
/// isopace dies (`PR_SET_PDEATHSIG`), what it started is killed by the next start when
/// children are recorded ([`ChildSupervisor::reclaim`]), and `isopace run` kills every
/// child's tree with [`kill_all_children`] when a second signal cuts shutdown short.
///
/// Metrics, all labelled `component`: `exec_starts_total`, `exec_spawn_failures_total` and
/// `exec_exits_total{status="0"|"1"|...|"SIGKILL"|...}`; restarts are the host's
/// `isopace_component_restarts_total`.
#[derive(Debug)]
pub struct Exec {
    name: String,
    config: Arc<ExecConfig>,
    status: Arc<Mutex<ExecStatus>>,
    running: Option<Running>,
}

/// What a stop may take beyond `stop_grace`: the kill, the wait for the processes to go,
/// and the last of the child's output.
const STOP_MARGIN: Duration = Duration::from_secs(3);

/// The started child's task and the way to stop it.
#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Exec {
    /// A child process component named `name`. Nothing runs until started.
    pub fn new(name: &str, config: ExecConfig) -> Result<Self, BoxError> {
        if config.command.first().is_none_or(String::is_empty) {
            return Err("`command` must name a program".into());
        }
        Ok(Exec {
            name: name.to_owned(),
            config: Arc::new(config),
            status: Arc::default(),
            running: None,
        })
    }

    /// What the component last reported about its child (see [`ExecStatus`]).
    pub fn status(&self) -> ExecStatus {
        self.status.lock().clone()
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> serde_json::Value {
        serde_json::json!({
            "command": ["/usr/bin/env", "sleep", "3600"],
            "env": { "LANG": "C.UTF-8" },
            "stop_signal": "SIGTERM",
            "stop_grace": "10s",
            "stdout_level": "info",
            "stderr_level": "info"
        })
    }
}

#[async_trait]
impl Component for Exec {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        if self.running.is_some() {
            return Ok(());
        }
        let observer = env.observer();
        for (name, help) in [
            ("exec_starts", "Children started, by component."),
            (
                "exec_exits",
                "Children that ended, by component and exit status or signal.",
            ),
            (
                "exec_spawn_failures",
                "Children that could not be started, by component.",
            ),
        ] {
            observer.describe(name, help);
        }
        let runner = Runner {
            component: Arc::from(self.name.as_str()),
            config: Arc::clone(&self.config),
            status: Arc::clone(&self.status),
            env: env.clone(),
            supervisor: env.extension::<ChildSupervisor>().unwrap_or_default(),
            starts: observer.counter("exec_starts"),
            exits: observer.counter("exec_exits"),
            spawn_failures: observer.counter("exec_spawn_failures"),
        };
        let child = runner.spawn().await?;
        env.set_stop_timeout(self.config.stop_grace + STOP_MARGIN);
        let (stop, stopped) = oneshot::channel();
        let task = env.spawn(runner.run(child, stopped));
        self.running = Some(Running { stop, task });
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        // The task may have ended with the child already; then there is no one to tell.
        let _ = running.stop.send(());
        match running.task.await {
            Err(e) if e.is_panic() => Err("the task owning the child panicked".into()),
            _ => Ok(()),
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        // Never stopped: aborting the task drops the child, which kills its tree.
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
    }
}

/// Registers the `exec` type, the preflight check of its program and `cwd`, and the
/// migration of its deprecated restart fields.
pub(crate) fn register(registry: &mut Registry) -> Result<(), isopace_deploy::Error> {
    registry.register_typed(
        "exec",
        "runs a command as a child process: its exit is the component's failure, or a clean \
         finish at status 0; stopped with every process it started",
        Exec::example(),
        |name: &str, config: ExecConfig, _env: &Env| Exec::new(name, config),
    )?;
    registry.register_preflight("exec", config::preflight)?;
    registry.register_migration("exec", legacy::migrate);
    Ok(())
}
