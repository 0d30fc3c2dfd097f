//! Integration tests of the OpenTelemetry adapter against the SDK's in-memory exporters.

mod host;
mod metrics;
mod spans;
mod util;
