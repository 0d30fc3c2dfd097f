//! Tidy checks: repository conventions enforced by tests rather than by memory.
//!
//! `cargo xtask ci` runs them after the build steps, and they are `#[test]`s too so a plain
//! `cargo test` catches a violation.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// Crates that must stay usable alone: they depend on no other workspace crate.
const STANDALONE: &[&str] = &["isopace-observe", "isopace-config"];
/// Only the CLI parses arguments and exits the process; nothing may depend on it.
const LEAF: &str = "isopace-cli";
/// The OpenTelemetry adapter is opt-in: only the CLI may pull it in, and only optionally.
const OPT_IN: &str = "isopace-otel";
/// The built-in component types: a library below the CLI and beside the deployer. Only the
/// CLI may depend on it, and it may depend only on the crates below it.
const BUILTINS: &str = "isopace-builtins";
/// What the built-in types may depend on: the layers under them, and the deployer for the
/// `Registry` they register in.
const BUILTINS_MAY_USE: &[&str] = &[
    "isopace-observe",
    "isopace-config",
    "isopace-host",
    "isopace-deploy",
];
/// The test doubles shared by tests and benchmarks. Crates take it as a dev-dependency only,
/// so it never reaches a build of the daemon or of a library's users.
const TESTKIT: &str = "isopace-testkit";
/// What the testkit may depend on: the layers its doubles stand in for or drive.
const TESTKIT_MAY_USE: &[&str] = &[
    "isopace-observe",
    "isopace-config",
    "isopace-host",
    "isopace-deploy",
];
/// Unpublished crates that are tests themselves: their library re-exports the testkit to
/// their test binaries, so it is a normal dependency there.
const TEST_CRATES: &[&str] = &["isopace-tests"];
/// The CLI crate's source, which is glue: arguments, `run`, commands and `App`.
const CLI_SRC: &str = "crates/isopace-cli/src";
/// The CLI's source stays below this many lines in all; capabilities belong in libraries.
const CLI_MAX_LINES: usize = 1_000;

/// Every problem found by every tidy check, one line each.
pub(crate) fn all_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    match workspace_dependencies(root) {
        Ok(deps) => problems.extend(dependency_problems(&deps)),
        Err(e) => problems.push(e),
    }
    let files = rust_files(&root.join("crates"));
    problems.extend(doc_header_problems(root, &files));
    problems.extend(forbidden_macro_problems(root, &files));
    let cli = rust_files(&root.join(CLI_SRC));
    problems.extend(cli_component_problems(root, &cli));
    problems.extend(cli_size_problems(root, &cli, CLI_MAX_LINES));
    problems
}

/// One dependency edge between workspace crates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Edge {
    to: String,
    kind: String,
    optional: bool,
}

/// For each workspace package, its dependencies on other workspace packages (all kinds).
fn workspace_dependencies(root: &Path) -> Result<BTreeMap<String, BTreeSet<Edge>>, String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed invalid JSON: {e}"))?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut graph = BTreeMap::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default().to_owned();
        let edges = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let to = d["name"].as_str()?;
                names.contains(to).then(|| Edge {
                    to: to.to_owned(),
                    kind: d["kind"].as_str().unwrap_or("normal").to_owned(),
                    optional: d["optional"].as_bool().unwrap_or(false),
                })
            })
            .collect();
        graph.insert(name, edges);
    }
    Ok(graph)
}

fn dependency_problems(graph: &BTreeMap<String, BTreeSet<Edge>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, edges) in graph {
        for edge in edges {
            if STANDALONE.contains(&from.as_str()) {
                problems.push(format!(
                    "{from} must depend on no workspace crate, but depends on {} ({})",
                    edge.to, edge.kind
                ));
            }
            if edge.to == LEAF {
                problems.push(format!(
                    "{from} depends on {LEAF}; nothing may depend on the CLI"
                ));
            }
            if edge.to == OPT_IN && !(from == LEAF && edge.optional && edge.kind == "normal") {
                problems.push(format!(
                    "{from} depends on {OPT_IN}; only {LEAF} may, as an optional dependency"
                ));
            }
            if edge.to == BUILTINS && from != LEAF {
                problems.push(format!(
                    "{from} depends on {BUILTINS} ({}); only {LEAF} may",
                    edge.kind
                ));
            }
            let dev_testkit = edge.to == TESTKIT && edge.kind == "dev";
            if from == BUILTINS && !BUILTINS_MAY_USE.contains(&edge.to.as_str()) && !dev_testkit {
                problems.push(format!(
                    "{BUILTINS} depends on {} ({}); it may use only {}",
                    edge.to,
                    edge.kind,
                    BUILTINS_MAY_USE.join(", ")
                ));
            }
            if edge.to == TESTKIT && !dev_testkit && !TEST_CRATES.contains(&from.as_str()) {
                problems.push(format!(
                    "{from} depends on {TESTKIT} ({}); it is for tests and benchmarks: \
                     take it as a dev-dependency",
                    edge.kind
                ));
            }
            if from == TESTKIT && !TESTKIT_MAY_USE.contains(&edge.to.as_str()) {
                problems.push(format!(
                    "{TESTKIT} depends on {} ({}); it may use only {}",
                    edge.to,
                    edge.kind,
                    TESTKIT_MAY_USE.join(", ")
                ));
            }
        }
    }
    problems
}

/// Every `.rs` file below `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn doc_header_problems(root: &Path, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|path| {
            let text = fs::read_to_string(path).ok()?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            (!first.starts_with("//!")).then(|| {
                format!(
                    "{}:1: must start with a `//!` line saying what the file is for",
                    relative(root, path)
                )
            })
        })
        .collect()
}

/// The markers are assembled at run time so this file does not trip its own check.
fn forbidden_markers() -> Vec<String> {
    vec![
        format!("{}!(", "dbg"),
        format!("{}!(", "todo"),
        format!("{}!(", "unimplemented"),
        format!("#[{}", "ignore"),
    ]
}

fn forbidden_macro_problems(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let markers = forbidden_markers();
    let mut problems = Vec::new();
    for path in files {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            for marker in &markers {
                if line.contains(marker.as_str()) {
                    problems.push(format!(
                        "{}:{}: `{marker}` is not allowed under crates/",
                        relative(root, path),
                        number + 1
                    ));
                }
            }
        }
    }
    problems
}

/// Whether `line` starts an implementation of the `Component` trait (by any path, generic or
/// not): `impl Component for X`, `impl isopace_host::Component for X`, `impl<T> Component for`.
fn implements_component(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("impl")
        && line
            .split_once(" for ")
            .and_then(|(head, _)| head.trim_end().rsplit([' ', ':', '>']).next())
            .is_some_and(|name| name == "Component")
}

/// Component types belong in library crates (the built-in ones in isopace-builtins), not in
/// the CLI.
fn cli_component_problems(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for path in files {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if implements_component(line) {
                problems.push(format!(
                    "{}:{}: a component type in the CLI crate; move it to a library \
                     (built-in types live in isopace-builtins)",
                    relative(root, path),
                    number + 1
                ));
            }
        }
    }
    problems
}

/// The CLI's source, all files together, stays under `max` lines.
fn cli_size_problems(root: &Path, files: &[PathBuf], max: usize) -> Vec<String> {
    let lines: usize = files
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .map(|text| text.lines().count())
        .sum();
    if lines < max {
        return Vec::new();
    }
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .map_or_else(|| CLI_SRC.to_owned(), |d| relative(root, d));
    vec![format!(
        "{dir}: {lines} lines; the CLI's source stays under {max}: move capabilities into \
         library crates"
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

    fn edge(to: &str, kind: &str, optional: bool) -> Edge {
        Edge {
            to: to.into(),
            kind: kind.into(),
            optional,
        }
    }

    #[test]
    fn dependency_invariants_hold() {
        let graph = workspace_dependencies(&workspace_root()).expect("cargo metadata");
        assert!(graph.contains_key("isopace-observe"), "{graph:?}");
        let problems = dependency_problems(&graph);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn dependency_check_catches_violations() {
        let graph = BTreeMap::from([
            (
                "isopace-config".to_owned(),
                BTreeSet::from([edge("isopace-observe", "normal", false)]),
            ),
            (
                "isopace-host".to_owned(),
                BTreeSet::from([
                    edge("isopace-cli", "dev", false),
                    edge("isopace-otel", "normal", true),
                ]),
            ),
            (
                "isopace-cli".to_owned(),
                BTreeSet::from([edge("isopace-otel", "normal", true)]),
            ),
        ]);
        let problems = dependency_problems(&graph);
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }

    #[test]
    fn dependency_check_keeps_the_builtins_between_the_host_and_the_cli() {
        let graph = BTreeMap::from([
            (
                "isopace-builtins".to_owned(),
                BTreeSet::from([
                    edge("isopace-deploy", "normal", false),
                    edge("isopace-host", "normal", false),
                    edge("isopace-tests", "dev", false),
                ]),
            ),
            (
                "isopace-deploy".to_owned(),
                BTreeSet::from([edge("isopace-builtins", "dev", false)]),
            ),
            (
                "isopace-cli".to_owned(),
                BTreeSet::from([edge("isopace-builtins", "normal", false)]),
            ),
        ]);
        let problems = dependency_problems(&graph);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("isopace-builtins depends on isopace-tests (dev)"));
        assert!(problems[1].starts_with("isopace-deploy depends on isopace-builtins"));
    }

    #[test]
    fn dependency_check_keeps_the_testkit_a_dev_dependency() {
        let graph = BTreeMap::from([
            (
                "isopace-testkit".to_owned(),
                BTreeSet::from([
                    edge("isopace-deploy", "normal", false),
                    edge("isopace-host", "normal", false),
                    edge("isopace-tests", "dev", false),
                ]),
            ),
            (
                "isopace-deploy".to_owned(),
                BTreeSet::from([edge("isopace-testkit", "normal", false)]),
            ),
            (
                "isopace-host".to_owned(),
                BTreeSet::from([edge("isopace-testkit", "dev", false)]),
            ),
            (
                "isopace-builtins".to_owned(),
                BTreeSet::from([
                    edge("isopace-host", "normal", false),
                    edge("isopace-testkit", "build", false),
                    edge("isopace-testkit", "dev", false),
                ]),
            ),
            (
                "isopace-tests".to_owned(),
                BTreeSet::from([edge("isopace-testkit", "normal", false)]),
            ),
        ]);
        let problems = dependency_problems(&graph);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        // A build-dependency is no dev-dependency: neither a testkit edge nor a builtins one.
        assert!(problems[0].starts_with("isopace-builtins depends on isopace-testkit (build);"));
        assert!(problems[1].starts_with(
            "isopace-builtins depends on isopace-testkit (build); it is for tests and benchmarks"
        ));
        assert_eq!(
            problems[2],
            "isopace-deploy depends on isopace-testkit (normal); it is for tests and \
             benchmarks: take it as a dev-dependency"
        );
        assert!(problems[3].starts_with("isopace-testkit depends on isopace-tests (dev);"));
    }

    #[test]
    fn every_crate_file_opens_with_a_module_doc() {
        let root = workspace_root();
        let files = rust_files(&root.join("crates"));
        assert!(!files.is_empty());
        let problems = doc_header_problems(&root, &files);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn no_component_type_lives_in_the_cli_crate() {
        let root = workspace_root();
        let files = rust_files(&root.join(CLI_SRC));
        assert!(!files.is_empty());
        let problems = cli_component_problems(&root, &files);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_cli_source_stays_under_its_line_budget() {
        let root = workspace_root();
        let files = rust_files(&root.join(CLI_SRC));
        let problems = cli_size_problems(&root, &files, CLI_MAX_LINES);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn cli_checks_catch_a_component_and_a_large_source() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-cli-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("proxy.rs");
        fs::write(
            &file,
            "//! A proxy.\n\n#[async_trait]\nimpl isopace_host::Component for Proxy {}\n\
             impl<T: Send> Component for Wrapper<T> {}\n\
             impl ComponentStatus for Other {}\nimpl MyComponent for Mine {}\n",
        )
        .unwrap();
        let files = [file];
        let components = cli_component_problems(&dir, &files);
        let size_ok = cli_size_problems(&dir, &files, 8);
        let size_over = cli_size_problems(&dir, &files, 7);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(components.len(), 2, "{components:#?}");
        assert!(components[0].starts_with("proxy.rs:4: a component type in the CLI crate"));
        assert!(components[1].starts_with("proxy.rs:5: "));
        assert!(size_ok.is_empty(), "{size_ok:#?}");
        assert_eq!(size_over.len(), 1, "{size_over:#?}");
        assert!(size_over[0].contains(": 7 lines;"), "{size_over:#?}");
    }

    #[test]
    fn no_forbidden_macros_or_ignored_tests() {
        let root = workspace_root();
        let problems = forbidden_macro_problems(&root, &rust_files(&root.join("crates")));
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn forbidden_marker_check_catches_a_violation() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.rs");
        fs::write(
            &file,
            format!("fn f() {{\n    {}\"x\");\n}}\n", forbidden_markers()[1]),
        )
        .unwrap();
        let problems = forbidden_macro_problems(&dir, std::slice::from_ref(&file));
        let header = doc_header_problems(&dir, std::slice::from_ref(&file));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            problems,
            vec!["bad.rs:2: `todo!(` is not allowed under crates/"]
        );
        assert_eq!(header.len(), 1);
    }
}
