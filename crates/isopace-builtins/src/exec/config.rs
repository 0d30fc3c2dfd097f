//! The `config` of an `exec` descriptor: the command, its environment, and how the child is
//! stopped.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use isopace_deploy::{Finding, PreflightContext};
use serde::{Deserialize, Deserializer, de};

/// The `config` of an `exec` descriptor.
///
/// How often and how soon a child that ended is started again is the descriptor's
/// `restart`, applied by the host; exec's own `restart`, `backoff`, `max_restarts` and
/// `restart_window` fields are deprecated and moved there when a descriptor is read (see
/// [`exec`](super)).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments, run directly (no shell).
    #[serde(deserialize_with = "argv")]
    pub command: Vec<String>,
    /// Variables added to (or overriding) the environment the child inherits.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The child's working directory (default: isopace's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The signal that asks the child to stop (default `SIGTERM`).
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// How long the child may take to exit after `stop_signal` before it is killed
    /// (default 10s, under the host's default stop timeout of 15s).
    #[serde(default = "ten_seconds", with = "isopace_config::serde_duration")]
    pub stop_grace: Duration,
    /// The level the child's stdout lines are logged at (default `info`).
    #[serde(default)]
    pub stdout_level: OutputLevel,
    /// The level the child's stderr lines are logged at (default `info`; `warn` suits a
    /// program that writes only problems there).
    #[serde(default)]
    pub stderr_level: OutputLevel,
}

/// The level a child's output lines are logged at: `trace`, `debug`, `info`, `warn` or
/// `error` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLevel(pub tracing::Level);

impl Default for OutputLevel {
    fn default() -> Self {
        OutputLevel(tracing::Level::INFO)
    }
}

impl<'de> Deserialize<'de> for OutputLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        isopace_observe::parse_level(&text)
            .map(OutputLevel)
            .map_err(de::Error::custom)
    }
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn argv<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let argv = Vec::<String>::deserialize(deserializer)?;
    match argv.first() {
        Some(program) if !program.is_empty() => Ok(argv),
        _ => Err(de::Error::custom(
            "must name a program: a non-empty array such as [\"/usr/bin/env\", \"sleep\", \"60\"]",
        )),
    }
}

/// The preflight check of an `exec` config: its `cwd` is a directory, and its program is
/// one this process may run, found where spawning the child would look for it. Either
/// failing is an error, when validating and when building alike: the child could not start.
pub(super) fn preflight(config: &ExecConfig, _: &PreflightContext<'_>) -> Vec<Finding> {
    let mut found = Vec::new();
    let cwd_usable = match &config.cwd {
        None => true,
        Some(cwd) => match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => true,
            Ok(_) => {
                found.push(Finding::error(
                    "cwd",
                    format!("{} is not a directory", cwd.display()),
                ));
                false
            }
            Err(e) => {
                found.push(Finding::error("cwd", missing(cwd, &e)));
                false
            }
        },
    };
    if let Err(why) = find_program(config, cwd_usable) {
        found.push(Finding::error("command", why));
    }
    found
}

/// Where the child's program is, found as spawning finds it: a name with a `/` is a path
/// (relative to `cwd`, when one is set: the child changes into it first); a bare name is
/// looked up in the `PATH` the child gets (the config's `env` may set it; else isopace's,
/// else `/bin:/usr/bin`), the first entry that holds a program this process may run
/// winning. When `cwd` is unusable, a path relative to it is not looked at (the `cwd` error
/// says why it cannot work).
pub(super) fn find_program(config: &ExecConfig, cwd_usable: bool) -> Result<PathBuf, String> {
    let program = &config.command[0];
    let in_cwd = |path: &Path| match &config.cwd {
        Some(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_owned(),
    };
    if program.contains('/') {
        let path = Path::new(program);
        if path.is_relative() && !cwd_usable {
            return Ok(in_cwd(path));
        }
        let resolved = in_cwd(path);
        let shown = match (&config.cwd, path.is_relative()) {
            (Some(cwd), true) => format!("`{program}` (in {})", cwd.display()),
            _ => format!("`{program}`"),
        };
        return match std::fs::metadata(&resolved) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{shown} does not exist"))
            }
            Err(e) => Err(format!("cannot look at {shown}: {e}")),
            Ok(meta) if meta.is_dir() => Err(format!("{shown} is a directory, not a program")),
            Ok(meta) if !runnable(&resolved, &meta) => Err(format!(
                "{shown} is not executable by this user (mode {:04o})",
                mode(&meta)
            )),
            Ok(_) => Ok(resolved),
        };
    }
    let search = config
        .env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    let mut not_runnable = None;
    for dir in std::env::split_paths(&search) {
        // An empty entry is the current directory.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = in_cwd(&dir.join(program));
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && runnable(&candidate, &meta) => return Ok(candidate),
            Ok(meta) if meta.is_file() => {
                not_runnable.get_or_insert((candidate, mode(&meta)));
            }
            _ => {}
        }
    }
    Err(match not_runnable {
        Some((path, mode)) => format!(
            "`{program}` is found in PATH as {}, which is not executable by this user (mode \
             {mode:04o})",
            path.display()
        ),
        None => format!(
            "`{program}` is not found in PATH ({})",
            search.to_string_lossy()
        ),
    })
}

/// Whether this process may run the regular file `path`.
fn runnable(path: &Path, meta: &std::fs::Metadata) -> bool {
    meta.is_file() && crate::preflight::accessible(path, libc::X_OK)
}

fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Why `path` cannot be used, for an error looking at it.
fn missing(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        _ => format!("cannot look at {}: {e}", path.display()),
    }
}

/// The signals a child can be asked to stop with.
const STOP_SIGNALS: [(&str, libc::c_int); 7] = [
    ("SIGTERM", libc::SIGTERM),
    ("SIGINT", libc::SIGINT),
    ("SIGHUP", libc::SIGHUP),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
];

/// The signal `stop` sends first: `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`, `SIGKILL`,
/// `SIGUSR1` or `SIGUSR2`, written with or without the `SIG` prefix, in any case.
///
/// ```
/// use isopace_builtins::exec::StopSignal;
///
/// let signal: StopSignal = "hup".parse().unwrap();
/// assert_eq!(signal.name(), "SIGHUP");
/// assert!("SIGSTOP".parse::<StopSignal>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignal {
    name: &'static str,
    number: libc::c_int,
}

impl StopSignal {
    /// `SIGTERM`, the default.
    pub const TERM: StopSignal = StopSignal {
        name: "SIGTERM",
        number: libc::SIGTERM,
    };

    /// The signal's name, with the `SIG` prefix.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The signal's number on this platform.
    pub fn number(&self) -> i32 {
        self.number
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::TERM
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        STOP_SIGNALS
            .iter()
            .find(|(name, _)| name[3..] == *bare)
            .map(|&(name, number)| StopSignal { name, number })
            .ok_or_else(|| {
                let known: Vec<&str> = STOP_SIGNALS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown signal `{text}`: expected one of {}",
                    known.join(", ")
                )
            })
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Exec;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Result<ExecConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn defaults_fill_what_the_descriptor_leaves_out() {
        let c = config(json!({"command": ["/bin/true"]})).unwrap();
        assert_eq!(c.stop_signal, StopSignal::TERM);
        assert_eq!(c.stop_grace, Duration::from_secs(10));
        assert!(c.env.is_empty() && c.cwd.is_none());
        let c = config(json!({
            "command": ["x"], "stop_signal": "sigint", "stop_grace": "2s",
            "env": {"A": "1"}, "cwd": "/tmp"
        }))
        .unwrap();
        assert_eq!(c.stop_signal.number(), libc::SIGINT);
        assert_eq!(c.stop_grace, Duration::from_secs(2));
        assert_eq!(c.env["A"], "1");
        assert!(config(Exec::example()).is_ok());
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (value, needle) in [
            (json!({"command": []}), "must name a program"),
            (json!({"command": [""]}), "must name a program"),
            (json!({"command": "sleep 1"}), "sequence"),
            (
                json!({"command": ["x"], "stop_signal": "SIGSTOP"}),
                "unknown signal `SIGSTOP`",
            ),
            (
                json!({"command": ["x"], "stop_grace": "soon"}),
                "invalid duration",
            ),
            (json!({"command": ["x"], "shell": true}), "unknown field"),
            // The deprecated restart fields are moved out by the registry's migration
            // before the config is decoded; the config itself no longer has them.
            (
                json!({"command": ["x"], "max_restarts": 3}),
                "unknown field",
            ),
        ] {
            let e = config(value.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{value}: {e}");
        }
    }

    /// What the preflight check says about `value`, as (field, message) pairs.
    fn preflight_of(value: serde_json::Value) -> Vec<(String, String)> {
        let d = isopace_deploy::Descriptor::new("worker", "exec").config(value);
        let mut registry = isopace_deploy::Registry::new();
        crate::exec::register(&mut registry).unwrap();
        registry
            .preflight(&d, isopace_deploy::Stage::Validate)
            .unwrap()
            .iter()
            .map(|e| (e.field_path().unwrap().to_owned(), e.detail()))
            .collect()
    }

    fn script(dir: &Path, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn preflight_finds_the_program_where_spawning_would() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = script(&bin, "tool", 0o755);
        script(&bin, "plain", 0o644);
        let path = bin.display().to_string();

        // By absolute path, relative to `cwd`, and through the child's PATH.
        assert_eq!(preflight_of(json!({"command": [tool]})), []);
        assert_eq!(
            preflight_of(json!({"command": ["bin/tool"], "cwd": dir.path()})),
            []
        );
        let found = preflight_of(json!({"command": ["tool"], "env": {"PATH": path}}));
        assert_eq!(found, []);
        let c =
            config(json!({"command": ["tool"], "env": {"PATH": format!("/nonexistent:{path}")}}))
                .unwrap();
        assert_eq!(find_program(&c, true).unwrap(), tool);
        // isopace's own PATH when the config sets none.
        assert!(
            find_program(&config(json!({"command": ["sh"]})).unwrap(), true)
                .unwrap()
                .ends_with("sh")
        );

        let missing = dir.path().join("nope");
        for (value, field, said) in [
            (
                json!({"command": [missing]}),
                "config.command",
                format!("`{}` does not exist", missing.display()),
            ),
            (
                json!({"command": ["bin/nope"], "cwd": dir.path()}),
                "config.command",
                format!("`bin/nope` (in {}) does not exist", dir.path().display()),
            ),
            (
                json!({"command": [bin]}),
                "config.command",
                format!("`{path}` is a directory, not a program"),
            ),
            (
                json!({"command": ["tool"], "env": {"PATH": "/nonexistent"}}),
                "config.command",
                "`tool` is not found in PATH (/nonexistent)".to_owned(),
            ),
            (
                json!({"command": ["/bin/sh"], "cwd": missing}),
                "config.cwd",
                format!("{} does not exist", missing.display()),
            ),
            (
                json!({"command": ["/bin/sh"], "cwd": tool}),
                "config.cwd",
                format!("{} is not a directory", tool.display()),
            ),
        ] {
            assert_eq!(
                preflight_of(value.clone()),
                [(field.to_owned(), said)],
                "{value}"
            );
        }
        // A bad cwd is the one error of a program relative to it; a missing program
        // elsewhere is a second.
        assert_eq!(
            preflight_of(json!({"command": ["./x"], "cwd": missing})).len(),
            1
        );
        assert_eq!(
            preflight_of(json!({"command": [tool.join("x")], "cwd": missing})).len(),
            2
        );
    }

    #[test]
    fn preflight_refuses_a_program_this_user_may_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let plain = script(dir.path(), "plain", 0o644);
        let owner_only = script(dir.path(), "owner-only", 0o700);
        let found = preflight_of(json!({"command": [plain]}));
        assert_eq!(
            found,
            [(
                "config.command".to_owned(),
                format!(
                    "`{}` is not executable by this user (mode 0644)",
                    plain.display()
                )
            )]
        );
        let found = preflight_of(json!({"command": ["plain"], "env": {"PATH": dir.path()}}));
        assert_eq!(
            found[0].1,
            format!(
                "`plain` is found in PATH as {}, which is not executable by this user (mode 0644)",
                plain.display()
            )
        );
        // Whoever owns it may run it (the test owns what it writes).
        assert_eq!(preflight_of(json!({"command": [owner_only]})), []);
    }

    #[test]
    fn signal_names_parse_with_or_without_the_prefix() {
        for (text, number) in [
            ("SIGTERM", libc::SIGTERM),
            ("TERM", libc::SIGTERM),
            ("int", libc::SIGINT),
            ("SigHup", libc::SIGHUP),
            ("QUIT", libc::SIGQUIT),
            ("SIGKILL", libc::SIGKILL),
            ("USR1", libc::SIGUSR1),
            (" SIGUSR2 ", libc::SIGUSR2),
        ] {
            assert_eq!(
                text.parse::<StopSignal>().unwrap().number(),
                number,
                "{text}"
            );
        }
        assert!("".parse::<StopSignal>().is_err());
        assert!("SIG".parse::<StopSignal>().is_err());
    }
}
