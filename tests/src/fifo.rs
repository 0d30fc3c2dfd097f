//! FIFOs where a file is expected, and a watchdog that keeps a test from hanging when a
//! reader blocks on one.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

/// Makes a FIFO (a named pipe) at `path`.
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("run mkfifo {}: {e}", path.display()));
    assert!(status.success(), "mkfifo {}: {status}", path.display());
}

/// Bounds a step that must not block on FIFOs, in real time.
///
/// A tokio timeout cannot: the files are read on blocking threads, and while one runs paused
/// time does not advance, so the timeout would never fire; and a thread stuck for good keeps
/// the runtime from shutting down. Instead, when the step has not finished `limit` after
/// [`arm`](Self::arm), the watchdog opens each FIFO for writing and closes it again, which
/// releases a reader blocked in `open` or `read` (it sees end of file), and repeats that
/// until disarmed. [`disarm`](Self::disarm) then fails the test, naming the step.
#[derive(Debug)]
#[must_use = "disarm the watchdog after the step"]
pub struct FifoWatchdog {
    what: String,
    limit: Duration,
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<bool>>,
}

/// How often a fired watchdog releases readers again.
const RELEASE_EVERY: Duration = Duration::from_millis(20);

impl FifoWatchdog {
    /// Starts watching `what`, a step that reads where the `fifos` are.
    pub fn arm(what: impl Into<String>, fifos: &[PathBuf], limit: Duration) -> FifoWatchdog {
        let (done, wait) = mpsc::channel::<()>();
        let fifos = fifos.to_vec();
        let thread = std::thread::spawn(move || {
            if !matches!(
                wait.recv_timeout(limit),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return false;
            }
            loop {
                for fifo in &fifos {
                    release(fifo);
                }
                if !matches!(
                    wait.recv_timeout(RELEASE_EVERY),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    return true;
                }
            }
        });
        FifoWatchdog {
            what: what.into(),
            limit,
            done: Some(done),
            thread: Some(thread),
        }
    }

    /// Ends the watch; fails the test when the step took longer than the limit.
    #[track_caller]
    pub fn disarm(mut self) {
        let fired = self.stop();
        assert!(
            !fired,
            "{} did not finish within {:?}: it blocked on a FIFO until the watchdog opened its \
             other end",
            self.what, self.limit
        );
    }

    fn stop(&mut self) -> bool {
        drop(self.done.take());
        self.thread
            .take()
            .is_some_and(|thread| thread.join().expect("the watchdog does not panic"))
    }
}

impl Drop for FifoWatchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens `fifo` for writing without waiting for a reader (there is none unless one is
/// blocked) and closes it, so a blocked reader returns.
fn release(fifo: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        if fs::symlink_metadata(fifo).is_ok_and(|m| m.file_type().is_fifo()) {
            let _ = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
        }
    }
    #[cfg(not(unix))]
    let _ = fifo;
}
