//! The deployer against a real directory: reconcile rules, failures, ordering, ConfigMap
//! swaps and file events.

use std::{error::Error as _, fs, io, time::Duration};

use isopace_deploy::{Deployer, DescriptorError, ErrorKind, FileState, ScanReport};
use isopace_host::{Host, State, error_chain};
use isopace_observe::MetricsRegistry;
use isopace_testkit::{Lifecycle, ProbeError, probe_descriptor, probe_registry, write_atomically};
use serde_json::{Value, json};

struct Fixture {
    dir: tempfile::TempDir,
    host: Host,
    lifecycle: Lifecycle,
    deployer: Deployer,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let lifecycle = Lifecycle::new();
        let host = Host::builder().build();
        host.start().await.unwrap();
        let deployer = Deployer::builder(&host, probe_registry(&lifecycle), dir.path())
            .environment([("UPSTREAM_TAG", "from-env")])
            .build();
        Fixture {
            dir,
            host,
            lifecycle,
            deployer,
        }
    }

    fn write(&self, file: &str, text: &str) {
        write_atomically(self.dir.path().join(file), text);
    }

    fn remove(&self, file: &str) {
        fs::remove_file(self.dir.path().join(file)).unwrap();
    }

    async fn scan(&self) -> ScanReport {
        self.deployer.scan().await.unwrap()
    }

    /// The lifecycle calls since the last time, as `component:phase`.
    fn events(&self) -> Vec<String> {
        self.lifecycle.take_calls()
    }
}

/// The first error of type `E` among the error's sources.
fn source_of<E: std::error::Error + 'static>(error: &DescriptorError) -> Option<&E> {
    let mut source = error.source();
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<E>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

/// The kind of the first `io::Error` among the error's sources.
fn io_kind(error: &DescriptorError) -> Option<io::ErrorKind> {
    source_of::<io::Error>(error).map(io::Error::kind)
}

fn probe(name: &str, config: Value) -> String {
    probe_descriptor(name, &config)
}

#[tokio::test]
async fn the_reference_reconcile_scenario() {
    let f = Fixture::new().await;
    f.write("alpha.json", &probe("alpha", json!({"tag": "v1"})));
    let report = f.scan().await;
    assert_eq!(report.deployed, ["alpha"]);
    assert_eq!(f.events(), ["alpha:start"]);

    // A rescan with no change does nothing.
    let report = f.scan().await;
    assert!(report.is_quiet(), "{report:?}");
    assert_eq!(report.unchanged, ["alpha"]);
    assert!(f.events().is_empty());

    // A change redeploys: the new version is built, the old stopped, the new started.
    f.write("alpha.json", &probe("alpha", json!({"tag": "v2"})));
    let report = f.scan().await;
    assert_eq!(report.redeployed, ["alpha"]);
    assert_eq!(f.events(), ["alpha:stop", "alpha:start"]);

    // Removal undeploys.
    f.remove("alpha.json");
    let report = f.scan().await;
    assert_eq!(report.undeployed, ["alpha"]);
    assert_eq!(f.events(), ["alpha:stop"]);
    assert!(f.host.components().is_empty());
    assert!(f.deployer.status().is_empty());
}

#[tokio::test]
async fn a_failed_rebuild_keeps_the_old_component_running() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("a", json!({})));
    f.scan().await;
    f.events();
    f.write(
        "a.json",
        &probe("a", json!({"tag": "v2", "fail_build": true})),
    );
    let report = f.scan().await;
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    assert_eq!(failure.kind(), &ErrorKind::Build);
    // The factory's error is the source, not part of the message.
    let file = f.dir.path().join("a.json");
    assert_eq!(
        failure.to_string(),
        format!("{}: the `probe` factory failed", file.display())
    );
    assert_eq!(
        error_chain(failure),
        format!(
            "{}: the `probe` factory failed: probe `a` asked to fail to build (tag `v2`)",
            file.display()
        )
    );
    assert!(source_of::<ProbeError>(failure).is_some(), "{failure:?}");
    assert!(f.events().is_empty(), "no stop, no start");
    assert_eq!(f.host.status_of("a").unwrap().state, State::Running);
    let status = &f.deployer.status()[0];
    assert_eq!(status.state, FileState::Failed);
    assert_eq!(status.error.as_ref(), Some(failure));
    // Reported once per content: the next scan neither retries nor reports it.
    let report = f.scan().await;
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(f.events().is_empty());
}

#[tokio::test]
async fn a_disabled_descriptor_and_an_unknown_type_start_nothing() {
    let f = Fixture::new().await;
    f.write(
        "a.json",
        r#"{"name": "a", "type": "probe", "enabled": false}"#,
    );
    f.write("b.json", "{\"name\": \"b\",\n \"type\": \"nope\"}");
    let report = f.scan().await;
    assert!(report.deployed.is_empty());
    assert!(f.events().is_empty());
    assert_eq!(report.failures.len(), 1);
    let err = &report.failures[0];
    assert_eq!(err.kind(), &ErrorKind::UnknownType("nope".into()));
    assert!(
        err.to_string().contains(
            "b.json:2:10: field `type`: unknown component type `nope` (registered: probe)"
        ),
        "{err}"
    );
    let status = f.deployer.status();
    assert_eq!(status[0].state, FileState::Disabled);
    assert_eq!(status[1].state, FileState::Failed);

    // Disabling a running component undeploys it.
    f.write("a.json", &probe("a", json!({})));
    f.scan().await;
    f.write(
        "a.json",
        r#"{"name": "a", "type": "probe", "enabled": false}"#,
    );
    let report = f.scan().await;
    assert_eq!(report.undeployed, ["a"]);
    assert_eq!(f.events(), ["a:start", "a:stop"]);
}

#[tokio::test]
async fn a_new_version_that_fails_to_start_is_rolled_back() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("a", json!({"tag": "good"})));
    f.scan().await;
    f.events();
    f.write(
        "a.json",
        &probe("a", json!({"tag": "bad", "fail_start": true})),
    );
    let report = f.scan().await;
    assert_eq!(report.rolled_back, ["a"]);
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    assert_eq!(failure.kind(), &ErrorKind::Start);
    assert_eq!(
        error_chain(failure),
        format!(
            "{}: not redeployed; rolled back to the previous version: \
             component `a` failed to start: probe `a` asked to fail in start (tag `bad`)",
            f.dir.path().join("a.json").display()
        )
    );
    // The component's own error can still be matched.
    assert!(source_of::<ProbeError>(failure).is_some(), "{failure:?}");
    // Old stopped, new started and failed (and stopped), old started again.
    assert_eq!(f.events(), ["a:stop", "a:start", "a:stop", "a:start"]);
    assert_eq!(f.host.status_of("a").unwrap().state, State::Running);
    // Not retried until the file changes.
    assert!(f.scan().await.failures.is_empty());
    assert!(f.events().is_empty());
}

#[tokio::test]
async fn duplicate_names_keep_the_first_file_in_order() {
    let f = Fixture::new().await;
    f.write("10_a.json", &probe("same", json!({})));
    f.write("20_b.json", &probe("same", json!({"tag": "other"})));
    let report = f.scan().await;
    assert_eq!(report.deployed, ["same"]);
    assert_eq!(report.failures.len(), 1);
    let err = &report.failures[0];
    assert!(
        matches!(err.kind(), ErrorKind::DuplicateName { first } if first.ends_with("10_a.json"))
    );
    let text = err.to_string();
    assert!(
        text.contains("20_b.json") && text.contains("10_a.json"),
        "{text}"
    );
}

#[tokio::test]
async fn a_changed_name_undeploys_the_old_and_deploys_the_new() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("old", json!({})));
    f.scan().await;
    f.write("a.json", &probe("new", json!({})));
    let report = f.scan().await;
    assert_eq!(report.undeployed, ["old"]);
    assert_eq!(report.deployed, ["new"]);
    assert_eq!(f.events(), ["old:start", "old:stop", "new:start"]);
    assert_eq!(f.host.components(), ["new"]);
}

#[tokio::test]
async fn hidden_files_other_extensions_and_subdirectories_are_ignored() {
    let f = Fixture::new().await;
    f.write(".hidden.json", &probe("hidden", json!({})));
    f.write("notes.txt", "not a descriptor");
    fs::create_dir(f.dir.path().join("sub")).unwrap();
    fs::write(f.dir.path().join("sub/x.json"), probe("nested", json!({}))).unwrap();
    f.write("a.json", &probe("a", json!({})));
    let report = f.scan().await;
    assert_eq!(report.deployed, ["a"]);
    assert!(report.failures.is_empty());
    assert_eq!(f.deployer.status().len(), 1);
}

#[tokio::test]
async fn an_oversize_file_is_rejected() {
    let f = Fixture::new().await;
    let big = format!(
        r#"{{"name": "big", "type": "probe", "config": {{"tag": "{}"}}}}"#,
        "x".repeat(1024 * 1024)
    );
    f.write("big.json", &big);
    let report = f.scan().await;
    assert!(f.host.components().is_empty());
    assert_eq!(report.failures[0].kind(), &ErrorKind::TooLarge);
    assert!(
        report.failures[0]
            .to_string()
            .contains("limited to 1048576 bytes")
    );
}

#[tokio::test]
async fn a_truncated_file_keeps_the_old_component() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("a", json!({"tag": "v1"})));
    f.scan().await;
    f.events();
    let full = probe("a", json!({"tag": "v2"}));
    f.write("a.json", &full[..full.len() / 2]);
    let report = f.scan().await;
    assert_eq!(report.failures.len(), 1);
    let failure = &report.failures[0];
    assert_eq!(failure.kind(), &ErrorKind::Syntax);
    assert_eq!(
        failure.to_string(),
        format!(
            "{}:{}: invalid JSON",
            f.dir.path().join("a.json").display(),
            failure.position().unwrap()
        )
    );
    assert_eq!(failure.position().unwrap().line, 1);
    let json = failure
        .source()
        .and_then(|s| s.downcast_ref::<serde_json::Error>())
        .expect("serde_json's error is the source");
    assert!(json.is_eof(), "{json}");
    assert!(f.events().is_empty());
    assert_eq!(f.host.status_of("a").unwrap().state, State::Running);
    let status = &f.deployer.status()[0];
    assert_eq!(
        (status.state, status.name.as_deref()),
        (FileState::Failed, Some("a"))
    );
    // Completing the write redeploys.
    f.write("a.json", &full);
    assert_eq!(f.scan().await.redeployed, ["a"]);
}

#[tokio::test]
async fn a_missing_directory_is_an_error_and_undeploys_nothing() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("a", json!({})));
    f.scan().await;
    let moved = f.dir.path().with_extension("moved");
    fs::rename(f.dir.path(), &moved).unwrap();
    let err = f.deployer.scan().await.unwrap_err();
    assert!(
        matches!(err, isopace_deploy::Error::Directory { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("nothing was deployed or undeployed")
    );
    assert_eq!(f.host.components(), ["a"]);
    // The handle says why, with the OS error, until a scan works again.
    let handle = f.deployer.handle();
    let kept = handle.scan_error().expect("the failed scan is kept");
    assert_eq!(kept.to_string(), err.to_string());
    let source = std::error::Error::source(&*kept).unwrap().to_string();
    assert!(source.contains("os error"), "{source}");
    fs::rename(&moved, f.dir.path()).unwrap();
    assert!(f.scan().await.is_quiet());
    assert!(handle.scan_error().is_none());
}

#[tokio::test]
async fn variables_are_substituted_and_a_missing_one_is_named() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("a", json!({"tag": "${UPSTREAM_TAG}"})));
    f.write("b.json", &probe("b", json!({"tag": "${MISSING_TAG}"})));
    f.write(
        "c.json",
        &probe("c", json!({"tag": "${MISSING_TAG:-fallback}"})),
    );
    let report = f.scan().await;
    assert_eq!(report.deployed, ["a", "c"]);
    assert_eq!(report.failures.len(), 1);
    let err = &report.failures[0];
    assert_eq!(err.kind(), &ErrorKind::UnsetVariable("MISSING_TAG".into()));
    assert!(err.to_string().contains("b.json"), "{err}");
}

#[tokio::test]
async fn typed_config_errors_name_line_column_and_field() {
    let f = Fixture::new().await;
    f.write(
        "a.json",
        "{\"name\": \"a\", \"type\": \"probe\",\n \"config\": {\"tga\": \"x\"}}",
    );
    f.write(
        "b.json",
        "{\"name\": \"b\", \"type\": \"probe\",\n \"config\": {\n  \"task\": \"yes\"}}",
    );
    let report = f.scan().await;
    let texts: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("a.json:2:17: field `config.tga`: unknown field `tga`"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("b.json:3:15: field `config.task`: invalid type: string \"yes\""),
        "{}",
        texts[1]
    );
}

#[tokio::test]
async fn a_component_that_fails_its_first_start_is_not_deployed() {
    let f = Fixture::new().await;
    f.write(
        "a.json",
        &probe("a", json!({"tag": "v1", "fail_start": true})),
    );
    let report = f.scan().await;
    assert!(report.deployed.is_empty() && report.rolled_back.is_empty());
    let failure = &report.failures[0];
    assert_eq!(failure.kind(), &ErrorKind::Start);
    assert_eq!(
        failure.detail(),
        "not deployed: component `a` failed to start: \
         probe `a` asked to fail in start (tag `v1`)"
    );
    assert!(source_of::<ProbeError>(failure).is_some(), "{failure:?}");
    assert!(f.host.components().is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn an_unreadable_file_keeps_the_operating_systems_error() {
    let f = Fixture::new().await;
    let file = f.dir.path().join("a.json");
    std::os::unix::fs::symlink("nowhere.json", &file).unwrap();
    let report = f.scan().await;
    let failure = &report.failures[0];
    assert_eq!(failure.kind(), &ErrorKind::Io);
    assert_eq!(
        failure.to_string(),
        format!("{}: cannot read", file.display())
    );
    assert_eq!(io_kind(failure), Some(io::ErrorKind::NotFound));
    let chain = error_chain(failure);
    assert!(
        chain.starts_with(&format!("{}: cannot read: ", file.display())),
        "{chain}"
    );
    // A new io::Error on every scan is still the same problem: reported once.
    assert!(f.scan().await.is_quiet());
}

#[tokio::test]
async fn files_apply_in_lexical_order() {
    let f = Fixture::new().await;
    for (file, name) in [
        ("20_switch.json", "switch"),
        ("00_logger.json", "logger"),
        ("10_link.json", "link"),
    ] {
        f.write(file, &probe(name, json!({})));
    }
    f.scan().await;
    assert_eq!(f.events(), ["logger:start", "link:start", "switch:start"]);
    assert_eq!(f.host.components(), ["logger", "link", "switch"]);
}

#[cfg(unix)]
/// Lays out `root` as the kubelet mounts a ConfigMap: `edge.json` links to `..data/edge.json`,
/// and `..data` to the version directory `..2026_01`, whose `edge` has tag v1.
#[cfg(unix)]
fn configmap_v1(root: &std::path::Path) {
    use std::os::unix::fs::symlink;
    fs::create_dir(root.join("..2026_01")).unwrap();
    fs::write(
        root.join("..2026_01/edge.json"),
        probe("edge", json!({"tag": "v1"})),
    )
    .unwrap();
    symlink("..2026_01", root.join("..data")).unwrap();
    symlink("..data/edge.json", root.join("edge.json")).unwrap();
}

#[tokio::test]
async fn a_configmap_style_swap_redeploys() {
    use std::os::unix::fs::symlink;
    let f = Fixture::new().await;
    let root = f.dir.path();
    configmap_v1(root);
    assert_eq!(f.scan().await.deployed, ["edge"]);

    // The kubelet writes a new version directory and swaps `..data` atomically.
    fs::create_dir(root.join("..2026_02")).unwrap();
    fs::write(
        root.join("..2026_02/edge.json"),
        probe("edge", json!({"tag": "v2"})),
    )
    .unwrap();
    symlink("..2026_02", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(root.join("..2026_01")).unwrap();
    let report = f.scan().await;
    assert_eq!(report.redeployed, ["edge"]);
    assert_eq!(f.events(), ["edge:start", "edge:stop", "edge:start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_deployer_picks_up_an_atomic_rename_from_file_events() {
    let dir = tempfile::tempdir().unwrap();
    let lifecycle = Lifecycle::new();
    let host = Host::builder().build();
    // An interval far beyond the test: only file events can trigger the rescan.
    let deployer = Deployer::builder(&host, probe_registry(&lifecycle), dir.path())
        .scan_interval(Duration::from_secs(3600))
        .build();
    let handle = deployer.handle();
    host.register(deployer).unwrap();
    host.start().await.unwrap();
    handle.wait_initial_scan().await;
    assert!(handle.initial_scan_done());

    write_atomically(dir.path().join("a.json"), probe("a", json!({})));
    let appeared = tokio::time::timeout(
        Duration::from_secs(1),
        lifecycle.wait_until(|l| l.running_tag("a").is_some()),
    )
    .await;
    assert!(
        appeared.is_ok(),
        "the new descriptor was not deployed within 1 s"
    );
    assert_eq!(host.components(), ["deployer", "a"]);
    host.stop().await.unwrap();
    assert_eq!(lifecycle.take_calls(), ["a:start", "a:stop"]);
}

/// The deployer's scans so far, from its `isopace_deployer_scans_total` counter.
fn scans(metrics: &MetricsRegistry) -> u64 {
    let text = metrics.render();
    text.lines()
        .find_map(|line| {
            line.strip_prefix("isopace_deployer_scans_total ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no scan counter in\n{text}"))
}

// On the paused clock, a wait of several scan intervals is one in which a running loop
// certainly scans: time only moves when every task is idle, and not while a scan reads the
// directory on a blocking thread. So the same wait that shows scans while the loop runs shows
// that none happen once it has stopped.
#[tokio::test(start_paused = true)]
async fn the_deployer_scans_after_start_returns_and_stops_its_loop() {
    const INTERVAL: Duration = Duration::from_millis(20);
    let dir = tempfile::tempdir().unwrap();
    write_atomically(dir.path().join("a.json"), probe("a", json!({})));
    let lifecycle = Lifecycle::new();
    let metrics = MetricsRegistry::new();
    let host = Host::builder()
        .observer(std::sync::Arc::new(metrics.clone()))
        .build();
    let deployer = Deployer::builder(&host, probe_registry(&lifecycle), dir.path())
        .watch(false)
        .scan_interval(INTERVAL)
        .build();
    let handle = deployer.handle();
    host.register(deployer).unwrap();
    // The first scan deploys through the host, which only works because it runs on the
    // deployer's loop after the host has finished starting.
    host.start().await.unwrap();
    handle.wait_initial_scan().await;
    assert_eq!(host.components(), ["deployer", "a"]);
    // Polling picks up a new file.
    write_atomically(dir.path().join("b.json"), probe("b", json!({})));
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("b").is_some()),
    )
    .await
    .expect("polling deployed b");
    // While the loop runs, five and a half intervals are at least five scans.
    let running = scans(&metrics);
    tokio::time::sleep(INTERVAL * 11 / 2).await;
    let scanned = scans(&metrics) - running;
    assert!(scanned >= 5, "{scanned} scans in 5.5 intervals");

    host.stop().await.unwrap();
    assert_eq!(
        lifecycle.take_calls(),
        ["a:start", "b:start", "b:stop", "a:stop"]
    );
    // The loop ended with the deployer's stop: the same wait sees no scan, and a new file
    // is not picked up.
    let stopped = scans(&metrics);
    write_atomically(dir.path().join("c.json"), probe("c", json!({})));
    tokio::time::sleep(INTERVAL * 11 / 2).await;
    assert_eq!(scans(&metrics), stopped, "a scan after stop");
    assert!(host.status_of("c").is_none());
    assert_eq!(lifecycle.starts("c"), 0);
}

#[tokio::test]
async fn a_large_directory_is_listed_whole_and_in_order() {
    // Enough files that their metadata is read on several threads.
    let f = Fixture::new().await;
    for i in 0..600 {
        f.write(
            &format!("{i:04}.json"),
            &probe(&format!("c{i:04}"), json!({})),
        );
    }
    f.write("0300.json", &probe("c0300", json!({"nope": 1})));
    let report = f.scan().await;
    assert_eq!(report.deployed.len(), 599);
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].file().ends_with("0300.json"));
    let names = f.host.components();
    assert_eq!(names.first().map(String::as_str), Some("c0000"));
    assert_eq!(names.last().map(String::as_str), Some("c0599"));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "lexical order");
    assert_eq!(f.deployer.status().len(), 600);
    assert!(f.scan().await.is_quiet());
}

/// A running deployer with file events on and a debounce far beyond the test, on `dir`.
async fn watching(dir: &std::path::Path, lifecycle: &Lifecycle) -> (Host, MetricsRegistry) {
    watching_with(dir, lifecycle, Duration::from_secs(3600)).await
}

/// [`watching`] with the given debounce.
async fn watching_with(
    dir: &std::path::Path,
    lifecycle: &Lifecycle,
    debounce: Duration,
) -> (Host, MetricsRegistry) {
    let metrics = MetricsRegistry::new();
    let host = Host::builder()
        .observer(std::sync::Arc::new(metrics.clone()))
        .build();
    let deployer = Deployer::builder(&host, probe_registry(lifecycle), dir)
        .scan_interval(Duration::from_secs(3600))
        .debounce(debounce)
        .build();
    let handle = deployer.handle();
    host.register(deployer).unwrap();
    host.start().await.unwrap();
    handle.wait_initial_scan().await;
    (host, metrics)
}

#[tokio::test]
async fn a_complete_file_deploys_at_once_without_waiting_for_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    let lifecycle = Lifecycle::new();
    let (host, _) = watching(dir.path(), &lifecycle).await;
    // A rename into the directory marks a complete file: no fixed delay applies, so this
    // deploys long before the hour-long debounce.
    write_atomically(
        dir.path().join("a.json"),
        probe("a", json!({ "tag": "v1" })),
    );
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("a").as_deref() == Some("v1")),
    )
    .await
    .expect("deployed on the rename, not after the debounce");
    // So does a plain write once its writer closes the file.
    fs::write(
        dir.path().join("a.json"),
        probe("a", json!({ "tag": "v2" })),
    )
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("a").as_deref() == Some("v2")),
    )
    .await
    .expect("redeployed on the close after writing");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_still_being_written_is_neither_deployed_nor_reported() {
    let dir = tempfile::tempdir().unwrap();
    let lifecycle = Lifecycle::new();
    let (host, metrics) = watching(dir.path(), &lifecycle).await;
    let path = dir.path().join("b.json");
    let text = probe("b", json!({ "tag": "whole" }));
    let (first, rest) = text.split_at(text.len() / 2);
    let mut file = fs::File::create(&path).unwrap();
    io::Write::write_all(&mut file, first.as_bytes()).unwrap();
    io::Write::flush(&mut file).unwrap();
    // A rescan while the writer holds the file open (another file's rename triggers one)
    // leaves the half-written file alone.
    write_atomically(dir.path().join("a.json"), probe("a", json!({})));
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("a").is_some()),
    )
    .await
    .expect("a deployed");
    assert_eq!(lifecycle.running_tag("b"), None);
    io::Write::write_all(&mut file, rest.as_bytes()).unwrap();
    drop(file);
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("b").as_deref() == Some("whole")),
    )
    .await
    .expect("b deployed once closed");
    assert_no_failure_reported(&metrics);
    host.stop().await.unwrap();
}

/// Asserts that the deployer counted no failure (so no write in progress was reported).
fn assert_no_failure_reported(metrics: &MetricsRegistry) {
    let text = metrics.render();
    assert!(
        !text.contains("isopace_deployer_failures_total{"),
        "a failure was reported:\n{text}"
    );
}

#[tokio::test]
async fn a_rename_that_keeps_the_name_keeps_the_component_or_redeploys_it() {
    let f = Fixture::new().await;
    f.write("a.json", &probe("alpha", json!({"tag": "v1"})));
    f.scan().await;
    assert_eq!(f.events(), ["alpha:start"]);

    // The same content under another file name: nothing stops, nothing starts.
    let dir = f.dir.path();
    fs::rename(dir.join("a.json"), dir.join("b.json")).unwrap();
    let report = f.scan().await;
    assert!(report.is_quiet(), "{report:?}");
    assert_eq!(report.unchanged, ["alpha"]);
    assert!(f.events().is_empty());
    let files: Vec<_> = f.deployer.status().into_iter().map(|s| s.file).collect();
    assert_eq!(files, [dir.join("b.json")]);

    // Renamed and changed in one scan: a redeploy, not an undeploy and a deploy.
    f.remove("b.json");
    f.write("c.json", &probe("alpha", json!({"tag": "v2"})));
    let report = f.scan().await;
    assert_eq!(report.redeployed, ["alpha"], "{report:?}");
    assert!(
        report.deployed.is_empty() && report.undeployed.is_empty(),
        "{report:?}"
    );
    assert_eq!(f.events(), ["alpha:stop", "alpha:start"]);
    assert_eq!(f.host.status_of("alpha").unwrap().state, State::Running);

    // Removing the file that has it now undeploys it.
    f.remove("c.json");
    assert_eq!(f.scan().await.undeployed, ["alpha"]);
}

/// Waits for file events to have been handled, then returns the scans since `before`.
async fn scans_since(metrics: &MetricsRegistry, before: u64) -> u64 {
    // Events come from the watcher's thread within microseconds; a late one would show here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    scans(metrics) - before
}

#[cfg(unix)]
#[tokio::test]
async fn one_atomic_save_or_configmap_swap_is_one_scan() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    configmap_v1(root);
    let lifecycle = Lifecycle::new();
    let (host, metrics) = watching(root, &lifecycle).await;
    assert_eq!(lifecycle.running_tag("edge").as_deref(), Some("v1"));

    // An atomic save: a hidden temporary file written, closed and renamed into place, with
    // a pause between the steps (as a slow writer takes), so no step's events arrive
    // together with the next one's.
    let pause = || tokio::time::sleep(Duration::from_millis(50));
    let before = scans(&metrics);
    fs::write(root.join(".a.json.tmp"), probe("a", json!({"tag": "v1"}))).unwrap();
    pause().await;
    fs::rename(root.join(".a.json.tmp"), root.join("a.json")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("a").is_some()),
    )
    .await
    .expect("a deployed");
    assert_eq!(scans_since(&metrics, before).await, 1, "scans for one save");

    // The kubelet's swap: a version directory, a `..data_tmp` link renamed over `..data`,
    // the old version directory removed.
    let before = scans(&metrics);
    fs::create_dir(root.join("..2026_02")).unwrap();
    pause().await;
    fs::write(
        root.join("..2026_02/edge.json"),
        probe("edge", json!({"tag": "v2"})),
    )
    .unwrap();
    // The kubelet also sets the version directory's mode.
    fs::set_permissions(root.join("..2026_02"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("..2026_02", root.join("..data_tmp")).unwrap();
    pause().await;
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    pause().await;
    fs::remove_dir_all(root.join("..2026_01")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        lifecycle.wait_until(|l| l.running_tag("edge").as_deref() == Some("v2")),
    )
    .await
    .expect("edge redeployed");
    assert_eq!(scans_since(&metrics, before).await, 1, "scans for one swap");
    host.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_hard_link_deploys_at_once_and_an_unclosed_or_cut_off_write_once_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let lifecycle = Lifecycle::new();
    let (host, metrics) = watching(dir.path(), &lifecycle).await;
    // A hard link names a file written elsewhere: complete as it appears, though no writer
    // closes it here (and the debounce and the interval are an hour).
    let written = outside.path().join("b.json");
    fs::write(&written, probe("b", json!({}))).unwrap();
    fs::hard_link(&written, dir.path().join("b.json")).unwrap();
    tokio::time::timeout(
        // Sooner than a write left unclosed would be read.
        isopace_deploy::WRITE_SETTLE - Duration::from_millis(500),
        lifecycle.wait_until(|l| l.running_tag("b").is_some()),
    )
    .await
    .expect("the hard link deployed at once");

    // A writer that writes a whole file and never closes it (it hangs, say): read once it
    // has been quiet for WRITE_SETTLE, not at the next interval an hour away.
    let mut file = fs::File::create(dir.path().join("c.json")).unwrap();
    io::Write::write_all(&mut file, probe("c", json!({})).as_bytes()).unwrap();
    io::Write::flush(&mut file).unwrap();
    tokio::time::timeout(
        isopace_deploy::WRITE_SETTLE + Duration::from_secs(3),
        lifecycle.wait_until(|l| l.running_tag("c").is_some()),
    )
    .await
    .expect("the unclosed file deployed once it settled");
    drop(file);
    assert_no_failure_reported(&metrics);

    // A file that really is cut short is reported, once it has settled: not at once.
    let text = probe("d", json!({}));
    fs::write(dir.path().join("d.json"), &text[..text.len() / 2]).unwrap();
    tokio::time::sleep(isopace_deploy::WRITE_SETTLE / 2).await;
    assert_no_failure_reported(&metrics);
    tokio::time::timeout(
        isopace_deploy::WRITE_SETTLE + Duration::from_secs(3),
        async {
            while !metrics
                .render()
                .contains("isopace_deployer_failures_total{")
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await
    .expect("the cut-off file was reported");
    assert!(metrics.render().contains("d.json"), "{}", metrics.render());
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_rewrites_in_place_report_no_failure_and_end_on_the_last_version() {
    let dir = tempfile::tempdir().unwrap();
    let lifecycle = Lifecycle::new();
    let path = dir.path().join("r.json");
    fs::write(&path, probe("r", json!({"tag": "v0000"}))).unwrap();
    let (host, metrics) =
        watching_with(dir.path(), &lifecycle, isopace_deploy::DEFAULT_DEBOUNCE).await;
    assert_eq!(lifecycle.running_tag("r").as_deref(), Some("v0000"));

    // Each rewrite truncates the file and writes it whole, as `fs::write` (and most editors
    // saving in place) do; scans run throughout, so many of them find a file cut short.
    let writer = std::thread::spawn(move || {
        for i in 1..=300 {
            let text = probe("r", json!({ "tag": format!("v{i:04}") }));
            let mut file = fs::File::create(&path).unwrap();
            let (first, rest) = text.as_bytes().split_at(text.len() / 2);
            io::Write::write_all(&mut file, first).unwrap();
            io::Write::flush(&mut file).unwrap();
            std::thread::yield_now();
            io::Write::write_all(&mut file, rest).unwrap();
        }
    });
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        lifecycle.wait_until(|l| l.running_tag("r").as_deref() == Some("v0300")),
    )
    .await
    .expect("the last version runs");
    assert_no_failure_reported(&metrics);
    host.stop().await.unwrap();
}
