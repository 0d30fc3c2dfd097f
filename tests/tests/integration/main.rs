//! Cross-crate integration tests: one binary, one module per topic.

mod faults;
mod fuzz_findings;
mod model;
mod observe;
mod soak;
