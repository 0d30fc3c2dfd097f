//! The accept loop of one proxy, and what its connection tasks share.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use isopace_host::Env;
use isopace_observe::{Counter, Gauge, Histogram, attr};
use tokio::{
    net::TcpListener,
    sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot},
    task::JoinSet,
    time::Instant,
};
use tracing::Instrument as _;

use super::{TcpProxyConfig, relay::relay};

/// What every connection task of one proxy shares.
pub(super) struct Shared {
    pub(super) component: Arc<str>,
    pub(super) upstream: String,
    pub(super) connect_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) accepted: Counter,
    pub(super) closed: Counter,
    failed: Counter,
    pub(super) bytes: Counter,
    pub(super) connect_seconds: Histogram,
    pub(super) active: Gauge,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(super) congestion_control: Option<Box<str>>,
    /// Whether bulk transfers may use `splice(2)`, checked once when the proxy starts.
    #[cfg(target_os = "linux")]
    pub(super) splice: bool,
    /// When the last connect failure was logged as a warning, to keep an unreachable
    /// upstream from flooding the log (milliseconds since `epoch`).
    last_failure_warning: AtomicU64,
    epoch: Instant,
    /// Set when the drain deadline cuts connections off: they close with a reset.
    pub(super) cut_off: AtomicBool,
    /// The upstream-to-client tasks still alive, so stop can wait until they are gone.
    pub(super) back_tasks: AtomicUsize,
    pub(super) back_tasks_gone: Notify,
}

impl Shared {
    pub(super) fn new(name: &str, config: &TcpProxyConfig, env: &Env) -> Self {
        let observer = env.observer();
        for (name, help) in [
            (
                "tcp_proxy_connections_accepted",
                "Client connections accepted, by component.",
            ),
            (
                "tcp_proxy_connections_closed",
                "Client connections closed, by component.",
            ),
            (
                "tcp_proxy_connections_failed",
                "Connections closed because the upstream was unreachable, by component and reason.",
            ),
            (
                "tcp_proxy_bytes",
                "Bytes relayed, by component and direction (to_upstream, to_client).",
            ),
            (
                "tcp_proxy_upstream_connect_seconds",
                "Time to connect to the upstream, in seconds, by component.",
            ),
            (
                "tcp_proxy_connections_active",
                "Client connections open now, by component.",
            ),
        ] {
            observer.describe(name, help);
        }
        Shared {
            component: Arc::from(name),
            upstream: config.upstream.clone(),
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            congestion_control: config.congestion_control.as_deref().map(Box::from),
            #[cfg(target_os = "linux")]
            splice: super::splice::available(),
            accepted: observer.counter("tcp_proxy_connections_accepted"),
            closed: observer.counter("tcp_proxy_connections_closed"),
            failed: observer.counter("tcp_proxy_connections_failed"),
            bytes: observer.counter("tcp_proxy_bytes"),
            connect_seconds: observer.histogram("tcp_proxy_upstream_connect_seconds"),
            active: observer.gauge("tcp_proxy_connections_active"),
            last_failure_warning: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            cut_off: AtomicBool::new(false),
            back_tasks: AtomicUsize::new(0),
            back_tasks_gone: Notify::new(),
        }
    }

    pub(super) fn connect_failed(
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

/// How often a draining proxy publishes how many connections it still has open.
const DRAIN_REPORT: Duration = Duration::from_millis(250);

/// Sets `TCP_NODELAY` on the listener, which Linux copies to every socket it accepts: one
/// system call per proxy rather than one per connection. Whether it did.
pub(super) fn inherit_nodelay(listener: &TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: the option value is a `c_int` that lives across the call, with its size.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        false
    }
}

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    max_connections: usize,
    mut stopped: oneshot::Receiver<Instant>,
    closing: oneshot::Sender<()>,
    env: Env,
) {
    let client_nodelay = inherit_nodelay(&listener);
    #[cfg(target_os = "linux")]
    super::inq::enable(&listener);
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
                    // In the component's span, as every line a component causes is.
                    let relay = relay(client, peer, Arc::clone(&shared), client_nodelay, permit);
                    connections.spawn(relay.in_current_span());
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
    let _ = closing.send(());
    if connections.is_empty() {
        tracing::info!("tcp-proxy stopped accepting");
        return;
    }
    tracing::info!(
        open = connections.len(),
        "tcp-proxy stopped accepting; letting open connections finish"
    );
    // The connections still open show in the component's status while they drain.
    let listen = env
        .details()
        .and_then(|d| d.get("listen").cloned())
        .unwrap_or_default();
    let publish = |open: usize| {
        env.set_details(serde_json::json!({ "listen": listen, "connections": open }));
    };
    let drained = tokio::time::timeout_at(deadline, async {
        let mut every = tokio::time::interval(DRAIN_REPORT);
        loop {
            tokio::select! {
                done = connections.join_next() => if done.is_none() { break },
                _ = every.tick() => publish(connections.len()),
            }
        }
    })
    .await;
    publish(connections.len());
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
