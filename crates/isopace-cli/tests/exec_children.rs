//! `exec` children inside the real `isopace` binary: they die with a killed daemon, what
//! they started is killed by the next start on the same state directory, a second signal
//! during shutdown kills the ones still stopping, a killed child is replaced by the host,
//! and exec's deprecated restart fields still work, with a warning.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use common::{Daemon, wait_until};

/// Whether `pid` is gone: no process, or a zombie nobody is left to reap.
fn dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A deploy dir with one `exec` that writes its pid to `pid` and then runs `script`.
fn deploy_child(dir: &Path, script: &str) -> PathBuf {
    let pid = dir.join("pid");
    let deploy = dir.join("deploy");
    fs::create_dir(&deploy).unwrap();
    let descriptor = serde_json::json!({
        "name": "worker",
        "type": "exec",
        "config": {
            "command": ["sh", "-c", script],
            "env": {"PIDFILE": pid},
            "stop_grace": "10s"
        }
    });
    fs::write(deploy.join("worker.json"), descriptor.to_string()).unwrap();
    deploy
}

/// A state directory of the test's own, so no record outlives it.
fn state_in(dir: &Path) -> [(&'static str, String); 1] {
    [("ISOPACE_STATE_DIR", dir.join("state").display().to_string())]
}

fn read_pid(dir: &Path) -> u32 {
    let file = dir.join("pid");
    let mut pid = None;
    wait_until("the child's pid", || {
        pid = fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap()
}

#[test]
fn a_child_dies_with_a_killed_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = deploy_child(
        dir.path(),
        "echo $$ > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; exec sleep 60",
    );
    let mut leftovers = Leftovers::default();
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &state_in(dir.path()));
    leftovers.daemons.push(daemon.child.id());
    let pid = read_pid(dir.path());
    assert!(!dead(pid));
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    wait_until("the child to die with the daemon", || dead(pid));
}

#[test]
fn a_second_signal_kills_a_child_that_is_still_stopping() {
    let dir = tempfile::tempdir().unwrap();
    // The grandchild shows that the whole group is killed, not only the direct child (which
    // the kernel's parent-death signal would take care of).
    let deploy = deploy_child(
        dir.path(),
        "trap '' TERM; sleep 60 & echo $! > \"$PIDFILE.bg\"; \
         echo $$ > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; wait",
    );
    let mut leftovers = Leftovers::default();
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &state_in(dir.path()));
    leftovers.daemons.push(daemon.child.id());
    let pid = read_pid(dir.path());
    let grandchild: u32 = fs::read_to_string(dir.path().join("pid.bg"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.signal("TERM");
    wait_until("the child's stop to begin", || {
        daemon.log_has("stopping the child")
    });
    thread::sleep(Duration::from_millis(100));
    assert!(
        !dead(pid) && !dead(grandchild),
        "both ignore SIGTERM for the 10s grace"
    );
    daemon.signal("TERM");
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    wait_until("the child to be killed", || dead(pid));
    wait_until("the grandchild to be killed", || dead(grandchild));
}

#[test]
fn a_second_interrupt_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = deploy_child(
        dir.path(),
        "trap '' TERM INT; echo $$ > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; \
         while :; do sleep 1; done",
    );
    let mut leftovers = Leftovers::default();
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &state_in(dir.path()));
    leftovers.daemons.push(daemon.child.id());
    let pid = read_pid(dir.path());
    daemon.signal("INT");
    wait_until("the child's stop to begin", || {
        daemon.log_has("stopping the child")
    });
    daemon.signal("INT");
    let status = daemon.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    wait_until("the child to be killed", || dead(pid));
}

/// The pids in `$PIDFILE.all`, one line per child started.
fn pids(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("pid.all"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn a_killed_child_is_replaced_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = deploy_child(dir.path(), "echo $$ >> \"$PIDFILE.all\"; exec sleep 60");
    let mut leftovers = Leftovers::default();
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &state_in(dir.path()));
    leftovers.daemons.push(daemon.child.id());
    wait_until("the first child", || pids(dir.path()).len() == 1);
    let first = pids(dir.path())[0];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("a second child", || pids(dir.path()).len() == 2);
    let second = pids(dir.path())[1];
    assert_ne!(first, second);
    assert!(dead(first) && !dead(second));
    assert!(
        daemon.log_has(&format!("(pid {first}) ended: killed by SIGKILL")),
        "the failure names the signal: {}",
        daemon.log().join("\n")
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0));
    wait_until("the second child to be stopped", || dead(second));
}

#[test]
fn exec_restart_fields_still_work_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    let runs = dir.path().join("runs");
    // One restart after 10 ms, as the old fields say; the descriptor's default would be
    // five, after 100 ms and more.
    let descriptor = serde_json::json!({
        "name": "legacy",
        "type": "exec",
        "critical": false,
        "config": {
            "command": ["sh", "-c", "echo run >> \"$RUNS\"; exit 1"],
            "env": {"RUNS": runs},
            "restart": "on-failure",
            "backoff": {"initial": "10ms", "max": "10ms"},
            "max_restarts": 1
        }
    });
    let file = deploy.join("legacy.json");
    fs::write(&file, descriptor.to_string()).unwrap();
    let mut leftovers = Leftovers::default();
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &state_in(dir.path()));
    leftovers.daemons.push(daemon.child.id());
    wait_until("the restart limit", || {
        daemon.log_has("restart limit reached")
    });
    assert_eq!(fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    for (old, new) in [
        ("config.restart", "restart.policy"),
        ("config.backoff.initial", "restart.backoff"),
        ("config.backoff.max", "restart.max_backoff"),
        ("config.max_restarts", "restart.max_restarts"),
    ] {
        let said = format!("{}: `{old}` is deprecated; use `{new}`", file.display());
        assert!(
            daemon
                .log()
                .iter()
                .any(|l| l.contains("WARN") && l.contains(&said)),
            "{said}\n{}",
            daemon.log().join("\n")
        );
    }
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0));
}

/// A process's start time, which with its pid names it even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The cgroup v2 directory this process is in (and the daemons it starts), if any.
fn own_cgroup() -> Option<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            if !tail.starts_with("cgroup2 ") {
                return None;
            }
            let mut fields = head.split_whitespace();
            let root = fields.nth(3)?;
            let mount = fields.next()?;
            let rel = own.strip_prefix(root)?.trim_start_matches('/');
            Some(Path::new(mount).join(rel))
        })
}

/// The cgroups a daemon process `pid` made for its children.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("isopace-exec.{pid}.");
    own_cgroup()
        .and_then(|own| fs::read_dir(own).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// What a test leaves if it fails midway: killed and removed when dropped.
#[derive(Default)]
struct Leftovers {
    processes: Vec<(u32, u64)>,
    daemons: Vec<u32>,
}

impl Leftovers {
    fn process(&mut self, pid: u32) {
        if let Some(start) = start_time(pid) {
            self.processes.push((pid, start));
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &(pid, start) in &self.processes {
            if start_time(pid) == Some(start) && !dead(pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        for dir in self.daemons.iter().flat_map(|&pid| cgroups_of(pid)) {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(2);
            while fs::read_to_string(dir.join("cgroup.events"))
                .is_ok_and(|e| e.contains("populated 1"))
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(10));
            }
            for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let _ = fs::remove_dir(child.path());
            }
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// The pids in a file the child wrote, one a line.
fn pids_in(file: &Path) -> Vec<u32> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// The records left in a state directory.
fn records(state: &Path) -> Vec<PathBuf> {
    fs::read_dir(state.join("children"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|owner| fs::read_dir(owner.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect()
}

/// Kills (SIGKILL) a daemon whose child started grandchildren, then starts another on the
/// same state directory (`--exec-cgroups <cgroups>`), which must kill them.
fn a_killed_daemons_grandchildren_are_killed_by_the_next_start(cgroups: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let deploy = deploy_child(
        dir.path(),
        "sleep 3601 & echo $! >> \"$PIDFILE.all\"; sleep 3602 & echo $! >> \"$PIDFILE.all\"; \
         setsid sleep 3603 & echo $! > \"$PIDFILE.setsid\"; \
         echo $$ > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; wait",
    );
    let flags = ["--no-watch", "--exec-cgroups", cgroups, "--state-dir"];
    let mut leftovers = Leftovers::default();
    let mut first = Daemon::start_with(&deploy, &flags, &[], |cmd| {
        cmd.arg(&state);
    });
    leftovers.daemons.push(first.child.id());
    let child = read_pid(dir.path());
    let grandchildren = pids_in(&dir.path().join("pid.all"));
    let setsid = pids_in(&dir.path().join("pid.setsid"))[0];
    for &pid in grandchildren.iter().chain([&child, &setsid]) {
        leftovers.process(pid);
    }
    assert_eq!(grandchildren.len(), 2);
    let in_cgroup = first.log_has("containment=\"a cgroup per child");
    if cgroups == "off" {
        assert!(!in_cgroup, "{}", first.log().join("\n"));
    }
    assert_eq!(records(&state).len(), 1, "the child is recorded");

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    wait_until("the child to die with the daemon", || dead(child));
    for &pid in grandchildren.iter().chain([&setsid]) {
        assert!(
            !dead(pid),
            "the kernel kills the child alone; {pid} lives on"
        );
    }

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let mut second = Daemon::start_with(&empty, &flags, &[], |cmd| {
        cmd.arg(&state);
    });
    leftovers.daemons.push(second.child.id());
    wait_until("the grandchildren to be killed", || {
        grandchildren.iter().all(|&pid| dead(pid))
    });
    // Only a cgroup holds a grandchild that left the child's session.
    let killed = if in_cgroup {
        wait_until("the grandchild that called setsid to be killed", || {
            dead(setsid)
        });
        3
    } else {
        2
    };
    wait_until("the report", || {
        second.log_has("killed what the exec children of an earlier, killed run left behind")
    });
    assert!(
        second.log_has(&format!("processes={killed}")),
        "{}",
        second.log().join("\n")
    );
    assert!(records(&state).is_empty(), "the records are removed");
    assert!(
        cgroups_of(leftovers.daemons[0]).is_empty(),
        "the killed daemon's cgroups are removed"
    );
    second.signal("TERM");
    assert_eq!(second.wait().code(), Some(0));
}

#[test]
fn a_killed_daemons_grandchildren_are_killed_by_the_next_start_in_cgroups() {
    a_killed_daemons_grandchildren_are_killed_by_the_next_start("auto");
}

#[test]
fn a_killed_daemons_grandchildren_are_killed_by_the_next_start_without_cgroups() {
    a_killed_daemons_grandchildren_are_killed_by_the_next_start("off");
}

#[test]
fn an_unusable_state_dir_stops_the_daemon_before_it_starts_anything() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = deploy_child(dir.path(), "exec sleep 60");
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let state = file.join("state");
    let mut daemon = Daemon::start_with(&deploy, &["--no-watch"], &[], |cmd| {
        cmd.env("ISOPACE_STATE_DIR", &state);
    });
    assert_eq!(daemon.wait().code(), Some(1));
    let said = format!("cannot use the state directory {}", state.display());
    assert!(daemon.log_has(&said), "{}", daemon.log().join("\n"));
    assert!(!dir.path().join("pid").exists(), "no child was started");
}

#[test]
fn a_default_state_dir_that_cannot_be_used_costs_only_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = deploy_child(
        dir.path(),
        "echo $$ > \"$PIDFILE.tmp\"; mv \"$PIDFILE.tmp\" \"$PIDFILE\"; exec sleep 60",
    );
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let mut leftovers = Leftovers::default();
    let mut daemon = Daemon::start_with(&deploy, &["--no-watch"], &[], |cmd| {
        cmd.env("XDG_RUNTIME_DIR", &file);
    });
    leftovers.daemons.push(daemon.child.id());
    let child = read_pid(dir.path());
    assert!(
        daemon.log_has("exec children are not recorded") && daemon.log_has("state_dir=none"),
        "{}",
        daemon.log().join("\n")
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0));
    assert!(dead(child));
}
