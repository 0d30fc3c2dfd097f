//! Stopping a watcher leaves no task, thread or watcher state behind.
//!
//! This is its own test binary, with one test, so the process's thread count is not disturbed
//! by other tests running in parallel.

use std::time::{Duration, Instant};

use isopace_config::{Config, ConfigWatcher, LoadOptions};

/// Threads of this process, from `/proc` (Linux only; elsewhere the test checks the rest).
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Waits (up to 2 s) for the thread count to return to `expected`.
fn settles_at(expected: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if threads() == Some(expected) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[tokio::test]
async fn stop_joins_the_task_and_the_notify_thread() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"n": 1}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let threads_before = threads();

    // Several rounds, so a leak would accumulate rather than hide in noise.
    for round in 0..3 {
        let mut watcher = ConfigWatcher::new(config.clone()).interval(Duration::from_secs(3600));
        watcher.start().await.unwrap();
        assert_eq!(metrics.num_alive_tasks(), tasks_before + 1, "round {round}");
        if let Some(before) = threads_before {
            assert!(
                threads().unwrap_or(0) > before,
                "the event watcher should run a thread while started"
            );
        }

        watcher.stop().await.unwrap();
        assert_eq!(
            metrics.num_alive_tasks(),
            tasks_before,
            "a task outlived stop"
        );
        if let Some(before) = threads_before {
            assert!(
                settles_at(before),
                "a thread outlived stop: {:?}",
                threads()
            );
        }
    }
}
