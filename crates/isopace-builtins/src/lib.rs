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
//! [`register_all`], the [`Runtime`] types and the [`limits`] module are always there.
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "exec")]
pub mod exec;
#[cfg(feature = "heartbeat")]
pub mod heartbeat;
pub mod limits;
mod runtime;
#[cfg(feature = "tcp-proxy")]
pub mod tcp_proxy;

use isopace_deploy::Registry;

pub use runtime::{Details, DetailsSlot, Runtime, RuntimeHandle};

/// Registers every component type this build of the crate has (see the feature flags) in
/// `registry`, under its descriptor `type`: `admin`, `heartbeat`, `tcp-proxy`, `exec`.
///
/// Factories that need the running daemon (the admin endpoint, the proxy's gauge, the exec
/// status in `/components`) capture `runtime`; fill it with [`RuntimeHandle::set`] before the
/// deployer builds the first component. Fails when `registry` already has one of the names.
#[cfg_attr(
    not(any(feature = "admin", feature = "tcp-proxy", feature = "exec")),
    allow(unused_variables)
)]
pub fn register_all(
    registry: &mut Registry,
    runtime: &RuntimeHandle,
) -> Result<(), isopace_deploy::Error> {
    #[cfg(feature = "admin")]
    admin::register(registry, runtime)?;
    #[cfg(feature = "heartbeat")]
    heartbeat::register(registry)?;
    #[cfg(feature = "tcp-proxy")]
    tcp_proxy::register(registry, runtime)?;
    #[cfg(feature = "exec")]
    exec::register(registry, runtime)?;
    Ok(())
}
