//! The command line, declared with clap's derive API.

use std::{path::PathBuf, time::Duration};

use clap::{
    Arg, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum, error::ErrorKind,
    parser::ValueSource,
};

/// The prefix of the variables the flags are declared with; [`command`] replaces it with
/// the app's own.
const DECLARED_PREFIX: &str = "ISOPACE_";

/// What a daemon built on [`App`](crate::App) calls itself.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) about: Option<String>,
    /// The prefix (without the `_`) of the variables flags read, and the default
    /// `--env-prefix` of configuration overrides.
    pub(crate) env_prefix: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            name: "isopace".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            about: None,
            env_prefix: "ISOPACE".to_owned(),
        }
    }
}

/// The command line of the daemon `identity` names: its name, version and about text, and
/// its flags read from `<PREFIX>_*` variables.
pub(crate) fn command(identity: &Identity) -> clap::Command {
    let mut command = Cli::command()
        .name(identity.name.clone())
        .bin_name(identity.name.clone())
        .version(identity.version.clone());
    if let Some(about) = &identity.about {
        command = command.about(about.clone());
    }
    with_prefix(command, &identity.env_prefix)
}

/// Renames every flag's variable from `ISOPACE_*` to `<prefix>_*`, in every subcommand.
fn with_prefix(command: clap::Command, prefix: &str) -> clap::Command {
    command
        .mut_args(|arg: Arg| {
            let renamed = arg
                .get_env()
                .and_then(|v| v.to_str())
                .and_then(|v| v.strip_prefix(DECLARED_PREFIX))
                .map(|rest| format!("{prefix}_{rest}"));
            let arg = match renamed {
                Some(name) => arg.env(name),
                None => arg,
            };
            if arg.get_id() == "env_prefix" {
                arg.default_value(prefix.to_owned())
            } else {
                arg
            }
        })
        .mut_subcommands(|sub| with_prefix(sub, prefix))
}

/// Parses `args` with `command`. `validate DIR --deploy DIR` names the directory twice and is
/// a usage error; clap's `conflicts_with` cannot say so, as it would also count a DIR that
/// came from the variable.
pub(crate) fn parse<I, T>(mut command: clap::Command, args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command.try_get_matches_from_mut(args)?;
    if let Some(("validate", m)) = matches.subcommand()
        && m.value_source("dir") == Some(ValueSource::CommandLine)
        && m.contains_id("deploy")
    {
        let message = "give the descriptor directory once: as DIR or as --deploy DIR";
        let validate = command.find_subcommand_mut("validate").expect("declared");
        return Err(validate.error(ErrorKind::ArgumentConflict, message));
    }
    Cli::from_arg_matches(&matches)
}

/// The variables `command`'s flags read. They are kept out of the configuration
/// overrides, which share the prefix by default.
pub(crate) fn flag_variables(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(|a| Some(a.get_env()?.to_str()?.to_owned()))
        .collect();
    for sub in command.get_subcommands() {
        names.extend(flag_variables(sub));
    }
    names
}

/// Hosts long-running components deployed from a directory of JSON descriptors.
#[derive(Debug, Parser)]
#[command(name = "isopace", version, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the host: deploy the descriptor directory and keep it in sync until a signal.
    ///
    /// SIGINT or SIGTERM stops every component in reverse order within the shutdown timeout
    /// (a second one exits at once); SIGHUP reloads the config, rescans the directory and
    /// retries every component that is failed for good.
    Run(RunArgs),
    /// Check a descriptor directory for every problem `run` would hit, building nothing.
    ///
    /// Each file's shape, then this machine: a missing exec program or cwd is an error, an
    /// address that cannot be bound now a warning (a running daemon may hold it).
    Validate(ValidateArgs),
    /// List the component types this binary knows, each with a complete example descriptor;
    /// with NAME, only that type.
    Types {
        /// A type's name, such as `tcp-proxy`.
        name: Option<String>,
    },
    /// Show resolved configuration values and where each came from, secrets redacted.
    Config(ConfigArgs),
    /// Print the completion script for SHELL, to load from the shell's startup files.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), to install in a `man1/` directory.
    Man {
        /// Write a page for the command and one for each subcommand (`isopace-run.1`, ...)
        /// into DIR instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The descriptor directory.
    #[arg(long, env = "ISOPACE_DEPLOY", default_value = "deploy")]
    pub(crate) deploy: PathBuf,
    #[command(flatten)]
    pub(crate) config: ConfigSource,
    /// The log level: trace, debug, info, warn or error. This and --log-filter win over
    /// RUST_LOG, which wins over the config's `logging.level`; without any of them, info.
    #[arg(long, env = "ISOPACE_LOG_LEVEL", value_parser = isopace_observe::parse_level)]
    pub(crate) log_level: Option<tracing::Level>,
    /// RUST_LOG-style directives, such as `info,isopace_deploy=debug,hyper=warn`.
    #[arg(long, env = "ISOPACE_LOG_FILTER", value_name = "DIRECTIVES")]
    pub(crate) log_filter: Option<String>,
    /// The log format.
    #[arg(long, env = "ISOPACE_LOG_FORMAT", value_enum, default_value_t = Format::Text)]
    pub(crate) log_format: Format,
    /// How often to rescan the descriptor directory (a safety net when file events work).
    #[arg(long, env = "ISOPACE_SCAN_INTERVAL", default_value = "5s", value_parser = isopace_config::parse_duration)]
    pub(crate) scan_interval: Duration,
    /// Do not watch for file events; only rescan on the interval.
    #[arg(long, env = "ISOPACE_NO_WATCH", value_parser = isopace_config::parse_bool)]
    pub(crate) no_watch: bool,
    /// How long a graceful shutdown may take before it is reported as failed.
    #[arg(long, env = "ISOPACE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = isopace_config::parse_duration)]
    pub(crate) shutdown_timeout: Duration,
    /// Shut down and exit 1 when a critical component is failed for good (its restart
    /// policy gave up), so a service manager restarts the whole daemon.
    #[arg(long, env = "ISOPACE_EXIT_ON_CRITICAL_FAILURE", value_parser = isopace_config::parse_bool)]
    pub(crate) exit_on_critical_failure: bool,
    /// Where running `exec` children are recorded, so that after the daemon was killed the
    /// next start kills what they left. Default: `$XDG_RUNTIME_DIR/<name>`, else
    /// `/run/<name>` when writable, else `<temp dir>/<name>-<uid>`.
    #[arg(long, env = "ISOPACE_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Whether each `exec` child gets a cgroup (v2) of its own where the daemon may create
    /// one, so a stop kills everything it started; `off` tracks children through /proc.
    #[arg(long, env = "ISOPACE_EXEC_CGROUPS", value_enum, default_value_t = Cgroups::Auto)]
    pub(crate) exec_cgroups: Cgroups,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Cgroups {
    /// A cgroup per child where the daemon may create one.
    Auto,
    /// No cgroups: each child's session, process group and descendants, through /proc.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigSource {
    /// The configuration file: JSON, or TOML (`.toml`) or YAML (`.yaml`, `.yml`) by extension.
    #[arg(long, env = "ISOPACE_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    /// The prefix of environment variables that override configuration values
    /// (`<PREFIX>_LINK__TIMEOUT=5s` sets `link.timeout`); empty disables overrides.
    #[arg(
        long,
        env = "ISOPACE_ENV_PREFIX",
        default_value = "ISOPACE",
        global = true
    )]
    pub(crate) env_prefix: String,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The descriptor directory.
    #[arg(default_value = "deploy", env = "ISOPACE_DEPLOY")]
    pub(crate) dir: PathBuf,
    /// The descriptor directory, as `run` takes it (instead of DIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) deploy: Option<PathBuf>,
    /// Check the descriptors only, not this machine (exec programs and directories, listen
    /// addresses): for CI pipelines that validate descriptors without the programs.
    #[arg(long, env = "ISOPACE_NO_PREFLIGHT", value_parser = isopace_config::parse_bool)]
    pub(crate) no_preflight: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub(crate) command: ConfigCommand,
    #[command(flatten)]
    pub(crate) source: ConfigSource,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print one value (a dot path such as `link.timeout`) and its source.
    Get {
        /// The dot path.
        path: String,
    },
    /// Print every value and its source.
    Dump,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_defaults_match_the_documentation() {
        let cli = Cli::try_parse_from(["isopace", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("parsed {cli:?}");
        };
        assert_eq!(run.deploy, PathBuf::from("deploy"));
        assert_eq!(run.config.env_prefix, "ISOPACE");
        assert_eq!(run.scan_interval, Duration::from_secs(5));
        assert_eq!(run.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(run.log_format, Format::Text);
        assert!(!run.no_watch && run.log_level.is_none() && run.config.config.is_none());
        assert!(!run.exit_on_critical_failure);
    }

    #[test]
    fn a_daemons_identity_names_its_version_help_and_variables() {
        let identity = Identity {
            name: "edge".to_owned(),
            version: "2.7.1".to_owned(),
            about: Some("Runs the edge proxies.".to_owned()),
            env_prefix: "EDGE".to_owned(),
        };
        let mut command = command(&identity);
        command.clone().debug_assert();
        assert_eq!(command.render_version(), "edge 2.7.1\n");
        let help = command.render_help().to_string();
        assert!(help.starts_with("Runs the edge proxies."), "{help}");
        assert!(help.contains("Usage: edge <COMMAND>"), "{help}");
        let run = command.find_subcommand_mut("run").unwrap();
        let help = run.render_help().to_string();
        assert!(help.contains("[env: EDGE_DEPLOY="), "{help}");
        assert!(help.contains("[default: EDGE]"), "{help}");
        assert!(!help.contains("ISOPACE"), "{help}");
        let variables = flag_variables(&command);
        assert!(variables.contains(&"EDGE_EXIT_ON_CRITICAL_FAILURE".to_owned()));
        assert!(
            variables.iter().all(|v| v.starts_with("EDGE_")),
            "{variables:?}"
        );
        let matches = command
            .try_get_matches_from(["edge", "run", "--deploy", "d"])
            .unwrap();
        let Command::Run(run) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not run");
        };
        assert_eq!(run.config.env_prefix, "EDGE");
    }

    #[test]
    fn bad_levels_and_durations_are_usage_errors() {
        let err = Cli::try_parse_from(["isopace", "run", "--log-level", "loud"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("unknown log level `loud`"),
            "{err}"
        );
        let err = Cli::try_parse_from(["isopace", "run", "--scan-interval", "soon"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
