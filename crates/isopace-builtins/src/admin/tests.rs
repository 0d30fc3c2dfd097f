//! The admin endpoint on a plain host and under a deployer: what each route answers, and
//! the readiness rules.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use isopace_deploy::{Deployer, DeployerHandle, Registry};
use isopace_host::{BoxError, Component, Env, Host, State, async_trait};
use isopace_observe::MetricsRegistry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};

use super::{Admin, AdminConfig};

/// One response: the status code and the body.
#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A GET over a fresh HTTP/1.1 connection that the server closes after answering.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Response {
        status,
        body: body.to_owned(),
    }
}

fn admin(token: Option<&str>) -> Admin {
    let config: AdminConfig =
        serde_json::from_value(json!({ "listen": "127.0.0.1:0", "token": token })).unwrap();
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
    let text = get(listen(&host), "/metrics", None).await;
    assert_eq!(text.status, 200);
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
