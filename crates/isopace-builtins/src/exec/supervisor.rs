//! [`ChildSupervisor`]: how a daemon's `exec` children are contained and remembered — the
//! env extension `isopace run` provides, with what it does when none is provided.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    cgroup::{self, ChildCgroup},
    reaper,
    state::{Record, StateDir},
};

/// How a daemon's [`Exec`](super::Exec) children are contained and remembered: provided to
/// components as an env extension (`env.insert_extension(supervisor)`), read by every
/// `exec` when it starts a child.
///
/// - **Containment.** Where this process may create cgroups in a cgroup v2 hierarchy (found
///   through `/proc/self/mountinfo`, under its own cgroup), each child gets a cgroup, and a
///   stop ends everything in it with `cgroup.kill` — also a grandchild that started a session
///   of its own. Elsewhere (or with [`cgroups(false)`](ChildSupervisorBuilder::cgroups)),
///   a child's tree is its session (each child starts one), its process group and every
///   descendant seen through `/proc`; with
///   [`adopt_orphans(true)`](ChildSupervisorBuilder::adopt_orphans) this process also becomes
///   a child subreaper, so orphaned descendants come to it, not to init, and it kills them
///   when it exits.
/// - **Records.** With a [state directory](ChildSupervisorBuilder::state_dir), every running
///   child is recorded there (pid, start time, cgroup) until it and everything it started are
///   gone; [`reclaim`](ChildSupervisor::reclaim), at the next start, kills what a daemon
///   process that was killed left behind.
///
/// Without the extension, an `exec` contains its children the same way (cgroups where
/// possible), records nothing, and leaves this process's subreaper setting alone.
///
/// ```no_run
/// use isopace_builtins::exec::{ChildSupervisor, default_state_dir, reap_orphans};
/// use isopace_host::Host;
/// use tokio::signal::unix::{SignalKind, signal};
///
/// # async fn daemon(host: Host) -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = ChildSupervisor::builder()
///     .state_dir(default_state_dir("mydaemon"))
///     .adopt_orphans(true)
///     .build()?;
/// let reclaimed = supervisor.reclaim().await;
/// println!("killed {} processes a killed predecessor left", reclaimed.processes);
/// if std::process::id() == 1 || supervisor.is_subreaper() {
///     tokio::spawn(reap_orphans(signal(SignalKind::child())?));
/// }
/// host.env().insert_extension(supervisor);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChildSupervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cgroups: bool,
    state: Option<StateDir>,
    subreaper: bool,
}

impl Default for ChildSupervisor {
    /// Cgroups where possible, no records, no subreaper: what an `exec` does without the
    /// extension.
    fn default() -> Self {
        ChildSupervisor {
            inner: Arc::new(Inner {
                cgroups: true,
                state: None,
                subreaper: false,
            }),
        }
    }
}

impl ChildSupervisor {
    /// A builder: cgroups where possible, no state directory, no subreaper.
    pub fn builder() -> ChildSupervisorBuilder {
        ChildSupervisorBuilder {
            state_dir: None,
            cgroups: true,
            adopt_orphans: false,
        }
    }

    /// Sets a daemon named `name` up the way `isopace run` does, before any component
    /// starts: cgroups when `cgroups` (and possible), orphans adopted, children recorded in
    /// `state_dir` — which must work when given; the [default](default_state_dir) one may
    /// not, which costs only the records, with a warning — then what a killed predecessor
    /// left is [reclaimed](Self::reclaim), and, when this process is PID 1 or became a
    /// subreaper, a task [reaps orphans](super::reap_orphans) on SIGCHLD. Logs what it chose.
    /// Call it inside a tokio runtime.
    pub async fn for_daemon(
        name: &str,
        state_dir: Option<&Path>,
        cgroups: bool,
    ) -> Result<ChildSupervisor, SupervisorError> {
        let builder = || {
            ChildSupervisor::builder()
                .cgroups(cgroups)
                .adopt_orphans(true)
        };
        let supervisor = match state_dir {
            Some(dir) => builder().state_dir(dir).build()?,
            None => builder()
                .state_dir(default_state_dir(name))
                .build()
                .or_else(|e| {
                    tracing::warn!(error = %isopace_observe::error_chain(&e), "exec children are not recorded: should the daemon be killed, a later start cannot kill what they leave");
                    builder().build()
                })?,
        };
        let state_dir = supervisor
            .state_dir()
            .map_or("none".into(), |d| d.display().to_string());
        let containment = supervisor.containment();
        tracing::info!(%state_dir, %containment, "supervising exec children");
        supervisor.reclaim().await;
        if std::process::id() == 1 || supervisor.is_subreaper() {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::child()) {
                Ok(sigchld) => drop(tokio::spawn(super::reap_orphans(sigchld))),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGCHLD: orphans stay zombies");
                }
            }
        }
        Ok(supervisor)
    }

    /// How children are contained.
    pub fn containment(&self) -> Containment {
        if !self.inner.cgroups {
            return Containment::Tracked {
                reason: "cgroups are turned off".to_owned(),
            };
        }
        match cgroup::available() {
            Ok(parent) => Containment::Cgroup {
                parent: parent.to_owned(),
            },
            Err(reason) => Containment::Tracked {
                reason: reason.to_owned(),
            },
        }
    }

    /// The state directory children are recorded in, if any.
    pub fn state_dir(&self) -> Option<&Path> {
        self.inner.state.as_ref().map(StateDir::path)
    }

    /// Whether this process made itself a child subreaper, and so must reap the orphans
    /// re-parented to it (see [`reap_orphans`](super::reap_orphans)).
    pub fn is_subreaper(&self) -> bool {
        self.inner.subreaper
    }

    /// Kills what daemon processes recorded in the state directory left behind when they
    /// were killed — each recorded child's cgroup, or its session and process group, when
    /// its pid still names it — and removes their records and cgroups. Call it once at
    /// startup, before any component starts. Daemon processes that still run are left
    /// alone, so daemons may share a state directory. What it killed is logged, and
    /// returned.
    pub async fn reclaim(&self) -> Reclaimed {
        match &self.inner.state {
            Some(state) => state.reclaim().await,
            None => Reclaimed::default(),
        }
    }

    /// A new cgroup for a child of `component`, when children get one.
    pub(super) fn cgroup(&self, component: &str) -> Option<ChildCgroup> {
        if !self.inner.cgroups || cgroup::available().is_err() {
            return None;
        }
        match ChildCgroup::create(component) {
            Ok(cgroup) => Some(cgroup),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a cgroup for the child; tracking its processes through /proc");
                None
            }
        }
    }

    /// Records a running child in the state directory, if there is one.
    pub(super) fn record(
        &self,
        component: &str,
        pid: u32,
        start_time: u64,
        cgroup: Option<&Path>,
    ) -> Option<Record> {
        let state = self.inner.state.as_ref()?;
        match state.record(component, pid, start_time, cgroup) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(state_dir = %state.path().display(), error = %e, "cannot record the child; a later start could not kill what it leaves should the daemon be killed");
                None
            }
        }
    }
}

/// Builds a [`ChildSupervisor`].
#[derive(Debug)]
#[must_use = "call build() to get the supervisor"]
pub struct ChildSupervisorBuilder {
    state_dir: Option<PathBuf>,
    cgroups: bool,
    adopt_orphans: bool,
}

impl ChildSupervisorBuilder {
    /// Records children in `dir` (created with mode 0700 if missing; it must belong to this
    /// user and be writable by no one else). See [`default_state_dir`].
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Whether children get a cgroup each where this process may create them (default
    /// true). `false` tracks them through `/proc` everywhere.
    pub fn cgroups(mut self, cgroups: bool) -> Self {
        self.cgroups = cgroups;
        self
    }

    /// When children get no cgroup, makes this process a child subreaper (Linux), so the
    /// orphaned descendants of its children are re-parented to it, not to init (default
    /// false). It must then reap them: run [`reap_orphans`](super::reap_orphans).
    pub fn adopt_orphans(mut self, adopt: bool) -> Self {
        self.adopt_orphans = adopt;
        self
    }

    /// The supervisor: creates the state directory and, when asked to adopt orphans and no
    /// cgroup contains the children, makes this process a subreaper.
    pub fn build(self) -> Result<ChildSupervisor, SupervisorError> {
        let state = self.state_dir.as_deref().map(StateDir::open).transpose()?;
        let cgroups = self.cgroups && cgroup::available().is_ok();
        let subreaper = self.adopt_orphans && !cgroups;
        if subreaper {
            reaper::become_subreaper().map_err(|source| SupervisorError::Subreaper { source })?;
        }
        Ok(ChildSupervisor {
            inner: Arc::new(Inner {
                cgroups: self.cgroups,
                state,
                subreaper,
            }),
        })
    }
}

/// How `exec` children are contained (see [`ChildSupervisor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Containment {
    /// A cgroup per child, under `parent`.
    Cgroup {
        /// This process's own cgroup directory.
        parent: PathBuf,
    },
    /// Sessions, process groups and descendants seen through `/proc`.
    Tracked {
        /// Why there are no cgroups.
        reason: String,
    },
}

impl fmt::Display for Containment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Containment::Cgroup { parent } => {
                write!(f, "a cgroup per child under {}", parent.display())
            }
            Containment::Tracked { reason } => write!(
                f,
                "each child's session, process group and descendants, through /proc ({reason})"
            ),
        }
    }
}

/// What [`ChildSupervisor::reclaim`] killed and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reclaimed {
    /// The records of children of daemon processes that no longer run.
    pub records: usize,
    /// The processes they left that were still running, now killed.
    pub processes: usize,
    /// Their cgroups, now empty and removed.
    pub cgroups: usize,
}

/// Why a [`ChildSupervisor`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The state directory cannot be created or used.
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The state directory could be written by someone else, who could then make a later
    /// start kill their choice of this user's processes.
    UnsafeStateDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This process cannot become a child subreaper.
    Subreaper {
        /// What failed.
        source: io::Error,
    },
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::StateDir { path, .. } => {
                write!(f, "cannot use the state directory {}", path.display())
            }
            SupervisorError::UnsafeStateDir { path, reason } => {
                write!(f, "the state directory {} is {reason}", path.display())
            }
            SupervisorError::Subreaper { .. } => {
                f.write_str("cannot make this process a child subreaper")
            }
        }
    }
}

impl std::error::Error for SupervisorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SupervisorError::StateDir { source, .. } | SupervisorError::Subreaper { source } => {
                Some(source)
            }
            SupervisorError::UnsafeStateDir { .. } => None,
        }
    }
}

/// Where a daemon named `name` records its children by default: `$XDG_RUNTIME_DIR/<name>`
/// when that variable is set, else `/run/<name>` when this user may write there, else
/// `<temp dir>/<name>-<uid>`.
pub fn default_state_dir(name: &str) -> PathBuf {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
    {
        return runtime.join(name);
    }
    let run = Path::new("/run").join(name);
    if writable(&run) || (!run.exists() && writable(Path::new("/run"))) {
        return run;
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("{name}-{uid}"))
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path we own and touches no other memory.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}
