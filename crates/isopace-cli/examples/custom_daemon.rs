//! A team's own daemon: the `isopace` commands under its own name, plus a component type of
//! its own that reads a value the daemon provides.
//!
//! ```sh
//! cargo run -p isopace-cli --example custom_daemon -- --version
//! cargo run -p isopace-cli --example custom_daemon -- types
//! GREETER_DEPLOY=examples/deploy cargo run -p isopace-cli --example custom_daemon -- run
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

/// Whom greeters greet: provided by the daemon to every component through its env.
#[derive(Debug, Clone)]
struct Audience(String);

struct Greeter {
    name: String,
    config: GreeterConfig,
}

#[async_trait]
impl Component for Greeter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&mut self, env: &Env) -> Result<(), BoxError> {
        let Audience(audience) = env
            .extension::<Audience>()
            .ok_or("the greeter needs an `Audience` from the daemon")?;
        let (greeting, every) = (self.config.greeting.clone(), self.config.every);
        let stopping = env.cancellation();
        // A task of the component's: the host cancels it after `stop`, and a panic in it
        // would be the component's failure.
        env.spawn(async move {
            loop {
                tracing::info!("{greeting}, {audience}");
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stopping.cancelled() => break,
                }
            }
        });
        Ok(())
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let mut app = App::new()
        .name("greeter")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Greets on a schedule, from descriptor files.")
        // Flags read GREETER_DEPLOY, GREETER_LOG_LEVEL, ...; config overrides GREETER_*.
        .env_prefix("GREETER")
        .extension(Audience("world".to_owned()));
    app.registry_mut()
        .register_typed(
            "greeter",
            "logs a greeting every so often",
            serde_json::json!({ "greeting": "hello", "every": "1m" }),
            |name: &str, config: GreeterConfig, _env: &Env| {
                Ok(Greeter {
                    name: name.to_owned(),
                    config,
                })
            },
        )
        .expect("`greeter` is not a built-in type name");
    app.main()
}
