//! Test doubles shared by isopace's tests and benchmarks: a probe component, atomic file
//! writes, log capture and an echo server.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod capture;
mod fs;
mod lifecycle;
mod net;
mod probe;

pub use capture::{CapturedError, CapturedEvent, CapturedSpan, LogCapture};
pub use fs::write_atomically;
pub use lifecycle::{Event, Lifecycle};
pub use net::echo_server;
pub use probe::{
    Act, PROBE_TYPE, Probe, ProbeConfig, ProbeError, probe_descriptor, probe_registry,
};
