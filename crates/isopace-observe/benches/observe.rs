//! Counter add cost: through `NopObserver`, through `MetricsRegistry` on one thread and from
//! two threads on one counter, beside a shared `AtomicU64::fetch_add` baseline. And the cost
//! of logging through the subscriber `LogOptions` builds: a line written inside a component's
//! span (text and JSON), an event and a span below the level, and a `TracingObserver` counter
//! add at debug.

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
use isopace_observe::{
    LogFormat, LogOptions, MetricsRegistry, NopObserver, Observer, TracingObserver, attr,
};
use tracing::Level;

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

/// Runs `f` with the subscriber `options` describe, writing to `io::sink`, as the default.
fn with_logger(options: LogOptions, f: impl FnOnce()) {
    let (subscriber, _handle) = options
        .build_with_writer(std::io::sink)
        .expect("valid log options");
    tracing::subscriber::with_default(subscriber, f);
}

fn logging(c: &mut Criterion) {
    let mut g = c.benchmark_group("logging");

    for (name, format) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        if cfg!(not(feature = "json")) && format == LogFormat::Json {
            continue;
        }
        let options = LogOptions {
            format,
            ..LogOptions::default()
        };
        with_logger(options, || {
            let component = tracing::info_span!("component", component = "edge");
            let lifecycle = tracing::info_span!(parent: &component, "lifecycle", component = "edge", phase = "start");
            let _entered = lifecycle.enter();
            g.bench_function(format!("event_in_component_span_{name}"), |b| {
                b.iter(|| tracing::info!(peer = %"127.0.0.1:40000", bytes = black_box(512_u64), "forwarded"))
            });
        });
    }

    with_logger(LogOptions::default(), || {
        g.bench_function("event_below_level", |b| {
            b.iter(|| tracing::debug!(bytes = black_box(512_u64), "hidden"))
        });
    });

    with_logger(
        LogOptions {
            level: Level::ERROR,
            ..LogOptions::default()
        },
        || {
            g.bench_function("span_below_level", |b| {
                b.iter(|| tracing::info_span!("component", component = black_box("edge")))
            });
        },
    );

    with_logger(
        LogOptions {
            level: Level::DEBUG,
            ..LogOptions::default()
        },
        || {
            let requests = TracingObserver::new().counter("requests");
            g.bench_function("tracing_observer_counter_add_at_debug", |b| {
                b.iter(|| requests.add(black_box(1), &[attr("outcome", "ok")]))
            });
        },
    );

    g.finish();
}

criterion_group!(benches, counter_add, logging);
criterion_main!(benches);
