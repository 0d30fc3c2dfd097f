//! What the cross-crate integration tests in `tests/integration` share: the probe
//! component, the deploy fixture, log capture, a FIFO watchdog and process measurements.
#![doc = include_str!("../README.md")]

mod capture;
mod fifo;
mod fixture;
mod probe;
mod process;

pub use capture::LogCapture;
pub use fifo::{FifoWatchdog, mkfifo};
pub use fixture::{
    FIXTURE_CONFIG, Fixture, FixtureOptions, SECRET_VALUE, SECRET_VAR, write_atomically,
};
pub use probe::{
    Event, Lifecycle, PROBE_TYPE, Probe, ProbeConfig, ProbeError, probe_descriptor, probe_registry,
};
pub use process::{SoakLength, alive_tasks, rss_bytes};
