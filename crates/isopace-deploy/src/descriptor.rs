//! Descriptor files: reading, parsing with positions, and `${VAR}` substitution.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    error::{DescriptorError, ErrorKind, Position},
    subst::{self, Lookup, SubstErrorKind},
};

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

/// The largest descriptor file read. Larger files are rejected without being read whole.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1024 * 1024;

/// A declarative deployment record: one JSON object per `*.json` file.
///
/// ```json
/// { "name": "edge", "type": "tcp-proxy", "enabled": true,
///   "config": { "listen": "127.0.0.1:7000", "upstream": "${UPSTREAM:-127.0.0.1:7001}" } }
/// ```
///
/// `name` and `type` are required, `enabled` defaults to true, `config` (an object) is
/// handed to the type's factory after `${VAR}` substitution. Any other top-level field is an
/// error, so a typo never deploys silently.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    /// The component's name, unique across the directory.
    pub name: String,
    /// The registered type whose factory builds the component.
    pub type_name: String,
    /// Whether the component should run.
    pub enabled: bool,
    /// The factory's configuration, with `${VAR}` substituted: an object (`{}` when absent).
    pub config: serde_json::Value,
    /// Where it was read from.
    pub file: PathBuf,
    /// The substituted configuration text, which keeps the file's line numbers.
    pub(crate) config_text: String,
    /// Where `config_text` starts in the file.
    pub(crate) config_at: Position,
    /// Where the `type` value is in the file.
    pub(crate) type_at: Position,
    /// Unique per parse, so an unchanged file is recognised without comparing configs.
    pub(crate) version: u64,
}

impl Descriptor {
    /// Parses a descriptor from the bytes of `file`, substituting `${VAR}` from `env`.
    pub(crate) fn parse(
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
        if text.trim().is_empty() {
            return Err(DescriptorError::new(file, ErrorKind::Syntax)
                .at(Position::START)
                .message("the file is empty; expected a JSON object with `name` and `type`"));
        }
        let raw: RawDescriptor<'_> = serde_json::from_str(text)
            .map_err(|e| DescriptorError::from_json(file, &e, Position::START, None))?;
        let at = |value: &RawValue| Position::of(text, offset_in(text, value.get()));

        let name_at = at(raw.name);
        let name: String = serde_json::from_str(raw.name.get())
            .map_err(|e| DescriptorError::from_json(file, &e, name_at, Some("name")))?;
        if name.trim().is_empty() {
            return Err(DescriptorError::new(file, ErrorKind::Field)
                .at(name_at)
                .field("name")
                .message("must not be empty"));
        }
        let type_at = at(raw.type_name);
        let type_name: String = serde_json::from_str(raw.type_name.get())
            .map_err(|e| DescriptorError::from_json(file, &e, type_at, Some("type")))?;
        if type_name.trim().is_empty() {
            return Err(DescriptorError::new(file, ErrorKind::Field)
                .at(type_at)
                .field("type")
                .message("must not be empty"));
        }

        let (config_text, config_at) = match raw.config {
            None => ("{}".to_owned(), Position::START),
            Some(config) => {
                let config_at = at(config);
                if !config.get().starts_with('{') {
                    return Err(DescriptorError::new(file, ErrorKind::Field)
                        .at(config_at)
                        .field("config")
                        .message("must be a JSON object"));
                }
                let substituted = subst::substitute(config.get(), env).map_err(|e| {
                    let kind = match &e.kind {
                        SubstErrorKind::Unset(name) => ErrorKind::UnsetVariable(name.clone()),
                        SubstErrorKind::Malformed(_) => ErrorKind::Field,
                    };
                    DescriptorError::new(file, kind)
                        .at(config_at.advance(&config.get()[..e.offset]))
                        .field("config")
                        .message(e.kind.to_string())
                })?;
                (substituted, config_at)
            }
        };
        let config = serde_json::from_str(&config_text)
            .map_err(|e| DescriptorError::from_json(file, &e, config_at, Some("config")))?;
        Ok(Descriptor {
            name,
            type_name,
            enabled: raw.enabled.unwrap_or(true),
            config,
            file: file.to_path_buf(),
            config_text,
            config_at,
            type_at,
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Whether `other` describes the same component (name, type, enabled and config), so a
    /// change of whitespace or key order is not a change.
    pub(crate) fn same_as(&self, other: &Descriptor) -> bool {
        self.version == other.version
            || self.name == other.name
                && self.type_name == other.type_name
                && self.enabled == other.enabled
                && self.config == other.config
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
    enabled: Option<bool>,
    #[serde(borrow)]
    config: Option<&'a RawValue>,
}

/// The byte offset of `part` inside `whole`; `part` must be a slice of `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Reads a descriptor file, refusing files over [`MAX_DESCRIPTOR_BYTES`] without reading
/// them whole.
pub(crate) fn read_limited(file: &Path) -> Result<Vec<u8>, DescriptorError> {
    let io = |e: std::io::Error| {
        DescriptorError::new(file, ErrorKind::Io).message(format!("cannot read: {e}"))
    };
    let mut handle = fs::File::open(file).map_err(io)?;
    let len = handle.metadata().map_err(io)?.len();
    if len > MAX_DESCRIPTOR_BYTES {
        return Err(too_large(file, len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    (&mut handle)
        .take(MAX_DESCRIPTOR_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_DESCRIPTOR_BYTES {
        return Err(too_large(file, bytes.len() as u64));
    }
    Ok(bytes)
}

fn too_large(file: &Path, len: u64) -> DescriptorError {
    DescriptorError::new(file, ErrorKind::TooLarge).message(format!(
        "the file is {len} bytes; descriptors are limited to {MAX_DESCRIPTOR_BYTES} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Descriptor, DescriptorError> {
        Descriptor::parse(Path::new("deploy/10_edge.json"), text.as_bytes(), &no_env)
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
        let err =
            Descriptor::parse(Path::new("f.json"), b"{\"name\": \"\xff\"}", &no_env).unwrap_err();
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
        let d = Descriptor::parse(
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
    fn whitespace_changes_are_the_same_descriptor() {
        let a = parse(r#"{"name": "a", "type": "x", "config": {"k": 1, "j": 2}}"#).unwrap();
        let b = parse("{\n\"name\":\"a\",\"type\":\"x\",\"config\":{\"j\":2,\"k\":1}}").unwrap();
        assert!(a.same_as(&b));
    }
}
