//! An `exec` child's output lines reach the log with the component's name and the stream,
//! at each stream's configured level.
//!
//! Alone in its binary: it installs a global subscriber, and tracing caches per process
//! whether a callsite is enabled.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use isopace_builtins::exec::{Exec, ExecConfig};
use isopace_host::{Component, Env};

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn stdout_and_stderr_lines_are_logged_with_the_component_and_stream() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let config: ExecConfig = serde_json::from_value(serde_json::json!({
        "command": ["sh", "-c", "echo hello from the child; printf 'windows line\\r\\n'; echo oops >&2; printf 'last words'"],
        "stderr_level": "WARN",
    }))
    .unwrap();
    let env = Env::default().for_component("worker");
    let mut worker = Exec::new("worker", config).unwrap();
    worker.start(&env).await.unwrap();
    // The status records the exit once the child is reaped and its output logged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while worker.status().last_exit.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child did not exit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(worker.status().exit_code, Some(0));
    worker.stop(&env).await.unwrap();

    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let line = |text: &str, stream: &str| {
        let level = if stream == "stderr" {
            " WARN "
        } else {
            " INFO "
        };
        log.lines().any(|l| {
            l.contains(r#"component{component="worker"}"#)
                && l.contains(&format!("{text} stream=\"{stream}\""))
                && l.contains(level)
        })
    };
    assert!(line("hello from the child", "stdout"), "{log}");
    assert!(line("windows line", "stdout"), "{log}");
    assert!(line("oops", "stderr"), "{log}");
    assert!(line("last words", "stdout"), "{log}");
    assert!(!log.contains('\r'), "line endings are trimmed: {log}");
}
