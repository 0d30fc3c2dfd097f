//! The task that owns one `exec` child: waits for it and reports its end to the host, or
//! stops it with everything it started when the component stops.

use std::{
    fmt, io,
    os::unix::process::ExitStatusExt,
    process::ExitStatus,
    sync::Arc,
    time::{Duration, SystemTime},
};

use isopace_host::Env;
use isopace_observe::{Counter, Rounded, attr};
use parking_lot::Mutex;
use tokio::{sync::oneshot, time::Instant};

use super::{ChildSupervisor, ExecConfig, ExecStatus, spawn::Child};

/// How a child ended.
enum Exit {
    Status(ExitStatus),
    WaitFailed(io::Error),
}

impl Exit {
    fn success(&self) -> bool {
        matches!(self, Exit::Status(s) if s.success())
    }

    fn code(&self) -> Option<i32> {
        match self {
            Exit::Status(s) => s.code(),
            Exit::WaitFailed(_) => None,
        }
    }

    fn signal(&self) -> Option<String> {
        match self {
            Exit::Status(s) if s.code().is_none() => s.signal().map(signal_name),
            _ => None,
        }
    }

    /// The `status` label of `exec_exits_total`.
    fn label(&self) -> String {
        match (self.code(), self.signal()) {
            (Some(code), _) => code.to_string(),
            (None, Some(signal)) => signal,
            (None, None) => "unknown".to_owned(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.code(), self.signal()) {
            (_, Some(code), _) => write!(f, "exit status {code}"),
            (_, None, Some(signal)) => write!(f, "killed by {signal}"),
            (Exit::Status(s), None, None) => write!(f, "{s}"),
            (Exit::WaitFailed(e), None, None) => write!(f, "unknown (cannot wait for it: {e})"),
        }
    }
}

/// A child's end that is the component's failure: what the host records as its last error.
#[derive(Debug)]
enum ChildFailed {
    Exited { pid: u32, exit: String },
    Wait { pid: u32, source: io::Error },
}

impl fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildFailed::Exited { pid, exit } => write!(f, "the child (pid {pid}) ended: {exit}"),
            ChildFailed::Wait { pid, .. } => write!(f, "cannot wait for the child (pid {pid})"),
        }
    }
}

impl std::error::Error for ChildFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChildFailed::Exited { .. } => None,
            ChildFailed::Wait { source, .. } => Some(source),
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

/// Everything one start of an `exec` component needs to run its child.
pub(super) struct Runner {
    pub(super) component: Arc<str>,
    pub(super) config: Arc<ExecConfig>,
    pub(super) status: Arc<Mutex<ExecStatus>>,
    pub(super) env: Env,
    pub(super) supervisor: ChildSupervisor,
    pub(super) starts: Counter,
    pub(super) exits: Counter,
    pub(super) spawn_failures: Counter,
}

/// How long the output of an ended child may take to be logged before it is dropped (a
/// process that escaped the child's tree may still hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

impl Runner {
    /// Changes the status and publishes it as the component's details.
    pub(super) fn update(&self, change: impl FnOnce(&mut ExecStatus)) {
        let mut status = self.status.lock();
        change(&mut status);
        self.env.set_details(status.to_json());
    }

    /// Owns the child until it ends: an end of its own is reported to the host (exit status
    /// 0 as the component's clean finish, anything else as its failure); `stop` ends it.
    pub(super) async fn run(self, mut child: Child, mut stop: oneshot::Receiver<()>) {
        let waited = tokio::select! {
            waited = child.process.wait() => waited,
            _ = &mut stop => {
                self.terminate(child).await;
                return;
            }
        };
        let pid = child.pid;
        let exit = self.exited(child, waited).await;
        // A stop that arrived meanwhile asked for this end: it is neither a failure nor a
        // finish.
        if stop.try_recv().is_ok() {
            return;
        }
        match exit {
            _ if exit.success() => self.env.finish(),
            Exit::WaitFailed(source) => self.env.fail(ChildFailed::Wait { pid, source }),
            Exit::Status(_) => self.env.fail(ChildFailed::Exited {
                pid,
                exit: exit.to_string(),
            }),
        }
    }

    /// Accounts for a child that ended on its own and clears what is left of its tree.
    async fn exited(&self, child: Child, waited: io::Result<ExitStatus>) -> Exit {
        let exit = match waited {
            Ok(status) => Exit::Status(status),
            Err(e) => Exit::WaitFailed(e),
        };
        if exit.success() {
            tracing::info!(pid = child.pid, status = %exit, "child exited");
        } else {
            tracing::warn!(pid = child.pid, status = %exit, "child exited");
        }
        if child.tree.alive() {
            tracing::info!(pid = child.pid, signal = %self.config.stop_signal, "stopping what is left of the processes the child started");
            child.tree.signal(self.config.stop_signal.number());
            child
                .tree
                .clear(Instant::now() + self.config.stop_grace)
                .await;
        }
        self.finish(child, &exit).await;
        exit
    }

    /// Stops a running child: `stop_signal` to everything it started, then `SIGKILL` (with
    /// `cgroup.kill` where it has a cgroup) after the grace.
    async fn terminate(&self, mut child: Child) {
        let signal = self.config.stop_signal;
        let grace = self.config.stop_grace;
        let deadline = Instant::now() + grace;
        tracing::info!(pid = child.pid, %signal, grace = %Rounded(grace), "stopping the child");
        child.tree.signal(signal.number());
        let waited = match tokio::time::timeout_at(deadline, child.process.wait()).await {
            Ok(waited) => waited,
            Err(_) => {
                tracing::warn!(pid = child.pid, grace = %Rounded(grace), %signal, "the child ignored the stop signal; killing it and everything it started");
                child.tree.kill();
                child.process.wait().await
            }
        };
        child.tree.clear(deadline).await;
        let exit = match waited {
            Ok(status) => Exit::Status(status),
            Err(e) => Exit::WaitFailed(e),
        };
        tracing::info!(pid = child.pid, status = %exit, "child stopped");
        self.finish(child, &exit).await;
    }

    /// Records an end once the child is reaped and its tree is gone.
    async fn finish(&self, child: Child, exit: &Exit) {
        let Child {
            tree,
            owned,
            mut output,
            ..
        } = child;
        tree.release();
        // tokio has reaped the child: an orphan reaper may have its pid now.
        drop(owned);
        for output in &mut output {
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
        self.update(|s| {
            s.pid = None;
            s.exited_at = Some(SystemTime::now());
            s.last_exit = Some(exit.to_string());
            s.exit_code = exit.code();
            s.signal = exit.signal();
            s.cgroup = None;
        });
    }
}
