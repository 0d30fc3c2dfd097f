//! The `exec` component's behaviour: restarts with backoff, restart policies, stopping the
//! child and its whole group, and a program that cannot run.

use std::{sync::Arc, time::Duration};

use isopace_host::{Component, Env};
use isopace_observe::MetricsRegistry;
use serde_json::json;
use tokio::time::Instant;

use super::{
    Exec, ExecConfig, ExecState,
    process_group::{group_alive, parse_stat},
};
use crate::Details;

fn config(value: serde_json::Value) -> Result<ExecConfig, serde_json::Error> {
    serde_json::from_value(value)
}

fn exec(value: serde_json::Value) -> Exec {
    Exec::new("worker", config(value).unwrap()).unwrap()
}

fn env(metrics: &MetricsRegistry) -> Env {
    Env::new(isopace_config::Config::default(), Arc::new(metrics.clone())).for_component("worker")
}

/// Polls `check` every millisecond for up to five seconds.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn sample(metrics: &MetricsRegistry, series: &str) -> Option<f64> {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts the child was reaped (no `/proc` entry, not even a zombie) and no live
/// process is left in its group.
fn assert_gone(pid: u32) {
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} is still in /proc"
    );
    assert!(
        !group_alive(pid as i32),
        "a process of group {pid} is still alive"
    );
}

#[tokio::test]
async fn a_failing_child_is_restarted_with_growing_backoff_until_max_restarts() {
    let metrics = MetricsRegistry::new();
    let env = env(&metrics);
    let mut worker = exec(json!({
        "command": ["sh", "-c", "exit 1"],
        "backoff": {"initial": "40ms", "max": "10s"},
        "max_restarts": 3,
        "restart_window": "10s"
    }));
    worker.start(&env).await.unwrap();
    let mut starts = vec![Instant::now()];
    wait_for("the component to fail", || {
        let status = worker.status();
        if status.starts as usize > starts.len() {
            starts.push(Instant::now());
        }
        status.state == ExecState::Failed
    })
    .await;
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    for (gap, delay) in gaps.iter().zip([40, 80, 160]) {
        // Polling may see a start late, which shortens the gap after it; a constant
        // delay would still leave the third gap near 40ms.
        assert!(*gap >= Duration::from_millis(delay * 3 / 4), "{gaps:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = worker.status();
    assert_eq!((status.starts, status.restarts), (4, 3));
    assert_eq!(status.last_exit.as_deref(), Some("exit status 1"));
    assert!(status.reason.unwrap().contains("max_restarts 3"));
    for (series, want) in [
        (r#"exec_starts_total{component="worker"}"#, 4.0),
        (r#"exec_restarts_total{component="worker"}"#, 3.0),
        (r#"exec_exits_total{component="worker",status="1"}"#, 4.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}");
    }
    worker.stop(&env).await.unwrap();
    assert_eq!(worker.status().state, ExecState::Stopped);
}

#[tokio::test]
async fn the_policy_decides_which_exits_restart() {
    for (restart, script, restarted) in [
        ("never", "exit 3", false),
        ("on-failure", "exit 0", false),
        ("on-failure", "kill -KILL $$", true),
        ("always", "exit 0", true),
    ] {
        let metrics = MetricsRegistry::new();
        let env = env(&metrics);
        let mut worker = exec(json!({
            "command": ["sh", "-c", script],
            "restart": restart,
            "backoff": {"initial": "10ms"},
            "max_restarts": 1,
        }));
        worker.start(&env).await.unwrap();
        wait_for("the child to end for good", || {
            matches!(worker.status().state, ExecState::Exited | ExecState::Failed)
        })
        .await;
        let status = worker.status();
        assert_eq!(status.restarts, u64::from(restarted), "{restart} {script}");
        assert_eq!(
            status.starts,
            1 + u64::from(restarted),
            "{restart} {script}"
        );
        let last = status.last_exit.unwrap();
        match script {
            "exit 3" => assert_eq!(last, "exit status 3"),
            "exit 0" => assert_eq!(last, "exit status 0"),
            _ => assert_eq!(last, "killed by SIGKILL"),
        }
        worker.stop(&env).await.unwrap();
    }
}

#[tokio::test]
async fn a_child_ignoring_the_stop_signal_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let env = env(&MetricsRegistry::new());
    let mut worker = exec(json!({
        "command": ["sh", "-c", "trap '' TERM; : > \"$READY\"; while :; do sleep 1; done"],
        "env": {"READY": ready},
        "stop_grace": "300ms"
    }));
    worker.start(&env).await.unwrap();
    wait_for("the trap", || ready.exists()).await;
    let pid = worker.status().pid.unwrap();
    let started = Instant::now();
    worker.stop(&env).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let status = worker.status();
    assert_eq!(status.last_exit.as_deref(), Some("killed by SIGKILL"));
    assert_eq!((status.state, status.pid), (ExecState::Stopped, None));
    assert_gone(pid);
}

#[tokio::test]
async fn stop_leaves_no_process_of_the_group_behind() {
    let details = Details::new();
    let env = env(&MetricsRegistry::new());
    let mut worker = exec(json!({
        "command": ["sh", "-c", "sleep 30 & sleep 30 & echo started; wait"],
    }))
    .with_details(&details);
    worker.start(&env).await.unwrap();
    let pid = worker.status().pid.unwrap();
    let published = details.get("worker").unwrap();
    assert_eq!(published["pid"], json!(pid));
    assert_eq!(published["state"], json!("running"));
    wait_for("both sleeps", || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("stat"))
                    .ok()
                    .and_then(|s| parse_stat(&s))
                    .is_some_and(|(state, group)| group == pid as i32 && state != 'Z')
            })
            .count()
            == 3
    })
    .await;
    let started = Instant::now();
    worker.stop(&env).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_gone(pid);
    assert_eq!(
        details.get("worker").unwrap(),
        json!({"state": "stopped", "pid": null, "starts": 1, "restarts": 0, "last_exit": "killed by SIGTERM"})
    );
    drop(worker);
    assert_eq!(details.get("worker"), None);
}

#[tokio::test]
async fn a_program_that_cannot_run_fails_the_start() {
    let env = env(&MetricsRegistry::new());
    let mut worker = exec(json!({"command": ["/nonexistent/program"], "cwd": "/"}));
    let e = worker.start(&env).await.unwrap_err().to_string();
    assert!(e.contains("cannot run `/nonexistent/program` in /"), "{e}");
    worker.stop(&env).await.unwrap();
}
