//! Throughput and added latency of the tcp-proxy versus a direct connection to the same echo
//! server, measured in one run; prints MB/s and the proxied/direct ratio at the end.
//!
//! The proxy is measured twice: with the system's congestion control on its sockets, and
//! with `"congestion_control": "cubic"` (the client and the echo server keep the system's in
//! both). With BBR as the system default and no `fq` qdisc, as on loopback, the kernel paces
//! every socket with a timer of its own, and the proxy has two sockets per connection.
//! Clients run as tasks on the runtime, like the proxy and the echo server.
//!
//! ```sh
//! cargo bench -p isopace-builtins --bench tcp_proxy -- --warm-up-time 1 --measurement-time 3
//! ```

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput};
use isopace_builtins::tcp_proxy::{TcpProxy, TcpProxyConfig};
use isopace_host::{Component, Env};
use isopace_observe::MetricsRegistry;
use isopace_testkit::echo_server;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};

/// Bytes pushed through and read back per throughput sample.
const PAYLOAD: usize = 16 << 20;
const CHUNK: usize = 64 << 10;
/// The request and response of a latency round trip.
const MESSAGE: usize = 64;

/// The proxy with the daemon's own wiring: a metrics registry behind the observer. Fails
/// when the kernel refuses `congestion_control`.
async fn proxy(
    upstream: SocketAddr,
    congestion_control: Option<&str>,
) -> Result<(TcpProxy, SocketAddr), isopace_host::BoxError> {
    let mut config = serde_json::json!({"listen": "127.0.0.1:0", "upstream": upstream});
    if let Some(name) = congestion_control {
        config["congestion_control"] = name.into();
    }
    let config: TcpProxyConfig = serde_json::from_value(config).unwrap();
    let metrics = MetricsRegistry::new();
    let env = Env::new(isopace_config::Config::default(), Arc::new(metrics.clone()))
        .for_component("bench");
    let mut proxy = TcpProxy::new("bench", config).unwrap();
    proxy.start(&env).await?;
    let addr = proxy.local_addr().unwrap();
    Ok((proxy, addr))
}

/// Pushes `PAYLOAD` bytes through `addr` and reads them back, concurrently.
async fn transfer_here(addr: SocketAddr, payload: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.split();
    let send = async {
        for chunk in payload.chunks(CHUNK) {
            w.write_all(chunk).await.unwrap();
        }
    };
    let receive = async {
        let mut buffer = vec![0; CHUNK];
        let mut left = payload.len();
        while left > 0 {
            let n = r.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the echo closed early");
            left -= n;
        }
    };
    tokio::join!(send, receive);
}

/// Runs [`transfer_here`] as a task on the runtime's workers.
fn transfer(rt: &Runtime, addr: SocketAddr, payload: &Arc<[u8]>) {
    let payload = Arc::clone(payload);
    rt.block_on(async move {
        tokio::spawn(async move { transfer_here(addr, &payload).await })
            .await
            .unwrap()
    });
}

/// `count` round trips of `MESSAGE` bytes on one connection, as a task on the runtime;
/// returns the time they took.
fn round_trips(rt: &Runtime, addr: SocketAddr, count: u64) -> Duration {
    rt.block_on(async move {
        tokio::spawn(async move {
            let mut stream = connected(addr).await;
            let mut message = [7; MESSAGE];
            round_trip(&mut stream, &mut message).await;
            let started = Instant::now();
            for _ in 0..count {
                round_trip(&mut stream, &mut message).await;
            }
            started.elapsed()
        })
        .await
        .unwrap()
    })
}

async fn round_trip(stream: &mut TcpStream, message: &mut [u8; MESSAGE]) {
    stream.write_all(message).await.unwrap();
    stream.read_exact(message).await.unwrap();
}

async fn connected(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (echo, (_plain, proxied), tuned) = rt.block_on(async {
        let echo = echo_server().await;
        let plain = proxy(echo, None).await.unwrap();
        // `cubic` may be outside net.ipv4.tcp_allowed_congestion_control for an unprivileged
        // user; then that case is left out.
        let tuned = proxy(echo, Some("cubic"))
            .await
            .inspect_err(|e| eprintln!("leaving out proxied_cubic: {e}"))
            .ok();
        (echo, plain, tuned)
    });
    let mut targets = vec![("direct", echo), ("proxied", proxied)];
    if let Some((_, addr)) = &tuned {
        targets.push(("proxied_cubic", *addr));
    }
    let payload: Arc<[u8]> = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("tcp_proxy/throughput");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.sample_size(10);
    for &(name, addr) in &targets {
        group.bench_function(name, |b| b.iter(|| transfer(&rt, addr, &payload)));
    }
    group.finish();

    let mut group = c.benchmark_group("tcp_proxy/round_trip_64B");
    for &(name, addr) in &targets {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| round_trips(&rt, addr, iters))
        });
    }
    group.finish();
    c.final_summary();

    if std::env::args().any(|a| a == "--bench") {
        summary(&rt, &targets, &payload);
    }
}

/// CPU time (user and system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own and keeps no pointer to it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Direct and proxied side by side, interleaved so all see the same machine load. Besides
/// MB/s, prints the CPU time the whole process (client, proxy and echo server) spends per
/// transfer: on a busy machine throughput follows it.
fn summary(rt: &Runtime, targets: &[(&str, SocketAddr)], payload: &Arc<[u8]>) {
    const TRANSFERS: usize = 15;
    const TRIPS: u64 = 2000;
    let mut rates = vec![Vec::new(); targets.len()];
    let mut cpu = vec![Vec::new(); targets.len()];
    for _ in 0..TRANSFERS {
        for (i, (_, addr)) in targets.iter().enumerate() {
            let (started, cpu_before) = (Instant::now(), cpu_time());
            transfer(rt, *addr, payload);
            let elapsed = started.elapsed().as_secs_f64();
            cpu[i].push((cpu_time() - cpu_before).as_secs_f64() * 1e3);
            rates[i].push(PAYLOAD as f64 / elapsed / 1e6);
        }
    }
    let rates: Vec<f64> = rates.into_iter().map(median).collect();
    let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
    let trips: Vec<f64> = targets
        .iter()
        .map(|(_, addr)| {
            round_trips(rt, *addr, 100);
            round_trips(rt, *addr, TRIPS).as_secs_f64() * 1e6 / TRIPS as f64
        })
        .collect();
    println!(
        "tcp-proxy, 16 MiB echoed (median of {TRANSFERS}), 64 B round trips (mean of {TRIPS}):"
    );
    for (i, (name, _)) in targets.iter().enumerate() {
        println!(
            "  {name:>13}: {:>5.0} MB/s ({:.2} of direct; target >= 0.80), CPU {:.1} ms per \
             transfer (whole process), round trip {:.1} us ({:+.1} us)",
            rates[i],
            rates[i] / rates[0],
            cpu[i],
            trips[i],
            trips[i] - trips[0],
        );
    }
}
