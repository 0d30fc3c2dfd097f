//! The logging builder: levels, formats, directives and live level changes.

use isopace_observe::{Error, LogFormat, LogOptions, parse_level};
use tracing::{Instrument as _, Level};

use crate::util::Capture;

/// A logger built from `options` that writes into a capture, with its handle.
fn capturing(
    options: LogOptions,
) -> (
    Capture,
    impl tracing::Subscriber + Send + Sync + 'static,
    isopace_observe::LogHandle,
) {
    let capture = Capture::default();
    let (subscriber, handle) = options
        .build_with_writer(capture.clone())
        .expect("the options are valid");
    (capture, subscriber, handle)
}

#[test]
fn parse_level_reads_every_spelling() {
    let table = [
        ("trace", Level::TRACE),
        ("DEBUG", Level::DEBUG),
        (" info ", Level::INFO),
        ("Warn", Level::WARN),
        ("warning", Level::WARN),
        ("error", Level::ERROR),
        ("ERR", Level::ERROR),
        ("\twarn\n", Level::WARN),
    ];
    for (input, expected) in table {
        assert_eq!(parse_level(input).ok(), Some(expected), "{input:?}");
    }
}

#[test]
fn parse_level_names_a_bad_value_and_the_accepted_ones() {
    for input in ["", "verbose", "warnings", "in fo", "5"] {
        let err = parse_level(input).expect_err(input);
        assert!(
            matches!(&err, Error::InvalidLogLevel { value } if value == input),
            "{err:?}"
        );
    }
    assert_eq!(
        parse_level(" Verbose")
            .expect_err("not a level")
            .to_string(),
        "unknown log level ` Verbose` (expected `trace`, `debug`, `info`, `warn`, `warning`, \
         `error` or `err`)"
    );
}

#[test]
fn log_format_parses_case_insensitively() {
    assert_eq!("text".parse::<LogFormat>().ok(), Some(LogFormat::Text));
    assert_eq!(" JSON ".parse::<LogFormat>().ok(), Some(LogFormat::Json));
    let err = "yaml".parse::<LogFormat>().expect_err("not a format");
    assert_eq!(
        err.to_string(),
        "unknown log format `yaml` (expected `text` or `json`)"
    );
    assert_eq!(LogFormat::Json.to_string(), "json");
}

#[test]
fn a_level_change_through_the_handle_takes_effect() {
    let (capture, subscriber, handle) = capturing(LogOptions::default());
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!("hidden at info");
        tracing::info!("shown at info");
        handle
            .set_level(Level::DEBUG)
            .expect("the logger is running");
        tracing::debug!("shown at debug");
        handle
            .set_level(Level::WARN)
            .expect("the logger is running");
        tracing::info!("hidden at warn");
        tracing::warn!("shown at warn");
    });
    let text = capture.text();
    let shown: Vec<&str> = text.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(
        shown,
        ["shown at info", "shown at debug", "shown at warn"],
        "{text}"
    );
    assert_eq!(handle.level(), Level::WARN);
}

#[test]
fn directives_override_the_level_per_module_and_survive_level_changes() {
    let (capture, subscriber, handle) = capturing(LogOptions {
        level: Level::WARN,
        directives: Some("chatty=debug".to_owned()),
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!(target: "chatty", "one");
        tracing::info!(target: "quiet", "hidden");
        handle
            .set_level(Level::ERROR)
            .expect("the logger is running");
        tracing::debug!(target: "chatty", "two");
        handle.set_directives("").expect("clearing is valid");
        tracing::debug!(target: "chatty", "hidden");
    });
    let text = capture.text();
    let shown: Vec<&str> = text.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(shown, ["one", "two"], "{text}");
    assert_eq!(handle.directives(), None);
}

#[test]
fn a_bad_directive_is_named_and_leaves_the_running_filter_alone() {
    let err = LogOptions {
        directives: Some("a=debug, b=loud".to_owned()),
        ..LogOptions::default()
    }
    .build_with_writer(std::io::sink)
    .map(|_| ())
    .expect_err("`loud` is not a level");
    assert!(
        err.to_string()
            .starts_with("invalid log directive `b=loud` in `a=debug, b=loud`"),
        "{err}"
    );
    assert!(matches!(err, Error::InvalidDirective { .. }));

    let (capture, subscriber, handle) = capturing(LogOptions {
        directives: Some("x=trace".to_owned()),
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        assert!(handle.set_directives("x=[").is_err());
        tracing::trace!(target: "x", "still traced");
    });
    assert!(capture.text().contains("still traced"));
    assert_eq!(handle.directives().as_deref(), Some("x=trace"));
}

#[cfg(feature = "json")]
#[test]
fn json_is_one_object_per_line_with_source_when_asked() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        format: LogFormat::Json,
        source: true,
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(component = "edge", "started");
        tracing::warn!(attempt = 2, "retrying");
    });
    let text = capture.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        assert!(
            line.contains(r#""filename":"#) && line.contains(r#""line_number":"#),
            "{line}"
        );
    }
    assert!(lines[0].contains(r#""message":"started""#), "{text}");
    assert!(lines[0].contains(r#""component":"edge""#), "{text}");
    assert!(lines[1].contains(r#""level":"WARN""#), "{text}");
}

#[test]
fn text_omits_the_source_unless_asked() {
    let (capture, subscriber, _handle) = capturing(LogOptions::default());
    tracing::subscriber::with_default(subscriber, || tracing::info!("plain"));
    let text = capture.text();
    assert!(text.contains(" INFO ") && text.contains("plain"), "{text}");
    assert!(!text.contains("logging.rs"), "{text}");
}

#[test]
fn init_installs_once() {
    let _first = LogOptions {
        level: Level::ERROR,
        ..LogOptions::default()
    }
    .init();
    // Whether or not the first call won, a global subscriber is now installed.
    let err = LogOptions::default().init().expect_err("already installed");
    assert!(matches!(err, Error::LoggerAlreadyInstalled(_)), "{err}");
}

#[cfg(not(feature = "json"))]
#[test]
fn json_without_the_feature_is_refused_by_name() {
    assert_eq!("json".parse::<LogFormat>().ok(), Some(LogFormat::Json));
    let err = LogOptions {
        format: LogFormat::Json,
        ..LogOptions::default()
    }
    .build_with_writer(std::io::sink)
    .map(|_| ())
    .expect_err("no JSON in this build");
    assert!(
        matches!(
            err,
            Error::FeatureDisabled {
                feature: "json",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "JSON log output needs the `json` feature of isopace-observe, which this build lacks"
    );
}

#[cfg(not(feature = "env-filter"))]
#[test]
fn without_env_filter_target_directives_still_work_and_span_filters_are_refused() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        level: Level::WARN,
        directives: Some("chatty=debug".to_owned()),
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!(target: "chatty", "shown");
        tracing::info!(target: "quiet", "hidden");
    });
    let text = capture.text();
    assert!(text.contains("shown") && !text.contains("hidden"), "{text}");

    let err = LogOptions {
        directives: Some("[request]=debug".to_owned()),
        ..LogOptions::default()
    }
    .build_with_writer(std::io::sink)
    .map(|_| ())
    .expect_err("span filters need env-filter");
    assert_eq!(
        err.to_string(),
        "the log directive `[request]=debug` needs the `env-filter` feature of isopace-observe, \
         which this build lacks"
    );
}

/// The lines in `text` without their timestamps: `" INFO component=edge app: started"`.
fn untimed(text: &str) -> Vec<&str> {
    text.lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
        .collect()
}

#[tokio::test]
async fn a_span_created_below_the_level_names_its_component_once_the_level_is_lowered() {
    let (capture, subscriber, handle) = capturing(LogOptions {
        level: Level::ERROR,
        ..LogOptions::default()
    });
    let _guard = tracing::subscriber::set_default(subscriber);
    // Created and entered while `info` is filtered out, as a component deployed under
    // `error` is.
    let span = tracing::info_span!("component", component = "edge");
    let (lowered, wait) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        async move {
            tracing::info!(target: "app", "hidden at error");
            wait.await.expect("the level is lowered");
            tracing::info!(target: "app", "shown at info");
        }
        .instrument(span),
    );
    tokio::task::yield_now().await;
    handle
        .set_level(Level::INFO)
        .expect("the logger is running");
    lowered.send(()).expect("the task waits");
    task.await.expect("the task completes");
    assert_eq!(
        untimed(&capture.text()),
        [" INFO component=edge app: shown at info"],
        "{}",
        capture.text()
    );
}

#[cfg(feature = "env-filter")]
#[test]
fn a_span_directive_raises_the_level_inside_the_spans_it_names() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        level: Level::ERROR,
        directives: Some("[component{component=edge}]=debug".to_owned()),
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        let edge = tracing::info_span!("component", component = "edge");
        let core = tracing::info_span!("component", component = "core");
        edge.in_scope(|| tracing::debug!(target: "app", "edge detail"));
        core.in_scope(|| tracing::info!(target: "app", "core news"));
        tracing::info!(target: "app", "host news");
        edge.in_scope(|| tracing::trace!(target: "app", "edge noise"));
    });
    assert_eq!(
        untimed(&capture.text()),
        ["DEBUG component=edge app: edge detail"],
        "{}",
        capture.text()
    );
}

#[test]
fn text_puts_the_component_after_the_level_once_wherever_it_came_from() {
    let (capture, subscriber, _handle) = capturing(LogOptions::default());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "app", component = "edge", "event field only");
        let component = tracing::info_span!("component", component = "edge");
        let lifecycle = tracing::info_span!(
            parent: &component,
            "lifecycle",
            component = "edge",
            phase = "start"
        );
        lifecycle.in_scope(|| tracing::info!(target: "app", bytes = 512_u64, "span only"));
        lifecycle
            .in_scope(|| tracing::warn!(target: "app", component = "core", peer = "a b", "both"));
        tracing::info!(target: "app", attempt = 2, "neither");
        component.in_scope(|| tracing::info!(target: "app", reason = %"no message"));
    });
    assert_eq!(
        untimed(&capture.text()),
        [
            " INFO component=edge app: event field only",
            " INFO component=edge app: span only bytes=512 phase=start",
            // The event's own field wins; the span's is not repeated.
            " WARN component=core app: both peer=\"a b\" phase=start",
            " INFO app: neither attempt=2",
            // A `%display` value with a space is quoted like a string.
            " INFO component=edge app: reason=\"no message\"",
        ],
        "{}",
        capture.text()
    );
}

#[test]
fn text_quotes_display_debug_and_error_values_only_when_a_reader_needs_it() {
    let (capture, subscriber, _handle) = capturing(LogOptions::default());
    let refused = std::io::Error::other("connection refused");
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "app", peer = %"127.0.0.1:80", attempt = ?3, "plain");
        tracing::info!(target: "app", error = &refused as &dyn std::error::Error, "error");
        tracing::info!(target: "app", names = ?["a b"], quoted = ?"a b", "debug");
        tracing::info!(target: "app", expr = %"x=1", empty = %"", "must");
    });
    assert_eq!(
        untimed(&capture.text()),
        [
            " INFO app: plain peer=127.0.0.1:80 attempt=3",
            " INFO app: error error=\"connection refused\"",
            // Debug text that is not one quoted string is quoted; one that is stays as is.
            " INFO app: debug names=\"[\\\"a b\\\"]\" quoted=\"a b\"",
            " INFO app: must expr=\"x=1\" empty=\"\"",
        ],
        "{}",
        capture.text()
    );
}

#[test]
fn text_shows_the_source_after_the_target_when_asked() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        source: true,
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(
        subscriber,
        || tracing::info!(target: "app", component = "edge", "started"),
    );
    let text = capture.text();
    let line = untimed(&text)[0];
    assert!(
        line.starts_with(" INFO component=edge app: crates/isopace-observe/tests/logging.rs:")
            || line.starts_with(" INFO component=edge app: tests/logging.rs:"),
        "{text}"
    );
    assert!(line.ends_with(": started"), "{text}");
}

#[test]
fn a_logger_built_with_a_writer_is_never_coloured() {
    let (capture, subscriber, _handle) = capturing(LogOptions::default());
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!(component = "edge", attempt = 1, "failed")
    });
    assert!(!capture.text().contains('\x1b'), "{}", capture.text());
}

#[cfg(feature = "json")]
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[cfg(feature = "json")]
#[test]
fn json_puts_the_component_at_the_top_level_once_wherever_it_came_from() {
    use serde_json::json;

    let (capture, subscriber, _handle) = capturing(LogOptions {
        format: LogFormat::Json,
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(target: "app", component = "edge", "event field only");
        let component = tracing::info_span!("component", component = "edge");
        let lifecycle = tracing::info_span!(
            parent: &component,
            "lifecycle",
            component = "edge",
            phase = "start"
        );
        lifecycle.in_scope(
            || tracing::info!(target: "app", bytes = 512_u64, ok = true, ratio = 0.5, "span only"),
        );
        lifecycle.in_scope(|| tracing::warn!(target: "app", component = "core", "both"));
        tracing::info!(target: "app", attempt = -2, "neither");
    });
    let lines = json_lines(&capture.text());
    let without_time = |mut line: serde_json::Value| {
        let object = line.as_object_mut().expect("an object");
        assert!(object.remove("timestamp").is_some_and(|t| t.is_string()));
        line
    };
    let lines: Vec<_> = lines.into_iter().map(without_time).collect();
    assert_eq!(
        lines,
        [
            json!({"level": "INFO", "component": "edge", "target": "app",
                   "message": "event field only"}),
            json!({"level": "INFO", "component": "edge", "target": "app",
                   "message": "span only", "bytes": 512, "ok": true, "ratio": 0.5,
                   "span": {"phase": "start"}}),
            json!({"level": "WARN", "component": "core", "target": "app", "message": "both",
                   "span": {"phase": "start"}}),
            json!({"level": "INFO", "target": "app", "message": "neither", "attempt": -2}),
        ],
        "{}",
        capture.text()
    );
    // Exactly once, as a top-level key.
    assert!(
        capture
            .text()
            .lines()
            .all(|l| l.matches("\"component\"").count() <= 1),
        "{}",
        capture.text()
    );
}

#[cfg(feature = "json")]
#[test]
fn json_escapes_what_it_must_and_nests_span_fields_nearest_first() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        format: LogFormat::Json,
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer", attempt = 1_u64, path = "a\\b");
        let inner = tracing::info_span!(parent: &outer, "inner", attempt = 2_u64, late = tracing::field::Empty);
        inner.record("late", "now");
        inner.in_scope(
            || tracing::error!(target: "app", detail = ?"quote\"d", "line one\nline\ttwo \u{1}"),
        );
    });
    let lines = json_lines(&capture.text());
    assert_eq!(lines.len(), 1, "{}", capture.text());
    let line = &lines[0];
    assert_eq!(line["message"], "line one\nline\ttwo \u{1}");
    assert_eq!(line["detail"], "\"quote\\\"d\"");
    assert_eq!(
        line["span"],
        serde_json::json!({"attempt": 2, "late": "now", "path": "a\\b"})
    );
    assert!(line.get("component").is_none(), "{line}");
}

#[cfg(feature = "json")]
#[test]
fn json_writes_128_bit_integers_as_numbers_when_they_fit_64_bits() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        format: LogFormat::Json,
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("s", small = 7_i128);
        span.in_scope(|| {
            tracing::info!(fits = -5_i128, also = 9_u128, big = u128::MAX, "numbers");
        });
    });
    let line = &json_lines(&capture.text())[0];
    assert_eq!(line["fits"], -5);
    assert_eq!(line["also"], 9);
    assert_eq!(line["big"], u128::MAX.to_string());
    assert_eq!(line["span"]["small"], 7);
}

#[cfg(feature = "json")]
#[test]
fn json_never_repeats_a_key_an_event_field_shares_with_the_line() {
    let (capture, subscriber, _handle) = capturing(LogOptions {
        format: LogFormat::Json,
        source: true,
        ..LogOptions::default()
    });
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("component", phase = "start");
        span.in_scope(|| {
            tracing::info!(
                target: "app",
                timestamp = 7,
                level = "debug",
                r#target = "db",
                filename = "a.txt",
                line_number = 3,
                span = "inner",
                "log level changed"
            )
        });
    });
    let text = capture.text();
    // Each key once, as the line's own: a JSON reader keeps only one of a repeated key.
    for key in [
        "\"timestamp\":",
        "\"level\":",
        "\"target\":",
        "\"filename\":",
        "\"line_number\":",
        "\"span\":",
    ] {
        assert_eq!(text.matches(key).count(), 1, "{key} in {text}");
    }
    let line = &json_lines(&text)[0];
    assert_eq!(line["level"], "INFO", "{text}");
    assert_eq!(line["target"], "app", "{text}");
    assert_eq!(
        line["span"],
        serde_json::json!({"phase": "start"}),
        "{text}"
    );
    assert!(line["timestamp"].is_string(), "{text}");
    assert!(line["line_number"].is_u64(), "{text}");
    assert_ne!(line["filename"], "a.txt", "{text}");
    // The event's fields are kept, under a name of their own.
    assert_eq!(line["fields.timestamp"], 7, "{text}");
    assert_eq!(line["fields.level"], "debug", "{text}");
    assert_eq!(line["fields.target"], "db", "{text}");
    assert_eq!(line["fields.filename"], "a.txt", "{text}");
    assert_eq!(line["fields.line_number"], 3, "{text}");
    assert_eq!(line["fields.span"], "inner", "{text}");
}

#[test]
fn text_escapes_what_a_terminal_would_act_on() {
    let (capture, subscriber, _handle) = capturing(LogOptions::default());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("component", component = "edge", peer = %"\x1b]0;title\x07");
        span.in_scope(|| {
            tracing::warn!(
                target: "app",
                output = %"\x1b[31mred\x1b[0m",
                error = ?"\u{9b}2J",
                quoted = "a\x1bb",
                "child says \x1b[2J\x08\x0c\x7f bye"
            )
        });
    });
    let text = capture.text();
    for control in ['\x1b', '\x07', '\x08', '\x0c', '\x7f', '\u{9b}'] {
        assert!(!text.contains(control), "{control:?} in {text:?}");
    }
    let line = untimed(&text)[0];
    assert_eq!(
        line,
        // A value with control characters is quoted, and they are escaped in it.
        " WARN component=edge app: child says \\x1b[2J\\x08\\x0c\\x7f bye \
         output=\"\\u{1b}[31mred\\u{1b}[0m\" error=\"\\u{9b}2J\" quoted=\"a\\u{1b}b\" \
         peer=\"\\u{1b}]0;title\\u{7}\"",
        "{text:?}"
    );
}
