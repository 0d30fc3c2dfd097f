//! The real `isopace` binary, driven end to end: temp dirs, ephemeral loopback ports, signals.
//!
//! These tests live in the CLI crate rather than in the workspace's `tests/` crate because
//! only a package's own integration tests get its binary's path (`CARGO_BIN_EXE_isopace`),
//! and no other crate may depend on the CLI.

mod common;

use isopace_testkit::write_atomically;
use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    thread,
    time::Duration,
};

use common::{Daemon, component, free_port, http_get, isopace, json, wait_for, wait_until};

fn copy_example(to: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy");
    for entry in fs::read_dir(example).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn run_serves_the_example_and_follows_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let port = free_port();
    let mut daemon = Daemon::start(
        dir.path(),
        &[],
        &[("ISOPACE_ADMIN_LISTEN", format!("127.0.0.1:{port}"))],
    );

    let ready = wait_for("/readyz 200", || {
        http_get(port, "/readyz", None).filter(|r| r.status == 200)
    });
    assert_eq!(json(&ready.body)["ready"], true);
    assert_eq!(http_get(port, "/healthz", None).unwrap().body, "ok");

    let components = json(&http_get(port, "/components", None).unwrap().body);
    let pulse = component(&components, "pulse").expect("pulse listed");
    assert_eq!(pulse["state"], "running");
    assert_eq!(pulse["type"], "heartbeat");
    assert!(pulse["file"].as_str().unwrap().ends_with("10_pulse.json"));
    let since = pulse["since"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.contains('.'), "{since}");
    assert!(component(&components, "slow-pulse").is_none(), "disabled");
    let deployer = component(&components, "deployer").unwrap();
    assert!(deployer["file"].is_null() && deployer["type"].is_null());

    let metrics = http_get(port, "/metrics", None).unwrap();
    assert_eq!(metrics.status, 200);
    let families = metrics
        .body
        .matches("# TYPE isopace_component_state ")
        .count();
    assert_eq!(families, 1, "one state family in\n{}", metrics.body);
    // The whole exposition parses as Prometheus text, and every family has its help text:
    // none is made on the side.
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&metrics.body)
        .unwrap_or_else(|e| panic!("{e:?}\n{}", metrics.body));
    assert!(
        exposition.families.len() >= 10,
        "{} families in\n{}",
        exposition.families.len(),
        metrics.body
    );
    for family in exposition.families.values() {
        assert!(
            !family.help.is_empty(),
            "{} has no help in\n{}",
            family.family_name,
            metrics.body
        );
    }
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "isopace_build_info",
    ] {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            exposition.families.contains_key(family) || exposition.families.contains_key(name),
            "no {name} in\n{}",
            metrics.body
        );
    }
    for needle in [
        r#"isopace_component_state{component="pulse",state="running"} 1"#,
        r#"isopace_lifecycle_calls_total{component="admin",phase="start"} 1"#,
        "isopace_deployer_scans_total",
        r#"heartbeat_ticks_total{component="pulse"}"#,
    ] {
        assert!(
            metrics.body.contains(needle),
            "{needle} missing from\n{}",
            metrics.body
        );
    }

    // A new descriptor starts.
    write_atomically(
        dir.path().join("30_extra.json"),
        r#"{"name": "extra", "type": "heartbeat", "config": {"interval": "1h"}}"#,
    );
    wait_for("extra running", || {
        let list = json(&http_get(port, "/components", None)?.body);
        (component(&list, "extra")?["state"] == "running").then_some(())
    });

    // A changed one is redeployed.
    write_atomically(
        dir.path().join("30_extra.json"),
        r#"{"name": "extra", "type": "heartbeat", "config": {"interval": "2h"}}"#,
    );
    wait_for("extra redeployed", || {
        daemon
            .log_has("component=extra isopace_deploy::deployer: redeployed")
            .then_some(())
    });

    // An invalid file is reported; everything else keeps running.
    fs::write(dir.path().join("40_broken.json"), "{\"name\": \"broken\",").unwrap();
    let deployments = wait_for("the broken file reported", || {
        let list = json(&http_get(port, "/deployments", None)?.body);
        let broken = list
            .as_array()?
            .iter()
            .find(|d| {
                d["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("40_broken.json"))
            })?
            .clone();
        (broken["state"] == "failed").then_some(broken)
    });
    let error = deployments["error"].as_str().unwrap();
    assert!(error.contains("40_broken.json:1:"), "{error}");
    assert!(deployments["applied_at"].as_str().unwrap().ends_with('Z'));
    let components = json(&http_get(port, "/components", None).unwrap().body);
    for name in ["admin", "pulse", "extra"] {
        assert_eq!(
            component(&components, name).unwrap()["state"],
            "running",
            "{name}"
        );
    }

    // A removed one is undeployed.
    fs::remove_file(dir.path().join("30_extra.json")).unwrap();
    wait_for("extra gone", || {
        let list = json(&http_get(port, "/components", None)?.body);
        component(&list, "extra").is_none().then_some(())
    });

    // SIGTERM: a clean stop in reverse order, exit 0.
    daemon.signal("TERM");
    let status = daemon.wait();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log().join("\n"));
    let log = daemon.log();
    let order = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{}", log.join("\n")))
    };
    let (pulse, admin, deployer) = (
        order("component=pulse isopace_host::host: stopped"),
        order("component=admin isopace_host::host: stopped"),
        order("component=deployer isopace_host::host: stopped"),
    );
    assert!(pulse < admin && admin < deployer, "{}", log.join("\n"));
    assert!(
        order("component=deployer isopace_host::host: started")
            < order("component=admin isopace_host::host: started")
    );
}

#[test]
fn the_token_guards_components_and_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    fs::write(
        dir.path().join("admin.json"),
        format!(
            r#"{{"name": "admin", "type": "admin", "config": {{"listen": "127.0.0.1:{port}", "token": "${{ADMIN_TOKEN}}"}}}}"#
        ),
    )
    .unwrap();
    let _daemon = Daemon::start(dir.path(), &[], &[("ADMIN_TOKEN", "s3cret".into())]);
    wait_for("/readyz 200", || {
        http_get(port, "/readyz", None).filter(|r| r.status == 200)
    });
    for path in ["/components", "/deployments"] {
        assert_eq!(http_get(port, path, None).unwrap().status, 401, "{path}");
        assert_eq!(http_get(port, path, Some("wrong")).unwrap().status, 401);
        assert_eq!(http_get(port, path, Some("s3cret")).unwrap().status, 200);
    }
    // Health, readiness and metrics stay open for probes and scrapers.
    assert_eq!(http_get(port, "/metrics", None).unwrap().status, 200);
    assert_eq!(http_get(port, "/nope", None).unwrap().status, 404);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
}

#[test]
fn a_missing_deploy_directory_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = isopace()
        .args(["run", "--deploy"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

fn validate(dir: &Path) -> (i32, String) {
    let output = isopace().arg("validate").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[test]
fn validate_reports_every_kind_of_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&str, &str, &str)] = &[
        (
            "a_bad_json.json",
            "{\"name\": \"a\",\n \"type\": }",
            "a_bad_json.json:2:10",
        ),
        (
            "b_unknown_field.json",
            "{\"name\": \"b\", \"type\": \"heartbeat\",\n \"enabeld\": true}",
            "unknown field `enabeld`",
        ),
        (
            "b_typo_type.json",
            "{\"name\": \"bt\", \"type\": \"hearbeat\"}",
            "unknown component type `hearbeat`; did you mean `heartbeat`?",
        ),
        (
            "c_missing_name.json",
            "{\"type\": \"heartbeat\"}",
            "missing field `name`",
        ),
        (
            "d_missing_type.json",
            "{\"name\": \"d\"}",
            "missing field `type`",
        ),
        (
            "e_unknown_type.json",
            "{\"name\": \"e\", \"type\": \"warp-drive\"}",
            "e_unknown_type.json:1:23: field `type`: unknown component type `warp-drive`",
        ),
        (
            "f_bad_config.json",
            "{\"name\": \"f\", \"type\": \"admin\",\n \"config\": {\"listen\": \"not an address\"}}",
            "f_bad_config.json:2:",
        ),
        (
            "g_unset_var.json",
            "{\"name\": \"g\", \"type\": \"heartbeat\", \"config\": {\"message\": \"${NOT_SET_ANYWHERE}\"}}",
            "`NOT_SET_ANYWHERE` is not set",
        ),
        (
            "h_first.json",
            "{\"name\": \"dup\", \"type\": \"heartbeat\"}",
            "",
        ),
        (
            "i_second.json",
            "{\"name\": \"dup\", \"type\": \"heartbeat\"}",
            "component name `dup` is already declared by",
        ),
    ];
    for (file, text, _) in files {
        fs::write(dir.path().join(file), text).unwrap();
    }
    let (code, output) = validate(dir.path());
    assert_eq!(code, 78, "{output}");
    for (file, _, expected) in files {
        if expected.is_empty() {
            continue;
        }
        let line = output
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not reported in\n{output}"));
        assert!(line.contains(expected), "{line:?} lacks {expected:?}");
    }
    assert!(output.contains("field `config.listen`"), "{output}");
    assert!(output.contains("did you mean `enabled`?"), "{output}");
    assert!(output.contains("9 problems"), "{output}");

    let clean = tempfile::tempdir().unwrap();
    copy_example(clean.path());
    let (code, output) = validate(clean.path());
    assert_eq!(code, 0, "{output}");
}

#[test]
fn every_example_printed_by_types_passes_validate() {
    let output = isopace().arg("types").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut examples = 0;
    let mut block: Option<String> = None;
    for line in text.lines() {
        match (line, &mut block) {
            ("    {", None) => block = Some("{".to_owned()),
            ("    }", Some(b)) => {
                b.push('}');
                examples += 1;
                fs::write(dir.path().join(format!("{examples:02}.json")), b.as_str()).unwrap();
                block = None;
            }
            (l, Some(b)) => b.push_str(l),
            _ => {}
        }
    }
    assert!(examples >= 2, "{text}");
    let (code, report) = validate(dir.path());
    assert_eq!(code, 0, "{report}\n{text}");
}

#[test]
fn types_name_shows_one_type_and_suggests_for_a_typo() {
    let output = isopace().args(["types", "tcp-proxy"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("tcp-proxy\n    "), "{text}");
    assert_eq!(text.matches("\"type\":").count(), 1, "{text}");
    assert!(
        text.contains("\n        \"upstream\": \"127.0.0.1:7001\"\n"),
        "{text}"
    );
    assert!(
        !text.contains("idle_timeout"),
        "its default is none: {text}"
    );

    let output = isopace().args(["types", "tcp-prxy"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "isopace: unknown component type `tcp-prxy`; did you mean `tcp-proxy`?"
    );
}

#[test]
fn validate_takes_the_directory_as_dir_or_deploy_but_not_both() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let validate = |args: &[&str], env: Option<&str>| {
        let mut command = isopace();
        command.arg("validate").args(args);
        if let Some(value) = env {
            command.env("ISOPACE_DEPLOY", value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap(), stderr)
    };
    let path = dir.path().to_str().unwrap();
    assert_eq!(validate(&[path], None).0, 0);
    assert_eq!(validate(&["--deploy", path], None).0, 0);
    assert_eq!(validate(&[], Some(path)).0, 0);
    // The variable stands in for DIR; a directory given on the command line wins.
    assert_eq!(validate(&["--deploy", path], Some("/nonexistent")).0, 0);
    assert_eq!(validate(&[path], Some("/nonexistent")).0, 0);
    let (code, stderr) = validate(&[path, "--deploy", path], None);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("give the descriptor directory once: as DIR or as --deploy DIR"),
        "{stderr}"
    );
}

#[test]
fn flags_take_booleans_and_durations_as_operators_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let run = |vars: &[(&str, &str)]| {
        let mut command = isopace();
        command.args([
            "run",
            "--shutdown-timeout",
            "45",
            "--scan-interval",
            "1d",
            "--deploy",
        ]);
        command.arg(&missing).envs(vars.iter().copied());
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap(), stderr)
    };
    // Parsed: `run` gets as far as the missing directory.
    for (watch, critical) in [("1", "0"), ("Yes", "off"), ("TRUE", "No"), ("on", "false")] {
        let vars = [
            ("ISOPACE_NO_WATCH", watch),
            ("ISOPACE_EXIT_ON_CRITICAL_FAILURE", critical),
        ];
        let (code, stderr) = run(&vars);
        assert_eq!(code, 78, "{vars:?}: {stderr}");
    }
    let (code, stderr) = run(&[("ISOPACE_NO_WATCH", "maybe")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid boolean \"maybe\": use 1/0, true/false, yes/no or on/off"),
        "{stderr}"
    );
}

#[test]
fn config_get_shows_an_override_and_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("isopace.json");
    fs::write(
        &file,
        r#"{"link": {"timeout": "5s", "max_conns": 2}, "db": {"password": "hunter2"}}"#,
    )
    .unwrap();
    let output = isopace()
        .args(["config", "get", "link.max_conns", "--config"])
        .arg(&file)
        .env("ISOPACE_LINK_MAX_CONNS", "16")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.trim(),
        "link.max_conns = 16  (env ISOPACE_LINK_MAX_CONNS)"
    );

    let output = isopace()
        .args(["config", "dump", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("db.password = \"***\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("link.timeout = \"5s\"  (file "), "{text}");

    let output = isopace()
        .args(["config", "get", "nope", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn help_works_everywhere_and_usage_errors_exit_2() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["validate", "--help"],
        &["types", "--help"],
        &["config", "--help"],
        &["config", "get", "--help"],
        &["--version"],
    ] {
        let output = isopace().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
    }
    let output = isopace().args(["run", "--frobnicate"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_config_files_log_level_applies_and_changes_live() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    fs::write(
        deploy.join("beat.json"),
        r#"{"name": "beat", "type": "heartbeat", "config": {"interval": "50ms", "message": "tick-tock"}}"#,
    )
    .unwrap();
    let config = dir.path().join("isopace.json");
    fs::write(&config, r#"{"logging": {"level": "warn"}}"#).unwrap();
    let mut daemon = Daemon::start(&deploy, &["--config", config.to_str().unwrap()], &[]);
    // At warn, the heartbeat's info lines are filtered out.
    thread::sleep(Duration::from_millis(500));
    assert!(!daemon.log_has("tick-tock"), "{}", daemon.log().join("\n"));

    write_atomically(&config, r#"{"logging": {"level": "info"}}"#);
    wait_for("info lines after the level change", || {
        daemon.log_has("tick-tock").then_some(())
    });
    daemon.signal("INT");
    assert_eq!(daemon.wait().code(), Some(0));
}

#[test]
fn components_show_the_hosts_status_and_an_exec_childs_pid() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    fs::write(
        dir.path().join("00_admin.json"),
        format!(
            r#"{{"name": "admin", "type": "admin", "config": {{"listen": "127.0.0.1:{port}"}}}}"#
        ),
    )
    .unwrap();
    fs::write(
        dir.path().join("10_sleeper.json"),
        r#"{"name": "sleeper", "type": "exec", "config": {"command": ["sleep", "60"], "stop_grace": "2s"}}"#,
    )
    .unwrap();
    let mut daemon = Daemon::start(dir.path(), &[], &[]);
    let sleeper = wait_for("the child's pid in /components", || {
        let list = json(&http_get(port, "/components", None)?.body);
        let sleeper = component(&list, "sleeper")?.clone();
        // The child's pid is published during start, before the state says running.
        (sleeper["details"]["pid"].is_u64() && sleeper["state"] == "running").then_some(sleeper)
    });
    // The host's status at the top level, the child's own details below.
    assert_eq!(sleeper["state"], "running");
    assert_eq!(sleeper["restarts"], 0);
    assert_eq!(sleeper["ready"], true);
    let pid = sleeper["details"]["pid"].as_u64().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
    // Stopped and reaped by the daemon: no process, not even a zombie, is left with that pid.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// The soft limit on open files of process `pid`, from `/proc/<pid>/limits`.
#[cfg(target_os = "linux")]
fn soft_open_files(pid: u32) -> u64 {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn run_raises_its_open_file_limit_and_exec_children_keep_the_original() {
    use std::os::unix::process::CommandExt;

    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let hard = limit.rlim_max.min(1 << 20);
    let lowered = (hard / 2).min(1000);
    assert!(
        lowered >= 64,
        "the hard limit ({hard}) is too low to test with"
    );

    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("limits.json"),
        r#"{"name": "limits", "type": "exec", "config": {
            "command": ["sh", "-c", "echo soft-limit-$(ulimit -Sn); exec sleep 60"],
            "stop_grace": "2s"
        }}"#,
    )
    .unwrap();
    let mut daemon = Daemon::start_with(dir.path(), &["--log-level", "debug"], &[], |cmd| {
        let lowered_limit = libc::rlimit {
            rlim_cur: lowered,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit is async-signal-safe and reads a struct copied into the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lowered_limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    wait_until("the child's soft limit in the log", || {
        daemon.log_has(&format!("soft-limit-{lowered}"))
    });
    assert_eq!(soft_open_files(daemon.child.id()), hard);
    assert!(daemon.log_has("raised the soft limit on open files"));
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

/// An echo server on a thread of its own: each connection gets its bytes back.
fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut back = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut stream, &mut back);
            });
        }
    });
    port
}

/// Hundreds of admin clients that connect and never send a request, under a limit of 256
/// open files (which once made the deployer fail with "Too many open files"): the admin
/// endpoint stops accepting while only its descriptor reserve is left, and a new
/// descriptor still deploys a proxy that relays.
#[cfg(target_os = "linux")]
#[test]
fn stalled_admin_clients_under_a_low_open_file_limit_never_starve_a_deploy() {
    use std::os::unix::process::CommandExt;

    const LIMIT: libc::rlim_t = 256;
    let somaxconn: usize = fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (admin, edge, upstream) = (free_port(), free_port(), echo_server());
    // The connection limit is set out of the way, so the descriptor reserve is what holds.
    fs::write(
        dir.path().join("00_admin.json"),
        format!(
            r#"{{"name": "admin", "type": "admin", "config": {{
                "listen": "127.0.0.1:{admin}", "header_timeout": "60s", "max_connections": 1000
            }}}}"#
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start_with(dir.path(), &[], &[], |cmd| {
        let low = libc::rlimit {
            rlim_cur: LIMIT,
            rlim_max: LIMIT,
        };
        // SAFETY: setrlimit is async-signal-safe and reads a struct copied into the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &low) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    wait_for("/healthz", || {
        http_get(admin, "/healthz", None).filter(|r| r.status == 200)
    });

    // More than the limit could hold; what the endpoint does not accept waits in the
    // backlog (kept within it, so no connect waits on a dropped SYN).
    let clients = 300.min(150 + somaxconn);
    let stalled: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(("127.0.0.1", admin)).unwrap())
        .collect();
    wait_until("the admin endpoint pausing for its reserve", || {
        daemon.log_has("admin endpoint stopped accepting")
    });

    write_atomically(
        dir.path().join("10_edge.json"),
        format!(
            r#"{{"name": "edge", "type": "tcp-proxy", "config": {{
                "listen": "127.0.0.1:{edge}", "upstream": "127.0.0.1:{upstream}"
            }}}}"#
        ),
    );
    wait_until("edge deployed", || {
        daemon.log_has("component=edge isopace_deploy::deployer: deployed")
    });
    let mut relayed = TcpStream::connect(("127.0.0.1", edge)).unwrap();
    relayed
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    relayed.write_all(b"through the proxy").unwrap();
    let mut back = [0; 17];
    relayed.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through the proxy");
    drop(relayed);

    // The stalled clients leave; the endpoint answers again.
    drop(stalled);
    wait_for("/healthz after the stalled clients left", || {
        http_get(admin, "/healthz", None).filter(|r| r.status == 200)
    });
    assert!(
        !daemon.log_has("Too many open files"),
        "{}",
        daemon.log().join("\n")
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0), "{}", daemon.log().join("\n"));
}

/// A heartbeat that logs `message` at info every 50 ms, in a new deploy directory.
fn ticking(dir: &Path, message: &str) -> std::path::PathBuf {
    let deploy = dir.join("deploy");
    fs::create_dir(&deploy).unwrap();
    fs::write(
        deploy.join("beat.json"),
        format!(r#"{{"name": "beat", "type": "heartbeat", "config": {{"interval": "50ms", "message": "{message}"}}}}"#),
    )
    .unwrap();
    deploy
}

#[test]
fn the_log_filter_comes_from_the_flags_then_rust_log_then_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = ticking(dir.path(), "tick-tock");
    let config = dir.path().join("isopace.json");
    fs::write(&config, r#"{"logging": {"level": "error"}}"#).unwrap();
    let config = config.to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: &[Case<'_>] = &[
        // RUST_LOG beats the config file.
        (&["--config", config], &[("RUST_LOG", "info")]),
        // --log-filter beats RUST_LOG, and so does its variable.
        (
            &["--log-filter", "warn,isopace_builtins=info"],
            &[("RUST_LOG", "error")],
        ),
        (
            &[],
            &[("RUST_LOG", "error"), ("ISOPACE_LOG_FILTER", "info")],
        ),
        // --log-level beats RUST_LOG.
        (&["--log-level", "info"], &[("RUST_LOG", "off")]),
    ];
    for (args, env) in cases {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut daemon = Daemon::start(&deploy, args, &env);
        wait_until(&format!("info lines with {args:?} {env:?}"), || {
            daemon.log_has("tick-tock")
        });
        daemon.signal("TERM");
        daemon.wait();
    }
}

#[test]
fn a_config_level_under_a_flag_is_ignored_and_said_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = ticking(dir.path(), "tick-tock");
    let config = dir.path().join("isopace.json");
    fs::write(&config, r#"{"logging": {"level": "warn"}}"#).unwrap();
    let config_arg = config.to_str().unwrap();
    let args = [
        "--config",
        config_arg,
        "--log-filter",
        "warn,isopace_cli=info",
    ];
    let mut daemon = Daemon::start(&deploy, &args, &[]);
    let ignored = |daemon: &Daemon| {
        daemon
            .log()
            .iter()
            .filter(|l| l.contains("logging.level changed; ignored"))
            .count()
    };
    wait_until("ready", || daemon.log_has("ready: initial deploy finished"));
    write_atomically(&config, r#"{"logging": {"level": "debug"}}"#);
    wait_until("the first change said", || ignored(&daemon) == 1);
    write_atomically(&config, r#"{"logging": {"level": "debug"}, "other": 1}"#);
    write_atomically(&config, r#"{"logging": {"level": "info"}}"#);
    wait_until("the second change said", || ignored(&daemon) == 2);
    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0));
    assert_eq!(ignored(&daemon), 2, "{}", daemon.log().join("\n"));
    assert!(!daemon.log_has("tick-tock"), "{}", daemon.log().join("\n"));
}

#[test]
fn validate_warns_of_deprecated_fields_where_the_file_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.json");
    fs::write(
        &file,
        "{\"name\": \"w\", \"type\": \"exec\",\n \"config\": {\"command\": [\"/bin/sleep\", \"1\"],\n   \"restart\": \"always\", \"max_restarts\": 3}}\n",
    )
    .unwrap();
    let output = isopace()
        .args(["validate", "--no-preflight"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let file = file.display();
    let expected = format!(
        "warning: {file}:3:15: field `config.restart`: deprecated; use `restart.policy`\n\
         warning: {file}:3:41: field `config.max_restarts`: deprecated; use `restart.max_restarts`\n"
    );
    assert_eq!(stderr, expected);
}

#[test]
fn a_log_filter_that_does_not_parse_is_a_configuration_error_naming_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let flag = "--log-filter (ISOPACE_LOG_FILTER)";
    let cases: [(&[&str], (&str, &str), &str); 3] = [
        (&["--log-filter", "info,hyper=loud"], ("", ""), flag),
        (&[], ("ISOPACE_LOG_FILTER", "info,hyper=loud"), flag),
        (&[], ("RUST_LOG", "info,hyper=loud"), "RUST_LOG"),
    ];
    for (args, (var, value), from) in cases {
        let mut cmd = isopace();
        cmd.args(["run", "--deploy"]).arg(dir.path()).args(args);
        if !var.is_empty() {
            cmd.env(var, value);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{args:?} {var}: {stderr}");
        let said = format!("isopace: {from}: invalid log directive `hyper=loud`");
        assert!(stderr.starts_with(&said), "{args:?} {var}: {stderr}");
    }
}
