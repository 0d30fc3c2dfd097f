//! `isopace run` under systemd's service protocol: readiness, reloads, status, the watchdog
//! and shutdown, as a service manager would receive them on its notify socket.

mod common;

use std::{
    fs,
    os::unix::net::UnixDatagram,
    sync::{Arc, Mutex},
    thread,
};

use common::{Daemon, wait_until};

/// Every datagram received on a notify socket, in order.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        thread::spawn(move || {
            let mut buf = vec![0; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push(text);
            }
        });
        NotifySocket { path, messages }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// The index of the first message after `from` that has the line `line`.
    fn find(&self, from: usize, line: &str) -> Option<usize> {
        self.messages()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, m)| m.lines().any(|l| l == line))
            .map(|(i, _)| i)
    }

    fn wait_for(&self, from: usize, line: &str) -> usize {
        let mut found = None;
        wait_until(&format!("`{line}` on the notify socket"), || {
            found = self.find(from, line);
            found.is_some()
        });
        found.unwrap()
    }
}

#[test]
fn run_tells_systemd_of_readiness_reloads_status_the_watchdog_and_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    fs::create_dir(&deploy).unwrap();
    fs::write(
        deploy.join("beat.json"),
        r#"{"name": "beat", "type": "heartbeat", "config": {"interval": "1h"}}"#,
    )
    .unwrap();
    // systemd's variables are the daemon's alone.
    fs::write(
        deploy.join("child.json"),
        r#"{"name": "child", "type": "exec", "restart": {"policy": "never"},
            "config": {"command": ["/bin/sh", "-c", "echo \"inherited=[$NOTIFY_SOCKET$WATCHDOG_USEC]\""]}}"#,
    )
    .unwrap();
    let notify = NotifySocket::bind(dir.path());
    let env = [
        ("NOTIFY_SOCKET", notify.path.display().to_string()),
        // A 200 ms watchdog: pings every 100 ms.
        ("WATCHDOG_USEC", "200000".to_owned()),
    ];
    let mut daemon = Daemon::start(&deploy, &[], &env);

    let ready = notify.wait_for(0, "READY=1");
    wait_until("a status line with the running heartbeat", || {
        notify.messages().iter().any(|m| {
            m.starts_with("STATUS=") && m.contains("components: ") && m.contains("running")
        })
    });
    wait_until("the child's line", || daemon.log_has("inherited=[]"));
    let first_ping = notify.wait_for(ready, "WATCHDOG=1");
    notify.wait_for(first_ping + 1, "WATCHDOG=1");

    // A reload: RELOADING=1 with the monotonic time in the same message, then READY=1.
    daemon.signal("HUP");
    let reloading = notify.wait_for(ready + 1, "RELOADING=1");
    let message = &notify.messages()[reloading];
    let usec = message
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{message:?}");
    notify.wait_for(reloading + 1, "READY=1");

    // A failed component shows in the status line, by name.
    fs::write(
        deploy.join("broken.json"),
        r#"{"name": "broken", "type": "exec", "config": {"command": ["/bin/sh", "-c", "exit 3"]},
            "restart": {"policy": "never"}}"#,
    )
    .unwrap();
    wait_until("the failed component in the status line", || {
        notify
            .messages()
            .iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("1 failed (broken)"))
    });

    daemon.signal("TERM");
    assert_eq!(daemon.wait().code(), Some(0));
    let stopping = notify.find(0, "STOPPING=1").expect("STOPPING=1 was sent");
    assert!(stopping > reloading);
}
