//! Preflight through the real binary: what `run` refuses at deploy because of the machine
//! (a program or directory that is missing), `isopace validate` refuses first, with the same
//! message; an address in use is only a warning; `--no-preflight` checks the shape alone.

mod common;

use std::{
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use common::{Daemon, free_port, http_get, isopace, json, wait_for};
use serde_json::{Value, json};

/// What `validate` should say about one descriptor.
enum Expect {
    /// A problem in `field`, saying this; `run` refuses the file with the same text.
    Error(&'static str, String),
    /// A warning in `field` containing this; `run` finds out when the component starts.
    Warning(&'static str, String),
}

struct Case {
    file: &'static str,
    descriptor: Value,
    expect: Expect,
}

fn exec(name: &str, config: Value) -> Value {
    json!({ "name": name, "type": "exec", "config": config })
}

/// The bad descriptors, written to `dir` (whose `bin` holds a script without execute
/// permission), with a busy TCP address `busy`.
fn cases(dir: &Path, busy: &str) -> Vec<Case> {
    let bin = dir.join("bin");
    let missing = dir.join("missing");
    let plain = bin.join("plain");
    let shown = |p: &PathBuf| p.display().to_string();
    vec![
        Case {
            file: "10_missing_binary.json",
            descriptor: exec(
                "missing-binary",
                json!({ "command": [missing.join("worker")] }),
            ),
            expect: Expect::Error(
                "config.command",
                format!("`{}` does not exist", shown(&missing.join("worker"))),
            ),
        },
        Case {
            file: "20_not_executable.json",
            descriptor: exec("not-executable", json!({ "command": [plain, "--once"] })),
            expect: Expect::Error(
                "config.command",
                format!(
                    "`{}` is not executable by this user (mode 0644)",
                    shown(&plain)
                ),
            ),
        },
        Case {
            file: "30_missing_cwd.json",
            descriptor: exec(
                "missing-cwd",
                json!({ "command": ["sh", "-c", "sleep 60"], "cwd": missing }),
            ),
            expect: Expect::Error("config.cwd", format!("{} does not exist", shown(&missing))),
        },
        Case {
            file: "40_not_in_path.json",
            descriptor: exec(
                "not-in-path",
                json!({ "command": ["isopace-no-such-tool"], "env": { "PATH": bin } }),
            ),
            expect: Expect::Error(
                "config.command",
                format!(
                    "`isopace-no-such-tool` is not found in PATH ({})",
                    shown(&bin)
                ),
            ),
        },
        Case {
            file: "50_port_in_use.json",
            descriptor: json!({
                "name": "busy-proxy", "type": "tcp-proxy",
                "config": { "listen": busy, "upstream": "127.0.0.1:9" }
            }),
            expect: Expect::Warning("config.listen", format!("cannot listen on {busy} now: ")),
        },
    ]
}

/// A deploy directory with an admin endpoint on `port` and every case, each descriptor
/// pretty-printed so fields sit on lines of their own.
fn write_deploy(deploy: &Path, port: u16, cases: &[Case]) {
    fs::create_dir_all(deploy).unwrap();
    let admin = json!({
        "name": "admin", "type": "admin", "config": { "listen": format!("127.0.0.1:{port}") }
    });
    fs::write(deploy.join("00_admin.json"), admin.to_string()).unwrap();
    for case in cases {
        let text = serde_json::to_string_pretty(&case.descriptor).unwrap();
        fs::write(deploy.join(case.file), text).unwrap();
    }
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn validate(args: &[&str], dir: &Path) -> Output {
    let output = isopace()
        .arg("validate")
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    Output {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The one line of `text` about `file`, starting with `prefix`.
fn line_about<'t>(text: &'t str, prefix: &str, file: &Path) -> &'t str {
    let file = format!("{prefix}{}:", file.display());
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&file)).collect();
    assert_eq!(lines.len(), 1, "one line about {file} in\n{text}");
    lines[0]
}

#[test]
fn validate_refuses_what_run_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let plain = bin.join("plain");
    fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let cases = cases(dir.path(), &busy);
    let deploy = dir.path().join("deploy");
    let port = free_port();
    write_deploy(&deploy, port, &cases);

    // validate: every error on stdout, each warning on stderr, and a failure exit.
    let checked = validate(&[], &deploy);
    let errors = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Error(..)))
        .count();
    assert_eq!(checked.code, 78, "{}{}", checked.stdout, checked.stderr);
    assert_eq!(checked.stdout.lines().count(), errors, "{}", checked.stdout);
    assert!(
        checked
            .stderr
            .contains(&format!("{errors} problems in {}", deploy.display())),
        "{}",
        checked.stderr
    );
    let mut said = Vec::new();
    for case in &cases {
        let file = deploy.join(case.file);
        let (text, prefix, field, message) = match &case.expect {
            Expect::Error(field, message) => (&checked.stdout, "", field, message),
            Expect::Warning(field, message) => (&checked.stderr, "warning: ", field, message),
        };
        let line = line_about(text, prefix, &file);
        // file:line:column: field `config.x`: message
        let rest = line
            .strip_prefix(&format!("{prefix}{}:", file.display()))
            .unwrap();
        let (position, rest) = rest.split_once(": ").unwrap();
        let (line_no, column) = position.split_once(':').unwrap();
        assert!(line_no.parse::<u32>().unwrap() > 1 && column.parse::<u32>().unwrap() > 1);
        let detail = rest
            .strip_prefix(&format!("field `{field}`: "))
            .unwrap_or_else(|| panic!("{field} in {line}"));
        assert!(detail.starts_with(message.as_str()), "{line}");
        said.push(line.strip_prefix(prefix).unwrap().to_owned());
    }

    // run: each file the same validate refused is failed, with the same text.
    let mut daemon = Daemon::start(&deploy, &[], &[]);
    let files = wait_for("every case failed in /deployments", || {
        let files = json(&http_get(port, "/deployments", None)?.body);
        let all_failed = cases.iter().all(|case| {
            let file = deploy.join(case.file).display().to_string();
            files
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["file"] == file.as_str() && f["state"] == "failed")
        });
        all_failed.then_some(files)
    });
    for (case, said) in cases.iter().zip(&said) {
        let file = deploy.join(case.file).display().to_string();
        let status = files
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == file.as_str())
            .unwrap();
        let error = status["error"].as_str().unwrap();
        match &case.expect {
            Expect::Error(..) => assert_eq!(error, said, "{}", case.file),
            // A warning was right: the proxy cannot listen when it starts, and says so.
            Expect::Warning(..) => {
                assert!(
                    error.contains(&format!("cannot listen on {busy}: ")),
                    "{error}"
                )
            }
        }
    }
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

#[test]
fn an_address_in_use_is_a_warning_and_no_preflight_checks_the_shape_alone() {
    let dir = tempfile::tempdir().unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let cases = cases(dir.path(), &busy);
    let warns = dir.path().join("warns");
    write_deploy(&warns, free_port(), &cases[4..]);
    let checked = validate(&[], &warns);
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    assert_eq!(checked.stdout, format!("{}: ok\n", warns.display()));
    let warning = line_about(&checked.stderr, "warning: ", &warns.join(cases[4].file));
    assert!(
        warning.contains("field `config.listen`: cannot listen on"),
        "{warning}"
    );

    // The missing binary, and every other case: the shape is right.
    let all = dir.path().join("all");
    write_deploy(&all, free_port(), &cases);
    for (args, var) in [(&["--no-preflight"][..], None), (&[][..], Some("yes"))] {
        let mut command = isopace();
        command.arg("validate").args(args).arg(&all);
        if let Some(value) = var {
            command.env("ISOPACE_NO_PREFLIGHT", value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?} {var:?}: {stderr}");
        assert!(stderr.is_empty(), "no warning either: {stderr}");
    }
    let missing = dir.path().join("missing");
    write_deploy(&missing, free_port(), &cases[..1]);
    assert_eq!(validate(&[], &missing).code, 78);
    assert_eq!(validate(&["--no-preflight"], &missing).code, 0);
}
