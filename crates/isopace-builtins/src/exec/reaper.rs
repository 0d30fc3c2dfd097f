//! Reaping orphans without stealing exit statuses: the work of a process that is PID 1 (in
//! a container) or a child subreaper, to which the kernel re-parents the orphaned
//! descendants of its children.
//!
//! `waitpid(-1)` would reap everything, including the children `exec` spawned, whose status
//! tokio's `Child::wait` then never sees. So the reaper reaps only zombies it can tell are
//! not someone's: every `exec` child is recorded as owned from the moment it is spawned
//! until tokio has reaped it, and a spawn and a reaper pass exclude each other, so a child
//! that exits at once is already recorded when a pass sees its zombie.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::{procfs, tree::signal_process};

/// Held (shared) by a spawn until its child is recorded; held (exclusive) by a reaper pass.
static GATE: RwLock<()> = RwLock::new(());
/// The pids of the children that `exec` spawned and tokio has not reaped yet.
static OWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
/// Whether this process made itself a child subreaper.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// How often [`reap_orphans`] looks for zombies when no `SIGCHLD` arrives.
const SWEEP: Duration = Duration::from_secs(5);

/// Held while a child is spawned and recorded as owned.
pub(super) fn spawning() -> RwLockReadGuard<'static, ()> {
    GATE.read()
}

/// Records `pid` as a child whose status its owner waits for, until dropped.
pub(super) fn own(pid: u32) -> Owned {
    OWNED.lock().insert(pid);
    Owned(pid)
}

/// A child recorded as owned; dropped once its owner has reaped it.
#[derive(Debug)]
pub(super) struct Owned(u32);

impl Drop for Owned {
    fn drop(&mut self) {
        OWNED.lock().remove(&self.0);
    }
}

/// Makes this process a child subreaper (Linux): the orphaned descendants of its children
/// are re-parented to it instead of to init, and it must reap them.
pub(super) fn become_subreaper() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(2) with PR_SET_CHILD_SUBREAPER takes plain integers and touches no
        // memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        SUBREAPER.store(true, Ordering::Release);
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "child subreapers are Linux-only",
    ))
}

/// Kills the orphans this subreaper adopted that still run: its children that `exec` did
/// not spawn and that are not in its own session (an `exec` child and what it starts never
/// are; a process this one spawned otherwise is, unless it left). For the daemon's exit,
/// after which they would go to init.
pub(super) fn kill_adopted() {
    if !SUBREAPER.load(Ordering::Acquire) {
        return;
    }
    let Ok(procs) = procfs::all() else {
        return;
    };
    let me = std::process::id() as i32;
    let Some(session) = procs.iter().find(|p| p.pid == me).map(|p| p.session) else {
        return;
    };
    let owned = OWNED.lock().clone();
    for p in procs {
        if p.ppid == me && p.is_live() && p.session != session && !owned.contains(&(p.pid as u32)) {
            signal_process(p.pid, libc::SIGKILL);
        }
    }
}

/// Reaps every exited child of this process that no [`Exec`](super::Exec) waits for —
/// orphans re-parented to it because it is PID 1 or a child subreaper — and returns how
/// many it reaped. One pass; [`reap_orphans`] repeats it on every `SIGCHLD`.
///
/// Only zombies are reaped, by pid, so a child still running is never waited for; and a
/// child an `exec` spawned is left to it, so its exit status reaches the component. Code of
/// your own in the same process that spawns processes and waits for them by pid must not
/// run alongside the reaper, or must expect `ECHILD` from its wait.
pub fn reap_zombies() -> usize {
    if !has_exited_child() {
        return 0;
    }
    let _gate = GATE.write();
    let Ok(procs) = procfs::all() else {
        return 0;
    };
    let me = std::process::id() as i32;
    let owned = OWNED.lock();
    let mut reaped = 0;
    for p in procs {
        if p.ppid != me || !p.is_zombie() || owned.contains(&(p.pid as u32)) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid(2) writes the status into the integer we own; WNOHANG keeps it
        // from blocking, and `p.pid` is a zombie child of ours that no one else waits for.
        if unsafe { libc::waitpid(p.pid, &mut status, libc::WNOHANG) } == p.pid {
            reaped += 1;
            tracing::debug!(pid = p.pid, status, "reaped an orphaned process");
        }
    }
    reaped
}

/// Whether any child of this process has exited and waits to be reaped (without reaping
/// it), so that a pass over `/proc` is only made when there is something to find.
fn has_exited_child() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: siginfo_t is a plain C struct for which all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) writes into the struct we own; WNOWAIT leaves the child
        // waitable and WNOHANG keeps the call from blocking.
        let found = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: after a successful waitid the pid field is set (0 when no child exited).
        found == 0 && unsafe { info.si_pid() } != 0
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// Reaps orphans for as long as it runs: a pass of [`reap_zombies`] on every `SIGCHLD`
/// that `sigchld` receives, and every few seconds in case one was missed.
///
/// `sigchld` is a listener the caller installed (the library installs no signal handlers):
/// `tokio::signal::unix::signal(SignalKind::child())`. `isopace run` spawns this when it is
/// PID 1 (as in a container, where every orphan of the container is re-parented to it) and
/// when it made itself a child subreaper because no cgroup contains its `exec` children
/// (see [`ChildSupervisor`](super::ChildSupervisor)).
pub async fn reap_orphans(mut sigchld: tokio::signal::unix::Signal) {
    let mut listening = true;
    loop {
        reap_zombies();
        if listening {
            tokio::select! {
                received = sigchld.recv() => listening = received.is_some(),
                _ = tokio::time::sleep(SWEEP) => {}
            }
        } else {
            tokio::time::sleep(SWEEP).await;
        }
    }
}
