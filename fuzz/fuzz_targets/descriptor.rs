//! Fuzz target: see `isopace_fuzz::descriptor`.
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| isopace_fuzz::descriptor(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    isopace_fuzz::replay::main("descriptor", isopace_fuzz::descriptor)
}
