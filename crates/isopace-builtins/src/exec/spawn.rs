//! Starting a child: its command, process group, output pipes and what it inherits (the
//! open-file limit isopace started with, and on Linux death with the daemon).

use std::{io, process::Stdio, time::SystemTime};

use isopace_observe::attr;
use tokio::{process::Command, task::JoinHandle};

use super::{child::Runner, process_group::Group};

/// A running child: the process, its group, and the tasks logging its output.
pub(super) struct Child {
    pub(super) process: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) group: Group,
    pub(super) output: [JoinHandle<()>; 2],
}

impl Runner {
    pub(super) fn spawn(&self) -> io::Result<Child> {
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
        self.update(|s| {
            s.pid = Some(pid);
            s.started_at = Some(SystemTime::now());
        });
        Ok(Child {
            process,
            pid,
            group,
            output: [stdout, stderr],
        })
    }
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
