//! The isopace lifecycle core: components started in order, stopped in reverse, deployed and
//! undeployed while running.
#![doc = include_str!("../README.md")]

mod call;
mod component;
mod env;
mod error;
mod host;
mod status;
mod watcher;

pub use async_trait::async_trait;
pub use call::error_chain;
pub use component::{BoxError, Component};
pub use env::Env;
pub use error::{ComponentError, Error, Failure, Phase};
pub use host::{
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, Host, HostBuilder,
    WeakHost,
};
pub use status::{ComponentStatus, State};
