//! The `admin` component type: health, readiness, metrics and status over HTTP.

mod descriptors;
mod readiness;
mod routes;
mod server;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use isopace_deploy::{DeployerHandle, Registry};
use isopace_host::{BoxError, Component, Env, ListenAddr, WeakHost, async_trait};
use isopace_observe::MetricsRegistry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::de::{positive_count, positive_duration};
use descriptors::{Descriptors, Reserve};
pub use readiness::{Readiness, ReadinessReport};
use routes::AdminState;
use server::{Acceptor, Server, Timeouts};

// The defaults below bound what clients that connect and then stall can hold. nginx allows
// 60 s for a request's headers (`client_header_timeout`) and closes a keep-alive connection
// after 75 s of quiet (`keepalive_timeout`); Caddy keeps an idle one for 5 min. An admin
// request is a request line and a few headers from a probe, a scraper or the CLI, so 10 s
// is plenty for its headers while freeing a stalled connection six times sooner than nginx.
// Between requests, nginx's 75 s is kept: longer than Prometheus's default 1 min scrape
// interval, so a scraper's kept-alive connection is reused rather than closed just as the
// next scrape is sent on it. 128 connections is far above what probes, scrapers and
// operators open at once, while a flood beyond it costs a 503 and a closed socket each.
// 64 descriptors kept free leaves the rest of the process room to read descriptor files,
// bind a redeployed listener and spawn a child even when admin clients crowd in.

/// The default [`AdminConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`AdminConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The default [`AdminConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// The default [`AdminConfig::fd_reserve`].
pub const DEFAULT_FD_RESERVE: usize = 64;

/// The `config` of an `admin` descriptor.
///
/// ```
/// use isopace_builtins::admin::AdminConfig;
/// use std::time::Duration;
///
/// let config: AdminConfig = serde_json::from_str(r#"{"listen": ":9090", "header_timeout": "2s"}"#)?;
/// assert_eq!(config.listen.to_string(), ":9090");
/// assert_eq!(config.header_timeout, Duration::from_secs(2));
/// assert_eq!(config.max_connections, 128);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where to listen (default `127.0.0.1:9090`: loopback unless asked otherwise):
    /// `host:port`, `:port` (every interface), a host name, or `unix:/path` (a socket with
    /// mode 0600). The socket belongs to the host, so a redeployed endpoint answers on it
    /// without a gap.
    #[serde(default = "default_listen")]
    pub listen: ListenAddr,
    /// When set, `/components` and `/deployments` require `Authorization: Bearer <token>`,
    /// and `/readyz` shows error texts only to a request that carries it.
    #[serde(default)]
    pub token: Option<String>,
    /// How long a client has to send a request's headers, from the connection's accept for
    /// the first request and from its first byte for later ones (default 10 s). A client
    /// silent or slower than that is disconnected.
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "positive_duration"
    )]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may stay quiet between an answer and the next
    /// request (default 75 s).
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "positive_duration"
    )]
    pub idle_timeout: Duration,
    /// Connections open at once (default 128). Beyond it, a new connection is answered
    /// `503 Service Unavailable` with `Retry-After: 1` and closed at once, without reading
    /// its request: a probe sees a clear failure rather than a hang, and the flood costs
    /// nothing that stays open.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "positive_count"
    )]
    pub max_connections: usize,
    /// File descriptors the endpoint leaves to the rest of the process (default 64; 0 turns
    /// it off): while accepting one more connection would leave fewer free below the
    /// process's soft `RLIMIT_NOFILE`, it stops accepting (new connections wait in the
    /// backlog) and says so in its details as `paused`.
    #[serde(default = "default_fd_reserve")]
    pub fd_reserve: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_listen(),
            token: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            fd_reserve: DEFAULT_FD_RESERVE,
        }
    }
}

fn default_listen() -> ListenAddr {
    ListenAddr::Ip(([127, 0, 0, 1], 9090).into())
}

fn default_header_timeout() -> Duration {
    DEFAULT_HEADER_TIMEOUT
}

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_fd_reserve() -> usize {
    DEFAULT_FD_RESERVE
}

/// Serves `/healthz`, `/readyz`, `/metrics`, `/components` and `/deployments` about the
/// host that runs it.
///
/// Everything it reads comes from its env's extensions when it starts: the host (a
/// [`WeakHost`], which every host provides), and, when the daemon provides them, a
/// [`DeployerHandle`] (file statuses for `/deployments`, each descriptor component's file
/// and type in `/components`, the initial deploy for `/readyz`), a [`MetricsRegistry`] (for
/// `/metrics`) and a [`Readiness`] (otherwise it makes one and provides it, so a redeployed
/// endpoint remembers that the host has been ready). Without a deployer, `/deployments`
/// answers 404; without a metrics registry, `/metrics` does.
///
/// It publishes the address it listens on in its details, `{"listen": "127.0.0.1:9090"}`:
/// the actual port when `listen` asked for port 0. While the descriptor reserve keeps it from
/// accepting, the details also carry `paused`, saying why.
///
/// What clients can hold is bounded by the config: `header_timeout`, `idle_timeout`,
/// `max_connections` and `fd_reserve`.
pub struct Admin {
    name: String,
    config: AdminConfig,
    descriptors: Descriptors,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Admin {
    /// An admin endpoint named `name`. It binds nothing until started.
    pub fn new(name: &str, config: AdminConfig) -> Self {
        Admin {
            name: name.to_owned(),
            config,
            descriptors: Descriptors::process(),
            server: None,
        }
    }

    /// The same endpoint, counting descriptors with `descriptors` instead of the process's.
    #[cfg(test)]
    fn with_descriptors(mut self, descriptors: Descriptors) -> Self {
        self.descriptors = descriptors;
        self
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> Value {
        json!({
            "listen": "127.0.0.1:9090",
            "header_timeout": "10s",
            "idle_timeout": "75s",
            "max_connections": 128,
            "fd_reserve": 64
        })
    }
}

#[async_trait]
impl Component for Admin {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let host = env
            .extension::<WeakHost>()
            .ok_or("the admin endpoint needs a host: its env provides no `WeakHost`")?;
        let listen = &self.config.listen;
        let listener = env
            .listen(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?.to_string();
        let acceptor = Acceptor::new(listener)?;
        let deployer = env.extension::<DeployerHandle>();
        let readiness = env.extension::<Readiness>().unwrap_or_else(|| {
            let readiness = Readiness::new(host.clone(), deployer.clone());
            env.insert_extension(readiness.clone());
            readiness
        });
        // Remember the host's first ready moment even when no probe asks at that moment;
        // tracking ends once it has been ready.
        let (tracked, cancelled) = (readiness.clone(), env.cancelled());
        env.spawn(async move {
            tokio::select! {
                () = tracked.track() => {}
                () = cancelled => {}
            }
        });
        let state = Arc::new(AdminState {
            host,
            deployer,
            metrics: env.extension::<MetricsRegistry>(),
            readiness,
            token: self.config.token.clone(),
        });
        let server = Server {
            acceptor,
            router: routes::router(state),
            timeouts: Timeouts {
                header: self.config.header_timeout,
                idle: self.config.idle_timeout,
            },
            max_connections: self.config.max_connections,
            reserve: Reserve::new(self.config.fd_reserve, self.descriptors.clone()),
            env: env.clone(),
            listen: addr.clone(),
        };
        env.set_details(json!({ "listen": addr }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = env.spawn(server.serve(stopped));
        tracing::info!(%addr, "admin endpoint listening");
        self.server = Some((stop, server));
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        // Stop accepting, then let in-flight requests finish; the host bounds how long.
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            server.await?;
        }
        Ok(())
    }
}

/// Registers the `admin` type.
pub(crate) fn register(registry: &mut Registry) -> Result<(), isopace_deploy::Error> {
    registry.register_typed(
        "admin",
        "HTTP endpoint: /healthz, /readyz, /metrics, /components, /deployments",
        Admin::example(),
        |name: &str, config: AdminConfig, _env: &Env| Ok(Admin::new(name, config)),
    )?;
    registry.register_preflight(
        "admin",
        |config: &AdminConfig, context: &isopace_deploy::PreflightContext<'_>| {
            crate::preflight::listen("listen", &config.listen, context)
        },
    )
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("name", &self.name)
            .field("listen", &self.config.listen)
            .field("token", &self.config.token.as_ref().map(|_| "***"))
            .field("header_timeout", &self.config.header_timeout)
            .field("idle_timeout", &self.config.idle_timeout)
            .field("max_connections", &self.config.max_connections)
            .field("fd_reserve", &self.config.fd_reserve)
            .finish()
    }
}
