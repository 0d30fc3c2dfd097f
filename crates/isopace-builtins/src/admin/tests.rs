//! The admin endpoint on a plain host and under a deployer: what each route answers, and
//! the readiness rules.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use isopace_deploy::{Deployer, DeployerHandle, Registry};
use isopace_host::{BoxError, Component, Env, Host, State, async_trait};
use isopace_observe::MetricsRegistry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};

use super::{Admin, AdminConfig};

/// One response: the status code, the head and the body.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn parse(raw: &[u8]) -> Response {
        let raw = String::from_utf8(raw.to_vec()).unwrap();
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {raw:?}"));
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        Response {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }
}

/// A GET with `headers` over a fresh HTTP/1.1 connection that the server closes after
/// answering.
async fn get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    exchange(&mut stream, path, headers).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
    headers: &[&str],
) -> Response {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    Response::parse(&raw)
}

/// A GET over a fresh connection, with the bearer `token` if given.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    match token {
        Some(token) => get_with(addr, path, &[&format!("Authorization: Bearer {token}")]).await,
        None => get_with(addr, path, &[]).await,
    }
}

fn admin(token: Option<&str>) -> Admin {
    admin_with(json!({ "token": token }))
}

/// An admin endpoint on a free loopback port, with `extra` config.
fn admin_with(extra: Value) -> Admin {
    let mut config = json!({ "listen": "127.0.0.1:0" });
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let config: AdminConfig = serde_json::from_value(config).unwrap();
    Admin::new("admin", config)
}

/// Where the host's admin component says it listens.
fn listen(host: &Host) -> SocketAddr {
    let details = host.status_of("admin").unwrap().details.unwrap();
    details["listen"].as_str().unwrap().parse().unwrap()
}

/// Waits until `name`'s state is `state`, on the host's change notifications.
async fn wait_state(host: &Host, name: &str, state: State) {
    let mut changes = host.changed();
    tokio::time::timeout(Duration::from_secs(10), async {
        while host.status_of(name).map(|s| s.state) != Some(state) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never became {state}"));
}

fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

/// A component that runs until the test pulls its trigger, then fails.
struct Probe {
    name: String,
    trigger: Arc<Notify>,
}

#[derive(Deserialize)]
struct ProbeConfig {}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let (trigger, stopped) = (Arc::clone(&self.trigger), env.cancelled());
        env.spawn_fallible(async move {
            tokio::select! {
                () = trigger.notified() => Err("the probe was told to fail"),
                () = stopped => Ok(()),
            }
        });
        Ok(())
    }
    async fn stop(&mut self, _: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn on_a_plain_host_it_serves_the_host_alone() {
    let host = Host::builder().build();
    let trigger = Arc::new(Notify::new());
    host.register(admin(None)).unwrap();
    host.register(Probe {
        name: "probe".to_owned(),
        trigger: Arc::clone(&trigger),
    })
    .unwrap();
    host.start().await.unwrap();
    let addr = listen(&host);

    assert_eq!(get(addr, "/healthz", None).await.body, "ok");
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["not_ready"], json!([]));

    let components = get(addr, "/components", None).await;
    assert_eq!(components.status, 200);
    let list = components.json();
    let probe = entry(&list, "probe");
    for (field, value) in [
        ("state", json!("running")),
        ("ready", json!(true)),
        ("health", json!("healthy")),
        ("critical", json!(true)),
        ("restarts", json!(0)),
        ("last_error", Value::Null),
        ("next_try", Value::Null),
        ("file", Value::Null),
        ("type", Value::Null),
    ] {
        assert_eq!(probe[field], value, "{field} in {probe}");
    }
    assert!(probe["since"].as_str().unwrap().ends_with('Z'), "{probe}");
    assert_eq!(
        entry(&list, "admin")["details"]["listen"],
        json!(addr.to_string())
    );

    for path in ["/deployments", "/metrics"] {
        let absent = get(addr, path, None).await;
        assert_eq!(absent.status, 404, "{path}");
        assert!(
            absent.json()["error"].as_str().unwrap().contains("no "),
            "{path}"
        );
    }

    // A critical component that ran and then fails takes readiness away.
    trigger.notify_one();
    wait_state(&host, "probe", State::Failed).await;
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["not_ready"],
        json!([{ "name": "probe", "state": "failed" }])
    );
    let probe = entry(&get(addr, "/components", None).await.json(), "probe").clone();
    assert_eq!(probe["state"], "failed");
    assert!(
        probe["last_error"]
            .as_str()
            .unwrap()
            .contains("told to fail")
    );
    assert!(probe["last_error_at"].is_string());
    host.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_come_from_the_registry_extension() {
    let metrics = MetricsRegistry::new();
    let host = Host::builder().observer(Arc::new(metrics.clone())).build();
    host.env().insert_extension(metrics);
    host.register(admin(None)).unwrap();
    host.start().await.unwrap();
    // Enough series for an answer far larger than the connection's buffer.
    let counter = host.env().observer().counter("padding");
    for i in 0..5_000 {
        counter.add(
            1,
            &[isopace_observe::attr("series", format!("number-{i:05}"))],
        );
    }
    let text = get(listen(&host), "/metrics", None).await;
    assert_eq!(text.status, 200);
    assert!(text.body.len() > 100_000, "{} bytes", text.body.len());
    assert!(
        text.body
            .contains(r#"padding_total{series="number-04999"} 1"#),
        "the whole answer arrives"
    );
    assert!(
        text.body
            .contains(r#"isopace_component_state{component="admin",state="running"} 1"#),
        "{}",
        text.body
    );
    host.stop().await.unwrap();
}

/// A host with a deployer of `dir` (scanned on demand only) that builds `probe`s failing
/// on `trigger`, and an admin endpoint registered first.
async fn deployed(
    dir: &Path,
    token: Option<&str>,
    trigger: &Arc<Notify>,
) -> (Host, DeployerHandle) {
    let mut registry = Registry::new();
    let trigger = Arc::clone(trigger);
    registry
        .register_typed(
            "probe",
            "runs until told to fail",
            json!({}),
            move |name: &str, _: ProbeConfig, _: &Env| {
                Ok(Probe {
                    name: name.to_owned(),
                    trigger: Arc::clone(&trigger),
                })
            },
        )
        .unwrap();
    let host = Host::builder().build();
    let deployer = Deployer::builder(&host, Arc::new(registry), dir)
        .watch(false)
        .scan_interval(Duration::from_secs(3600))
        .build();
    let handle = deployer.handle();
    host.env().insert_extension(handle.clone());
    host.register(admin(token)).unwrap();
    host.register(deployer).unwrap();
    host.start().await.unwrap();
    handle.wait_initial_scan().await;
    (host, handle)
}

fn probe_file(dir: &Path, file: &str, extra: Value) {
    // Not restarted, so a failure is for good at once.
    let mut descriptor = json!({
        "name": "probe", "type": "probe", "restart": { "policy": "never" }, "config": {}
    });
    descriptor
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    std::fs::write(dir.join(file), descriptor.to_string()).unwrap();
}

#[tokio::test]
async fn every_file_counts_until_ready_once_then_only_components_do() {
    let dir = tempfile::tempdir().unwrap();
    probe_file(dir.path(), "10_probe.json", json!({}));
    std::fs::write(dir.path().join("20_broken.json"), "{ not json").unwrap();
    let trigger = Arc::new(Notify::new());
    let (host, deployer) = deployed(dir.path(), None, &trigger).await;
    let addr = listen(&host);

    // Before the host has been ready, a broken file keeps it not ready.
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let body = ready.json();
    assert_eq!(body["initial_deploy_done"], true);
    assert_eq!(body["not_ready"], json!([]));
    let files = body["failed_files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("20_broken.json")
    );
    assert!(
        files[0].get("error").is_none(),
        "no error text without a token: {body}"
    );

    // Fixed, it is ready; broken again, or a new broken file, it stays ready.
    std::fs::remove_file(dir.path().join("20_broken.json")).unwrap();
    deployer.scan().await.unwrap();
    assert_eq!(get(addr, "/readyz", None).await.status, 200);
    std::fs::write(dir.path().join("30_new.json"), "{ not json either").unwrap();
    deployer.scan().await.unwrap();
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["failed_files"].as_array().unwrap().len(), 1);

    // A critical component that ran and then fails does take readiness away.
    trigger.notify_one();
    wait_state(&host, "probe", State::Failed).await;
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json()["not_ready"],
        json!([{ "name": "probe", "state": "failed" }])
    );
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_component_that_is_not_critical_does_not_hold_readiness() {
    let dir = tempfile::tempdir().unwrap();
    probe_file(dir.path(), "10_probe.json", json!({ "critical": false }));
    let trigger = Arc::new(Notify::new());
    let (host, _deployer) = deployed(dir.path(), None, &trigger).await;
    let addr = listen(&host);
    trigger.notify_one();
    wait_state(&host, "probe", State::Failed).await;
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        ready.json()["not_running"],
        json!([{ "name": "probe", "state": "failed" }])
    );
    let probe = entry(&get(addr, "/components", None).await.json(), "probe").clone();
    assert_eq!(probe["critical"], false);
    assert_eq!(probe["type"], "probe");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn error_texts_go_only_to_requests_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    probe_file(dir.path(), "10_probe.json", json!({}));
    std::fs::write(dir.path().join("20_broken.json"), "{ not json").unwrap();
    let trigger = Arc::new(Notify::new());
    let (host, _deployer) = deployed(dir.path(), Some("s3cret"), &trigger).await;
    let addr = listen(&host);
    trigger.notify_one();
    wait_state(&host, "probe", State::Failed).await;

    for token in [None, Some("wrong")] {
        let ready = get(addr, "/readyz", token).await;
        assert_eq!(ready.status, 503);
        assert!(!ready.body.contains("error"), "{token:?}: {}", ready.body);
        assert_eq!(get(addr, "/components", token).await.status, 401);
        assert_eq!(get(addr, "/deployments", token).await.status, 401);
    }
    let body = get(addr, "/readyz", Some("s3cret")).await.json();
    assert!(
        body["not_ready"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("told to fail"),
        "{body}"
    );
    assert!(body["failed_files"][0]["error"].is_string(), "{body}");
    let components = get(addr, "/components", Some("s3cret")).await.json();
    assert!(entry(&components, "probe")["last_error"].is_string());
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_name_declared_twice_shows_the_file_that_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    probe_file(dir.path(), "10_off.json", json!({ "enabled": false }));
    probe_file(dir.path(), "20_probe.json", json!({}));
    probe_file(dir.path(), "30_twin.json", json!({}));
    // The host already has an `admin`, registered in code.
    probe_file(dir.path(), "40_admin.json", json!({ "name": "admin" }));
    let trigger = Arc::new(Notify::new());
    let (host, _deployer) = deployed(dir.path(), None, &trigger).await;
    let addr = listen(&host);
    let list = get(addr, "/components", None).await.json();
    let probe = entry(&list, "probe");
    assert!(
        probe["file"].as_str().unwrap().ends_with("20_probe.json"),
        "{probe}"
    );
    assert_eq!(probe["type"], "probe");
    let admin = entry(&list, "admin");
    assert!(
        admin["file"].is_null() && admin["type"].is_null(),
        "{admin}"
    );
    let deployments = get(addr, "/deployments", None).await.json();
    let states: Vec<&str> = deployments
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["disabled", "deployed", "failed", "failed"]);
    host.stop().await.unwrap();
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case_and_two_authorizations_are_refused() {
    let host = Host::builder().build();
    host.register(admin(Some("s3cret"))).unwrap();
    host.start().await.unwrap();
    let addr = listen(&host);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("Authorization: {scheme} s3cret");
        assert_eq!(
            get_with(addr, "/components", &[&auth]).await.status,
            200,
            "{scheme}"
        );
    }
    let twice = [
        "Authorization: Bearer s3cret",
        "Authorization: Bearer other",
    ];
    for path in ["/components", "/deployments", "/readyz"] {
        let refused = get_with(addr, path, &twice).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        assert!(
            refused.body.contains("more than one Authorization"),
            "{path}"
        );
    }
    // Twice the right token is as ambiguous as two different ones.
    let same = [
        "Authorization: Bearer s3cret",
        "Authorization: bearer s3cret",
    ];
    assert_eq!(get_with(addr, "/components", &same).await.status, 400);
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_deploy_directory_is_reported_by_deployments_and_readyz() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("deploy");
    std::fs::create_dir(&dir).unwrap();
    probe_file(&dir, "10_probe.json", json!({}));
    let trigger = Arc::new(Notify::new());
    let (host, deployer) = deployed(&dir, Some("s3cret"), &trigger).await;
    let addr = listen(&host);
    let ready = get(addr, "/readyz", None).await.json();
    assert_eq!(ready["deploy_dir"]["readable"], true, "{ready}");
    assert_eq!(
        ready["deploy_dir"]["path"],
        json!(dir.display().to_string())
    );

    std::fs::rename(&dir, root.path().join("moved")).unwrap();
    deployer.scan().await.unwrap_err();
    let listed = get(addr, "/deployments", Some("s3cret")).await;
    assert_eq!(listed.status, 503, "{}", listed.body);
    let body = listed.json();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot read the descriptor directory"),
        "{body}"
    );
    assert_eq!(body["dir"], json!(dir.display().to_string()));
    // The last statuses still say what runs.
    assert_eq!(body["files"][0]["state"], "deployed", "{body}");

    let ready = get(addr, "/readyz", None).await;
    assert_eq!(ready.status, 200, "it has been ready: {}", ready.body);
    let dir_state = &ready.json()["deploy_dir"];
    assert_eq!(dir_state["readable"], false, "{dir_state}");
    assert!(
        dir_state.get("error").is_none(),
        "no error text without the token"
    );
    let with_token = get(addr, "/readyz", Some("s3cret")).await.json();
    assert!(
        with_token["deploy_dir"]["error"]
            .as_str()
            .unwrap()
            .contains("os error"),
        "{with_token}"
    );

    std::fs::rename(root.path().join("moved"), &dir).unwrap();
    deployer.scan().await.unwrap();
    let listed = get(addr, "/deployments", Some("s3cret")).await;
    assert_eq!(listed.status, 200);
    assert!(listed.json().is_array());
    host.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_deploy_directory_keeps_a_host_that_was_never_ready_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("deploy");
    let trigger = Arc::new(Notify::new());
    // The initial scan fails: the directory is not there.
    let (host, _deployer) = deployed(&dir, None, &trigger).await;
    let ready = get(listen(&host), "/readyz", None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["deploy_dir"]["readable"], false);
    host.stop().await.unwrap();
}

#[tokio::test]
async fn it_serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let host = Host::builder().build();
    host.register(admin_with(
        json!({ "listen": format!("unix:{}", path.display()) }),
    ))
    .unwrap();
    host.start().await.unwrap();
    let details = host.status_of("admin").unwrap().details.unwrap();
    assert_eq!(details["listen"], json!(format!("unix:{}", path.display())));
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    assert_eq!(exchange(&mut stream, "/healthz", &[]).await.body, "ok");
    host.stop().await.unwrap();
    assert!(!path.exists(), "the host removes its socket when it stops");
}

/// Reads until the server closes the connection; how long that took from `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut sink = [0; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server never closed the connection");
    since.elapsed()
}

/// Reads one response off a kept-alive connection, by its `content-length`.
async fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let mut byte = [0; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    raw.extend(body);
    Response::parse(&raw)
}

/// Time is paused: the timeouts cost no real time, and the runtime moves the clock to the
/// next deadline as soon as every task waits.
#[tokio::test(start_paused = true)]
async fn silent_and_trickling_clients_are_disconnected_at_the_header_timeout() {
    let host = Host::builder().build();
    host.register(admin_with(
        json!({ "header_timeout": "10s", "idle_timeout": "75s" }),
    ))
    .unwrap();
    host.start().await.unwrap();
    let addr = listen(&host);

    let accepted = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut trickling = TcpStream::connect(addr).await.unwrap();
    let trickle = async {
        trickling
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        // A byte every second: each one arrives well within the timeout, the headers never.
        for byte in b"X-Slow: ".iter().cycle() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if trickling.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        closed_after(&mut trickling, accepted).await
    };
    let (silent_for, trickled_for) = tokio::join!(closed_after(&mut silent, accepted), trickle);
    for (who, took) in [("silent", silent_for), ("trickling", trickled_for)] {
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(12),
            "{who} client closed after {took:?}"
        );
    }
    // Well-behaved clients are served throughout.
    assert_eq!(get(addr, "/healthz", None).await.body, "ok");
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_trickling_in_does_not_hold_the_endpoints_stop() {
    let host = Host::builder().build();
    host.register(admin_with(json!({ "header_timeout": "60s" })))
        .unwrap();
    host.start().await.unwrap();
    let mut trickling = TcpStream::connect(listen(&host)).await.unwrap();
    trickling
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Sl")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(listen(&host)).await.unwrap();
    let stopping = Instant::now();
    host.stop().await.unwrap();
    assert!(
        stopping.elapsed() <= Duration::from_secs(1),
        "stopped after {:?}",
        stopping.elapsed()
    );
    for stream in [&mut trickling, &mut silent] {
        assert!(closed_after(stream, stopping).await <= Duration::from_secs(1));
    }
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let host = Host::builder().build();
    host.register(admin_with(
        json!({ "header_timeout": "10s", "idle_timeout": "75s" }),
    ))
    .unwrap();
    host.start().await.unwrap();
    let mut stream = TcpStream::connect(listen(&host)).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.body, "ok");
    // Quiet for longer than the header timeout but within the idle one: still open.
    tokio::time::sleep(Duration::from_secs(60)).await;
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await.body, "ok");
    let answered = Instant::now();
    let took = closed_after(&mut stream, answered).await;
    assert!(
        took >= Duration::from_secs(75) && took < Duration::from_secs(77),
        "closed after {took:?}"
    );
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn beyond_max_connections_a_client_is_answered_503_at_once() {
    let host = Host::builder().build();
    host.register(admin_with(
        json!({ "max_connections": 2, "header_timeout": "30s" }),
    ))
    .unwrap();
    host.start().await.unwrap();
    let addr = listen(&host);
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    let asked = Instant::now();
    let refused = get(addr, "/healthz", None).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.head.contains("retry-after: 1"), "{}", refused.head);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "at once, not at a timeout"
    );

    // Once a held connection closes, the next client is served.
    drop(held);
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let answer = get(addr, "/healthz", None).await;
            if answer.status == 200 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("served once the held connections closed");
    assert_eq!(served.body, "ok");
    host.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn it_stops_accepting_while_the_descriptor_reserve_is_short_and_resumes_after() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::descriptors::Descriptors;

    // 250 of 256 open: fewer free than the reserve of 64.
    let open = Arc::new(AtomicUsize::new(250));
    let counted = Arc::clone(&open);
    let descriptors = Descriptors::new(|| Some(256), move || Ok(counted.load(Ordering::Relaxed)));
    let host = Host::builder().build();
    host.register(admin_with(json!({ "fd_reserve": 64 })).with_descriptors(descriptors))
        .unwrap();
    host.start().await.unwrap();
    let addr = listen(&host);
    let paused = admin_details(&host, |d| d.get("paused").is_some()).await;
    assert!(
        paused["paused"]
            .as_str()
            .unwrap()
            .contains("6 file descriptors free below the limit of 256"),
        "{paused}"
    );

    // A client's connection waits in the backlog; once descriptors are free again, it is
    // accepted and answered.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    open.store(20, Ordering::Relaxed);
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(&mut waiting, "/healthz", &[]),
    )
    .await
    .expect("answered once the reserve is free");
    assert_eq!(answer.body, "ok");
    let details = admin_details(&host, |d| d.get("paused").is_none()).await;
    assert_eq!(details, json!({ "listen": addr.to_string() }));
    host.stop().await.unwrap();
}

/// The admin component's details once `check` holds for them, looking every millisecond
/// (of paused time) for at most ten seconds.
async fn admin_details(host: &Host, check: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let details = host.status_of("admin").unwrap().details.unwrap();
            if check(&details) {
                return details;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the admin details never matched")
}
