//! The isopace lifecycle core: components started in order, stopped in reverse, deployed and
//! undeployed while running.
//!
//! A [`Host`] owns a set of [`Component`]s. [`Host::start`] starts them in registration order
//! and [`Host::stop`] stops them in reverse, so dependencies come up before dependents and go
//! down after. [`Host::deploy`] and [`Host::undeploy`] change the set while the host runs, and
//! [`Host::run`] starts, waits for a shutdown signal and stops within a timeout.
//!
//! The host enforces what a production daemon needs: each start and stop is bounded by a
//! timeout, a panic in either is caught and reported with the component's name, a lifecycle
//! call from inside a component's own start or stop returns [`Error::Reentrant`] instead of
//! deadlocking, and every component has an observable [`State`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use isopace_host::{async_trait, BoxError, Component, Env, Host};
//!
//! struct Link {
//!     task: Option<tokio::task::JoinHandle<()>>,
//! }
//!
//! #[async_trait]
//! impl Component for Link {
//!     fn name(&self) -> &str {
//!         "link"
//!     }
//!     async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
//!         // Long-running work goes on its own task; its logs carry the component's name.
//!         self.task = Some(env.spawn(async {
//!             loop {
//!                 tokio::time::sleep(Duration::from_secs(1)).await;
//!                 tracing::debug!("link alive");
//!             }
//!         }));
//!         Ok(())
//!     }
//!     async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
//!         // Tolerates a stop after a failed start: there may be no task.
//!         if let Some(task) = self.task.take() {
//!             task.abort();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), isopace_host::Error> {
//! let host = Host::builder()
//!     .shutdown_timeout(Duration::from_secs(10))
//!     .build();
//! host.register(Link { task: None })?;
//! // In a daemon the shutdown future is a signal; here it completes at once.
//! host.run(async {}).await?;
//! # Ok(())
//! # }
//! ```

mod call;
mod component;
mod env;
mod error;
mod host;
mod status;

pub use async_trait::async_trait;
pub use component::{BoxError, Component};
pub use env::Env;
pub use call::error_chain;
pub use error::{ComponentError, Error, Failure, Phase};
pub use host::{
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, Host, HostBuilder,
    WeakHost,
};
pub use status::{ComponentStatus, State};
