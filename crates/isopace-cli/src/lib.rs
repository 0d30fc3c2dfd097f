//! The `isopace` command and a library to build your own daemon with your own component
//! types.
#![doc = include_str!("../README.md")]

mod admin;
mod cli;
mod commands;
mod exec;
mod heartbeat;
mod limits;
mod run;
mod runtime;
#[cfg(target_os = "linux")]
mod splice;
mod tcp_proxy;

use std::process::ExitCode;

use clap::Parser;
use isopace_deploy::Registry;

pub use admin::{Admin, AdminConfig};
pub use exec::{Backoff, Exec, ExecConfig, ExecState, ExecStatus, RestartPolicy, StopSignal};
pub use heartbeat::{Heartbeat, HeartbeatConfig};
pub use runtime::{Details, DetailsSlot, Runtime, RuntimeHandle};
pub use tcp_proxy::{TcpProxy, TcpProxyConfig};

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
        register_builtins(&mut registry, &runtime);
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

fn register_builtins(registry: &mut Registry, runtime: &RuntimeHandle) {
    let handle = runtime.clone();
    registry
        .register_typed(
            "admin",
            "HTTP endpoint: /healthz, /readyz, /metrics, /components, /deployments",
            Admin::example(),
            move |name: &str, config: AdminConfig, _env: &isopace_host::Env| {
                let runtime = handle
                    .get()
                    .ok_or("the admin component runs only inside `isopace run`")?;
                Ok(Admin::new(name, config, runtime.clone()))
            },
        )
        .expect("built-in type names are unique");
    registry
        .register_typed(
            "heartbeat",
            "logs a message and counts heartbeat_ticks_total every interval",
            Heartbeat::example(),
            |name: &str, config: HeartbeatConfig, _env: &isopace_host::Env| {
                Heartbeat::new(name, config)
            },
        )
        .expect("built-in type names are unique");
    let handle = runtime.clone();
    registry
        .register_typed(
            "tcp-proxy",
            "relays each TCP connection on `listen` to a fresh connection to `upstream`",
            TcpProxy::example(),
            move |name: &str, config: TcpProxyConfig, _env: &isopace_host::Env| {
                let proxy = TcpProxy::new(name, config)?;
                Ok(match handle.get() {
                    Some(runtime) => proxy.with_metrics(&runtime.metrics),
                    None => proxy,
                })
            },
        )
        .expect("built-in type names are unique");
    let handle = runtime.clone();
    registry
        .register_typed(
            "exec",
            "runs a command as a supervised child process, restarted per policy, stopped with its process group",
            Exec::example(),
            move |name: &str, config: ExecConfig, _env: &isopace_host::Env| {
                Ok(Exec::new(name, config)?.with_details(handle.details()))
            },
        )
        .expect("built-in type names are unique");
}
