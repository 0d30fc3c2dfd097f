//! The `isopace` command and a library to build your own daemon with your own component
//! types.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod run;

use std::process::ExitCode;

use clap::Parser;
use isopace_deploy::Registry;

/// The built-in component types (`admin`, `heartbeat`, `tcp-proxy`, `exec`), for a daemon
/// that uses them directly.
pub use isopace_builtins as builtins;
pub use isopace_builtins::{Details, DetailsSlot, Runtime, RuntimeHandle};

/// Success.
pub const EXIT_OK: u8 = 0;
/// A runtime failure: a component failed to start or stop.
pub const EXIT_FAILURE: u8 = 1;
/// Invalid configuration or descriptors (`EX_CONFIG` from sysexits.h).
pub const EXIT_INVALID_CONFIG: u8 = 78;

/// The `isopace` command with its component types: the built-in ones plus yours.
pub struct App {
    registry: Registry,
    runtime: RuntimeHandle,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    /// The app with the built-in component types registered.
    pub fn new() -> Self {
        let runtime = RuntimeHandle::default();
        let mut registry = Registry::new();
        isopace_builtins::register_all(&mut registry, &runtime)
            .expect("a new registry has none of the built-in type names");
        App { registry, runtime }
    }

    /// The registry, to add your own component types.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A handle your factories can capture to reach the host, the deployer and the metrics
    /// registry once `run` has built them.
    pub fn runtime(&self) -> RuntimeHandle {
        self.runtime.clone()
    }

    /// Parses the process's arguments, runs the command and returns its exit code.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// Like [`main`](App::main), with the arguments given (the first is the program name).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = match cli::Cli::try_parse_from(args) {
            Ok(cli) => cli,
            // Help and version print and exit 0; usage errors exit 2.
            Err(e) => e.exit(),
        };
        let code = match cli.command {
            cli::Command::Run(args) => run::run(self, args),
            cli::Command::Validate(args) => commands::validate(&self.registry, &args),
            cli::Command::Types => commands::types(&self.registry),
            cli::Command::Config(args) => commands::config(&args),
        };
        ExitCode::from(code)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("registry", &self.registry)
            .finish()
    }
}
