//! The `tcp-proxy` component type: a TCP listener that relays each connection to an upstream.

mod config;
#[cfg(target_os = "linux")]
mod congestion;
mod connect;
#[cfg(target_os = "linux")]
mod inq;
mod relay;
mod serve;
#[cfg(target_os = "linux")]
mod splice;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc};

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, async_trait};
use tokio::{
    sync::{Semaphore, oneshot},
    task::JoinHandle,
    time::Instant,
};

pub use config::TcpProxyConfig;
use config::{check_algorithm_name, check_host_port, check_tcp};
use serve::{Shared, serve};

/// Beyond `drain_timeout`, what cutting off the remaining connections may take.
const DRAIN_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Relays every connection accepted on `listen` to a fresh connection to `upstream`.
///
/// Bytes are copied both ways; when one side finishes sending (EOF), the proxy shuts down
/// the write side of the other, so half-closed protocols work (once both sides have finished,
/// closing the sockets ends the streams). When a side fails instead
/// (resets, say), the proxy resets both, so a peer never takes a cut-off stream for a
/// complete one. A connection that cannot reach the upstream within `connect_timeout` is
/// closed and counted as failed.
///
/// Short exchanges go through a 16 KiB buffer, held only while bytes are in hand, with both
/// directions of a connection in one task: a short connection costs few system calls and no
/// hand-over between threads. A direction whose read fills that buffer is a bulk transfer: on
/// Linux its bytes then move with `splice(2)` through a kernel pipe, so they are not copied
/// through user space, and the upstream-to-client direction moves to a task of its own, so a
/// busy connection can use two cores. Pipes come from a process-wide pool of at most 64 and
/// are held only while bytes are in flight; without a free pipe, on other systems, or when
/// `SIGPIPE` is not ignored as the proxy starts (Rust programs ignore it; a splice into a
/// closed socket would raise it), bulk bytes go through a 64 KiB buffer.
///
/// At `max_connections`, the proxy stops accepting until a connection closes: further
/// clients wait in the kernel's accept backlog (and are refused by the kernel only when
/// that backlog is full). Reaching the limit is logged as a warning, at most once a minute.
///
/// The listening socket belongs to the host ([`Env::listen`]), not to one proxy. Stop stops
/// accepting at once and returns; open connections go on for up to `drain_timeout` as the
/// instance's tasks, which the host waits for (the proxy declares `drain_timeout` and a
/// second's margin as its stop bound, capped by the host's shutdown timeout), and are then
/// reset.
/// In a redeploy (say, to a new upstream) the host retires the old proxy, which leaves its
/// connections draining in the background, and the replacement accepts on the same socket
/// as soon as it starts: connections already open keep their old upstream until they end or
/// the drain deadline passes, new ones go to the new upstream, and one that arrives in the
/// moment between the two versions waits in the backlog; none is refused. An undeploy, the
/// host stopping, or a new version that listens elsewhere closes the socket as soon as the
/// old version stops accepting: later clients are refused, not queued, while open
/// connections drain in the background.
///
/// Metrics go to the env's observer (`env.observer()`), all labelled `component`:
/// - `tcp_proxy_connections_accepted_total`, `tcp_proxy_connections_closed_total`
/// - `tcp_proxy_connections_failed_total{reason="connect"|"timeout"}`: upstream unreachable
/// - `tcp_proxy_connections_active`, a gauge
/// - `tcp_proxy_bytes_total{direction="to_upstream"|"to_client"}`, counted as bytes move
/// - `tcp_proxy_upstream_connect_seconds`: a histogram of upstream connect latency
#[derive(Debug)]
pub struct TcpProxy {
    name: String,
    config: TcpProxyConfig,
    local_addr: Option<SocketAddr>,
    running: Option<Running>,
    /// The accept loop after stop, while it drains the open connections.
    draining: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Running {
    /// Tells the accept loop to stop accepting, with the drain deadline.
    stop: oneshot::Sender<Instant>,
    /// Completes once it no longer accepts.
    closed: oneshot::Receiver<()>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy named `name`. It binds nothing until started.
    pub fn new(name: &str, config: TcpProxyConfig) -> Result<Self, BoxError> {
        check_host_port(&config.upstream)?;
        check_tcp(&config.listen)?;
        if config.max_connections == 0 || config.connect_timeout.is_zero() || config.backlog == 0 {
            return Err(
                "`max_connections`, `connect_timeout` and `backlog` must be greater than zero"
                    .into(),
            );
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
            local_addr: None,
            running: None,
            draining: None,
        })
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
            "backlog": 1024,
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
        let listen = &self.config.listen;
        let listener = env
            .listen_with_backlog(listen, self.config.backlog)
            .await
            .and_then(isopace_host::Listener::into_tcp)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        #[cfg(target_os = "linux")]
        if let Some(name) = &self.config.congestion_control {
            // On the listener first: a name the kernel refuses fails the start, not every
            // connection (and accepted sockets start with the listener's algorithm).
            congestion::set(&listener, name).map_err(|e| congestion::explain(name, &e))?;
        }
        self.local_addr = Some(addr);
        let shared = Arc::new(Shared::new(&self.name, &self.config, env));
        let (stop, stopped) = oneshot::channel();
        let (closing, closed) = oneshot::channel();
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        tracing::info!(listen = %addr, upstream = %self.config.upstream, "tcp-proxy listening");
        let task = env.spawn(serve(
            listener,
            shared,
            limit,
            self.config.max_connections,
            stopped,
            closing,
            env.clone(),
        ));
        // Open connections are counted by the `tcp_proxy_connections_active` gauge; the
        // details show them only while they drain, when the host lists the old version.
        env.set_details(serde_json::json!({ "listen": addr.to_string() }));
        // The drain is this instance's stop: give it `drain_timeout`, not the host's bound.
        env.set_stop_timeout(self.config.drain_timeout + DRAIN_MARGIN);
        self.running = Some(Running { stop, closed, task });
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let _ = running
            .stop
            .send(Instant::now() + self.config.drain_timeout);
        if running.closed.await.is_ok() {
            // The drain goes on as the instance's task; the host waits for it.
            self.draining = Some(running.task);
            return Ok(());
        }
        // The loop ended without closing: it panicked (or was aborted).
        match running.task.await {
            Err(e) if e.is_panic() => Err("the accept loop panicked".into()),
            _ => Ok(()),
        }
    }
}

impl TcpProxy {
    /// Waits until the connections open at stop have finished or been cut off.
    #[cfg(test)]
    pub(crate) async fn drained(&mut self) {
        if let Some(task) = self.draining.take() {
            let _ = task.await;
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

/// Registers the `tcp-proxy` type.
pub(crate) fn register(registry: &mut Registry) -> Result<(), isopace_deploy::Error> {
    registry.register_typed(
        "tcp-proxy",
        "relays each TCP connection on `listen` to a fresh connection to `upstream`",
        TcpProxy::example(),
        |name: &str, config: TcpProxyConfig, _env: &Env| TcpProxy::new(name, config),
    )?;
    registry.register_preflight(
        "tcp-proxy",
        |config: &TcpProxyConfig, context: &isopace_deploy::PreflightContext<'_>| {
            crate::preflight::listen("listen", &config.listen, context)
        },
    )
}
