//! What the cross-crate integration tests in `tests/integration` share: the deploy fixture,
//! a FIFO watchdog and process measurements, beside the testkit's probe and log capture.
#![doc = include_str!("../README.md")]

mod fifo;
mod fixture;
mod process;

pub use fifo::{FifoWatchdog, mkfifo};
pub use fixture::{FIXTURE_CONFIG, Fixture, FixtureOptions, SECRET_VALUE, SECRET_VAR};
// The shared test doubles, under the names the integration tests know them by.
pub use isopace_testkit::{
    Event, Lifecycle, LogCapture, PROBE_TYPE, Probe, ProbeConfig, ProbeError, probe_descriptor,
    probe_registry, write_atomically,
};
pub use process::{SoakLength, alive_tasks, rss_bytes};
