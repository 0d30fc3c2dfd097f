//! Read-path benchmarks: dot-path get, typed handle and snapshot reads, against an RwLock baseline.
//!
//! Each lookup runs on one thread, then on two reader threads at once while a writer swaps
//! the tree every millisecond (a reload for `Config`, a write-locked replace for the
//! baseline). The contended numbers are the time per read seen by each reader.

use std::{
    hint::black_box,
    path::Path,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use isopace_config::{Config, LoadOptions};
use parking_lot::RwLock;
use serde_json::Value;

const PATH: &str = "server.http.port";
const SNAPSHOT_PATHS: [&str; 3] = ["server.http.port", "server.http.host", "link.pool.size"];

fn tree_text(port: u32) -> String {
    format!(
        r#"{{
  "server": {{
    "http": {{"host": "0.0.0.0", "port": {port}, "timeout": "5s", "tls": false}},
    "admin": {{"host": "127.0.0.1", "port": 9090}}
  }},
  "link": {{"pool": {{"size": 8, "idle": "30s"}}, "retries": 3, "name": "edge"}},
  "logging": {{"level": "info", "format": "json"}},
  "features": {{"a": true, "b": false, "c": true}}
}}"#
    )
}

/// The reference's design: one lock around the whole tree.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |node, key| node.get(key))
}

struct Lookups {
    config: Config,
    baseline: Arc<RwLock<Value>>,
}

impl Lookups {
    fn new(file: &Path) -> Self {
        std::fs::write(file, tree_text(8080)).expect("write config");
        let config = Config::load(file, LoadOptions::new()).expect("load config");
        let baseline = Arc::new(RwLock::new(
            serde_json::from_str(&tree_text(8080)).expect("baseline tree"),
        ));
        Lookups { config, baseline }
    }
}

/// One read of each kind, as closures a reader thread can run `iters` times.
#[derive(Clone, Copy)]
enum Read {
    Get,
    Handle,
    Snapshot3,
    LockedGet,
    LockedTyped,
    LockedSnapshot3,
}

impl Read {
    const ALL: [Read; 6] = [
        Read::Get,
        Read::Handle,
        Read::Snapshot3,
        Read::LockedGet,
        Read::LockedTyped,
        Read::LockedSnapshot3,
    ];

    fn name(self) -> &'static str {
        match self {
            Read::Get => "get_depth3/arc_swap",
            Read::Handle => "handle_read/arc_swap",
            Read::Snapshot3 => "snapshot_3_reads/arc_swap",
            Read::LockedGet => "get_depth3/rwlock",
            Read::LockedTyped => "handle_read/rwlock",
            Read::LockedSnapshot3 => "snapshot_3_reads/rwlock",
        }
    }

    /// Runs the read `iters` times and returns how long that took.
    fn run(self, lookups: &Lookups, iters: u64) -> Duration {
        let config = &lookups.config;
        let baseline = &lookups.baseline;
        match self {
            Read::Get => timed(iters, || {
                black_box(config.get(black_box(PATH)));
            }),
            Read::Handle => {
                let mut handle = config.handle::<u32>(PATH);
                timed(iters, || {
                    black_box(handle.get());
                })
            }
            Read::Snapshot3 => timed(iters, || {
                let snapshot = config.snapshot();
                for path in SNAPSHOT_PATHS {
                    black_box(snapshot.get_ref(black_box(path)));
                }
            }),
            Read::LockedGet => timed(iters, || {
                black_box(lookup(&baseline.read(), black_box(PATH)).cloned());
            }),
            Read::LockedTyped => timed(iters, || {
                black_box(lookup(&baseline.read(), black_box(PATH)).and_then(Value::as_u64));
            }),
            Read::LockedSnapshot3 => timed(iters, || {
                let tree = baseline.read();
                for path in SNAPSHOT_PATHS {
                    black_box(lookup(&tree, black_box(path)));
                }
            }),
        }
    }
}

fn timed(iters: u64, mut read: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        read();
    }
    start.elapsed()
}

/// Swaps both trees every millisecond until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(lookups: &Lookups, file: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let config = lookups.config.clone();
        let baseline = lookups.baseline.clone();
        let file = file.to_path_buf();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut port = 8080;
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(1));
                port = if port == 8080 { 8081 } else { 8080 };
                let text = tree_text(port);
                std::fs::write(&file, &text).expect("write config");
                config.reload().expect("reload");
                let fresh: Value = serde_json::from_str(&text).expect("baseline tree");
                *baseline.write() = fresh;
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bench.json");
    let lookups = Lookups::new(&file);

    let mut one = c.benchmark_group("config/1_reader");
    for read in Read::ALL {
        one.bench_function(read.name(), |b| {
            b.iter_custom(|iters| read.run(&lookups, iters))
        });
    }
    one.finish();

    let writer = Writer::start(&lookups, &file);
    let mut two = c.benchmark_group("config/2_readers_1_writer");
    for read in Read::ALL {
        two.bench_function(read.name(), |b| {
            b.iter_custom(|iters| {
                let barrier = Barrier::new(2);
                let total: Duration = thread::scope(|s| {
                    let readers: Vec<_> = (0..2)
                        .map(|_| {
                            s.spawn(|| {
                                barrier.wait();
                                read.run(&lookups, iters)
                            })
                        })
                        .collect();
                    readers
                        .into_iter()
                        .map(|r| r.join().expect("reader thread"))
                        .sum()
                });
                total / 2
            })
        });
    }
    two.finish();
    drop(writer);
}

criterion_group!(benches, bench);
criterion_main!(benches);
