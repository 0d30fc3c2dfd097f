//! The `isopace` command and a library to build your own daemon with your own component
//! types.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod run;

use std::process::ExitCode;

use isopace_deploy::Registry;
use isopace_host::Env;

/// The built-in component types (`admin`, `heartbeat`, `tcp-proxy`, `exec`), for a daemon
/// that uses them directly.
pub use isopace_builtins as builtins;

/// Success.
pub const EXIT_OK: u8 = 0;
/// A runtime failure: a component failed to start or stop, or, with
/// `--exit-on-critical-failure`, a critical component failed for good.
pub const EXIT_FAILURE: u8 = 1;
/// A usage error: bad arguments, or `types NAME` naming no registered type.
pub const EXIT_USAGE: u8 = 2;
/// Invalid configuration or descriptors (`EX_CONFIG` from sysexits.h).
pub const EXIT_INVALID_CONFIG: u8 = 78;

/// Provides one extension to the host's env.
type Provide = Box<dyn FnOnce(&Env)>;

/// The `isopace` command with its component types: the built-in ones plus yours, under
/// your daemon's own name.
///
/// ```
/// use isopace_cli::App;
///
/// let app = App::new()
///     .name("edge")
///     .version("2.7.1")
///     .about("Runs the edge proxies.")
///     .env_prefix("EDGE"); // flags read EDGE_DEPLOY, EDGE_LOG_LEVEL, ...
/// assert_eq!(app.main_from(["edge", "--version"]), std::process::ExitCode::SUCCESS);
/// ```
#[must_use = "call main() to run the command"]
pub struct App {
    registry: Registry,
    identity: cli::Identity,
    extensions: Vec<Provide>,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    /// The app with the built-in component types registered, named `isopace`.
    pub fn new() -> Self {
        let mut registry = Registry::new();
        isopace_builtins::register_all(&mut registry)
            .expect("a new registry has none of the built-in type names");
        App {
            registry,
            identity: cli::Identity::default(),
            extensions: Vec::new(),
        }
    }

    /// The daemon's name, as `--help`, `--version`, usage errors and its log show it
    /// (default `isopace`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.identity.name = name.into();
        self
    }

    /// The daemon's version, as `--version` and its start-up log line show it (default: this
    /// crate's version). Pass `env!("CARGO_PKG_VERSION")` for your own.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.identity.version = version.into();
        self
    }

    /// The one-line description atop `--help`.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.identity.about = Some(about.into());
        self
    }

    /// The prefix of the environment variables the flags read (`EDGE` makes `--deploy` read
    /// `EDGE_DEPLOY`), which is also the default `--env-prefix` of configuration overrides
    /// (default `ISOPACE`).
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.identity.env_prefix = prefix.into();
        self
    }

    /// Provides `value` to every component through its env (`env.extension::<T>()`), as
    /// `run` provides its deployer handle and metrics registry: how your component types
    /// reach a client, a pool or a settings handle of your daemon's.
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.push(Box::new(move |env: &Env| {
            env.insert_extension(value);
        }));
        self
    }

    /// The registry, to add your own component types.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Parses the process's arguments, runs the command and returns its exit code.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// Like [`main`](App::main), with the arguments given (the first is the program name).
    /// `--help` and `--version` print and return success; a usage error prints and returns 2.
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = cli::command(&self.identity);
        let flags = cli::flag_variables(&command);
        let cli = match cli::parse(command, args) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
        };
        let name = self.identity.name.clone();
        let code = match cli.command {
            cli::Command::Run(args) => run::run(self, args, &flags),
            cli::Command::Validate(args) => commands::validate(&name, &self.registry, &args),
            cli::Command::Types { name: only } => {
                commands::types(&name, &self.registry, only.as_deref())
            }
            cli::Command::Config(args) => commands::config(&name, &args, &flags),
            cli::Command::Completions { shell } => commands::completions(&self.identity, shell),
            cli::Command::Man { dir } => commands::man(&self.identity, dir.as_deref()),
        };
        ExitCode::from(code)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("identity", &self.identity)
            .field("registry", &self.registry)
            .field("extensions", &self.extensions.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_from_returns_the_code_of_version_and_usage_errors() {
        let edge = || App::new().name("edge").version("2.7.1").env_prefix("EDGE");
        assert_eq!(edge().main_from(["edge", "--version"]), ExitCode::SUCCESS);
        assert_eq!(edge().main_from(["edge", "--bogus"]), ExitCode::from(2));
    }
}
