//! The `tcp-proxy` type inside a host: a redeploy to a new upstream, and a stop that drains
//! open connections within the drain timeout.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
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

    // As the deployer does: build the replacement, undeploy the old one, deploy the new.
    let (new, _) = proxy(addr, two, "5s");
    let undeploy = tokio::spawn({
        let host = host.clone();
        async move { host.undeploy("edge").await }
    });
    let refused = async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), refused)
        .await
        .expect("the old listener closes when its stop begins");
    // Draining: the open connection keeps its old upstream.
    assert_eq!(echo(&mut open, b"still here").await, b"still here");
    assert!(!undeploy.is_finished());
    drop(open);
    undeploy.await.unwrap().unwrap();
    host.deploy(new).await.unwrap();

    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert_eq!(&read_tag(&mut fresh).await, b"two:");
    assert_eq!(echo(&mut fresh, b"hello").await, b"hello");
    drop(fresh);
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
