//! `ConfigWatcher` as a component, so a host supervises hot configuration reload.

use isopace_config::ConfigWatcher;

use crate::{BoxError, Component, Env};

/// The watcher runs as the component `"config-watcher"`: started with the host, it reloads
/// the config when its file changes; stopped, it leaves no task or thread behind.
#[async_trait::async_trait]
impl Component for ConfigWatcher {
    fn name(&self) -> &str {
        ConfigWatcher::name(self)
    }

    async fn start(&mut self, _env: &Env) -> Result<(), BoxError> {
        ConfigWatcher::start(self).await.map_err(Into::into)
    }

    async fn stop(&mut self, _env: &Env) -> Result<(), BoxError> {
        ConfigWatcher::stop(self).await.map_err(Into::into)
    }
}
