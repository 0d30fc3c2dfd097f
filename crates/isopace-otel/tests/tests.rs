//! Integration tests of the OpenTelemetry adapter against the SDK's in-memory exporters.

mod metrics;
mod spans;
mod util;
