//! What the crate logs: skipped overrides at warn level, failed watcher reloads at error level.

use std::{
    fmt::{self, Write as _},
    sync::{Arc, Mutex},
    time::Duration,
};

use isopace_config::{Config, ConfigWatcher, LoadOptions};
use serde_json::json;
use tracing::{
    Event, Level, Metadata, Subscriber,
    field::{Field, Visit},
    span,
};

/// Records every event's level and fields as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

impl Capture {
    fn events(&self) -> Vec<(Level, String)> {
        self.0.lock().unwrap().clone()
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

#[test]
fn a_skipped_override_is_logged_at_warn_level() {
    let capture = Capture::default();
    let config = tracing::subscriber::with_default(capture.clone(), || {
        Config::parse(
            br#"{"server": "plain"}"#,
            LoadOptions::new()
                .env_prefix("ISO")
                .environ(vec!["ISO_SERVER_PORT=8080".into(), "ISO_OK=1".into()]),
        )
        .unwrap()
    });
    assert_eq!(config.get("server"), Some(json!("plain")));
    let events = capture.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let (level, text) = &events[0];
    assert_eq!(*level, Level::WARN);
    assert!(text.contains("ISO_SERVER_PORT"), "{text}");
    assert!(text.contains("`server` is a string"), "{text}");
}

#[tokio::test]
async fn a_failed_watcher_reload_is_logged_at_error_level_once() {
    let capture = Capture::default();
    // The current-thread runtime runs the watcher's task on this thread, under this default.
    let _guard = tracing::subscriber::set_default(capture.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.json");
    std::fs::write(&file, r#"{"n": 1}"#).unwrap();
    let config = Config::load(&file, LoadOptions::new()).unwrap();
    let mut watcher = ConfigWatcher::new(config.clone())
        .interval(Duration::from_millis(5))
        .poll_only(true);
    watcher.start().await.unwrap();

    std::fs::write(&file, "{\"n\": \n").unwrap();
    let errors = || {
        capture
            .events()
            .into_iter()
            .filter(|(level, _)| *level == Level::ERROR)
            .collect::<Vec<_>>()
    };
    let logged = tokio::time::timeout(Duration::from_secs(5), async {
        while errors().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(logged.is_ok(), "no error logged: {:?}", capture.events());
    // More polls of the same broken content add no more errors.
    tokio::time::sleep(Duration::from_millis(50)).await;
    watcher.stop().await.unwrap();

    let errors = errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("invalid JSON in"), "{}", errors[0].1);
    assert!(errors[0].1.contains("app.json:2:"), "{}", errors[0].1);
    assert_eq!(config.int("n", 0), 1);
}
