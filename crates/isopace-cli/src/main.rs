//! The `isopace` binary: every command lives in the library; this only maps to an exit code.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    isopace_cli::App::new().main()
}
