//! What built-in and custom component types can reach once `run` has built the host: the
//! host, the deployer and the metrics registry.

use std::sync::{Arc, OnceLock};

use isopace_deploy::DeployerHandle;
use isopace_host::WeakHost;
use isopace_observe::MetricsRegistry;

/// The running daemon's shared parts, as a factory sees them.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The host (weak, so a component holding it does not keep the host alive).
    pub host: WeakHost,
    /// The deployer: file statuses, readiness, rescans.
    pub deployer: DeployerHandle,
    /// The metrics registry behind `/metrics`.
    pub metrics: MetricsRegistry,
}

/// A handle that factories capture when they are registered, before `run` has built the
/// host; [`RuntimeHandle::get`] returns the [`Runtime`] once it has.
///
/// Factories run only when the deployer builds components, which is after `run` filled the
/// handle, so inside a factory `get()` returns `Some`. `validate` and `types` build nothing
/// and never fill it.
#[derive(Debug, Clone, Default)]
pub struct RuntimeHandle {
    slot: Arc<OnceLock<Runtime>>,
}

impl RuntimeHandle {
    /// The runtime, once `run` has built it.
    pub fn get(&self) -> Option<&Runtime> {
        self.slot.get()
    }

    pub(crate) fn set(&self, runtime: Runtime) {
        // `run` happens once per process; a second set is a programming error worth a log.
        if self.slot.set(runtime).is_err() {
            tracing::warn!("the runtime was already set; keeping the first");
        }
    }
}
