//! `exec` children inside the real `isopace` binary: they die with a killed daemon, and a
//! second signal during shutdown kills the ones still stopping.

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
