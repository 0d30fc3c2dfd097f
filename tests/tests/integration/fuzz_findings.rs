//! What the fuzz targets in `fuzz/` found, replayed through the same public API so each
//! finding stays fixed.

use std::fs;

use isopace_config::{Config, LoadOptions, Source};
use isopace_deploy::{Registry, validate_dir};

/// serde_json reports column 0 for an error on a newline; positions count from 1.
#[test]
fn a_syntax_error_at_a_newline_has_a_column_from_1() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("10_edge.json"),
        "{\"\name\": \"edge\", \"type\": \"raw\"}",
    )
    .unwrap();
    let problems = validate_dir(dir.path(), &Registry::new(), &|_| None).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let at = problems[0].position().expect("a position");
    assert_eq!((at.line, at.column), (2, 1), "{}", problems[0]);
    assert!(
        problems[0].to_string().contains("10_edge.json:2:1: "),
        "{}",
        problems[0]
    );
}

/// An override variable whose name contains a `.` creates a top-level key with a dot in it,
/// whose dot path is the same as a declared nested key's: the nested key then reads the
/// variable's text and reports the variable as its source, though its value is the file's.
#[test]
fn a_variable_name_with_a_dot_does_not_shadow_a_declared_key() {
    let config = Config::parse(
        br#"{"link": {"port": 1}}"#,
        LoadOptions::new()
            .env_prefix("F")
            .environ(vec!["F_link.port=not-a-port".into()]),
    )
    .unwrap();
    assert_eq!(config.get("link.port"), Some(serde_json::json!(1)));
    assert_eq!(config.string("link.port", ""), "1");
    assert_eq!(config.source_of("link.port"), Some(Source::Inline));
    assert_eq!(config.string("link.port", ""), "1");
}

/// serde_json reports column 0 for an error at a newline; the config error passes it on,
/// where the descriptor errors of `isopace-deploy` count columns from 1.
#[test]
fn a_config_syntax_error_at_a_newline_has_a_column_from_1() {
    let error = Config::parse(b"{\"a\": \"\n\"}", LoadOptions::new()).unwrap_err();
    match error {
        isopace_config::Error::Parse { line, column, .. } => assert_eq!((line, column), (2, 1)),
        other => panic!("expected a parse error, got {other:?}"),
    }
}
