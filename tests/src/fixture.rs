//! The fixture most tests start from: a running host, a deployer on a fresh descriptor
//! directory with the probe type, a config file, and the metrics the host reports.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use isopace_config::{Config, LoadOptions};
use isopace_deploy::{Deployer, FileStatus, ScanReport};
use isopace_host::{Host, State};
use isopace_observe::MetricsRegistry;

use isopace_testkit::{Lifecycle, probe_registry, write_atomically};

/// A variable of the fixture's environment that stands for a secret.
pub const SECRET_VAR: &str = "PROBE_SECRET";
/// Its value, which no error, status or log line may show.
pub const SECRET_VALUE: &str = "s3cr3t-Value-444";

/// How to build a [`Fixture`].
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// The host's bound on one start (default 2 s; tests with hanging starts use paused
    /// time, so the bound costs no real time).
    pub start_timeout: Duration,
    /// The host's bound on one stop (default 2 s).
    pub stop_timeout: Duration,
    /// The variables `${VAR}` substitution sees (default: `PROBE_TAG=from-env` only, so
    /// tests never depend on the process environment).
    pub environment: Vec<(String, String)>,
    /// Whether the host reports to a [`MetricsRegistry`] (default true). Long runs turn it
    /// off so per-component series do not count as growth.
    pub metrics: bool,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            start_timeout: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(2),
            environment: vec![
                ("PROBE_TAG".to_owned(), "from-env".to_owned()),
                (SECRET_VAR.to_owned(), SECRET_VALUE.to_owned()),
            ],
            metrics: true,
        }
    }
}

/// The initial content of the fixture's config file.
pub const FIXTURE_CONFIG: &str = r#"{"limits": {"connections": 64}, "greeting": "hello"}"#;

/// A started host with a deployer on `<tempdir>/deploy`, registered probe type, config file
/// `<tempdir>/app.json` loaded into the host, and a metrics registry as the host's observer.
///
/// The deployer's loop is not started: tests call [`scan`](Fixture::scan) themselves, so
/// every step is deterministic.
pub struct Fixture {
    root: tempfile::TempDir,
    dir: PathBuf,
    config_file: PathBuf,
    host: Host,
    lifecycle: Lifecycle,
    deployer: Deployer,
    metrics: MetricsRegistry,
}

impl Fixture {
    /// A fixture with the default options.
    pub async fn new() -> Fixture {
        Fixture::with_options(FixtureOptions::default()).await
    }

    /// A fixture with `options`.
    pub async fn with_options(options: FixtureOptions) -> Fixture {
        let root = tempfile::tempdir().expect("a temporary directory");
        let dir = root.path().join("deploy");
        fs::create_dir(&dir).expect("the descriptor directory");
        let config_file = root.path().join("app.json");
        fs::write(&config_file, FIXTURE_CONFIG).expect("the config file");
        let config = Config::load(&config_file, LoadOptions::new().environ(Vec::new()))
            .expect("the fixture's config parses");
        let metrics = MetricsRegistry::new();
        let mut host = Host::builder()
            .config(config)
            .start_timeout(options.start_timeout)
            .stop_timeout(options.stop_timeout);
        if options.metrics {
            host = host.observer(Arc::new(metrics.clone()));
        }
        let host = host.build();
        host.start().await.expect("an empty host starts");
        let lifecycle = Lifecycle::new();
        let deployer = Deployer::builder(&host, probe_registry(&lifecycle), &dir)
            .environment(options.environment)
            .watch(false)
            .build();
        Fixture {
            root,
            dir,
            config_file,
            host,
            lifecycle,
            deployer,
            metrics,
        }
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// What the probes did.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The deployer (its loop is not running).
    pub fn deployer(&self) -> &Deployer {
        &self.deployer
    }

    /// The metrics the host and the deployer report (empty when the options turned them off).
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// The temporary directory holding the descriptor directory and the config file.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The descriptor directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config file the host's config was loaded from.
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The path of `file` in the descriptor directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `file` through a hidden temporary file and a rename, as editors and
    /// `kubectl cp` do.
    pub fn write(&self, file: &str, contents: impl AsRef<[u8]>) {
        write_atomically(self.path(file), contents);
    }

    /// Overwrites `file` in place (truncate, then write), as `echo > file` does.
    pub fn write_in_place(&self, file: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(file);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Removes `file`.
    pub fn remove(&self, file: &str) {
        let path = self.path(file);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// Scans once; a scan error fails the test.
    pub async fn scan(&self) -> ScanReport {
        self.deployer
            .scan()
            .await
            .unwrap_or_else(|e| panic!("scan failed: {}", isopace_host::error_chain(&e)))
    }

    /// The deployer's status of `file`, as of the last scan.
    pub fn file_status(&self, file: &str) -> Option<FileStatus> {
        let path = self.path(file);
        self.deployer.status().into_iter().find(|s| s.file == path)
    }

    /// The host's state of `component`.
    pub fn state_of(&self, component: &str) -> Option<State> {
        self.host.status_of(component).map(|s| s.state)
    }

    /// Fails the test unless `component` runs on the host with the version tagged `tag`.
    #[track_caller]
    pub fn assert_running(&self, component: &str, tag: &str) {
        assert_eq!(
            self.state_of(component),
            Some(State::Running),
            "`{component}` should be running: {:?}",
            self.host.status()
        );
        assert_eq!(
            self.lifecycle.running_tag(component).as_deref(),
            Some(tag),
            "`{component}` should run version `{tag}`"
        );
    }
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("dir", &self.dir)
            .field("host", &self.host)
            .field("deployer", &self.deployer)
            .finish()
    }
}
