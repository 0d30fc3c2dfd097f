//! The `config` of an `exec` descriptor: the command, its environment, and how the child is
//! stopped.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

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
