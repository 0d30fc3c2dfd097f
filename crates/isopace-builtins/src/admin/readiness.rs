//! Whether the host is ready to serve, as `/readyz` reports it, and the memory of having
//! been ready once that decides whether failing descriptor files still count.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use isopace_deploy::{DeployerHandle, FileState, FileStatus};
use isopace_host::{ComponentStatus, State, WeakHost};

/// How often [`Readiness::track`] looks again without a state change: readiness reports
/// (`Env::set_ready`) and file statuses do not mark the host changed.
const RECHECK: Duration = Duration::from_secs(1);

/// Decides readiness: the initial deploy finished and every enabled critical component is
/// running and ready ([`Host::not_ready`](isopace_host::Host::not_ready) is empty).
///
/// Until the host has been ready once, every descriptor file counts too: a file that does
/// not parse, build or start keeps it not ready, so a rollout with a broken file never
/// turns ready; so does a descriptor directory that cannot be listed. Once it has been ready, a newly broken or newly added failing file is
/// reported (file status, logs, metrics) but does not take readiness away: the version that
/// made it ready still runs. A critical component that ran and then fails does.
///
/// Clones share the memory of having been ready, so a daemon provides one as an env
/// extension and every `admin` endpoint (including one redeployed later) answers alike.
/// Being ready is remembered when [`check`](Readiness::check) sees it; [`track`](Readiness::track)
/// checks on every change until then, so it is remembered even when nobody asks.
///
/// ```
/// use isopace_builtins::admin::Readiness;
/// use isopace_host::Host;
///
/// let host = Host::builder().build();
/// let readiness = Readiness::new(host.downgrade(), None);
/// let report = readiness.check().expect("the host is alive");
/// assert!(report.ready, "no deployer and no critical component: ready");
/// assert!(readiness.has_been_ready());
/// ```
#[derive(Clone)]
pub struct Readiness {
    host: WeakHost,
    deployer: Option<DeployerHandle>,
    ready_once: Arc<AtomicBool>,
}

/// What [`Readiness::check`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadinessReport {
    /// Whether the host is ready.
    pub ready: bool,
    /// Whether the deployer's first scan finished (true without a deployer).
    pub initial_deploy_done: bool,
    /// Whether the host has been ready at least once; failing files no longer count then.
    pub has_been_ready: bool,
    /// The critical components that are not running and ready.
    pub not_ready: Vec<ComponentStatus>,
    /// Every component that is not running, critical or not.
    pub not_running: Vec<ComponentStatus>,
    /// The descriptor files that failed (whether they count depends on `has_been_ready`).
    pub failed_files: Vec<FileStatus>,
    /// Why the deployer's last scan failed, while scans fail: the descriptor directory is
    /// missing or cannot be listed (it counts like a failed file).
    pub scan_error: Option<Arc<isopace_deploy::Error>>,
}

impl Readiness {
    /// Readiness of `host`, with the file statuses of `deployer` when there is one.
    pub fn new(host: WeakHost, deployer: Option<DeployerHandle>) -> Self {
        Readiness {
            host,
            deployer,
            ready_once: Arc::default(),
        }
    }

    /// Whether the host has been ready at least once.
    pub fn has_been_ready(&self) -> bool {
        self.ready_once.load(Ordering::Acquire)
    }

    /// Decides readiness now, remembering it when ready. `None` once the host is gone.
    pub fn check(&self) -> Option<ReadinessReport> {
        let host = self.host.upgrade()?;
        let initial_deploy_done = self
            .deployer
            .as_ref()
            .is_none_or(DeployerHandle::initial_scan_done);
        let failed_files: Vec<FileStatus> = self
            .deployer
            .as_ref()
            .map(|d| {
                d.status()
                    .into_iter()
                    .filter(|f| f.state == FileState::Failed)
                    .collect()
            })
            .unwrap_or_default();
        let scan_error = self.deployer.as_ref().and_then(DeployerHandle::scan_error);
        let statuses = host.status();
        let not_ready: Vec<ComponentStatus> = statuses
            .iter()
            .filter(|s| s.blocks_readiness())
            .cloned()
            .collect();
        let not_running: Vec<ComponentStatus> = statuses
            .into_iter()
            .filter(|s| s.state != State::Running)
            .collect();
        let has_been_ready = self.has_been_ready();
        let ready = initial_deploy_done
            && not_ready.is_empty()
            && (has_been_ready || (failed_files.is_empty() && scan_error.is_none()));
        if ready && !has_been_ready {
            self.ready_once.store(true, Ordering::Release);
            tracing::info!("ready: every critical component runs and is ready");
        }
        Some(ReadinessReport {
            ready,
            initial_deploy_done,
            has_been_ready: has_been_ready || ready,
            not_ready,
            not_running,
            failed_files,
            scan_error,
        })
    }

    /// Checks on every change of the host, and every second for what does not mark it
    /// changed, until the host has been ready once or is gone.
    pub async fn track(self) {
        let Some(mut changes) = self.host.upgrade().map(|h| h.changed()) else {
            return;
        };
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.check() {
                None => return,
                Some(report) if report.has_been_ready => return,
                Some(_) => {}
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = recheck.tick() => {}
            }
        }
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("deployer", &self.deployer.is_some())
            .field("has_been_ready", &self.has_been_ready())
            .finish()
    }
}
