//! The `admin` component type: health, readiness, metrics and status over HTTP.

mod routes;

use std::{net::SocketAddr, sync::Arc};

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, async_trait};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{Runtime, RuntimeHandle};
use routes::AdminState;

/// The `config` of an `admin` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to listen on (default `127.0.0.1:9090`: loopback unless asked otherwise).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// When set, `/components` and `/deployments` require `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Serves `/healthz`, `/readyz`, `/metrics`, `/components` and `/deployments`.
pub struct Admin {
    name: String,
    config: AdminConfig,
    runtime: Runtime,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

impl Admin {
    /// An admin endpoint named `name` over the daemon's runtime.
    pub fn new(name: &str, config: AdminConfig, runtime: Runtime) -> Self {
        Admin {
            name: name.to_owned(),
            config,
            runtime,
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
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.config.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AdminState {
            runtime: self.runtime.clone(),
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

/// Registers the `admin` type. Its factory needs the [`Runtime`], so it builds components
/// only once `runtime` is filled.
pub(crate) fn register(
    registry: &mut Registry,
    runtime: &RuntimeHandle,
) -> Result<(), isopace_deploy::Error> {
    let handle = runtime.clone();
    registry.register_typed(
        "admin",
        "HTTP endpoint: /healthz, /readyz, /metrics, /components, /deployments",
        Admin::example(),
        move |name: &str, config: AdminConfig, _env: &Env| {
            let runtime = handle
                .get()
                .ok_or("the admin component runs only inside `isopace run`")?;
            Ok(Admin::new(name, config, runtime.clone()))
        },
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
