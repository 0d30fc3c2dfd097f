//! Supervision: failures after start reach the host, which restarts by policy with backoff
//! and an intensity limit; readiness, health, task cancellation and retry.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use isopace_host::{
    BoxError, Component, Env, Health, Host, Restart, RestartPolicy, State, Supervision, async_trait,
};
use isopace_observe::{MetricsRegistry, Observer};

type Behaviour = Arc<dyn Fn(&Env, u32) + Send + Sync>;

/// A component whose `start` runs `behaviour` with its env and how many starts came before.
struct Worker {
    name: &'static str,
    starts: Arc<AtomicU32>,
    behaviour: Behaviour,
}

impl Worker {
    fn new(name: &'static str, behaviour: impl Fn(&Env, u32) + Send + Sync + 'static) -> Self {
        Worker {
            name,
            starts: Arc::default(),
            behaviour: Arc::new(behaviour),
        }
    }
}

#[async_trait]
impl Component for Worker {
    fn name(&self) -> &str {
        self.name
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        (self.behaviour)(env, n);
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

fn host_with(metrics: &MetricsRegistry) -> Host {
    Host::builder()
        .observer(Arc::new(metrics.clone()) as Arc<dyn Observer>)
        .restart_jitter(0.0)
        .stop_timeout(Duration::from_secs(2))
        .build()
}

fn on_failure(backoff_ms: u64) -> Supervision {
    Supervision::new().restart(
        RestartPolicy::on_failure()
            .backoff(Duration::from_millis(backoff_ms))
            .max_backoff(Duration::from_secs(5)),
    )
}

/// Lets spawned tasks and the supervisor run, advancing the paused clock by `d`.
async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Waits, on the paused clock, until `name` is in `state` (at most a minute of it).
async fn wait_state(host: &Host, name: &str, state: State) {
    for _ in 0..60_000 {
        if host.status_of(name).map(|s| s.state) == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{name} never reached {state}: {:?}", host.status_of(name));
}

#[tokio::test(start_paused = true)]
async fn a_task_that_panics_after_start_is_a_failure_restarted_with_backoff() {
    let metrics = MetricsRegistry::new();
    let host = host_with(&metrics);
    host.start().await.unwrap();
    let worker = Worker::new("worker", |env, n| {
        if n == 0 {
            env.spawn(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                panic!("lost the link");
            });
        }
    });
    let starts = Arc::clone(&worker.starts);
    host.deploy_with(Box::new(worker), on_failure(100))
        .await
        .unwrap();
    assert_eq!(host.status_of("worker").unwrap().state, State::Running);

    advance(Duration::from_millis(1000)).await;
    let status = host.status_of("worker").unwrap();
    assert_eq!(status.state, State::Backoff, "{status:?}");
    assert!(status.next_try.is_some());
    assert!(!status.ready);
    let error = status.last_error.unwrap();
    assert!(error.contains("lost the link"), "{error}");
    assert!(status.last_error_at.is_some());

    wait_state(&host, "worker", State::Running).await;
    let status = host.status_of("worker").unwrap();
    assert_eq!(status.restarts, 1);
    assert!(status.ready);
    assert_eq!(status.next_try, None);
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    let text = metrics.render();
    assert!(
        text.contains("isopace_component_restarts_total{component=\"worker\"} 1\n"),
        "{text}"
    );
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn restarts_beyond_the_intensity_limit_leave_the_component_failed() {
    let metrics = MetricsRegistry::new();
    let host = host_with(&metrics);
    host.start().await.unwrap();
    let worker = Worker::new("flaky", |env, _| {
        env.spawn_fallible(async { Err::<(), _>("exit status 3") });
    });
    let starts = Arc::clone(&worker.starts);
    let supervision = Supervision::new().restart(
        RestartPolicy::on_failure()
            .backoff(Duration::from_millis(10))
            .max_restarts(3)
            .window(Duration::from_secs(60)),
    );
    host.deploy_with(Box::new(worker), supervision)
        .await
        .unwrap();
    wait_state(&host, "flaky", State::Failed).await;
    let status = host.status_of("flaky").unwrap();
    assert_eq!(status.restarts, 3);
    assert_eq!(
        starts.load(Ordering::SeqCst),
        4,
        "the first start and 3 restarts"
    );
    assert!(status.last_error.unwrap().contains("exit status 3"));
    // It stays failed: nothing is scheduled.
    advance(Duration::from_secs(120)).await;
    assert_eq!(host.status_of("flaky").unwrap().state, State::Failed);
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    let text = metrics.render();
    assert!(
        text.contains("isopace_component_state{component=\"flaky\",state=\"failed\"} 1\n"),
        "{text}"
    );

    // A retry starts it again with its history forgotten.
    host.retry("flaky").await.unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 5);
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_backoff_doubles_between_restarts() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let worker = Worker::new("w", |env, _| env.fail("boom"));
    let starts = Arc::clone(&worker.starts);
    host.deploy_with(Box::new(worker), on_failure(100))
        .await
        .unwrap();
    // Failures at once; restarts after 100, 200 and 400 ms.
    advance(Duration::from_millis(99)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    advance(Duration::from_millis(2)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    advance(Duration::from_millis(198)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    advance(Duration::from_millis(2)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    advance(Duration::from_millis(401)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    host.stop().await.unwrap();
    assert_eq!(host.status_of("w").unwrap().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn under_never_a_failure_is_final_until_retried() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let worker = Worker::new("once", |env, n| {
        if n == 0 {
            env.fail("disk full");
        }
    });
    host.deploy(worker).await.unwrap();
    wait_state(&host, "once", State::Failed).await;
    advance(Duration::from_secs(60)).await;
    let status = host.status_of("once").unwrap();
    assert_eq!((status.state, status.restarts), (State::Failed, 0));
    assert!(status.last_error.unwrap().contains("disk full"));
    host.retry("once").await.unwrap();
    assert_eq!(host.status_of("once").unwrap().state, State::Running);
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ends_ok_is_not_a_failure_and_a_clean_finish_restarts_only_under_always() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    host.deploy_with(
        Box::new(Worker::new("quiet", |env, _| {
            env.spawn_fallible(async { Ok::<(), BoxError>(()) });
        })),
        on_failure(10),
    )
    .await
    .unwrap();
    let job = Worker::new("job", |env, _| env.finish());
    host.deploy_with(Box::new(job), on_failure(10).critical(false))
        .await
        .unwrap();
    let cron = Worker::new("cron", |env, _| env.finish());
    let cron_starts = Arc::clone(&cron.starts);
    let always = Supervision::new().restart(
        RestartPolicy::always()
            .backoff(Duration::from_millis(10))
            .max_restarts(2),
    );
    host.deploy_with(Box::new(cron), always).await.unwrap();
    advance(Duration::from_secs(1)).await;

    assert_eq!(host.status_of("quiet").unwrap().state, State::Running);
    // The finished job is not critical; cron, between restarts or done, may be either.
    assert!(
        host.not_ready()
            .iter()
            .all(|s| s.name != "job" && s.name != "quiet")
    );
    let job = host.status_of("job").unwrap();
    assert_eq!(
        (job.state, job.restarts, job.critical),
        (State::Stopped, 0, false)
    );
    assert_eq!(job.last_error, None);
    // Under always, a finish restarts until the intensity limit.
    assert_eq!(cron_starts.load(Ordering::SeqCst), 3);
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn readiness_can_come_later_than_start() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    host.deploy(Worker::new("warm", |env, _| {
        env.ready_later();
        let env = env.clone();
        env.clone().spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            env.set_ready(true);
            env.cancelled().await;
        });
    }))
    .await
    .unwrap();
    let status = host.status_of("warm").unwrap();
    assert_eq!((status.state, status.ready), (State::Running, false));
    let waiting: Vec<String> = host.not_ready().into_iter().map(|s| s.name).collect();
    assert_eq!(waiting, ["warm"]);
    advance(Duration::from_secs(2)).await;
    assert!(host.status_of("warm").unwrap().ready);
    assert!(host.not_ready().is_empty());
    // A component that says nothing is ready once start returns.
    host.deploy(Worker::new("plain", |_, _| {})).await.unwrap();
    assert!(host.status_of("plain").unwrap().ready);
    host.stop().await.unwrap();
    assert!(!host.status_of("warm").unwrap().ready);
}

#[tokio::test(start_paused = true)]
async fn lasting_unhealth_is_a_failure_and_degraded_is_not() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let worker = Worker::new("db", |env, n| {
        if n > 0 {
            return;
        }
        env.set_unhealthy_threshold(Duration::from_secs(5));
        let env = env.clone();
        env.clone().spawn(async move {
            env.set_health(Health::Degraded("replica lag".into()));
            tokio::time::sleep(Duration::from_secs(1)).await;
            env.set_health(Health::Unhealthy("primary unreachable".into()));
            env.cancelled().await;
        });
    });
    host.deploy_with(Box::new(worker), on_failure(100))
        .await
        .unwrap();
    advance(Duration::from_millis(10)).await;
    let status = host.status_of("db").unwrap();
    assert_eq!(status.health, Health::Degraded("replica lag".into()));
    assert_eq!(status.state, State::Running);
    advance(Duration::from_secs(1)).await;
    let status = host.status_of("db").unwrap();
    assert_eq!(status.health.as_str(), "unhealthy");
    assert_eq!(status.state, State::Running, "within its threshold");
    advance(Duration::from_secs(5)).await;
    wait_state(&host, "db", State::Running).await;
    let status = host.status_of("db").unwrap();
    assert_eq!(status.restarts, 1);
    assert_eq!(
        status.health,
        Health::Healthy,
        "a fresh instance starts healthy"
    );
    assert!(status.last_error.unwrap().contains("primary unreachable"));
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn tasks_are_cancelled_after_stop_and_aborted_past_the_stop_bound() {
    let host = host_with(&MetricsRegistry::new());
    let drained = Arc::new(AtomicU32::new(0));
    let stubborn_alive = Arc::new(AtomicU32::new(0));
    let (d, s) = (Arc::clone(&drained), Arc::clone(&stubborn_alive));
    host.register(Worker::new("proxy", move |env, _| {
        // Drains for a second once cancelled, within the 2 s stop bound.
        let (env2, d) = (env.clone(), Arc::clone(&d));
        env.spawn(async move {
            env2.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        // Ignores cancellation: aborted when the bound passes.
        let s = Arc::clone(&s);
        env.spawn(async move {
            struct Alive(Arc<AtomicU32>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            s.fetch_add(1, Ordering::SeqCst);
            let _alive = Alive(s);
            std::future::pending::<()>().await;
        });
    }))
    .unwrap();
    host.start().await.unwrap();
    advance(Duration::from_millis(1)).await;
    assert_eq!(stubborn_alive.load(Ordering::SeqCst), 1);
    let began = tokio::time::Instant::now();
    host.stop().await.unwrap();
    assert_eq!(
        drained.load(Ordering::SeqCst),
        1,
        "the drain ran to its end"
    );
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(2),
        "waited out the stop bound"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        stubborn_alive.load(Ordering::SeqCst),
        0,
        "the stubborn task is gone"
    );
    assert_eq!(host.status_of("proxy").unwrap().state, State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_rebuild_gives_each_restart_a_fresh_instance() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let built = Arc::new(AtomicU32::new(0));
    let b = Arc::clone(&built);
    let supervision = on_failure(10).rebuild(Arc::new(move |_env: &Env| {
        b.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Worker::new("fresh", |_, n| assert_eq!(n, 0))) as Box<dyn Component>)
    }));
    host.deploy_with(
        Box::new(Worker::new("fresh", |env, _| env.fail("first life ends"))),
        supervision,
    )
    .await
    .unwrap();
    wait_state(&host, "fresh", State::Backoff).await;
    wait_state(&host, "fresh", State::Running).await;
    assert_eq!(built.load(Ordering::SeqCst), 1);
    assert_eq!(host.status_of("fresh").unwrap().restarts, 1);
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stopping_during_backoff_cancels_the_restart_and_undeploy_forgets_it() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let worker = Worker::new("w", |env, _| env.fail("boom"));
    let starts = Arc::clone(&worker.starts);
    host.deploy_with(Box::new(worker), on_failure(1000))
        .await
        .unwrap();
    wait_state(&host, "w", State::Backoff).await;
    host.undeploy("w").await.unwrap();
    advance(Duration::from_secs(5)).await;
    assert!(host.status_of("w").is_none());
    assert_eq!(starts.load(Ordering::SeqCst), 1);

    let worker = Worker::new("v", |env, _| env.fail("boom"));
    let starts = Arc::clone(&worker.starts);
    host.deploy_with(Box::new(worker), on_failure(1000))
        .await
        .unwrap();
    wait_state(&host, "v", State::Backoff).await;
    host.stop().await.unwrap();
    assert_eq!(host.status_of("v").unwrap().state, State::Stopped);
    advance(Duration::from_secs(5)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert_eq!(Restart::default(), Restart::Never);
}

#[tokio::test(start_paused = true)]
async fn a_component_may_declare_a_longer_stop_bound_and_stays_stopping_until_it_ends() {
    /// Takes 20 s to stop, and says so.
    struct Slow;
    #[async_trait]
    impl Component for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
            env.set_stop_timeout(Duration::from_secs(21));
            Ok(())
        }
        async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
            tokio::time::sleep(Duration::from_secs(20)).await;
            Ok(())
        }
    }
    // The host's own stop bound (2 s) would abandon it.
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    host.deploy(Slow).await.unwrap();
    let undeploy = tokio::spawn({
        let host = host.clone();
        async move { host.undeploy("slow").await }
    });
    advance(Duration::from_secs(10)).await;
    assert_eq!(host.status_of("slow").unwrap().state, State::Stopping);
    advance(Duration::from_secs(11)).await;
    undeploy.await.unwrap().unwrap();
    assert!(host.status_of("slow").is_none());
    host.stop().await.unwrap();
}

/// Publishes how many connections it holds; its connection task takes `drain` to finish
/// once cancelled, as a proxy's open connections do.
struct Draining {
    drain: Duration,
}

#[async_trait]
impl Component for Draining {
    fn name(&self) -> &str {
        "edge"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        env.set_details(serde_json::json!({ "connections": 3 }));
        let (cancelled, drain) = (env.cancelled(), self.drain);
        env.spawn(async move {
            cancelled.await;
            tokio::time::sleep(drain).await;
        });
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_retired_version_drains_in_the_background_and_shows_in_its_successor() {
    let host = Host::builder()
        .stop_timeout(Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(30))
        .build();
    host.start().await.unwrap();
    host.deploy(Draining {
        drain: Duration::from_secs(3),
    })
    .await
    .unwrap();
    let began = tokio::time::Instant::now();
    host.retire("edge").await.unwrap();
    assert_eq!(
        began.elapsed(),
        Duration::ZERO,
        "retire does not wait for the drain"
    );
    host.deploy(Draining {
        drain: Duration::ZERO,
    })
    .await
    .unwrap();
    let status = host.status_of("edge").unwrap();
    assert_eq!(status.state, State::Running);
    let [old] = &status.draining[..] else {
        panic!("one draining version: {status:?}");
    };
    assert_eq!(old.details, Some(serde_json::json!({ "connections": 3 })));
    assert!(old.until > std::time::SystemTime::now());

    advance(Duration::from_secs(3)).await;
    assert!(host.status_of("edge").unwrap().draining.is_empty());

    // The host's stop waits for a drain in progress, within the shutdown timeout.
    host.retire("edge").await.unwrap();
    host.deploy(Draining {
        drain: Duration::from_secs(5),
    })
    .await
    .unwrap();
    host.retire("edge").await.unwrap();
    let began = tokio::time::Instant::now();
    host.stop().await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_drain_past_the_shutdown_timeout_is_named() {
    let host = Host::builder()
        .stop_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_secs(2))
        .build();
    host.start().await.unwrap();
    host.deploy(Draining {
        drain: Duration::from_secs(50),
    })
    .await
    .unwrap();
    host.retire("edge").await.unwrap();
    let err = host.stop_within(Duration::from_secs(2)).await.unwrap_err();
    assert!(
        err.to_string().contains("edge (a previous version)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_failed_retries_every_failed_component_and_only_those() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let fails_once = |name| {
        Worker::new(name, |env, n| {
            if n == 0 {
                env.fail("first start only");
            }
        })
    };
    let (a, b, steady) = (
        fails_once("a"),
        fails_once("b"),
        Worker::new("steady", |_, _| {}),
    );
    let starts = [&a, &b, &steady].map(|w| Arc::clone(&w.starts));
    for worker in [a, b, steady] {
        host.deploy(worker).await.unwrap();
    }
    wait_state(&host, "a", State::Failed).await;
    wait_state(&host, "b", State::Failed).await;

    assert_eq!(host.retry_failed().await, 2);
    let counts = starts.map(|s| s.load(Ordering::SeqCst));
    assert_eq!(counts, [2, 2, 1], "the running component is left alone");
    for name in ["a", "b", "steady"] {
        assert_eq!(host.status_of(name).unwrap().state, State::Running);
    }
    assert_eq!(host.retry_failed().await, 0);
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn critical_failure_names_the_first_critical_component_failed_for_good() {
    let host = host_with(&MetricsRegistry::new());
    host.start().await.unwrap();
    let fails = |name| Worker::new(name, |env, _| env.fail("gone"));
    // A component that is not critical may fail without ending the wait.
    host.deploy_with(
        Box::new(fails("optional")),
        Supervision::new().critical(false),
    )
    .await
    .unwrap();
    wait_state(&host, "optional", State::Failed).await;
    let watcher = tokio::spawn({
        let host = host.clone();
        async move { host.critical_failure().await }
    });
    advance(Duration::from_secs(1)).await;
    assert!(!watcher.is_finished());

    host.deploy(fails("payments")).await.unwrap();
    assert_eq!(watcher.await.unwrap(), "payments");
    // Already failed: at once.
    assert_eq!(host.critical_failure().await, "payments");
    host.stop().await.unwrap();
}
