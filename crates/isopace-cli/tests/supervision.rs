//! Supervision seen from outside the real `isopace` binary: a crash-looping `exec` ends
//! failed for good everywhere it is reported, SIGHUP retries it, and
//! `--exit-on-critical-failure` turns it into the daemon's exit.

mod common;

use std::{fs, path::Path};

use common::{Daemon, component, free_port, http_get, json, wait_for};
use serde_json::{Value, json};

/// Restarted twice, 10 ms apart, then failed for good.
fn quick_restarts() -> Value {
    json!({ "policy": "on-failure", "backoff": "10ms", "max_restarts": 2 })
}

/// A deploy dir with an admin endpoint on `port` and the exec `crash` running `script`.
fn deploy(dir: &Path, port: u16, script: &str, critical: bool) {
    let admin = json!({
        "name": "admin", "type": "admin", "config": { "listen": format!("127.0.0.1:{port}") }
    });
    fs::write(dir.join("00_admin.json"), admin.to_string()).unwrap();
    let crash = json!({
        "name": "crash",
        "type": "exec",
        "critical": critical,
        "restart": quick_restarts(),
        "config": { "command": ["sh", "-c", script], "stop_grace": "2s" }
    });
    fs::write(dir.join("10_crash.json"), crash.to_string()).unwrap();
}

/// `crash` as `/components` shows it, once it is in `state`.
fn crash_in(port: u16, state: &str) -> Value {
    wait_for(&format!("crash {state} in /components"), || {
        let list = json(&http_get(port, "/components", None)?.body);
        let crash = component(&list, "crash")?.clone();
        (crash["state"] == state).then_some(crash)
    })
}

#[test]
fn a_crash_looping_critical_exec_ends_failed_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    deploy(dir.path(), port, "exit 3", true);
    let mut daemon = Daemon::start(dir.path(), &[], &[]);

    let crash = crash_in(port, "failed");
    assert_eq!(crash["restarts"], 2, "{crash}");
    assert_eq!(crash["critical"], true);
    assert_eq!(crash["ready"], false);
    assert!(
        crash["last_error"].as_str().unwrap().contains('3'),
        "{crash}"
    );
    let metrics = http_get(port, "/metrics", None).unwrap().body;
    for needle in [
        r#"isopace_component_state{component="crash",state="failed"} 1"#,
        r#"isopace_component_state{component="crash",state="running"} 0"#,
        r#"isopace_component_restarts_total{component="crash"} 2"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let ready = http_get(port, "/readyz", None).unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    let body = json(&ready.body);
    assert_eq!(
        body["not_ready"],
        json!([{ "name": "crash", "state": "failed" }])
    );
    assert!(
        !ready.body.contains("error"),
        "no error texts without a token: {body}"
    );

    // Without --exit-on-critical-failure, the daemon keeps running and stops cleanly.
    assert!(daemon.child.try_wait().unwrap().is_none());
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

#[test]
fn a_failed_exec_that_is_not_critical_leaves_the_daemon_ready() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    deploy(dir.path(), port, "exit 3", false);
    let mut daemon = Daemon::start(dir.path(), &["--exit-on-critical-failure"], &[]);
    let crash = crash_in(port, "failed");
    assert_eq!(crash["critical"], false);
    let ready = http_get(port, "/readyz", None).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(json(&ready.body)["not_ready"], json!([]));
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "not critical: no exit"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

#[test]
fn sighup_retries_a_component_that_is_failed_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fixed");
    let deploy_dir = dir.path().join("deploy");
    fs::create_dir(&deploy_dir).unwrap();
    let port = free_port();
    let script = format!("test -e '{}' || exit 3; exec sleep 60", marker.display());
    deploy(&deploy_dir, port, &script, true);
    let mut daemon = Daemon::start(&deploy_dir, &[], &[]);

    crash_in(port, "failed");
    fs::write(&marker, "").unwrap();
    daemon.signal("HUP");
    let crash = crash_in(port, "running");
    assert!(crash["details"]["pid"].is_u64(), "{crash}");
    wait_for("/readyz 200 after the retry", || {
        http_get(port, "/readyz", None).filter(|r| r.status == 200)
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

#[test]
fn a_changed_file_redeploys_a_component_that_is_failed_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    deploy(dir.path(), port, "exit 3", true);
    let mut daemon = Daemon::start(dir.path(), &[], &[]);
    crash_in(port, "failed");
    // No signal: the file's change alone brings a new version, with a fresh history.
    deploy(dir.path(), port, "exec sleep 60", true);
    let crash = crash_in(port, "running");
    assert_eq!(crash["restarts"], 0, "{crash}");
    assert!(daemon.log_has("component=crash isopace_deploy::deployer: redeployed"));
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

#[test]
fn exit_on_critical_failure_shuts_down_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    deploy(dir.path(), port, "exit 3", true);
    let mut daemon = Daemon::start(
        dir.path(),
        &[],
        &[("ISOPACE_EXIT_ON_CRITICAL_FAILURE", "true".to_owned())],
    );
    let status = daemon.wait();
    let log = daemon.log().join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("a critical component is failed for good"),
        "{log}"
    );
    assert!(
        log.contains("component=admin isopace_host::host: stopped"),
        "a clean stop first: {log}"
    );
}
