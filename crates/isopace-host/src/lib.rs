//! The isopace lifecycle core: components started in order, stopped in reverse, deployed and
//! undeployed while running.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod call;
mod component;
mod env;
mod error;
mod extensions;
mod host;
mod instance;
mod listen;
mod status;
mod supervise;
mod watcher;

pub use async_trait::async_trait;
pub use component::{BoxError, Component};
pub use env::Env;
pub use error::{ComponentError, Error, Failure, Phase};
pub use extensions::Extensions;
pub use host::{
    DEFAULT_RESTART_JITTER, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT,
    Host, HostBuilder, WeakHost,
};
/// An error and its sources joined with ": " (re-exported from `isopace-observe`).
pub use isopace_observe::error_chain;
pub use listen::{DEFAULT_BACKLOG, ListenAddr, ListenAddrError, Listener};
pub use status::{ComponentStatus, Draining, STATE_GAUGE, State};
pub use supervise::{Health, Rebuild, Redact, Restart, RestartPolicy, Supervision};
/// Cancellation for a component's tasks (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;
