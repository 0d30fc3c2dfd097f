//! What a component's status carries beyond its state: published details, typed extensions,
//! the state gauge, and combined errors that print every cause.

use std::sync::Arc;

use isopace_host::{
    BoxError, Component, Env, Error, Host, STATE_GAUGE, State, WeakHost, async_trait,
};
use isopace_observe::{MetricsRegistry, Observer};
use serde_json::{Value, json};

/// A component that publishes details in start and records which extensions it saw.
struct Publisher {
    name: &'static str,
    details: Value,
    saw: Arc<parking_lot::Mutex<Option<Seen>>>,
    stop_error: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq)]
struct Region(&'static str);

/// Whether the host was reachable in start, and the region it saw.
type Seen = (bool, Option<Region>);

impl Publisher {
    fn new(name: &'static str, details: Value) -> Self {
        Publisher {
            name,
            details,
            saw: Arc::default(),
            stop_error: None,
        }
    }
}

#[async_trait]
impl Component for Publisher {
    fn name(&self) -> &str {
        self.name
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let host_alive = env
            .extension::<WeakHost>()
            .and_then(|weak| weak.upgrade())
            .is_some();
        *self.saw.lock() = Some((host_alive, env.extension::<Region>()));
        env.set_details(self.details.clone());
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        match self.stop_error {
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }
}

#[tokio::test]
async fn published_details_are_in_the_status_until_the_component_goes() {
    let host = Host::default();
    host.start().await.unwrap();
    host.deploy(Publisher::new("worker", json!({ "pid": 42 })))
        .await
        .unwrap();
    let status = host.status_of("worker").unwrap();
    assert_eq!(status.state, State::Running);
    assert_eq!(status.details, Some(json!({ "pid": 42 })));

    // A successor under the same name starts with nothing of its predecessor's.
    host.undeploy("worker").await.unwrap();
    assert!(host.status_of("worker").is_none());
    host.deploy(Quiet("worker")).await.unwrap();
    assert_eq!(host.status_of("worker").unwrap().details, None);
    host.stop().await.unwrap();
}

/// A component that publishes nothing.
struct Quiet(&'static str);

#[async_trait]
impl Component for Quiet {
    fn name(&self) -> &str {
        self.0
    }
    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn components_reach_the_host_and_daemon_extensions_through_their_env() {
    let host = Host::default();
    // Inserted after the host was built, as a daemon does once its parts exist.
    host.env().insert_extension(Region("eu-west"));
    let publisher = Publisher::new("edge", json!({}));
    let saw = Arc::clone(&publisher.saw);
    host.register(publisher).unwrap();
    host.start().await.unwrap();
    assert_eq!(*saw.lock(), Some((true, Some(Region("eu-west")))));
    host.stop().await.unwrap();
}

#[tokio::test]
async fn the_state_gauge_follows_the_status_and_leaves_with_the_component() {
    let metrics = MetricsRegistry::new();
    let host = Host::builder()
        .observer(Arc::new(metrics.clone()) as Arc<dyn Observer>)
        .build();
    host.register(Publisher::new("a", json!({}))).unwrap();
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "{STATE_GAUGE}{{component=\"a\",state=\"stopped\"}} 1\n"
        )),
        "{text}"
    );
    host.start().await.unwrap();
    host.deploy(Publisher::new("b", json!({}))).await.unwrap();
    let text = metrics.render();
    for name in ["a", "b"] {
        assert!(
            text.contains(&format!(
                "{STATE_GAUGE}{{component=\"{name}\",state=\"running\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{STATE_GAUGE}{{component=\"{name}\",state=\"stopped\"}} 0\n"
            )),
            "{text}"
        );
    }
    // Exactly one state is 1 per component.
    let ones = text
        .lines()
        .filter(|l| {
            l.starts_with(STATE_GAUGE) && l.contains("component=\"b\"") && l.ends_with(" 1")
        })
        .count();
    assert_eq!(ones, 1, "{text}");

    host.undeploy("b").await.unwrap();
    let text = metrics.render();
    assert!(
        !text.contains("component=\"b\""),
        "b's series outlived it:\n{text}"
    );
    assert!(text.contains("component=\"a\""), "{text}");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn combined_errors_print_every_cause_and_give_each_through_the_iterator() {
    let host = Host::default();
    for name in ["a", "b"] {
        let mut p = Publisher::new(name, json!({}));
        p.stop_error = Some(if name == "a" {
            "disk gone"
        } else {
            "socket stuck"
        });
        host.register(p).unwrap();
    }
    host.start().await.unwrap();
    let err = host.stop().await.unwrap_err();
    assert!(matches!(err, Error::Stop(_)), "{err:?}");
    assert_eq!(err.to_string(), "2 components failed to stop: `b`, `a`");
    assert_eq!(
        format!("{err:#}"),
        "component `b` failed to stop: socket stuck; component `a` failed to stop: disk gone"
    );
    let first = std::error::Error::source(&err).expect("the first failure is the source");
    assert_eq!(first.to_string(), "component `b` failed to stop");
    let names: Vec<&str> = err.component_errors().map(|e| e.component()).collect();
    assert_eq!(names, ["b", "a"]);
}

/// Reports a health reason that names a secret from its configuration.
struct Leaky;

#[async_trait]
impl Component for Leaky {
    fn name(&self) -> &str {
        "db"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        env.set_health(isopace_host::Health::Degraded(
            "login as admin:hunter22 is slow".into(),
        ));
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_health_reason_shows_no_secret() {
    let host = Host::default();
    host.start().await.unwrap();
    let redact: isopace_host::Redact = Arc::new(|text: &str| text.replace("hunter22", "${PW}"));
    host.deploy_with(
        Box::new(Leaky),
        isopace_host::Supervision::new().redact(redact),
    )
    .await
    .unwrap();
    let health = host.status_of("db").unwrap().health;
    assert_eq!(health.reason(), Some("login as admin:${PW} is slow"));
    host.stop().await.unwrap();
}

/// Hands its env out at start, so a test can report for it; ready when the test says so.
struct Reporter(Arc<parking_lot::Mutex<Option<Env>>>);

#[async_trait]
impl Component for Reporter {
    fn name(&self) -> &str {
        "reporter"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        env.ready_later();
        *self.0.lock() = Some(env.clone());
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn readiness_and_health_changes_mark_the_host_changed_and_repeats_do_not() {
    let host = Host::default();
    host.start().await.unwrap();
    let slot = Arc::default();
    host.deploy(Reporter(Arc::clone(&slot))).await.unwrap();
    let env = slot.lock().clone().expect("started");
    let mut changes = host.changed();
    changes.mark_unchanged();

    env.set_ready(true);
    assert!(changes.has_changed().unwrap(), "becoming ready marks it");
    changes.mark_unchanged();
    env.set_ready(true);
    assert!(
        !changes.has_changed().unwrap(),
        "a repeated report does not"
    );

    env.set_health(isopace_host::Health::Degraded("slow disk".into()));
    assert!(changes.has_changed().unwrap(), "a health change marks it");
    changes.mark_unchanged();
    env.set_health(isopace_host::Health::Degraded("slow disk".into()));
    assert!(!changes.has_changed().unwrap(), "the same health does not");
    env.set_health(isopace_host::Health::Degraded("slower disk".into()));
    assert!(changes.has_changed().unwrap(), "a new reason is a change");
    changes.mark_unchanged();

    env.set_details(json!({"connections": 3}));
    assert!(!changes.has_changed().unwrap(), "details do not mark it");
    let status = host.status_of("reporter").unwrap();
    assert!(status.ready);
    assert_eq!(status.health.reason(), Some("slower disk"));
    host.stop().await.unwrap();
}
