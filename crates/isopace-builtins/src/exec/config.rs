//! The `config` of an `exec` descriptor: the command, the restart policy and backoff, and
//! how the child is stopped.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, de};

/// The `config` of an `exec` descriptor.
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
    /// When to start the child again after it exits (default `on-failure`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The delay before each restart.
    #[serde(default)]
    pub backoff: Backoff,
    /// Restarts allowed within `restart_window`; the next one is refused and the component
    /// is failed (default 5).
    #[serde(default = "five")]
    pub max_restarts: u32,
    /// The window `max_restarts` counts restarts in (default 60s).
    #[serde(default = "one_minute", with = "isopace_config::serde_duration")]
    pub restart_window: Duration,
    /// The signal that asks the child to stop (default `SIGTERM`).
    #[serde(default)]
    pub stop_signal: StopSignal,
    /// How long the child may take to exit after `stop_signal` before it is killed
    /// (default 10s, under the host's default stop timeout of 15s).
    #[serde(default = "ten_seconds", with = "isopace_config::serde_duration")]
    pub stop_grace: Duration,
}

fn five() -> u32 {
    5
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
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

/// When an `exec` child is started again after it exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never: the component stays up with no child once it exits.
    Never,
    /// After an exit with a non-zero status or by a signal.
    #[default]
    OnFailure,
    /// After every exit, successful or not.
    Always,
}

impl RestartPolicy {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// Exponential restart delay: `initial`, doubled for each restart still inside the restart
/// window, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BackoffConfig")]
pub struct Backoff {
    /// The first delay (default 1s).
    pub initial: Duration,
    /// The longest delay (default 30s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before a restart when `recent` restarts are already inside the window.
    pub fn delay(&self, recent: usize) -> Duration {
        let factor = 2_u32.saturating_pow(u32::try_from(recent).unwrap_or(u32::MAX));
        self.initial.saturating_mul(factor).min(self.max)
    }

    pub(super) fn check(&self) -> Result<(), &'static str> {
        if self.initial.is_zero() {
            Err("`backoff.initial` must be greater than zero")
        } else if self.max < self.initial {
            Err("`backoff.max` must not be less than `backoff.initial`")
        } else {
            Ok(())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffConfig {
    #[serde(default = "one_second", with = "isopace_config::serde_duration")]
    initial: Duration,
    #[serde(default = "thirty_seconds", with = "isopace_config::serde_duration")]
    max: Duration,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

impl TryFrom<BackoffConfig> for Backoff {
    type Error = &'static str;

    fn try_from(c: BackoffConfig) -> Result<Self, Self::Error> {
        let backoff = Backoff {
            initial: c.initial,
            max: c.max,
        };
        backoff.check()?;
        Ok(backoff)
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
        assert_eq!(c.restart, RestartPolicy::OnFailure);
        assert_eq!(c.backoff, Backoff::default());
        assert_eq!(
            (c.max_restarts, c.restart_window),
            (5, Duration::from_secs(60))
        );
        assert_eq!(c.stop_signal, StopSignal::TERM);
        assert_eq!(c.stop_grace, Duration::from_secs(10));
        assert!(c.env.is_empty() && c.cwd.is_none());
        let c = config(json!({
            "command": ["x"], "restart": "always", "stop_signal": "sigint",
            "backoff": {"initial": "10ms"}, "env": {"A": "1"}, "cwd": "/tmp"
        }))
        .unwrap();
        assert_eq!(c.restart, RestartPolicy::Always);
        assert_eq!(c.stop_signal.number(), libc::SIGINT);
        assert_eq!(c.backoff.initial, Duration::from_millis(10));
        assert_eq!(c.backoff.max, Duration::from_secs(30));
        assert!(config(Exec::example()).is_ok());
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (value, needle) in [
            (json!({"command": []}), "must name a program"),
            (json!({"command": [""]}), "must name a program"),
            (json!({"command": "sleep 1"}), "sequence"),
            (
                json!({"command": ["x"], "restart": "sometimes"}),
                "on-failure",
            ),
            (
                json!({"command": ["x"], "stop_signal": "SIGSTOP"}),
                "unknown signal `SIGSTOP`",
            ),
            (
                json!({"command": ["x"], "backoff": {"initial": "0s"}}),
                "greater than zero",
            ),
            (
                json!({"command": ["x"], "backoff": {"initial": "2s", "max": "1s"}}),
                "less than",
            ),
            (
                json!({"command": ["x"], "backoff": {"first": "1s"}}),
                "unknown field",
            ),
            (json!({"command": ["x"], "shell": true}), "unknown field"),
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

    #[test]
    fn backoff_doubles_per_recent_restart_up_to_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (0..6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(usize::MAX), Duration::from_secs(1));
    }
}
