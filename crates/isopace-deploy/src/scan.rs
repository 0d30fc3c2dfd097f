//! One reconciliation of the descriptor directory with the host, and what it remembers
//! between scans so unchanged files cost a `stat` and failing files are reported once.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use isopace_host::{Env, Host, Supervision, error_chain};

use crate::{
    Descriptor, Registry, Severity, Stage,
    descriptor::{non_utf8_name, read_limited},
    error::{DescriptorError, Error, ErrorKind},
    subst::Lookup,
};

/// Files modified this close to when they were last read are re-read even when their
/// metadata is unchanged: timestamps are coarse, so two writes within one tick can leave
/// size and mtime equal.
const RACY_WINDOW: Duration = Duration::from_secs(1);

/// What one scan did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ScanReport {
    /// Components deployed for the first time.
    pub deployed: Vec<String>,
    /// Components replaced by a new version of their descriptor.
    pub redeployed: Vec<String>,
    /// Components undeployed (file removed or disabled, name changed or taken by an
    /// earlier file).
    pub undeployed: Vec<String>,
    /// Components whose descriptor did not change.
    pub unchanged: Vec<String>,
    /// Components whose new version failed to start and whose previous version was
    /// started again.
    pub rolled_back: Vec<String>,
    /// Problems found in this scan, each reported once per file content.
    pub failures: Vec<DescriptorError>,
}

impl ScanReport {
    /// Whether the scan changed nothing and found no new problem.
    pub fn is_quiet(&self) -> bool {
        self.deployed.is_empty()
            && self.redeployed.is_empty()
            && self.undeployed.is_empty()
            && self.rolled_back.is_empty()
            && self.failures.is_empty()
    }
}

/// The state of one descriptor file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Its component runs.
    Deployed,
    /// It says `"enabled": false`.
    Disabled,
    /// It could not be applied; see the error. A previous version may still run.
    Failed,
}

impl FileState {
    /// The state as a lowercase word, for JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Deployed => "deployed",
            FileState::Disabled => "disabled",
            FileState::Failed => "failed",
        }
    }
}

/// The status of one descriptor file, as of the last scan.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStatus {
    /// The file.
    pub file: PathBuf,
    /// The component name it declares (or, when it no longer parses, the one still running).
    pub name: Option<String>,
    /// The component type it declares.
    pub type_name: Option<String>,
    /// Its state.
    pub state: FileState,
    /// Why it failed. Print it with its causes (`isopace_host::error_chain`).
    pub error: Option<DescriptorError>,
    /// When its state last changed.
    pub applied_at: SystemTime,
}

/// What the deployer remembers of one file.
struct Record {
    path: PathBuf,
    /// The scan generation that last listed this file.
    seen: u64,
    meta: Option<Meta>,
    read_at: SystemTime,
    content: Option<Vec<u8>>,
    parsed: Result<Descriptor, DescriptorError>,
    /// The descriptor this file has running on the host.
    running: Option<Descriptor>,
    /// The last descriptor that failed to build or start, so it is not retried.
    failed: Option<(Descriptor, DescriptorError)>,
    status: Option<FileStatus>,
}

/// The metadata that tells a file changed without reading it. The inode changes when a
/// ConfigMap swaps its `..data` symlink or an editor saves through a rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
}

impl Meta {
    fn of(m: &fs::Metadata) -> Meta {
        #[cfg(unix)]
        let inode = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        };
        #[cfg(not(unix))]
        let inode = (0, 0);
        Meta {
            len: m.len(),
            modified: m.modified().ok(),
            inode,
        }
    }
}

/// Everything a scan remembers between runs.
#[derive(Default)]
pub(crate) struct ScanState {
    /// One record per listed file, keyed (and so ordered) by file name. Names that are not
    /// UTF-8 are kept as they are, so two of them never share a record.
    records: BTreeMap<OsString, Record>,
    /// Counts scans, to tell which records the last listing saw.
    generation: u64,
    /// Whether a file status changed since the statuses were last published.
    dirty: bool,
}

/// Directories with at least this many descriptors are stat'ed on several threads.
const PARALLEL_STAT_FROM: usize = 512;

/// Whether a directory entry named `name` is a descriptor: `*.json`, not hidden.
pub(crate) fn is_descriptor_name(name: &std::ffi::OsStr) -> bool {
    // Lossy replacement keeps ASCII as it is, so this tests the real name's ends.
    let shown = name.to_string_lossy();
    !shown.starts_with('.') && shown.ends_with(".json")
}

/// Lists `*.json` entries, calling `each` with the file name, its path and its metadata:
/// hidden names skipped, symlinks followed. Whatever a `*.json` name is (a directory, a FIFO,
/// a name that is not UTF-8) is listed, so it is reported rather than ignored. The order is
/// the directory's; callers that need lexical order sort or key by name.
fn list(
    dir: &Path,
    mut each: impl FnMut(OsString, PathBuf, io::Result<fs::Metadata>),
) -> Result<(), Error> {
    let directory = |source| Error::Directory {
        dir: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(directory)? {
        let entry = entry.map_err(directory)?;
        let file_name = entry.file_name();
        if !is_descriptor_name(&file_name) {
            continue;
        }
        entries.push((file_name, entry));
    }
    let metas = stat_all(&entries);
    for ((file_name, entry), meta) in entries.into_iter().zip(metas) {
        each(file_name, entry.path(), meta);
    }
    Ok(())
}

/// Each entry's metadata, following symlinks (a dangling link or a loop is that file's
/// error). A rescan of a large directory is mostly these system calls, and they run in
/// parallel well, so big directories spread them over a few threads.
fn stat_all(entries: &[(OsString, fs::DirEntry)]) -> Vec<io::Result<fs::Metadata>> {
    let stat = |(_, entry): &(OsString, fs::DirEntry)| match entry.file_type() {
        Ok(t) if !t.is_symlink() => entry.metadata(),
        _ => fs::metadata(entry.path()),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || entries.len() < PARALLEL_STAT_FROM {
        return entries.iter().map(stat).collect();
    }
    let chunk = entries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = entries
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(stat).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("stat does not panic"))
            .collect()
    })
}

/// What a scan knows of writes in progress, from file events.
#[derive(Debug, Default)]
pub(crate) struct InProgress {
    /// Files a writer has open: kept as they were.
    pub(crate) names: HashSet<OsString>,
    /// When file events are followed: a file modified this recently that reads as cut-off
    /// JSON is taken for a write whose events are still on their way, kept as it was and
    /// returned as deferred, rather than reported.
    pub(crate) recent: Option<Duration>,
}

/// Where `${VAR}` values come from.
pub(crate) type Environment = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Brings every listed file's record up to date — metadata first, content only where it
/// changed — and returns the records of files that are gone. A changed file is parsed and
/// migrated by `registry`. A file named in `writing` is being written: it is kept as it was
/// (not read, not reported), or left out while it is new; so is one that looks cut off mid-
/// write (see [`InProgress::recent`]), whose name goes in `deferred`. Blocking file I/O; run
/// it off the async threads.
fn refresh(
    state: &mut ScanState,
    registry: &Registry,
    dir: &Path,
    env: &dyn Lookup,
    writing: &InProgress,
    deferred: &mut Vec<OsString>,
) -> Result<Vec<Record>, Error> {
    state.generation += 1;
    let generation = state.generation;
    // Deferred files first seen in this scan: left out, as a new file being written is.
    let mut deferred_new = Vec::new();
    list(dir, |file_name, path, meta| {
        if writing.names.contains(&file_name) {
            if let Some(record) = state.records.get_mut(&file_name) {
                record.seen = generation;
            }
            return;
        }
        let utf8 = file_name.to_str().is_some();
        let mut new = false;
        let record = state.records.entry(file_name).or_insert_with(|| {
            new = true;
            Record {
                path: path.clone(),
                seen: generation,
                meta: None,
                read_at: SystemTime::UNIX_EPOCH,
                content: None,
                parsed: Err(DescriptorError::new(&path, ErrorKind::Io)),
                running: None,
                failed: None,
                status: None,
            }
        });
        record.seen = generation;
        match meta {
            // The same error every time, so it is reported once, however the content changes.
            _ if !utf8 => {
                record.meta = None;
                record.content = None;
                record.parsed = Err(non_utf8_name(&path));
            }
            Err(e) => {
                record.meta = None;
                record.content = None;
                record.parsed = Err(DescriptorError::io(&path, e));
            }
            Ok(m) => {
                let meta = Meta::of(&m);
                let racy = meta
                    .modified
                    .is_none_or(|t| t + RACY_WINDOW >= record.read_at);
                if record.meta != Some(meta) || racy {
                    let read_at = SystemTime::now();
                    match read_limited(&path) {
                        Err(e) => {
                            record.content = None;
                            record.parsed = Err(e);
                        }
                        Ok(bytes) => {
                            if record.content.as_deref() != Some(&bytes[..]) {
                                let parsed = registry.parse(&path, &bytes, env);
                                if parsed.is_err()
                                    && writing.recent.is_some_and(|recent| {
                                        modified_within(meta.modified, recent)
                                    })
                                    && cut_off_json(&bytes)
                                {
                                    // Read again once its writer is done; meanwhile, as it was.
                                    let name = path.file_name().unwrap_or_default().to_owned();
                                    if new {
                                        deferred_new.push(name.clone());
                                    }
                                    deferred.push(name);
                                    return;
                                }
                                record.parsed = parsed;
                                record.content = Some(bytes);
                            }
                        }
                    }
                    record.meta = Some(meta);
                    record.read_at = read_at;
                }
            }
        }
    })?;
    for name in &deferred_new {
        state.records.remove(name);
    }
    let gone: Vec<OsString> = state
        .records
        .iter()
        .filter(|(_, r)| r.seen != generation)
        .map(|(name, _)| name.clone())
        .collect();
    let removed: Vec<Record> = gone
        .iter()
        .filter_map(|name| state.records.remove(name))
        .collect();
    if !removed.is_empty() {
        state.dirty = true;
    }
    Ok(removed)
}

/// What [`ScanState::scan`] did: its report, the new file statuses when any changed, and the
/// files it took for writes in progress (see [`InProgress::recent`]).
pub(crate) struct Scanned {
    pub(crate) report: ScanReport,
    pub(crate) statuses: Option<Vec<FileStatus>>,
    pub(crate) deferred: Vec<OsString>,
}

/// Whether a file last modified at `modified` was modified within `recent` of now.
fn modified_within(modified: Option<SystemTime>, recent: Duration) -> bool {
    // A time in the future (clock skew, a file server ahead of us) is not recent: such a
    // file would otherwise be deferred for as long as the skew lasts.
    modified.is_some_and(|t| t.elapsed().is_ok_and(|age| age < recent))
}

/// Whether `bytes` is JSON that ends too soon (empty included): what a reader sees of a
/// file being rewritten in place.
fn cut_off_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err_and(|e| e.is_eof())
}

/// What a file should have running, decided before anything is applied.
enum Want {
    /// Nothing (disabled, or broken with nothing running).
    Nothing,
    /// Its freshly parsed descriptor.
    Parsed,
    /// The version already running: the file no longer parses, and the running version is
    /// kept.
    Running,
    /// Its name is declared by an earlier file.
    Duplicate(DescriptorError),
}

impl Record {
    fn wanted(&self, want: &Want) -> Option<&Descriptor> {
        match want {
            Want::Parsed => self.parsed.as_ref().ok(),
            Want::Running => self.running.as_ref(),
            Want::Nothing | Want::Duplicate(_) => None,
        }
    }
}

fn duplicate(file: &Path, name: &str, first: &Path) -> DescriptorError {
    DescriptorError::new(
        file,
        ErrorKind::DuplicateName {
            first: first.to_path_buf(),
        },
    )
    .field("name")
    .message(format!(
        "component name `{name}` is already declared by {}, which comes first and wins",
        first.display()
    ))
}

impl ScanState {
    /// Reconciles the directory with the host once. On a directory error nothing changes.
    /// Returns the report and, when any changed, the new file statuses.
    ///
    /// The state stays behind its lock throughout, and the file I/O runs on a blocking
    /// thread, so a scan abandoned at any await (the deployer stopping) loses nothing.
    pub(crate) async fn scan(
        state: Arc<tokio::sync::Mutex<ScanState>>,
        host: &Host,
        registry: &Arc<Registry>,
        dir: &Path,
        env: &Environment,
        writing: impl FnOnce() -> InProgress,
    ) -> Result<Scanned, Error> {
        let guard = state.lock_owned().await;
        // Which files are being written, as of now: a scan that waited for another one
        // must not go by what was being written when it was asked for.
        let writing = writing();
        let (types, dir, env) = (Arc::clone(registry), dir.to_path_buf(), Arc::clone(env));
        let (mut guard, listing, deferred) = tokio::task::spawn_blocking(move || {
            let mut guard = guard;
            let mut deferred = Vec::new();
            let listing = refresh(&mut guard, &types, &dir, &&*env, &writing, &mut deferred);
            (guard, listing, deferred)
        })
        .await
        .expect("reading descriptor files does not panic");
        let removed = listing?;
        let report = guard.reconcile(host, registry, removed).await;
        let statuses = std::mem::take(&mut guard.dirty).then(|| guard.statuses());
        Ok(Scanned {
            report,
            statuses,
            deferred,
        })
    }

    async fn reconcile(
        &mut self,
        host: &Host,
        registry: &Arc<Registry>,
        removed: Vec<Record>,
    ) -> ScanReport {
        let mut report = ScanReport::default();

        // Which descriptor each file should have running: the first file in lexical order
        // to declare a name wins it.
        let wants: Vec<Want> = {
            let mut claims: HashMap<&str, &Path> = HashMap::with_capacity(self.records.len());
            self.records
                .values()
                .map(|record| {
                    let want = match (&record.parsed, &record.running) {
                        (Ok(d), _) if d.enabled => Want::Parsed,
                        (Ok(_), _) | (Err(_), None) => Want::Nothing,
                        (Err(_), Some(_)) => Want::Running,
                    };
                    let Some(d) = record.wanted(&want) else {
                        return want;
                    };
                    match claims.get(d.name.as_str()) {
                        Some(first) => Want::Duplicate(duplicate(&record.path, &d.name, first)),
                        None => {
                            claims.insert(&d.name, &record.path);
                            want
                        }
                    }
                })
                .collect()
        };

        // A file renamed with its component's name kept: the new file takes the running
        // component over, so a rename is no undeploy and deploy. Its content decides the
        // rest, as for any file: unchanged, or a redeploy.
        let mut removed = removed;
        for gone in &mut removed {
            let Some(running) = &gone.running else {
                continue;
            };
            let heir = self
                .records
                .values_mut()
                .zip(&wants)
                .find(|(record, want)| {
                    matches!(want, Want::Parsed)
                        && record.running.is_none()
                        && record.parsed.as_ref().is_ok_and(|d| d.name == running.name)
                });
            if let Some((heir, _)) = heir {
                let parsed = heir.parsed.as_ref().expect("matched as parsed");
                heir.running = if running.same_as(parsed) {
                    Some(parsed.clone())
                } else {
                    gone.running.take()
                };
                gone.running = None;
            }
        }

        // Undeploy first, in reverse file order: removed files, then files whose component
        // is disabled, renamed or lost to an earlier file.
        for record in removed.iter().rev() {
            if let Some(running) = &record.running {
                undeploy(host, running, &mut report).await;
            }
        }
        for (record, want) in self.records.values_mut().rev().zip(wants.iter().rev()) {
            let keep = match (&record.running, record.wanted(want)) {
                (Some(running), Some(wanted)) => running.name == wanted.name,
                _ => false,
            };
            if !keep && let Some(running) = record.running.take() {
                undeploy(host, &running, &mut report).await;
            }
        }

        // Then deploy and redeploy in file order.
        for (record, want) in self.records.values_mut().zip(wants) {
            let problem = match want {
                // A file that no longer parses reports its own error: the duplicate is about
                // the version it kept running, which the next scan no longer considers, so
                // reporting it would report the file twice for one content.
                Want::Duplicate(e) => Some(record.parsed.as_ref().err().cloned().unwrap_or(e)),
                Want::Nothing => None,
                Want::Running => {
                    let running = record.running.as_ref().expect("wanted because it runs");
                    report.unchanged.push(running.name.clone());
                    None
                }
                Want::Parsed => match (&record.running, &record.parsed) {
                    // The common case, kept out of the async path.
                    (Some(running), Ok(want)) if running.same_as(want) => {
                        report.unchanged.push(want.name.clone());
                        None
                    }
                    _ => apply(host, registry, record, &mut report).await,
                },
            };
            let problem = problem.or_else(|| record.parsed.as_ref().err().cloned());
            self.dirty |= update_status(record, problem, &mut report);
        }
        report
    }

    fn statuses(&self) -> Vec<FileStatus> {
        self.records
            .values()
            .filter_map(|r| r.status.clone())
            .collect()
    }
}

/// Brings one file's component to its parsed descriptor; returns the problem to report,
/// if any.
async fn apply(
    host: &Host,
    registry: &Arc<Registry>,
    record: &mut Record,
    report: &mut ScanReport,
) -> Option<DescriptorError> {
    let want = record.parsed.as_ref().expect("wanted because it parsed");
    if let Some(running) = &record.running
        && running.same_as(want)
    {
        report.unchanged.push(want.name.clone());
        return None;
    }
    // A version that already failed is not retried until the file changes.
    if let Some((failed, error)) = &record.failed
        && failed.same_as(want)
    {
        return Some(error.clone());
    }
    let want = want.clone();
    let component = match registry.build(&want, host.env()) {
        Ok(component) => component,
        Err(error) => {
            // The previous version, if any, keeps running.
            record.failed = Some((want, error.clone()));
            return Some(error);
        }
    };
    let previous = record.running.take();
    if let Some(previous) = &previous
        && let Err(e) = host.retire(&previous.name).await
    {
        tracing::warn!(component = previous.name, error = %error_chain(&e), "stopping the previous version failed");
    }
    match host
        .deploy_with(component, supervision(registry, &want))
        .await
    {
        Ok(()) => {
            if previous.is_some() {
                report.redeployed.push(want.name.clone());
            } else {
                report.deployed.push(want.name.clone());
            }
            record.running = Some(want);
            record.failed = None;
            None
        }
        Err(e) => {
            // The message says what runs now; the host's error, the cause, says why.
            let message = match previous {
                None => "not deployed".to_owned(),
                Some(previous) => match rollback(host, registry, &previous).await {
                    Ok(()) => {
                        report.rolled_back.push(previous.name.clone());
                        record.running = Some(previous);
                        "not redeployed; rolled back to the previous version".to_owned()
                    }
                    Err(rollback_error) => {
                        // Nothing will take over the sockets the previous version handed over.
                        host.close_listeners(&previous.name);
                        report.undeployed.push(previous.name.clone());
                        format!(
                            "not redeployed, and rolling back to the previous version failed too \
                             ({}); neither version runs",
                            rollback_error.detail()
                        )
                    }
                },
            };
            let error = want.redact_error(
                DescriptorError::new(&want.file, ErrorKind::Start)
                    .message(message)
                    .caused_by(e),
            );
            record.failed = Some((want, error.clone()));
            Some(error)
        }
    }
}

async fn rollback(
    host: &Host,
    registry: &Arc<Registry>,
    previous: &Descriptor,
) -> Result<(), DescriptorError> {
    let component = registry.build(previous, host.env())?;
    host.deploy_with(component, supervision(registry, previous))
        .await
        .map_err(|e| {
            previous.redact_error(
                DescriptorError::new(&previous.file, ErrorKind::Start)
                    .message("the previous version did not start")
                    .caused_by(e),
            )
        })
}

/// How the host supervises a descriptor's component: its restart policy and criticality,
/// and each restart built fresh from the descriptor.
fn supervision(registry: &Arc<Registry>, descriptor: &Descriptor) -> Supervision {
    let (registry, rebuild_from) = (Arc::clone(registry), descriptor.clone());
    let supervision = Supervision::new()
        .restart(descriptor.restart)
        .critical(descriptor.critical)
        .rebuild(Arc::new(move |env: &Env| {
            registry
                .build(&rebuild_from, env)
                .map_err(|e| Box::new(e) as isopace_host::BoxError)
        }));
    match descriptor.redactor() {
        Some(redact) => supervision.redact(redact),
        None => supervision,
    }
}

async fn undeploy(host: &Host, running: &Descriptor, report: &mut ScanReport) {
    match host.undeploy(&running.name).await {
        Ok(()) => {}
        Err(isopace_host::Error::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(component = running.name, error = %error_chain(&e), "undeploy failed; the component was removed anyway");
        }
    }
    report.undeployed.push(running.name.clone());
}

/// Records the file's new status and reports a problem the first time it is seen; returns
/// whether the status changed.
fn update_status(
    record: &mut Record,
    problem: Option<DescriptorError>,
    report: &mut ScanReport,
) -> bool {
    let parsed = record.parsed.as_ref().ok();
    let (state, error) = match &problem {
        Some(e) => (FileState::Failed, Some(e.clone())),
        None if parsed.is_some_and(|d| !d.enabled) => (FileState::Disabled, None),
        None => (FileState::Deployed, None),
    };
    let described = parsed.or(record.running.as_ref());
    let name = described.map(|d| d.name.as_str());
    let changed = record
        .status
        .as_ref()
        .is_none_or(|s| s.state != state || s.error != error || s.name.as_deref() != name);
    if changed {
        let name = name.map(str::to_owned);
        let type_name = described.map(|d| d.type_name.clone());
        if let Some(problem) = problem {
            tracing::error!(file = %record.path.display(), error = %error_chain(&problem), "descriptor failed");
            report.failures.push(problem);
        }
        record.status = Some(FileStatus {
            file: record.path.clone(),
            name,
            type_name,
            state,
            error,
            applied_at: SystemTime::now(),
        });
    }
    changed
}

/// Checks a directory the way a scan would, building and starting nothing: every problem
/// `run` would hit, in file order, including the errors of the types' [preflight
/// checks](Registry::register_preflight). [`validate_dir_with`] also returns their
/// warnings, and can leave them out.
pub fn validate_dir(
    dir: &Path,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<DescriptorError>, Error> {
    validate_dir_with(dir, registry, env, &ValidateOptions::new()).map(|v| v.problems)
}

/// How [`validate_dir_with`] checks a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ValidateOptions {
    preflight: bool,
}

impl ValidateOptions {
    /// Everything on: the descriptors' shape and the types' preflight checks.
    pub fn new() -> Self {
        ValidateOptions { preflight: true }
    }

    /// Whether the types' [preflight checks](Registry::register_preflight) run (default
    /// yes). Without them, only the descriptors themselves are checked, not the machine
    /// they would run on: for a CI pipeline that validates descriptors without the programs
    /// they name.
    pub fn preflight(mut self, on: bool) -> Self {
        self.preflight = on;
        self
    }
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions::new()
    }
}

/// What [`validate_dir_with`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Validation {
    /// What `run` would reject, in file order: the directory is invalid unless it is empty.
    pub problems: Vec<DescriptorError>,
    /// What may not work here and now ([`Severity::Warning`](crate::Severity::Warning)
    /// findings of the preflight checks, such as an address in use) and deprecated fields
    /// ([`ErrorKind::Deprecated`]), in file order.
    pub warnings: Vec<DescriptorError>,
}

impl Validation {
    /// Whether there is no problem (warnings aside).
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// [`validate_dir`], with `options`, keeping the warnings apart from the problems.
///
/// A file's preflight checks run once it passed every other check; each of their errors is
/// a problem, each warning a warning.
pub fn validate_dir_with(
    dir: &Path,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
    options: &ValidateOptions,
) -> Result<Validation, Error> {
    let mut listed = BTreeMap::new();
    list(dir, |file_name, path, meta| {
        listed.insert(file_name, (path, meta));
    })?;
    let mut found = Validation::default();
    let mut claims: HashMap<String, PathBuf> = HashMap::new();
    for (file_name, (path, meta)) in listed {
        let parsed = match meta {
            _ if file_name.to_str().is_none() => Err(non_utf8_name(&path)),
            Err(e) => Err(DescriptorError::io(&path, e)),
            Ok(_) => read_limited(&path)
                .and_then(|bytes| registry.parse_for_validation(&path, &bytes, &env)),
        };
        let descriptor = match parsed {
            Ok((d, deprecations)) => {
                found.warnings.extend(deprecations);
                d
            }
            Err(e) => {
                found.problems.push(e);
                continue;
            }
        };
        if !descriptor.enabled {
            continue;
        }
        if let Some(first) = claims.get(&descriptor.name) {
            found
                .problems
                .push(duplicate(&path, &descriptor.name, first));
            continue;
        }
        claims.insert(descriptor.name.clone(), path.clone());
        let checked = registry
            .check(&descriptor)
            .and_then(|()| match options.preflight {
                true => registry.preflight(&descriptor, Stage::Validate),
                false => Ok(Vec::new()),
            });
        match checked {
            Err(e) => found.problems.push(e),
            Ok(findings) => {
                for finding in findings {
                    match finding.kind() {
                        ErrorKind::Preflight(Severity::Warning) => found.warnings.push(finding),
                        _ => found.problems.push(finding),
                    }
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn every_json_name_is_listed_whatever_it_is() {
        use std::os::unix::ffi::OsStrExt;

        let dir = tempfile::tempdir().unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"b\xff.json");
        for name in ["a.json", ".hidden.json", "notes.txt"] {
            fs::write(dir.path().join(name), "{}").unwrap();
        }
        fs::write(dir.path().join(odd), "{}").unwrap();
        fs::create_dir(dir.path().join("c.json")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();

        let mut listed = Vec::new();
        list(dir.path(), |name, path, meta| {
            assert_eq!(path, dir.path().join(&name));
            listed.push((name, meta.unwrap().is_dir()));
        })
        .unwrap();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("a.json".into(), false),
                (odd.to_owned(), false),
                ("c.json".into(), true)
            ]
        );
    }
}
