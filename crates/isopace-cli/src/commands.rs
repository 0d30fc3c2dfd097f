//! The commands that build nothing: `validate`, `types`, `config`, `completions` and `man`.

use std::{fmt::Write as _, path::Path};

use isopace_config::{Config, LoadOptions};
use isopace_deploy::{Registry, ValidateOptions};

use crate::{
    EXIT_FAILURE, EXIT_INVALID_CONFIG, EXIT_OK, EXIT_USAGE, cli,
    cli::{ConfigArgs, ConfigCommand, ConfigSource, Identity, ValidateArgs},
};

/// `isopace validate DIR`; `name` is the daemon's, for messages. Warnings go to stderr.
pub(crate) fn validate(name: &str, registry: &Registry, args: &ValidateArgs) -> u8 {
    let env = |name: &str| std::env::var(name).ok();
    let dir = args.deploy.as_ref().unwrap_or(&args.dir);
    let options = ValidateOptions::new().preflight(!args.no_preflight);
    let problems = match isopace_deploy::validate_dir_with(dir, registry, &env, &options) {
        Err(e) => {
            eprintln!("{name}: {}", isopace_host::error_chain(&e));
            return EXIT_INVALID_CONFIG;
        }
        Ok(found) => {
            found
                .warnings
                .iter()
                .for_each(|w| eprintln!("warning: {w}"));
            found.problems
        }
    };
    if problems.is_empty() {
        print_out(&format!("{}: ok\n", dir.display()));
        return EXIT_OK;
    }
    let text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    print_out(&text);
    eprintln!(
        "{name}: {} problem{} in {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        dir.display()
    );
    EXIT_INVALID_CONFIG
}

/// `isopace types [NAME]`.
pub(crate) fn types(name: &str, registry: &Registry, only: Option<&str>) -> u8 {
    let types = match only.map(|t| registry.type_info(t)).transpose() {
        Ok(Some(info)) => vec![info],
        Ok(None) => registry.types(),
        Err(e) => {
            eprintln!("{name}: {e}");
            return EXIT_USAGE;
        }
    };
    print_out(
        &types
            .iter()
            .map(|info| format!("{info}\n"))
            .collect::<String>(),
    );
    EXIT_OK
}

/// Writes to stdout, ignoring a closed pipe (`isopace types | head`).
pub(crate) fn print_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Loads the configuration the way `run` does: the file (if any) plus overrides from the
/// environment, leaving out `flags`, the variables that set the command line's own flags.
pub(crate) fn load_config(
    source: &ConfigSource,
    flags: &[String],
) -> Result<Config, isopace_config::Error> {
    let environ: Vec<String> = std::env::vars()
        .filter(|(k, _)| !flags.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let options = LoadOptions::new()
        .env_prefix(source.env_prefix.clone())
        .environ(environ);
    match &source.config {
        Some(path) => Config::load(path, options),
        None => Config::parse(b"", options),
    }
}

/// `isopace config get PATH | dump`.
pub(crate) fn config(name: &str, args: &ConfigArgs, flags: &[String]) -> u8 {
    let config = match load_config(&args.source, flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {}", isopace_host::error_chain(&e));
            return EXIT_INVALID_CONFIG;
        }
    };
    let entries = config.entries();
    match &args.command {
        ConfigCommand::Get { path } => {
            let prefix = format!("{path}.");
            let matching: Vec<_> = entries
                .iter()
                .filter(|e| e.path == *path || e.path.starts_with(&prefix))
                .collect();
            if matching.is_empty() {
                eprintln!("{name}: `{path}` is not set{}", from(&args.source.config));
                return EXIT_INVALID_CONFIG;
            }
            print_entries(matching);
        }
        ConfigCommand::Dump => print_entries(entries.iter()),
    }
    EXIT_OK
}

fn from(file: &Option<impl AsRef<Path>>) -> String {
    match file {
        Some(file) => format!(" in {} or the environment", file.as_ref().display()),
        None => " in the environment (no --config file given)".to_owned(),
    }
}

fn print_entries<'a>(entries: impl IntoIterator<Item = &'a isopace_config::Entry>) {
    let mut text = String::new();
    for entry in entries {
        let _ = writeln!(
            text,
            "{} = {}  ({})",
            entry.path,
            entry.display_value(),
            entry.source
        );
    }
    print_out(&text);
}

/// `isopace completions SHELL`, for the command the binary parses, under its own name.
pub(crate) fn completions(identity: &Identity, shell: clap_complete::Shell) -> u8 {
    let (mut command, mut script) = (cli::command(identity), Vec::new());
    clap_complete::generate(shell, &mut command, &identity.name, &mut script);
    print_out(&String::from_utf8_lossy(&script));
    EXIT_OK
}

/// `isopace man [--dir DIR]`: the command's page, or a page for it and each subcommand in `dir`.
pub(crate) fn man(identity: &Identity, dir: Option<&Path>) -> u8 {
    let command = cli::command(identity).disable_help_subcommand(true);
    if let Some(dir) = dir {
        if let Err(e) = clap_mangen::generate_to(command, dir) {
            eprintln!(
                "{}: cannot write man pages in {}: {e}",
                identity.name,
                dir.display()
            );
            return EXIT_FAILURE;
        }
        return EXIT_OK;
    }
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command);
    man.render(&mut page).expect("a Vec takes every write");
    print_out(&String::from_utf8_lossy(&page));
    EXIT_OK
}
