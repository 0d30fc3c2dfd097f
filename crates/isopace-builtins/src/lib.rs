//! The built-in isopace component types — `admin`, `heartbeat`, `tcp-proxy` and `exec` — as a
//! library, each behind a cargo feature.
#![doc = include_str!("../README.md")]
//!
//! ## Feature flags
//!
//! Every type is behind a feature of its own, all on by default; turn off the default
//! features and name the ones you want to pull in only what they need:
//!
//! - `admin`: the [`admin`] module, an HTTP endpoint for health, readiness, metrics and
//!   component status. The only feature that pulls in an HTTP server (axum).
//! - `heartbeat`: the [`heartbeat`] module, a component that logs and counts a tick every
//!   interval.
//! - `tcp-proxy`: the [`tcp_proxy`] module, a TCP relay (with `splice(2)` on Linux).
//! - `exec`: the [`exec`] module, a supervised child process.
//!
//! [`register_all`] and the [`limits`] module are always there.
//!
//! ## What components get from the daemon
//!
//! No factory captures anything: a component reads what the host or the daemon provides
//! from its env's typed extensions when it starts (`env.extension::<T>()`). A host always
//! provides a [`WeakHost`](isopace_host::WeakHost) to itself; `isopace run` adds its
//! [`DeployerHandle`](isopace_deploy::DeployerHandle), its
//! [`MetricsRegistry`](isopace_observe::MetricsRegistry) and an
//! [`admin::Readiness`]. Each type says what it reads and what it does without it; metrics go
//! through `env.observer()`, so an observer of a library user's own gets them.
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "admin")]
pub mod admin;
mod de;
#[cfg(feature = "exec")]
pub mod exec;
#[cfg(feature = "heartbeat")]
pub mod heartbeat;
pub mod limits;
#[cfg(feature = "tcp-proxy")]
pub mod tcp_proxy;

use isopace_deploy::Registry;

/// Registers every component type this build of the crate has (see the feature flags) in
/// `registry`, under its descriptor `type`: `admin`, `heartbeat`, `tcp-proxy`, `exec`.
///
/// Fails when `registry` already has one of the names.
pub fn register_all(registry: &mut Registry) -> Result<(), isopace_deploy::Error> {
    #[cfg(feature = "admin")]
    admin::register(registry)?;
    #[cfg(feature = "heartbeat")]
    heartbeat::register(registry)?;
    #[cfg(feature = "tcp-proxy")]
    tcp_proxy::register(registry)?;
    #[cfg(feature = "exec")]
    exec::register(registry)?;
    Ok(())
}
