//! What an operator installs and feeds the binary: shell completions, the man page, and
//! TOML and YAML config files.

mod common;

use std::{
    fs,
    path::Path,
    process::{Command, Output},
};

use common::isopace;

/// The subcommands every completion script and the man page must know.
const SUBCOMMANDS: [&str; 6] = ["run", "validate", "types", "config", "completions", "man"];

fn output(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = isopace();
    cmd.args(args);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn completions_name_the_binary_and_every_subcommand() {
    // How each script names the binary, and how it offers subcommand `{}`.
    let shells = [
        ("bash", "complete -F _isopace", "isopace,{})"),
        ("zsh", "#compdef isopace", "'{}:"),
        ("fish", "complete -c isopace", "-a \"{}\""),
        (
            "elvish",
            "edit:completion:arg-completer[isopace]",
            "cand {} ",
        ),
        ("powershell", "-CommandName 'isopace'", "::new('{}'"),
    ];
    for (shell, names, offers) in shells {
        let out = output(&["completions", shell], None);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        assert!(script.contains(names), "{shell}:\n{script}");
        for sub in SUBCOMMANDS {
            let offer = offers.replace("{}", sub);
            assert!(
                script.contains(&offer),
                "{shell} lacks {offer:?}:\n{script}"
            );
        }
        if shell == "bash"
            && let Ok(check) = Command::new("bash").args(["-n", "-c", &script]).output()
        {
            assert!(check.status.success(), "bash -n: {check:?}");
        }
    }
    let out = output(&["completions", "tcsh"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_man_page_names_the_binary_and_lists_every_subcommand() {
    let out = output(&["man"], None);
    assert!(out.status.success(), "{out:?}");
    let page = text(&out.stdout);
    // Only roff's own preamble (string definitions) comes before the title.
    let mut lines = page
        .lines()
        .skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el "));
    let title = lines.next().unwrap();
    assert!(title.starts_with(".TH isopace 1 "), "{page}");
    assert!(
        page.contains("\n.SH NAME\nisopace \\- Hosts long\\-running components"),
        "{page}"
    );
    let listed = page
        .split("\n.SH SUBCOMMANDS\n")
        .nth(1)
        .expect("a SUBCOMMANDS section");
    for sub in SUBCOMMANDS {
        assert!(
            listed.contains(&format!("\nisopace\\-{sub}(1)\n")),
            "no {sub} in\n{page}"
        );
    }
    assert!(!listed.contains("help(1)"), "{page}");
}

/// A daemon built with `App` under a name of its own: this test binary, run again with
/// `EDGE_ARGS` set, is that daemon.
#[test]
fn a_custom_daemon_completes_and_documents_its_own_name() {
    const TEST: &str = "a_custom_daemon_completes_and_documents_its_own_name";
    if let Ok(args) = std::env::var("EDGE_ARGS") {
        let args = std::iter::once("edge").chain(args.split(' '));
        let code = isopace_cli::App::new()
            .name("edge")
            .env_prefix("EDGE")
            .main_from(args);
        assert_eq!(code, std::process::ExitCode::SUCCESS);
        return;
    }
    for (args, marker) in [
        ("completions bash", "complete -F _edge"),
        ("completions fish", "complete -c edge"),
        ("man", "\n.TH edge 1 "),
        ("man", "\nedge\\-run(1)\n"),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
            .env("EDGE_ARGS", args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args}: {out:?}");
        let text = text(&out.stdout);
        assert!(text.contains(marker), "{args}:\n{text}");
        // (Help texts may name the library crates, `isopace_deploy=debug`.)
        for other in ["isopace ", "_isopace", "-c isopace", "ISOPACE_"] {
            assert!(!text.contains(other), "{args}: {other:?} in\n{text}");
        }
    }
}

#[test]
fn toml_and_yaml_configs_are_read_by_their_extension() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "link:\n  timeout: 5s\n  max_conns: 2\n";
    let files = [
        ("app.toml", "[link]\ntimeout = \"5s\"\nmax_conns = 2\n"),
        ("app.yaml", yaml),
        ("app.YML", yaml),
        ("app.json", r#"{"link": {"timeout": "5s", "max_conns": 2}}"#),
    ];
    for (name, content) in files {
        let file = dir.path().join(name);
        fs::write(&file, content).unwrap();
        let out = output(&["config", "get", "link"], Some(&file));
        assert!(out.status.success(), "{name}: {out:?}");
        let source = format!("(file {})", file.display());
        assert_eq!(
            text(&out.stdout),
            format!("link.max_conns = 2  {source}\nlink.timeout = \"5s\"  {source}\n"),
            "{name}"
        );
        assert!(out.stderr.is_empty(), "{name}: {}", text(&out.stderr));
    }
}

#[test]
fn a_config_parse_error_names_the_file_line_and_column_once() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    let files = [
        (
            "bad.toml",
            "a = 1\nb = = 2\n",
            "TOML",
            "2:5",
            "extra `=`, expected nothing",
        ),
        (
            "bad.yaml",
            "a: 1\nb: [1, 2\n",
            "YAML",
            "2:4",
            "unclosed bracket '['",
        ),
        (
            "bad.yml",
            "a: 1\nb: [1, 2\n",
            "YAML",
            "2:4",
            "unclosed bracket '['",
        ),
        (
            "bad.json",
            "{\n  \"a\": 1,\n  \"b\" 2\n}\n",
            "JSON",
            "3:7",
            "expected `:`",
        ),
    ];
    for (name, content, format, position, message) in files {
        let file = dir.path().join(name);
        fs::write(&file, content).unwrap();
        let at = format!("{}:{position}", file.display());
        let expected = format!("isopace: invalid {format} in {at}: {message}\n");
        let deploy = deploy.to_str().unwrap();
        for args in [&["config", "dump"][..], &["run", "--deploy", deploy]] {
            let out = output(args, Some(&file));
            assert_eq!(out.status.code(), Some(78), "{name} {args:?}: {out:?}");
            let stderr = text(&out.stderr);
            assert_eq!(stderr.matches(&at).count(), 1, "{name} {args:?}: {stderr}");
            assert_eq!(stderr, expected, "{name} {args:?}");
        }
    }
}

#[test]
fn man_dir_writes_a_page_for_the_command_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(&["man", "--dir", dir.path().to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    let page = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap();
    assert!(page("isopace.1").contains(".TH isopace 1 "));
    for sub in SUBCOMMANDS {
        let text = page(&format!("isopace-{sub}.1"));
        assert!(text.contains(&format!(".TH isopace-{sub} 1 ")), "{text}");
    }
    // The flags of `run` are on its own page.
    let run = page("isopace-run.1");
    for flag in [
        "\\-\\-deploy",
        "\\-\\-log\\-filter",
        "\\-\\-shutdown\\-timeout",
    ] {
        assert!(run.contains(flag), "no {flag} in\n{run}");
    }
    // Nested subcommands get theirs too.
    assert!(page("isopace-config-get.1").contains("isopace\\-config\\-get"));

    let missing = dir.path().join("missing/man1");
    let out = output(&["man", "--dir", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot write man pages in"),
        "{out:?}"
    );
}
