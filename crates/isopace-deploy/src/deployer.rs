//! The deployer: a component that keeps the host in sync with a descriptor directory,
//! reacting to file events and rescanning periodically as a safety net.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use isopace_host::{BoxError, Component, Env, Host, WeakHost, async_trait};
use isopace_observe::{Counter, Histogram, attr};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};

use crate::{
    Registry,
    error::Error,
    scan::{Environment, FileStatus, InProgress, ScanReport, ScanState, is_descriptor_name},
};

/// The default period of the safety-net rescan.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// How long the deployer waits for a write that is still going on before it rescans anyway.
///
/// Events that mark a complete file — a close after writing, a rename into the directory
/// (an editor's or `kubectl`'s atomic save), the Kubernetes `..data` symlink swap, a removal
/// — rescan at once, with no fixed delay. Only a write still in progress waits: the file is
/// not read until its writer closes it, or until it has been quiet for [`WRITE_SETTLE`].
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// A file written to without being closed is left alone (kept as it was) for this long after
/// its last write, so a half-written file is neither deployed nor reported as broken.
///
/// While file events are followed, a file modified within this time that reads as JSON cut
/// short (or empty) is taken for a rewrite whose events have not arrived yet: it is kept as
/// it was and read again once it has settled, and reported then if it still is cut short.
pub const WRITE_SETTLE: Duration = Duration::from_secs(2);

/// Builds a [`Deployer`]; see [`Deployer::builder`].
#[must_use = "call build() to get the deployer"]
pub struct DeployerBuilder {
    host: WeakHost,
    registry: Arc<Registry>,
    dir: PathBuf,
    scan_interval: Duration,
    debounce: Duration,
    watch: bool,
    env: Environment,
}

impl DeployerBuilder {
    /// How often to rescan the directory (default [`DEFAULT_SCAN_INTERVAL`], 5 s). With file
    /// events on, this is a safety net; without them, it is how changes are found.
    pub fn scan_interval(mut self, interval: Duration) -> Self {
        self.scan_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a write still in progress may go on before the directory is rescanned anyway
    /// (default [`DEFAULT_DEBOUNCE`], 50 ms). Complete changes (a close after writing, a
    /// rename, a removal) rescan at once whatever this is.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Whether to watch the directory for file events (default true). Off, the deployer
    /// polls on the scan interval, which suits filesystems without events.
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Where `${VAR}` values come from (default: the process environment). Tests inject
    /// a fixed set.
    pub fn environment<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.env = Arc::new(move |name: &str| vars.get(name).cloned());
        self
    }

    /// Builds the deployer.
    pub fn build(self) -> Deployer {
        let observer = self.host.upgrade().map(|h| Arc::clone(h.env().observer()));
        let metrics = observer
            .as_deref()
            .map(Metrics::new)
            .unwrap_or_else(|| Metrics::new(&isopace_observe::NopObserver));
        let (initial, _) = watch::channel(false);
        Deployer {
            shared: Arc::new(Shared {
                host: self.host,
                registry: self.registry,
                dir: self.dir,
                env: self.env,
                scan_interval: self.scan_interval,
                debounce: self.debounce,
                watch: self.watch,
                state: Arc::new(tokio::sync::Mutex::new(ScanState::default())),
                statuses: parking_lot::RwLock::new(Vec::new()),
                scan_error: parking_lot::RwLock::new(None),
                rescan: Notify::new(),
                initial,
                metrics,
                writing: Arc::default(),
            }),
            running: None,
        }
    }
}

/// Turns a directory of descriptor files into running components on a host, and keeps them
/// in sync as the files change.
///
/// It is itself a [`Component`] named `"deployer"`: register it with the host it deploys to.
/// Its start only launches its loop; the first scan runs on the loop, after start returns,
/// so it never re-enters the host. While running it acts at once on an event that marks a
/// complete file (a close after writing, a rename into the directory, a symlink swap),
/// within the debounce time on others, and rescans on an interval as a safety net.
/// Stopping it ends the loop; the components it deployed belong to the host, which stops
/// them.
///
/// [`scan`](Deployer::scan) reconciles once and is what the loop calls; tests call it
/// directly. A [`DeployerHandle`] does the same from elsewhere (an admin endpoint, a SIGHUP
/// handler) once the deployer itself is owned by the host.
pub struct Deployer {
    shared: Arc<Shared>,
    running: Option<Running>,
}

/// A cheap, cloneable handle to a [`Deployer`]: scan, status, readiness.
#[derive(Clone)]
pub struct DeployerHandle {
    shared: Arc<Shared>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    host: WeakHost,
    registry: Arc<Registry>,
    dir: PathBuf,
    env: Environment,
    scan_interval: Duration,
    debounce: Duration,
    watch: bool,
    /// Serialises scans.
    state: Arc<tokio::sync::Mutex<ScanState>>,
    /// A copy of the file statuses, readable while a scan runs.
    statuses: parking_lot::RwLock<Vec<FileStatus>>,
    /// Why the last scan failed, until one succeeds.
    scan_error: parking_lot::RwLock<Option<Arc<Error>>>,
    rescan: Notify,
    initial: watch::Sender<bool>,
    metrics: Metrics,
    /// Files being written (by name), as file events report them.
    writing: Arc<Writing>,
}

/// The files in the directory a writer has open, by name, with the time of the last write;
/// and whether a wake is pending.
#[derive(Debug, Default)]
struct Writing {
    /// A wake for a complete change is on its way to the loop and not yet taken: events
    /// that come with it (a burst of removals) need no wake of their own.
    now_pending: AtomicBool,
    /// File events are being followed (the loop runs with a watch in place), so a write
    /// in progress shows up as events.
    followed: AtomicBool,
    /// When each was last written to, on the runtime's clock (which the loop sleeps on).
    files: parking_lot::Mutex<HashMap<OsString, tokio::time::Instant>>,
    /// Counts writes finished (closes, renames, removals), so a scan knows whether one came
    /// while it ran.
    closes: std::sync::atomic::AtomicU64,
}

impl Writing {
    fn started(&self, name: OsString) {
        self.files.lock().insert(name, tokio::time::Instant::now());
    }

    fn finished(&self, name: &std::ffi::OsStr) {
        self.files.lock().remove(name);
        self.closes.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets everything a loop that is gone knew (a deployer stopped and started again).
    fn reset(&self) {
        self.now_pending.store(false, Ordering::Release);
        self.followed.store(false, Ordering::Release);
        self.files.lock().clear();
    }

    /// The names still being written, forgetting writers quiet for [`WRITE_SETTLE`].
    fn in_progress(&self) -> HashSet<OsString> {
        let mut files = self.files.lock();
        files.retain(|_, at| at.elapsed() < WRITE_SETTLE);
        files.keys().cloned().collect()
    }

    /// What a scan should know of writes in progress.
    fn snapshot(&self) -> InProgress {
        InProgress {
            names: self.in_progress(),
            recent: self
                .followed
                .load(Ordering::Acquire)
                .then_some(WRITE_SETTLE),
        }
    }

    /// When the longest-quiet write in progress will have settled, if there is one: a
    /// file nobody closes (a hard link, a writer that died) is read then, not at the next
    /// interval.
    fn next_settle(&self) -> Option<tokio::time::Instant> {
        let mut files = self.files.lock();
        files.retain(|_, at| at.elapsed() < WRITE_SETTLE);
        files.values().min().map(|at| *at + WRITE_SETTLE)
    }
}

/// What a file event asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A complete change: rescan at once.
    Now,
    /// A write in progress: rescan once it settles.
    Settle,
}

#[derive(Debug)]
struct Metrics {
    scans: Counter,
    scan_errors: Counter,
    scan_seconds: Histogram,
    deployed: Counter,
    redeployed: Counter,
    undeployed: Counter,
    rolled_back: Counter,
    failures: Counter,
}

impl Metrics {
    fn new(observer: &dyn isopace_observe::Observer) -> Metrics {
        for (name, help) in [
            (
                "isopace_deployer_scans_total",
                "Scans of the deploy directory, failed ones included.",
            ),
            (
                "isopace_deployer_scan_errors_total",
                "Scans that could not read the deploy directory.",
            ),
            (
                "isopace_deployer_scan_duration_seconds",
                "How long scans of the deploy directory took, in seconds.",
            ),
            (
                "isopace_deployer_deploys_total",
                "Components deployed for the first time, by component.",
            ),
            (
                "isopace_deployer_redeploys_total",
                "Components replaced by a new version of their descriptor, by component.",
            ),
            (
                "isopace_deployer_undeploys_total",
                "Components undeployed, by component.",
            ),
            (
                "isopace_deployer_rollbacks_total",
                "New versions that failed to start, the previous one started again, by component.",
            ),
            (
                "isopace_deployer_failures_total",
                "Problems found in descriptor files, once per file content, by file.",
            ),
        ] {
            observer.describe(name, help);
        }
        Metrics {
            scans: observer.counter("isopace_deployer_scans_total"),
            scan_errors: observer.counter("isopace_deployer_scan_errors_total"),
            scan_seconds: observer.histogram("isopace_deployer_scan_duration_seconds"),
            deployed: observer.counter("isopace_deployer_deploys_total"),
            redeployed: observer.counter("isopace_deployer_redeploys_total"),
            undeployed: observer.counter("isopace_deployer_undeploys_total"),
            rolled_back: observer.counter("isopace_deployer_rollbacks_total"),
            failures: observer.counter("isopace_deployer_failures_total"),
        }
    }
}

impl Deployer {
    /// A builder for a deployer of the descriptors in `dir` onto `host`, built by
    /// `registry`'s factories. The deployer keeps only a weak reference to the host.
    pub fn builder(
        host: &Host,
        registry: Arc<Registry>,
        dir: impl Into<PathBuf>,
    ) -> DeployerBuilder {
        DeployerBuilder {
            host: host.downgrade(),
            registry,
            dir: dir.into(),
            scan_interval: DEFAULT_SCAN_INTERVAL,
            debounce: DEFAULT_DEBOUNCE,
            watch: true,
            env: Arc::new(|name: &str| std::env::var(name).ok()),
        }
    }

    /// A handle that scans and reports status while the host owns the deployer.
    pub fn handle(&self) -> DeployerHandle {
        DeployerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Reconciles the directory with the host once; see [`DeployerHandle::scan`].
    pub async fn scan(&self) -> Result<ScanReport, Error> {
        self.shared.scan().await
    }

    /// The status of every descriptor file, as of the last scan; see
    /// [`DeployerHandle::status`].
    pub fn status(&self) -> Vec<FileStatus> {
        self.shared.statuses.read().clone()
    }
}

impl DeployerHandle {
    /// Reconciles the directory with the host once and reports what changed.
    ///
    /// Files are applied in lexical order of their names; hidden files and subdirectories
    /// are skipped and symlinks followed. A missing or unreadable directory is an error that
    /// undeploys nothing. A failing file is reported in the first scan that sees its content
    /// and not again until it changes.
    pub async fn scan(&self) -> Result<ScanReport, Error> {
        self.shared.scan().await
    }

    /// The status of every descriptor file, as of the last scan, in file order.
    pub fn status(&self) -> Vec<FileStatus> {
        self.shared.statuses.read().clone()
    }

    /// Why the last scan failed, while scans fail: the descriptor directory is missing or
    /// cannot be listed (the file statuses then are those of the last scan that worked).
    /// `None` once a scan succeeds.
    pub fn scan_error(&self) -> Option<Arc<Error>> {
        self.shared.scan_error.read().clone()
    }

    /// Asks the running loop to rescan now (as on SIGHUP).
    pub fn trigger(&self) {
        self.shared.rescan.notify_one();
    }

    /// Whether the first scan after start has finished.
    pub fn initial_scan_done(&self) -> bool {
        *self.shared.initial.borrow()
    }

    /// Waits until the first scan after start has finished.
    pub async fn wait_initial_scan(&self) {
        let mut rx = self.shared.initial.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// The descriptor directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Shared {
    async fn scan(&self) -> Result<ScanReport, Error> {
        let host = self.host.upgrade().ok_or(Error::HostGone)?;
        let began = Instant::now();
        let closes = self.writing.closes.load(Ordering::Acquire);
        let result = ScanState::scan(
            Arc::clone(&self.state),
            &host,
            &self.registry,
            &self.dir,
            &self.env,
            || self.writing.snapshot(),
        )
        .await
        .map(|scanned| {
            if let Some(statuses) = scanned.statuses {
                *self.statuses.write() = statuses;
            }
            // Taken for writes whose events are on their way: read again once they settle.
            // A write finished meanwhile has woken the loop for a scan of its own, which
            // must not skip the file as still being written.
            if self.writing.closes.load(Ordering::Acquire) == closes {
                for name in scanned.deferred {
                    self.writing.started(name);
                }
            }
            scanned.report
        });
        self.metrics.scans.add(1, &[]);
        self.metrics
            .scan_seconds
            .observe(began.elapsed().as_secs_f64(), &[]);
        *self.scan_error.write() = result.as_ref().err().map(|e| Arc::new(e.snapshot()));
        match &result {
            Ok(report) => self.record(report),
            Err(e) => {
                self.metrics.scan_errors.add(1, &[]);
                tracing::error!(dir = %self.dir.display(), error = %isopace_host::error_chain(e), "scan failed");
            }
        }
        result
    }

    fn record(&self, report: &ScanReport) {
        let m = &self.metrics;
        for (names, counter, what) in [
            (&report.deployed, &m.deployed, "deployed"),
            (&report.redeployed, &m.redeployed, "redeployed"),
            (&report.undeployed, &m.undeployed, "undeployed"),
            (&report.rolled_back, &m.rolled_back, "rolled back"),
        ] {
            for name in names {
                counter.add(1, &[attr("component", name.as_str())]);
                tracing::info!(component = name.as_str(), "{what}");
            }
        }
        for failure in &report.failures {
            m.failures
                .add(1, &[attr("file", failure.file().display().to_string())]);
        }
    }

    /// The loop: scan at once, then on file events, on a trigger, and on the interval, until
    /// told to stop. A complete change rescans at once; bursts coalesce, since the events
    /// that arrive during a scan become one more scan.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // What an earlier loop knew is stale (a pending wake it never took would silence
        // the events); this loop's goes with it, however it ends (it may be aborted), after
        // its watcher.
        self.writing.reset();
        let _reset = ResetOnDrop(Arc::clone(&self.writing));
        let (events, mut event_rx) = mpsc::channel::<Wake>(64);
        let mut watcher = self
            .watch
            .then(|| DirWatcher::new(&self.dir, events.clone(), Arc::clone(&self.writing)));
        // Ready means "the first scan ran", even when it failed: the failure is logged and
        // reported, and the next scan retries.
        let alive = self.scan_logged().await;
        self.initial.send_replace(true);
        if !alive {
            return;
        }
        let mut interval = tokio::time::interval(self.scan_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.reset();
        loop {
            let settled = self.writing.next_settle();
            tokio::select! {
                _ = stop.changed() => break,
                // A write nobody closed has settled: read it now.
                () = tokio::time::sleep_until(settled.unwrap_or_else(tokio::time::Instant::now)), if settled.is_some() => {}
                _ = interval.tick() => {
                    if let Some(w) = &mut watcher {
                        w.refresh(&self.dir, &events, &self.writing);
                    }
                }
                _ = self.rescan.notified() => {}
                Some(wake) = event_rx.recv() => {
                    let mut now = wake == Wake::Now;
                    while let Ok(wake) = event_rx.try_recv() {
                        now |= wake == Wake::Now;
                    }
                    if !now {
                        // Only writes in progress: wait for their close, or let them settle.
                        let mut until = tokio::time::Instant::now() + self.debounce;
                        if let Some(settled) = self.writing.next_settle() {
                            until = until.min(settled);
                        }
                        let settle = tokio::time::sleep_until(until);
                        tokio::pin!(settle);
                        loop {
                            tokio::select! {
                                () = &mut settle => break,
                                Some(wake) = event_rx.recv() => {
                                    if wake == Wake::Now {
                                        break;
                                    }
                                }
                            }
                        }
                        while event_rx.try_recv().is_ok() {}
                    }
                }
            }
            // The scan sees every change made so far; one made from here on needs a wake,
            // and so a scan, of its own.
            self.writing.now_pending.store(false, Ordering::Release);
            if !self.scan_logged().await {
                break;
            }
        }
        drop(watcher);
    }

    /// Scans; a failure is logged by `scan` and retried by the next one. False once the
    /// host is gone, when there is nothing left to scan for.
    async fn scan_logged(&self) -> bool {
        !matches!(self.scan().await, Err(Error::HostGone))
    }
}

/// Resets [`Writing`] when the loop that filled it ends.
struct ResetOnDrop(Arc<Writing>);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        self.0.reset();
    }
}

/// A file-event watcher on the descriptor directory, re-created when the directory itself
/// is replaced (deleted and made again), which an inotify watch does not survive.
struct DirWatcher {
    inner: Option<(notify::RecommendedWatcher, Option<(u64, u64)>)>,
}

/// What an event means for the files it names: a write going on, a complete change, or
/// nothing (a read).
fn classify(event: &notify::Event, dir: &Path, writing: &Writing) -> Option<Wake> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    // Descriptor names only: an editor's or `kubectl`'s temporary file, and a Kubernetes
    // version directory or `..data_tmp` link, wake nothing while they are written; the
    // rename that completes them does. So one save or swap is one scan.
    let names = || {
        event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .filter(|n| is_descriptor_name(n))
    };
    // A descriptor, the directory itself, or the Kubernetes `..data` link.
    let relevant = || {
        event.paths.iter().any(|p| {
            p == dir
                || p.file_name()
                    .is_some_and(|n| n == "..data" || is_descriptor_name(n))
        })
    };
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
            let mut any = false;
            names().for_each(|n| {
                writing.finished(n);
                any = true;
            });
            any.then_some(Wake::Now)
        }
        EventKind::Access(_) => None,
        // A new regular file is being written until it is closed; a symlink, a directory
        // or a hard link to a file that exists already is complete as it appears.
        EventKind::Create(CreateKind::File | CreateKind::Any | CreateKind::Folder) => {
            let mut wake = None;
            for path in &event.paths {
                let Some(name) = path.file_name().filter(|n| is_descriptor_name(n)) else {
                    continue;
                };
                if being_created(path) {
                    writing.started(name.to_owned());
                    wake = wake.or(Some(Wake::Settle));
                } else {
                    wake = Some(Wake::Now);
                }
            }
            wake
        }
        EventKind::Modify(ModifyKind::Data(_)) => {
            let mut any = false;
            names().for_each(|n| {
                writing.started(n.to_owned());
                any = true;
            });
            any.then_some(Wake::Settle)
        }
        // inotify reports a rename as its two halves (`From`, `To`) and then again whole:
        // the halves are enough, and a wake for the whole one could come after the scan
        // the halves started, for a second scan that finds nothing new.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        // A rename or removal of a descriptor, of the directory itself, or of the
        // Kubernetes `..data` link; not of a temporary file.
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
            names().for_each(|n| writing.finished(n));
            relevant().then_some(Wake::Now)
        }
        // A change of attributes (the kubelet's `chmod` of a new version directory) or of
        // an unknown kind: only for the names that matter.
        EventKind::Modify(_) | EventKind::Create(_) => relevant().then_some(Wake::Now),
        _ => Some(Wake::Now),
    }
}

/// Whether `path` is a regular file with one link: one a writer has just created and may
/// still be writing. A hard link (two or more) names a file that was written elsewhere.
fn being_created(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.nlink() == 1)
    }
    #[cfg(not(unix))]
    {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
    }
}

impl DirWatcher {
    fn new(dir: &Path, events: mpsc::Sender<Wake>, writing: Arc<Writing>) -> Self {
        let mut w = DirWatcher { inner: None };
        w.refresh(dir, &events, &writing);
        w
    }

    /// (Re)creates the watch when there is none or the directory is a new one.
    fn refresh(&mut self, dir: &Path, events: &mpsc::Sender<Wake>, writing: &Arc<Writing>) {
        let identity = dir_identity(dir);
        if let Some((_, watched)) = &self.inner
            && *watched == identity
        {
            return;
        }
        self.inner = None;
        writing.followed.store(false, Ordering::Release);
        if identity.is_none() {
            return;
        }
        use notify::Watcher as _;
        let (tx, files, watched) = (events.clone(), Arc::clone(writing), dir.to_path_buf());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let wake = match &event {
                Ok(e) => classify(e, &watched, &files),
                // An error (such as an event-queue overflow) means events were lost.
                Err(_) => Some(Wake::Now),
            };
            if wake == Some(Wake::Now) && files.now_pending.swap(true, Ordering::AcqRel) {
                return;
            }
            if let Some(wake) = wake {
                // A full channel already holds pending rescans, which will see this change.
                let _ = tx.try_send(wake);
            }
        });
        match watcher.and_then(|mut w| {
            w.watch(dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        }) {
            Ok(w) => {
                self.inner = Some((w, identity));
                writing.followed.store(true, Ordering::Release);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %isopace_host::error_chain(&e),
                "cannot watch the descriptor directory; polling on the scan interval instead"
            ),
        }
    }
}

fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(dir).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some((0, 0))
    }
}

#[async_trait]
impl Component for Deployer {
    fn name(&self) -> &str {
        "deployer"
    }

    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        if self.running.is_some() {
            return Err(Box::new(Error::AlreadyStarted));
        }
        self.shared.initial.send_replace(false);
        let (stop, stop_rx) = watch::channel(false);
        // The first scan happens on the loop, after this start returns: scanning here would
        // re-enter the host, which is still starting this component.
        let task = tokio::spawn(Arc::clone(&self.shared).run(stop_rx));
        self.running = Some(Running { stop, task });
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        if let Some(Running { stop, task }) = self.running.take() {
            let _ = stop.send(true);
            // The loop may be mid-scan, waiting for the host's lifecycle lock that this very
            // stop holds; abort rather than wait for it.
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }
}

impl fmt::Debug for Deployer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deployer")
            .field("dir", &self.shared.dir)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl fmt::Debug for DeployerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployerHandle")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

impl fmt::Debug for DeployerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployerBuilder")
            .field("dir", &self.dir)
            .field("scan_interval", &self.scan_interval)
            .field("debounce", &self.debounce)
            .field("watch", &self.watch)
            .finish()
    }
}
