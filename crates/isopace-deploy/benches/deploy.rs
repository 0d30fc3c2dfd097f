//! Deployer benchmarks: a rescan of 10 000 unchanged descriptors beside a baseline that
//! re-reads and compares every file (the reference's design), and the latency from an atomic
//! rename of a changed descriptor to its new component having started.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use criterion::{Criterion, criterion_group, criterion_main};
use isopace_deploy::Deployer;
use isopace_host::Host;
use isopace_testkit::{Lifecycle, probe_descriptor, probe_registry};
use serde_json::json;

fn descriptor(name: &str, tag: u64) -> String {
    probe_descriptor(name, &json!({ "tag": tag.to_string() }))
}

/// The deployer's loop and its blocking reads need more than one thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The reference's rescan: list the directory, read every descriptor and compare it with
/// what was applied last time.
fn reread_baseline(dir: &Path, applied: &HashMap<PathBuf, Vec<u8>>) -> usize {
    let mut unchanged = 0;
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let bytes = fs::read(&path).expect("read");
        if applied.get(&path).is_some_and(|old| *old == bytes) {
            unchanged += 1;
        }
    }
    unchanged
}

fn rescan_unchanged(c: &mut Criterion) {
    const FILES: usize = 10_000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    // Old enough that metadata is trusted (files modified within the last second are re-read).
    let old = SystemTime::now() - Duration::from_secs(60);
    let mut applied = HashMap::new();
    for i in 0..FILES {
        let path = dir.path().join(format!("{i:05}.json"));
        let text = descriptor(&format!("c{i}"), 1);
        fs::write(&path, &text).expect("write");
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        applied.insert(path, text.into_bytes());
    }
    let host = Host::builder().build();
    rt.block_on(host.start()).expect("start");
    let deployer = Deployer::builder(&host, probe_registry(&Lifecycle::new()), dir.path()).build();
    let first = rt.block_on(deployer.scan()).expect("first scan");
    assert_eq!(first.deployed.len(), FILES);

    let mut group = c.benchmark_group("deploy/rescan_10000_unchanged");
    group.sample_size(20);
    group.bench_function("deployer_metadata_first", |b| {
        b.iter(|| {
            let report = rt.block_on(deployer.scan()).expect("scan");
            assert_eq!(report.unchanged.len(), FILES);
        });
    });
    group.bench_function("baseline_reread_and_compare", |b| {
        b.iter(|| assert_eq!(reread_baseline(dir.path(), &applied), FILES));
    });
    group.finish();
    rt.block_on(host.stop()).expect("stop");
}

fn redeploy_latency(c: &mut Criterion) {
    const TRIES: usize = 100;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.json");
    fs::write(&path, descriptor("edge", 0)).expect("write");
    let lifecycle = Lifecycle::new();
    let running = |tag: u64| {
        let tag = tag.to_string();
        move |l: &Lifecycle| l.running_tag("edge").as_deref() == Some(tag.as_str())
    };
    let host = Host::builder().build();
    let deployer = Deployer::builder(&host, probe_registry(&lifecycle), dir.path())
        .scan_interval(Duration::from_secs(3600))
        .build();
    let handle = deployer.handle();
    host.register(deployer).expect("register");
    rt.block_on(async {
        host.start().await.expect("start");
        handle.wait_initial_scan().await;
        lifecycle.wait_until(running(0)).await;
    });

    let mut tag = 0;
    let mut latencies = Vec::new();
    let mut try_once = |latencies: &mut Vec<Duration>| {
        tag += 1;
        let tmp = dir.path().join(".edge.json.tmp");
        fs::write(&tmp, descriptor("edge", tag)).expect("write");
        let began = Instant::now();
        fs::rename(&tmp, &path).expect("rename");
        rt.block_on(lifecycle.wait_until(running(tag)));
        let latency = began.elapsed();
        latencies.push(latency);
        latency
    };

    let mut group = c.benchmark_group("deploy/redeploy_after_rename");
    group.sample_size(10);
    group.bench_function("event_driven", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| try_once(&mut latencies)).sum());
    });
    group.finish();
    while latencies.len() < TRIES {
        try_once(&mut latencies);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p95, max) = (
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3,
    );
    println!(
        "deploy/redeploy_after_rename: {} tries, p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms",
        latencies.len(),
    );
    // For `cargo xtask bench`, which puts percentiles in BENCHMARKS.md beside criterion's means.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let out = target.join("isopace-bench");
    let record = serde_json::json!({ "tries": latencies.len(), "p50_ms": p50, "p95_ms": p95, "max_ms": max });
    if fs::create_dir_all(&out).is_ok() {
        let _ = fs::write(out.join("redeploy_latency.json"), record.to_string());
    }
    rt.block_on(host.stop()).expect("stop");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = rescan_unchanged, redeploy_latency
}
criterion_main!(benches);
