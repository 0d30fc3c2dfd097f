//! Lifecycle behaviour of `Host`: order, unwinding, deploy/undeploy, timeouts, panics, re-entry.

use std::{fmt, sync::Arc, time::Duration};

use isopace_host::{
    BoxError, Component, Env, Error, Failure, Host, Phase, State, WeakHost, async_trait,
};
use parking_lot::Mutex;

/// What a probe does in start or stop.
#[derive(Clone, Debug)]
enum Act {
    Ok,
    Fail(&'static str),
    Hang,
    Panic,
    Sleep(Duration),
}

#[derive(Debug)]
struct Boom(&'static str);

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}

impl std::error::Error for Boom {}

type Log = Arc<Mutex<Vec<String>>>;

struct Probe {
    name: String,
    log: Log,
    on_start: Act,
    on_stop: Act,
}

impl Probe {
    fn new(name: &str, log: &Log) -> Self {
        Probe {
            name: name.to_owned(),
            log: Arc::clone(log),
            on_start: Act::Ok,
            on_stop: Act::Ok,
        }
    }
    fn start_does(mut self, act: Act) -> Self {
        self.on_start = act;
        self
    }
    fn stop_does(mut self, act: Act) -> Self {
        self.on_stop = act;
        self
    }
}

async fn act(act: &Act) -> Result<(), BoxError> {
    match act {
        Act::Ok => Ok(()),
        Act::Fail(why) => Err(Box::new(Boom(why))),
        Act::Hang => std::future::pending().await,
        Act::Panic => panic!("probe panicked on purpose"),
        Act::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Ok(())
        }
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        self.log.lock().push(format!("{}:start", self.name));
        act(&self.on_start).await
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        self.log.lock().push(format!("{}:stop", self.name));
        act(&self.on_stop).await
    }
}

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn events(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock())
}

fn quick_host() -> Host {
    Host::builder()
        .start_timeout(Duration::from_secs(5))
        .stop_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(12))
        .build()
}

#[tokio::test]
async fn starts_in_order_and_stops_in_reverse() {
    let log = log();
    let host = quick_host();
    for name in ["a", "b", "c"] {
        host.register(Probe::new(name, &log)).unwrap();
    }
    host.start().await.unwrap();
    assert!(host.is_running());
    host.stop().await.unwrap();
    assert_eq!(
        events(&log),
        [
            "a:start", "b:start", "c:start", "c:stop", "b:stop", "a:stop"
        ]
    );
    // Stopped hosts start again.
    host.start().await.unwrap();
    host.stop().await.unwrap();
    assert_eq!(events(&log).len(), 6);
}

#[tokio::test]
async fn a_start_failure_unwinds_only_what_started() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log)).unwrap();
    host.register(Probe::new("b", &log).start_does(Act::Fail("no route")))
        .unwrap();
    host.register(Probe::new("c", &log)).unwrap();
    let err = host.start().await.unwrap_err();
    // b gets the stop the Component contract promises after a failed start; c is untouched.
    assert_eq!(events(&log), ["a:start", "b:start", "b:stop", "a:stop"]);
    let Error::Start { failure, unwind } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert_eq!(failure.component(), "b");
    assert_eq!(failure.phase(), Phase::Start);
    assert!(unwind.is_empty());
    // The original error is reachable through the source chain.
    let cause = std::error::Error::source(&err)
        .and_then(std::error::Error::source)
        .and_then(|e| e.downcast_ref::<Boom>())
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
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log).stop_does(Act::Fail("stuck socket")))
        .unwrap();
    host.register(Probe::new("b", &log).start_does(Act::Fail("no route")))
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
    assert_eq!(sources, ["boom: no route", "boom: stuck socket"]);
    assert!(err.to_string().contains("`a`"), "{err}");
}

#[tokio::test]
async fn duplicate_names_and_register_after_start_are_refused() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log)).unwrap();
    let err = host.register(Probe::new("a", &log)).unwrap_err();
    assert!(matches!(&err, Error::Duplicate(n) if n == "a"), "{err:?}");
    assert_eq!(err.to_string(), "component `a` is already registered");
    host.start().await.unwrap();
    assert!(matches!(
        host.register(Probe::new("z", &log)),
        Err(Error::Running)
    ));
    assert!(matches!(host.start().await, Err(Error::Running)));
    let err = host.deploy(Probe::new("a", &log)).await.unwrap_err();
    assert!(matches!(&err, Error::Duplicate(n) if n == "a"), "{err:?}");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn deploy_and_undeploy_while_running() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("base", &log)).unwrap();
    host.start().await.unwrap();
    events(&log);
    host.deploy(Probe::new("live", &log)).await.unwrap();
    assert_eq!(host.components(), ["base", "live"]);
    assert_eq!(host.status_of("live").unwrap().state, State::Running);
    host.undeploy("live").await.unwrap();
    assert_eq!(events(&log), ["live:start", "live:stop"]);
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
    let log = log();
    let host = quick_host();
    host.start().await.unwrap();
    let err = host
        .deploy(Probe::new("bad", &log).start_does(Act::Fail("bind")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Component(e) if e.component() == "bad"),
        "{err:?}"
    );
    assert!(host.components().is_empty());
    assert_eq!(events(&log), ["bad:start", "bad:stop"]);
    // The name is free again.
    host.deploy(Probe::new("bad", &log)).await.unwrap();
    host.stop().await.unwrap();
}

#[tokio::test]
async fn deploy_before_start_registers() {
    let log = log();
    let host = quick_host();
    host.deploy(Probe::new("a", &log)).await.unwrap();
    assert!(events(&log).is_empty());
    assert_eq!(host.status_of("a").unwrap().state, State::Stopped);
    host.start().await.unwrap();
    assert_eq!(events(&log), ["a:start"]);
}

#[tokio::test(start_paused = true)]
async fn run_stops_when_the_shutdown_future_completes() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log)).unwrap();
    host.register(Probe::new("b", &log)).unwrap();
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
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(host.is_running());
    assert_eq!(events(&log), ["a:start", "b:start"]);
    tx.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(events(&log), ["b:stop", "a:stop"]);
    assert!(!host.is_running());
}

#[tokio::test(start_paused = true)]
async fn run_returns_the_start_error_without_waiting() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log).start_does(Act::Fail("config")))
        .unwrap();
    let err = host.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(err, Error::Start { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_start_that_hangs_times_out_and_is_reported() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log)).unwrap();
    host.register(Probe::new("slow", &log).start_does(Act::Hang))
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
        events(&log),
        ["a:start", "slow:start", "slow:stop", "a:stop"]
    );
    // The host keeps working.
    host.undeploy("slow").await.unwrap();
    host.start().await.unwrap();
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_hangs_during_shutdown_is_named() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log)).unwrap();
    host.register(Probe::new("stuck", &log).stop_does(Act::Hang))
        .unwrap();
    host.register(Probe::new("c", &log)).unwrap();
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
        events(&log),
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
    let log = log();
    let host = Host::builder()
        .stop_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_secs(10))
        .build();
    host.register(Probe::new("a", &log)).unwrap();
    host.register(Probe::new("slow", &log).stop_does(Act::Sleep(Duration::from_secs(30))))
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
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log).stop_does(Act::Panic))
        .unwrap();
    host.start().await.unwrap();
    let err = host.stop().await.unwrap_err();
    let Error::Stop(errors) = &err else {
        panic!("expected stop errors, got {err:?}");
    };
    assert!(
        matches!(errors[0].failure(), Failure::Panicked(m) if m == "probe panicked on purpose")
    );
    assert_eq!(
        errors[0].to_string(),
        "component `a` panicked in stop: probe panicked on purpose"
    );

    let err = host
        .deploy(Probe::new("b", &log).start_does(Act::Panic))
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
        let log = log();
        let result = host.deploy(Probe::new("inner", &log)).await;
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
    log: Log,
    done: Option<tokio::sync::oneshot::Sender<Result<(), Error>>>,
}

#[async_trait]
impl Component for Spawner {
    fn name(&self) -> &str {
        "spawner"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let host = self.host.clone();
        let log = Arc::clone(&self.log);
        let done = self.done.take().expect("started once");
        env.spawn(async move {
            let host = host.upgrade().expect("host alive");
            let _ = done.send(host.deploy(Probe::new("child", &log)).await);
        });
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn deploy_from_a_background_task_works() {
    let log = log();
    let host = quick_host();
    let (tx, rx) = tokio::sync::oneshot::channel();
    host.register(Spawner {
        host: host.downgrade(),
        log: Arc::clone(&log),
        done: Some(tx),
    })
    .unwrap();
    host.start().await.unwrap();
    rx.await.unwrap().unwrap();
    assert_eq!(host.components(), ["spawner", "child"]);
    assert_eq!(host.status_of("child").unwrap().state, State::Running);
    host.stop().await.unwrap();
    assert_eq!(events(&log), ["child:start", "child:stop"]);
}

#[tokio::test(start_paused = true)]
async fn status_follows_the_whole_lifecycle() {
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log).start_does(Act::Sleep(Duration::from_secs(1))))
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

    host.register(Probe::new("b", &log).start_does(Act::Fail("nope")))
        .unwrap();
    host.start().await.unwrap_err();
    let statuses = host.status();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[1].state, State::Failed);
    assert_eq!(
        statuses[1].last_error.as_deref(),
        Some("component `b` failed to start: boom: nope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploy_and_undeploy_leave_a_consistent_set() {
    let log = log();
    let host = quick_host();
    host.start().await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let host = host.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let name = format!("c{i}");
                for _ in 0..10 {
                    host.deploy(Probe::new(&name, &log)).await.unwrap();
                    host.undeploy(&name).await.unwrap();
                }
                // Even tasks leave their component deployed.
                if i % 2 == 0 {
                    host.deploy(Probe::new(&name, &log)).await.unwrap();
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
    let events = events(&log);
    let starts = events.iter().filter(|e| e.ends_with(":start")).count();
    let stops = events.iter().filter(|e| e.ends_with(":stop")).count();
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
    let log = log();
    let host = quick_host();
    host.register(Probe::new("a", &log)).unwrap();
    host.register(Probe::new("slow-stop", &log).stop_does(Act::Sleep(Duration::from_secs(3))))
        .unwrap();
    host.start().await.unwrap();

    // A deploy dropped mid-start leaves nothing registered.
    let deploy = host.deploy(Probe::new("hang", &log).start_does(Act::Hang));
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
    host.deploy(Probe::new("slow-stop", &log)).await.unwrap();
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

    let tmp = dir.path().join("app.json.tmp");
    std::fs::write(&tmp, r#"{"logging": {"level": "debug"}}"#).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
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
    let log = log();
    host.register(Probe::new("a", &log)).unwrap();
    host.start().await.unwrap();
    let err = host
        .deploy(Probe::new("b", &log).start_does(Act::Fail("x")))
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
