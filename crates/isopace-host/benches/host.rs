//! Lifecycle throughput: start plus stop of many trivial components, and deploy plus undeploy
//! of 10 000 while the host runs.

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use isopace_host::{BoxError, Component, Env, Host, async_trait};

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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = start_stop, deploy_undeploy
}
criterion_main!(benches);
