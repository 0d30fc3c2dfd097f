//! Listening sockets held by the host: a redeployed version takes over its predecessor's
//! socket without refusing anyone, components never share one, and undeploy closes it.

use std::{sync::Arc, time::Duration};

use isopace_host::{BoxError, Component, Env, Host, ListenAddr, async_trait};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Answers each connection with its version tag, on the address it is given.
struct Server {
    name: &'static str,
    tag: &'static str,
    addr: ListenAddr,
    bound: Arc<Mutex<Option<ListenAddr>>>,
    /// Keeps each connection open, after the tag, until the client closes it.
    hold: bool,
}

impl Server {
    fn new(name: &'static str, tag: &'static str, addr: &str) -> Self {
        Server {
            name,
            tag,
            addr: addr.parse().unwrap(),
            bound: Arc::default(),
            hold: false,
        }
    }
}

#[async_trait]
impl Component for Server {
    fn name(&self) -> &str {
        self.name
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let listener = env.listen(&self.addr).await?;
        *self.bound.lock() = Some(listener.local_addr()?);
        let listener = listener.into_tcp()?;
        let (tag, hold, cancelled, conns) = (self.tag, self.hold, env.cancelled(), env.clone());
        env.spawn(async move {
            tokio::select! {
                () = cancelled => {}
                () = async {
                    // A connection once accepted is answered, even while the version stops.
                    while let Ok((mut stream, _)) = listener.accept().await {
                        conns.spawn(async move {
                            let _ = stream.write_all(tag.as_bytes()).await;
                            if hold {
                                let _ = stream.read(&mut [0; 1]).await;
                            }
                        });
                    }
                } => {}
            }
        });
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Deploys `server` and returns the address it listens on.
async fn deploy_serving(host: &Host, server: Server) -> std::net::SocketAddr {
    let bound = Arc::clone(&server.bound);
    host.deploy(server).await.unwrap();
    port_of(&bound)
}

fn port_of(bound: &Arc<Mutex<Option<ListenAddr>>>) -> std::net::SocketAddr {
    match bound.lock().clone() {
        Some(ListenAddr::Ip(addr)) => addr,
        other => panic!("not bound to an IP address: {other:?}"),
    }
}

async fn read_tag(stream: &mut TcpStream) -> String {
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    text
}

#[tokio::test]
async fn a_redeployed_version_takes_over_the_socket_and_refuses_no_one() {
    let host = Host::builder().stop_timeout(Duration::from_secs(1)).build();
    host.start().await.unwrap();
    let v1 = Server::new("edge", "v1", "127.0.0.1:0");
    let addr = deploy_serving(&host, v1).await;

    // While the old version stops in the background and before the new one starts, a
    // connection is not refused: the old version answers it, or it waits in the backlog
    // of the socket the host kept until the new version does.
    host.retire("edge").await.unwrap();
    let mut waiting = TcpStream::connect(addr).await.expect("not refused");
    // The new version asks for port 0 again and gets the same socket.
    let v2 = Server::new("edge", "v2", "127.0.0.1:0");
    let bound2 = Arc::clone(&v2.bound);
    host.deploy(v2).await.unwrap();
    assert_eq!(port_of(&bound2), addr);
    let answer = read_tag(&mut waiting).await;
    assert!(answer == "v1" || answer == "v2", "answered {answer:?}");
    // Once the old version is gone, the new one answers.
    for _ in 0..1000 {
        if host.status_of("edge").unwrap().draining.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(host.status_of("edge").unwrap().draining.is_empty());
    let mut next = TcpStream::connect(addr).await.expect("not refused");
    assert_eq!(read_tag(&mut next).await, "v2");

    host.undeploy("edge").await.unwrap();
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the socket closed with the undeploy");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn components_asking_for_port_0_get_sockets_of_their_own() {
    let host = Host::default();
    let (a, b) = (
        Server::new("a", "a", "127.0.0.1:0"),
        Server::new("b", "b", "127.0.0.1:0"),
    );
    let (bound_a, bound_b) = (Arc::clone(&a.bound), Arc::clone(&b.bound));
    host.register(a).unwrap();
    host.register(b).unwrap();
    host.start().await.unwrap();
    let (addr_a, addr_b) = (port_of(&bound_a), port_of(&bound_b));
    assert_ne!(addr_a, addr_b);
    assert_eq!(
        read_tag(&mut TcpStream::connect(addr_a).await.unwrap()).await,
        "a"
    );
    assert_eq!(
        read_tag(&mut TcpStream::connect(addr_b).await.unwrap()).await,
        "b"
    );
    host.stop().await.unwrap();
    assert!(
        TcpStream::connect(addr_a).await.is_err(),
        "closed at host stop"
    );
}

// Linux answers on all of 127.0.0.0/8, which gives the test a second loopback address.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_changed_address_binds_afresh_and_closes_the_old_socket() {
    let host = Host::default();
    host.start().await.unwrap();
    let v1 = Server::new("edge", "v1", "127.0.0.1:0");
    let old = deploy_serving(&host, v1).await;
    host.retire("edge").await.unwrap();
    let v2 = Server::new("edge", "v2", "127.0.0.2:0");
    let bound2 = Arc::clone(&v2.bound);
    host.deploy(v2).await.unwrap();
    let new = port_of(&bound2);
    assert_eq!(new.ip().to_string(), "127.0.0.2");
    let mut stream = TcpStream::connect(new).await.unwrap();
    assert_eq!(read_tag(&mut stream).await, "v2");
    assert!(
        TcpStream::connect(old).await.is_err(),
        "the old address closed when the new version started without it"
    );
    host.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_is_private_replaces_a_stale_file_and_goes_with_undeploy() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    // A socket file left behind by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let host = Host::default();
    host.start().await.unwrap();
    let addr: ListenAddr = format!("unix:{}", path.display()).parse().unwrap();
    host.deploy(Holder {
        addr: addr.clone(),
        held: None,
    })
    .await
    .unwrap();
    // Bound with mode 0600 over the stale file.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::os::unix::net::UnixStream::connect(&path).expect("the socket answers");
    host.undeploy("holder").await.unwrap();
    assert!(!path.exists(), "the socket file goes with undeploy");

    // A deploy that fails after binding leaves no socket behind.
    let mut server = Server::new("local", "u", "127.0.0.1:0");
    server.addr = addr;
    let bound = Arc::clone(&server.bound);
    // This server speaks TCP only, so its start reports the address kind it cannot use.
    let err = host.deploy(server).await.unwrap_err();
    assert!(format!("{err:#}").contains("TCP addresses only"), "{err:#}");
    assert_eq!(*bound.lock(), Some(ListenAddr::Unix(path.clone())));
    assert!(!path.exists(), "the failed deploy's socket closed");

    // A path something answers on is never taken over.
    let env = Env::default().for_component("other");
    let live = std::os::unix::net::UnixListener::bind(dir.path().join("live.sock")).unwrap();
    let taken: ListenAddr = format!("unix:{}", dir.path().join("live.sock").display())
        .parse()
        .unwrap();
    let err = env.listen(&taken).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    drop(live);
    host.stop().await.unwrap();
}

/// Holds a listener on its address from start until it is dropped.
#[cfg(unix)]
struct Holder {
    addr: ListenAddr,
    held: Option<isopace_host::Listener>,
}

#[cfg(unix)]
#[async_trait]
impl Component for Holder {
    fn name(&self) -> &str {
        "holder"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        self.held = Some(env.listen(&self.addr).await?);
        Ok(())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        self.held = None;
        Ok(())
    }
}

/// A started host (stop bound 30 s) running `edge`, which holds each connection open until
/// its client closes it; its address, and one connection it has answered.
async fn serving_a_held_connection() -> (Host, std::net::SocketAddr, TcpStream) {
    let host = Host::builder()
        .stop_timeout(Duration::from_secs(30))
        .build();
    host.start().await.unwrap();
    let mut server = Server::new("edge", "v1", "127.0.0.1:0");
    server.hold = true;
    let addr = deploy_serving(&host, server).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_exactly(&mut open, 2).await, "v1");
    (host, addr, open)
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> String {
    let mut bytes = vec![0; n];
    stream.read_exact(&mut bytes).await.unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn undeploy_closes_the_socket_at_once_and_leaves_the_drain_in_the_background() {
    let (host, addr, mut open) = serving_a_held_connection().await;

    // The held connection would keep a drain going for 30 s; undeploy does not wait for it.
    tokio::time::timeout(Duration::from_secs(5), host.undeploy("edge"))
        .await
        .expect("undeploy returns without waiting for the drain")
        .unwrap();
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "a new client is refused, not queued");
    // Nor does the drain hold up the next lifecycle call.
    tokio::time::timeout(
        Duration::from_secs(5),
        host.deploy(Server::new("other", "o", "127.0.0.1:0")),
    )
    .await
    .expect("a deploy goes ahead during the drain")
    .unwrap();

    // The open connection is still served; the host's stop waits for it to end.
    open.write_all(b"x").await.unwrap();
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), host.stop())
        .await
        .expect("the drain ends with its connection")
        .unwrap();
}

#[tokio::test]
async fn a_stopping_host_refuses_new_clients_while_it_drains() {
    let (host, addr, open) = serving_a_held_connection().await;

    let stopping = tokio::spawn({
        let host = host.clone();
        async move { host.stop().await }
    });
    // Wait until the component has stopped listening: its state says so.
    while host.status_of("edge").unwrap().state == isopace_host::State::Running {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(refused, "new clients are refused while the host drains");
    assert!(
        !stopping.is_finished(),
        "the drain still waits for the open connection"
    );
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the stop ends with the connection")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_undeployed_version_keeps_its_metric_series_while_an_earlier_one_drains() {
    let metrics = isopace_observe::MetricsRegistry::new();
    let host = Host::builder()
        .stop_timeout(Duration::from_secs(30))
        .observer(Arc::new(metrics.clone()))
        .build();
    host.start().await.unwrap();
    let mut server = Server::new("edge", "v1", "127.0.0.1:0");
    server.hold = true;
    let bound = Arc::clone(&server.bound);
    host.deploy(server).await.unwrap();
    let mut open = TcpStream::connect(port_of(&bound)).await.unwrap();
    assert_eq!(read_exactly(&mut open, 2).await, "v1");
    host.undeploy("edge").await.unwrap();

    // Deployed and undeployed again while the first version still drains its connection:
    // the name's series stay, since the first version still writes them.
    host.deploy(Server::new("edge", "v2", "127.0.0.1:0"))
        .await
        .unwrap();
    host.undeploy("edge").await.unwrap();
    // Time for the second version's own (short) drain to end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        metrics.render().contains("component=\"edge\""),
        "{}",
        metrics.render()
    );
    // Once the last version has drained, they go.
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), async {
        while metrics.render().contains("component=\"edge\"") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the series went once the drain ended");
    host.stop().await.unwrap();
}

/// Listens on its address, then fails its start.
struct FailsAfterListening(ListenAddr);

#[async_trait]
impl Component for FailsAfterListening {
    fn name(&self) -> &str {
        "edge"
    }
    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        drop(env.listen(&self.0).await?);
        Err("the new version does not start".into())
    }
    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_redeploy_keeps_the_socket_for_a_rollback_until_told_none_will_come() {
    let host = Host::default();
    host.start().await.unwrap();
    let v1 = Server::new("edge", "v1", "127.0.0.1:0");
    let addr = deploy_serving(&host, v1).await;
    host.retire("edge").await.unwrap();
    let failed = host
        .deploy(FailsAfterListening("127.0.0.1:0".parse().unwrap()))
        .await;
    assert!(failed.is_err());
    // Kept for the rollback: a client waits in the backlog rather than being refused.
    let waiting = TcpStream::connect(addr).await;
    assert!(waiting.is_ok(), "the socket is kept for a rollback");
    // No rollback will come: the socket closes.
    assert!(host.close_listeners("edge"));
    assert!(TcpStream::connect(addr).await.is_err(), "closed");
    assert!(!host.close_listeners("edge"), "nothing left to close");
    host.stop().await.unwrap();
}

#[tokio::test]
async fn any_interface_takes_ipv4_and_ipv6_clients() {
    let host = Host::default();
    host.start().await.unwrap();
    let server = Server::new("edge", "v1", ":0");
    let bound = Arc::clone(&server.bound);
    host.deploy(server).await.unwrap();
    let port = port_of(&bound).port();
    let mut v4 = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(read_tag(&mut v4).await, "v1");
    // Where the system has IPv6 loopback, the socket is `[::]` and takes IPv6 clients too.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        assert!(port_of(&bound).is_ipv6(), "{:?}", port_of(&bound));
        let mut v6 = TcpStream::connect(("::1", port)).await.unwrap();
        assert_eq!(read_tag(&mut v6).await, "v1");
    }
    host.stop().await.unwrap();
}
