//! `${VAR}` and `${VAR:-default}` substitution inside the string values of a JSON text.
//!
//! Works on the raw text rather than on a parsed tree so that line numbers in later errors
//! still point into the operator's file: a substituted value is JSON-escaped in place and
//! never adds a line. Object keys are left alone; only string *values* are substituted.

use std::fmt;

/// Where to look variables up.
pub(crate) trait Lookup {
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A substitution that could not be made, with its byte offset in the input text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubstError {
    pub(crate) offset: usize,
    pub(crate) kind: SubstErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubstErrorKind {
    /// `${NAME}` with NAME unset and no default.
    Unset(String),
    /// `${` without a closing `}` or with an invalid name.
    Malformed(String),
}

impl fmt::Display for SubstErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubstErrorKind::Unset(name) => write!(
                f,
                "environment variable `{name}` is not set and `${{{name}}}` has no default (write `${{{name}:-default}}`)"
            ),
            SubstErrorKind::Malformed(text) => write!(
                f,
                "malformed substitution `{text}`: expected `${{NAME}}` or `${{NAME:-default}}` (write `$${{` for a literal `${{`)"
            ),
        }
    }
}

/// The values substituted from the environment, by variable name: what error messages and
/// logs must not show.
pub(crate) type Substituted = Vec<(String, String)>;

/// Substitutes every `${...}` in the string values of `json`; returns the text and the
/// values that came from the environment (defaults are written in the file and are not
/// recorded).
pub(crate) fn substitute(
    json: &str,
    env: &dyn Lookup,
) -> Result<(String, Substituted), SubstError> {
    let mut substituted = Substituted::new();
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        // A string literal from `start` (the opening quote) to `end` (the closing quote).
        let start = i;
        let mut end = i + 1;
        while end < bytes.len() && bytes[end] != b'"' {
            if bytes[end] == b'\\' {
                // Skip the escaped character whole, which may be multi-byte.
                end += 1 + json[end + 1..].chars().next().map_or(0, char::len_utf8);
            } else {
                end += 1;
            }
        }
        let end = end.min(bytes.len());
        i = end + 1;
        if !json[start..end].contains('$') || is_key(bytes, i) {
            continue;
        }
        out.push_str(&json[copied..start + 1]);
        expand(
            &json[start + 1..end],
            start + 1,
            env,
            &mut out,
            &mut substituted,
        )?;
        copied = end;
    }
    out.push_str(&json[copied..]);
    Ok((out, substituted))
}

/// Whether the string literal that ended just before `after` is an object key.
fn is_key(bytes: &[u8], after: usize) -> bool {
    bytes[after.min(bytes.len())..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        == Some(&b':')
}

/// Expands the raw (still JSON-escaped) contents of one string literal into `out`.
fn expand(
    raw: &str,
    base: usize,
    env: &dyn Lookup,
    out: &mut String,
    substituted: &mut Substituted,
) -> Result<(), SubstError> {
    let mut rest = raw;
    let mut offset = base;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
            offset += pos + 3;
            continue;
        }
        let Some(body) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            offset += pos + 1;
            continue;
        };
        let at = offset + pos;
        let Some(close) = body.find('}') else {
            return Err(SubstError {
                offset: at,
                kind: SubstErrorKind::Malformed(after.chars().take(32).collect()),
            });
        };
        let inner = &body[..close];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if !is_var_name(name) {
            return Err(SubstError {
                offset: at,
                kind: SubstErrorKind::Malformed(format!("${{{inner}}}")),
            });
        }
        match env.var(name) {
            Some(value) => {
                push_escaped(&value, out);
                if !substituted.iter().any(|(n, _)| n == name) {
                    substituted.push((name.to_owned(), value));
                }
            }
            // The default is written in the file, so it is already JSON-escaped.
            None => match default {
                Some(default) => out.push_str(default),
                None => {
                    return Err(SubstError {
                        offset: at,
                        kind: SubstErrorKind::Unset(name.to_owned()),
                    });
                }
            },
        }
        rest = &body[close + 1..];
        offset = at + 2 + close + 1;
    }
    out.push_str(rest);
    Ok(())
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Appends `value` as the contents of a JSON string literal.
fn push_escaped(value: &str, out: &mut String) {
    let quoted = serde_json::to_string(value).expect("a string always serialises");
    out.push_str(&quoted[1..quoted.len() - 1]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "QUOTE" => Some("say \"hi\"\nnow".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(json: &str) -> Result<String, SubstError> {
        substitute(json, &env).map(|(text, _)| text)
    }

    #[test]
    fn values_from_the_environment_are_recorded_and_defaults_are_not() {
        let (_, substituted) = substitute(
            r#"{"a": "${HOST}", "b": "${HOST}/x", "c": "${PORT:-7001}"}"#,
            &env,
        )
        .unwrap();
        assert_eq!(substituted, [("HOST".to_owned(), "db.local".to_owned())]);
    }

    #[test]
    fn substitutes_values_defaults_and_escapes() {
        assert_eq!(
            sub(r#"{"a": "${HOST}:5432", "b": "${PORT:-7001}", "c": "$${HOST}", "d": "$5"}"#)
                .unwrap(),
            r#"{"a": "db.local:5432", "b": "7001", "c": "${HOST}", "d": "$5"}"#
        );
        assert_eq!(sub(r#"{"e": "${EMPTY:-x}"}"#).unwrap(), r#"{"e": ""}"#);
    }

    #[test]
    fn substituted_values_are_json_escaped_and_keep_lines() {
        let out = sub("{\"q\": \"${QUOTE}\"}").unwrap();
        assert_eq!(out, r#"{"q": "say \"hi\"\nnow"}"#);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["q"], "say \"hi\"\nnow");
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn keys_and_escaped_quotes_are_left_alone() {
        let json = r#"{"${HOST}": "x \" ${HOST}"}"#;
        assert_eq!(sub(json).unwrap(), r#"{"${HOST}": "x \" db.local"}"#);
    }

    #[test]
    fn an_unset_variable_without_default_is_an_error_at_its_offset() {
        let json = r#"{"a": "x${NOPE}"}"#;
        let err = sub(json).unwrap_err();
        assert_eq!(err.kind, SubstErrorKind::Unset("NOPE".into()));
        assert_eq!(&json[err.offset..err.offset + 2], "${");
        assert!(err.kind.to_string().contains("`NOPE`"));
    }

    #[test]
    fn malformed_substitutions_are_errors() {
        assert!(matches!(
            sub(r#"{"a": "${HOST"}"#).unwrap_err().kind,
            SubstErrorKind::Malformed(_)
        ));
        assert!(matches!(
            sub(r#"{"a": "${1X}"}"#).unwrap_err().kind,
            SubstErrorKind::Malformed(_)
        ));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for json in [
            "\"",
            "\"\\",
            "\"$",
            "\"${",
            "{\"a\":\"${A:-",
            "\"\\\"${",
            "\"é${é}\"",
        ] {
            let _ = sub(json);
        }
    }
}
