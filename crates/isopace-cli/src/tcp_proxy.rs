//! The `tcp-proxy` component type: a TCP listener that relays each connection to an upstream.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use isopace_host::{BoxError, Component, Env, async_trait};
use isopace_observe::{Counter, Gauge, Histogram, MetricsRegistry, attr};
use serde::{Deserialize, Deserializer, de};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

/// The `config` of a `tcp-proxy` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxyConfig {
    /// The address to accept connections on.
    pub listen: SocketAddr,
    /// Where to relay each connection: `host:port`, resolved anew for every connection.
    #[serde(deserialize_with = "host_port")]
    pub upstream: String,
    /// How long an upstream connect may take before the client is closed (default 5s).
    #[serde(default = "five_seconds", deserialize_with = "positive_duration")]
    pub connect_timeout: Duration,
    /// Connections relayed at once (default 1024). Beyond it, new connections wait in the
    /// kernel's accept backlog until one closes; they are not refused.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "positive_count"
    )]
    pub max_connections: usize,
    /// Closes a connection when no byte has moved either way for this long (default: never).
    #[serde(default, with = "isopace_config::serde_duration::option")]
    pub idle_timeout: Option<Duration>,
    /// On stop, how long open connections may take to finish before they are closed
    /// (default 10s, under the host's default stop timeout of 15s).
    #[serde(default = "ten_seconds", with = "isopace_config::serde_duration")]
    pub drain_timeout: Duration,
    /// The TCP congestion control algorithm of the proxy's own sockets, towards the client
    /// and towards the upstream, e.g. `"cubic"` (Linux only; default: the system's,
    /// `net.ipv4.tcp_congestion_control`).
    ///
    /// Worth setting where the system default paces every connection in the kernel: BBR
    /// without the `fq` qdisc does so with a timer per socket (always on loopback), and a
    /// proxy holds two sockets per connection. An algorithm outside
    /// `net.ipv4.tcp_allowed_congestion_control` needs `CAP_NET_ADMIN`; start fails when the
    /// algorithm cannot be set.
    #[serde(default, deserialize_with = "algorithm_name")]
    pub congestion_control: Option<String>,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    1024
}

fn positive_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let duration = isopace_config::serde_duration::deserialize(deserializer)?;
    if duration.is_zero() {
        return Err(de::Error::custom("must be greater than zero"));
    }
    Ok(duration)
}

fn positive_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(deserializer)?;
    if n == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    // The semaphore that enforces it has a ceiling far above any useful limit.
    Ok(n.min(Semaphore::MAX_PERMITS))
}

fn host_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    check_host_port(&text).map_err(de::Error::custom)?;
    Ok(text)
}

fn algorithm_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(deserializer)?;
    check_algorithm_name(&name).map_err(de::Error::custom)?;
    Ok(Some(name))
}

/// A congestion control algorithm's name as the kernel takes it: 1 to 15 bytes.
fn check_algorithm_name(name: &str) -> Result<(), String> {
    let valid = (1..16).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a congestion control algorithm name (1 to 15 letters, digits, `_` or `-`)"
        ))
    }
}

fn check_host_port(text: &str) -> Result<(), String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if valid {
        Ok(())
    } else {
        Err(format!("`{text}` is not a `host:port` address"))
    }
}

/// Relays every connection accepted on `listen` to a fresh connection to `upstream`.
///
/// Bytes are copied both ways; when one side finishes sending (EOF), the proxy shuts down
/// the write side of the other, so half-closed protocols work. When a side fails instead
/// (resets, say), the proxy resets both, so a peer never takes a cut-off stream for a
/// complete one. A connection that cannot reach the upstream within `connect_timeout` is
/// closed and counted as failed.
///
/// On Linux the bytes move with `splice(2)` through a kernel pipe, so they are not copied
/// through user space. Pipes come from a process-wide pool of at most 64 and are held only
/// while bytes are in flight; without a free pipe, on other systems, or when `SIGPIPE` is not
/// ignored (Rust programs ignore it; a splice into a closed socket would raise it), bytes go
/// through a 64 KiB buffer. The two directions run as separate tasks, so a busy connection
/// can use two cores.
///
/// At `max_connections`, the proxy stops accepting until a connection closes: further
/// clients wait in the kernel's accept backlog (and are refused by the kernel only when
/// that backlog is full). Reaching the limit is logged as a warning, at most once a minute.
///
/// Stop closes the listener at once, lets open connections finish for up to
/// `drain_timeout`, then resets the rest. In a redeploy (say, to a new upstream) the
/// replacement binds the same address once the old proxy's stop has returned: connections
/// already open keep their old upstream until they end or the drain deadline passes, new
/// ones go to the new upstream, and connections attempted while the old proxy drains are
/// refused. Keep `drain_timeout` short where redeploys must be quick, and under the host's
/// stop timeout.
///
/// Metrics, all labelled `component`:
/// - `tcp_proxy_connections_accepted_total`, `tcp_proxy_connections_closed_total`
/// - `tcp_proxy_connections_failed_total{reason="connect"|"timeout"}`: upstream unreachable
/// - `tcp_proxy_connections_active` (a gauge, with [`with_metrics`](TcpProxy::with_metrics);
///   otherwise accepted minus closed)
/// - `tcp_proxy_bytes_total{direction="to_upstream"|"to_client"}`, counted as bytes move
/// - `tcp_proxy_upstream_connect_seconds`: a histogram of upstream connect latency
#[derive(Debug)]
pub struct TcpProxy {
    name: String,
    config: TcpProxyConfig,
    active: Gauge,
    local_addr: Option<SocketAddr>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy named `name`. It binds nothing until started.
    pub fn new(name: &str, config: TcpProxyConfig) -> Result<Self, BoxError> {
        check_host_port(&config.upstream)?;
        if config.max_connections == 0 || config.connect_timeout.is_zero() {
            return Err("`max_connections` and `connect_timeout` must be greater than zero".into());
        }
        if let Some(name) = &config.congestion_control {
            check_algorithm_name(name)?;
            if !cfg!(target_os = "linux") {
                return Err("`congestion_control` is supported on Linux only".into());
            }
        }
        Ok(TcpProxy {
            name: name.to_owned(),
            config,
            active: Gauge::noop(),
            local_addr: None,
            running: None,
        })
    }

    /// Records `tcp_proxy_connections_active` as a gauge in `metrics` (the observer facade
    /// has no gauges).
    #[must_use]
    pub fn with_metrics(mut self, metrics: &MetricsRegistry) -> Self {
        self.active = metrics.gauge("tcp_proxy_connections_active");
        self
    }

    /// The address the listener is bound to, once started: the actual port when `listen`
    /// asked for port 0.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> serde_json::Value {
        serde_json::json!({
            "listen": "127.0.0.1:7000",
            "upstream": "127.0.0.1:7001",
            "connect_timeout": "5s",
            "max_connections": 1024,
            "idle_timeout": "5m",
            "drain_timeout": "10s"
        })
    }
}

#[async_trait]
impl Component for TcpProxy {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let listener = TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.config.listen))?;
        let addr = listener.local_addr()?;
        #[cfg(target_os = "linux")]
        if let Some(name) = &self.config.congestion_control {
            // On the listener first: a name the kernel refuses fails the start, not every
            // connection (and accepted sockets start with the listener's algorithm).
            congestion::set(&listener, name).map_err(|e| congestion::explain(name, &e))?;
        }
        self.local_addr = Some(addr);
        let shared = Arc::new(Shared::new(
            &self.name,
            &self.config,
            env,
            self.active.clone(),
        ));
        let (stop, stopped) = oneshot::channel();
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        tracing::info!(listen = %addr, upstream = %self.config.upstream, "tcp-proxy listening");
        let task = env.spawn(serve(
            listener,
            shared,
            limit,
            self.config.max_connections,
            stopped,
        ));
        self.running = Some(Running { stop, task });
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running
            .stop
            .send(Instant::now() + self.config.drain_timeout);
        match running.task.await {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => Err("the accept loop panicked".into()),
            Err(_) => Ok(()),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Never stopped: aborting the accept loop drops its listener and connections.
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
    }
}

/// What every connection task of one proxy shares.
struct Shared {
    component: Arc<str>,
    upstream: String,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    accepted: Counter,
    closed: Counter,
    failed: Counter,
    bytes: Counter,
    connect_seconds: Histogram,
    active: Gauge,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    congestion_control: Option<Box<str>>,
    /// When the last connect failure was logged as a warning, to keep an unreachable
    /// upstream from flooding the log (milliseconds since `epoch`).
    last_failure_warning: AtomicU64,
    epoch: Instant,
    /// Set when the drain deadline cuts connections off: they close with a reset.
    cut_off: AtomicBool,
    /// The upstream-to-client tasks still alive, so stop can wait until they are gone.
    back_tasks: AtomicUsize,
    back_tasks_gone: Notify,
}

impl Shared {
    fn new(name: &str, config: &TcpProxyConfig, env: &Env, active: Gauge) -> Self {
        let observer = env.observer();
        Shared {
            component: Arc::from(name),
            upstream: config.upstream.clone(),
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            congestion_control: config.congestion_control.as_deref().map(Box::from),
            accepted: observer.counter("tcp_proxy_connections_accepted"),
            closed: observer.counter("tcp_proxy_connections_closed"),
            failed: observer.counter("tcp_proxy_connections_failed"),
            bytes: observer.counter("tcp_proxy_bytes"),
            connect_seconds: observer.histogram("tcp_proxy_upstream_connect_seconds"),
            active,
            last_failure_warning: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            cut_off: AtomicBool::new(false),
            back_tasks: AtomicUsize::new(0),
            back_tasks_gone: Notify::new(),
        }
    }

    fn connect_failed(
        &self,
        reason: &'static str,
        peer: SocketAddr,
        error: &dyn std::fmt::Display,
    ) {
        self.failed.add(
            1,
            &[attr("component", &*self.component), attr("reason", reason)],
        );
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_failure_warning.load(Ordering::Relaxed);
        let quiet = last == u64::MAX || now.saturating_sub(last) >= 1_000;
        if quiet
            && self
                .last_failure_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%peer, upstream = %self.upstream, %error, "cannot reach the upstream; closing the client connection");
        } else {
            tracing::debug!(%peer, upstream = %self.upstream, %error, "cannot reach the upstream; closing the client connection");
        }
    }
}

const SATURATION_LOG_INTERVAL: Duration = Duration::from_secs(60);

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    max_connections: usize,
    mut stopped: oneshot::Receiver<Instant>,
) {
    let mut connections = JoinSet::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut last_saturation_log: Option<Instant> = None;
    let deadline = loop {
        if permit.is_none() {
            match Arc::clone(&limit).try_acquire_owned() {
                Ok(p) => permit = Some(p),
                Err(_) => {
                    if last_saturation_log.is_none_or(|t| t.elapsed() >= SATURATION_LOG_INTERVAL) {
                        last_saturation_log = Some(Instant::now());
                        tracing::warn!(
                            max_connections,
                            "tcp-proxy at max_connections: new connections wait in the accept backlog"
                        );
                    }
                }
            }
        }
        tokio::select! {
            biased;
            deadline = &mut stopped => break deadline.unwrap_or_else(|_| Instant::now()),
            Some(done) = connections.join_next() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a tcp-proxy connection task panicked");
                }
            }
            p = Arc::clone(&limit).acquire_owned(), if permit.is_none() => {
                permit = p.ok();
            }
            accepted = listener.accept(), if permit.is_some() => match accepted {
                Ok((client, peer)) => {
                    let permit = permit.take();
                    connections.spawn(relay(client, peer, Arc::clone(&shared), permit));
                }
                Err(e) => {
                    // Usually out of file descriptors: pause rather than spin.
                    tracing::error!(error = %e, "tcp-proxy cannot accept; retrying in 100ms");
                    tokio::select! {
                        deadline = &mut stopped => break deadline.unwrap_or_else(|_| Instant::now()),
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    };
    drop(listener);
    if connections.is_empty() {
        tracing::info!("tcp-proxy stopped accepting");
        return;
    }
    tracing::info!(
        open = connections.len(),
        "tcp-proxy stopped accepting; letting open connections finish"
    );
    let drained = tokio::time::timeout_at(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "tcp-proxy drain deadline passed; closing the remaining connections"
        );
        shared.cut_off.store(true, Ordering::Relaxed);
        connections.shutdown().await;
    }
    // An aborted connection's upstream-to-client task ends a moment after it: wait for it,
    // so no socket outlives stop.
    loop {
        let gone = shared.back_tasks_gone.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if shared.back_tasks.load(Ordering::Acquire) == 0 {
            break;
        }
        gone.await;
    }
}

/// Counts a connection as active while it lives, however it ends (even when aborted).
struct Active<'a>(&'a Shared);

impl<'a> Active<'a> {
    fn new(shared: &'a Shared) -> Self {
        let component = [attr("component", &*shared.component)];
        shared.accepted.add(1, &component);
        shared.active.add(1, &component);
        Active(shared)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let component = [attr("component", &*self.0.component)];
        self.0.active.add(-1, &component);
        self.0.closed.add(1, &component);
    }
}

async fn relay(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _active = Active::new(&shared);
    let started = Instant::now();
    let connect = tokio::time::timeout(
        shared.connect_timeout,
        TcpStream::connect(shared.upstream.as_str()),
    );
    let upstream = match connect.await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => return shared.connect_failed("connect", peer, &e),
        Err(_) => {
            let e = format!("no connection within {:?}", shared.connect_timeout);
            return shared.connect_failed("timeout", peer, &e);
        }
    };
    shared.connect_seconds.observe(
        started.elapsed().as_secs_f64(),
        &[attr("component", &*shared.component)],
    );
    // Small request/response exchanges should not wait for Nagle's algorithm at the proxy.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    if let Some(name) = &shared.congestion_control {
        for socket in [&client, &upstream] {
            if let Err(e) = congestion::set(socket, name) {
                tracing::debug!(%peer, error = %e, algorithm = %name, "cannot set the congestion control");
            }
        }
    }

    let activity = Arc::new(Activity::new(shared.idle_timeout.is_some()));
    let both = relay_bytes(client, upstream, &shared, &activity);
    let result = match shared.idle_timeout {
        None => both.await,
        Some(limit) => tokio::select! {
            result = both => result,
            () = activity.idle_for(limit) => {
                tracing::debug!(%peer, idle = ?limit, "closing an idle connection");
                Ok(())
            }
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The last time bytes moved on a connection, for the idle timeout.
struct Activity {
    start: Instant,
    /// Milliseconds since `start`; `None` when no idle timeout is set, to skip the clock.
    last: Option<AtomicU64>,
}

impl Activity {
    fn new(tracked: bool) -> Self {
        Activity {
            start: Instant::now(),
            last: tracked.then(|| AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        if let Some(last) = &self.last {
            last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Completes once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.last.as_ref().map_or(0, |l| l.load(Ordering::Relaxed));
            let deadline = self.start + Duration::from_millis(last) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Choosing a socket's TCP congestion control algorithm (`TCP_CONGESTION`).
#[cfg(target_os = "linux")]
mod congestion {
    use std::{io, os::fd::AsRawFd};

    pub(super) fn set(socket: &impl AsRawFd, name: &str) -> io::Result<()> {
        // SAFETY: the option value is `name`'s bytes, valid for the length passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The algorithm a socket uses.
    #[cfg(test)]
    pub(super) fn get(socket: &impl AsRawFd) -> io::Result<String> {
        let mut name = [0u8; 16];
        let mut len = name.len() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `name` and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                name.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let name = &name[..len as usize];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Ok(String::from_utf8_lossy(&name[..end]).into_owned())
    }

    /// Why the kernel refused `name`, with what it would take.
    pub(super) fn explain(name: &str, error: &io::Error) -> String {
        let file = |which: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/tcp_{which}_congestion_control"))
                .map(|list| list.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned())
        };
        match error.raw_os_error() {
            Some(libc::ENOENT) => format!(
                "congestion_control `{name}`: the kernel has no such algorithm (available: {})",
                file("available")
            ),
            Some(libc::EPERM) => format!(
                "congestion_control `{name}`: not permitted; without CAP_NET_ADMIN only \
                 net.ipv4.tcp_allowed_congestion_control may be chosen ({})",
                file("allowed")
            ),
            _ => format!("congestion_control `{name}`: {error}"),
        }
    }
}

/// Copies both ways until both sides have finished sending, or one fails.
///
/// The upstream-to-client direction runs as a task of its own, so on a multi-threaded
/// runtime the two directions of a busy connection move bytes on two cores at once. It is
/// aborted when this future ends or is dropped (an idle timeout, or the drain deadline).
///
/// When either direction fails (a peer resets, say), both sockets close with a reset rather
/// than a FIN, so neither peer can take a truncated stream for a complete one; the same
/// when the drain deadline cuts the connection off.
async fn relay_bytes(
    client: TcpStream,
    upstream: TcpStream,
    shared: &Arc<Shared>,
    activity: &Arc<Activity>,
) -> io::Result<()> {
    let failed = Arc::new(AtomicBool::new(false));
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let mut back = BackTask {
        from: upstream_read,
        to: Sink::new(client_write, &failed, shared),
        _live: Live::new(shared),
    };
    let tally = Tally::new(shared, "to_client");
    let back_activity = Arc::clone(activity);
    let back = AbortOnDrop(tokio::spawn(async move {
        copy(&mut back.from, &mut back.to, &tally, &back_activity).await
    }));
    let mut from = client_read;
    let mut to = Sink::new(upstream_write, &failed, shared);
    let tally = Tally::new(shared, "to_upstream");
    let forth = copy(&mut from, &mut to, &tally, activity);
    tokio::try_join!(forth, back.join())?;
    Ok(())
}

/// What the upstream-to-client task owns, dropped in field order: the halves first, then the
/// count that lets stop return.
struct BackTask {
    from: OwnedReadHalf,
    to: Sink,
    _live: Live,
}

/// One live upstream-to-client task, counted in [`Shared::back_tasks`].
struct Live(Arc<Shared>);

impl Live {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.back_tasks.fetch_add(1, Ordering::AcqRel);
        Live(Arc::clone(shared))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.back_tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.back_tasks_gone.notify_waiters();
        }
    }
}

/// The write half of one direction. Dropped after the connection failed or was cut off, it
/// closes with a reset (`SO_LINGER` 0, and no FIN): dropping a write half normally sends a
/// FIN, which would tell the peer the stream ended cleanly.
struct Sink {
    half: Option<OwnedWriteHalf>,
    failed: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl Sink {
    fn new(half: OwnedWriteHalf, failed: &Arc<AtomicBool>, shared: &Arc<Shared>) -> Self {
        Sink {
            half: Some(half),
            failed: Arc::clone(failed),
            shared: Arc::clone(shared),
        }
    }

    fn half(&mut self) -> &mut OwnedWriteHalf {
        self.half
            .as_mut()
            .expect("a sink holds its half until dropped")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let Some(half) = self.half.take() else { return };
        if self.failed.load(Ordering::Acquire) || self.shared.cut_off.load(Ordering::Relaxed) {
            reset_on_close(half.as_ref());
            // The socket closes, with the reset, once its read half is gone too.
            half.forget();
        }
    }
}

/// Makes closing `socket` send a reset (`SO_LINGER` with a zero timeout).
fn reset_on_close(socket: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a `linger` that lives across the call, with its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl AbortOnDrop<io::Result<()>> {
    async fn join(mut self) -> io::Result<()> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Per direction; larger buffers measured no faster on loopback, smaller ones slower.
const BUFFER: usize = 64 * 1024;

/// Copies `from` to `to` until EOF, then shuts down the write side of `to`. On an error, marks
/// the connection failed, so both sinks close with a reset.
async fn copy(
    from: &mut OwnedReadHalf,
    to: &mut Sink,
    tally: &Tally,
    activity: &Activity,
) -> io::Result<()> {
    let result = copy_until_eof(from, to.half(), tally, activity).await;
    if result.is_err() {
        to.failed.store(true, Ordering::Release);
    }
    result
}

async fn copy_until_eof(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    tally: &Tally,
    activity: &Activity,
) -> io::Result<()> {
    // Waiting first means a connection that never sends costs no buffer in that direction.
    from.as_ref().readable().await?;
    #[cfg(target_os = "linux")]
    if crate::splice::available() {
        return crate::splice::relay(from.as_ref(), to, |n| {
            activity.touch();
            tally.add(n);
        })
        .await;
    }
    copy_buffered(from, to, tally, activity).await
}

/// [`copy`] through a buffer in user space, where `splice(2)` cannot be used.
async fn copy_buffered<R, W>(
    from: &mut R,
    to: &mut W,
    tally: &Tally,
    activity: &Activity,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0; BUFFER];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..n]).await?;
        activity.touch();
        tally.add(n as u64);
    }
}

/// The byte counter of one direction of a connection.
struct Tally {
    shared: Arc<Shared>,
    direction: &'static str,
}

impl Tally {
    fn new(shared: &Arc<Shared>, direction: &'static str) -> Self {
        Tally {
            shared: Arc::clone(shared),
            direction,
        }
    }

    /// Counts `n` bytes at once, so long-lived connections show up as they go: an update
    /// is a small fraction of the system calls that moved the bytes.
    fn add(&self, n: u64) {
        self.shared.bytes.add(
            n,
            &[
                attr("component", &*self.shared.component),
                attr("direction", self.direction),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::AsyncWriteExt;

    /// Echoes every connection back, shutting down its write side at EOF.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
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
        let mut proxy = TcpProxy::new("edge", config(value).unwrap())
            .unwrap()
            .with_metrics(metrics);
        proxy.start(&env).await.unwrap();
        let addr = proxy.local_addr().unwrap();
        (proxy, env, addr)
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
        proxy.stop(&env).await.unwrap();

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

    #[tokio::test]
    async fn an_unreachable_upstream_closes_the_client_and_counts_a_failure() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let metrics = MetricsRegistry::new();
        let (mut proxy, env, addr) = proxy(dead, json!({}), &metrics).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        assert!(closed_soon(&mut client).await);
        proxy.stop(&env).await.unwrap();
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
        let (mut proxy, env, addr) =
            proxy(upstream, json!({"drain_timeout": "300ms"}), &metrics).await;
        let mut open = TcpStream::connect(addr).await.unwrap();
        assert_eq!(echo_once(&mut open, b"ping").await, b"ping");

        let started = Instant::now();
        let stopping = tokio::spawn(async move {
            proxy.stop(&env).await.unwrap();
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
    async fn stop_returns_as_soon_as_open_connections_finish() {
        let upstream = echo_server().await;
        let metrics = MetricsRegistry::new();
        let (mut proxy, env, addr) = proxy(upstream, json!({}), &metrics).await;
        let mut open = TcpStream::connect(addr).await.unwrap();
        assert_eq!(echo_once(&mut open, b"ping").await, b"ping");
        let started = Instant::now();
        let stopping = tokio::spawn(async move { proxy.stop(&env).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !stopping.is_finished(),
            "stop waits for the open connection"
        );
        drop(open);
        stopping.await.unwrap().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let upstream = echo_server().await;
        let metrics = MetricsRegistry::new();
        let (mut proxy, env, addr) =
            proxy(upstream, json!({"idle_timeout": "100ms"}), &metrics).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            // Traffic keeps it open past the timeout.
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert_eq!(echo_once(&mut client, b"tick").await, b"tick");
        }
        let quiet = Instant::now();
        assert!(closed_soon(&mut client).await);
        assert!(quiet.elapsed() >= Duration::from_millis(90));
        proxy.stop(&env).await.unwrap();
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
        proxy.stop(&env).await.unwrap();
    }

    fn config(value: serde_json::Value) -> Result<TcpProxyConfig, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn defaults_fill_what_the_descriptor_leaves_out() {
        let c =
            config(json!({"listen": "127.0.0.1:7000", "upstream": "db.internal:5432"})).unwrap();
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        let c = config(json!({
            "listen": "[::1]:7000", "upstream": "[::1]:7001",
            "connect_timeout": "250ms", "max_connections": 3, "idle_timeout": 30, "drain_timeout": "1s"
        }))
        .unwrap();
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.max_connections, 3);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let listen = "127.0.0.1:7000";
        for (value, needle) in [
            (
                json!({"listen": listen, "upstream": "no-port"}),
                "host:port",
            ),
            (json!({"listen": listen, "upstream": "host:0"}), "host:port"),
            (json!({"listen": listen, "upstream": ":80"}), "host:port"),
            (
                json!({"listen": listen, "upstream": "h:1", "max_connections": 0}),
                "at least 1",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "connect_timeout": "0s"}),
                "greater than zero",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "upstreams": []}),
                "unknown field",
            ),
            (json!({"listen": "nowhere", "upstream": "h:1"}), "address"),
            (
                json!({"listen": listen, "upstream": "h:1", "congestion_control": ""}),
                "not a congestion control algorithm name",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "congestion_control": "a b"}),
                "not a congestion control algorithm name",
            ),
            (
                json!({"listen": listen, "upstream": "h:1", "congestion_control": "x".repeat(16)}),
                "1 to 15",
            ),
        ] {
            let e = config(value.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{value}: {e}");
        }
        assert!(config(TcpProxy::example()).is_ok());
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
            Gauge::noop(),
        ));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let to_echo = TcpStream::connect(upstream).await.unwrap();
        let (echo_read, echo_write) = to_echo.into_split();
        let (mut source, mut echo_write) = (&data[..], echo_write);
        let tally = Tally::new(&shared, "to_upstream");
        let activity = Activity::new(false);
        let send = copy_buffered(&mut source, &mut echo_write, &tally, &activity);
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
        proxy.stop(&env).await.unwrap();

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
        assert!(crate::splice::available());
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
        proxy.stop(&env).await.unwrap();
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
        proxy.stop(&env).await.unwrap();
    }
}
