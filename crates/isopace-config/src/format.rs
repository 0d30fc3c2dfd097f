//! Turns JSON, TOML or YAML bytes into the one tree type every format shares.

use std::{fmt, path::Path};

use serde_json::{Map, Value};

use crate::Error;

/// A file format the tree can be read from.
///
/// Every variant exists whatever the enabled features, so code that names one compiles
/// either way; reading a format whose feature is off returns [`Error::FormatDisabled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Format {
    /// JSON, the default.
    #[default]
    Json,
    /// TOML (feature `toml`).
    Toml,
    /// YAML (feature `yaml`).
    Yaml,
}

impl Format {
    /// The format a file name implies: `.toml` is TOML, `.yaml`/`.yml` are YAML, anything
    /// else is JSON.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Format::Toml,
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Json,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
        })
    }
}

/// Parses `bytes` into a root object. Empty or whitespace-only input, and a top-level null
/// (what a comments-only YAML file is), are an empty tree.
pub(crate) fn parse_tree(
    bytes: &[u8],
    format: Format,
    file: Option<&Path>,
) -> Result<Map<String, Value>, Error> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value = match format {
        Format::Json => parse_json(bytes, file)?,
        Format::Toml => parse_toml(bytes, file)?,
        Format::Yaml => parse_yaml(bytes, file)?,
    };
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(Error::NotAnObject {
            file: file.map(Path::to_path_buf),
            found: kind(&other),
        }),
    }
}

/// A value's JSON type name, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a parser said, without the position that its own message carries: [`Error::Parse`]
/// names the file, line and column, and an error chain prints both.
#[derive(Debug)]
struct ParserMessage(String);

impl ParserMessage {
    fn new(message: &str) -> Box<Self> {
        Box::new(ParserMessage(message.trim().to_owned()))
    }
}

impl fmt::Display for ParserMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParserMessage {}

fn parse_json(bytes: &[u8], file: Option<&Path>) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message is `{what} at line {l} column {c}`, and it has no other accessor.
        let text = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        Error::Parse {
            format: Format::Json,
            file: file.map(Path::to_path_buf),
            line: e.line(),
            // serde_json says column 0 for an error at a newline; columns count from 1.
            column: if e.line() > 0 { e.column().max(1) } else { 0 },
            source: ParserMessage::new(text.strip_suffix(&suffix).unwrap_or(&text)),
        }
    })
}

/// A UTF-8 failure reported like a parse error, at the line and column of the bad byte.
#[cfg_attr(not(any(feature = "toml", feature = "yaml")), allow(dead_code))]
fn utf8<'a>(bytes: &'a [u8], format: Format, file: Option<&Path>) -> Result<&'a str, Error> {
    std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column(bytes, e.valid_up_to());
        Error::Parse {
            format,
            file: file.map(Path::to_path_buf),
            line,
            column,
            source: Box::new(e),
        }
    })
}

/// 1-based line and column (in characters) of byte `offset`.
#[cfg_attr(not(any(feature = "toml", feature = "yaml")), allow(dead_code))]
fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // Count characters, not bytes: continuation bytes do not start a character.
    let column = before[start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count()
        + 1;
    (line, column)
}

#[cfg(feature = "toml")]
fn parse_toml(bytes: &[u8], file: Option<&Path>) -> Result<Value, Error> {
    let text = utf8(bytes, Format::Toml, file)?;
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((0, 0), |span| line_column(bytes, span.start));
        Error::Parse {
            format: Format::Toml,
            file: file.map(Path::to_path_buf),
            line,
            column,
            // Its `Display` opens with the position and quotes the line; `message` is the rest.
            source: ParserMessage::new(e.message()),
        }
    })?;
    Ok(Value::Object(
        table
            .into_iter()
            .map(|(k, v)| (k, toml_to_json(v)))
            .collect(),
    ))
}

/// TOML has datetimes and non-finite floats, JSON has neither: datetimes become their RFC
/// 3339 text and NaN/infinity become null, so the getters fall back to their defaults.
#[cfg(feature = "toml")]
fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(not(feature = "toml"))]
fn parse_toml(_bytes: &[u8], file: Option<&Path>) -> Result<Value, Error> {
    Err(Error::FormatDisabled {
        format: Format::Toml,
        file: file.map(Path::to_path_buf),
        feature: "toml",
    })
}

#[cfg(feature = "yaml")]
fn parse_yaml(bytes: &[u8], file: Option<&Path>) -> Result<Value, Error> {
    let text = utf8(bytes, Format::Yaml, file)?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| {
            (
                usize::try_from(l.line()).unwrap_or(usize::MAX),
                usize::try_from(l.column()).unwrap_or(usize::MAX),
            )
        });
        Error::Parse {
            format: Format::Yaml,
            file: file.map(Path::to_path_buf),
            line,
            column,
            source: ParserMessage::new(&yaml_message(&e)),
        }
    })
}

/// serde-saphyr's message for a file's author (not for the program's: no "set
/// DuplicateKeyPolicy"), without its snippet and without the location its default localizer
/// appends (the location of an alias's definition, a second place, stays).
#[cfg(feature = "yaml")]
fn yaml_message(e: &serde_saphyr::Error) -> String {
    struct NoLocation;
    impl serde_saphyr::Localizer for NoLocation {
        fn attach_location<'a>(
            &self,
            base: std::borrow::Cow<'a, str>,
            _: serde_saphyr::Location,
        ) -> std::borrow::Cow<'a, str> {
            base
        }
    }
    let formatter = serde_saphyr::UserMessageFormatter.with_localizer(&NoLocation);
    e.render_with_options(serde_saphyr::render_options! {
        formatter: &formatter,
        snippets: serde_saphyr::SnippetMode::Off,
    })
}

#[cfg(not(feature = "yaml"))]
fn parse_yaml(_bytes: &[u8], file: Option<&Path>) -> Result<Value, Error> {
    Err(Error::FormatDisabled {
        format: Format::Yaml,
        file: file.map(Path::to_path_buf),
        feature: "yaml",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(any(feature = "toml", feature = "yaml"))]
    use serde_json::json;

    #[test]
    fn empty_and_whitespace_input_is_an_empty_tree() {
        for input in ["", "  \n\t ", "\u{feff}"] {
            let tree = parse_tree(input.as_bytes(), Format::Json, None).unwrap();
            assert!(tree.is_empty(), "{input:?}");
        }
        assert!(parse_tree(b"null", Format::Json, None).unwrap().is_empty());
    }

    #[test]
    fn json_errors_name_the_file_line_and_column() {
        let err = parse_tree(
            b"{\n  \"a\": 1,\n  \"b\" 2\n}",
            Format::Json,
            Some(Path::new("app.json")),
        )
        .unwrap_err();
        match &err {
            Error::Parse { line, column, .. } => assert_eq!((*line, *column), (3, 7)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.to_string(), "invalid JSON in app.json:3:7");
    }

    /// The error and its sources, the way an error chain prints them.
    fn chain(err: &Error) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }

    /// Each parser's message names the position too; the chain names it once.
    #[test]
    fn a_parse_error_chain_names_the_position_once() {
        let mut cases = vec![(
            Format::Json,
            "{\n  \"a\": 1,\n  \"b\" 2\n}",
            "invalid JSON in c.json:3:7: expected `:`",
        )];
        if cfg!(feature = "toml") {
            let message = "invalid TOML in c.toml:2:5: extra `=`, expected nothing";
            cases.push((Format::Toml, "a = 1\nb = = 2\n", message));
        }
        if cfg!(feature = "yaml") {
            let message = "invalid YAML in c.yaml:2:4: unclosed bracket '['";
            cases.push((Format::Yaml, "a: 1\nb: [1, 2\n", message));
            let message =
                "invalid YAML in c.yaml:2:1: duplicate mapping key `a` is not allowed here";
            cases.push((Format::Yaml, "a: 1\na: 2\n", message));
        }
        for (format, input, expected) in cases {
            let file = format!("c.{}", format.to_string().to_lowercase());
            let err = parse_tree(input.as_bytes(), format, Some(Path::new(&file))).unwrap_err();
            assert_eq!(chain(&err), expected, "{format}");
        }
    }

    #[test]
    fn a_root_that_is_not_an_object_is_rejected() {
        let err = parse_tree(b"[1, 2]", Format::Json, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config root <bytes> must be an object, found an array"
        );
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_path(Path::new("a.toml")), Format::Toml);
        assert_eq!(Format::from_path(Path::new("a.YML")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.yaml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("config")), Format::Json);
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d".as_bytes(), 6), (2, 3));
        assert_eq!(line_column(b"x", 99), (1, 2));
    }

    #[cfg(feature = "toml")]
    #[test]
    fn toml_becomes_the_same_tree() {
        let text = "name = \"edge\"\n[link]\npool = 2\nratio = 0.5\nwhen = 1979-05-27T07:32:00Z\n";
        let tree = parse_tree(text.as_bytes(), Format::Toml, None).unwrap();
        assert_eq!(
            Value::Object(tree),
            json!({"name": "edge", "link": {"pool": 2, "ratio": 0.5, "when": "1979-05-27T07:32:00Z"}})
        );
        let err =
            parse_tree(b"a = 1\nb = = 2\n", Format::Toml, Some(Path::new("c.toml"))).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 2, .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("invalid TOML in c.toml:2:"),
            "{err}"
        );
    }

    #[cfg(not(feature = "toml"))]
    #[test]
    fn toml_without_the_feature_says_which_feature() {
        let err = parse_tree(b"a = 1", Format::Toml, Some(Path::new("c.toml"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read TOML config c.toml: enable the `toml` feature of isopace-config"
        );
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_becomes_the_same_tree() {
        let text = "name: edge\nlink:\n  pool: 2\n  tags: [a, b]\n  enabled: true\n";
        let tree = parse_tree(text.as_bytes(), Format::Yaml, None).unwrap();
        assert_eq!(
            Value::Object(tree),
            json!({"name": "edge", "link": {"pool": 2, "tags": ["a", "b"], "enabled": true}})
        );
        assert!(
            parse_tree(b"# only a comment\n", Format::Yaml, None)
                .unwrap()
                .is_empty()
        );
        let err =
            parse_tree(b"a: 1\nb: [1, 2\n", Format::Yaml, Some(Path::new("c.yaml"))).unwrap_err();
        match &err {
            Error::Parse { line, .. } => assert!(*line >= 2, "{err:?}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().starts_with("invalid YAML in c.yaml:"),
            "{err}"
        );
    }

    #[cfg(not(feature = "yaml"))]
    #[test]
    fn yaml_without_the_feature_says_which_feature() {
        let err = parse_tree(b"a: 1", Format::Yaml, None).unwrap_err();
        assert!(matches!(
            err,
            Error::FormatDisabled {
                feature: "yaml",
                ..
            }
        ));
    }
}
