//! The `heartbeat` component type: logs a message and counts a tick every interval.

use std::time::Duration;

use isopace_deploy::Registry;
use isopace_host::{BoxError, Component, Env, async_trait};
use isopace_observe::attr;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// The `config` of a `heartbeat` descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often to beat (default 1s).
    #[serde(default = "one_second", with = "isopace_config::serde_duration")]
    pub interval: Duration,
    /// What to log on each beat (default "alive").
    #[serde(default = "alive")]
    pub message: String,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn alive() -> String {
    "alive".to_owned()
}

/// Logs `message` and increments `heartbeat_ticks_total{component="<name>"}` each interval.
#[derive(Debug)]
pub struct Heartbeat {
    name: String,
    config: HeartbeatConfig,
    task: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// A heartbeat named `name`.
    pub fn new(name: &str, config: HeartbeatConfig) -> Result<Self, BoxError> {
        if config.interval.is_zero() {
            return Err("`interval` must be greater than zero".into());
        }
        Ok(Heartbeat {
            name: name.to_owned(),
            config,
            task: None,
        })
    }

    /// An example config, for `isopace types`.
    pub(crate) fn example() -> serde_json::Value {
        serde_json::json!({ "interval": "1s", "message": "alive" })
    }
}

#[async_trait]
impl Component for Heartbeat {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        env.observer()
            .describe("heartbeat_ticks_total", "Heartbeats logged, by component.");
        let ticks = env.observer().counter("heartbeat_ticks_total");
        let (name, interval, message) = (
            self.name.clone(),
            self.config.interval,
            self.config.message.clone(),
        );
        self.task = Some(env.spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                tracing::info!("{message}");
                ticks.add(1, &[attr("component", name.as_str())]);
            }
        }));
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }
}

/// Registers the `heartbeat` type.
pub(crate) fn register(registry: &mut Registry) -> Result<(), isopace_deploy::Error> {
    registry.register_typed(
        "heartbeat",
        "logs a message and counts heartbeat_ticks_total every interval",
        Heartbeat::example(),
        |name: &str, config: HeartbeatConfig, _env: &Env| Heartbeat::new(name, config),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn beats_every_interval_and_stops() {
        let metrics = isopace_observe::MetricsRegistry::new();
        let env = Env::new(
            isopace_config::Config::default(),
            std::sync::Arc::new(metrics.clone()),
        );
        let config: HeartbeatConfig =
            serde_json::from_value(serde_json::json!({"interval": "10s"})).unwrap();
        let mut beat = Heartbeat::new("pulse", config).unwrap();
        beat.start(&env).await.unwrap();
        tokio::time::sleep(Duration::from_secs(25)).await;
        beat.stop(&env).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let text = metrics.render();
        assert!(
            text.lines()
                .any(|l| l == r#"heartbeat_ticks_total{component="pulse"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn a_zero_interval_is_refused() {
        let config: HeartbeatConfig =
            serde_json::from_value(serde_json::json!({"interval": "0s"})).unwrap();
        assert!(Heartbeat::new("x", config).is_err());
    }
}
