//! What `/proc` says about processes: parent, group, session, state and start time.
//!
//! A pid alone does not name a process for long: once reaped, the kernel may hand it to
//! another. A pid with its start time (clock ticks after boot) does, so everything that
//! remembers a process for later — a stop that tracks descendants, a record kept across a
//! crash of the daemon — keeps both. Where there is no `/proc`, every reader here finds
//! nothing, and callers fall back to what signals alone can do.

use std::{fs, io};

/// One line of `/proc/<pid>/stat`, the fields that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) pid: i32,
    pub(super) state: char,
    pub(super) ppid: i32,
    pub(super) pgrp: i32,
    pub(super) session: i32,
    pub(super) start_time: u64,
}

impl Stat {
    /// Parses a `/proc/<pid>/stat` line.
    pub(super) fn parse(line: &str) -> Option<Stat> {
        let (head, rest) = line.split_at(line.find('(')?);
        let pid = head.trim().parse().ok()?;
        // The command name may contain spaces and parentheses: fields resume after the
        // last ')'.
        let rest = &rest[rest.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        let session = fields.next()?.parse().ok()?;
        // tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt, utime, stime, cutime,
        // cstime, priority, nice, num_threads, itrealvalue; then starttime.
        let start_time = fields.nth(15)?.parse().ok()?;
        Some(Stat {
            pid,
            state,
            ppid,
            pgrp,
            session,
            start_time,
        })
    }

    /// Whether the process still runs: a zombie is dead and only waits to be reaped.
    pub(super) fn is_live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether this is the zombie of a process that exited and was not reaped yet.
    pub(super) fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// The process `pid`, if it exists (zombies included).
pub(super) fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    let line = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Stat::parse(&line)
}

/// Every process this one can see, or an error when `/proc` cannot be listed.
pub(super) fn all() -> io::Result<Vec<Stat>> {
    Ok(fs::read_dir("/proc")?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let pid: i32 = name.to_str()?.parse().ok()?;
            stat(pid)
        })
        .collect())
}

/// Whether the process `pid` started at `start_time` still runs (neither gone, nor a
/// zombie, nor replaced by another process with the same pid).
pub(super) fn is_running(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.is_live())
}

/// This boot's id: start times count from boot, so they only compare within one.
pub(super) fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

/// This process's own pid and start time.
pub(super) fn this_process() -> (i32, u64) {
    let pid = std::process::id() as i32;
    (pid, stat(pid).map_or(0, |s| s.start_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "42 (sh) S 1 42 40 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1 2 3";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(
            (stat.pid, stat.state, stat.ppid, stat.pgrp, stat.session),
            (42, 'S', 1, 42, 40)
        );
        assert_eq!(stat.start_time, 123456);
        let odd = "43 (a) b (c) Z 42 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0";
        let stat = Stat::parse(odd).unwrap();
        assert_eq!((stat.state, stat.start_time), ('Z', 99));
        assert!(stat.is_zombie() && !stat.is_live());
        assert_eq!(Stat::parse("garbage"), None);
        assert_eq!(Stat::parse("44 (short) S 1 2 3"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_running_and_a_wrong_start_time_is_another_process() {
        let (pid, start) = this_process();
        assert!(start > 0);
        assert!(is_running(pid, start));
        assert!(!is_running(pid, start + 1));
        assert!(all().unwrap().iter().any(|s| s.pid == pid));
        assert!(boot_id().is_some_and(|id| !id.is_empty()));
    }
}
