//! OpenTelemetry for the isopace observability facade: an `Observer` over the opentelemetry API.
//!
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod attrs;
mod gauge;
mod observer;
#[cfg(feature = "otlp")]
pub mod otlp;
mod span;

pub use observer::{OtelObserver, SCOPE_NAME};
pub use span::in_span;
