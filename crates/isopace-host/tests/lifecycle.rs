//! Lifecycle behaviour of `Host`: order, unwinding, deploy/undeploy, timeouts, panics, re-entry.

use std::{sync::Arc, time::Duration};

use isopace_host::{
    BoxError, Component, Env, Error, Failure, Host, Phase, State, WeakHost, async_trait,
};
use isopace_testkit::{Act, Lifecycle, Probe, ProbeError, write_atomically};
use parking_lot::Mutex;

fn quick_host() -> Host {
    Host::builder()
        .start_timeout(Duration::from_secs(5))
        .stop_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(12))
        .build()
}

#[tokio::test]
async fn starts_in_order_and_stops_in_reverse() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    for name in ["a", "b", "c"] {
        host.register(Probe::new(name, &lifecycle)).unwrap();
    }
    host.start().await.unwrap();
    assert!(host.is_running());
    host.stop().await.unwrap();
    assert_eq!(
        lifecycle.take_calls(),
        [
            "a:start", "b:start", "c:start", "c:stop", "b:stop", "a:stop"
        ]
    );
    // Stopped hosts start again.
    host.start().await.unwrap();
    host.stop().await.unwrap();
    assert_eq!(lifecycle.take_calls().len(), 6);
}

#[tokio::test]
async fn a_start_failure_unwinds_only_what_started() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.register(Probe::new("b", &lifecycle).start_does(Act::fail("no route")))
        .unwrap();
    host.register(Probe::new("c", &lifecycle)).unwrap();
    let err = host.start().await.unwrap_err();
    // b gets the stop the Component contract promises after a failed start; c is untouched.
    assert_eq!(
        lifecycle.take_calls(),
        ["a:start", "b:start", "b:stop", "a:stop"]
    );
    let Error::Start { failure, unwind } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert_eq!(failure.component(), "b");
    assert_eq!(failure.phase(), Phase::Start);
    assert!(unwind.is_empty());
    // The original error is reachable through the source chain.
    let cause = std::error::Error::source(&err)
        .and_then(std::error::Error::source)
        .and_then(|e| e.downcast_ref::<ProbeError>())
        .expect("b's error in the chain");
    assert_eq!(cause.0, "no route");
    assert!(!host.is_running());
    assert_eq!(host.status_of("b").unwrap().state, State::Failed);
    assert_eq!(host.status_of("a").unwrap().state, State::Stopped);
    assert_eq!(host.status_of("c").unwrap().state, State::Stopped);
    assert!(
        host.status_of("b")
            .unwrap()
            .last_error
            .unwrap()
            .contains("no route")
    );
}

#[tokio::test]
async fn an_unwind_stop_failure_is_in_the_start_error() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle).stop_does(Act::fail("stuck socket")))
        .unwrap();
    host.register(Probe::new("b", &lifecycle).start_does(Act::fail("no route")))
        .unwrap();
    let err = host.start().await.unwrap_err();
    let Error::Start { failure, unwind } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert_eq!(failure.component(), "b");
    assert_eq!(unwind.len(), 1);
    assert_eq!(unwind[0].component(), "a");
    assert_eq!(unwind[0].phase(), Phase::Stop);
    let sources: Vec<String> = err.sources().map(|s| s.to_string()).collect();
    assert_eq!(sources, ["no route", "stuck socket"]);
    assert!(err.to_string().contains("`a`"), "{err}");
}

#[tokio::test]
async fn duplicate_names_and_register_after_start_are_refused() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    let err = host.register(Probe::new("a", &lifecycle)).unwrap_err();
    assert!(matches!(&err, Error::Duplicate(n) if n == "a"), "{err:?}");
    assert_eq!(err.to_string(), "component `a` is already registered");
    host.start().await.unwrap();
    assert!(matches!(
        host.register(Probe::new("z", &lifecycle)),
        Err(Error::Running)
    ));
    assert!(matches!(host.start().await, Err(Error::Running)));
    let err = host.deploy(Probe::new("a", &lifecycle)).await.unwrap_err();
    assert!(matches!(&err, Error::Duplicate(n) if n == "a"), "{err:?}");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn deploy_and_undeploy_while_running() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("base", &lifecycle)).unwrap();
    host.start().await.unwrap();
    lifecycle.take_calls();
    host.deploy(Probe::new("live", &lifecycle)).await.unwrap();
    assert_eq!(host.components(), ["base", "live"]);
    assert_eq!(host.status_of("live").unwrap().state, State::Running);
    host.undeploy("live").await.unwrap();
    assert_eq!(lifecycle.take_calls(), ["live:start", "live:stop"]);
    assert_eq!(host.components(), ["base"]);
    let err = host.undeploy("ghost").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(n) if n == "ghost"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "component `ghost` not found");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_deploy_whose_start_fails_leaves_nothing_registered() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.start().await.unwrap();
    let err = host
        .deploy(Probe::new("bad", &lifecycle).start_does(Act::fail("bind")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Component(e) if e.component() == "bad"),
        "{err:?}"
    );
    assert!(host.components().is_empty());
    assert_eq!(lifecycle.take_calls(), ["bad:start", "bad:stop"]);
    // The name is free again.
    host.deploy(Probe::new("bad", &lifecycle)).await.unwrap();
    host.stop().await.unwrap();
}

#[tokio::test]
async fn deploy_before_start_registers() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.deploy(Probe::new("a", &lifecycle)).await.unwrap();
    assert!(lifecycle.take_calls().is_empty());
    assert_eq!(host.status_of("a").unwrap().state, State::Stopped);
    host.start().await.unwrap();
    assert_eq!(lifecycle.take_calls(), ["a:start"]);
}

#[tokio::test(start_paused = true)]
async fn run_stops_when_the_shutdown_future_completes() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.register(Probe::new("b", &lifecycle)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let host = host.clone();
        async move {
            host.run(async {
                let _ = rx.await;
            })
            .await
        }
    });
    // A minute of paused time: `run` had every chance to return early, and has not.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!running.is_finished());
    assert!(host.is_running());
    assert_eq!(lifecycle.take_calls(), ["a:start", "b:start"]);
    tx.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(lifecycle.take_calls(), ["b:stop", "a:stop"]);
    assert!(!host.is_running());
}

#[tokio::test(start_paused = true)]
async fn run_returns_the_start_error_without_waiting() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle).start_does(Act::fail("config")))
        .unwrap();
    let err = host.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(err, Error::Start { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_start_that_hangs_times_out_and_is_reported() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.register(Probe::new("slow", &lifecycle).start_does(Act::Hang))
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = host.start().await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let Error::Start { failure, .. } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert_eq!(failure.component(), "slow");
    assert!(matches!(failure.failure(), Failure::TimedOut(d) if *d == Duration::from_secs(5)));
    assert_eq!(
        failure.to_string(),
        "component `slow` did not start within 5s"
    );
    assert_eq!(
        lifecycle.take_calls(),
        ["a:start", "slow:start", "slow:stop", "a:stop"]
    );
    // The host keeps working.
    host.undeploy("slow").await.unwrap();
    host.start().await.unwrap();
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_hangs_during_shutdown_is_named() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.register(Probe::new("stuck", &lifecycle).stop_does(Act::Hang))
        .unwrap();
    host.register(Probe::new("c", &lifecycle)).unwrap();
    let err = host.run(async {}).await.unwrap_err();
    let Error::Stop(errors) = &err else {
        panic!("expected stop errors, got {err:?}");
    };
    // The per-call stop timeout (5 s) abandons it within the shutdown timeout (12 s).
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].component(), "stuck");
    assert!(matches!(errors[0].failure(), Failure::TimedOut(_)));
    // Every other component was still stopped, in reverse order.
    assert_eq!(
        lifecycle.take_calls(),
        [
            "a:start",
            "stuck:start",
            "c:start",
            "c:stop",
            "stuck:stop",
            "a:stop"
        ]
    );
    assert_eq!(host.status_of("stuck").unwrap().state, State::Failed);
    assert_eq!(host.status_of("a").unwrap().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn running_past_the_shutdown_timeout_names_what_is_still_stopping() {
    let lifecycle = Lifecycle::new();
    let host = Host::builder()
        .stop_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_secs(10))
        .build();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.register(Probe::new("slow", &lifecycle).stop_does(Act::Sleep(Duration::from_secs(30))))
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = host.run(async {}).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let Error::ShutdownTimeout { stopping, .. } = &err else {
        panic!("expected a shutdown timeout, got {err:?}");
    };
    assert_eq!(stopping, &["slow", "a"]);
    assert_eq!(
        err.to_string(),
        "shutdown did not finish within 10s; still stopping: slow, a"
    );
}

#[tokio::test(start_paused = true)]
async fn panics_in_start_and_stop_are_caught_and_named() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle).stop_does(Act::Panic))
        .unwrap();
    host.start().await.unwrap();
    let err = host.stop().await.unwrap_err();
    let Error::Stop(errors) = &err else {
        panic!("expected stop errors, got {err:?}");
    };
    assert!(
        matches!(errors[0].failure(), Failure::Panicked(m) if m == "probe `a` asked to panic in stop")
    );
    assert_eq!(
        errors[0].to_string(),
        "component `a` panicked in stop: probe `a` asked to panic in stop"
    );

    let err = host
        .deploy(Probe::new("b", &lifecycle).start_does(Act::Panic))
        .await;
    // Not running: deploy only registers.
    assert!(err.is_ok());
    let err = host.start().await.unwrap_err();
    let Error::Start { failure, .. } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert_eq!(failure.component(), "b");
    assert!(matches!(failure.failure(), Failure::Panicked(_)));
    // Still usable.
    host.undeploy("b").await.unwrap();
    assert_eq!(host.components(), ["a"]);
}

/// A component whose start calls back into its own host.
struct Reentrant {
    host: WeakHost,
    seen: Arc<Mutex<Option<Error>>>,
}

#[async_trait]
impl Component for Reentrant {
    fn name(&self) -> &str {
        "reentrant"
    }
    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        let host = self.host.upgrade().expect("host alive");
        let lifecycle = Lifecycle::new();
        let result = host.deploy(Probe::new("inner", &lifecycle)).await;
        *self.seen.lock() = result.err();
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_reentrant_deploy_from_start_is_an_error_not_a_deadlock() {
    let host = quick_host();
    let seen = Arc::new(Mutex::new(None));
    host.register(Reentrant {
        host: host.downgrade(),
        seen: Arc::clone(&seen),
    })
    .unwrap();
    // Bounded even if the guard regressed: the start timeout would end it.
    host.start().await.unwrap();
    let err = seen
        .lock()
        .take()
        .expect("the inner deploy returned an error");
    assert!(
        matches!(&err, Error::Reentrant { call: "deploy", component, phase: Phase::Start } if component == "reentrant"),
        "{err:?}"
    );
    assert_eq!(host.components(), ["reentrant"]);
}

/// A component that deploys another from its background task.
struct Spawner {
    host: WeakHost,
    lifecycle: Lifecycle,
    done: Option<tokio::sync::oneshot::Sender<Result<(), Error>>>,
}

#[async_trait]
impl Component for Spawner {
    fn name(&self) -> &str {
        "spawner"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let host = self.host.clone();
        let lifecycle = self.lifecycle.clone();
        let done = self.done.take().expect("started once");
        env.spawn(async move {
            let host = host.upgrade().expect("host alive");
            let _ = done.send(host.deploy(Probe::new("child", &lifecycle)).await);
        });
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn deploy_from_a_background_task_works() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.register(Spawner {
        host: host.downgrade(),
        lifecycle: lifecycle.clone(),
        done: Some(tx),
    })
    .unwrap();
    host.start().await.unwrap();
    rx.await.unwrap().unwrap();
    assert_eq!(host.components(), ["spawner", "child"]);
    assert_eq!(host.status_of("child").unwrap().state, State::Running);
    host.stop().await.unwrap();
    assert_eq!(lifecycle.take_calls(), ["child:start", "child:stop"]);
}

#[tokio::test(start_paused = true)]
async fn status_follows_the_whole_lifecycle() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle).start_does(Act::Sleep(Duration::from_secs(1))))
        .unwrap();
    let before = host.status_of("a").unwrap();
    assert_eq!(before.state, State::Stopped);
    assert_eq!(before.last_error, None);

    let starting = tokio::spawn({
        let host = host.clone();
        async move { host.start().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(host.status_of("a").unwrap().state, State::Starting);
    starting.await.unwrap().unwrap();
    let running = host.status_of("a").unwrap();
    assert_eq!(running.state, State::Running);
    assert!(running.since >= before.since);

    host.stop().await.unwrap();
    assert_eq!(host.status_of("a").unwrap().state, State::Stopped);

    host.register(Probe::new("b", &lifecycle).start_does(Act::fail("nope")))
        .unwrap();
    host.start().await.unwrap_err();
    let statuses = host.status();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[1].state, State::Failed);
    assert_eq!(
        statuses[1].last_error.as_deref(),
        Some("component `b` failed to start: nope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploy_and_undeploy_leave_a_consistent_set() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.start().await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let host = host.clone();
            let lifecycle = lifecycle.clone();
            tokio::spawn(async move {
                let name = format!("c{i}");
                for _ in 0..10 {
                    host.deploy(Probe::new(&name, &lifecycle)).await.unwrap();
                    host.undeploy(&name).await.unwrap();
                }
                // Even tasks leave their component deployed.
                if i % 2 == 0 {
                    host.deploy(Probe::new(&name, &lifecycle)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut names = host.components();
    names.sort();
    let mut expected: Vec<String> = (0..64).step_by(2).map(|i| format!("c{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(host.status().iter().all(|s| s.state == State::Running));
    let calls = lifecycle.take_calls();
    let starts = calls.iter().filter(|e| e.ends_with(":start")).count();
    let stops = calls.iter().filter(|e| e.ends_with(":stop")).count();
    assert_eq!((starts, stops), (64 * 10 + 32, 64 * 10));
    host.stop().await.unwrap();
}

/// Counts live instances so the test can see the host release them.
struct Tracked {
    _token: Arc<()>,
}

#[async_trait]
impl Component for Tracked {
    fn name(&self) -> &str {
        "tracked"
    }
    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn dropping_the_last_handle_releases_every_component() {
    let token = Arc::new(());
    let host = quick_host();
    let weak = host.downgrade();
    host.register(Tracked {
        _token: Arc::clone(&token),
    })
    .unwrap();
    host.start().await.unwrap();
    host.stop().await.unwrap();
    assert_eq!(Arc::strong_count(&token), 2);
    drop(host);
    assert!(weak.upgrade().is_none());
    assert_eq!(Arc::strong_count(&token), 1);
}

#[tokio::test(start_paused = true)]
async fn abandoned_lifecycle_calls_leave_the_host_consistent() {
    let lifecycle = Lifecycle::new();
    let host = quick_host();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.register(
        Probe::new("slow-stop", &lifecycle).stop_does(Act::Sleep(Duration::from_secs(3))),
    )
    .unwrap();
    host.start().await.unwrap();

    // A deploy dropped mid-start leaves nothing registered.
    let deploy = host.deploy(Probe::new("hang", &lifecycle).start_does(Act::Hang));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), deploy)
            .await
            .is_err()
    );
    assert_eq!(host.components(), ["a", "slow-stop"]);

    // A stop dropped mid-way: what still runs keeps the host running, and the next stop
    // finishes the job.
    let stop = host.stop();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), stop)
            .await
            .is_err()
    );
    assert!(host.is_running());
    assert_eq!(host.status_of("a").unwrap().state, State::Running);
    assert_eq!(host.status_of("slow-stop").unwrap().state, State::Failed);
    host.stop().await.unwrap();
    assert_eq!(host.status_of("a").unwrap().state, State::Stopped);

    // An undeploy dropped mid-stop still removes the component.
    host.start().await.unwrap();
    let undeploy = host.undeploy("slow-stop");
    assert!(
        tokio::time::timeout(Duration::from_secs(1), undeploy)
            .await
            .is_err()
    );
    assert_eq!(host.components(), ["a"]);
    host.deploy(Probe::new("slow-stop", &lifecycle))
        .await
        .unwrap();
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_watcher_is_a_supervised_component() {
    use isopace_config::{Config, ConfigWatcher, LoadOptions};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"logging": {"level": "info"}}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let (tx, mut reloaded) = tokio::sync::mpsc::unbounded_channel();
    let watcher = ConfigWatcher::new(config.clone())
        .interval(Duration::from_millis(20))
        .on_reload(move |c| {
            let _ = tx.send(c.string("logging.level", ""));
        });
    let host = Host::builder().config(config.clone()).build();
    host.register(watcher).unwrap();
    host.start().await.unwrap();
    assert_eq!(host.components(), ["config-watcher"]);

    write_atomically(&file, r#"{"logging": {"level": "debug"}}"#);
    let level = tokio::time::timeout(Duration::from_secs(5), reloaded.recv())
        .await
        .expect("reloaded within 5 s");
    assert_eq!(level.as_deref(), Some("debug"));
    assert_eq!(host.env().config().string("logging.level", ""), "debug");
    host.stop().await.unwrap();
    assert_eq!(
        host.status_of("config-watcher").unwrap().state,
        State::Stopped
    );
}

#[tokio::test(start_paused = true)]
async fn lifecycle_calls_are_measured_through_the_observer() {
    let metrics = isopace_observe::MetricsRegistry::new();
    let host = Host::builder()
        .observer(Arc::new(metrics.clone()))
        .start_timeout(Duration::from_secs(5))
        .build();
    let lifecycle = Lifecycle::new();
    host.register(Probe::new("a", &lifecycle)).unwrap();
    host.start().await.unwrap();
    let err = host
        .deploy(Probe::new("b", &lifecycle).start_does(Act::fail("x")))
        .await;
    assert!(err.is_err());
    host.stop().await.unwrap();
    let text = metrics.render();
    for line in [
        r#"isopace_lifecycle_calls_total{component="a",phase="start"} 1"#,
        r#"isopace_lifecycle_calls_total{component="a",phase="stop"} 1"#,
        r#"isopace_lifecycle_failures_total{component="b",phase="start",reason="error"} 1"#,
        r#"isopace_lifecycle_duration_seconds_count{component="a",phase="start"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}
