//! The exporters' HTTP client: hyper, driven by a small runtime of its own.
//!
//! The SDK's batch span processor and periodic metric reader export from plain threads of
//! their own, where no tokio runtime is current, while hyper needs one. Borrowing the
//! application's runtime would tie every flush to it: a shutdown that blocks one of its
//! threads while waiting for the last export could wait on itself. So the requests run on
//! one dedicated worker thread, and the SDK's threads only wait for their answers.

use std::{fmt, io, time::Duration};

use async_trait::async_trait;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::{Builder, Runtime};

/// The largest response body read from a collector; an OTLP answer is a few bytes.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The runtime the requests run on; shut down when the exporters no longer need it.
pub(crate) struct ExportRuntime {
    runtime: Option<Runtime>,
}

impl ExportRuntime {
    pub(crate) fn start() -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("isopace-otlp")
            .enable_io()
            .enable_time()
            .build()?;
        Ok(ExportRuntime {
            runtime: Some(runtime),
        })
    }

    /// A client whose requests run on this runtime and give up after `timeout`.
    pub(crate) fn client(&self, timeout: Duration) -> HyperClient {
        let runtime = self
            .runtime
            .as_ref()
            .expect("a client is made before the runtime stops");
        HyperClient {
            inner: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            runtime: runtime.handle().clone(),
            timeout,
        }
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        // Never blocks, so it is safe anywhere, even inside another runtime; a request still
        // in flight is abandoned, which only happens once the exporters gave up on it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for ExportRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportRuntime").finish_non_exhaustive()
    }
}

/// An [`HttpClient`] over hyper's pooled HTTP/1 client (plain `http://` only).
#[derive(Clone)]
pub(crate) struct HyperClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a request to the collector failed without an answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("the export runtime has stopped")]
    Stopped,
}

#[async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, timeout) = (self.inner.clone(), self.timeout);
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?;
            Ok::<_, HttpError>(Response::from_parts(parts, body.to_bytes()))
        };
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(Box::new(SendError::TimedOut(timeout))))
        });
        // The caller is any thread and any executor: a join handle can be awaited anywhere.
        task.await.map_err(|_| Box::new(SendError::Stopped))?
    }
}
