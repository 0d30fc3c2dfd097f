//! `ConfigWatcher`: reloads a file-backed config when its file changes.

use std::{
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::{self, MissedTickBehavior},
};

use crate::{
    Config, Error,
    config::{digest, read_file},
};

type Callback = Arc<dyn Fn(&Config) + Send + Sync>;

/// How long the notify thread gets to let go of its event handler after the watcher is
/// dropped; in practice it takes microseconds.
const THREAD_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Reloads a [`Config`] when its file changes and calls the registered callbacks after each
/// successful reload.
///
/// Changes are seen through file-system events on the file's *parent directory* (so an
/// editor's write-then-rename and a Kubernetes ConfigMap `..data` symlink swap are caught, not
/// only in-place writes), debounced, and through polling every [`interval`](Self::interval) as
/// a fallback for file systems without events. Events that leave the file's content unchanged
/// cause no reload. A reload that fails is logged at error level, once per failing content,
/// and the previous tree stays in place; the watcher keeps watching.
///
/// The file is read, and the new tree built, on a blocking thread, never on the runtime's
/// worker threads; the callbacks run on the watcher's task. Only a regular file within
/// [`MAX_CONFIG_BYTES`](crate::MAX_CONFIG_BYTES) is read (see [`Config::load`]): a FIFO or a
/// device put in the file's place is a failed reload, not a hung watcher.
///
/// ```no_run
/// # async fn demo() -> Result<(), isopace_config::Error> {
/// use isopace_config::{Config, ConfigWatcher, LoadOptions};
///
/// let config = Config::load("/etc/app/config.json", LoadOptions::new().env_prefix("APP"))?;
/// let mut watcher = ConfigWatcher::new(config.clone())
///     .on_reload(|c| tracing::info!(generation = c.generation(), "config changed"));
/// watcher.start().await?;
/// // ... config.get(...) now follows the file ...
/// watcher.stop().await?;
/// # Ok(()) }
/// ```
#[must_use = "a watcher does nothing until started"]
pub struct ConfigWatcher {
    config: Config,
    interval: Duration,
    debounce: Duration,
    poll_only: bool,
    callbacks: Vec<Callback>,
    running: Option<Running>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("path", &self.config.path())
            .field("interval", &self.interval)
            .field("debounce", &self.debounce)
            .field("poll_only", &self.poll_only)
            .field("callbacks", &self.callbacks.len())
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl ConfigWatcher {
    /// A stopped watcher for `config`, polling every 2 s besides watching for events.
    pub fn new(config: Config) -> ConfigWatcher {
        ConfigWatcher {
            config,
            interval: Duration::from_secs(2),
            debounce: Duration::from_millis(50),
            poll_only: false,
            callbacks: Vec::new(),
            running: None,
        }
    }

    /// How often the file is checked regardless of events (default 2 s). Zero is treated as
    /// one millisecond.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long to wait after a file-system event for the burst to settle before reading the
    /// file (default 50 ms): one save produces several events.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Registers a callback run after every successful reload. A panicking callback is
    /// logged and does not stop the watcher.
    pub fn on_reload(mut self, callback: impl Fn(&Config) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(callback));
        self
    }

    /// Uses polling only, without file-system events.
    pub fn poll_only(mut self, poll_only: bool) -> Self {
        self.poll_only = poll_only;
        self
    }

    /// The name to report this watcher under, as a component.
    pub fn name(&self) -> &str {
        "config-watcher"
    }

    /// The watched config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the watcher is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts watching on the current tokio runtime. When file-system events are unavailable
    /// the watcher logs a warning and polls.
    ///
    /// Fails when the config was not loaded from a file or the watcher is already running.
    pub async fn start(&mut self) -> Result<(), Error> {
        let path = self.config.path().ok_or(Error::NoFile)?.to_path_buf();
        if self.running.is_some() {
            return Err(Error::AlreadyStarted { path });
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let watcher = if self.poll_only {
            None
        } else {
            match watch_directories(&path, events_tx) {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    tracing::warn!(
                        path = %path.display(),
                        error = &e as &(dyn std::error::Error + 'static),
                        interval = %crate::format_duration(self.interval),
                        "file-system events unavailable for config file; polling instead"
                    );
                    None
                }
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let state = Reloader {
            config: self.config.clone(),
            path,
            callbacks: self.callbacks.clone(),
            last_failure: None,
        };
        let task = tokio::spawn(run(
            state,
            watcher,
            events_rx,
            stop_rx,
            self.interval,
            self.debounce,
        ));
        self.running = Some(Running {
            stop: stop_tx,
            task,
        });
        Ok(())
    }

    /// Stops watching and waits until the task has ended and the file-system watcher (and its
    /// thread) is gone. Stopping a watcher that is not running is a no-op.
    pub async fn stop(&mut self) -> Result<(), Error> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        // The task may already have ended (it only ends on this signal, or by panicking);
        // either way the join below reports it.
        let _ = running.stop.send(());
        running.task.await.map_err(|source| Error::WatcherTask {
            path: self
                .config
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            source,
        })
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        // Without an async drop the task cannot be joined here, but it must not outlive its
        // owner: tell it to finish.
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
        }
    }
}

/// The directories whose events can mean the file changed: its parent (renames, ConfigMap
/// `..data` swaps) and, when the path is a symlink elsewhere, the target's parent.
fn directories(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let target_dir = parent(&target);
        let same = std::fs::canonicalize(&dirs[0]).is_ok_and(|d| d == target_dir);
        if !same {
            dirs.push(target_dir);
        }
    }
    dirs
}

fn watch_directories(
    path: &Path,
    events: mpsc::UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening and reading the file (which the watcher itself does) is not a change.
        if let Ok(event) = &event
            && matches!(event.kind, EventKind::Access(_))
        {
            return;
        }
        let _ = events.send(());
    })?;
    for dir in directories(path) {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

async fn run(
    mut state: Reloader,
    watcher: Option<RecommendedWatcher>,
    mut events: mpsc::UnboundedReceiver<()>,
    mut stop: oneshot::Receiver<()>,
    interval: Duration,
    debounce: Duration,
) {
    let mut ticker = time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut events_open = watcher.is_some();
    'watch: loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            event = events.recv(), if events_open => {
                if event.is_none() {
                    events_open = false;
                    continue;
                }
                tokio::select! {
                    biased;
                    _ = &mut stop => break 'watch,
                    () = time::sleep(debounce) => {}
                }
                while events.try_recv().is_ok() {}
                state.check().await;
            }
            _ = ticker.tick() => state.check().await,
        }
    }
    if let Some(watcher) = watcher {
        drop(watcher);
        // notify does not join its thread on drop; the thread drops our event handler (and
        // with it the sender) as it exits, so the channel closing means the thread is done.
        let drained = time::timeout(THREAD_EXIT_GRACE, async {
            while events.recv().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!(
                path = %state.path.display(),
                "file-system watcher thread did not exit in time"
            );
        }
    }
}

/// The reload step shared by events and polling.
struct Reloader {
    config: Config,
    path: PathBuf,
    callbacks: Vec<Callback>,
    /// The digest of content that already failed, so a broken file is reported once rather
    /// than on every poll.
    last_failure: Option<u64>,
}

/// What one check of the file found.
enum Outcome {
    /// The file holds what the current tree was built from.
    Unchanged,
    /// The file holds content that already failed, and was reported.
    KnownFailure,
    /// A tree of this generation was built from the file and is in place.
    Reloaded(u64),
    /// Reading or building failed; the key tells this failure from the next.
    Failed(u64, Error),
}

impl Reloader {
    /// Reads the file and installs a new tree on a blocking thread, then logs and runs the
    /// callbacks here. The read is bounded (a regular file within `MAX_CONFIG_BYTES`, opened
    /// without blocking), so a stop waits for at most one read.
    async fn check(&mut self) {
        let (config, path, last_failure) =
            (self.config.clone(), self.path.clone(), self.last_failure);
        let outcome = match tokio::task::spawn_blocking(move || {
            attempt(&config, &path, last_failure)
        })
        .await
        {
            Ok(outcome) => outcome,
            // A validator panicked: the watcher task fails as it would have inline, and
            // `stop` reports it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down, and the watcher with it.
            Err(_) => return,
        };
        match outcome {
            Outcome::Unchanged => self.last_failure = None,
            Outcome::KnownFailure => {}
            Outcome::Failed(failure, e) => self.fail(failure, &e),
            Outcome::Reloaded(generation) => {
                self.last_failure = None;
                tracing::info!(path = %self.path.display(), generation, "config reloaded");
                for callback in &self.callbacks {
                    let config = &self.config;
                    if catch_unwind(AssertUnwindSafe(|| callback(config))).is_err() {
                        tracing::error!(
                            path = %self.path.display(),
                            generation,
                            "config on-reload callback panicked"
                        );
                    }
                }
            }
        }
    }

    fn fail(&mut self, failure: u64, error: &Error) {
        if self.last_failure == Some(failure) {
            return;
        }
        self.last_failure = Some(failure);
        // Recorded as an error, not as text, so subscribers keep its sources (the fmt layer
        // prints them after it) and can downcast them.
        tracing::error!(
            path = %self.path.display(),
            error = error as &(dyn std::error::Error + 'static),
            generation = self.config.generation(),
            "config reload failed; keeping the previous values"
        );
    }
}

/// One check's blocking part: reads the file and, when its content is new and has not
/// failed before, builds and installs a tree from it.
fn attempt(config: &Config, path: &Path, last_failure: Option<u64>) -> Outcome {
    let bytes = match read_file(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            // Debug, unlike Display, includes the io::Error, so a file that goes from
            // missing to unreadable is reported again.
            let failure = digest(format!("{e:?}").as_bytes()) ^ u64::MAX;
            return Outcome::Failed(failure, e);
        }
    };
    let content = digest(&bytes);
    if content == config.current_digest() {
        return Outcome::Unchanged;
    }
    if last_failure == Some(content) {
        return Outcome::KnownFailure;
    }
    match config.install(&bytes) {
        Ok(generation) => Outcome::Reloaded(generation),
        Err(e) => Outcome::Failed(content, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_bare_file_name_is_the_current_directory() {
        assert_eq!(directories(Path::new("app.json"))[0], PathBuf::from("."));
        assert_eq!(
            directories(Path::new("/nonexistent/dir/app.json")),
            vec![PathBuf::from("/nonexistent/dir")]
        );
    }

    #[test]
    fn the_watcher_is_send_sync_and_its_futures_are_send() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<ConfigWatcher>();
        let mut watcher = ConfigWatcher::new(Config::default());
        send(&watcher.start());
        send(&watcher.stop());
    }

    #[tokio::test]
    async fn start_without_a_file_is_an_error_and_stop_is_always_fine() {
        let mut watcher = ConfigWatcher::new(Config::default());
        let err = watcher.start().await.unwrap_err();
        assert!(matches!(err, Error::NoFile));
        assert!(err.to_string().contains("not loaded from a file"), "{err}");
        assert!(!watcher.is_running());
        watcher.stop().await.unwrap();
    }
}
