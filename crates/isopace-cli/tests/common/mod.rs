//! Helpers shared by the tests that drive the real `isopace` binary.
#![allow(dead_code)] // each test binary uses its own subset

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_isopace");

pub(crate) fn isopace() -> Command {
    let mut cmd = Command::new(BIN);
    // Only what a test sets reaches the daemon's configuration overrides.
    for (key, _) in std::env::vars() {
        let outside = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RUST_LOG"];
        if key.starts_with("ISOPACE") || outside.contains(&key.as_str()) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Polls `check` until it returns `Some` or 15 s pass.
pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it holds or 15 s pass.
pub(crate) fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()));
}

/// A running `isopace run` whose log lines are collected.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub(crate) fn start(deploy: &Path, extra: &[&str], env: &[(&str, String)]) -> Daemon {
        Daemon::start_with(deploy, extra, env, |_| {})
    }

    /// [`Daemon::start`], with `customize` applied to the command last.
    pub(crate) fn start_with(
        deploy: &Path,
        extra: &[&str],
        env: &[(&str, String)],
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut cmd = isopace();
        cmd.args(["run", "--deploy"])
            .arg(deploy)
            .args(["--scan-interval", "200ms"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        customize(&mut cmd);
        let mut child = cmd.spawn().expect("the binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, log }
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log reader drain.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn log_has(&self, needle: &str) -> bool {
        self.log().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (released just before use; the window for a race is tiny).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

pub(crate) fn http_get(port: u16, path: &str, token: Option<&str>) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        body: body.to_owned(),
    })
}

pub(crate) fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

pub(crate) fn component<'a>(
    list: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    list.as_array()?.iter().find(|c| c["name"] == name)
}
