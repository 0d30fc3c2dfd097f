//! The `tcp-proxy` type inside a host: redeploys that keep the listening socket (to a new
//! upstream, and ten in a row under a steady stream of clients), and a stop that drains
//! open connections within the drain timeout.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use isopace_builtins::tcp_proxy::{TcpProxy, TcpProxyConfig};
use isopace_host::{BoxError, Component, Env, Host, async_trait};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Answers each connection with `tag` and then echoes it.
async fn tagged_echo(tag: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                if w.write_all(tag).await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A proxy that tells the test where it listens once the host has started it.
struct Published {
    proxy: TcpProxy,
    addr: Arc<Mutex<Option<SocketAddr>>>,
}

#[async_trait]
impl Component for Published {
    fn name(&self) -> &str {
        self.proxy.name()
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        self.proxy.start(env).await?;
        *self.addr.lock().unwrap() = self.proxy.local_addr();
        Ok(())
    }
    async fn stop(&mut self, env: &Env) -> Result<(), BoxError> {
        self.proxy.stop(env).await
    }
}

fn proxy(
    listen: SocketAddr,
    upstream: SocketAddr,
    drain: &str,
) -> (Published, Arc<Mutex<Option<SocketAddr>>>) {
    let config: TcpProxyConfig = serde_json::from_value(serde_json::json!({
        "listen": listen, "upstream": upstream, "drain_timeout": drain
    }))
    .unwrap();
    let addr = Arc::new(Mutex::new(None));
    let published = Published {
        proxy: TcpProxy::new("edge", config).unwrap(),
        addr: Arc::clone(&addr),
    };
    (published, addr)
}

async fn read_tag(stream: &mut TcpStream) -> [u8; 4] {
    let mut tag = [0; 4];
    stream.read_exact(&mut tag).await.unwrap();
    tag
}

async fn echo(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_sends_new_connections_to_the_new_upstream() {
    let one = tagged_echo(b"one:").await;
    let two = tagged_echo(b"two:").await;
    let host = Host::builder().build();
    host.start().await.unwrap();
    let (old, addr) = proxy("127.0.0.1:0".parse().unwrap(), one, "5s");
    host.deploy(old).await.unwrap();
    let addr = addr.lock().unwrap().unwrap();
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(&read_tag(&mut open).await, b"one:");

    // As the deployer does: build the replacement, retire the old one, deploy the new. The
    // host keys sockets by component and written address: the new version asks for the same
    // `127.0.0.1:0` and gets the socket bound to the port the first one was given.
    let (new, new_addr) = proxy("127.0.0.1:0".parse().unwrap(), two, "5s");
    host.retire("edge").await.unwrap();

    // Between the two versions nothing accepts, but the host keeps the socket: a client
    // waits in the backlog instead of being refused, and the new version serves it.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    host.deploy(new).await.unwrap();
    assert_eq!(*new_addr.lock().unwrap(), Some(addr));
    assert_eq!(&read_tag(&mut waiting).await, b"two:");
    assert_eq!(echo(&mut waiting, b"hello").await, b"hello");
    // Meanwhile the old version drains in the background: the connection open before the
    // redeploy keeps its old upstream, and the new version's status shows the drain.
    let draining = host.status_of("edge").unwrap().draining;
    assert_eq!(draining.len(), 1);
    // Its deadline is the proxy's `drain_timeout` (and a second's margin), not the host's
    // 15 s stop bound.
    let until = draining[0]
        .until
        .duration_since(std::time::SystemTime::now());
    assert!(
        until
            .as_ref()
            .is_ok_and(|left| *left <= Duration::from_secs(6)),
        "{until:?}"
    );
    // A serving proxy publishes no connection count (the gauge has it).
    assert_eq!(
        host.status_of("edge").unwrap().details,
        Some(serde_json::json!({ "listen": addr.to_string() }))
    );
    // With how many connections it still has open, once it has reported them.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let status = host.status_of("edge").unwrap();
            let open = status
                .draining
                .first()
                .and_then(|d| d.details.as_ref()?.get("connections")?.as_u64());
            if open == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the draining version reports its one open connection");
    assert_eq!(echo(&mut open, b"still here").await, b"still here");
    drop(open);
    let mut changes = host.changed();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !host.status_of("edge").unwrap().draining.is_empty() {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the drain ends once the old connection closed");
    drop(waiting);
    host.stop().await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the socket closes with the host"
    );
}

/// What the steady clients of the redeploy test saw.
#[derive(Default)]
struct Seen {
    exchanges: AtomicUsize,
    tags: Mutex<Vec<[u8; 4]>>,
    failures: Mutex<Vec<String>>,
}

/// Connects, reads the upstream's tag, sends a numbered message and checks the echo; over
/// and over, a few milliseconds apart, until `done`.
async fn steady_client(addr: SocketAddr, id: usize, seen: Arc<Seen>, done: Arc<AtomicBool>) {
    let mut n = 0_usize;
    while !done.load(Ordering::Relaxed) {
        n += 1;
        let message = format!("client {id} message {n} {}", "x".repeat(n % 512));
        let exchange = async {
            let mut stream = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut tag = [0; 4];
            stream
                .read_exact(&mut tag)
                .await
                .map_err(|e| format!("tag: {e}"))?;
            stream
                .write_all(message.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            stream
                .shutdown()
                .await
                .map_err(|e| format!("shutdown: {e}"))?;
            let mut back = Vec::new();
            stream
                .read_to_end(&mut back)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if back != message.as_bytes() {
                return Err(format!(
                    "{} bytes came back for {}",
                    back.len(),
                    message.len()
                ));
            }
            Ok::<_, String>(tag)
        };
        match tokio::time::timeout(Duration::from_secs(5), exchange).await {
            Ok(Ok(tag)) => {
                seen.tags.lock().unwrap().push(tag);
                seen.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => seen.failures.lock().unwrap().push(e),
            Err(_) => seen.failures.lock().unwrap().push("timed out".to_owned()),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_redeploys_refuse_and_reset_no_connection_of_a_steady_client() {
    let upstreams = [tagged_echo(b"one:").await, tagged_echo(b"two:").await];
    let host = Host::builder().build();
    host.start().await.unwrap();
    let (first, addr) = proxy("127.0.0.1:0".parse().unwrap(), upstreams[0], "5s");
    host.deploy(first).await.unwrap();
    let addr = addr.lock().unwrap().unwrap();
    // A connection held open through every redeploy: the first version drains it.
    let mut held = TcpStream::connect(addr).await.unwrap();
    assert_eq!(&read_tag(&mut held).await, b"one:");

    let (seen, done) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..2)
        .map(|id| {
            tokio::spawn(steady_client(
                addr,
                id,
                Arc::clone(&seen),
                Arc::clone(&done),
            ))
        })
        .collect();
    let started = Instant::now();
    for round in 1..=10 {
        // Each version serves a few exchanges before the next redeploy.
        let before = seen.exchanges.load(Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), async {
            while seen.exchanges.load(Ordering::Relaxed) < before + 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the clients keep getting through");
        let (next, next_addr) = proxy("127.0.0.1:0".parse().unwrap(), upstreams[round % 2], "5s");
        host.retire("edge").await.unwrap();
        host.deploy(next).await.unwrap();
        assert_eq!(*next_addr.lock().unwrap(), Some(addr), "the same socket");
    }
    done.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let took = started.elapsed();
    let failures = seen.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed exchanges: {failures:?}");
    let tags = seen.tags.lock().unwrap().clone();
    assert!(tags.len() >= 30, "{} exchanges", tags.len());
    for tag in [b"one:", b"two:"] {
        assert!(tags.contains(tag), "no exchange reached {tag:?}");
    }
    assert!(took < Duration::from_secs(5), "ten redeploys took {took:?}");
    // The held connection still works, through its first upstream, while the first version
    // drains it in the background.
    assert_eq!(echo(&mut held, b"still here").await, b"still here");
    assert!(!host.status_of("edge").unwrap().draining.is_empty());
    drop(held);
    let mut changes = host.changed();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !host.status_of("edge").unwrap().draining.is_empty() {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("every earlier version has drained");
    host.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_stops_a_proxy_with_an_open_connection_within_the_drain_timeout() {
    let upstream = tagged_echo(b"one:").await;
    let host = Host::builder().stop_timeout(Duration::from_secs(5)).build();
    let (edge, addr) = proxy("127.0.0.1:0".parse().unwrap(), upstream, "200ms");
    host.register(edge).unwrap();
    host.start().await.unwrap();
    let addr = addr.lock().unwrap().unwrap();
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(&read_tag(&mut open).await, b"one:");

    let started = Instant::now();
    host.stop().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), open.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the open connection is closed at the deadline"
    );
}
