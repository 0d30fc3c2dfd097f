//! The `admin` component type: health, readiness, metrics and status over HTTP.

mod readiness;
mod routes;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc};

use isopace_deploy::{DeployerHandle, Registry};
use isopace_host::{BoxError, Component, Env, WeakHost, async_trait};
use isopace_observe::MetricsRegistry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

pub use readiness::{Readiness, ReadinessReport};
use routes::AdminState;

/// The `config` of an `admin` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to listen on (default `127.0.0.1:9090`: loopback unless asked otherwise).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// When set, `/components` and `/deployments` require `Authorization: Bearer <token>`,
    /// and `/readyz` shows error texts only to a request that carries it.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
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
/// the actual port when `listen` asked for port 0.
pub struct Admin {
    name: String,
    config: AdminConfig,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

impl Admin {
    /// An admin endpoint named `name`. It binds nothing until started.
    pub fn new(name: &str, config: AdminConfig) -> Self {
        Admin {
            name: name.to_owned(),
            config,
            server: None,
        }
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> Value {
        json!({ "listen": "127.0.0.1:9090" })
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
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.config.listen))?;
        let addr = listener.local_addr()?;
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
        let router = routes::router(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = env.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, "admin endpoint listening");
        env.set_details(json!({ "listen": addr }));
        self.server = Some((stop, server));
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        // Stop accepting, then let in-flight requests finish; the host bounds how long.
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            server.await??;
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
    )
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("name", &self.name)
            .field("listen", &self.config.listen)
            .field("token", &self.config.token.as_ref().map(|_| "***"))
            .finish()
    }
}
