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

/// One captured event: its level, its fields as text, and the errors recorded as errors.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    text: String,
    errors: Vec<RecordedError>,
}

/// An error field as a subscriber receives it: its own message, each source's, and the kind
/// of the first `io::Error` among the sources.
#[derive(Clone, Debug)]
struct RecordedError {
    message: String,
    sources: Vec<String>,
    io_kind: Option<std::io::ErrorKind>,
}

/// Records every event's level and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }

    fn errors(&self) -> Vec<Captured> {
        let mut events = self.events();
        events.retain(|e| e.level == Level::ERROR);
        events
    }
}

#[derive(Default)]
struct Fields {
    text: String,
    errors: Vec<RecordedError>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.text, "{}={:?} ", field.name(), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let _ = write!(self.text, "{}={} ", field.name(), value);
        let mut recorded = RecordedError {
            message: value.to_string(),
            sources: Vec::new(),
            io_kind: None,
        };
        let mut source = value.source();
        while let Some(s) = source {
            recorded.sources.push(s.to_string());
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                recorded.io_kind.get_or_insert(io.kind());
            }
            source = s.source();
        }
        self.errors.push(recorded);
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
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            text: fields.text,
            errors: fields.errors,
        });
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
    let Captured { level, text, .. } = &events[0];
    assert_eq!(*level, Level::WARN);
    assert!(text.contains("ISO_SERVER_PORT"), "{text}");
    assert!(text.contains("`server` is a string"), "{text}");
}

/// Polls (in paused time, so instantly) until the watcher logged `n` errors.
async fn wait_for_errors(capture: &Capture, n: usize) {
    let logged = tokio::time::timeout(Duration::from_secs(5), async {
        while capture.errors().len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(logged.is_ok(), "no error logged: {:?}", capture.events());
}

// Paused time: the watcher polls every 5 ms of virtual time, so "ten more polls" is exact
// and takes no real time.
#[tokio::test(start_paused = true)]
async fn a_failed_watcher_reload_is_logged_at_error_level_once_with_its_source() {
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
    wait_for_errors(&capture, 1).await;
    // Ten more polls of the same broken content add no more errors: on the paused clock
    // each 5 ms that passes is a poll that ran (time stands still while it reads the file on a
    // blocking thread), and the next error, for the removed file, shows the watcher still
    // polled after them.
    tokio::time::sleep(Duration::from_millis(52)).await;

    let errors = capture.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    // The error is recorded as an error, so the subscriber gets its message and its source
    // separately (the fmt layer prints both) instead of one joined string.
    let [error] = &errors[0].errors[..] else {
        panic!("one error field: {:?}", errors[0]);
    };
    assert!(error.message.starts_with("invalid JSON in "), "{error:?}");
    assert!(error.message.contains("app.json:2:"), "{error:?}");
    assert!(
        !error.message.contains("EOF"),
        "the message does not repeat its source: {error:?}"
    );
    assert_eq!(error.sources.len(), 1, "{error:?}");
    assert!(error.sources[0].contains("EOF while parsing"), "{error:?}");
    assert_eq!(config.int("n", 0), 1);

    // A file that disappears is a new failure, logged with the operating system's error.
    std::fs::remove_file(&file).unwrap();
    wait_for_errors(&capture, 2).await;
    watcher.stop().await.unwrap();
    let errors = capture.errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let error = &errors[1].errors[0];
    assert!(
        error.message.starts_with("cannot read config file "),
        "{error:?}"
    );
    assert_eq!(
        error.io_kind,
        Some(std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    assert_eq!(config.int("n", 0), 1);
}
