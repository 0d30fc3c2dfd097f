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
}

impl Server {
    fn new(name: &'static str, tag: &'static str, addr: &str) -> Self {
        Server {
            name,
            tag,
            addr: addr.parse().unwrap(),
            bound: Arc::default(),
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
        let (tag, cancelled, conns) = (self.tag, env.cancelled(), env.clone());
        env.spawn(async move {
            tokio::select! {
                () = cancelled => {}
                () = async {
                    // A connection once accepted is answered, even while the version stops.
                    while let Ok((mut stream, _)) = listener.accept().await {
                        conns.spawn(async move {
                            let _ = stream.write_all(tag.as_bytes()).await;
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
    let bound = Arc::clone(&v1.bound);
    host.deploy(v1).await.unwrap();
    let addr = port_of(&bound);

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

#[tokio::test]
async fn a_changed_address_binds_afresh_and_closes_the_old_socket() {
    let host = Host::default();
    host.start().await.unwrap();
    let v1 = Server::new("edge", "v1", "127.0.0.1:0");
    let bound = Arc::clone(&v1.bound);
    host.deploy(v1).await.unwrap();
    let old = port_of(&bound);
    host.retire("edge").await.unwrap();
    let v2 = Server::new("edge", "v2", "[::1]:0");
    let bound2 = Arc::clone(&v2.bound);
    match host.deploy(v2).await {
        Ok(()) => {
            assert_ne!(port_of(&bound2), old);
            assert!(
                TcpStream::connect(old).await.is_err(),
                "the old address closed"
            );
        }
        // A machine without IPv6 loopback: the old socket still closes once nothing runs.
        Err(e) => assert!(e.to_string().contains("edge"), "{e}"),
    }
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
    let addr = format!("unix:{}", path.display());
    let mut server = Server::new("local", "u", "127.0.0.1:0");
    server.addr = addr.parse().unwrap();
    let bound = Arc::clone(&server.bound);
    // This server speaks TCP only, so its start reports the address kind it cannot use...
    let err = host.deploy(server).await.unwrap_err();
    assert!(format!("{err:#}").contains("TCP addresses only"), "{err:#}");
    assert_eq!(*bound.lock(), Some(ListenAddr::Unix(path.clone())));
    // ...but the socket was bound with mode 0600 over the stale file.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

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
    assert!(!path.exists(), "the socket file goes with the host's stop");
}
