//! The watcher against a real file system: in-place writes, renames, ConfigMap swaps, polling.
//!
//! These wait for the file system in real time, returning as soon as the change is seen and
//! giving up after a generous bound. Event tests poll only once an hour, so only a
//! file-system event can make them pass. A test that counts polls runs on paused time.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use isopace_config::{Config, ConfigWatcher, Error, LoadOptions};

const BOUND: Duration = Duration::from_secs(5);
const NO_POLLING: Duration = Duration::from_secs(3600);

/// Waits until `config` reaches `generation`; false after [`BOUND`].
async fn reaches(config: &Config, generation: u64) -> bool {
    let mut changes = config.subscribe();
    tokio::time::timeout(BOUND, async {
        while config.generation() < generation {
            if changes.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .is_ok()
}

fn counting_watcher(config: &Config, interval: Duration) -> (ConfigWatcher, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let watcher = ConfigWatcher::new(config.clone())
        .interval(interval)
        .debounce(Duration::from_millis(20))
        .on_reload(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        });
    (watcher, calls)
}

#[tokio::test]
async fn fires_after_an_in_place_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"level": "info"}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let (mut watcher, calls) = counting_watcher(&config, NO_POLLING);
    watcher.start().await.unwrap();

    std::fs::write(&file, r#"{"level": "debug"}"#).unwrap();
    assert!(
        reaches(&config, 1).await,
        "no reload after an in-place write"
    );
    assert_eq!(config.string("level", ""), "debug");

    watcher.stop().await.unwrap();
    // One save makes several events; they collapse into one reload.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(config.generation(), 1);
}

#[tokio::test]
async fn fires_after_write_to_temp_then_rename() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"level": "info"}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let (mut watcher, calls) = counting_watcher(&config, NO_POLLING);
    watcher.start().await.unwrap();

    let temp = dir.path().join(".app.json.swp");
    std::fs::write(&temp, r#"{"level": "warn"}"#).unwrap();
    std::fs::rename(&temp, &file).unwrap();
    assert!(
        reaches(&config, 1).await,
        "no reload after a rename over the file"
    );
    assert_eq!(config.string("level", ""), "warn");

    // The new inode is watched too: the directory is, not the old file.
    std::fs::write(&temp, r#"{"level": "error"}"#).unwrap();
    std::fs::rename(&temp, &file).unwrap();
    assert!(reaches(&config, 2).await, "no reload after a second rename");
    assert_eq!(config.string("level", ""), "error");

    watcher.stop().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[cfg(unix)]
fn configmap(dir: &Path, version: &str, body: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("app.json"), body).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn fires_after_a_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    configmap(root, "2026_v1", r#"{"level": "info"}"#);
    symlink("..2026_v1", root.join("..data")).unwrap();
    symlink("..data/app.json", root.join("app.json")).unwrap();
    let file = root.join("app.json");
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let (mut watcher, calls) = counting_watcher(&config, NO_POLLING);
    watcher.start().await.unwrap();

    // What the kubelet does: a new versioned directory, a temporary link to it, and an
    // atomic rename of that link over `..data`.
    configmap(root, "2026_v2", r#"{"level": "debug"}"#);
    symlink("..2026_v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_v1")).unwrap();

    assert!(
        reaches(&config, 1).await,
        "no reload after a ConfigMap swap"
    );
    assert_eq!(config.string("level", ""), "debug");
    watcher.stop().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn polls_when_told_to_use_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"n": 1}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let (watcher, calls) = counting_watcher(&config, Duration::from_millis(20));
    let mut watcher = watcher.poll_only(true);
    watcher.start().await.unwrap();

    std::fs::write(&file, r#"{"n": 2}"#).unwrap();
    assert!(reaches(&config, 1).await, "polling did not see the change");
    assert_eq!(config.int("n", 0), 2);
    watcher.stop().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// Paused time, so "several polls" is exact: the clock moves only when every task waits, and
// stands still while a poll reads the file on a blocking thread, so each interval that
// passes is a poll that ran to the end.
#[tokio::test(start_paused = true)]
async fn keeps_the_old_values_and_keeps_watching_after_a_broken_save() {
    const INTERVAL: Duration = Duration::from_millis(10);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"n": 1}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let (watcher, calls) = counting_watcher(&config, INTERVAL);
    let mut watcher = watcher.poll_only(true);
    watcher.start().await.unwrap();

    std::fs::write(&file, r#"{"n": "#).unwrap();
    // Five polls see the broken file; none of them may replace the tree.
    tokio::time::sleep(INTERVAL * 11 / 2).await;
    assert_eq!(config.int("n", 0), 1);
    assert_eq!(config.generation(), 0);
    // The next poll after a repair reloads: the watcher outlived the broken polls.
    std::fs::write(&file, r#"{"n": 3}"#).unwrap();
    assert!(
        reaches(&config, 1).await,
        "the watcher stopped after a failed reload"
    );
    assert_eq!(config.int("n", 0), 3);
    watcher.stop().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_callback_does_not_stop_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"n": 1}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let mut watcher = ConfigWatcher::new(config.clone())
        .interval(Duration::from_millis(10))
        .poll_only(true)
        .on_reload(|c| {
            if c.generation() == 1 {
                panic!("callback failure on purpose");
            }
        });
    watcher.start().await.unwrap();
    std::fs::write(&file, r#"{"n": 2}"#).unwrap();
    assert!(reaches(&config, 1).await);
    std::fs::write(&file, r#"{"n": 3}"#).unwrap();
    assert!(reaches(&config, 2).await, "watcher died with its callback");
    watcher.stop().await.unwrap();
}

#[tokio::test]
async fn start_twice_is_an_error_and_stop_twice_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, "{}").unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let mut watcher = ConfigWatcher::new(config).interval(NO_POLLING);
    watcher.stop().await.unwrap();
    watcher.start().await.unwrap();
    assert!(watcher.is_running());
    let err = watcher.start().await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyStarted { path } if path == &file),
        "{err:?}"
    );
    watcher.stop().await.unwrap();
    watcher.stop().await.unwrap();
    assert!(!watcher.is_running());
    // A stopped watcher can be started again.
    watcher.start().await.unwrap();
    watcher.stop().await.unwrap();
}
