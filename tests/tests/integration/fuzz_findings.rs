//! What the fuzz targets in `fuzz/` found, replayed through the same public API so each
//! finding stays fixed.

use std::fs;

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
