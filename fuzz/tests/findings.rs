//! Findings of the fuzz targets that are still open, as minimal failing tests (none at the
//! moment: fixed ones move to `tests/tests/integration/fuzz_findings.rs`).
