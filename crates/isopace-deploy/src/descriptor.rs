//! Descriptor files: reading, parsing with positions, and `${VAR}` substitution.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use std::time::Duration;

use isopace_config::ReadError;
use isopace_host::{Restart, RestartPolicy};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    error::{DescriptorError, ErrorKind, Position},
    migrate::{RestartField, RestartFields},
    subst::{self, Lookup, SubstErrorKind},
};

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// The largest descriptor file read. Larger files are rejected without being read whole.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1024 * 1024;

/// A declarative deployment record: one JSON object per `*.json` file.
///
/// ```json
/// { "name": "edge", "type": "tcp-proxy", "enabled": true, "critical": true,
///   "restart": { "policy": "on-failure", "backoff": "100ms", "max_backoff": "30s",
///                "max_restarts": 5, "window": "60s" },
///   "config": { "listen": "127.0.0.1:7000", "upstream": "${UPSTREAM:-127.0.0.1:7001}" } }
/// ```
///
/// `name` and `type` are required, `enabled` defaults to true, `config` (an object) is
/// handed to the type's factory after `${VAR}` substitution. `critical` (default true) says
/// whether readiness needs the component; `restart` is its restart policy, by default
/// `on-failure` with a backoff from 100 ms to 30 s and at most 5 restarts in 60 s (each
/// field may be given alone). Any other top-level field is an error, so a typo never deploys
/// silently.
///
/// [`parse`](Descriptor::parse) reads one from text by the rules the deployer applies to
/// files; [`new`](Descriptor::new) builds one in code. Either can be given to
/// [`Registry::check`](crate::Registry::check) and [`Registry::build`](crate::Registry::build).
/// A parsed descriptor remembers where its parts are in the text, so a config its factory
/// rejects is reported at a line and column; one built in code (or whose config was replaced)
/// is reported by its field path alone.
///
/// ```
/// use isopace_deploy::Descriptor;
///
/// let parsed = Descriptor::parse(r#"{"name": "edge", "type": "tcp-proxy"}"#, "edge.json")?;
/// let built = Descriptor::new("edge", "tcp-proxy").file("edge.json");
/// assert_eq!(parsed, built);
/// assert!(parsed.enabled);
/// assert_eq!(parsed.config, serde_json::json!({}));
/// # Ok::<(), isopace_deploy::DescriptorError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Descriptor {
    /// The component's name, unique across the directory.
    pub name: String,
    /// The registered type whose factory builds the component.
    pub type_name: String,
    /// Whether the component should run.
    pub enabled: bool,
    /// Whether readiness needs the component running and ready.
    pub critical: bool,
    /// How the host restarts the component after it fails.
    pub restart: RestartPolicy,
    /// The factory's configuration, with `${VAR}` substituted: an object (`{}` when absent).
    pub config: serde_json::Value,
    /// Where it was read from; empty for a descriptor built in code.
    pub file: PathBuf,
    /// Where the parts are in the text it was parsed from.
    pub(crate) located: Option<Located>,
    /// The `restart` fields the descriptor sets itself, which a migration leaves alone.
    pub(crate) restart_given: RestartFields,
    /// Whether the registry's migrations for its type have run on it.
    pub(crate) migrated: bool,
    /// Unique per parse, so an unchanged file is recognised without comparing configs.
    pub(crate) version: u64,
    /// The values `${VAR}` substitution took from the environment, by variable name.
    pub(crate) secrets: Arc<[(String, String)]>,
}

/// Values shorter than this are not redacted: they hide nothing, and replacing every `80`
/// or `on` would garble the text around them.
const MIN_REDACTED_LEN: usize = 4;

/// Where a parsed descriptor's parts are in its file.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// Where the `type` value is.
    pub(crate) type_at: Position,
    /// The substituted configuration text, which keeps the file's line numbers, and where it
    /// starts; `None` once the config was replaced in code.
    pub(crate) config: Option<(String, Position)>,
}

impl Descriptor {
    /// A descriptor built in code: enabled, with an empty config (`{}`) and no file.
    ///
    /// Nothing is substituted in values given in code.
    #[must_use]
    pub fn new(name: impl Into<String>, type_name: impl Into<String>) -> Descriptor {
        Descriptor {
            name: name.into(),
            type_name: type_name.into(),
            enabled: true,
            critical: true,
            restart: default_restart(),
            config: serde_json::Value::Object(serde_json::Map::new()),
            file: PathBuf::new(),
            located: None,
            restart_given: RestartFields::default(),
            migrated: false,
            version: next_version(),
            secrets: Arc::from([]),
        }
    }

    /// With this config for the type's factory (an object, as in a file).
    #[must_use]
    pub fn config(mut self, config: serde_json::Value) -> Descriptor {
        self.config = config;
        if let Some(located) = &mut self.located {
            located.config = None;
        }
        // A new config may hold deprecated fields again.
        self.migrated = false;
        self
    }

    /// Enabled or not: a deployer runs only enabled descriptors.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Descriptor {
        self.enabled = enabled;
        self
    }

    /// Critical to readiness or not.
    #[must_use]
    pub fn critical(mut self, critical: bool) -> Descriptor {
        self.critical = critical;
        self
    }

    /// With this restart policy, every field of it set by the descriptor (see
    /// [`sets_restart`](Descriptor::sets_restart)).
    #[must_use]
    pub fn restart(mut self, restart: RestartPolicy) -> Descriptor {
        self.restart = restart;
        self.restart_given = RestartFields::ALL;
        self
    }

    /// With this file, which its errors name.
    #[must_use]
    pub fn file(mut self, file: impl Into<PathBuf>) -> Descriptor {
        self.file = file.into();
        self
    }

    /// Parses a descriptor from `text` by the rules the deployer applies to each file, with
    /// `${VAR}` values from the process environment; errors name `file`, the line:column and
    /// the field.
    ///
    /// ```
    /// use isopace_deploy::{Descriptor, ErrorKind};
    ///
    /// let text = "{\"name\": \"edge\",\n \"tpye\": \"tcp-proxy\"}";
    /// let err = Descriptor::parse(text, "deploy/edge.json").unwrap_err();
    /// assert_eq!(err.kind(), &ErrorKind::Field);
    /// assert_eq!(err.position().map(|at| at.line), Some(2));
    /// assert!(err.to_string().starts_with("deploy/edge.json:2:"), "{err}");
    /// assert!(err.detail().starts_with("unknown field `tpye`"), "{err}");
    /// ```
    pub fn parse(text: &str, file: impl Into<PathBuf>) -> Result<Descriptor, DescriptorError> {
        Descriptor::parse_with_env(text, file, &|name: &str| std::env::var(name).ok())
    }

    /// Like [`parse`](Descriptor::parse), with `${VAR}` values from `env` instead of the
    /// process environment.
    ///
    /// ```
    /// use isopace_deploy::Descriptor;
    ///
    /// let text = r#"{"name": "edge", "type": "tcp-proxy", "config": {"up": "${UP:-b:2}", "port": "${PORT}"}}"#;
    /// let env = |name: &str| (name == "PORT").then(|| "7000".to_owned());
    /// let d = Descriptor::parse_with_env(text, "edge.json", &env)?;
    /// assert_eq!(d.config, serde_json::json!({"up": "b:2", "port": "7000"}));
    /// # Ok::<(), isopace_deploy::DescriptorError>(())
    /// ```
    pub fn parse_with_env(
        text: &str,
        file: impl Into<PathBuf>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Descriptor, DescriptorError> {
        Descriptor::parse_text(file.into(), text, &env)
    }

    /// Parses a descriptor from the bytes of `file`, substituting `${VAR}` from `env`.
    pub(crate) fn from_bytes(
        file: &Path,
        bytes: &[u8],
        env: &dyn Lookup,
    ) -> Result<Descriptor, DescriptorError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let at = Position::of(
                &String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
                e.valid_up_to(),
            );
            DescriptorError::new(file, ErrorKind::Syntax)
                .at(at)
                .message(format!("invalid UTF-8 at byte {}", e.valid_up_to()))
        })?;
        Descriptor::parse_text(file.to_path_buf(), text, env)
    }

    fn parse_text(
        file: PathBuf,
        text: &str,
        env: &dyn Lookup,
    ) -> Result<Descriptor, DescriptorError> {
        if text.trim().is_empty() {
            return Err(DescriptorError::new(&file, ErrorKind::Syntax)
                .at(Position::START)
                .message("the file is empty; expected a JSON object with `name` and `type`"));
        }
        let raw: RawDescriptor<'_> = serde_json::from_str(text)
            .map_err(|e| DescriptorError::from_json(&file, e, Position::START, None))?;
        let at = |value: &RawValue| Position::of(text, offset_in(text, value.get()));

        let name_at = at(raw.name);
        let name: String = serde_json::from_str(raw.name.get())
            .map_err(|e| DescriptorError::from_json(&file, e, name_at, Some("name")))?;
        if name.trim().is_empty() {
            return Err(DescriptorError::new(&file, ErrorKind::Field)
                .at(name_at)
                .field("name")
                .message("must not be empty"));
        }
        let type_at = at(raw.type_name);
        let type_name: String = serde_json::from_str(raw.type_name.get())
            .map_err(|e| DescriptorError::from_json(&file, e, type_at, Some("type")))?;
        if type_name.trim().is_empty() {
            return Err(DescriptorError::new(&file, ErrorKind::Field)
                .at(type_at)
                .field("type")
                .message("must not be empty"));
        }

        let flag = |value: Option<&RawValue>, field: &str| match value {
            None => Ok(true),
            Some(value) => serde_json::from_str::<bool>(value.get())
                .map_err(|e| DescriptorError::from_json(&file, e, at(value), Some(field))),
        };
        let enabled = flag(raw.enabled, "enabled")?;
        let critical = flag(raw.critical, "critical")?;
        let (restart, restart_given) = match raw.restart {
            None => (default_restart(), RestartFields::default()),
            Some(value) => parse_restart(&file, value.get(), at(value))?,
        };

        let mut secrets = Vec::new();
        let (config_text, config_at) = match raw.config {
            None => ("{}".to_owned(), Position::START),
            Some(config) => {
                let config_at = at(config);
                if !config.get().starts_with('{') {
                    return Err(DescriptorError::new(&file, ErrorKind::Field)
                        .at(config_at)
                        .field("config")
                        .message("must be a JSON object"));
                }
                let (substituted, found) = subst::substitute(config.get(), env).map_err(|e| {
                    let kind = match &e.kind {
                        SubstErrorKind::Unset(name) => ErrorKind::UnsetVariable(name.clone()),
                        SubstErrorKind::Malformed(_) => ErrorKind::Field,
                    };
                    DescriptorError::new(&file, kind)
                        .at(config_at.advance(&config.get()[..e.offset]))
                        .field("config")
                        .message(e.kind.to_string())
                })?;
                secrets = found;
                (substituted, config_at)
            }
        };
        let config = serde_json::from_str(&config_text)
            .map_err(|e| DescriptorError::from_json(&file, e, config_at, Some("config")))?;
        Ok(Descriptor {
            name,
            type_name,
            enabled,
            critical,
            restart,
            config,
            file,
            located: Some(Located {
                type_at,
                config: Some((config_text, config_at)),
            }),
            restart_given,
            migrated: false,
            version: next_version(),
            secrets: secrets.into(),
        })
    }

    /// `text` with every value that `${VAR}` substitution took from the environment
    /// replaced by its `${VAR}` reference, so an error message or a log line never shows a
    /// secret passed in through the environment. Values shorter than four characters are
    /// left as they are.
    ///
    /// ```
    /// use isopace_deploy::Descriptor;
    ///
    /// let text = r#"{"name": "db", "type": "x", "config": {"dsn": "${DSN}"}}"#;
    /// let env = |name: &str| (name == "DSN").then(|| "pg://admin:hunter22@db".to_owned());
    /// let d = Descriptor::parse_with_env(text, "db.json", &env)?;
    /// assert_eq!(
    ///     d.redact("cannot reach pg://admin:hunter22@db"),
    ///     "cannot reach ${DSN}"
    /// );
    /// # Ok::<(), isopace_deploy::DescriptorError>(())
    /// ```
    pub fn redact(&self, text: &str) -> String {
        redact_with(&self.secrets, text)
    }

    /// A redactor for this descriptor's secrets that outlives it (for logs about its
    /// component).
    pub(crate) fn redactor(&self) -> Option<isopace_host::Redact> {
        if self.secrets.iter().all(|(_, v)| v.len() < MIN_REDACTED_LEN) {
            return None;
        }
        let secrets = Arc::clone(&self.secrets);
        Some(Arc::new(move |text: &str| redact_with(&secrets, text)))
    }

    /// `error` with this descriptor's secrets redacted from its message and causes.
    pub(crate) fn redact_error(&self, error: DescriptorError) -> DescriptorError {
        match self.redactor() {
            Some(redact) => error.redacted(&*redact),
            None => error,
        }
    }

    /// Whether `other` describes the same component (name, type, enabled and config), so a
    /// change of whitespace or key order is not a change.
    pub(crate) fn same_as(&self, other: &Descriptor) -> bool {
        self.version == other.version
            || self.name == other.name
                && self.type_name == other.type_name
                && self.enabled == other.enabled
                && self.critical == other.critical
                && self.restart == other.restart
                && self.config == other.config
    }

    /// Where the `type` value is in the file, when parsed from one.
    pub(crate) fn type_at(&self) -> Option<Position> {
        self.located.as_ref().map(|l| l.type_at)
    }

    /// The config's text in the file and where it starts, when it still says what
    /// [`config`](Self::config) says (the field is public and may have been replaced).
    pub(crate) fn config_in_file(&self) -> Option<(&str, Position)> {
        let (text, at) = self.located.as_ref()?.config.as_ref()?;
        let current = serde_json::from_str::<serde_json::Value>(text).ok()?;
        (current == self.config).then_some((text.as_str(), *at))
    }
}

fn redact_with(secrets: &[(String, String)], text: &str) -> String {
    let mut text = text.to_owned();
    // Longest first, so a value that contains another is replaced whole.
    let mut secrets: Vec<&(String, String)> = secrets
        .iter()
        .filter(|(_, value)| value.len() >= MIN_REDACTED_LEN)
        .collect();
    secrets.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
    for (name, value) in secrets {
        if text.contains(value.as_str()) {
            text = text.replace(value.as_str(), &format!("${{{name}}}"));
        }
    }
    text
}

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// Equal when the public fields are: where the parts were in a file does not count.
impl PartialEq for Descriptor {
    fn eq(&self, other: &Descriptor) -> bool {
        self.name == other.name
            && self.type_name == other.type_name
            && self.enabled == other.enabled
            && self.critical == other.critical
            && self.restart == other.restart
            && self.config == other.config
            && self.file == other.file
    }
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("name", &self.name)
            .field("type_name", &self.type_name)
            .field("enabled", &self.enabled)
            .field("critical", &self.critical)
            .field("restart", &self.restart)
            .field("config", &self.config)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// The top level of a descriptor, with each field kept as raw text so errors can point into
/// the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor<'a> {
    #[serde(borrow)]
    name: &'a RawValue,
    #[serde(rename = "type", borrow)]
    type_name: &'a RawValue,
    #[serde(borrow)]
    enabled: Option<&'a RawValue>,
    #[serde(borrow)]
    critical: Option<&'a RawValue>,
    #[serde(borrow)]
    restart: Option<&'a RawValue>,
    #[serde(borrow)]
    config: Option<&'a RawValue>,
}

/// A descriptor's restart policy when it names none: restart after failures.
pub(crate) fn default_restart() -> RestartPolicy {
    RestartPolicy::on_failure()
}

/// The `restart` object; every field is optional and defaults as in [`default_restart`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RawPolicy>,
    #[serde(default, with = "isopace_config::serde_duration::option")]
    backoff: Option<Duration>,
    #[serde(default, with = "isopace_config::serde_duration::option")]
    max_backoff: Option<Duration>,
    max_restarts: Option<u32>,
    #[serde(default, with = "isopace_config::serde_duration::option")]
    window: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawPolicy {
    Never,
    OnFailure,
    Always,
}

/// The restart policy in `text`, and which of its fields `text` sets.
fn parse_restart(
    file: &Path,
    text: &str,
    at: Position,
) -> Result<(RestartPolicy, RestartFields), DescriptorError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawRestart = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "restart".to_owned()
        } else {
            format!("restart.{path}")
        };
        DescriptorError::from_json(file, e.into_inner(), at, Some(&field))
    })?;
    let mut given = RestartFields::default();
    for (field, set) in [
        (RestartField::Policy, raw.policy.is_some()),
        (RestartField::Backoff, raw.backoff.is_some()),
        (RestartField::MaxBackoff, raw.max_backoff.is_some()),
        (RestartField::MaxRestarts, raw.max_restarts.is_some()),
        (RestartField::Window, raw.window.is_some()),
    ] {
        if set {
            given.insert(field);
        }
    }
    let mut policy = default_restart();
    if let Some(p) = raw.policy {
        policy = policy.policy(match p {
            RawPolicy::Never => Restart::Never,
            RawPolicy::OnFailure => Restart::OnFailure,
            RawPolicy::Always => Restart::Always,
        });
    }
    if let Some(backoff) = raw.backoff {
        policy = policy.backoff(backoff);
    }
    if let Some(max_backoff) = raw.max_backoff {
        policy = policy.max_backoff(max_backoff);
    }
    if let Some(max_restarts) = raw.max_restarts {
        policy = policy.max_restarts(max_restarts);
    }
    if let Some(window) = raw.window {
        policy = policy.window(window);
    }
    if policy.max_backoff < policy.backoff {
        return Err(DescriptorError::new(file, ErrorKind::Field)
            .at(at)
            .field("restart.max_backoff")
            .message(format!(
                "must not be shorter than `backoff` ({})",
                isopace_config::format_duration(policy.backoff)
            )));
    }
    Ok((policy, given))
}

/// The byte offset of `part` inside `whole`; `part` must be a slice of `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Reads a descriptor file, refusing files over [`MAX_DESCRIPTOR_BYTES`] without reading
/// them whole.
///
/// Only a regular file is read. Opening a FIFO for reading waits for a writer, forever if
/// none comes, and would hold up every later scan and the deployer's shutdown with it; a
/// device may never end. So the type is checked after following links, the file is opened
/// without blocking, and the type is checked again on what was opened, in case the path was
/// swapped in between. Anything else is an [`ErrorKind::Io`] error saying `not a regular
/// file`.
pub(crate) fn read_limited(file: &Path) -> Result<Vec<u8>, DescriptorError> {
    isopace_config::read_regular_file(file, MAX_DESCRIPTOR_BYTES).map_err(|e| match e {
        ReadError::Io(e) => DescriptorError::io(file, e),
        ReadError::TooLarge { len, .. } => too_large(file, len),
        other => DescriptorError::new(file, ErrorKind::Io).message(other.to_string()),
    })
}

/// A file whose name is not UTF-8. It is not read: component names, logs and metrics carry
/// file names as text, which such a name would not survive unchanged.
pub(crate) fn non_utf8_name(file: &Path) -> DescriptorError {
    DescriptorError::new(file, ErrorKind::Io)
        .message("the file name is not valid UTF-8; rename the file to deploy it")
}

fn too_large(file: &Path, len: u64) -> DescriptorError {
    DescriptorError::new(file, ErrorKind::TooLarge).message(format!(
        "the file is {len} bytes; descriptors are limited to {MAX_DESCRIPTOR_BYTES} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
        Descriptor::from_bytes(Path::new("deploy/10_edge.json"), text.as_bytes(), &no_env)
    }

    #[test]
    fn parses_with_defaults() {
        let d = parse(r#"{"name": "edge", "type": "heartbeat"}"#).unwrap();
        assert_eq!(d.name, "edge");
        assert_eq!(d.type_name, "heartbeat");
        assert!(d.enabled);
        assert_eq!(d.config, serde_json::json!({}));
    }

    #[test]
    fn supervision_fields_default_to_a_critical_on_failure_component() {
        let d = parse(r#"{"name": "edge", "type": "heartbeat"}"#).unwrap();
        assert!(d.critical);
        assert_eq!(d.restart, RestartPolicy::on_failure());
        assert_eq!(d.restart.backoff, Duration::from_millis(100));
        assert_eq!(d.restart.max_backoff, Duration::from_secs(30));
        assert_eq!(d.restart.max_restarts, 5);
        assert_eq!(d.restart.window, Duration::from_secs(60));
    }

    #[test]
    fn supervision_fields_are_read_and_each_restart_field_may_come_alone() {
        let d = parse(
            r#"{"name": "job", "type": "exec", "critical": false,
                "restart": {"policy": "always", "max_restarts": 2, "window": "10s"}}"#,
        )
        .unwrap();
        assert!(!d.critical);
        assert_eq!(d.restart.policy, Restart::Always);
        assert_eq!(d.restart.max_restarts, 2);
        assert_eq!(d.restart.window, Duration::from_secs(10));
        assert_eq!(d.restart.backoff, Duration::from_millis(100));
        let changed = parse(r#"{"name": "job", "type": "exec", "critical": false}"#).unwrap();
        assert!(!d.same_as(&changed), "a changed restart policy is a change");
    }

    #[test]
    fn a_bad_flag_or_restart_field_is_named_with_its_position() {
        let err = parse("{\"name\": \"a\", \"type\": \"x\",\n \"enabled\": \"yes\"}").unwrap_err();
        assert_eq!(err.field_path(), Some("enabled"));
        assert_eq!(err.position().map(|p| p.line), Some(2));
        let err = parse(r#"{"name": "a", "type": "x", "critical": 1}"#).unwrap_err();
        assert_eq!(err.field_path(), Some("critical"));
        let err =
            parse(r#"{"name": "a", "type": "x", "restart": {"policy": "sometimes"}}"#).unwrap_err();
        assert_eq!(err.field_path(), Some("restart.policy"), "{err}");
        assert!(err.to_string().contains("on-failure"), "{err}");
        let err = parse(r#"{"name": "a", "type": "x", "restart": {"backof": "1s"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `backof`"), "{err}");
        let err =
            parse(r#"{"name": "a", "type": "x", "restart": {"backoff": "soon"}}"#).unwrap_err();
        assert_eq!(err.field_path(), Some("restart.backoff"), "{err}");
        let err = parse(
            r#"{"name": "a", "type": "x", "restart": {"backoff": "10s", "max_backoff": "1s"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.field_path(), Some("restart.max_backoff"), "{err}");
    }

    #[test]
    fn an_unknown_field_names_file_position_and_field() {
        let err =
            parse("{\"name\": \"edge\",\n \"type\": \"x\",\n \"enabeld\": false}").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("deploy/10_edge.json:3:"), "{text}");
        assert!(text.contains("unknown field `enabeld`"), "{text}");
    }

    #[test]
    fn missing_and_empty_names_are_errors() {
        let err = parse(r#"{"type": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
        let err = parse("{\"name\": \"  \", \"type\": \"x\"}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "deploy/10_edge.json:1:10: field `name`: must not be empty"
        );
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err = parse("{\"name\": \"edge\",\n  \"type\": \"x\"\n").unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Syntax);
        assert_eq!(err.position().unwrap().line, 3);
        assert_eq!(err.to_string(), "deploy/10_edge.json:3:1: invalid JSON");
        let json = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<serde_json::Error>())
            .expect("serde_json's error is the source");
        assert!(json.is_eof());
        assert!(
            err.detail().starts_with("invalid JSON: EOF while parsing"),
            "{err:?}"
        );
        let err = Descriptor::from_bytes(Path::new("f.json"), b"{\"name\": \"\xff\"}", &no_env)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("f.json:1:11: invalid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn config_must_be_an_object_and_is_substituted() {
        let err = parse(r#"{"name": "a", "type": "x", "config": [1]}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("field `config`: must be a JSON object"),
            "{err}"
        );
        let env = |name: &str| (name == "PORT").then(|| "7001".to_owned());
        let d = Descriptor::from_bytes(
            Path::new("f.json"),
            br#"{"name": "a", "type": "x", "config": {"up": "127.0.0.1:${PORT}", "x": "${X:-y}"}}"#,
            &env,
        )
        .unwrap();
        assert_eq!(
            d.config,
            serde_json::json!({"up": "127.0.0.1:7001", "x": "y"})
        );
    }

    #[test]
    fn an_unset_variable_names_the_variable_and_the_file() {
        let err =
            parse("{\"name\": \"a\", \"type\": \"x\",\n \"config\": {\"up\": \"${UPSTREAM}\"}}")
                .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::UnsetVariable("UPSTREAM".into()));
        let text = err.to_string();
        assert!(
            text.starts_with("deploy/10_edge.json:2:20: field `config`:"),
            "{text}"
        );
        assert!(text.contains("`UPSTREAM` is not set"), "{text}");
    }

    #[test]
    fn parse_reads_text_by_the_file_rules() {
        let d = Descriptor::parse_with_env(
            r#"{"name": "a", "type": "x", "enabled": false, "config": {"k": "${K:-v}"}}"#,
            "a.json",
            &no_env,
        )
        .unwrap();
        assert_eq!(
            d,
            Descriptor::new("a", "x")
                .enabled(false)
                .config(serde_json::json!({"k": "v"}))
                .file("a.json")
        );
        let err = Descriptor::parse("  ", "a.json").unwrap_err();
        assert!(
            err.to_string().starts_with("a.json:1:1: the file is empty"),
            "{err}"
        );
        let err =
            Descriptor::parse(r#"{"name": "a", "type": "x", "extra": 1}"#, "a.json").unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Field);
        assert!(std::error::Error::source(&err).is_none());
    }

    #[test]
    fn whitespace_changes_are_the_same_descriptor() {
        let a = parse(r#"{"name": "a", "type": "x", "config": {"k": 1, "j": 2}}"#).unwrap();
        let b = parse("{\n\"name\":\"a\",\"type\":\"x\",\"config\":{\"j\":2,\"k\":1}}").unwrap();
        assert!(a.same_as(&b));
    }

    /// Runs `read` on a thread and gives up after a few seconds, so a read that blocks fails
    /// the test instead of hanging it (the stuck thread is abandoned).
    fn bounded(
        read: impl FnOnce() -> Result<Vec<u8>, DescriptorError> + Send + 'static,
    ) -> DescriptorError {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read()));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("reading a file that is not a regular file must not block")
            .expect_err("only regular files are read")
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_read_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = bounded(move || read_limited(&fifo));
        assert_eq!(err.kind(), &ErrorKind::Io);
        assert_eq!(err.detail(), "not a regular file (a FIFO)");
        assert!(
            err.to_string()
                .ends_with("pipe.json: not a regular file (a FIFO)"),
            "{err}"
        );

        let sub = dir.path().join("sub.json");
        fs::create_dir(&sub).unwrap();
        let err = read_limited(&sub).unwrap_err();
        assert_eq!(err.detail(), "not a regular file (a directory)");

        let null = dir.path().join("null.json");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        let err = read_limited(&null).unwrap_err();
        assert_eq!(err.detail(), "not a regular file (a character device)");
        assert_eq!(err.file(), null);

        let file = dir.path().join("a.json");
        fs::write(&file, "{}").unwrap();
        assert_eq!(read_limited(&file).unwrap(), b"{}");
    }
}
