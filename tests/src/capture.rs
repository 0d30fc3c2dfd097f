//! Log capture: what the host and the deployer log while a test runs, as JSON records, so a
//! test can check that a fault was reported with the component or file it concerns.

use std::{fmt, io, sync::Arc};

use isopace_observe::{LogFormat, LogOptions};
use parking_lot::Mutex;
use tracing::{Level, subscriber::DefaultGuard};

/// Captures warnings and errors logged on the current thread until dropped.
///
/// The subscriber is the one `isopace-observe` builds for JSON logs, installed as the
/// thread's default, so tests on a current-thread runtime see everything their host and
/// deployer log and nothing from tests running on other threads.
#[must_use = "logs are captured only while the capture is alive"]
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Starts capturing records at warning level and above on this thread.
    pub fn install() -> LogCapture {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = Arc::clone(&buffer);
        let (subscriber, _handle) = LogOptions {
            level: Level::WARN,
            format: LogFormat::Json,
            ..LogOptions::default()
        }
        .build_with_writer(move || Sink(Arc::clone(&sink)))
        .expect("no directives to get wrong");
        LogCapture {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every record captured so far (one JSON object per record).
    pub fn records(&self) -> Vec<serde_json::Value> {
        let bytes = self.buffer.lock().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first record whose `component` field is `component` and whose `error` field
    /// contains `text`.
    pub fn find(&self, component: &str, text: &str) -> Option<serde_json::Value> {
        self.records().into_iter().find(|r| {
            r["component"] == component && r["error"].as_str().is_some_and(|e| e.contains(text))
        })
    }

    /// Forgets what was captured so far.
    pub fn clear(&self) {
        self.buffer.lock().clear();
    }
}

impl fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCapture")
            .field("bytes", &self.buffer.lock().len())
            .finish()
    }
}
