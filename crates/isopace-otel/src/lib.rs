//! An OpenTelemetry adapter for the isopace observability facade; the README follows.
//!
#![doc = include_str!("../README.md")]

mod attrs;
mod observer;
mod span;

pub use observer::{OtelObserver, SCOPE_NAME};
pub use span::in_span;
