//! A host instrumented through the adapter: each lifecycle call is an OpenTelemetry span.

use std::sync::Arc;

use async_trait::async_trait;
use isopace_host::{BoxError, Component, Env, Host};
use opentelemetry::{KeyValue, Value};

use crate::util::Telemetry;

/// Starts and stops, or fails to start when `fails`.
struct Part {
    name: &'static str,
    fails: bool,
}

#[async_trait]
impl Component for Part {
    fn name(&self) -> &str {
        self.name
    }

    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        if self.fails {
            return Err("no backend".into());
        }
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => panic!("{key} is not text: {other:?}"),
        })
}

#[tokio::test]
async fn each_lifecycle_call_is_a_span_with_its_component_phase_and_failure() {
    let telemetry = Telemetry::new();
    let host = Host::builder()
        .observer(Arc::new(telemetry.observer.clone()))
        .build();
    host.register(Part {
        name: "good",
        fails: false,
    })
    .unwrap();
    host.register(Part {
        name: "bad",
        fails: true,
    })
    .unwrap();
    host.start().await.expect_err("bad fails to start");
    host.stop().await.unwrap();

    let calls: Vec<[Option<String>; 3]> = telemetry
        .spans()
        .iter()
        .filter(|s| s.name == "isopace_lifecycle")
        .map(|s| {
            let attrs = &s.attributes;
            [
                text(attrs, "component"),
                text(attrs, "phase"),
                text(attrs, "reason"),
            ]
        })
        .collect();
    let some = |s: &str| Some(s.to_owned());
    // The start of `bad` failed: the host stops it (its cleanup), then unwinds `good`.
    assert_eq!(
        calls,
        [
            [some("good"), some("start"), None],
            [some("bad"), some("start"), some("error")],
            [some("bad"), some("stop"), None],
            [some("good"), some("stop"), None],
        ]
    );
}
