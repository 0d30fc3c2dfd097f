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
//! - `daemon`: the [`daemon`] module, for the daemon around a host rather than a component:
//!   Unix signals and systemd's service protocol (readiness, reloads, status, watchdog).
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
#[cfg(feature = "daemon")]
pub mod daemon;
mod de;
#[cfg(feature = "exec")]
pub mod exec;
#[cfg(feature = "heartbeat")]
pub mod heartbeat;
pub mod limits;
#[cfg(any(feature = "admin", feature = "tcp-proxy", feature = "exec"))]
mod preflight;
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

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use isopace_deploy::{Descriptor, Registry};
    use serde::de::DeserializeOwned;

    /// Asserts that `type_name`'s example sets every field outside `own` (the values a user
    /// supplies rather than defaults) to its default: decoding the example and decoding
    /// only its `own` fields give the same config.
    #[allow(dead_code)]
    fn example_shows_defaults<T: DeserializeOwned + Debug>(type_name: &str, own: &[&str]) {
        let mut registry = Registry::new();
        super::register_all(&mut registry).unwrap();
        let example = registry.type_info(type_name).unwrap().example;
        let mut minimal = example.clone();
        minimal
            .as_object_mut()
            .unwrap()
            .retain(|field, _| own.contains(&field.as_str()));
        let decode = |config| {
            let descriptor = Descriptor::new("x", type_name).config(config);
            format!("{:?}", descriptor.decode_config::<T>().unwrap())
        };
        assert_eq!(decode(example), decode(minimal), "`{type_name}`'s example");
    }

    #[test]
    fn each_example_shows_the_defaults_of_what_it_does_not_need() {
        #[cfg(feature = "admin")]
        example_shows_defaults::<crate::admin::AdminConfig>("admin", &[]);
        #[cfg(feature = "heartbeat")]
        example_shows_defaults::<crate::heartbeat::HeartbeatConfig>("heartbeat", &[]);
        #[cfg(feature = "tcp-proxy")]
        example_shows_defaults::<crate::tcp_proxy::TcpProxyConfig>(
            "tcp-proxy",
            &["listen", "upstream"],
        );
        #[cfg(feature = "exec")]
        example_shows_defaults::<crate::exec::ExecConfig>("exec", &["command", "env"]);
    }
}
