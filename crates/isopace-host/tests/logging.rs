//! Log lines of lifecycle calls and of a component's tasks carry the component's name.
//!
//! Its own test binary: tracing caches callsite interest per process, so a test that installs
//! a subscriber must not share a process with tests that log without one.

use std::sync::Arc;

use isopace_host::{BoxError, Component, Env, Host, async_trait};
use parking_lot::Mutex;

fn quick_host() -> Host {
    Host::builder().build()
}

#[tokio::test]
async fn lifecycle_logs_carry_the_component_name() {
    use std::io::Write;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Chatty;
    #[async_trait]
    impl Component for Chatty {
        fn name(&self) -> &str {
            "chatty"
        }
        async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
            tracing::info!("inside start");
            env.spawn(async { tracing::info!("inside a spawned task") })
                .await
                .unwrap();
            Ok(())
        }
        async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let (subscriber, _handle) = isopace_observe::LogOptions::default()
        .build_with_writer({
            let buffer = buffer.clone();
            move || buffer.clone()
        })
        .unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);
    let host = quick_host();
    host.register(Chatty).unwrap();
    host.start().await.unwrap();
    host.stop().await.unwrap();
    let text = String::from_utf8(buffer.0.lock().clone()).unwrap();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
            .to_owned()
    };
    // The component once, right after the level, whether it came from a span or a field.
    for needle in [
        "inside start",
        "inside a spawned task",
        "started",
        "stopped",
    ] {
        let line = line(needle);
        assert!(line.contains(" INFO component=chatty "), "{text}");
        assert_eq!(line.matches("chatty").count(), 1, "{text}");
    }
    assert!(line("inside start").ends_with(" phase=start"), "{text}");
}
