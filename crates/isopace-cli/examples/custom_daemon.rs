//! A team's own daemon: the `isopace` commands plus a component type of its own.
//!
//! ```sh
//! cargo run -p isopace-cli --example custom_daemon -- types
//! cargo run -p isopace-cli --example custom_daemon -- run --deploy examples/deploy
//! ```

use std::time::Duration;

use isopace_cli::App;
use isopace_host::{BoxError, Component, Env, async_trait};
use serde::Deserialize;

/// The `greeter` type's config: what to say, and how often.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GreeterConfig {
    greeting: String,
    #[serde(default = "every_minute", with = "isopace_config::serde_duration")]
    every: Duration,
}

fn every_minute() -> Duration {
    Duration::from_secs(60)
}

struct Greeter {
    name: String,
    config: GreeterConfig,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[async_trait]
impl Component for Greeter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let (greeting, every) = (self.config.greeting.clone(), self.config.every);
        self.task = Some(env.spawn(async move {
            loop {
                tracing::info!("{greeting}");
                tokio::time::sleep(every).await;
            }
        }));
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let mut app = App::new();
    app.registry_mut()
        .register_typed(
            "greeter",
            "logs a greeting every so often",
            serde_json::json!({ "greeting": "hello", "every": "1m" }),
            |name: &str, config: GreeterConfig, _env: &Env| {
                Ok(Greeter {
                    name: name.to_owned(),
                    config,
                    task: None,
                })
            },
        )
        .expect("`greeter` is not a built-in type name");
    app.main()
}
