//! The supervisor task of one `exec` component: waits for the child, restarts it per policy
//! with backoff, and stops it when the component stops.

use std::{
    collections::VecDeque, fmt, io, os::unix::process::ExitStatusExt, process::ExitStatus,
    sync::Arc, time::Duration,
};

use isopace_host::Env;
use isopace_observe::{Counter, attr};
use tokio::{sync::oneshot, time::Instant};

use super::{
    ExecConfig, ExecState, RestartPolicy, Status,
    process_group::{clear_group, group_alive, signal_group},
    spawn::Child,
};

/// How a child ended.
enum Exit {
    Status(ExitStatus),
    SpawnFailed(String),
    WaitFailed(String),
}

impl Exit {
    fn success(&self) -> bool {
        matches!(self, Exit::Status(s) if s.success())
    }

    /// The `status` label of `exec_exits_total`.
    fn label(&self) -> String {
        match self {
            Exit::Status(s) => match (s.code(), s.signal()) {
                (Some(code), _) => code.to_string(),
                (None, Some(signal)) => signal_name(signal),
                (None, None) => "unknown".to_owned(),
            },
            Exit::SpawnFailed(_) => "spawn_failed".to_owned(),
            Exit::WaitFailed(_) => "unknown".to_owned(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Status(s) => match (s.code(), s.signal()) {
                (Some(code), _) => write!(f, "exit status {code}"),
                (None, Some(signal)) => write!(f, "killed by {}", signal_name(signal)),
                (None, None) => write!(f, "{s}"),
            },
            Exit::SpawnFailed(e) => write!(f, "cannot spawn: {e}"),
            Exit::WaitFailed(e) => write!(f, "cannot wait for the child: {e}"),
        }
    }
}

impl RestartPolicy {
    fn wants_restart(self, exit: &Exit) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Always => true,
        }
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

/// Everything the supervisor task needs.
pub(super) struct Supervision {
    pub(super) component: Arc<str>,
    pub(super) config: Arc<ExecConfig>,
    pub(super) status: Arc<Status>,
    pub(super) env: Env,
    pub(super) starts: Counter,
    pub(super) restarts: Counter,
    pub(super) exits: Counter,
    pub(super) spawn_failures: Counter,
}

/// How long the output of an exited child may take to be logged before it is dropped (a
/// process outside the group may still hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

impl Supervision {
    pub(super) async fn supervise(self, first: Child, mut stop: oneshot::Receiver<()>) {
        let mut recent: VecDeque<Instant> = VecDeque::new();
        let mut next: io::Result<Child> = Ok(first);
        loop {
            let exit = match next {
                Ok(mut child) => {
                    let waited = tokio::select! {
                        waited = child.process.wait() => waited,
                        _ = &mut stop => {
                            self.terminate(child).await;
                            return;
                        }
                    };
                    self.exited(child, waited).await
                }
                Err(e) => Exit::SpawnFailed(e.to_string()),
            };
            let Some(delay) = self.restart_delay(&exit, &mut recent) else {
                let _ = (&mut stop).await;
                self.status.update(|s| s.state = ExecState::Stopped);
                return;
            };
            self.status.update(|s| s.state = ExecState::Backoff);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = &mut stop => {
                    self.status.update(|s| s.state = ExecState::Stopped);
                    return;
                }
            }
            recent.push_back(Instant::now());
            self.restarts.add(1, &[attr("component", &*self.component)]);
            self.status.update(|s| s.restarts += 1);
            next = self.spawn().inspect_err(|e| {
                tracing::error!(error = %e, "cannot restart the child");
                self.status
                    .update(|s| s.last_exit = Some(format!("cannot spawn: {e}")));
            });
        }
    }

    /// Accounts for a child that exited on its own and clears what is left of its group.
    async fn exited(&self, child: Child, waited: io::Result<ExitStatus>) -> Exit {
        let exit = match waited {
            Ok(status) => Exit::Status(status),
            Err(e) => Exit::WaitFailed(e.to_string()),
        };
        if exit.success() {
            tracing::info!(pid = child.pid, status = %exit, "child exited");
        } else {
            tracing::warn!(pid = child.pid, status = %exit, "child exited");
        }
        if group_alive(child.group.pgid) {
            tracing::info!(pgid = child.group.pgid, signal = %self.config.stop_signal, "stopping what is left of the child's process group");
            signal_group(child.group.pgid, self.config.stop_signal.number());
            clear_group(child.group.pgid, Instant::now() + self.config.stop_grace).await;
        }
        self.finish(child, &exit).await;
        exit
    }

    /// Stops a running child: `stop_signal` to its group, then `SIGKILL` after the grace.
    async fn terminate(&self, mut child: Child) {
        let pgid = child.group.pgid;
        let signal = self.config.stop_signal;
        let grace = self.config.stop_grace;
        let deadline = Instant::now() + grace;
        tracing::info!(pid = child.pid, %signal, ?grace, "stopping the child");
        signal_group(pgid, signal.number());
        let waited = match tokio::time::timeout_at(deadline, child.process.wait()).await {
            Ok(waited) => waited,
            Err(_) => {
                tracing::warn!(pid = child.pid, ?grace, %signal, "the child ignored the stop signal; killing its process group");
                signal_group(pgid, libc::SIGKILL);
                child.process.wait().await
            }
        };
        clear_group(pgid, deadline).await;
        let exit = match waited {
            Ok(status) => Exit::Status(status),
            Err(e) => Exit::WaitFailed(e.to_string()),
        };
        tracing::info!(pid = child.pid, status = %exit, "child stopped");
        self.finish(child, &exit).await;
        self.status.update(|s| s.state = ExecState::Stopped);
    }

    /// Records an exit once the child is reaped and its group is gone.
    async fn finish(&self, mut child: Child, exit: &Exit) {
        child.group.release();
        for output in &mut child.output {
            if tokio::time::timeout(OUTPUT_GRACE, &mut *output)
                .await
                .is_err()
            {
                output.abort();
            }
        }
        self.exits.add(
            1,
            &[
                attr("component", &*self.component),
                attr("status", exit.label()),
            ],
        );
        self.status.update(|s| {
            s.pid = None;
            s.last_exit = Some(exit.to_string());
        });
    }

    /// The delay before the next start, or `None` (with the state updated) when the child
    /// is not restarted.
    fn restart_delay(&self, exit: &Exit, recent: &mut VecDeque<Instant>) -> Option<Duration> {
        let config = &self.config;
        if !config.restart.wants_restart(exit) {
            let policy = config.restart.as_str();
            if exit.success() {
                tracing::info!(restart = policy, "not restarting the child");
            } else {
                tracing::warn!(restart = policy, last_exit = %exit, "not restarting the child");
            }
            self.status.update(|s| s.state = ExecState::Exited);
            return None;
        }
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= config.restart_window)
        {
            recent.pop_front();
        }
        if recent.len() >= config.max_restarts as usize {
            let reason = format!(
                "restarted {} times within {:?} (max_restarts {}); last exit: {exit}",
                recent.len(),
                config.restart_window,
                config.max_restarts
            );
            tracing::error!(%reason, "exec component failed: not restarting the child any more");
            self.status.update(|s| {
                s.state = ExecState::Failed;
                s.reason = Some(reason);
            });
            return None;
        }
        let delay = config.backoff.delay(recent.len());
        tracing::info!(?delay, "restarting the child after the backoff");
        Some(delay)
    }
}
