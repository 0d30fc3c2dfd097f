//! Redeploy latency through the `isopace` binary: from the atomic rename of a changed
//! descriptor into the deploy directory to the new instance running.
//!
//! The descriptor is a `heartbeat` whose message carries a tag; a heartbeat logs its message
//! as soon as it runs, so the daemon's JSON log line with the new tag is the new instance's
//! own sign of life. The log is read through a pipe as it is written: no polling.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::json;

use super::binary::{Daemon, TempDir, forward_lines, percentile, write, write_record};

/// Renames measured, after [`WARM_UP`] unmeasured ones.
const TRIES: usize = 100;
const WARM_UP: usize = 5;
/// How long one redeploy may take before the measurement gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// Measures, prints and records (`redeploy_binary.json`) the latency percentiles.
pub(super) fn run(isopace: &Path, target: &Path) -> Result<(), String> {
    println!("==> redeploy latency through {}", isopace.display());
    let dir = TempDir::new("redeploy")?;
    let (deploy, staging) = (dir.path().join("deploy"), dir.path().join("staging"));
    for d in [&deploy, &staging] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let live = deploy.join("edge.json");
    write(&live, &descriptor(0))?;
    let mut daemon = Daemon::spawn(
        "isopace",
        Command::new(isopace)
            .arg("run")
            .arg("--deploy")
            .arg(&deploy)
            // File events drive the redeploys; the rescan is only a safety net.
            .args(["--log-format", "json", "--scan-interval", "1h"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let (send, lines) = mpsc::channel();
    let child = daemon.child();
    forward_lines(child.stdout.take().expect("piped"), send.clone());
    forward_lines(child.stderr.take().expect("piped"), send);
    wait_for(&lines, 0)?;

    let mut latencies = Vec::with_capacity(TRIES);
    for tag in 1..=(WARM_UP + TRIES) {
        while lines.try_recv().is_ok() {}
        let staged = staging.join("edge.json");
        write(&staged, &descriptor(tag))?;
        let began = Instant::now();
        fs::rename(&staged, &live)
            .map_err(|e| format!("cannot rename into {}: {e}", live.display()))?;
        wait_for(&lines, tag)?;
        if tag > WARM_UP {
            latencies.push(began.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop(daemon);

    latencies.sort_by(f64::total_cmp);
    let (p50, p95, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 1.0),
    );
    println!(
        "redeploy through the binary: {} tries, p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms",
        latencies.len()
    );
    let record = json!({"tries": latencies.len(), "p50_ms": p50, "p95_ms": p95, "max_ms": max});
    write_record(target, "redeploy_binary", &record)
}

/// A heartbeat that logs its tag at once when it runs, and not again for an hour.
fn descriptor(tag: usize) -> String {
    json!({
        "name": "edge",
        "type": "heartbeat",
        "config": {"interval": "1h", "message": message(tag)},
    })
    .to_string()
}

/// The message, ended so that tag 1 is not found in the line of tag 10.
fn message(tag: usize) -> String {
    format!("redeployed tag {tag};")
}

/// Waits for the log line of `tag`'s instance.
fn wait_for(lines: &mpsc::Receiver<String>, tag: usize) -> Result<(), String> {
    let wanted = message(tag);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(&wanted) => return Ok(()),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("no instance with tag {tag} within {PATIENCE:?}"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "isopace exited before the instance with tag {tag} ran"
                ));
            }
        }
    }
}
