//! Soak: many redeploys and deploy/undeploy cycles through the deployer leak neither tasks
//! nor memory.
//!
//! Each soak warms up first (allocator pools, the blocking thread pool, metric series), then
//! records the runtime's live task count and the process RSS, runs its workload, and checks
//! both came back to within 5% of where they started. Every probe runs a background task, so
//! a component that is dropped without being stopped, or stopped without its task ending,
//! shows in the task count.
//!
//! Memory is a process-wide measure and the other tests of this binary run in parallel, so
//! each soak re-runs this test binary with only itself selected and checks it there.
//! `ISOPACE_SOAK=long` makes them ten times longer.

use std::{future::Future, process::Command, time::Instant};

use isopace_tests::{Fixture, SoakLength, alive_tasks, probe_descriptor, rss_bytes};
use serde_json::json;
use tokio::runtime::Runtime;

/// Set in the child process that runs the workload.
const CHILD: &str = "ISOPACE_SOAK_CHILD";
/// How far the task count and RSS may end above where they started.
const TOLERANCE: f64 = 0.05;

#[test]
fn redeploys_leak_neither_tasks_nor_memory() {
    in_own_process("soak::redeploys_leak_neither_tasks_nor_memory", redeploys);
}

#[test]
fn deploy_undeploy_cycles_leak_neither_tasks_nor_memory() {
    in_own_process(
        "soak::deploy_undeploy_cycles_leak_neither_tasks_nor_memory",
        cycles,
    );
}

/// In the child, runs `workload` on a current-thread runtime; in the parent, runs the child
/// and checks that it ran the test and passed.
fn in_own_process(test: &str, workload: fn(&Runtime, SoakLength) -> Measured) {
    if std::env::var_os(CHILD).is_some() {
        // One blocking thread: scans run one at a time anyway, and a second thread (spawned
        // when a scan starts before the last one's thread is back in the pool) brings its own
        // allocator arena, a step in RSS that says nothing about isopace.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let measured = workload(&runtime, SoakLength::from_env());
        println!("{measured}");
        measured.check();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the soak failed in its own process:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child did not run `{test}`:\n{stdout}"
    );
    // libtest prints the test's name on the line the measurement starts on.
    for line in stdout
        .lines()
        .filter_map(|l| l.find("soak: ").map(|at| &l[at..]))
    {
        println!("{line}");
    }
}

/// What a soak measured before and after its workload.
#[derive(Debug)]
struct Measured {
    what: String,
    seconds: f64,
    tasks: (usize, usize),
    rss: Option<(u64, u64)>,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "soak: {} in {:.1}s; live tasks {} -> {}",
            self.what, self.seconds, self.tasks.0, self.tasks.1
        )?;
        match self.rss {
            Some((before, after)) => write!(f, "; RSS {} -> {} KiB", before / 1024, after / 1024),
            None => write!(f, "; RSS not measured on this platform"),
        }
    }
}

impl Measured {
    fn check(&self) {
        let (before, after) = self.tasks;
        assert!(
            after as f64 <= before as f64 * (1.0 + TOLERANCE),
            "live tasks grew: {self}"
        );
        if let Some((before, after)) = self.rss {
            assert!(
                after as f64 <= before as f64 * (1.0 + TOLERANCE),
                "RSS grew by more than 5%: {self}"
            );
        }
    }
}

/// Runs `rounds` of `round` after a warm-up of a tenth as many, measuring around them.
async fn measure<F, Fut>(f: &Fixture, what: String, rounds: usize, mut round: F) -> Measured
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    for i in 0..rounds / 10 {
        round(i).await;
        f.lifecycle().clear_events();
    }
    let tasks = alive_tasks();
    let rss = rss_bytes();
    let started = Instant::now();
    for i in rounds / 10..rounds / 10 + rounds {
        round(i).await;
        // The probes' event record is the test's own bookkeeping, not the system's.
        f.lifecycle().clear_events();
    }
    Measured {
        what,
        seconds: started.elapsed().as_secs_f64(),
        tasks: (tasks, alive_tasks()),
        rss: rss.zip(rss_bytes()),
    }
}

fn redeploys(runtime: &Runtime, length: SoakLength) -> Measured {
    runtime.block_on(async {
        let rounds = 10_000 * length.factor();
        let f = Fixture::new().await;
        let version =
            |i: usize| probe_descriptor("soaked", &json!({ "tag": format!("v{i}"), "task": true }));
        f.write("10_soaked.json", version(0));
        assert_eq!(f.scan().await.deployed, ["soaked"]);

        let measured = measure(
            &f,
            format!("{rounds} redeploys of one component"),
            rounds,
            |i| {
                let f = &f;
                async move {
                    f.write("10_soaked.json", version(i + 1));
                    let report = f.scan().await;
                    assert_eq!(report.redeployed, ["soaked"], "{report:#?}");
                }
            },
        )
        .await;
        f.assert_running("soaked", &format!("v{}", rounds / 10 + rounds));
        assert_eq!(f.host().components(), ["soaked"]);
        measured
    })
}

fn cycles(runtime: &Runtime, length: SoakLength) -> Measured {
    runtime.block_on(async {
        let rounds = 1_000 * length.factor();
        let f = Fixture::new().await;
        let names: Vec<String> = (0..100).map(|i| format!("c{i:03}")).collect();
        for name in &names {
            f.write(
                &format!(".{name}.json"),
                probe_descriptor(name, &json!({ "tag": name, "task": true })),
            );
        }
        // Hidden files are ignored, so a rename in or out of a leading dot deploys or
        // undeploys a component without rewriting its file.
        let measured = measure(
            &f,
            format!("{rounds} deploy/undeploy cycles of 100 components"),
            rounds,
            |_| {
                let (f, names) = (&f, &names);
                async move {
                    for name in names {
                        std::fs::rename(
                            f.path(&format!(".{name}.json")),
                            f.path(&format!("{name}.json")),
                        )
                        .unwrap();
                    }
                    let report = f.scan().await;
                    assert_eq!(report.deployed.len(), 100, "{report:#?}");
                    assert_eq!(f.lifecycle().running().len(), 100);
                    for name in names {
                        std::fs::rename(
                            f.path(&format!("{name}.json")),
                            f.path(&format!(".{name}.json")),
                        )
                        .unwrap();
                    }
                    let report = f.scan().await;
                    assert_eq!(report.undeployed.len(), 100, "{report:#?}");
                }
            },
        )
        .await;
        assert!(f.host().components().is_empty());
        assert!(f.lifecycle().running().is_empty());
        measured
    })
}
