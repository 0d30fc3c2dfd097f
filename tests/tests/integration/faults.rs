//! The fault catalogue: every fault the deployer and the host must contain, run as one table
//! so the suite can say how many kinds it exercised.
//!
//! Each case starts from a fresh fixture where a sentinel component, deployed from its own
//! file, runs. The case injects its fault and checks that the fault is reported with the file
//! (and position or field, where there is one) or the component it concerns, and that what
//! ran before keeps running. After every case the runner checks that the sentinel still runs
//! and was neither started again nor stopped, also after one more scan.
//!
//! Time is paused, so the hanging starts and stops cost no real time: the runtime moves the
//! clock to the host's timeout as soon as nothing else can run.

use std::{
    collections::BTreeSet,
    fs,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    time::Duration,
};

use isopace_deploy::{DescriptorError, ErrorKind, FileState, ScanReport};
use isopace_host::{Phase, State};
use isopace_tests::{
    FifoWatchdog, Fixture, LogCapture, SECRET_VALUE, SECRET_VAR, mkfifo, probe_descriptor,
    write_atomically,
};
use serde_json::{Value, json};

const SENTINEL: &str = "sentinel";
const SENTINEL_FILE: &str = "00_sentinel.json";
const FAULTY: &str = "faulty";
const FAULTY_FILE: &str = "10_faulty.json";
/// The real time a step that meets a FIFO gets before the test calls it blocked.
const FIFO_LIMIT: Duration = Duration::from_secs(5);

type Run = for<'a> fn(&'a Fixture, &'a LogCapture) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One kind of fault and the function that injects it and checks the outcome.
struct Case {
    kind: &'static str,
    run: Run,
}

macro_rules! case {
    ($kind:literal, $run:ident) => {
        Case {
            kind: $kind,
            run: |f, logs| Box::pin($run(f, logs)),
        }
    };
}

fn catalogue() -> Vec<Case> {
    vec![
        case!("panic in start", panic_in_start),
        case!("panic in stop", panic_in_stop),
        case!("start hangs", start_hangs),
        case!("stop hangs", stop_hangs),
        case!("start error", start_error),
        case!("stop error", stop_error),
        case!("invalid JSON", invalid_json),
        case!("truncated JSON", truncated_json),
        case!("non-UTF-8 bytes", non_utf8_bytes),
        case!("10 MiB file", ten_mib_file),
        case!("unknown type", unknown_type),
        case!("unknown field", unknown_field),
        case!("missing name", missing_name),
        case!("duplicate name", duplicate_name),
        case!("unset variable", unset_variable),
        case!("`enabled` that is not a bool", enabled_not_a_bool),
        case!(
            "a substituted secret in a failing config",
            secret_in_a_failing_config
        ),
        case!(
            "deploy directory deleted and recreated",
            deploy_dir_deleted_and_recreated
        ),
        case!("unreadable descriptor", unreadable_descriptor),
        case!("symlink loop", symlink_loop),
        case!("FIFO named *.json", fifo_descriptor),
        case!(
            "socket, device and directory named *.json",
            special_files_named_json
        ),
        case!("file name that is not UTF-8", non_utf8_file_name),
        case!("ConfigMap swap to a bad version and back", configmap_swap),
        case!(
            "config reload to invalid JSON",
            config_reload_to_invalid_json
        ),
        case!("FIFO at the config file's path", config_fifo),
        case!("config file over the size limit", config_too_large),
        case!("1 000 rapid rewrites of one file", rapid_rewrites),
        case!("500 files appearing at once", five_hundred_files),
    ]
}

#[tokio::test(start_paused = true)]
async fn fault_catalogue() {
    let logs = LogCapture::install();
    let catalogue = catalogue();
    let mut exercised = BTreeSet::new();
    for case in &catalogue {
        let _context = FailingCase(case.kind);
        let f = Fixture::new().await;
        f.write(SENTINEL_FILE, probe(SENTINEL, json!({ "tag": "s1" })));
        assert_eq!(f.scan().await.deployed, [SENTINEL]);
        logs.clear();

        (case.run)(&f, &logs).await;

        assert_sentinel_untouched(&f);
        f.scan().await;
        assert_sentinel_untouched(&f);
        assert!(
            exercised.insert(case.kind),
            "`{}` is listed twice",
            case.kind
        );
    }
    assert_eq!(exercised.len(), catalogue.len());
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&format!("{} kinds of fault", exercised.len())),
        "tests/README.md should say the catalogue has {} kinds of fault",
        exercised.len()
    );
    println!(
        "fault catalogue: {} fault kinds exercised, all contained",
        exercised.len()
    );
}

/// Names the case in the output when it fails.
struct FailingCase(&'static str);

impl Drop for FailingCase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fault case `{}` failed", self.0);
        }
    }
}

#[track_caller]
fn assert_sentinel_untouched(f: &Fixture) {
    f.assert_running(SENTINEL, "s1");
    assert_eq!(
        f.lifecycle().starts(SENTINEL),
        1,
        "the sentinel was restarted"
    );
    assert_eq!(f.lifecycle().stops(SENTINEL), 0, "the sentinel was stopped");
    let status = f
        .file_status(SENTINEL_FILE)
        .expect("the sentinel's file status");
    assert_eq!(status.state, FileState::Deployed, "{status:?}");
}

fn probe(name: &str, config: Value) -> String {
    probe_descriptor(name, &config)
}

/// A probe config with `tag` and one fault switched on.
fn faulty_config(tag: &str, fault: &str) -> Value {
    let mut config = json!({ "tag": tag });
    config[fault] = Value::Bool(true);
    config
}

/// Deploys (or keeps) version `v1` of the faulty file's component.
async fn deploy_faulty_v1(f: &Fixture) {
    f.write(FAULTY_FILE, probe(FAULTY, json!({ "tag": "v1" })));
    f.scan().await;
    f.assert_running(FAULTY, "v1");
}

#[track_caller]
fn only_failure(report: &ScanReport) -> &DescriptorError {
    assert_eq!(report.failures.len(), 1, "{report:#?}");
    &report.failures[0]
}

/// The file's status says it failed, names the file in its error, and keeps `name`.
#[track_caller]
fn assert_failed_status(f: &Fixture, file: &str, name: Option<&str>) {
    let status = f.file_status(file).expect("a status for every listed file");
    assert_eq!(status.state, FileState::Failed, "{status:?}");
    assert_eq!(status.name.as_deref(), name, "{status:?}");
    let error = status
        .error
        .as_ref()
        .map(|e| isopace_host::error_chain(e))
        .expect("a failed file has an error");
    assert!(
        error.starts_with(&f.path(file).display().to_string()),
        "{error}"
    );
}

fn starts_of_version(f: &Fixture, component: &str, tag: &str) -> usize {
    f.lifecycle()
        .events()
        .iter()
        .filter(|e| e.component == component && e.tag == tag && e.phase == Phase::Start)
        .count()
}

// --- Faults in start: the new version is rolled back to the old one. -----------------------

async fn start_fault(f: &Fixture, fault: &str, expected: &str) {
    deploy_faulty_v1(f).await;
    f.write(FAULTY_FILE, probe(FAULTY, faulty_config("v2", fault)));
    let report = f.scan().await;
    assert_eq!(report.rolled_back, [FAULTY], "{report:#?}");
    let failure = only_failure(&report);
    assert_eq!(failure.file(), f.path(FAULTY_FILE));
    assert_eq!(failure.kind(), &ErrorKind::Start);
    assert!(failure.detail().contains(expected), "{failure}");
    assert!(
        failure
            .detail()
            .starts_with("not redeployed; rolled back to the previous version"),
        "{failure}"
    );
    f.assert_running(FAULTY, "v1");
    assert_failed_status(f, FAULTY_FILE, Some(FAULTY));

    // Reported once per content, and the failing version is not tried again.
    assert!(f.scan().await.is_quiet());
    assert_eq!(starts_of_version(f, FAULTY, "v2"), 1);
    f.assert_running(FAULTY, "v1");
}

async fn panic_in_start(f: &Fixture, _logs: &LogCapture) {
    start_fault(
        f,
        "panic_start",
        "component `faulty` panicked in start: probe `faulty` asked to panic in start",
    )
    .await;
}

async fn start_hangs(f: &Fixture, _logs: &LogCapture) {
    start_fault(
        f,
        "hang_start",
        "component `faulty` did not start within 2s",
    )
    .await;
}

async fn start_error(f: &Fixture, _logs: &LogCapture) {
    start_fault(
        f,
        "fail_start",
        "component `faulty` failed to start: probe `faulty` asked to fail in start",
    )
    .await;
}

// --- Faults in stop: the old version is dropped anyway and the new one runs. ----------------

async fn stop_fault(f: &Fixture, logs: &LogCapture, fault: &str, reason: &str, expected: &str) {
    f.write(FAULTY_FILE, probe(FAULTY, faulty_config("v1", fault)));
    assert_eq!(f.scan().await.deployed, [FAULTY]);
    f.write(FAULTY_FILE, probe(FAULTY, json!({ "tag": "v2" })));
    let report = f.scan().await;
    assert_eq!(report.redeployed, [FAULTY], "{report:#?}");
    assert!(report.failures.is_empty(), "{report:#?}");
    f.assert_running(FAULTY, "v2");
    assert_eq!(f.host().components(), [SENTINEL, FAULTY]);
    assert_eq!(
        f.file_status(FAULTY_FILE).map(|s| s.state),
        Some(FileState::Deployed)
    );

    // The failed stop is reported with the component's name: in the log and in the metrics.
    assert!(
        logs.find(FAULTY, expected).is_some(),
        "no log record names `{FAULTY}` with `{expected}`: {:#?}",
        logs.records()
    );
    let metrics = f.metrics().render();
    assert!(
        metrics.lines().any(|line| {
            line.starts_with("isopace_lifecycle_failures_total{")
                && line.contains(r#"component="faulty""#)
                && line.contains(r#"phase="stop""#)
                && line.contains(&format!(r#"reason="{reason}""#))
                && line.ends_with(" 1")
        }),
        "{metrics}"
    );

    // Removing the file undeploys the new version cleanly.
    f.remove(FAULTY_FILE);
    assert_eq!(f.scan().await.undeployed, [FAULTY]);
    assert_eq!(f.state_of(FAULTY), None);
}

async fn panic_in_stop(f: &Fixture, logs: &LogCapture) {
    stop_fault(
        f,
        logs,
        "panic_stop",
        "panic",
        "component `faulty` panicked in stop: probe `faulty` asked to panic in stop",
    )
    .await;
}

async fn stop_hangs(f: &Fixture, logs: &LogCapture) {
    stop_fault(
        f,
        logs,
        "hang_stop",
        "timeout",
        "component `faulty` did not stop within 2s",
    )
    .await;
}

async fn stop_error(f: &Fixture, logs: &LogCapture) {
    stop_fault(
        f,
        logs,
        "fail_stop",
        "error",
        "component `faulty` failed to stop: probe `faulty` asked to fail in stop",
    )
    .await;
}

// --- Bad descriptor content: the running version stays. ------------------------------------

/// Replaces the running faulty file with `bytes`, checks the report with `check`, checks that
/// version `v1` kept running untouched, then restores `v1` and checks nothing restarts.
async fn content_fault(f: &Fixture, bytes: &[u8], check: impl FnOnce(&DescriptorError)) {
    deploy_faulty_v1(f).await;
    let starts = f.lifecycle().starts(FAULTY);
    f.write(FAULTY_FILE, bytes);
    let report = f.scan().await;
    let failure = only_failure(&report);
    assert_eq!(failure.file(), f.path(FAULTY_FILE));
    assert!(
        failure
            .to_string()
            .starts_with(&f.path(FAULTY_FILE).display().to_string()),
        "{failure}"
    );
    check(failure);
    f.assert_running(FAULTY, "v1");
    assert_failed_status(f, FAULTY_FILE, Some(FAULTY));
    assert!(f.scan().await.is_quiet(), "a failure is reported once");

    // Back to the running version: nothing restarts and the file is healthy again.
    f.write(FAULTY_FILE, probe(FAULTY, json!({ "tag": "v1" })));
    assert!(f.scan().await.is_quiet());
    assert_eq!(
        f.lifecycle().starts(FAULTY),
        starts,
        "the component restarted"
    );
    assert_eq!(f.lifecycle().stops(FAULTY), 0, "the component was stopped");
    assert_eq!(
        f.file_status(FAULTY_FILE).map(|s| s.state),
        Some(FileState::Deployed)
    );
}

#[track_caller]
fn assert_at(failure: &DescriptorError, line: usize, column: usize) {
    let at = failure.position().expect("a position");
    assert_eq!((at.line, at.column), (line, column), "{failure}");
}

async fn invalid_json(f: &Fixture, _logs: &LogCapture) {
    let text = "{\n  \"name\": \"faulty\"\n  \"type\": \"probe\"\n}";
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::Syntax);
        assert_at(e, 3, 3);
        assert!(e.detail().contains("expected `,` or `}`"), "{e}");
    })
    .await;
}

async fn truncated_json(f: &Fixture, _logs: &LogCapture) {
    let whole = probe(FAULTY, json!({ "tag": "v2" }));
    content_fault(f, &whole.as_bytes()[..whole.len() / 2], |e| {
        assert_eq!(e.kind(), &ErrorKind::Syntax);
        assert_eq!(e.position().map(|p| p.line), Some(1), "{e}");
        assert!(e.detail().contains("EOF"), "{e}");
    })
    .await;
}

async fn non_utf8_bytes(f: &Fixture, _logs: &LogCapture) {
    let mut bytes = br#"{"name": "faulty", "type": "probe", "config": {"tag": ""#.to_vec();
    let at = bytes.len();
    bytes.extend_from_slice(b"\xff\xfe\"}}");
    content_fault(f, &bytes, |e| {
        assert_eq!(e.kind(), &ErrorKind::Syntax);
        assert_at(e, 1, at + 1);
        assert!(
            e.detail().contains(&format!("invalid UTF-8 at byte {at}")),
            "{e}"
        );
    })
    .await;
}

async fn ten_mib_file(f: &Fixture, _logs: &LogCapture) {
    // Valid JSON, so only its size is wrong.
    let padding = "x".repeat(10 * 1024 * 1024);
    let text =
        format!(r#"{{"name": "faulty", "type": "probe", "config": {{"tag": "{padding}"}}}}"#);
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::TooLarge);
        assert!(
            e.detail()
                .contains(&format!("the file is {} bytes", text.len())),
            "{e}"
        );
    })
    .await;
}

async fn unknown_type(f: &Fixture, _logs: &LogCapture) {
    let text = "{\"name\": \"faulty\",\n \"type\": \"no-such-type\"}";
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::UnknownType("no-such-type".into()));
        assert_eq!(e.field_path(), Some("type"));
        assert_at(e, 2, 10);
        assert!(e.detail().contains("registered: probe"), "{e}");
    })
    .await;
}

async fn unknown_field(f: &Fixture, _logs: &LogCapture) {
    // At the top level of the descriptor...
    let text = "{\"name\": \"faulty\", \"type\": \"probe\",\n \"enabeld\": false}";
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::Field);
        assert_eq!(e.position().map(|p| p.line), Some(2), "{e}");
        assert!(e.detail().contains("unknown field `enabeld`"), "{e}");
    })
    .await;
    // ...and inside the type's typed config.
    let text = "{\"name\": \"faulty\", \"type\": \"probe\",\n \"config\": {\"tag\": \"v2\", \"colour\": 1}}";
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::Field);
        assert_eq!(e.field_path(), Some("config.colour"), "{e}");
        assert_eq!(e.position().map(|p| p.line), Some(2), "{e}");
        assert!(e.detail().contains("unknown field `colour`"), "{e}");
    })
    .await;
}

async fn missing_name(f: &Fixture, _logs: &LogCapture) {
    let text = r#"{"type": "probe", "config": {"tag": "v2"}}"#;
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::Field);
        assert!(e.detail().contains("missing field `name`"), "{e}");
        assert!(e.position().is_some(), "{e}");
    })
    .await;
}

async fn unset_variable(f: &Fixture, _logs: &LogCapture) {
    let text = "{\"name\": \"faulty\", \"type\": \"probe\",\n \"config\": {\"tag\": \"${NOT_SET_ANYWHERE}\"}}";
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(
            e.kind(),
            &ErrorKind::UnsetVariable("NOT_SET_ANYWHERE".into())
        );
        assert_eq!(e.field_path(), Some("config"));
        assert_at(e, 2, 21);
        assert!(
            e.detail()
                .contains("environment variable `NOT_SET_ANYWHERE` is not set"),
            "{e}"
        );
    })
    .await;
}

async fn enabled_not_a_bool(f: &Fixture, _logs: &LogCapture) {
    let text = "{\"name\": \"faulty\", \"type\": \"probe\",\n \"enabled\": \"yes\"}";
    content_fault(f, text.as_bytes(), |e| {
        assert_eq!(e.kind(), &ErrorKind::Field);
        assert_eq!(e.field_path(), Some("enabled"));
        assert_at(e, 2, 17);
        assert!(e.to_string().contains(":2:17: field `enabled`: "), "{e}");
        assert!(
            e.detail()
                .contains(r#"invalid type: string "yes", expected a boolean"#),
            "{e}"
        );
    })
    .await;
}

async fn secret_in_a_failing_config(f: &Fixture, logs: &LogCapture) {
    let reference = format!("${{{SECRET_VAR}}}");
    for (fault, kind) in [
        ("fail_build", ErrorKind::Build),
        ("fail_start", ErrorKind::Start),
    ] {
        f.write(
            FAULTY_FILE,
            probe(FAULTY, json!({ "tag": reference, fault: true })),
        );
        let report = f.scan().await;
        let failure = only_failure(&report);
        assert_eq!(failure.kind(), &kind, "{failure}");
        let chain = isopace_host::error_chain(failure);
        assert!(chain.contains(&format!("tag `{reference}`")), "{chain}");
        assert!(
            !chain.contains(SECRET_VALUE),
            "{fault}: the secret leaked: {chain}"
        );
        let status = f.file_status(FAULTY_FILE).expect("a status");
        let shown = isopace_host::error_chain(status.error.as_ref().expect("an error"));
        assert!(!shown.contains(SECRET_VALUE), "{shown}");
        f.remove(FAULTY_FILE);
        f.scan().await;
    }
    let leaked: Vec<_> = logs
        .records()
        .into_iter()
        .filter(|r| format!("{r:?}").contains(SECRET_VALUE))
        .collect();
    assert!(
        leaked.is_empty(),
        "log records show the secret: {leaked:#?}"
    );
}

// --- Directory-level faults. ----------------------------------------------------------------

async fn duplicate_name(f: &Fixture, _logs: &LogCapture) {
    deploy_faulty_v1(f).await;
    f.write("50_copy.json", probe(SENTINEL, json!({ "tag": "copy" })));
    f.write("60_copy.json", probe(FAULTY, json!({ "tag": "copy" })));
    let report = f.scan().await;
    assert_eq!(report.failures.len(), 2, "{report:#?}");
    for (file, first) in [
        ("50_copy.json", SENTINEL_FILE),
        ("60_copy.json", FAULTY_FILE),
    ] {
        let failure = report
            .failures
            .iter()
            .find(|e| e.file() == f.path(file))
            .unwrap_or_else(|| panic!("no failure for {file}: {report:#?}"));
        assert_eq!(
            failure.kind(),
            &ErrorKind::DuplicateName {
                first: f.path(first)
            }
        );
        assert_eq!(failure.field_path(), Some("name"));
        assert!(
            failure
                .detail()
                .contains(&f.path(first).display().to_string()),
            "{failure}"
        );
        assert_eq!(
            f.file_status(file).map(|s| s.state),
            Some(FileState::Failed)
        );
    }
    f.assert_running(FAULTY, "v1");
    assert_eq!(starts_of_version(f, SENTINEL, "copy"), 0);
    assert_eq!(starts_of_version(f, FAULTY, "copy"), 0);
    assert_eq!(f.host().components(), [SENTINEL, FAULTY]);
}

async fn deploy_dir_deleted_and_recreated(f: &Fixture, _logs: &LogCapture) {
    deploy_faulty_v1(f).await;
    let saved: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(f.dir())
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    fs::remove_dir_all(f.dir()).unwrap();

    let error = f
        .deployer()
        .scan()
        .await
        .expect_err("a missing directory fails the scan");
    match &error {
        isopace_deploy::Error::Directory { dir, .. } => assert_eq!(dir, f.dir()),
        other => panic!("expected a directory error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains(&f.dir().display().to_string()), "{text}");
    assert!(
        text.contains("nothing was deployed or undeployed"),
        "{text}"
    );
    f.assert_running(FAULTY, "v1");
    assert_eq!(f.host().components(), [SENTINEL, FAULTY]);

    // The directory comes back with the same files: nothing restarts.
    fs::create_dir(f.dir()).unwrap();
    for (path, bytes) in &saved {
        write_atomically(path, bytes);
    }
    let report = f.scan().await;
    assert!(report.is_quiet(), "{report:#?}");
    assert_eq!(report.unchanged, [SENTINEL, FAULTY]);
    assert_eq!(f.lifecycle().starts(FAULTY), 1);

    // And the recreated directory is the one the deployer follows from now on.
    f.write(FAULTY_FILE, probe(FAULTY, json!({ "tag": "v2" })));
    assert_eq!(f.scan().await.redeployed, [FAULTY]);
    f.assert_running(FAULTY, "v2");
}

/// Makes `path` a file that exists but cannot be read, and returns how.
///
/// Where permission bits bind (not root), a mode-000 file is the real thing. Root reads any
/// file whatever its mode, so there a symlink to `/proc/self/mem` stands in: it opens, and
/// reading it from offset 0 fails with EIO because that address is never mapped. A dangling
/// symlink is the last resort, and it only fails the stat.
fn make_unreadable(path: &Path) -> &'static str {
    use std::os::unix::fs::PermissionsExt;

    write_atomically(path, b"{}");
    fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(path).is_err() {
        return "mode 000";
    }
    fs::remove_file(path).unwrap();
    if cfg!(target_os = "linux") && fs::read("/proc/self/mem").is_err() {
        std::os::unix::fs::symlink("/proc/self/mem", path).unwrap();
        return "symlink to /proc/self/mem";
    }
    std::os::unix::fs::symlink("no-such-target.json", path).unwrap();
    "dangling symlink"
}

async fn unreadable_descriptor(f: &Fixture, _logs: &LogCapture) {
    deploy_faulty_v1(f).await;
    let path = f.path(FAULTY_FILE);
    let how = make_unreadable(&path);
    let report = f.scan().await;
    let failure = only_failure(&report);
    assert_eq!(failure.file(), path, "{how}");
    assert_eq!(failure.kind(), &ErrorKind::Io, "{how}: {failure}");
    assert!(failure.detail().starts_with("cannot read: "), "{failure}");
    let expected = match how {
        "mode 000" => "Permission denied",
        "symlink to /proc/self/mem" => "Input/output error",
        _ => "No such file or directory",
    };
    assert!(failure.detail().contains(expected), "{how}: {failure}");
    f.assert_running(FAULTY, "v1");
    assert_failed_status(f, FAULTY_FILE, Some(FAULTY));
    assert!(f.scan().await.is_quiet());

    fs::remove_file(&path).unwrap();
    f.write(FAULTY_FILE, probe(FAULTY, json!({ "tag": "v1" })));
    assert!(f.scan().await.is_quiet());
    assert_eq!(f.lifecycle().starts(FAULTY), 1);
}

async fn symlink_loop(f: &Fixture, _logs: &LogCapture) {
    use std::os::unix::fs::symlink;

    // The running file becomes a link to itself...
    deploy_faulty_v1(f).await;
    fs::remove_file(f.path(FAULTY_FILE)).unwrap();
    symlink(FAULTY_FILE, f.path(FAULTY_FILE)).unwrap();
    // ...and two new files point at each other.
    symlink("71_loop.json", f.path("70_loop.json")).unwrap();
    symlink("70_loop.json", f.path("71_loop.json")).unwrap();

    let report = f.scan().await;
    assert_eq!(report.failures.len(), 3, "{report:#?}");
    for (failure, file) in report
        .failures
        .iter()
        .zip([FAULTY_FILE, "70_loop.json", "71_loop.json"])
    {
        assert_eq!(failure.file(), f.path(file));
        assert_eq!(failure.kind(), &ErrorKind::Io, "{failure}");
        assert!(
            failure
                .detail()
                .contains("Too many levels of symbolic links"),
            "{failure}"
        );
    }
    f.assert_running(FAULTY, "v1");
    assert_failed_status(f, FAULTY_FILE, Some(FAULTY));
    assert_failed_status(f, "70_loop.json", None);
    assert_eq!(f.host().components(), [SENTINEL, FAULTY]);
}

/// Scans with a watchdog on `fifos`, so a scan that blocks on one fails rather than hangs.
async fn scan_past_fifos(f: &Fixture, fifos: &[PathBuf]) -> ScanReport {
    let watchdog = FifoWatchdog::arm("a scan with a FIFO named *.json", fifos, FIFO_LIMIT);
    let report = f.scan().await;
    watchdog.disarm();
    report
}

/// The failure is `file`'s, and says it is not a regular file but `what`.
#[track_caller]
fn assert_not_regular(f: &Fixture, failure: &DescriptorError, file: &str, what: &str) {
    assert_eq!(failure.file(), f.path(file));
    assert_eq!(failure.kind(), &ErrorKind::Io, "{failure}");
    assert_eq!(
        failure.to_string(),
        format!("{}: not a regular file ({what})", f.path(file).display())
    );
}

async fn fifo_descriptor(f: &Fixture, _logs: &LogCapture) {
    const PIPE: &str = "20_pipe.json";
    // A FIFO where a running file was, a new FIFO, and a new good file in the same scan.
    deploy_faulty_v1(f).await;
    fs::remove_file(f.path(FAULTY_FILE)).unwrap();
    mkfifo(&f.path(FAULTY_FILE));
    mkfifo(&f.path(PIPE));
    f.write("30_after.json", probe("after", json!({ "tag": "a1" })));
    let fifos = [f.path(FAULTY_FILE), f.path(PIPE)];

    let report = scan_past_fifos(f, &fifos).await;
    assert_eq!(report.deployed, ["after"], "{report:#?}");
    assert_eq!(report.failures.len(), 2, "{report:#?}");
    assert_not_regular(f, &report.failures[0], FAULTY_FILE, "a FIFO");
    assert_not_regular(f, &report.failures[1], PIPE, "a FIFO");
    f.assert_running(FAULTY, "v1");
    f.assert_running("after", "a1");
    assert_failed_status(f, FAULTY_FILE, Some(FAULTY));
    assert_failed_status(f, PIPE, None);

    // Reported once; the scans after it still deploy what appears.
    f.write("40_later.json", probe("later", json!({ "tag": "l1" })));
    let report = scan_past_fifos(f, &fifos).await;
    assert_eq!(report.deployed, ["later"], "{report:#?}");
    assert!(report.failures.is_empty(), "{report:#?}");

    // A regular file in the FIFO's place deploys.
    fs::remove_file(f.path(PIPE)).unwrap();
    f.write(PIPE, probe("piped", json!({ "tag": "p1" })));
    assert_eq!(scan_past_fifos(f, &fifos).await.deployed, ["piped"]);
    f.assert_running(FAULTY, "v1");
    assert_eq!(f.lifecycle().starts(FAULTY), 1);
}

async fn special_files_named_json(f: &Fixture, _logs: &LogCapture) {
    deploy_faulty_v1(f).await;
    let _socket = std::os::unix::net::UnixListener::bind(f.path("20_socket.json")).unwrap();
    std::os::unix::fs::symlink("/dev/null", f.path("21_null.json")).unwrap();
    // As a bind mount of a file that did not exist leaves behind.
    fs::create_dir(f.path("22_dir.json")).unwrap();
    fs::write(
        f.path("22_dir.json").join("x.json"),
        probe("nested", json!({ "tag": "n" })),
    )
    .unwrap();
    f.write("30_after.json", probe("after", json!({ "tag": "a1" })));

    let report = f.scan().await;
    assert_eq!(report.deployed, ["after"], "{report:#?}");
    assert_eq!(report.failures.len(), 3, "{report:#?}");
    for (failure, (file, what)) in report.failures.iter().zip([
        ("20_socket.json", "a socket"),
        ("21_null.json", "a character device"),
        ("22_dir.json", "a directory"),
    ]) {
        assert_not_regular(f, failure, file, what);
        assert_failed_status(f, file, None);
    }
    assert!(f.scan().await.is_quiet(), "a failure is reported once");
    assert_eq!(f.host().components(), [SENTINEL, FAULTY, "after"]);
    f.assert_running(FAULTY, "v1");
}

async fn non_utf8_file_name(f: &Fixture, _logs: &LogCapture) {
    use std::os::unix::ffi::OsStrExt;

    let path = f
        .dir()
        .join(std::ffi::OsStr::from_bytes(b"20_caf\xe9.json"));
    let shown = f.dir().join("20_caf\u{FFFD}.json");
    write_atomically(&path, probe("cafe", json!({ "tag": "c1" })).as_bytes());
    f.write("30_after.json", probe("after", json!({ "tag": "a1" })));

    let report = f.scan().await;
    assert_eq!(report.deployed, ["after"], "{report:#?}");
    let failure = only_failure(&report);
    assert_eq!(failure.file(), path, "the real path, for tools");
    assert_eq!(failure.kind(), &ErrorKind::Io);
    assert_eq!(
        failure.to_string(),
        format!(
            "{}: the file name is not valid UTF-8; rename the file to deploy it",
            shown.to_string_lossy()
        )
    );
    let status = f
        .deployer()
        .status()
        .into_iter()
        .find(|s| s.file == path)
        .expect("a status for the file");
    assert_eq!(status.state, FileState::Failed, "{status:?}");
    assert_eq!(status.name, None);
    assert_eq!(status.error.as_ref(), Some(failure));
    assert_eq!(f.state_of("cafe"), None);

    // Reported once, also when its content changes.
    assert!(f.scan().await.is_quiet());
    fs::write(&path, probe("cafe", json!({ "tag": "c2" }))).unwrap();
    assert!(f.scan().await.is_quiet());

    // Renamed, it deploys, and its failed status goes with the old name.
    fs::rename(&path, f.path("20_cafe.json")).unwrap();
    assert_eq!(f.scan().await.deployed, ["cafe"]);
    f.assert_running("cafe", "c2");
    assert!(f.deployer().status().iter().all(|s| s.file != path));
}

/// Publishes `files` the way the kubelet updates a ConfigMap volume: a new hidden data
/// directory, then an atomic rename of the `..data` symlink onto it.
fn configmap_publish(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    use std::os::unix::fs::symlink;

    fs::create_dir(dir.join(version)).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(version).join(name), bytes).unwrap();
    }
    symlink(version, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), link).unwrap();
        }
    }
}

async fn configmap_swap(f: &Fixture, _logs: &LogCapture) {
    const FILE: &str = "20_mapped.json";
    let good = probe("mapped", json!({ "tag": "v1" }));
    let bad = &good[..good.len() - 5];

    configmap_publish(f.dir(), "..2025_01_01", &[(FILE, good.as_bytes())]);
    assert_eq!(f.scan().await.deployed, ["mapped"]);

    configmap_publish(f.dir(), "..2025_01_02", &[(FILE, bad.as_bytes())]);
    let report = f.scan().await;
    let failure = only_failure(&report);
    assert_eq!(failure.file(), f.path(FILE));
    assert_eq!(failure.kind(), &ErrorKind::Syntax, "{failure}");
    f.assert_running("mapped", "v1");
    assert_failed_status(f, FILE, Some("mapped"));

    configmap_publish(f.dir(), "..2025_01_03", &[(FILE, good.as_bytes())]);
    assert!(f.scan().await.is_quiet());
    f.assert_running("mapped", "v1");
    assert_eq!(f.lifecycle().starts("mapped"), 1);
    assert_eq!(
        f.file_status(FILE).map(|s| s.state),
        Some(FileState::Deployed)
    );
}

async fn config_reload_to_invalid_json(f: &Fixture, _logs: &LogCapture) {
    let config = f.host().env().config();
    let generation = config.generation();
    fs::write(
        f.config_file(),
        "{\"limits\": {\"connections\": 128},\n \"greeting\": }",
    )
    .unwrap();

    let error = config.reload().expect_err("invalid JSON does not reload");
    match &error {
        isopace_config::Error::Parse { file, line, .. } => {
            assert_eq!(file.as_deref(), Some(f.config_file()));
            assert_eq!(*line, 2);
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains(&f.config_file().display().to_string()),
        "{error}"
    );
    assert_eq!(config.generation(), generation);
    assert_eq!(config.int("limits.connections", 0), 64);
    assert_eq!(config.string("greeting", ""), "hello");

    fs::write(f.config_file(), r#"{"limits": {"connections": 128}}"#).unwrap();
    config.reload().expect("a valid file reloads");
    assert_eq!(config.int("limits.connections", 0), 128);
    assert!(config.generation() > generation);
}

async fn config_fifo(f: &Fixture, logs: &LogCapture) {
    let config = f.host().env().config().clone();
    let path = f.config_file().to_path_buf();
    fs::remove_file(&path).unwrap();
    mkfifo(&path);
    let fifos = [path.clone()];

    let watchdog = FifoWatchdog::arm("a config reload from a FIFO", &fifos, FIFO_LIMIT);
    let reloaded = config.reload();
    watchdog.disarm();
    let error = reloaded.expect_err("a FIFO does not reload");
    match &error {
        isopace_config::Error::NotRegularFile { path: file, found } => {
            assert_eq!(file, &path);
            assert_eq!(*found, "a FIFO");
        }
        other => panic!("expected NotRegularFile, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        format!(
            "config file {} is not a regular file (a FIFO)",
            path.display()
        )
    );
    assert_eq!(config.int("limits.connections", 0), 64);

    // The watcher reports it, keeps the values, and goes on watching.
    let generation = config.generation();
    let mut changes = config.subscribe();
    let mut watcher = isopace_config::ConfigWatcher::new(config.clone())
        .poll_only(true)
        .interval(Duration::from_millis(100));
    let watchdog = FifoWatchdog::arm("the config watcher with a FIFO", &fifos, FIFO_LIMIT);
    watcher.start().await.unwrap();
    let reported = |logs: &LogCapture| {
        logs.records().into_iter().any(|r| {
            r["message"] == "config reload failed; keeping the previous values"
                && r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("is not a regular file (a FIFO)"))
        })
    };
    // The first poll is at once; paused time makes each further one free.
    for _ in 0..50 {
        if reported(logs) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failure_logged = reported(logs);
    let generation_with_fifo = config.generation();

    fs::remove_file(&path).unwrap();
    fs::write(&path, r#"{"limits": {"connections": 128}}"#).unwrap();
    let reload = tokio::time::timeout(Duration::from_secs(10), changes.changed()).await;
    watcher.stop().await.unwrap();
    watchdog.disarm();
    assert!(
        failure_logged,
        "no failed reload logged: {:#?}",
        logs.records()
    );
    assert_eq!(
        generation_with_fifo, generation,
        "the FIFO changed the tree"
    );
    reload
        .expect("the watcher reloads once the file is regular again")
        .unwrap();
    assert_eq!(config.int("limits.connections", 0), 128);
}

async fn config_too_large(f: &Fixture, _logs: &LogCapture) {
    let config = f.host().env().config();
    let generation = config.generation();
    let path = f.config_file();
    // Sparse: the size is checked before a byte is read.
    let len = isopace_config::MAX_CONFIG_BYTES + 1;
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();

    let error = config
        .reload()
        .expect_err("an oversize file does not reload");
    match &error {
        isopace_config::Error::TooLarge {
            path: file,
            len: found,
            limit,
        } => {
            assert_eq!(file, path);
            assert_eq!(*found, len);
            assert_eq!(*limit, isopace_config::MAX_CONFIG_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("limited to 16777216 bytes"), "{text}");
    assert_eq!(config.generation(), generation);
    assert_eq!(config.string("greeting", ""), "hello");

    fs::write(path, r#"{"limits": {"connections": 128}}"#).unwrap();
    config.reload().expect("a file within the limit reloads");
    assert_eq!(config.int("limits.connections", 0), 128);
}

fn rapid_version(i: usize) -> String {
    probe("rapid", json!({ "tag": format!("v{i:04}") }))
}

async fn rapid_rewrites(f: &Fixture, _logs: &LogCapture) {
    const FILE: &str = "30_rapid.json";
    f.write_in_place(FILE, rapid_version(0));
    assert_eq!(f.scan().await.deployed, ["rapid"]);

    // Rewritten in place, so most versions have the same size and many the same mtime; every
    // seventh is cut short, as a reader sees a write in progress. The last one is whole.
    let path = f.path(FILE);
    let writer = std::thread::spawn(move || {
        for i in 1..=1000 {
            let text = rapid_version(i);
            let bytes = if i % 7 == 0 {
                &text.as_bytes()[..text.len() / 2]
            } else {
                text.as_bytes()
            };
            fs::write(&path, bytes).unwrap();
        }
    });
    let mut scans = 0;
    while !writer.is_finished() {
        let report = f.scan().await;
        for failure in &report.failures {
            assert_eq!(failure.file(), f.path(FILE), "{failure}");
        }
        scans += 1;
    }
    writer.join().unwrap();

    f.scan().await;
    f.assert_running("rapid", "v1000");
    assert_eq!(
        f.file_status(FILE).map(|s| s.state),
        Some(FileState::Deployed)
    );
    assert!(
        f.lifecycle().starts("rapid") <= scans + 2,
        "more starts than scans"
    );
    assert_eq!(
        f.host()
            .components()
            .iter()
            .filter(|c| *c == "rapid")
            .count(),
        1
    );
}

async fn five_hundred_files(f: &Fixture, _logs: &LogCapture) {
    let names: Vec<String> = (0..500).map(|i| format!("bulk-{i:03}")).collect();
    for name in &names {
        f.write(
            &format!("40_{name}.json"),
            probe(name, json!({ "tag": "b" })),
        );
    }
    let report = f.scan().await;
    assert!(report.failures.is_empty(), "{report:#?}");
    assert_eq!(report.deployed, names, "deployed in file order");
    let status = f.host().status();
    assert_eq!(status.len(), 501);
    assert!(status.iter().all(|s| s.state == State::Running));
    assert_eq!(f.deployer().status().len(), 501);
    assert!(
        f.deployer()
            .status()
            .iter()
            .all(|s| s.state == FileState::Deployed)
    );

    for name in &names {
        f.remove(&format!("40_{name}.json"));
    }
    let report = f.scan().await;
    assert_eq!(report.undeployed.len(), 500);
    assert_eq!(f.host().components(), [SENTINEL]);
    assert_eq!(f.lifecycle().running().len(), 1);
}
