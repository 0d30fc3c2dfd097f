//! Short connections through the `isopace` binary's tcp-proxy: system calls per connection
//! (counted with `strace`) and connections per second, each beside haproxy's (`mode tcp`, one
//! thread) when `haproxy` is installed, in front of the same loopback echo server with the
//! same client.
//!
//! A short connection connects, sends a few bytes, reads them back and closes. The system
//! calls are the proxy process's, all threads, while [`COUNTED`] connections run one after
//! another, less those of an idle stretch as long (so the daemon's own timers and the
//! attach do not count).

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::binary::{
    Daemon, TempDir, forward_lines, free_port, median, on_path, write, write_record,
};

/// What a client sends and reads back.
const MESSAGE: &[u8] = b"a short exchange\n";
/// Connections whose system calls are counted.
const COUNTED: usize = 1000;
/// Clients connecting at once while connections per second are measured.
const CLIENTS: usize = 8;
/// Rounds of the rate measurement, each proxy in turn, and the length of each.
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(1);

/// Measures, prints and records (`short_connections.json`) both figures.
pub(super) fn run(isopace: &Path, target: &Path) -> Result<(), String> {
    println!("==> short connections through {}", isopace.display());
    let upstream = echo_server(CLIENTS + 2).map_err(|e| format!("echo server: {e}"))?;
    let dir = TempDir::new("short-connections")?;
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let proxied = SocketAddr::from(([127, 0, 0, 1], port));
    let deploy = dir.path().join("deploy");
    std::fs::create_dir_all(&deploy).map_err(|e| format!("cannot create the deploy dir: {e}"))?;
    let descriptor = json!({
        "name": "proxy",
        "type": "tcp-proxy",
        "config": {"listen": proxied.to_string(), "upstream": upstream.to_string()},
    });
    write(&deploy.join("proxy.json"), &descriptor.to_string())?;
    let mut proxy = Daemon::spawn(
        "isopace",
        Command::new(isopace)
            .arg("run")
            .arg("--deploy")
            .arg(&deploy)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )?;
    proxy.wait_listening(proxied)?;
    // Without haproxy, why: its rows say so and do not count.
    let haproxy = if on_path("haproxy") {
        start_haproxy(dir.path(), upstream).map_err(|e| format!("haproxy did not start: {e}"))
    } else {
        Err("haproxy not installed".to_owned())
    };
    let not_installed = |tool: &str| Value::from(format!("{tool} not installed"));

    let mut record = json!({"clients": CLIENTS, "counted": COUNTED});
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_cpu, mut their_cpu) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (rate, cpu) = connections_per_second(proxied, proxy.id(), ROUND)?;
        ours.push(rate);
        our_cpu.push(cpu);
        if let Ok((daemon, addr)) = &haproxy {
            let (rate, cpu) = connections_per_second(*addr, daemon.id(), ROUND)?;
            theirs.push(rate);
            their_cpu.push(cpu);
        }
    }
    let (rate, cpu) = (median(ours), median(our_cpu));
    record["connections_per_second"] = rate.round().into();
    record["cpu_us_per_connection"] = round2(cpu).into();
    print!("tcp-proxy: {rate:.0} short connections/s ({CLIENTS} clients), CPU {cpu:.1} us each");
    if haproxy.is_ok() {
        let (theirs, cpu) = (median(theirs), median(their_cpu));
        record["haproxy_connections_per_second"] = theirs.round().into();
        record["haproxy_cpu_us_per_connection"] = round2(cpu).into();
        println!(
            "; haproxy (nbthread 1) {theirs:.0}/s, CPU {cpu:.1} us each; ratio {:.2}",
            rate / theirs
        );
    } else if let Err(why) = &haproxy {
        record["haproxy_connections_per_second"] = why.as_str().into();
        println!("; {why}");
    }

    // Counting needs ptrace, which some sandboxes refuse: then the rows say why.
    let counted = |key: &str, name: &str, pid: u32, addr: SocketAddr, record: &mut Value| {
        match syscalls_per_connection(pid, addr, dir.path()) {
            Ok((per, calls)) => {
                println!(
                    "{name}: {per:.1} system calls per short connection: {}",
                    top(&calls)
                );
                record[format!("{key}syscalls_per_connection")] = round2(per).into();
                record[format!("{key}syscalls")] = json!(calls);
            }
            Err(e) => {
                println!("{name}: system calls not counted: {e}");
                record[format!("{key}syscalls_per_connection")] = format!("strace: {e}").into();
            }
        }
    };
    if !on_path("strace") {
        println!("system calls per connection not counted: strace not installed");
        record["syscalls_per_connection"] = not_installed("strace");
        record["haproxy_syscalls_per_connection"] = not_installed("strace");
    } else {
        counted("", "tcp-proxy", proxy.id(), proxied, &mut record);
        match &haproxy {
            Ok((daemon, addr)) => counted("haproxy_", "haproxy  ", daemon.id(), *addr, &mut record),
            Err(why) => record["haproxy_syscalls_per_connection"] = why.as_str().into(),
        }
    }
    drop(haproxy);
    drop(proxy);
    write_record(target, "short_connections", &record)
}

/// A loopback server whose `threads` threads each echo one connection at a time until it
/// closes. They live as long as the process.
fn echo_server(threads: usize) -> io::Result<SocketAddr> {
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0")?);
    let addr = listener.local_addr()?;
    for _ in 0..threads {
        let listener = Arc::clone(&listener);
        thread::spawn(move || {
            let mut buffer = [0; 4096];
            loop {
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }
    Ok(addr)
}

/// One short connection: connect, send [`MESSAGE`], read it back, close.
fn short_connection(addr: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(MESSAGE)?;
    let mut back = [0; MESSAGE.len()];
    stream.read_exact(&mut back)?;
    if back != MESSAGE {
        return Err(io::Error::other("the echo differs from what was sent"));
    }
    Ok(())
}

/// Short connections completed per second by [`CLIENTS`] clients over `duration`, and the
/// CPU time process `pid` (the proxy) spent on each, in microseconds.
fn connections_per_second(
    addr: SocketAddr,
    pid: u32,
    duration: Duration,
) -> Result<(f64, f64), String> {
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                let mut done = 0_u64;
                while Instant::now() < deadline {
                    short_connection(addr)?;
                    done += 1;
                }
                Ok::<_, io::Error>(done)
            })
        })
        .collect();
    let mut total = 0;
    for client in clients {
        total += client
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?
            .map_err(|e| format!("a short connection through {addr} failed: {e}"))?;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid)? - cpu_before;
    Ok((
        total as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64,
    ))
}

/// The user and system CPU time of process `pid` so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Result<Duration, String> {
    /// The unit of those times: `USER_HZ`, 100 on Linux.
    const TICKS_PER_SECOND: u64 = 100;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The fields after the parenthesised name start at the state (field 3); utime and stime
    // are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok(Duration::from_millis(
            (user + system) * 1000 / TICKS_PER_SECOND,
        )),
        _ => Err(format!("{path} has no CPU times")),
    }
}

/// haproxy in front of `upstream` (`mode tcp`, one thread, in the foreground), and the
/// address it listens on.
fn start_haproxy(dir: &Path, upstream: SocketAddr) -> Result<(Daemon, SocketAddr), String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = format!(
        "global\n  nbthread 1\n  maxconn 4096\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend short\n  bind {addr}\n  default_backend echo\n\
         backend echo\n  server echo {upstream}\n"
    );
    let path = dir.join("haproxy.cfg");
    write(&path, &config)?;
    let mut daemon = Daemon::spawn(
        "haproxy",
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    daemon.wait_listening(addr)?;
    Ok((daemon, addr))
}

/// The system calls of process `pid` (all threads) per short connection through `addr`,
/// in total and by name, most frequent first.
fn syscalls_per_connection(
    pid: u32,
    addr: SocketAddr,
    dir: &Path,
) -> Result<(f64, Vec<(String, f64)>), String> {
    let mut elapsed = Duration::ZERO;
    let busy = count_syscalls(pid, dir, || {
        let started = Instant::now();
        for _ in 0..COUNTED {
            short_connection(addr).map_err(|e| format!("a connection through {addr}: {e}"))?;
        }
        elapsed = started.elapsed();
        Ok(())
    })?;
    let idle = count_syscalls(pid, dir, || {
        thread::sleep(elapsed);
        Ok(())
    })?;
    let during: Vec<(String, u64)> = busy
        .into_iter()
        .map(|(name, n)| {
            let n = n.saturating_sub(idle.get(&name).copied().unwrap_or(0));
            (name, n)
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    let total = during.iter().map(|(_, n)| n).sum::<u64>() as f64 / COUNTED as f64;
    let mut calls: Vec<(String, f64)> = during
        .into_iter()
        .map(|(name, n)| (name, round2(n as f64 / COUNTED as f64)))
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok((total, calls))
}

/// Counts the system calls of `pid`'s threads, by name, while `work` runs.
fn count_syscalls(
    pid: u32,
    dir: &Path,
    work: impl FnOnce() -> Result<(), String>,
) -> Result<BTreeMap<String, u64>, String> {
    let summary = dir.join(format!("strace-{pid}.txt"));
    let mut strace = Daemon::spawn(
        "strace",
        Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&summary)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let (send, lines) = mpsc::channel();
    forward_lines(strace.child().stderr.take().expect("piped"), send);
    // strace says so once it has attached to every thread.
    loop {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.contains("attached") => break,
            Ok(_) => {}
            Err(_) => return Err(format!("strace did not attach to process {pid}")),
        }
    }
    work()?;
    // On SIGINT strace detaches and writes its summary.
    let interrupted = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if !interrupted.success() {
        return Err("cannot interrupt strace".to_owned());
    }
    strace
        .child()
        .wait()
        .map_err(|e| format!("cannot wait for strace: {e}"))?;
    let text = std::fs::read_to_string(&summary)
        .map_err(|e| format!("cannot read {}: {e}", summary.display()))?;
    Ok(parse_strace_summary(&text))
}

/// The calls by name in the table `strace -c` writes: rows of `% time`, seconds,
/// usecs/call, calls, errors (may be blank) and the name; the `total` row is left out.
fn parse_strace_summary(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
                return None;
            }
            let name = *fields.last()?;
            let calls = fields[3].parse().ok()?;
            (name != "total").then(|| (name.to_owned(), calls))
        })
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The most frequent calls, for the console.
fn top(calls: &[(String, f64)]) -> String {
    calls
        .iter()
        .take(12)
        .map(|(name, per)| format!("{name} {per}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_strace_summary_table() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           4       100        50 accept4
 10.00    0.000100           1       100           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.000500           2       200        50 total
";
        let calls = parse_strace_summary(text);
        assert_eq!(
            calls.into_iter().collect::<Vec<_>>(),
            [("accept4".to_owned(), 100), ("close".to_owned(), 100)]
        );
    }
}
