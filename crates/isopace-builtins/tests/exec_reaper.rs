//! The orphan reaper that runs when isopace is PID 1 or a child subreaper: orphans
//! re-parented to the process are reaped, while an `exec` child's exit status still reaches
//! its component.
//!
//! Alone in its binary: it makes the whole test process a child subreaper, which stands in
//! for PID 1 (orphans come to it), and it reaps every zombie it does not own.

use std::{path::Path, time::Duration};

use isopace_builtins::exec::{
    ChildSupervisor, Exec, ExecConfig, ExecStatus, reap_orphans, reap_zombies,
};
use isopace_host::{Component, Env};
use serde_json::json;

/// A process's state and parent, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = line[line.rfind(')')? + 1..].split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn exec(name: &str, config: serde_json::Value) -> Exec {
    let config: ExecConfig = serde_json::from_value(config).unwrap();
    Exec::new(name, config).unwrap()
}

/// Polls `check` for up to ten seconds, letting the runtime run in between.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kills, when dropped, the processes the test started that may outlive it if it fails.
#[derive(Default)]
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if stat(pid).is_some_and(|(state, _)| state != 'Z') {
                // SAFETY: kill(2) takes plain integers; `pid` is a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn exit_of(status: &ExecStatus) -> Option<&str> {
    status.last_exit.as_deref()
}

// One test, in steps: a reaper pass in one test would reap another's zombies.
#[tokio::test]
async fn orphans_are_reaped_and_exec_children_keep_their_exit_status() {
    let mut guard = KillOnDrop::default();
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id() as i32;
    let supervisor = ChildSupervisor::builder()
        .cgroups(false)
        .adopt_orphans(true)
        .build()
        .unwrap();
    assert!(supervisor.is_subreaper());
    let env = Env::default().for_component("worker");
    env.insert_extension(supervisor);

    // An exec child's zombie is not a reaper pass's to take, however soon it exits. The
    // runtime has one thread and this step does not yield, so tokio cannot reap it first.
    let mut quick = exec("quick", json!({"command": ["sh", "-c", "exit 7"]}));
    quick.start(&env).await.unwrap();
    let pid = quick.status().pid.unwrap() as i32;
    guard.0.push(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stat(pid).map(|(state, _)| state) != Some('Z') {
        assert!(
            std::time::Instant::now() < deadline,
            "the child did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(reap_zombies(), 0);
    assert_eq!(stat(pid), Some(('Z', me)), "the zombie waits for tokio");
    wait_for("the exit status to reach the component", || {
        quick.status().exit_code.is_some()
    })
    .await;
    assert_eq!(quick.status().exit_code, Some(7));
    quick.stop(&env).await.unwrap();
    assert_eq!(stat(pid), None, "tokio reaped it");

    // What a child leaves when it exits is stopped, and comes to this process to reap.
    let pidfile = dir.path().join("left");
    let mut leaves = exec(
        "leaves",
        json!({
            "command": ["sh", "-c", "sleep 30 & echo $! > \"$PIDFILE\"; exit 0"],
            "env": {"PIDFILE": pidfile}
        }),
    );
    leaves.start(&env).await.unwrap();
    let mut left = None;
    wait_for("the child's own child", || {
        left = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        left.is_some()
    })
    .await;
    let left: i32 = left.unwrap();
    guard.0.push(left);
    wait_for("the child to end", || exit_of(&leaves.status()).is_some()).await;
    assert_eq!(exit_of(&leaves.status()), Some("exit status 0"));
    assert_eq!(
        stat(left),
        Some(('Z', me)),
        "stopped, and adopted by this process"
    );
    assert_eq!(reap_zombies(), 1);
    assert!(!Path::new(&format!("/proc/{left}")).exists(), "reaped");
    leaves.stop(&env).await.unwrap();

    // With the reaper running: an orphan that dies is reaped as soon as it does, while the
    // exec child it came from runs on and then reports how it was stopped.
    let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).unwrap();
    let reaper = tokio::spawn(reap_orphans(sigchld));
    let pidfile = dir.path().join("orphan");
    let mut forks = exec(
        "forks",
        json!({
            "command": ["sh", "-c", "(sleep 30 & echo $! > \"$PIDFILE\"); exec sleep 30"],
            "env": {"PIDFILE": pidfile}
        }),
    );
    forks.start(&env).await.unwrap();
    let child = forks.status().pid.unwrap() as i32;
    guard.0.push(child);
    let mut orphan = None;
    wait_for("the orphan", || {
        orphan = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        orphan.is_some()
    })
    .await;
    let orphan: i32 = orphan.unwrap();
    guard.0.push(orphan);
    wait_for("the orphan to be re-parented to this process", || {
        stat(orphan) == Some(('S', me))
    })
    .await;
    // SAFETY: kill(2) takes plain integers; `orphan` is a process this test started.
    assert_eq!(unsafe { libc::kill(orphan, libc::SIGKILL) }, 0);
    wait_for("the orphan to be reaped", || stat(orphan).is_none()).await;
    assert_eq!(stat(child).map(|(state, _)| state), Some('S'), "still runs");
    forks.stop(&env).await.unwrap();
    assert_eq!(exit_of(&forks.status()), Some("killed by SIGTERM"));
    reaper.abort();
}
