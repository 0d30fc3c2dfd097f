//! The `exec` component type: a supervised child process, restarted per policy, its output
//! logged, and stopped with its whole process group.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt, io,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use isopace_host::{BoxError, Component, Env, async_trait};
use isopace_observe::{Counter, attr};
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, de};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::Command,
    sync::oneshot,
    task::JoinHandle,
    time::Instant,
};

use crate::{Details, DetailsSlot};

/// The `config` of an `exec` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments, run directly (no shell).
    #[serde(deserialize_with = "argv")]
    pub command: Vec<String>,
    /// Variables added to (or overriding) the environment the child inherits.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The child's working directory (default: isopace's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// When to start the child again after it exits (default `on-failure`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The delay before each restart.
    #[serde(default)]
    pub backoff: Backoff,
    /// Restarts allowed within `restart_window`; the next one is refused and the component
    /// is failed (default 5).
    #[serde(default = "five")]
    pub max_restarts: u32,
    /// The window `max_restarts` counts restarts in (default 60s).
    #[serde(default = "one_minute", with = "isopace_config::serde_duration")]
    pub restart_window: Duration,
    /// The signal that asks the child to stop (default `SIGTERM`).
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// How long the child may take to exit after `stop_signal` before it is killed
    /// (default 10s, under the host's default stop timeout of 15s).
    #[serde(default = "ten_seconds", with = "isopace_config::serde_duration")]
    pub stop_grace: Duration,
}

fn five() -> u32 {
    5
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn argv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let argv = Vec::<String>::deserialize(deserializer)?;
    match argv.first() {
        Some(program) if !program.is_empty() => Ok(argv),
        _ => Err(de::Error::custom(
            "must name a program: a non-empty array such as [\"/usr/bin/env\", \"sleep\", \"60\"]",
        )),
    }
}

/// When an `exec` child is started again after it exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: the component stays up with no child once it exits.
    Never,
    /// After an exit with a non-zero status or by a signal.
    #[default]
    OnFailure,
    /// After every exit, successful or not.
    Always,
}

impl RestartPolicy {
    fn wants_restart(self, exit: &Exit) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Always => true,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// Exponential restart delay: `initial`, doubled for each restart still inside the restart
/// window, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BackoffConfig")]
pub struct Backoff {
    /// The first delay (default 1s).
    pub initial: Duration,
    /// The longest delay (default 30s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before a restart when `recent` restarts are already inside the window.
    pub fn delay(&self, recent: usize) -> Duration {
        let factor = 2_u32.saturating_pow(u32::try_from(recent).unwrap_or(u32::MAX));
        self.initial.saturating_mul(factor).min(self.max)
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.initial.is_zero() {
            Err("`backoff.initial` must be greater than zero")
        } else if self.max < self.initial {
            Err("`backoff.max` must not be less than `backoff.initial`")
        } else {
            Ok(())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffConfig {
    #[serde(default = "one_second", with = "isopace_config::serde_duration")]
    initial: Duration,
    #[serde(default = "thirty_seconds", with = "isopace_config::serde_duration")]
    max: Duration,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

impl TryFrom<BackoffConfig> for Backoff {
    type Error = &'static str;

    fn try_from(c: BackoffConfig) -> Result<Self, Self::Error> {
        let backoff = Backoff {
            initial: c.initial,
            max: c.max,
        };
        backoff.check()?;
        Ok(backoff)
    }
}

/// The signals a child can be asked to stop with.
const STOP_SIGNALS: [(&str, libc::c_int); 7] = [
    ("SIGTERM", libc::SIGTERM),
    ("SIGINT", libc::SIGINT),
    ("SIGHUP", libc::SIGHUP),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
];

/// The signal `stop` sends first: `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`, `SIGKILL`,
/// `SIGUSR1` or `SIGUSR2`, written with or without the `SIG` prefix, in any case.
///
/// ```
/// use isopace_cli::StopSignal;
///
/// let signal: StopSignal = "hup".parse().unwrap();
/// assert_eq!(signal.name(), "SIGHUP");
/// assert!("SIGSTOP".parse::<StopSignal>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    name: &'static str,
    number: libc::c_int,
}

impl StopSignal {
    /// `SIGTERM`, the default.
    pub const TERM: StopSignal = StopSignal {
        name: "SIGTERM",
        number: libc::SIGTERM,
    };

    /// The signal's name, with the `SIG` prefix.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The signal's number on this platform.
    pub fn number(&self) -> i32 {
        self.number
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::TERM
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        STOP_SIGNALS
            .iter()
            .find(|(name, _)| name[3..] == *bare)
            .map(|&(name, number)| StopSignal { name, number })
            .ok_or_else(|| {
                let known: Vec<&str> = STOP_SIGNALS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown signal `{text}`: expected one of {}",
                    known.join(", ")
                )
            })
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

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
/// when a second signal cuts shutdown short.
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

/// A running child: the process, its group, and the tasks logging its output.
struct Child {
    process: tokio::process::Child,
    pid: u32,
    group: Group,
    output: [JoinHandle<()>; 2],
}

/// Everything the supervisor task needs.
struct Supervision {
    component: Arc<str>,
    config: Arc<ExecConfig>,
    status: Arc<Status>,
    env: Env,
    starts: Counter,
    restarts: Counter,
    exits: Counter,
    spawn_failures: Counter,
}

/// Output lines longer than this are logged in pieces, so a child cannot make the daemon
/// buffer without bound.
const MAX_LINE: u64 = 64 * 1024;
/// How long the output of an exited child may take to be logged before it is dropped (a
/// process outside the group may still hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// How often a stopping process group is checked for survivors.
const GROUP_POLL: Duration = Duration::from_millis(10);
/// How long `SIGKILL`ed processes may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(1);

impl Supervision {
    fn spawn(&self) -> io::Result<Child> {
        let config = &self.config;
        let mut command = Command::new(&config.command[0]);
        command
            .args(&config.command[1..])
            .envs(&config.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &config.cwd {
            command.current_dir(cwd);
        }
        prepare_child(&mut command);
        let mut process = command.spawn().map_err(|e| {
            self.spawn_failures
                .add(1, &[attr("component", &*self.component)]);
            let cwd = config
                .cwd
                .as_ref()
                .map(|c| format!(" in {}", c.display()))
                .unwrap_or_default();
            io::Error::new(
                e.kind(),
                format!("cannot run `{}`{cwd}: {e}", config.command[0]),
            )
        })?;
        let pid = process
            .id()
            .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?;
        // The child leads its own group, so the group id is its pid.
        let group = Group::register(pid as i32);
        tracing::info!(pid, command = ?config.command, "child started");
        let stdout = process
            .stdout
            .take()
            .map(|out| self.log_output(out, "stdout", pid));
        let stderr = process
            .stderr
            .take()
            .map(|err| self.log_output(err, "stderr", pid));
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(io::Error::other("the child's output pipes are missing"));
        };
        self.starts.add(1, &[attr("component", &*self.component)]);
        self.status.update(|s| {
            s.state = ExecState::Running;
            s.pid = Some(pid);
            s.starts += 1;
        });
        Ok(Child {
            process,
            pid,
            group,
            output: [stdout, stderr],
        })
    }

    fn log_output(
        &self,
        output: impl AsyncRead + Unpin + Send + 'static,
        stream: &'static str,
        pid: u32,
    ) -> JoinHandle<()> {
        self.env.spawn(async move {
            let mut reader = BufReader::new(output);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut reader)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut line)
                    .await
                {
                    Ok(0) => break,
                    Ok(_) => {
                        let end = line
                            .iter()
                            .rposition(|b| !matches!(b, b'\n' | b'\r'))
                            .map_or(0, |i| i + 1);
                        let text = String::from_utf8_lossy(&line[..end]);
                        tracing::info!(stream, pid, "{text}");
                    }
                    Err(e) => {
                        tracing::debug!(stream, pid, error = %e, "cannot read the child's output");
                        break;
                    }
                }
            }
        })
    }

    async fn supervise(self, first: Child, mut stop: oneshot::Receiver<()>) {
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
            signal_group(child.group.pgid, self.config.stop_signal.number);
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
        signal_group(pgid, signal.number);
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

/// The process groups of every running child in this process, for
/// [`kill_all_children`].
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Kills the process group of every child of every `exec` component at once: for the
/// forced-exit path, where components get no chance to stop.
pub(crate) fn kill_all_children() {
    for &pgid in GROUPS.lock().iter() {
        signal_group(pgid, libc::SIGKILL);
    }
}

/// A child's process group, registered for [`kill_all_children`] until released; killed if
/// dropped unreleased (the supervisor was aborted).
struct Group {
    pgid: i32,
    released: bool,
}

impl Group {
    fn register(pgid: i32) -> Self {
        GROUPS.lock().insert(pgid);
        Group {
            pgid,
            released: false,
        }
    }

    fn release(&mut self) {
        self.released = true;
        GROUPS.lock().remove(&self.pgid);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.released {
            signal_group(self.pgid, libc::SIGKILL);
            GROUPS.lock().remove(&self.pgid);
        }
    }
}

/// Sends `signal` to every process in the group `pgid`.
fn signal_group(pgid: i32, signal: libc::c_int) {
    // `kill(-1)` would signal every process we may signal, and `kill(0)` our own group.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative pid
    // addresses a process group, and `pgid` is a child's group id (checked above).
    let sent = unsafe { libc::kill(-pgid, signal) };
    if sent != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, error = %e, "cannot signal the child's process group");
        }
    }
}

/// Waits until no process of the group `pgid` is left, sending `SIGKILL` at `deadline`.
async fn clear_group(pgid: i32, deadline: Instant) {
    while group_alive(pgid) {
        if Instant::now() >= deadline {
            signal_group(pgid, libc::SIGKILL);
            let give_up = Instant::now() + KILL_WAIT;
            while group_alive(pgid) {
                if Instant::now() >= give_up {
                    tracing::warn!(pgid, "processes of the child's group survived SIGKILL");
                    return;
                }
                tokio::time::sleep(GROUP_POLL).await;
            }
            return;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
}

/// Whether a live process is left in the group `pgid`.
fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: as in `signal_group`; signal 0 only checks that the group exists.
    if unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    live_member(pgid)
}

/// Whether the group has a member that is not a zombie: a zombie is dead, and when its
/// parent is gone only init can reap it, which not every container's init does.
#[cfg(target_os = "linux")]
fn live_member(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .is_some_and(|(state, group)| group == pgid && state != 'Z' && state != 'X')
    })
}

#[cfg(not(target_os = "linux"))]
fn live_member(_pgid: i32) -> bool {
    true
}

/// The state and process group from a `/proc/<pid>/stat` line.
#[cfg(target_os = "linux")]
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Sets the child up before it runs its program: the kernel kills it when the daemon dies,
/// however it dies (Linux), and it gets the open-file limit isopace started with.
fn prepare_child(command: &mut Command) {
    let limit = crate::limits::for_children();
    // A pre-exec hook rules out the faster posix_spawn path: add one only for work to do.
    if !cfg!(target_os = "linux") && limit.is_none() {
        return;
    }
    #[cfg(target_os = "linux")]
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl, getppid, setrlimit and _exit are, and nothing here allocates
    // or locks.
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The daemon died between fork and prctl: the signal will never come.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            // Lowering the soft limit cannot fail; if it did, the child keeps the higher one.
            if let Some(limit) = &limit {
                libc::setrlimit(libc::RLIMIT_NOFILE, limit);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isopace_observe::MetricsRegistry;
    use serde_json::json;

    fn exec(value: serde_json::Value) -> Exec {
        Exec::new("worker", config(value).unwrap()).unwrap()
    }

    fn env(metrics: &MetricsRegistry) -> Env {
        Env::new(isopace_config::Config::default(), Arc::new(metrics.clone()))
            .for_component("worker")
    }

    /// Polls `check` every millisecond for up to five seconds.
    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn sample(metrics: &MetricsRegistry, series: &str) -> Option<f64> {
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Asserts the child was reaped (no `/proc` entry, not even a zombie) and no live
    /// process is left in its group.
    fn assert_gone(pid: u32) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} is still in /proc"
        );
        assert!(
            !group_alive(pid as i32),
            "a process of group {pid} is still alive"
        );
    }

    #[tokio::test]
    async fn a_failing_child_is_restarted_with_growing_backoff_until_max_restarts() {
        let metrics = MetricsRegistry::new();
        let env = env(&metrics);
        let mut worker = exec(json!({
            "command": ["sh", "-c", "exit 1"],
            "backoff": {"initial": "40ms", "max": "10s"},
            "max_restarts": 3,
            "restart_window": "10s"
        }));
        worker.start(&env).await.unwrap();
        let mut starts = vec![Instant::now()];
        wait_for("the component to fail", || {
            let status = worker.status();
            if status.starts as usize > starts.len() {
                starts.push(Instant::now());
            }
            status.state == ExecState::Failed
        })
        .await;
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 3, "{gaps:?}");
        for (gap, delay) in gaps.iter().zip([40, 80, 160]) {
            // Polling may see a start late, which shortens the gap after it; a constant
            // delay would still leave the third gap near 40ms.
            assert!(*gap >= Duration::from_millis(delay * 3 / 4), "{gaps:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = worker.status();
        assert_eq!((status.starts, status.restarts), (4, 3));
        assert_eq!(status.last_exit.as_deref(), Some("exit status 1"));
        assert!(status.reason.unwrap().contains("max_restarts 3"));
        for (series, want) in [
            (r#"exec_starts_total{component="worker"}"#, 4.0),
            (r#"exec_restarts_total{component="worker"}"#, 3.0),
            (r#"exec_exits_total{component="worker",status="1"}"#, 4.0),
        ] {
            assert_eq!(sample(&metrics, series), Some(want), "{series}");
        }
        worker.stop(&env).await.unwrap();
        assert_eq!(worker.status().state, ExecState::Stopped);
    }

    #[tokio::test]
    async fn the_policy_decides_which_exits_restart() {
        for (restart, script, restarted) in [
            ("never", "exit 3", false),
            ("on-failure", "exit 0", false),
            ("on-failure", "kill -KILL $$", true),
            ("always", "exit 0", true),
        ] {
            let metrics = MetricsRegistry::new();
            let env = env(&metrics);
            let mut worker = exec(json!({
                "command": ["sh", "-c", script],
                "restart": restart,
                "backoff": {"initial": "10ms"},
                "max_restarts": 1,
            }));
            worker.start(&env).await.unwrap();
            wait_for("the child to end for good", || {
                matches!(worker.status().state, ExecState::Exited | ExecState::Failed)
            })
            .await;
            let status = worker.status();
            assert_eq!(status.restarts, u64::from(restarted), "{restart} {script}");
            assert_eq!(
                status.starts,
                1 + u64::from(restarted),
                "{restart} {script}"
            );
            let last = status.last_exit.unwrap();
            match script {
                "exit 3" => assert_eq!(last, "exit status 3"),
                "exit 0" => assert_eq!(last, "exit status 0"),
                _ => assert_eq!(last, "killed by SIGKILL"),
            }
            worker.stop(&env).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_child_ignoring_the_stop_signal_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let env = env(&MetricsRegistry::new());
        let mut worker = exec(json!({
            "command": ["sh", "-c", "trap '' TERM; : > \"$READY\"; while :; do sleep 1; done"],
            "env": {"READY": ready},
            "stop_grace": "300ms"
        }));
        worker.start(&env).await.unwrap();
        wait_for("the trap", || ready.exists()).await;
        let pid = worker.status().pid.unwrap();
        let started = Instant::now();
        worker.stop(&env).await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let status = worker.status();
        assert_eq!(status.last_exit.as_deref(), Some("killed by SIGKILL"));
        assert_eq!((status.state, status.pid), (ExecState::Stopped, None));
        assert_gone(pid);
    }

    #[tokio::test]
    async fn stop_leaves_no_process_of_the_group_behind() {
        let details = Details::new();
        let env = env(&MetricsRegistry::new());
        let mut worker = exec(json!({
            "command": ["sh", "-c", "sleep 30 & sleep 30 & echo started; wait"],
        }))
        .with_details(&details);
        worker.start(&env).await.unwrap();
        let pid = worker.status().pid.unwrap();
        let published = details.get("worker").unwrap();
        assert_eq!(published["pid"], json!(pid));
        assert_eq!(published["state"], json!("running"));
        wait_for("both sleeps", || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("stat"))
                        .ok()
                        .and_then(|s| parse_stat(&s))
                        .is_some_and(|(state, group)| group == pid as i32 && state != 'Z')
                })
                .count()
                == 3
        })
        .await;
        let started = Instant::now();
        worker.stop(&env).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_gone(pid);
        assert_eq!(
            details.get("worker").unwrap(),
            json!({"state": "stopped", "pid": null, "starts": 1, "restarts": 0, "last_exit": "killed by SIGTERM"})
        );
        drop(worker);
        assert_eq!(details.get("worker"), None);
    }

    #[tokio::test]
    async fn a_program_that_cannot_run_fails_the_start() {
        let env = env(&MetricsRegistry::new());
        let mut worker = exec(json!({"command": ["/nonexistent/program"], "cwd": "/"}));
        let e = worker.start(&env).await.unwrap_err().to_string();
        assert!(e.contains("cannot run `/nonexistent/program` in /"), "{e}");
        worker.stop(&env).await.unwrap();
    }

    fn config(value: serde_json::Value) -> Result<ExecConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn defaults_fill_what_the_descriptor_leaves_out() {
        let c = config(json!({"command": ["/bin/true"]})).unwrap();
        assert_eq!(c.restart, RestartPolicy::OnFailure);
        assert_eq!(c.backoff, Backoff::default());
        assert_eq!(
            (c.max_restarts, c.restart_window),
            (5, Duration::from_secs(60))
        );
        assert_eq!(c.stop_signal, StopSignal::TERM);
        assert_eq!(c.stop_grace, Duration::from_secs(10));
        assert!(c.env.is_empty() && c.cwd.is_none());
        let c = config(json!({
            "command": ["x"], "restart": "always", "stop_signal": "sigint",
            "backoff": {"initial": "10ms"}, "env": {"A": "1"}, "cwd": "/tmp"
        }))
        .unwrap();
        assert_eq!(c.restart, RestartPolicy::Always);
        assert_eq!(c.stop_signal.number(), libc::SIGINT);
        assert_eq!(c.backoff.initial, Duration::from_millis(10));
        assert_eq!(c.backoff.max, Duration::from_secs(30));
        assert!(config(Exec::example()).is_ok());
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (value, needle) in [
            (json!({"command": []}), "must name a program"),
            (json!({"command": [""]}), "must name a program"),
            (json!({"command": "sleep 1"}), "sequence"),
            (
                json!({"command": ["x"], "restart": "sometimes"}),
                "on-failure",
            ),
            (
                json!({"command": ["x"], "stop_signal": "SIGSTOP"}),
                "unknown signal `SIGSTOP`",
            ),
            (
                json!({"command": ["x"], "backoff": {"initial": "0s"}}),
                "greater than zero",
            ),
            (
                json!({"command": ["x"], "backoff": {"initial": "2s", "max": "1s"}}),
                "less than",
            ),
            (
                json!({"command": ["x"], "backoff": {"first": "1s"}}),
                "unknown field",
            ),
            (json!({"command": ["x"], "shell": true}), "unknown field"),
        ] {
            let e = config(value.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{value}: {e}");
        }
    }

    #[test]
    fn signal_names_parse_with_or_without_the_prefix() {
        for (text, number) in [
            ("SIGTERM", libc::SIGTERM),
            ("TERM", libc::SIGTERM),
            ("int", libc::SIGINT),
            ("SigHup", libc::SIGHUP),
            ("QUIT", libc::SIGQUIT),
            ("SIGKILL", libc::SIGKILL),
            ("USR1", libc::SIGUSR1),
            (" SIGUSR2 ", libc::SIGUSR2),
        ] {
            assert_eq!(
                text.parse::<StopSignal>().unwrap().number(),
                number,
                "{text}"
            );
        }
        assert!("".parse::<StopSignal>().is_err());
        assert!("SIG".parse::<StopSignal>().is_err());
    }

    #[test]
    fn backoff_doubles_per_recent_restart_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (0..6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(usize::MAX), Duration::from_secs(1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (sh) S 1 42 42 0"), Some(('S', 42)));
        assert_eq!(parse_stat("43 (a) b (c) Z 42 42 42 0"), Some(('Z', 42)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
