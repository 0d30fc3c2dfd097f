//! The `exec` component's behaviour under a host: a child's end is the component's failure
//! or finish, restarts are the host's with a fresh child, stop or undeploy take everything
//! the child started (in its cgroup where there is one, through `/proc` otherwise), and a
//! later start kills what a killed daemon's children left.
//!
//! Children are real processes, so these tests run on real time, with short backoffs and
//! bounded waits. They use the current-thread runtime: the host then decides what follows a
//! child's end (restart or not) before a test sees its state again.

use std::{
    io::Write,
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use isopace_deploy::{Deployer, Registry};
use isopace_host::{Component, ComponentStatus, Env, Host, RestartPolicy, State, Supervision};
use isopace_observe::{MetricsRegistry, Observer};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ChildSupervisor, Containment, Exec, ExecConfig, procfs, tree::signal_process};

fn config(value: Value) -> ExecConfig {
    serde_json::from_value(value).unwrap()
}

fn host(metrics: &MetricsRegistry) -> Host {
    Host::builder()
        .observer(Arc::new(metrics.clone()) as Arc<dyn Observer>)
        .restart_jitter(0.0)
        .stop_timeout(Duration::from_secs(5))
        .build()
}

/// Restarts after 10 ms, each one built fresh from `config` as a deployer would.
fn supervised(name: &'static str, config: ExecConfig, policy: RestartPolicy) -> Supervision {
    Supervision::new()
        .restart(
            policy
                .backoff(Duration::from_millis(10))
                .max_backoff(Duration::from_millis(10)),
        )
        .rebuild(Arc::new(move |_env: &Env| {
            Ok(Box::new(Exec::new(name, config.clone())?) as Box<dyn Component>)
        }))
}

async fn deploy(host: &Host, name: &'static str, value: Value, policy: RestartPolicy) {
    let config = config(value);
    let exec = Exec::new(name, config.clone()).unwrap();
    host.deploy_with(Box::new(exec), supervised(name, config, policy))
        .await
        .unwrap();
}

/// Polls `check` every few milliseconds for up to ten seconds.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `name`'s status satisfies `check`, and returns it.
async fn wait_status(
    host: &Host,
    name: &str,
    what: &str,
    mut check: impl FnMut(&ComponentStatus) -> bool,
) -> ComponentStatus {
    let mut last = None;
    wait_for(what, || {
        let status = host.status_of(name).unwrap();
        let done = check(&status);
        last = Some(status);
        done
    })
    .await;
    last.unwrap()
}

fn pid_of(status: &ComponentStatus) -> Option<u32> {
    status.details.as_ref()?["pid"]
        .as_u64()
        .map(|pid| pid as u32)
}

fn sample(metrics: &MetricsRegistry, series: &str) -> Option<f64> {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The runs counted in `count`; 0 while a run is rewriting it (the shell truncates first).
fn runs(count: &Path) -> u32 {
    std::fs::read_to_string(count)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Asserts the child was reaped (no `/proc` entry, not even a zombie) and no live
/// process is left in its group.
fn assert_gone(pid: u32) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} is still in /proc"
    );
    assert_eq!(
        group_size(pid),
        0,
        "a process of group {pid} is still alive"
    );
}

/// The live processes in the group `pgid`.
fn group_size(pgid: u32) -> usize {
    procfs::all()
        .unwrap()
        .iter()
        .filter(|p| p.pgrp == pgid as i32 && p.is_live())
        .count()
}

/// Counts its runs in `$COUNT`, fails the first two, then keeps running.
const FAILS_TWICE: &str = "n=$(( $(cat \"$COUNT\" 2>/dev/null || echo 0) + 1 )); \
                           echo $n > \"$COUNT\"; [ $n -gt 2 ] || exit 1; exec sleep 30";

#[tokio::test]
async fn a_child_that_fails_twice_and_then_runs_shows_two_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let metrics = MetricsRegistry::new();
    let host = host(&metrics);
    host.start().await.unwrap();
    deploy(
        &host,
        "worker",
        json!({"command": ["sh", "-c", FAILS_TWICE], "env": {"COUNT": count}}),
        RestartPolicy::on_failure(),
    )
    .await;
    let status = wait_status(&host, "worker", "the third child to run", |s| {
        s.restarts == 2 && s.state == State::Running && runs(&count) == 3
    })
    .await;
    let error = status.last_error.as_deref().unwrap();
    assert!(error.contains(") ended: exit status 1"), "{error}");
    let pid = pid_of(&status).expect("the running child's pid");
    let details = status.details.unwrap();
    assert!(details["started_at"].is_string(), "{details}");
    assert_eq!(details["last_exit"], Value::Null);
    for (series, want) in [
        (r#"exec_starts_total{component="worker"}"#, 3.0),
        (r#"exec_exits_total{component="worker",status="1"}"#, 2.0),
        (
            r#"isopace_component_restarts_total{component="worker"}"#,
            2.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}");
    }
    host.stop().await.unwrap();
    assert_gone(pid);
}

#[tokio::test]
async fn a_child_exiting_zero_is_stopped_with_its_status_and_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let host = host(&MetricsRegistry::new());
    host.start().await.unwrap();
    deploy(
        &host,
        "job",
        json!({
            "command": ["sh", "-c", "echo 1 >> \"$COUNT\"; exit 0"],
            "env": {"COUNT": count}
        }),
        RestartPolicy::on_failure(),
    )
    .await;
    let status = wait_status(&host, "job", "the job to end", |s| {
        s.state != State::Running
    })
    .await;
    // A restart would have put it in backoff: the host decided before the test looked.
    assert_eq!(
        (status.state, status.restarts, status.next_try),
        (State::Stopped, 0, None)
    );
    assert_eq!(status.last_error, None);
    let details = status.details.unwrap();
    assert_eq!(details["last_exit"], "exit status 0");
    assert_eq!(details["exit_code"], 0);
    assert_eq!(details["pid"], Value::Null);
    assert!(details["exited_at"].is_string(), "{details}");
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "1\n");

    // Under `never`, a failing exit is final and names the status.
    deploy(
        &host,
        "once",
        json!({"command": ["sh", "-c", "exit 3"]}),
        RestartPolicy::never(),
    )
    .await;
    let status = wait_status(&host, "once", "the child to fail", |s| {
        s.state != State::Running
    })
    .await;
    assert_eq!((status.state, status.restarts), (State::Failed, 0));
    assert!(
        status.last_error.unwrap().ends_with("ended: exit status 3"),
        "the failure names the status"
    );
    assert_eq!(status.details.unwrap()["exit_code"], 3);
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_child_is_restarted_under_on_failure() {
    let host = host(&MetricsRegistry::new());
    host.start().await.unwrap();
    deploy(
        &host,
        "worker",
        json!({"command": ["sleep", "30"]}),
        RestartPolicy::on_failure(),
    )
    .await;
    let first = pid_of(&host.status_of("worker").unwrap()).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_status(&host, "worker", "a new child", |s| {
        s.state == State::Running && pid_of(s).is_some_and(|pid| pid != first)
    })
    .await;
    assert_eq!(status.restarts, 1);
    let error = status.last_error.as_deref().unwrap();
    assert!(
        error.contains(&format!("(pid {first}) ended: killed by SIGKILL")),
        "{error}"
    );
    let second = pid_of(&status).unwrap();
    assert_gone(first);
    host.stop().await.unwrap();
    assert_gone(second);
}

#[tokio::test]
async fn undeploy_and_stop_kill_the_whole_process_group() {
    let host = host(&MetricsRegistry::new());
    host.start().await.unwrap();
    let script = json!({"command": ["sh", "-c", "sleep 30 & sleep 30 & wait"]});
    deploy(&host, "a", script.clone(), RestartPolicy::on_failure()).await;
    deploy(&host, "b", script, RestartPolicy::on_failure()).await;
    let a = pid_of(&host.status_of("a").unwrap()).unwrap();
    let b = pid_of(&host.status_of("b").unwrap()).unwrap();
    wait_for("both groups to have three processes", || {
        group_size(a) == 3 && group_size(b) == 3
    })
    .await;

    let started = Instant::now();
    host.undeploy("a").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_gone(a);
    assert_eq!(group_size(b), 3, "the other component's group is untouched");

    host.stop().await.unwrap();
    assert_gone(b);
    let status = host.status_of("b").unwrap();
    assert_eq!((status.state, status.last_error), (State::Stopped, None));
    assert_eq!(status.details.unwrap()["last_exit"], "killed by SIGTERM");
}

#[tokio::test]
async fn a_child_ignoring_the_stop_signal_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let env = Env::default().for_component("worker");
    let mut worker = Exec::new(
        "worker",
        config(json!({
            "command": ["sh", "-c", "trap '' TERM; : > \"$READY\"; while :; do sleep 1; done"],
            "env": {"READY": ready},
            "stop_grace": "300ms"
        })),
    )
    .unwrap();
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
    assert_eq!(status.signal.as_deref(), Some("SIGKILL"));
    assert_eq!(status.pid, None);
    // Without a host, the details go to the env all the same.
    assert_eq!(env.details().unwrap()["last_exit"], "killed by SIGKILL");
    assert_gone(pid);
}

#[tokio::test]
async fn a_program_that_cannot_run_fails_the_start() {
    let env = Env::default().for_component("worker");
    let mut worker = Exec::new(
        "worker",
        config(json!({"command": ["/nonexistent/program"], "cwd": "/"})),
    )
    .unwrap();
    let e = worker.start(&env).await.unwrap_err().to_string();
    assert!(e.contains("cannot run `/nonexistent/program` in /"), "{e}");
    worker.stop(&env).await.unwrap();
}

/// Warnings logged anywhere in this test binary, from the first call on: the deployer
/// parses descriptors on a blocking thread, which a thread-local subscriber would miss.
fn warnings() -> &'static Arc<parking_lot::Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<parking_lot::Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        #[derive(Clone)]
        struct Sink(Arc<parking_lot::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Arc::default();
        let sink = Sink(Arc::clone(&log));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other test installs a global subscriber");
        log
    })
}

#[tokio::test]
async fn a_descriptor_with_exec_restart_fields_deploys_with_warnings_and_their_policy() {
    let log = warnings();
    let dir = tempfile::tempdir().unwrap();
    let (deploy, count) = (dir.path().join("deploy"), dir.path().join("count"));
    std::fs::create_dir(&deploy).unwrap();
    let file = deploy.join("legacy-worker.json");
    let descriptor = json!({
        "name": "legacy", "type": "exec",
        "config": {
            "command": ["sh", "-c", "echo 1 >> \"$COUNT\"; exit 1"],
            "env": {"COUNT": count},
            "restart": "on-failure",
            "backoff": {"initial": "10ms", "max": "20ms"},
            "max_restarts": 2,
            "restart_window": "1m"
        }
    });
    std::fs::write(&file, descriptor.to_string()).unwrap();
    let mut registry = Registry::new();
    super::register(&mut registry).unwrap();
    let host = host(&MetricsRegistry::new());
    host.start().await.unwrap();
    let deployer = Deployer::builder(&host, Arc::new(registry), &deploy)
        .watch(false)
        .build();
    let report = deployer.scan().await.unwrap();
    assert_eq!(report.deployed, ["legacy"], "{report:?}");

    // The descriptor's default would restart five times, after 100 ms and more; the old
    // fields say twice, after 10 and 20 ms.
    let status = wait_status(&host, "legacy", "the restart limit", |s| {
        s.state == State::Failed
    })
    .await;
    assert_eq!(status.restarts, 2);
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "1\n1\n1\n");

    let text = String::from_utf8(log.lock().clone()).unwrap();
    for (old, new) in [
        ("config.restart", "restart.policy"),
        ("config.backoff.initial", "restart.backoff"),
        ("config.backoff.max", "restart.max_backoff"),
        ("config.max_restarts", "restart.max_restarts"),
        ("config.restart_window", "restart.window"),
    ] {
        let said = format!("{}: `{old}` is deprecated; use `{new}`", file.display());
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&said)).collect();
        assert_eq!(lines.len(), 1, "warned once: {said}\n{text}");
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
    }
    // A rescan of the unchanged file warns no more.
    deployer.scan().await.unwrap();
    let again = String::from_utf8(log.lock().clone()).unwrap();
    assert_eq!(
        again.matches("legacy-worker.json").count(),
        text.matches("legacy-worker.json").count()
    );
    host.stop().await.unwrap();
}

/// Whether `pid` is dead: gone, or a zombie that only waits to be reaped (by init, which
/// here may take its time).
fn dead(pid: i32) -> bool {
    procfs::stat(pid).is_none_or(|s| !s.is_live())
}

/// Kills, when dropped, the processes a test started that may outlive it if it fails.
#[derive(Default)]
struct KillOnDrop(Vec<(i32, u64)>);

impl KillOnDrop {
    fn add(&mut self, pid: i32) {
        if let Some(stat) = procfs::stat(pid) {
            self.0.push((pid, stat.start_time));
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &(pid, start) in &self.0 {
            if procfs::is_running(pid, start) {
                signal_process(pid, libc::SIGKILL);
            }
        }
    }
}

/// Polls `file` for the pid a child wrote to it.
async fn read_pid(file: &Path) -> i32 {
    let mut pid = None;
    wait_for(&format!("a pid in {}", file.display()), || {
        pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}

/// Writes the pid of a grandchild that calls `setsid` to `$PIDFILE.setsid`, and of one
/// that double-forks (its parent exits at once) to `$PIDFILE.orphan`; then waits.
const ESCAPES: &str = "setsid sleep 3601 & echo $! > \"$PIDFILE.setsid.tmp\"; \
                       (setsid sleep 3602 & echo $! > \"$PIDFILE.orphan.tmp\"); \
                       mv \"$PIDFILE.orphan.tmp\" \"$PIDFILE.orphan\"; \
                       mv \"$PIDFILE.setsid.tmp\" \"$PIDFILE.setsid\"; wait";

/// Deploys `ESCAPES` under a host with `supervisor` (if any), undeploys it, and checks what
/// is left: the `setsid` grandchild is dead either way; the double-forked one too when the
/// child had a cgroup, which is removed. Returns whether it had one.
async fn undeploy_with_escapes(supervisor: Option<ChildSupervisor>) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let host = host(&MetricsRegistry::new());
    if let Some(supervisor) = supervisor {
        host.env().insert_extension(supervisor);
    }
    host.start().await.unwrap();
    deploy(
        &host,
        "worker",
        json!({"command": ["sh", "-c", ESCAPES], "env": {"PIDFILE": pidfile}}),
        RestartPolicy::on_failure(),
    )
    .await;
    let mut guard = KillOnDrop::default();
    let setsid = read_pid(&pidfile.with_extension("setsid")).await;
    let orphan = read_pid(&pidfile.with_extension("orphan")).await;
    guard.add(setsid);
    guard.add(orphan);
    wait_for("both grandchildren to lead sessions of their own", || {
        [setsid, orphan]
            .iter()
            .all(|&pid| procfs::stat(pid).is_some_and(|s| s.session == pid && s.is_live()))
    })
    .await;
    let status = host.status_of("worker").unwrap();
    let child = pid_of(&status).unwrap();
    let cgroup = status.details.unwrap()["cgroup"]
        .as_str()
        .map(str::to_owned);
    if let Some(cgroup) = &cgroup {
        let member = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .is_some_and(|own| own.len() > 1 && cgroup.ends_with(own))
            })
        };
        assert!(member(setsid) && member(orphan), "both are in {cgroup}");
    }

    host.undeploy("worker").await.unwrap();
    assert_gone(child);
    assert!(dead(setsid), "the grandchild that called setsid is dead");
    if let Some(cgroup) = &cgroup {
        assert!(dead(orphan), "the double-forked grandchild is dead");
        assert!(!Path::new(cgroup).exists(), "{cgroup} is removed");
    }
    host.stop().await.unwrap();
    cgroup.is_some()
}

#[tokio::test]
async fn undeploy_ends_grandchildren_that_started_their_own_sessions() {
    let in_cgroup = undeploy_with_escapes(None).await;
    // Where this process may create cgroups, children get one.
    let cgroups_here = matches!(
        ChildSupervisor::default().containment(),
        Containment::Cgroup { .. }
    );
    assert_eq!(in_cgroup, cgroups_here);
}

#[tokio::test]
async fn without_cgroups_undeploy_still_ends_a_grandchild_that_called_setsid() {
    let supervisor = ChildSupervisor::builder().cgroups(false).build().unwrap();
    assert!(matches!(
        supervisor.containment(),
        Containment::Tracked { ref reason } if reason == "cgroups are turned off"
    ));
    assert!(!undeploy_with_escapes(Some(supervisor)).await);
}

/// Spawns `script` in a session of its own (as a killed daemon's child was), writing the
/// pids of the processes it starts to `$PIDS`, and returns it with them.
async fn orphaned_session(dir: &Path, script: &str) -> (std::process::Child, Vec<i32>) {
    let pids = dir.join("pids");
    let child = std::process::Command::new("setsid")
        .args(["sh", "-c", script])
        .env("PIDS", &pids)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut found = Vec::new();
    wait_for("the session's processes", || {
        found = std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        found.len() == 2 && procfs::stat(pid).is_some_and(|s| s.session == pid)
    })
    .await;
    (child, found)
}

#[tokio::test]
async fn a_later_start_kills_what_a_killed_daemons_children_left() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut left, grandchildren) = orphaned_session(
        dir.path(),
        "sleep 3601 & echo $! >> \"$PIDS\"; sleep 3602 & echo $! >> \"$PIDS\"; wait",
    )
    .await;
    let mut reused = std::process::Command::new("sleep")
        .arg("3603")
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop::default();
    for pid in grandchildren
        .iter()
        .chain(&[left.id() as i32, reused.id() as i32])
    {
        guard.add(*pid);
    }
    let start_of = |pid: u32| procfs::stat(pid as i32).unwrap().start_time;
    let boot = procfs::boot_id().unwrap();
    // The records of a daemon process that no longer runs: this pid, another start time.
    let (me, my_start) = procfs::this_process();
    let gone = state
        .join("children")
        .join(format!("{me}.{}", my_start + 1));
    std::fs::create_dir_all(&gone).unwrap();
    let record = |pid: u32, start_time: u64| {
        json!({"component": "worker", "pid": pid, "start_time": start_time, "boot_id": boot})
            .to_string()
    };
    std::fs::write(
        gone.join(format!("{}.json", left.id())),
        record(left.id(), start_of(left.id())),
    )
    .unwrap();
    // A recorded pid that now names another process (another start time) is not the child.
    std::fs::write(
        gone.join(format!("{}.json", reused.id())),
        record(reused.id(), start_of(reused.id()) + 1),
    )
    .unwrap();

    let supervisor = ChildSupervisor::builder()
        .state_dir(&state)
        .cgroups(false)
        .build()
        .unwrap();
    assert_eq!(supervisor.state_dir(), Some(state.as_path()));
    let reclaimed = supervisor.reclaim().await;
    assert_eq!(
        (reclaimed.records, reclaimed.processes, reclaimed.cgroups),
        (2, 3, 0)
    );
    for pid in &grandchildren {
        assert!(dead(*pid), "grandchild {pid} is killed");
    }
    let status = left.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(
        !dead(reused.id() as i32),
        "the reused pid's process runs on"
    );
    assert!(!gone.exists(), "the records are removed");
    // This process's own records are its own: a second reclaim finds nothing.
    let again = supervisor.reclaim().await;
    assert_eq!(again.records, 0);
    reused.kill().unwrap();
    reused.wait().unwrap();
}

#[tokio::test]
async fn a_state_dir_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = ChildSupervisor::builder()
        .state_dir(dir.path())
        .cgroups(false)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the state directory {} is writable by other users",
            dir.path().display()
        )
    );
    // A missing one is created, for this user alone.
    let fresh = dir.path().join("a/b");
    let supervisor = ChildSupervisor::builder()
        .state_dir(&fresh)
        .cgroups(false)
        .build()
        .unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(supervisor);
    assert_eq!(
        std::fs::read_dir(fresh.join("children")).unwrap().count(),
        0,
        "a supervisor that recorded nothing leaves nothing"
    );
}
