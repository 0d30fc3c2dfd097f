//! Lifecycle throughput: start plus stop of many trivial components, deploy plus undeploy
//! of 10 000 while the host runs (plain and supervised), and how fast a failed component is
//! running again.

use std::{sync::Arc, time::Duration};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use isopace_host::{BoxError, Component, Env, Host, RestartPolicy, Supervision, async_trait};
use parking_lot::Mutex;
use tokio::sync::mpsc;

struct Trivial(String);

#[async_trait]
impl Component for Trivial {
    fn name(&self) -> &str {
        &self.0
    }
    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

fn components(n: usize) -> Vec<Trivial> {
    (0..n).map(|i| Trivial(format!("component-{i}"))).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn start_stop(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("host/start_stop");
    group.sample_size(10);
    for n in [1_000, 10_000, 100_000] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let host = Host::default();
                    for component in components(n) {
                        host.register(component).expect("unique names");
                    }
                    host
                },
                |host| {
                    rt.block_on(async {
                        host.start().await.expect("start");
                        host.stop().await.expect("stop");
                    });
                    host
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn deploy_undeploy(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("host/deploy_undeploy_running");
    group.sample_size(10);
    for n in [10_000, 100_000] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let host = Host::default();
            rt.block_on(host.start()).expect("start");
            b.iter_batched(
                || {
                    let batch = components(n);
                    let names: Vec<String> = batch.iter().map(|c| c.0.clone()).collect();
                    (batch, names)
                },
                |(batch, names)| {
                    rt.block_on(async {
                        for component in batch {
                            host.deploy(component).await.expect("deploy");
                        }
                        for name in &names {
                            host.undeploy(name).await.expect("undeploy");
                        }
                    });
                },
                BatchSize::PerIteration,
            );
            rt.block_on(host.stop()).expect("stop");
        });
    }
    group.finish();
}

fn on_failure_now() -> Supervision {
    Supervision::new().restart(
        RestartPolicy::on_failure()
            .backoff(Duration::ZERO)
            .max_backoff(Duration::ZERO)
            .max_restarts(u32::MAX)
            .window(Duration::from_secs(1)),
    )
}

/// Deploy + undeploy of 10 000 components under `on-failure`: each start makes an instance
/// with its own cancellation token and task tracker.
fn deploy_undeploy_supervised(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("host/deploy_undeploy_running_supervised");
    group.sample_size(10);
    let n = 10_000;
    group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
        let host = Host::default();
        rt.block_on(host.start()).expect("start");
        b.iter_batched(
            || {
                let batch = components(n);
                let names: Vec<String> = batch.iter().map(|c| c.0.clone()).collect();
                (batch, names)
            },
            |(batch, names)| {
                rt.block_on(async {
                    for component in batch {
                        host.deploy_with(Box::new(component), on_failure_now())
                            .await
                            .expect("deploy");
                    }
                    for name in &names {
                        host.undeploy(name).await.expect("undeploy");
                    }
                });
            },
            BatchSize::PerIteration,
        );
        rt.block_on(host.stop()).expect("stop");
    });
    group.finish();
}

/// Keeps the env of its running instance where the bench can fail it, and says when it
/// started.
struct Failing {
    env: Arc<Mutex<Option<Env>>>,
    started: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl Component for Failing {
    fn name(&self) -> &str {
        "failing"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        *self.env.lock() = Some(env.clone());
        let _ = self.started.send(());
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

/// From a component's reported failure to its restarted instance running, with zero
/// backoff: the supervisor's own cost (stop, policy, timer, start).
fn restart(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("host/restart");
    group.bench_function("in_process_zero_backoff", |b| {
        let host = Host::builder().restart_jitter(0.0).build();
        let env = Arc::new(Mutex::new(None));
        let (started, mut starts) = mpsc::unbounded_channel();
        rt.block_on(async {
            host.start().await.expect("start");
            let failing = Failing {
                env: Arc::clone(&env),
                started,
            };
            host.deploy_with(Box::new(failing), on_failure_now())
                .await
                .expect("deploy");
            starts.recv().await.expect("started");
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let current = env.lock().clone().expect("running");
                    let began = tokio::time::Instant::now();
                    current.fail("bench failure");
                    starts.recv().await.expect("restarted");
                    total += began.elapsed();
                }
                total
            })
        });
        rt.block_on(host.stop()).expect("stop");
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = start_stop, deploy_undeploy, deploy_undeploy_supervised, restart
}
criterion_main!(benches);
