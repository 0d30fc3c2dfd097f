//! Fuzz target: see `isopace_fuzz::duration`.
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| isopace_fuzz::duration(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    isopace_fuzz::replay::main("duration", isopace_fuzz::duration)
}
