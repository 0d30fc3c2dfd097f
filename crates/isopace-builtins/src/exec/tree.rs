//! Everything one `exec` child started, stopped as one: the processes in its cgroup, or,
//! where there is none, its session and process group and every descendant seen through
//! `/proc`; and the process-wide set of them for the forced-exit path.
//!
//! A child starts a session of its own, so its session id, its process group id and its
//! pid are one number. Without a cgroup, a process belongs to the child's tree when it is in
//! that session or group, descends from a process of the tree, or was seen in the tree
//! before (by pid and start time, so a reused pid is not mistaken for it): a grandchild that
//! calls `setsid` stays in the tree while its parent lives, and once seen, also after its
//! parent exits. What no scan saw before it left both the session and its parent (a
//! double fork) only a cgroup catches.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{cgroup::ChildCgroup, procfs, reaper, state::Record};

/// How often a stopping tree is checked for survivors.
const POLL: Duration = Duration::from_millis(10);
/// How long `SIGKILL`ed processes may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The tree of every running child in this process, for [`kill_all_children`].
static LIVE: Mutex<BTreeMap<i32, Arc<Shared>>> = Mutex::new(BTreeMap::new());

/// Kills (`SIGKILL`) every process that any running child of any [`Exec`](super::Exec) in
/// this process started — its cgroup, or its session, process group and known descendants
/// — waits briefly for them to go, and removes their cgroups and records.
///
/// For the paths where components get no chance to stop: call it right before the process
/// exits on a forced exit (a second signal during shutdown), and after the async runtime
/// has shut down, so a child whose stop timed out does not outlive the daemon. Children that
/// stopped normally are no longer tracked, so calling it after a clean shutdown is harmless.
/// `isopace run` does both.
pub fn kill_all_children() {
    super::cgroup::kill_owner();
    let trees: Vec<Arc<Shared>> = LIVE.lock().values().cloned().collect();
    for tree in &trees {
        tree.kill();
    }
    reaper::kill_adopted();
    let deadline = std::time::Instant::now() + KILL_WAIT;
    for tree in &trees {
        while tree.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        tree.clean_up();
    }
}

/// One child's tree, registered for [`kill_all_children`] until released; killed if
/// dropped unreleased (the task owning the child was aborted).
pub(super) struct Tree {
    shared: Arc<Shared>,
    released: bool,
}

struct Shared {
    /// The child's pid, which is also its session and process group id.
    pid: i32,
    start_time: u64,
    cgroup: Mutex<Option<ChildCgroup>>,
    /// Without a cgroup: the processes seen in the tree, by pid and start time.
    known: Mutex<BTreeMap<i32, u64>>,
    /// What tells a later run what to kill should this one be killed.
    record: Mutex<Option<Record>>,
}

impl Tree {
    pub(super) fn new(
        pid: u32,
        start_time: u64,
        cgroup: Option<ChildCgroup>,
        record: Option<Record>,
    ) -> Tree {
        let shared = Arc::new(Shared {
            pid: pid as i32,
            start_time,
            cgroup: Mutex::new(cgroup),
            known: Mutex::default(),
            record: Mutex::new(record),
        });
        LIVE.lock().insert(shared.pid, Arc::clone(&shared));
        Tree {
            shared,
            released: false,
        }
    }

    /// Sends `signal` to every process of the tree.
    pub(super) fn signal(&self, signal: libc::c_int) {
        self.shared.signal(signal);
    }

    /// Kills every process of the tree.
    pub(super) fn kill(&self) {
        self.shared.kill();
    }

    /// Whether a live process is left in the tree; zombies do not count.
    pub(super) fn alive(&self) -> bool {
        self.shared.alive()
    }

    /// Waits until no process of the tree is left, killing them all at `deadline`.
    pub(super) async fn clear(&self, deadline: Instant) {
        while self.alive() {
            if Instant::now() >= deadline {
                self.kill();
                let give_up = Instant::now() + KILL_WAIT;
                while self.alive() {
                    if Instant::now() >= give_up {
                        tracing::warn!(
                            pid = self.shared.pid,
                            "processes of the child's tree survived SIGKILL"
                        );
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                }
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Forgets the tree once it is gone: removes its cgroup and its record.
    pub(super) fn release(mut self) {
        self.released = true;
        self.shared.clean_up();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.shared.kill();
        // The cgroup can only be removed once its processes have left it, which takes a
        // moment after SIGKILL; a drop must not wait for that.
        let shared = Arc::clone(&self.shared);
        let cleanup = std::thread::Builder::new()
            .name("exec-cleanup".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + KILL_WAIT;
                while shared.alive() && std::time::Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
                shared.clean_up();
            });
        if cleanup.is_err() {
            self.shared.clean_up();
        }
    }
}

impl Shared {
    fn signal(&self, signal: libc::c_int) {
        // The tree is read before anything is signalled: once a parent dies, its children
        // are re-parented and no longer show whose they were.
        let pids = match &*self.cgroup.lock() {
            Some(cgroup) => cgroup.pids(),
            None => self.members().map(Vec::from_iter).unwrap_or_default(),
        };
        signal_group(self.pid, signal);
        for pid in pids {
            signal_process(pid, signal);
        }
    }

    fn kill(&self) {
        if let Some(cgroup) = &*self.cgroup.lock() {
            match cgroup.kill() {
                Ok(()) => {
                    signal_group(self.pid, libc::SIGKILL);
                    return;
                }
                Err(e) => {
                    tracing::warn!(cgroup = %cgroup.path().display(), error = %e, "cannot kill the child's cgroup; killing its processes one by one");
                }
            }
        }
        self.signal(libc::SIGKILL);
    }

    fn alive(&self) -> bool {
        if let Some(cgroup) = &*self.cgroup.lock() {
            return cgroup.populated();
        }
        match self.members() {
            Some(members) => !members.is_empty(),
            // No /proc to read: the group is all there is to go by.
            None => group_exists(self.pid),
        }
    }

    /// The live processes of the tree when it has no cgroup; `None` without `/proc`.
    fn members(&self) -> Option<BTreeSet<i32>> {
        let procs = procfs::all().ok()?;
        let me = std::process::id() as i32;
        // While any process is in the child's session or group, the kernel keeps the number
        // from being reused; a different process under the child's pid means both are gone.
        let own_numbers = procs
            .iter()
            .find(|p| p.pid == self.pid)
            .is_none_or(|p| p.start_time == self.start_time);
        let mut known = self.known.lock();
        let candidate = |p: &procfs::Stat| p.is_live() && p.pid != me && p.pid > 1;
        let mut members: BTreeSet<i32> = procs
            .iter()
            .filter(|p| candidate(p))
            .filter(|p| {
                (own_numbers && (p.session == self.pid || p.pgrp == self.pid))
                    || known.get(&p.pid) == Some(&p.start_time)
            })
            .map(|p| p.pid)
            .collect();
        loop {
            let before = members.len();
            for p in &procs {
                if candidate(p) && members.contains(&p.ppid) {
                    members.insert(p.pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        *known = procs
            .iter()
            .filter(|p| members.contains(&p.pid))
            .map(|p| (p.pid, p.start_time))
            .collect();
        Some(members)
    }

    /// Removes the cgroup and the record once nothing of the tree is left, and unregisters
    /// it. What survived stays recorded, for a later run to kill.
    fn clean_up(&self) {
        LIVE.lock().remove(&self.pid);
        if self.alive() {
            return;
        }
        if let Some(mut cgroup) = self.cgroup.lock().take()
            && let Err(e) = cgroup.remove()
        {
            tracing::warn!(cgroup = %cgroup.path().display(), error = %e, "cannot remove the child's cgroup");
        }
        if let Some(mut record) = self.record.lock().take() {
            record.remove();
        }
    }
}

/// Sends `signal` to every process in the group `pgid`.
pub(super) fn signal_group(pgid: i32, signal: libc::c_int) {
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

/// Sends `signal` to the process `pid`.
pub(super) fn signal_process(pid: i32, signal: libc::c_int) {
    if pid <= 1 || pid == std::process::id() as i32 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` names one
    // process (checked above: not a group, not every process, not this one).
    unsafe { libc::kill(pid, signal) };
}

/// Whether any process is in the group `pgid`, zombies included.
fn group_exists(pgid: i32) -> bool {
    // SAFETY: as in `signal_group`; signal 0 only checks that the group exists.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}
