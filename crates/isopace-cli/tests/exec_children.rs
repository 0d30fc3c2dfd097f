//! `exec` children inside the real `isopace` binary: they die with a killed daemon, a
//! second signal during shutdown kills the ones still stopping, a killed child is replaced
//! by the host, and exec's deprecated restart fields still work, with a warning.

mod common;

use std::{fs, path::Path, thread, time::Duration};

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
fn deploy_child(dir: &Path, script: &str) -> std::path::PathBuf {
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
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &[]);
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
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &[]);
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
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &[]);
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
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &[]);
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
    let mut daemon = Daemon::start(&deploy, &["--no-watch"], &[]);
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
