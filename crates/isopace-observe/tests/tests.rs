//! Integration tests of the observability facade, one module per topic.

mod exposition;
mod fanout;
mod forget;
mod logging;
mod metrics;
mod nop;
mod tracing_observer;
mod util;
