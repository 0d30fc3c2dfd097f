//! Fuzz target: see `isopace_fuzz::env_override`.
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| isopace_fuzz::env_override(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    isopace_fuzz::replay::main("env_override", isopace_fuzz::env_override)
}
