//! The process groups of `exec` children: signalling a group, waiting until none of it is
//! left, and a process-wide set of every live group for the forced-exit path.

use std::{collections::BTreeSet, io, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;

/// How often a stopping process group is checked for survivors.
const GROUP_POLL: Duration = Duration::from_millis(10);
/// How long `SIGKILL`ed processes may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// The process groups of every running child in this process, for
/// [`kill_all_children`].
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Kills (`SIGKILL`) the process group of every running child of every
/// [`Exec`](super::Exec) in this process, at once.
///
/// For the paths where components get no chance to stop: call it right before the process
/// exits on a forced exit (a second signal during shutdown), and after the async runtime
/// has shut down, so a child whose stop timed out does not outlive the daemon. Children that
/// stopped normally are no longer tracked, so calling it after a clean shutdown is harmless.
/// `isopace run` does both.
pub fn kill_all_children() {
    for &pgid in GROUPS.lock().iter() {
        signal_group(pgid, libc::SIGKILL);
    }
}

/// A child's process group, registered for [`kill_all_children`] until released; killed if
/// dropped unreleased (the supervisor was aborted).
pub(super) struct Group {
    pub(super) pgid: i32,
    released: bool,
}

impl Group {
    pub(super) fn register(pgid: i32) -> Self {
        GROUPS.lock().insert(pgid);
        Group {
            pgid,
            released: false,
        }
    }

    pub(super) fn release(&mut self) {
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

/// Waits until no process of the group `pgid` is left, sending `SIGKILL` at `deadline`.
pub(super) async fn clear_group(pgid: i32, deadline: Instant) {
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
pub(super) fn group_alive(pgid: i32) -> bool {
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
pub(super) fn parse_stat(stat: &str) -> Option<(char, i32)> {
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (sh) S 1 42 42 0"), Some(('S', 42)));
        assert_eq!(parse_stat("43 (a) b (c) Z 42 42 42 0"), Some(('Z', 42)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
