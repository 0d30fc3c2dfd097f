//! What a daemon around a [`Host`] needs beyond its components: the Unix signals that drive
//! it ([`Signals`]) and systemd's service protocol ([`Systemd`]).
//!
//! `isopace run` uses both; a daemon of your own built on the host can use them the same way.
//!
//! ```no_run
//! use isopace_builtins::daemon::{Received, Signals, Systemd};
//! use isopace_host::Host;
//!
//! # async fn daemon(host: Host) -> std::io::Result<()> {
//! let systemd = Systemd::from_env();
//! let mut signals = Signals::new()?;
//! host.start().await.expect("start");
//! systemd.ready();
//! systemd.follow(&host);
//! loop {
//!     match signals.next().await {
//!         Received::Hangup => {
//!             let reload = systemd.reloading();
//!             // ... reload what the daemon reloads ...
//!             reload.done();
//!         }
//!         _ => break,
//!     }
//! }
//! systemd.stopping();
//! # Ok(())
//! # }
//! ```

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use isopace_host::{Host, State, WeakHost};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The least time between two `STATUS=` lines.
const STATUS_EVERY: Duration = Duration::from_millis(200);

/// A signal that drives the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGINT: stop (Ctrl-C).
    Interrupt,
    /// SIGTERM: stop.
    Terminate,
    /// SIGHUP: reload.
    Hangup,
}

impl Received {
    /// The signal's name, such as `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Received::Interrupt => "SIGINT",
            Received::Terminate => "SIGTERM",
            Received::Hangup => "SIGHUP",
        }
    }

    /// The conventional exit code for dying of this signal (128 + its number); `None` for a
    /// signal that does not stop the daemon.
    pub fn forced_exit_code(self) -> Option<i32> {
        match self {
            Received::Interrupt => Some(130),
            Received::Terminate => Some(143),
            Received::Hangup => None,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, installed together. Install them before starting anything, so
/// a signal that arrives during startup is not lost.
#[derive(Debug)]
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers. Fails outside a tokio runtime with IO enabled, or when the OS
    /// refuses a handler.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.interrupt.recv() => Received::Interrupt,
            _ = self.terminate.recv() => Received::Terminate,
            _ = self.hangup.recv() => Received::Hangup,
        }
    }
}

/// systemd's service protocol (`sd_notify(3)`): `READY=1`, `RELOADING=1`, `STOPPING=1`,
/// `STATUS=` and the watchdog's `WATCHDOG=1`.
///
/// Everything is a no-op when the process was not started by systemd with
/// `NOTIFY_SOCKET` set (or off Linux), so a daemon calls it unconditionally. A message that
/// cannot be sent is logged at warn and otherwise ignored: the service manager's view is
/// worth a warning, never the daemon.
#[derive(Debug, Clone)]
pub struct Systemd {
    enabled: bool,
    watchdog: Option<Duration>,
    /// Whether `READY=1` was sent: a reload before it is no reload to systemd.
    ready: Arc<AtomicBool>,
    /// Where the messages go instead of `NOTIFY_SOCKET`, in tests.
    #[cfg(test)]
    socket: Option<std::path::PathBuf>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and the watchdog's `WATCHDOG_USEC` (and `WATCHDOG_PID`, which
    /// must be this process when set).
    pub fn from_env() -> Systemd {
        let enabled = cfg!(target_os = "linux") && std::env::var_os("NOTIFY_SOCKET").is_some();
        #[cfg(target_os = "linux")]
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        #[cfg(not(target_os = "linux"))]
        let watchdog = None;
        Systemd {
            enabled,
            watchdog: watchdog.filter(|_| enabled),
            ready: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            socket: None,
        }
    }

    /// Whether messages go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The service's watchdog timeout (`WatchdogSec=`), when one is set.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`: startup (or a reload) finished.
    pub fn ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.send(&[Message::Ready]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` now, as `Type=notify-reload` expects. Call
    /// [`Reloading::done`] when the reload finished, which sends `READY=1`. Before the first
    /// [`ready`](Self::ready) neither is sent: systemd still waits for startup, and a
    /// `READY=1` from the reload would end that wait early.
    #[must_use = "a reload ends with `done()`, which tells systemd the daemon is ready again"]
    pub fn reloading(&self) -> Reloading {
        let started = self.ready.load(Ordering::Acquire);
        if started {
            self.send(&[Message::Reloading]);
        }
        Reloading {
            systemd: self.clone(),
            started,
        }
    }

    /// `STOPPING=1`: shutdown began.
    pub fn stopping(&self) {
        self.send(&[Message::Stopping]);
    }

    /// `STATUS=` with `line` (newlines become spaces), shown by `systemctl status`.
    pub fn status(&self, line: &str) {
        self.send(&[Message::Status(line)]);
    }

    /// Keeps systemd informed of `host` until it is dropped: a `STATUS=` line with
    /// [`summary`] after every change of its components (at most five a second), and, when the service has a
    /// watchdog, `WATCHDOG=1` every half timeout for as long as the host answers (a host whose
    /// state lock or runtime is stuck stops the pings, and systemd restarts the service).
    pub fn follow(&self, host: &Host) {
        if !self.enabled {
            return;
        }
        tokio::spawn(self.clone().status_loop(host.downgrade(), host.changed()));
        if let Some(timeout) = self.watchdog {
            tokio::spawn(self.clone().watchdog_loop(host.downgrade(), timeout / 2));
        }
    }

    async fn status_loop(self, host: WeakHost, mut changes: tokio::sync::watch::Receiver<()>) {
        let mut last = String::new();
        loop {
            let Some(host) = host.upgrade() else { return };
            let statuses = host.status();
            let line = summary(statuses.iter().map(|s| (s.name.as_str(), s.state)));
            drop(host);
            if line != last {
                self.status(&line);
                last = line;
            }
            // A burst of changes (a directory of descriptors deploying) is one line later,
            // not a summary of every component per change.
            tokio::time::sleep(STATUS_EVERY).await;
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    async fn watchdog_loop(self, host: WeakHost, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(host) = host.upgrade() else { return };
            // The host answers: its state is readable, and this task was scheduled in time.
            drop(host.status());
            self.send(&[Message::Watchdog]);
        }
    }

    fn send(&self, messages: &[Message<'_>]) {
        if !self.enabled {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use sd_notify::NotifyState;
            let mut states = Vec::with_capacity(messages.len() + 1);
            let status: Vec<String> = messages
                .iter()
                .filter_map(|m| match m {
                    Message::Status(line) => Some(line.replace(['\n', '\r'], " ")),
                    _ => None,
                })
                .collect();
            states.extend(status.iter().map(|line| NotifyState::Status(line)));
            for message in messages {
                match message {
                    Message::Ready => states.push(NotifyState::Ready),
                    Message::Reloading => {
                        states.push(NotifyState::Reloading);
                        match NotifyState::monotonic_usec_now() {
                            Ok(now) => states.push(now),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read the monotonic clock for systemd")
                            }
                        }
                    }
                    Message::Stopping => states.push(NotifyState::Stopping),
                    Message::Watchdog => states.push(NotifyState::Watchdog),
                    Message::Status(_) => {}
                }
            }
            #[cfg(test)]
            if let Some(path) = &self.socket {
                let text: String = states.iter().map(|s| format!("{s}\n")).collect();
                let socket = std::os::unix::net::UnixDatagram::unbound().expect("a socket");
                socket
                    .send_to(text.as_bytes(), path)
                    .expect("the test's socket takes it");
                return;
            }
            if let Err(e) = sd_notify::notify(&states) {
                tracing::warn!(error = %e, "cannot notify systemd");
            }
        }
    }
}

/// A reload systemd was told of; [`done`](Self::done) ends it.
#[derive(Debug)]
pub struct Reloading {
    systemd: Systemd,
    /// Whether `RELOADING=1` was sent.
    started: bool,
}

impl Reloading {
    /// `READY=1`: the reload finished (whether or not all of it succeeded: failures are in
    /// the logs and the components' status). Nothing when the reload began before startup
    /// finished.
    pub fn done(self) {
        if self.started {
            self.systemd.ready();
        }
    }
}

enum Message<'a> {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
    Status(&'a str),
}

/// One line on the components, for `STATUS=`: how many there are, how many are in each
/// state, and the names of failed ones. For example
/// `4 components: 3 running, 1 failed (payments)`; at most three failed names are listed.
///
/// ```
/// use isopace_builtins::daemon::summary;
/// use isopace_host::State;
///
/// let line = summary([("edge", State::Running), ("payments", State::Failed)]);
/// assert_eq!(line, "2 components: 1 running, 1 failed (payments)");
/// ```
pub fn summary<'a>(components: impl IntoIterator<Item = (&'a str, State)>) -> String {
    let statuses: Vec<(&str, State)> = components.into_iter().collect();
    let total = statuses.len();
    let mut line = format!("{total} component{}", if total == 1 { "" } else { "s" });
    let mut first = true;
    for state in State::ALL {
        let names: Vec<&str> = statuses
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(name, _)| *name)
            .collect();
        if names.is_empty() {
            continue;
        }
        line.push_str(if first { ": " } else { ", " });
        first = false;
        let _ = write!(line, "{} {state}", names.len());
        if state == State::Failed {
            const SHOWN: usize = 3;
            let _ = write!(line, " ({}", names[..names.len().min(SHOWN)].join(", "));
            if names.len() > SHOWN {
                let _ = write!(line, ", +{} more", names.len() - SHOWN);
            }
            line.push(')');
        }
    }
    line
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// A [`Systemd`] that sends to a socket of the test's, and that socket.
    fn systemd(dir: &std::path::Path) -> (Systemd, UnixDatagram) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut systemd = Systemd::from_env();
        systemd.enabled = true;
        systemd.socket = Some(path);
        (systemd, socket)
    }

    fn received(socket: &UnixDatagram) -> Vec<String> {
        let mut buf = [0; 512];
        let mut all = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        all
    }

    #[test]
    fn a_reload_before_startup_finished_tells_systemd_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (systemd, socket) = systemd(dir.path());
        systemd.reloading().done();
        assert!(received(&socket).is_empty(), "no READY=1 before startup's");

        systemd.ready();
        let reload = systemd.reloading();
        reload.done();
        let messages = received(&socket);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0], "READY=1\n");
        assert!(
            messages[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{messages:?}"
        );
        assert_eq!(messages[2], "READY=1\n");
    }

    #[test]
    fn a_status_line_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let (systemd, socket) = systemd(dir.path());
        systemd.status("two\nlines");
        assert_eq!(received(&socket), ["STATUS=two lines\n"]);
    }

    #[test]
    fn the_summary_counts_states_and_names_at_most_three_failed() {
        use State::*;
        assert_eq!(summary([]), "0 components");
        assert_eq!(summary([("a", Running)]), "1 component: 1 running");
        let line = summary([
            ("a", Failed),
            ("b", Running),
            ("c", Failed),
            ("d", Backoff),
            ("e", Failed),
            ("f", Failed),
        ]);
        assert_eq!(
            line,
            "6 components: 1 running, 1 backoff, 4 failed (a, c, e, +1 more)"
        );
    }
}
