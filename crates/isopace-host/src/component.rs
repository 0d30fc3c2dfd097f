//! The `Component` trait: a named unit with an async start and stop.

use crate::Env;

/// The error a component returns from start or stop: any error that can cross threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A managed unit with a start/stop lifecycle.
///
/// `start` should return promptly, launching long-running work on its own tasks (spawn them
/// with [`Env::spawn`] so their log lines carry the component's name); `stop` must quiesce
/// that work and release resources before it returns.
///
/// The host bounds both calls with its start and stop timeouts: a call that runs past its
/// timeout is abandoned (its future is dropped) and reported as a timeout error. A panic in
/// either call is caught and reported as an error naming the component.
///
/// # Contract
///
/// - **Stop after a failed start.** The host calls `stop` on a component whose `start`
///   failed, timed out or panicked, so it can release whatever it acquired before failing.
///   Implementations must tolerate that: stop what was started, ignore what was not.
/// - **No concurrent calls.** The host serialises lifecycle calls: `start` and `stop` of one
///   component never run at the same time.
/// - **No re-entry.** `start` and `stop` must not call the host's lifecycle methods
///   (`register`, `deploy`, `undeploy`, `start`, `stop`) themselves: such a call returns
///   [`Error::Reentrant`](crate::Error::Reentrant). Background tasks spawned by the component
///   may call them freely once `start` has returned.
///
/// Implementors write plain `async fn`s under the re-exported [`async_trait`] attribute:
///
/// ```
/// use isopace_host::{async_trait, BoxError, Component, Env};
///
/// struct Ticker { name: String }
///
/// #[async_trait]
/// impl Component for Ticker {
///     fn name(&self) -> &str {
///         &self.name
///     }
///     async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
///         tracing::info!(component = env.component(), "ticking");
///         Ok(())
///     }
///     async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Component: Send + 'static {
    /// Identifies the component in logs, metrics and for undeploy. Must not change.
    fn name(&self) -> &str;

    /// Starts the component. `env` is scoped to this component.
    async fn start(&mut self, env: &Env) -> Result<(), BoxError>;

    /// Stops the component, releasing everything `start` acquired.
    async fn stop(&mut self, env: &Env) -> Result<(), BoxError>;
}
