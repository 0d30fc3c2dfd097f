//! What the measurements through the `isopace` binary share: the release build, a daemon
//! process that is killed when dropped, and a few socket helpers.

use std::{
    fs,
    io::{self, BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Builds the release `isopace` binary and returns its path, as cargo reports it (so a
/// `CARGO_TARGET_DIR` or a build-dir setting is followed).
pub(super) fn build_isopace(root: &Path) -> Result<PathBuf, String> {
    println!("==> build the release isopace binary");
    let output = Command::new(crate::cargo())
        .args(["build", "--release", "--locked", "-p", "isopace-cli"])
        .args([
            "--bin",
            "isopace",
            "--message-format",
            "json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run cargo build: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build of isopace failed ({})", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "isopace")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo build reported no isopace executable".to_owned())
}

/// Whether `program` can be run from `PATH`.
pub(super) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A child process (a daemon under measurement), killed and reaped when dropped.
pub(super) struct Daemon {
    child: Child,
    what: &'static str,
}

impl Daemon {
    pub(super) fn spawn(what: &'static str, command: &mut Command) -> Result<Self, String> {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        Ok(Daemon { child, what })
    }

    pub(super) fn id(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits until `addr` accepts connections, failing if the daemon exits first.
    pub(super) fn wait_listening(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited before listening ({status})", self.what));
            }
            if TcpStream::connect(addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} is not listening on {addr} after 20s",
                    self.what
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now (the kernel's next ephemeral one).
pub(super) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(what: &str) -> Result<Self, String> {
        let path =
            std::env::temp_dir().join(format!("isopace-bench-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `contents` to `path`, naming the file in the error.
pub(super) fn write(path: &Path, contents: &str) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Sends every line `reader` yields to `lines`, on a thread of its own, until end of file.
pub(super) fn forward_lines(
    reader: impl io::Read + Send + 'static,
    lines: std::sync::mpsc::Sender<String>,
) {
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
}

/// Writes `record` as `target/isopace-bench/<name>.json`, where BENCHMARKS.md reads it.
pub(super) fn write_record(target: &Path, name: &str, record: &Value) -> Result<(), String> {
    let dir = target.join("isopace-bench");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(&dir.join(format!("{name}.json")), &record.to_string())
}

/// The value at fraction `p` (0 to 1) of sorted `values`.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The median of `values`.
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}
