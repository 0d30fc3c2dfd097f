//! Counter add cost: through `NopObserver`, through `MetricsRegistry` on one thread and from
//! two threads on one counter, beside a shared `AtomicU64::fetch_add` baseline.

use std::{
    hint::black_box,
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use isopace_observe::{MetricsRegistry, NopObserver, Observer, attr};

/// Runs `op` `iters` times on each of two threads at once and returns the slower thread's
/// time, so the result is the time per add with two threads adding concurrently.
fn on_two_threads<F>(iters: u64, op: F) -> Duration
where
    F: Fn() + Send + Sync + Clone + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (barrier, op) = (barrier.clone(), op.clone());
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    op();
                }
                start.elapsed()
            })
        })
        .collect();
    workers
        .into_iter()
        .map(|w| w.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

fn counter_add(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter_add");

    let nop = NopObserver.counter("requests");
    g.bench_function("nop", |b| b.iter(|| nop.add(black_box(1), &[])));

    let registry = MetricsRegistry::new();
    let counter = registry.counter("requests");
    g.bench_function("registry_1_thread", |b| {
        b.iter(|| counter.add(black_box(1), &[]))
    });

    let labelled = registry.counter("labelled");
    g.bench_function("registry_labelled_1_thread", |b| {
        b.iter(|| labelled.add(black_box(1), &[attr("outcome", "ok")]))
    });

    let atomic = Arc::new(AtomicU64::new(0));
    g.bench_function("atomic_1_thread", |b| {
        b.iter(|| atomic.fetch_add(black_box(1), Ordering::Relaxed))
    });

    let shared = registry.counter("shared");
    g.bench_function("registry_2_threads", |b| {
        b.iter_custom(|iters| {
            let shared = shared.clone();
            on_two_threads(iters, move || shared.add(black_box(1), &[]))
        })
    });

    g.bench_function("atomic_2_threads", |b| {
        b.iter_custom(|iters| {
            let atomic = atomic.clone();
            on_two_threads(iters, move || {
                atomic.fetch_add(black_box(1), Ordering::Relaxed);
            })
        })
    });

    g.finish();
}

criterion_group!(benches, counter_add);
criterion_main!(benches);
