//! Starting a child: its command, session, cgroup and output pipes, and what it inherits
//! (the open-file limit isopace started with, and on Linux death with the daemon).
//!
//! Children are forked by one thread that lives as long as the process: the kernel's
//! parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that forked a child
//! ends, and a runtime's worker or blocking thread may end long before the daemon does.

use std::{
    ffi::CString,
    io,
    panic::AssertUnwindSafe,
    process::Stdio,
    sync::{OnceLock, mpsc},
    time::SystemTime,
};

use isopace_observe::attr;
use tokio::{process::Command, runtime::Handle, sync::oneshot, task::JoinHandle};

use super::{
    cgroup::ChildCgroup,
    child::Runner,
    procfs,
    reaper::{self, Owned},
    tree::Tree,
};

/// A running child: the process, everything it starts, and the tasks logging its output.
pub(super) struct Child {
    pub(super) process: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) tree: Tree,
    /// Keeps an orphan reaper off the child until tokio has reaped it.
    pub(super) owned: Owned,
    pub(super) output: [JoinHandle<()>; 2],
}

impl Runner {
    pub(super) async fn spawn(&self) -> io::Result<Child> {
        let config = &self.config;
        let cgroup = self.supervisor.cgroup(&self.component);
        let (spawned, cgroup) = match (spawn(self.command(cgroup.as_ref())).await, cgroup) {
            // Joining the cgroup may be what failed: one more try without it.
            (Err(first), Some(cgroup)) => {
                drop(cgroup);
                let retried = spawn(self.command(None)).await;
                if retried.is_ok() {
                    tracing::warn!(error = %first, "the child cannot join its cgroup; tracking its processes through /proc");
                }
                (retried, None)
            }
            other => other,
        };
        let (mut process, owned) = spawned.map_err(|e| {
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
        // A zombie keeps its start time, so this holds even if the child exited already.
        let start_time = procfs::stat(pid as i32).map_or(0, |s| s.start_time);
        let cgroup_path = cgroup.as_ref().map(|c| c.path().to_owned());
        let record =
            self.supervisor
                .record(&self.component, pid, start_time, cgroup_path.as_deref());
        let tree = Tree::new(pid, start_time, cgroup, record);
        tracing::info!(
            pid,
            command = %self.env.redact(&format!("{:?}", config.command)),
            cgroup = cgroup_path.as_ref().map(|c| tracing::field::display(c.display())),
            "child started"
        );
        let stdout = process
            .stdout
            .take()
            .map(|out| self.log_output(out, "stdout", pid, self.config.stdout_level.0));
        let stderr = process
            .stderr
            .take()
            .map(|err| self.log_output(err, "stderr", pid, self.config.stderr_level.0));
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(io::Error::other("the child's output pipes are missing"));
        };
        self.starts.add(1, &[attr("component", &*self.component)]);
        self.update(|s| {
            s.pid = Some(pid);
            s.started_at = Some(SystemTime::now());
            s.cgroup = cgroup_path.map(|c| c.display().to_string());
        });
        Ok(Child {
            process,
            pid,
            tree,
            owned,
            output: [stdout, stderr],
        })
    }

    fn command(&self, cgroup: Option<&ChildCgroup>) -> Command {
        let config = &self.config;
        let mut command = Command::new(&config.command[0]);
        command
            .args(&config.command[1..])
            // systemd's variables are isopace's: a child that speaks sd_notify would send to
            // a socket that only takes the main process's messages.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(&config.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = &config.cwd {
            command.current_dir(cwd);
        }
        prepare_child(&mut command, cgroup.map(|c| c.procs().to_owned()));
        command
    }
}

type Spawned = io::Result<(tokio::process::Child, Owned)>;

/// A spawn for the spawner thread to make.
struct Job {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<Spawned>,
}

/// Spawns `command` from the spawner thread (or from this one, should that thread be
/// missing), on the current runtime.
async fn spawn(command: Command) -> Spawned {
    let runtime = Handle::current();
    let Some(spawner) = spawner() else {
        return spawn_now(command, &runtime);
    };
    let (reply, spawned) = oneshot::channel();
    if let Err(mpsc::SendError(job)) = spawner.send(Job {
        command,
        runtime,
        reply,
    }) {
        return spawn_now(job.command, &job.runtime);
    }
    spawned
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the thread that spawns children is gone")))
}

/// The queue of the thread that forks every child, started with the first.
fn spawner() -> Option<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (jobs, queue) = mpsc::channel::<Job>();
            let thread = std::thread::Builder::new()
                .name("exec-spawner".into())
                .spawn(move || {
                    for Job {
                        command,
                        runtime,
                        reply,
                    } in queue
                    {
                        // One spawn that panics (a runtime shutting down under it) must not
                        // take the thread, and every later spawn, with it.
                        let spawned = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            spawn_now(command, &runtime)
                        }))
                        .unwrap_or_else(|_| Err(io::Error::other("spawning the child panicked")));
                        // A caller that went away drops the child, which kills it.
                        let _ = reply.send(spawned);
                    }
                });
            match thread {
                Ok(_) => Some(jobs),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the thread that spawns children; spawning from runtime threads");
                    None
                }
            }
        })
        .as_ref()
}

/// Spawns `command` and records the child as owned before a reaper pass can see it.
fn spawn_now(mut command: Command, runtime: &Handle) -> Spawned {
    let _runtime = runtime.enter();
    let _gate = reaper::spawning();
    let process = command.spawn()?;
    let owned = reaper::own(process.id().unwrap_or_default());
    Ok((process, owned))
}

/// Sets the child up before it runs its program: it joins its cgroup (when it has one),
/// starts a session of its own (so its session, group and pid are one number), is killed
/// by the kernel when the daemon dies, however it dies (Linux), and gets the open-file limit
/// isopace started with.
fn prepare_child(command: &mut Command, cgroup_procs: Option<CString>) {
    let limit = crate::limits::for_children();
    #[cfg(not(target_os = "linux"))]
    let _ = cgroup_procs;
    #[cfg(target_os = "linux")]
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: open, write, close, setsid, prctl, getppid, setrlimit and _exit
    // are, and nothing here allocates or locks (the path was built before the fork).
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            if let Some(procs) = &cgroup_procs {
                // Writing 0 to cgroup.procs moves the writer: the child joins before it can
                // start anything, so all it starts is born inside.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let error = io::Error::last_os_error();
                libc::close(fd);
                if written != 1 {
                    return Err(error);
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
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
