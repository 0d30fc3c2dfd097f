//! Throughput and added latency of the tcp-proxy versus a direct connection to the same echo
//! server, measured in one run; prints MB/s and the proxied/direct ratio at the end.
//!
//! ```sh
//! cargo bench -p isopace-cli --bench tcp_proxy -- --warm-up-time 1 --measurement-time 3
//! ```

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput};
use isopace_cli::{TcpProxy, TcpProxyConfig};
use isopace_host::{Component, Env};
use isopace_observe::MetricsRegistry;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

/// Bytes pushed through and read back per throughput sample.
const PAYLOAD: usize = 16 << 20;
const CHUNK: usize = 64 << 10;
/// The request and response of a latency round trip.
const MESSAGE: usize = 64;

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buffer = vec![0; CHUNK];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// The proxy with the daemon's own wiring: a metrics registry behind the observer.
async fn proxy(upstream: SocketAddr) -> (TcpProxy, SocketAddr) {
    let config: TcpProxyConfig = serde_json::from_value(serde_json::json!({
        "listen": "127.0.0.1:0", "upstream": upstream
    }))
    .unwrap();
    let metrics = MetricsRegistry::new();
    let env = Env::new(isopace_config::Config::default(), Arc::new(metrics.clone()))
        .for_component("bench");
    let mut proxy = TcpProxy::new("bench", config)
        .unwrap()
        .with_metrics(&metrics);
    proxy.start(&env).await.unwrap();
    let addr = proxy.local_addr().unwrap();
    (proxy, addr)
}

/// Pushes `PAYLOAD` bytes through `addr` and reads them back, concurrently.
async fn transfer(addr: SocketAddr, payload: &[u8]) {
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
    let (echo, (_proxy, proxied)) = rt.block_on(async {
        let echo = echo_server().await;
        (echo, proxy(echo).await)
    });
    let targets = [("direct", echo), ("proxied", proxied)];
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("tcp_proxy/throughput");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.sample_size(10);
    for (name, addr) in targets {
        group.bench_function(name, |b| b.iter(|| rt.block_on(transfer(addr, &payload))));
    }
    group.finish();

    let mut group = c.benchmark_group("tcp_proxy/round_trip_64B");
    for (name, addr) in targets {
        let mut stream = rt.block_on(connected(addr));
        let mut message = [7; MESSAGE];
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(round_trip(&mut stream, &mut message)))
        });
    }
    group.finish();
    c.final_summary();

    if std::env::args().any(|a| a == "--bench") {
        summary(&rt, targets, &payload);
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

/// Direct and proxied side by side, interleaved so both see the same machine load. Besides
/// MB/s, prints the CPU time the whole process (client, proxy and echo server) spends per
/// transfer: on a busy machine throughput follows it.
fn summary(rt: &Runtime, targets: [(&str, SocketAddr); 2], payload: &[u8]) {
    const TRANSFERS: usize = 15;
    const TRIPS: u32 = 2000;
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    for _ in 0..TRANSFERS {
        for (i, (_, addr)) in targets.iter().enumerate() {
            let (started, cpu_before) = (Instant::now(), cpu_time());
            rt.block_on(transfer(*addr, payload));
            let elapsed = started.elapsed().as_secs_f64();
            cpu[i].push((cpu_time() - cpu_before).as_secs_f64() * 1e3);
            rates[i].push(PAYLOAD as f64 / elapsed / 1e6);
        }
    }
    let [direct, proxied] = rates.map(median);
    let [direct_cpu, proxied_cpu] = cpu.map(median);
    let mut trips = [Duration::ZERO; 2];
    for (i, (_, addr)) in targets.iter().enumerate() {
        trips[i] = rt.block_on(async {
            let mut stream = connected(*addr).await;
            let mut message = [7; MESSAGE];
            for _ in 0..100 {
                round_trip(&mut stream, &mut message).await;
            }
            let started = Instant::now();
            for _ in 0..TRIPS {
                round_trip(&mut stream, &mut message).await;
            }
            started.elapsed() / TRIPS
        });
    }
    let [direct_trip, proxied_trip] = trips.map(|t| t.as_secs_f64() * 1e6);
    println!(
        "tcp-proxy throughput (16 MiB echoed, median of {TRANSFERS}): direct {direct:.0} MB/s, \
         proxied {proxied:.0} MB/s, ratio {:.2} (target >= 0.80)",
        proxied / direct
    );
    println!(
        "tcp-proxy CPU per 16 MiB echoed (whole process, median): direct {direct_cpu:.1} ms, \
         proxied {proxied_cpu:.1} ms"
    );
    println!(
        "tcp-proxy round trip ({MESSAGE} B, mean of {TRIPS}): direct {direct_trip:.1} us, \
         proxied {proxied_trip:.1} us, added {:.1} us",
        proxied_trip - direct_trip
    );
}
