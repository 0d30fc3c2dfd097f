//! Preflight: checks of a config against the machine it is about to run on — a program
//! that exists, a directory, an address that can be bound — beyond what its shape says.

use std::{fmt, path::Path};

use crate::{Descriptor, error::Position};

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The component cannot work as configured (its program does not exist): `validate`
    /// fails, and [`Registry::build`](crate::Registry::build) refuses to build it.
    Error,
    /// It may not work here and now, but may later or elsewhere (a port that a running
    /// daemon holds): `validate` reports it and passes, and a build does not look.
    Warning,
}

impl Severity {
    /// The severity as a lowercase word, for output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a preflight check found about one field of a config.
///
/// The field is its path inside the config (`command`, `backoff.initial`); reports name it
/// from the descriptor (`config.command`), with the line:column where the file writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    severity: Severity,
    field: String,
    message: String,
}

impl Finding {
    /// An error about `field`: the component cannot work as configured.
    pub fn error(field: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A warning about `field`: it may not work here and now.
    pub fn warning(field: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            field: field.into(),
            message: message.into(),
        }
    }

    /// How serious it is.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The field's path inside the config.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// When a preflight check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Validating a descriptor ([`validate_dir_with`](crate::validate_dir_with), `isopace
    /// validate`): every finding is reported.
    Validate,
    /// Building its component ([`Registry::build`](crate::Registry::build), on every
    /// deploy, redeploy and restart): only errors count, so a check that can only warn may
    /// return at once.
    Build,
}

/// What a preflight check knows besides the config it checks.
#[derive(Debug, Clone, Copy)]
pub struct PreflightContext<'a> {
    pub(crate) name: &'a str,
    pub(crate) file: &'a Path,
    pub(crate) stage: Stage,
}

impl PreflightContext<'_> {
    /// The component's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The descriptor's file; empty for a descriptor built in code.
    pub fn file(&self) -> &Path {
        self.file
    }

    /// When the check runs.
    pub fn stage(&self) -> Stage {
        self.stage
    }
}

/// Where `config.<path>` is written in the descriptor's file, when it was parsed from one
/// and its config is unchanged: the position of the field's value, or of the deepest part
/// of the path the file writes.
pub(crate) fn field_at(descriptor: &Descriptor, path: &str) -> Option<Position> {
    let (mut text, mut at) = descriptor.config_in_file()?;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        let Some(value) = member(text, key) else {
            break;
        };
        at = at.advance(&text[..offset_in(text, value)]);
        text = value;
    }
    Some(at)
}

/// The text of member `key` of the JSON object or array `text`.
fn member<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    use serde_json::value::RawValue;
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        return items.get(key.parse::<usize>().ok()?).map(|v| v.get());
    }
    // A map keeps the last of duplicate keys, as decoding the config does.
    let members: std::collections::HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    members.get(key).map(|v| v.get())
}

/// The byte offset of `part` inside `whole`; `part` must be a slice of `whole`.
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_found_where_the_file_writes_it() {
        let text = "{\"name\": \"a\", \"type\": \"t\",\n \"config\": {\"cwd\": \"/x\",\n   \
                    \"command\": [\"a\", \"b\"], \"backoff\": {\"initial\": \"1s\"}}}";
        let d = Descriptor::parse(text, "a.json").unwrap();
        let at = |path| field_at(&d, path).map(|p| p.to_string());
        assert_eq!(at("cwd").as_deref(), Some("2:20"));
        assert_eq!(at("command").as_deref(), Some("3:15"));
        assert_eq!(at("command.1").as_deref(), Some("3:21"));
        assert_eq!(at("backoff.initial").as_deref(), Some("3:50"));
        // What the file does not write is placed at the deepest part it does.
        assert_eq!(at("listen").as_deref(), Some("2:12"));
        assert_eq!(at("backoff.max").as_deref(), Some("3:38"));
        // Built in code, or replaced since: no position rather than a wrong one.
        assert_eq!(field_at(&Descriptor::new("a", "t"), "cwd"), None);
        let replaced = d.clone().config(serde_json::json!({ "cwd": "/y" }));
        assert_eq!(field_at(&replaced, "cwd"), None);
    }
}
