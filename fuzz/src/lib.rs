//! Fuzz targets for isopace's parsers, shared by the libFuzzer build (`cargo fuzz run`) and
//! the stable replay build (`--no-default-features`), plus the replay driver.
//!
//! Each target checks more than "does not panic": the invariants the crates document.

#![forbid(unsafe_code)]

use std::{
    cell::RefCell,
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use isopace_config::{Config, LoadOptions, MAX_DURATION, Source, format_duration, parse_duration};
use isopace_deploy::{Registry, validate_dir};
use isopace_host::{BoxError, Component, Env, async_trait};
use serde::Deserialize;
use serde_json::Value;

pub mod replay;

/// A component type's typed config with the shapes real types use: strings, ports,
/// durations, nested lists, and no unknown fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LinkConfig {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default, with = "isopace_config::serde_duration::option")]
    timeout: Option<Duration>,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Route {
    path: String,
    #[serde(default)]
    weight: u8,
}

/// Never built: `validate_dir` only decodes configs.
#[derive(Debug)]
struct Inert(String);

#[async_trait]
impl Component for Inert {
    fn name(&self) -> &str {
        &self.0
    }
    async fn start(&mut self, _: &Env) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register_typed(
            "link",
            "a typed config",
            serde_json::json!({ "host": "127.0.0.1" }),
            |name: &str, _config: LinkConfig, _env: &Env| Ok(Inert(name.to_owned())),
        )
        .unwrap();
    registry
        .register(
            "raw",
            "an untyped config",
            serde_json::json!({}),
            |name: &str, _config: Value, _env: &Env| Ok(Inert(name.to_owned())),
        )
        .unwrap();
    registry
}

/// The variables `${VAR}` can name: values with quotes, backslashes, a newline, an empty one,
/// and one that looks like a substitution itself.
fn variable(name: &str) -> Option<String> {
    let value = match name {
        "HOST" => "127.0.0.1",
        "PORT" => "7001",
        "QUOTED" => "a \"quoted\" \\ value\nover two lines\t\u{7f}",
        "EMPTY" => "",
        "NESTED" => "${HOST}",
        "UNICODE" => "héllo \u{2028} wörld",
        _ => return None,
    };
    Some(value.to_owned())
}

struct DescriptorDir {
    dir: tempfile::TempDir,
    file: PathBuf,
    registry: Registry,
}

thread_local! {
    static DESCRIPTOR_DIR: RefCell<Option<DescriptorDir>> = const { RefCell::new(None) };
}

/// Descriptor parsing with `${VAR}` substitution and typed config decoding, through
/// `isopace_deploy::validate_dir` on a directory holding the input as its only file.
///
/// Checks: every problem names the file; a position is 1-based and on a line the file has
/// (substitution never adds a line); an accepted file is a JSON object with a non-empty
/// string `name` and a string `type`.
pub fn descriptor(data: &[u8]) {
    DESCRIPTOR_DIR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let d = cell.get_or_insert_with(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let file = dir.path().join("10_fuzz.json");
            DescriptorDir {
                dir,
                file,
                registry: registry(),
            }
        });
        std::fs::write(&d.file, data).expect("write the input");
        let problems =
            validate_dir(d.dir.path(), &d.registry, &variable).expect("the directory exists");
        check_descriptor(data, &d.file, &problems);
    });
}

fn check_descriptor(data: &[u8], file: &Path, problems: &[isopace_deploy::DescriptorError]) {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(
        problems.len() <= 1,
        "one file, at most one problem: {problems:?}"
    );
    for problem in problems {
        assert_eq!(problem.file(), file, "{problem}");
        if let Some(at) = problem.position() {
            assert!(at.line >= 1 && at.column >= 1, "{problem}");
            assert!(
                at.line <= lines,
                "line {} of a {lines}-line file: {problem}",
                at.line
            );
        }
        let text = problem.to_string();
        assert!(text.starts_with(&file.display().to_string()), "{text}");
    }
    if problems.is_empty() {
        let value: Value = serde_json::from_slice(data).expect("an accepted descriptor is JSON");
        let name = value["name"].as_str().expect("a string name");
        assert!(!name.trim().is_empty());
        assert!(value["type"].is_string());
    }
}

/// The documents the override mapper works on: declared keys with underscores and dashes,
/// nested sections, a scalar and an array in the way, secrets, and colliding spellings.
const BASES: &[&str] = &[
    r#"{"link": {"max_conns": 10, "pool": {"size": 2}, "host-name": "a"}, "server": "plain", "ports": [1, 2], "db": {"password": "x"}, "empty": {}}"#,
    r#"{}"#,
    r#"{"a": {"b": {"c": {"d": 1}}}, "a_b": 2, "A": {"B": 3}, "a__b": {"c": 4}}"#,
    r#"{"x": null, "y": [], "z": {"": 1}, "api_key": "k", "tls": {"private_key": "p"}}"#,
];

/// Environment overrides: `Config::parse` of a fixed document with the prefix `F` and an
/// environment made of the input's lines (the first byte picks the document).
///
/// Checks: overrides never fail a parse; a declared object or array keeps its kind; a value
/// read back from an override's path is the variable's text as written.
pub fn env_override(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let base = BASES[usize::from(pick) % BASES.len()];
    let text = String::from_utf8_lossy(rest);
    let environ: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let config = Config::parse(
        base.as_bytes(),
        LoadOptions::new().env_prefix("F").environ(environ.clone()),
    )
    .unwrap_or_else(|e| panic!("overrides failed the parse: {e}"));

    let declared: Value = serde_json::from_str(base).unwrap();
    let mut sections = Vec::new();
    collect_sections(&declared, "", &mut sections);
    for (path, kind) in sections {
        let now = config.get(&path);
        let same = matches!(
            (&now, kind),
            (Some(Value::Object(_)), "object") | (Some(Value::Array(_)), "array")
        );
        assert!(same, "declared {kind} `{path}` became {now:?}");
    }

    let entries = config.entries();
    let names: BTreeSet<&str> = environ
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, _)| k))
        .collect();
    for entry in &entries {
        let _ = entry.display_value();
        let Source::Env(var) = &entry.source else {
            continue;
        };
        assert!(
            var.starts_with("F_") && names.contains(var.as_str()),
            "{entry:?}"
        );
        if config.get(&entry.path).as_ref() != Some(&entry.value) {
            continue;
        }
        if matches!(
            entry.value,
            Value::String(_) | Value::Number(_) | Value::Bool(_)
        ) {
            let raw = environ
                .iter()
                .rev()
                .find_map(|e| e.split_once('=').filter(|(k, _)| k == var).map(|(_, v)| v))
                .expect("the variable is in the environment");
            assert_eq!(config.string(&entry.path, "\u{0}"), raw, "{entry:?}");
        }
    }
    let _ = config.redacted();
}

fn collect_sections(value: &Value, path: &str, out: &mut Vec<(String, &'static str)>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            // Dot paths cannot name keys that contain a dot or are empty.
            if key.is_empty() || key.contains('.') {
                continue;
            }
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match child {
                Value::Object(_) => {
                    out.push((child_path.clone(), "object"));
                    collect_sections(child, &child_path, out);
                }
                Value::Array(_) => out.push((child_path, "array")),
                _ => {}
            }
        }
    }
}

#[derive(Deserialize)]
struct Timed {
    #[serde(with = "isopace_config::serde_duration")]
    d: Duration,
}

/// The duration parser.
///
/// Checks: a parsed duration is at most `MAX_DURATION`; formatting it and parsing the result
/// gives it back; the serde adapter agrees with `parse_duration` on strings.
pub fn duration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_duration(&text);
    let via_serde = serde_json::from_value::<Timed>(serde_json::json!({ "d": text })).map(|t| t.d);
    match parsed {
        Ok(d) => {
            assert!(d <= MAX_DURATION, "{text:?} parsed to {d:?}");
            assert!(!text.trim().is_empty());
            let formatted = format_duration(d);
            let again = parse_duration(&formatted)
                .unwrap_or_else(|e| panic!("{text:?} -> {d:?} -> {formatted:?}: {e}"));
            assert_eq!(again, d, "{text:?} -> {formatted:?}");
            assert_eq!(via_serde.ok(), Some(d), "{text:?}");
        }
        Err(e) => {
            assert!(
                via_serde.is_err(),
                "{text:?} failed alone ({e}) but not through serde"
            );
        }
    }
}
