//! How fast a killed `exec` child is replaced: from `SIGKILL` of the child to the new
//! child's pid in the component's status, with a zero restart backoff. supervisord's
//! defaults need about a second for the same.
//!
//! ```sh
//! cargo bench -p isopace-builtins --bench exec -- --warm-up-time 1 --measurement-time 3
//! ```

use std::{sync::Arc, time::Duration};

use criterion::Criterion;
use isopace_builtins::exec::{Exec, ExecConfig};
use isopace_host::{Component, Env, Host, RestartPolicy, Supervision};
use serde_json::json;

fn config() -> ExecConfig {
    serde_json::from_value(json!({ "command": ["sleep", "3600"], "stop_grace": "1s" }))
        .expect("a valid exec config")
}

fn pid_of(host: &Host) -> Option<u32> {
    let status = host.status_of("child")?;
    if status.state != isopace_host::State::Running {
        return None;
    }
    status.details?.get("pid")?.as_u64().map(|pid| pid as u32)
}

/// Waits for a running child whose pid is not `old`.
async fn next_pid(host: &Host, old: Option<u32>) -> u32 {
    loop {
        if let Some(pid) = pid_of(host).filter(|&pid| Some(pid) != old) {
            return pid;
        }
        tokio::task::yield_now().await;
    }
}

fn killed_child_replaced(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = Host::builder().restart_jitter(0.0).build();
    let supervision = Supervision::new()
        .restart(
            RestartPolicy::on_failure()
                .backoff(Duration::ZERO)
                .max_backoff(Duration::ZERO)
                .max_restarts(u32::MAX)
                .window(Duration::from_secs(1)),
        )
        .rebuild(Arc::new(|_env: &Env| {
            Ok(Box::new(Exec::new("child", config())?) as Box<dyn Component>)
        }));
    let mut pid = rt.block_on(async {
        host.start().await.expect("start");
        let exec = Exec::new("child", config()).expect("exec");
        host.deploy_with(Box::new(exec), supervision)
            .await
            .expect("deploy");
        next_pid(&host, None).await
    });
    let mut group = c.benchmark_group("exec");
    group.bench_function("killed_child_to_new_child_running", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let began = tokio::time::Instant::now();
                    // SAFETY: kill(2) with a pid this benchmark's host spawned and still runs.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    pid = next_pid(&host, Some(pid)).await;
                    total += began.elapsed();
                }
                total
            })
        });
    });
    group.finish();
    rt.block_on(host.stop()).expect("stop");
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    killed_child_replaced(&mut criterion);
    criterion.final_summary();
}
