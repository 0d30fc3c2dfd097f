//! The `tcp-proxy` component's behaviour: relaying, metrics, limits, draining, resets.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use isopace_host::{Component, Env};
use isopace_observe::MetricsRegistry;
use isopace_testkit::echo_server;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

#[cfg(target_os = "linux")]
use super::congestion;
use super::{
    TcpProxy, TcpProxyConfig,
    relay::{Activity, Tally, copy_buffered, reset_on_close},
    serve::Shared,
};

fn config(value: serde_json::Value) -> Result<TcpProxyConfig, serde_json::Error> {
    serde_json::from_value(value)
}

/// A started proxy to `upstream` on a free loopback port, with `extra` config.
async fn proxy(
    upstream: SocketAddr,
    extra: serde_json::Value,
    metrics: &MetricsRegistry,
) -> (TcpProxy, Env, SocketAddr) {
    let mut value = json!({"listen": "127.0.0.1:0", "upstream": upstream.to_string()});
    value
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let env = Env::new(isopace_config::Config::default(), Arc::new(metrics.clone()))
        .for_component("edge");
    let mut proxy = TcpProxy::new("edge", config(value).unwrap()).unwrap();
    proxy.start(&env).await.unwrap();
    let addr = proxy.local_addr().unwrap();
    (proxy, env, addr)
}

/// Stops the proxy and waits for its drain, as a host would.
async fn stop(proxy: &mut TcpProxy, env: &Env) {
    proxy.stop(env).await.unwrap();
    proxy.drained().await;
}

/// The value of the sample `series` (name and labels, as rendered), if present.
fn sample(metrics: &MetricsRegistry, series: &str) -> Option<f64> {
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn echo_once(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).await.unwrap();
    back
}

/// Reads until EOF or an error; `true` if the peer closed within a second.
async fn closed_soon(stream: &mut TcpStream) -> bool {
    let mut sink = [0; 64];
    let read = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_get_exactly_their_bytes_back() {
    const SIZE: usize = 64 * 1024;
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;
    let clients: Vec<_> = (0..100_u32)
        .map(|i| {
            tokio::spawn(async move {
                let data: Vec<u8> = (0..SIZE as u32)
                    .map(|j| (j.wrapping_mul(7) ^ i.wrapping_mul(131)) as u8)
                    .collect();
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let (mut r, mut w) = stream.split();
                let send = async {
                    w.write_all(&data).await.unwrap();
                    w.shutdown().await.unwrap();
                };
                let mut back = Vec::with_capacity(SIZE);
                let ((), read) = tokio::join!(send, r.read_to_end(&mut back));
                read.unwrap();
                back == data
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert!(client.await.unwrap(), "client {i} got other bytes back");
    }
    stop(&mut proxy, &env).await;

    let total = (100 * SIZE) as f64;
    for (series, want) in [
        (
            r#"tcp_proxy_connections_accepted_total{component="edge"}"#,
            100.0,
        ),
        (
            r#"tcp_proxy_connections_closed_total{component="edge"}"#,
            100.0,
        ),
        (r#"tcp_proxy_connections_active{component="edge"}"#, 0.0),
        (
            r#"tcp_proxy_bytes_total{component="edge",direction="to_upstream"}"#,
            total,
        ),
        (
            r#"tcp_proxy_bytes_total{component="edge",direction="to_client"}"#,
            total,
        ),
        (
            r#"tcp_proxy_upstream_connect_seconds_count{component="edge"}"#,
            100.0,
        ),
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(want),
            "{series}\n{}",
            metrics.render()
        );
    }
}

/// An upstream that takes one connection and hands it to `script`.
async fn scripted_upstream<F, Fut>(script: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(stream).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_finishes_sending_first_still_gets_the_whole_answer() {
    // The upstream answers only once the request has ended, and then closes.
    let (upstream, served) = scripted_upstream(|mut stream| async move {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"the whole request");
        stream.write_all(b"an answer, ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.write_all(&[9; 100_000]).await.unwrap();
    })
    .await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"the whole request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .expect("the answer ends")
        .expect("with a FIN, not a reset");
    assert_eq!(&answer[..11], b"an answer, ");
    assert!(
        answer[11..] == [9; 100_000],
        "the bulk of the answer differs"
    );
    served.await.unwrap();
    stop(&mut proxy, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_finishes_sending_first_still_gets_the_whole_request() {
    // The upstream greets and ends its side at once, then reads the client to the end.
    let (got, request) = tokio::sync::oneshot::channel();
    let (upstream, served) = scripted_upstream(|mut stream| async move {
        stream.write_all(b"hello, then nothing more").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        let _ = got.send(request);
    })
    .await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut greeting = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut greeting))
        .await
        .expect("the upstream's end reaches the client")
        .unwrap();
    assert_eq!(greeting, b"hello, then nothing more");
    // The client may still send: small, then bulk, then its own end.
    let bulk: Vec<u8> = (0..300_000_u32).map(|i| (i % 241) as u8).collect();
    client.write_all(b"still here; ").await.unwrap();
    client.write_all(&bulk).await.unwrap();
    client.shutdown().await.unwrap();
    let request = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the client's end reaches the upstream")
        .unwrap();
    assert_eq!(&request[..12], b"still here; ");
    assert!(request[12..] == bulk, "the bulk of the request differs");
    served.await.unwrap();
    stop(&mut proxy, &env).await;
}

#[tokio::test]
async fn a_refused_upstream_connect_ends_the_client_stream_cleanly() {
    let refusing = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(refusing, json!({}), &metrics).await;
    for _ in 0..3 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut sink = [0; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut sink))
            .await
            .expect("the proxy closes the client");
        assert_eq!(read.expect("a FIN, not a reset"), 0);
    }
    stop(&mut proxy, &env).await;
    let failed = r#"tcp_proxy_connections_failed_total{component="edge",reason="connect"}"#;
    assert_eq!(sample(&metrics, failed), Some(3.0));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_sockets_inherit_nodelay_from_the_listener() {
    // The proxy sets TCP_NODELAY once, on its listener, and relies on Linux copying it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(super::serve::inherit_nodelay(&listener));
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (accepted, _) = accepted.unwrap();
    assert!(accepted.nodelay().unwrap());
    drop(client);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_sockets_inherit_tcp_inq_from_the_listener() {
    use std::os::fd::AsRawFd;

    // The short reads of the relay rely on it to tell a drained socket from one stopped at
    // urgent data.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(super::inq::enable(&listener));
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (accepted, _) = accepted.unwrap();
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the `c_int` we own.
    let rc = unsafe {
        libc::getsockopt(
            accepted.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INQ,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    assert_eq!(value, 1);
    drop(client);
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client_and_counts_a_failure() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = MetricsRegistry::new();
    let logs = isopace_testkit::LogCapture::install();
    let (mut proxy, env, addr) = proxy(dead, json!({}), &metrics).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    assert!(closed_soon(&mut client).await);
    stop(&mut proxy, &env).await;
    // The warning, logged by the connection's task, names the component.
    let warning = logs
        .find("edge", "refused")
        .expect("a warning about the component");
    assert!(warning.message().contains("cannot reach the upstream"));
    let failed = r#"tcp_proxy_connections_failed_total{component="edge",reason="connect"}"#;
    assert_eq!(sample(&metrics, failed), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            r#"tcp_proxy_connections_active{component="edge"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn stop_refuses_new_clients_at_once_and_closes_open_ones_at_the_drain_deadline() {
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({"drain_timeout": "300ms"}), &metrics).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut open, b"ping").await, b"ping");

    let started = Instant::now();
    let stopping = tokio::spawn(async move {
        stop(&mut proxy, &env).await;
        started.elapsed()
    });
    let refused = async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_millis(250), refused)
        .await
        .expect("new connections are refused once stop begins");
    // The open connection still works while it drains.
    assert_eq!(echo_once(&mut open, b"pong").await, b"pong");
    let took = stopping.await.unwrap();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(closed_soon(&mut open).await);
}

#[tokio::test]
async fn stop_returns_at_once_and_the_drain_ends_as_soon_as_open_connections_finish() {
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut open, b"ping").await, b"ping");
    let started = Instant::now();
    proxy.stop(&env).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stop does not wait for the drain"
    );
    // The open connection is still relayed while it drains.
    assert_eq!(echo_once(&mut open, b"pong").await, b"pong");
    drop(open);
    tokio::time::timeout(Duration::from_secs(2), proxy.drained())
        .await
        .expect("the drain ends once the open connection closed");
    assert_eq!(
        sample(
            &metrics,
            r#"tcp_proxy_connections_active{component="edge"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({"idle_timeout": "100ms"}), &metrics).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        // Traffic keeps it open past the timeout.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(echo_once(&mut client, b"tick").await, b"tick");
    }
    let quiet = Instant::now();
    assert!(closed_soon(&mut client).await);
    assert!(quiet.elapsed() >= Duration::from_millis(90));
    stop(&mut proxy, &env).await;
}

#[tokio::test]
async fn at_max_connections_new_clients_wait_until_one_closes() {
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({"max_connections": 1}), &metrics).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut first, b"one").await, b"one");
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"two").await.unwrap();
    let mut back = [0; 3];
    let waited =
        tokio::time::timeout(Duration::from_millis(150), second.read_exact(&mut back)).await;
    assert!(
        waited.is_err(),
        "the second client is not served while the first is open"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(2), second.read_exact(&mut back))
        .await
        .expect("served once the first closed")
        .unwrap();
    assert_eq!(&back, b"two");
    drop(second);
    stop(&mut proxy, &env).await;
}

#[tokio::test]
async fn the_buffered_copy_relays_until_eof_and_counts() {
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let env = Env::new(isopace_config::Config::default(), Arc::new(metrics.clone()));
    let shared = Arc::new(Shared::new(
        "edge",
        &config(json!({"listen": "127.0.0.1:0", "upstream": upstream.to_string()})).unwrap(),
        &env,
    ));
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let to_echo = TcpStream::connect(upstream).await.unwrap();
    let (echo_read, echo_write) = to_echo.into_split();
    let (mut source, mut echo_write) = (&data[..], echo_write);
    let tally = Tally::new(&shared, "to_upstream");
    let activity = Activity::new(false);
    let send = async {
        copy_buffered(&mut source, &mut echo_write, &tally, &activity).await?;
        echo_write.shutdown().await
    };
    let mut back = Vec::new();
    let (sent, received) = tokio::join!(send, async {
        let mut echo_read = echo_read;
        echo_read.read_to_end(&mut back).await
    });
    sent.unwrap();
    received.unwrap();
    assert!(back == data, "the echo returned other bytes");
    assert_eq!(
        sample(
            &metrics,
            r#"tcp_proxy_bytes_total{component="edge",direction="to_upstream"}"#
        ),
        Some(data.len() as f64)
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_chosen_congestion_control_is_used_and_an_unknown_one_fails_the_start() {
    // `reno` is built into every kernel and always allowed without privileges.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    congestion::set(&listener, "reno").unwrap();
    assert_eq!(congestion::get(&listener).unwrap(), "reno");

    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) =
        proxy(upstream, json!({"congestion_control": "reno"}), &metrics).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let data = vec![42; 100_000];
    assert!(echo_once(&mut stream, &data).await == data);
    drop(stream);
    stop(&mut proxy, &env).await;

    let value = json!({
        "listen": "127.0.0.1:0",
        "upstream": upstream.to_string(),
        "congestion_control": "no-such-cc",
    });
    let mut proxy = TcpProxy::new("edge", config(value).unwrap()).unwrap();
    let e = proxy.start(&env).await.unwrap_err().to_string();
    assert!(
        e.contains("congestion_control `no-such-cc`: the kernel has no such algorithm")
            && e.contains("available: ")
            && e.contains("reno"),
        "{e}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_neither_stalls_nor_truncates_a_connection() {
    use std::os::fd::AsRawFd;

    // Rust programs ignore SIGPIPE, so the proxy splices here.
    assert!(super::splice::available());
    let send_urgent = |stream: &TcpStream, byte: u8| {
        // SAFETY: sends one byte from a live local on an open socket.
        let sent = unsafe {
            libc::send(
                stream.as_raw_fd(),
                (&raw const byte).cast(),
                1,
                libc::MSG_OOB,
            )
        };
        assert_eq!(sent, 1, "{}", io::Error::last_os_error());
    };
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;

    // Data after the urgent byte arrives while the connection stays open...
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send_urgent(&stream, b'X');
    stream.write_all(b"world").await.unwrap();
    let mut back = [0; 10];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the bytes after the urgent byte arrive")
        .unwrap();
    assert_eq!(&back, b"helloworld");
    drop(stream);

    // ...and is not cut off when the client closes right after it.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"first").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send_urgent(&stream, b'Y');
    stream.write_all(b"last").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back))
        .await
        .expect("the echo finishes")
        .unwrap();
    assert_eq!(back, b"firstlast");
    drop(stream);

    // ...nor when bytes before and after it arrive together, with nothing after them.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(echo_once(&mut stream, b"open").await, b"open");
    stream.write_all(b"before").await.unwrap();
    send_urgent(&stream, b'Z');
    stream.write_all(b"after").await.unwrap();
    let mut back = [0; 11];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the bytes after the urgent byte arrive without more traffic")
        .unwrap();
    assert_eq!(&back, b"beforeafter");
    drop(stream);
    stop(&mut proxy, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_reaches_the_client_as_a_reset_not_a_clean_end() {
    // An upstream that answers a request with part of a response, then resets. It
    // waits for the request so that the proxy is relaying by then: a reset before the
    // proxy's connect completes is a failed connect instead.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0; 2];
        stream.read_exact(&mut request).await.unwrap();
        stream.write_all(&[7; 100_000]).await.unwrap();
        reset_on_close(&stream);
        drop(stream);
    });
    let metrics = MetricsRegistry::new();
    let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"go").await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
        .await
        .expect("the proxy ends the client's stream");
    let e = read.expect_err("a reset upstream must not look like a complete stream");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    drop(stream);
    stop(&mut proxy, &env).await;
}

/// The backlog of the listening TCP socket on `port` of this process, from the kernel:
/// for a listening socket, `TCP_INFO` reports it in `tcpi_sacked`.
#[cfg(target_os = "linux")]
fn listen_backlog(port: u16) -> u32 {
    use std::os::fd::RawFd;

    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse::<RawFd>()
        else {
            continue;
        };
        // SAFETY: all-zero bytes are a valid `sockaddr_in`.
        let mut local: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into the struct we own; a descriptor
        // that is not a socket (or was closed meanwhile) only fails.
        let named =
            unsafe { libc::getsockname(fd, (&raw mut local).cast::<libc::sockaddr>(), &mut len) };
        if named != 0
            || i32::from(local.sin_family) != libc::AF_INET
            || u16::from_be(local.sin_port) != port
        {
            continue;
        }
        // SAFETY: all-zero bytes are a valid `tcp_info`.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the struct we own.
        let got = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        // 10 is TCP_LISTEN; accepted sockets share the port but not the state.
        if got == 0 && info.tcpi_state == 10 {
            return info.tcpi_sacked;
        }
    }
    panic!("no listening socket on port {port}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_listen_backlog_is_the_configured_one() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let upstream = echo_server().await;
    let metrics = MetricsRegistry::new();
    let (mut small, env, addr) = proxy(upstream, json!({"backlog": 7}), &metrics).await;
    assert_eq!(listen_backlog(addr.port()), 7);
    stop(&mut small, &env).await;
    let (mut default, env, addr) = proxy(upstream, json!({}), &metrics).await;
    assert_eq!(
        listen_backlog(addr.port()),
        isopace_host::DEFAULT_BACKLOG.min(somaxconn)
    );
    stop(&mut default, &env).await;
}
