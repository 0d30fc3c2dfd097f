//! exec's own restart fields from when it restarted its child itself: still accepted in
//! descriptors, and moved to the descriptor's `restart` before the config is decoded.

use std::time::Duration;

use isopace_deploy::{Deprecation, Descriptor, DescriptorError, RestartField};
use isopace_host::Restart;
use serde::Deserialize;

/// The deprecated fields of an `exec` config, and the defaults exec gave them.
#[derive(Deserialize)]
struct Legacy {
    restart: Option<LegacyPolicy>,
    backoff: Option<LegacyBackoff>,
    max_restarts: Option<u32>,
    #[serde(default, with = "isopace_config::serde_duration::option")]
    restart_window: Option<Duration>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum LegacyPolicy {
    Never,
    OnFailure,
    Always,
}

/// `{"initial": "1s", "max": "30s"}`: each field defaulted as exec did, the pair checked as
/// exec did.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawBackoff")]
struct LegacyBackoff {
    initial: Duration,
    max: Duration,
    /// Which of the two the descriptor wrote.
    written: (bool, bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    #[serde(default, with = "isopace_config::serde_duration::option")]
    initial: Option<Duration>,
    #[serde(default, with = "isopace_config::serde_duration::option")]
    max: Option<Duration>,
}

impl TryFrom<RawBackoff> for LegacyBackoff {
    type Error = &'static str;

    fn try_from(raw: RawBackoff) -> Result<Self, Self::Error> {
        let backoff = LegacyBackoff {
            initial: raw.initial.unwrap_or(Duration::from_secs(1)),
            max: raw.max.unwrap_or(Duration::from_secs(30)),
            written: (raw.initial.is_some(), raw.max.is_some()),
        };
        if backoff.initial.is_zero() {
            Err("`backoff.initial` must be greater than zero")
        } else if backoff.max < backoff.initial {
            Err("`backoff.max` must not be less than `backoff.initial`")
        } else {
            Ok(backoff)
        }
    }
}

/// Moves `config.restart`, `config.backoff`, `config.max_restarts` and
/// `config.restart_window` to `restart.policy`, `restart.backoff` and `restart.max_backoff`,
/// `restart.max_restarts` and `restart.window`, wherever the descriptor does not set those
/// itself.
pub(super) fn migrate(d: &mut Descriptor) -> Result<Vec<Deprecation>, DescriptorError> {
    let legacy: Legacy = d.decode_config()?;
    for key in ["restart", "backoff", "max_restarts", "restart_window"] {
        d.take_config(key);
    }
    let mut deprecations = Vec::new();
    if let Some(policy) = legacy.restart {
        let policy = match policy {
            LegacyPolicy::Never => Restart::Never,
            LegacyPolicy::OnFailure => Restart::OnFailure,
            LegacyPolicy::Always => Restart::Always,
        };
        deprecations.push(
            d.migrate_restart("config.restart", RestartField::Policy, |r| {
                r.policy = policy;
            }),
        );
    }
    if let Some(backoff) = legacy.backoff {
        // A backoff object set both delays, the one it leaves out to exec's default; the
        // warnings name what it wrote.
        let (wrote_initial, wrote_max) = backoff.written;
        let initial_field = if wrote_initial {
            "config.backoff.initial"
        } else {
            "config.backoff"
        };
        let initial = d.migrate_restart(initial_field, RestartField::Backoff, |r| {
            r.backoff = backoff.initial;
        });
        let max = d.migrate_restart("config.backoff.max", RestartField::MaxBackoff, |r| {
            r.max_backoff = backoff.max;
        });
        if wrote_initial || !wrote_max {
            deprecations.push(initial);
        }
        if wrote_max {
            deprecations.push(max);
        }
    }
    if let Some(max_restarts) = legacy.max_restarts {
        deprecations.push(d.migrate_restart(
            "config.max_restarts",
            RestartField::MaxRestarts,
            |r| r.max_restarts = max_restarts,
        ));
    }
    if let Some(window) = legacy.restart_window {
        deprecations.push(
            d.migrate_restart("config.restart_window", RestartField::Window, |r| {
                r.window = window
            }),
        );
    }
    Ok(deprecations)
}

#[cfg(test)]
mod tests {
    use isopace_deploy::Registry;
    use isopace_host::RestartPolicy;
    use serde_json::json;

    use super::*;

    fn registry() -> Registry {
        let mut registry = Registry::new();
        super::super::register(&mut registry).unwrap();
        registry
    }

    fn migrated(
        descriptor: serde_json::Value,
    ) -> Result<(Descriptor, Vec<String>), DescriptorError> {
        let mut d = Descriptor::parse(&descriptor.to_string(), "deploy/worker.json")?;
        let deprecations = registry().migrate(&mut d)?;
        Ok((d, deprecations.iter().map(ToString::to_string).collect()))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_old_restart_field_maps_to_the_descriptors_restart() {
        let (d, said) = migrated(json!({
            "name": "worker", "type": "exec",
            "config": {
                "command": ["sleep", "1"], "restart": "always",
                "backoff": {"initial": "10ms", "max": "2s"},
                "max_restarts": 3, "restart_window": "10s"
            }
        }))
        .unwrap();
        assert_eq!(
            d.restart,
            RestartPolicy::always()
                .backoff(ms(10))
                .max_backoff(ms(2000))
                .max_restarts(3)
                .window(Duration::from_secs(10))
        );
        assert_eq!(d.config, json!({"command": ["sleep", "1"]}));
        let prefix = "deploy/worker.json: ";
        assert_eq!(
            said,
            [
                "`config.restart` is deprecated; use `restart.policy`",
                "`config.backoff.initial` is deprecated; use `restart.backoff`",
                "`config.backoff.max` is deprecated; use `restart.max_backoff`",
                "`config.max_restarts` is deprecated; use `restart.max_restarts`",
                "`config.restart_window` is deprecated; use `restart.window`",
            ]
            .map(|s| format!("{prefix}{s}"))
        );
        registry().check(&d).unwrap();
    }

    #[test]
    fn old_policy_names_and_backoff_defaults_keep_their_meaning() {
        for (old, new) in [
            ("never", Restart::Never),
            ("on-failure", Restart::OnFailure),
            ("always", Restart::Always),
        ] {
            let (d, _) = migrated(json!({
                "name": "w", "type": "exec", "config": {"command": ["x"], "restart": old}
            }))
            .unwrap();
            assert_eq!(d.restart.policy, new, "{old}");
        }
        // exec's backoff started at 1s and stopped at 30s; an object that leaves a delay
        // out still means exec's default for it.
        let (d, said) = migrated(json!({
            "name": "w", "type": "exec", "config": {"command": ["x"], "backoff": {"max": "5s"}}
        }))
        .unwrap();
        assert_eq!(
            (d.restart.backoff, d.restart.max_backoff),
            (ms(1000), ms(5000))
        );
        assert_eq!(said.len(), 1);
        assert!(said[0].contains("`config.backoff.max`"), "{said:?}");
        let (d, said) = migrated(json!({
            "name": "w", "type": "exec", "config": {"command": ["x"], "backoff": {}}
        }))
        .unwrap();
        assert_eq!(
            (d.restart.backoff, d.restart.max_backoff),
            (ms(1000), ms(30_000))
        );
        assert_eq!(
            said,
            ["deploy/worker.json: `config.backoff` is deprecated; use `restart.backoff`"]
        );
        // Without old fields, nothing moves and nothing is said.
        let (d, said) = migrated(json!({
            "name": "w", "type": "exec", "config": {"command": ["x"]}
        }))
        .unwrap();
        assert_eq!(d.restart, RestartPolicy::on_failure());
        assert!(said.is_empty());
    }

    #[test]
    fn the_descriptors_own_restart_fields_win() {
        let (d, said) = migrated(json!({
            "name": "w", "type": "exec",
            "restart": {"policy": "never", "max_restarts": 9},
            "config": {"command": ["x"], "restart": "always", "max_restarts": 2, "restart_window": "5s"}
        }))
        .unwrap();
        assert_eq!(
            d.restart,
            RestartPolicy::never()
                .max_restarts(9)
                .window(Duration::from_secs(5))
        );
        assert_eq!(said.len(), 3);
        assert!(said[0].ends_with("(ignored here: the descriptor sets `restart.policy` itself)"));
        assert!(said[1].contains("ignored here"));
        assert!(!said[2].contains("ignored here"));
    }

    #[test]
    fn bad_old_values_are_still_refused_where_they_are() {
        for (config, field, needle) in [
            (
                json!({"restart": "sometimes"}),
                "config.restart",
                "on-failure",
            ),
            (
                json!({"backoff": {"initial": "0s"}}),
                "config.backoff",
                "greater than zero",
            ),
            (
                json!({"backoff": {"initial": "2s", "max": "1s"}}),
                "config.backoff",
                "less than",
            ),
            (
                json!({"backoff": {"first": "1s"}}),
                "config.backoff.first",
                "unknown field",
            ),
            (json!({"max_restarts": -1}), "config.max_restarts", "u32"),
            (
                json!({"restart_window": "soon"}),
                "config.restart_window",
                "",
            ),
        ] {
            let mut config = config.as_object().unwrap().clone();
            config.insert("command".into(), json!(["x"]));
            let text = format!(
                "{{\"name\": \"w\", \"type\": \"exec\",\n \"config\": {}}}",
                serde_json::Value::Object(config)
            );
            let mut d = Descriptor::parse(&text, "w.json").unwrap();
            let err = registry().migrate(&mut d).unwrap_err();
            assert_eq!(err.field_path(), Some(field), "{err}");
            assert_eq!(err.position().map(|at| at.line), Some(2), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        // A moved backoff beyond the descriptor's own cap.
        let err = migrated(json!({
            "name": "w", "type": "exec", "restart": {"max_backoff": "1s"},
            "config": {"command": ["x"], "backoff": {"initial": "2s", "max": "3s"}}
        }))
        .unwrap_err();
        assert_eq!(err.field_path(), Some("restart.max_backoff"), "{err}");
    }
}
