//! OTLP/HTTP export configured by the standard `OTEL_*` variables (the `otlp` feature).
//!
//! [`Otlp::from_env`] reads the variables, builds the OpenTelemetry SDK's tracer and meter
//! providers with OTLP/HTTP (protobuf) exporters, and hands out an [`OtelObserver`] over
//! them; [`Otlp::shutdown`] (or dropping the [`Otlp`]) flushes what is buffered.
//!
//! # When export is on
//!
//! A signal (traces, metrics) is exported when `OTEL_EXPORTER_OTLP_ENDPOINT` or its own
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is set, unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` is `none`.
//! With neither signal on, [`Otlp::from_env`] returns `Ok(None)` and builds nothing.
//!
//! # Variables
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the collector's base URL; `/v1/traces` and `/v1/metrics` are appended |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `..._METRICS_ENDPOINT` | one signal's full URL, used as given |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `..._TRACES_HEADERS`, `..._METRICS_HEADERS` | `key=value,…` request headers, values %-encoded; a signal's own variable replaces the general one |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `..._TRACES_TIMEOUT`, `..._METRICS_TIMEOUT` | one export's time limit in milliseconds (default 10 000) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `..._TRACES_PROTOCOL`, `..._METRICS_PROTOCOL` | `http/protobuf`, the only one built in |
//! | `OTEL_SERVICE_NAME` | the `service.name` resource attribute; else `service.name` from `OTEL_RESOURCE_ATTRIBUTES`; else the default passed in |
//! | `OTEL_RESOURCE_ATTRIBUTES` | more resource attributes, `key=value,…` |
//! | `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*` | the batch span processor: how often spans are sent (ms, default 5 000) and batch sizes |
//! | `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_METRIC_EXPORT_TIMEOUT` | how often metrics are sent (ms, default 60 000) and the limit on one export |
//! | `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER` | turn everything, or one signal (`none`), off |
//!
//! A value that cannot be used is an [`Error::Variable`] naming the variable; the message
//! never quotes the value, since headers carry credentials. Endpoints are plain `http://`:
//! there is no TLS in this build, so send to a collector (an agent or sidecar) that forwards.
//!
//! # Threads
//!
//! The SDK exports from two threads of its own (the batch span processor and the periodic
//! metric reader), and the requests run on a third, `isopace-otlp`, with a small tokio
//! runtime of its own. Nothing runs on the application's runtime, so
//! [`Otlp::from_env`] and [`Otlp::shutdown`] can be called from anywhere; `shutdown` blocks
//! until the last export is answered or timed out.

mod client;
mod settings;

use std::{fmt, io, sync::Arc};

use isopace_observe::{FanoutObserver, Observer};

use opentelemetry::{
    global::BoxedTracer,
    metrics::{Meter, MeterProvider, noop::NoopMeterProvider},
    trace::{TracerProvider, noop::NoopTracerProvider},
};
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::{
    Resource, error::OTelSdkError, metrics::SdkMeterProvider, trace::SdkTracerProvider,
};

use crate::{OtelObserver, observer::scope};
use client::ExportRuntime;
use settings::{METRICS, TRACES};

/// The observer to hand a host: `observer` alone when the `OTEL_*` variables ask for no
/// export, or `observer` and an [`OtelObserver`] exporting over OTLP, with the [`Otlp`] to
/// keep until shutdown (see [`Otlp::from_env`]). Logs which it is: one debug line when
/// export is off, one info line when it is on.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use isopace_observe::TracingObserver;
///
/// # fn main() -> Result<(), isopace_otel::otlp::Error> {
/// let (observer, otlp) = isopace_otel::otlp::from_env("my-daemon", TracingObserver)?;
/// let observer: Arc<dyn isopace_observe::Observer> = Arc::new(observer);
/// // ... run the host with `observer` ...
/// drop(otlp); // flushes the last spans and metrics
/// # Ok(())
/// # }
/// ```
pub fn from_env(
    default_service_name: &str,
    observer: impl Observer + 'static,
) -> Result<(FanoutObserver, Option<Otlp>), Error> {
    let mut observers: Vec<Arc<dyn Observer>> = vec![Arc::new(observer)];
    let otlp = Otlp::from_env(default_service_name)?;
    match &otlp {
        Some(otlp) => {
            tracing::info!(
                service = otlp.service_name(),
                traces = otlp.exports_traces(),
                metrics = otlp.exports_metrics(),
                "exporting over OTLP"
            );
            observers.push(Arc::new(otlp.observer()));
        }
        None => tracing::debug!(
            "no OTLP export: no OTEL_EXPORTER_OTLP_*ENDPOINT variable is set, or \
             OTEL_SDK_DISABLED=true"
        ),
    }
    Ok((FanoutObserver::new(observers), otlp))
}

/// Why OTLP export could not be set up, or did not shut down cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A variable's value cannot be used. The message says what is wrong and never quotes
    /// the value.
    #[error("{name}: {problem}")]
    Variable {
        /// The variable, e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`.
        name: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// The OTLP exporter of a signal rejected its configuration.
    #[error("cannot build the OTLP {signal} exporter")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The exporter's error.
        #[source]
        source: ExporterBuildError,
    },
    /// The thread the requests run on could not be started.
    #[error("cannot start the OTLP export thread")]
    Runtime(#[source] io::Error),
    /// Flushing or shutting down a signal's export failed (e.g. the collector did not
    /// answer in time): what was buffered may be lost.
    #[error("the last OTLP {signal} export failed")]
    Flush {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        #[source]
        source: OTelSdkError,
    },
}

impl Error {
    fn variable(name: &'static str, problem: &str) -> Self {
        Error::Variable {
            name,
            problem: problem.to_owned(),
        }
    }
}

/// OTLP export of traces and metrics: the SDK providers, their exporters, and an
/// [`OtelObserver`] that records into them.
///
/// Dropping it shuts export down like [`Otlp::shutdown`], ignoring errors; call `shutdown`
/// to learn whether the last export got through. Once it is shut down, the observers it
/// handed out record nothing.
#[must_use = "dropping it shuts export down"]
pub struct Otlp {
    observer: OtelObserver,
    service_name: String,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    /// Declared last: the providers' last exports need it, so it goes after them.
    runtime: ExportRuntime,
}

impl Otlp {
    /// Sets up export as the process's `OTEL_*` variables say (see the [module
    /// docs](self)), with `default_service_name` as `service.name` unless a variable sets
    /// one. `Ok(None)` when nothing is to be exported; nothing is built then.
    pub fn from_env(default_service_name: &str) -> Result<Option<Otlp>, Error> {
        Self::from_vars(default_service_name, |name| std::env::var(name))
    }

    /// [`Otlp::from_env`] with the `OTEL_*` variables read through `var` (shaped like
    /// [`std::env::var`]) instead of the process environment.
    ///
    /// The SDK and the exporter also read some variables by themselves, from the process
    /// environment whatever `var` says: `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_*`, the attributes
    /// other than `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_EXPORTER_OTLP_*_COMPRESSION`, and the `OTEL_EXPORTER_OTLP_*HEADERS`, which they
    /// add to the headers `var` gave.
    pub fn from_vars(
        default_service_name: &str,
        var: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Option<Otlp>, Error> {
        let Some(settings) = settings::read(default_service_name, &var)? else {
            return Ok(None);
        };
        let runtime = ExportRuntime::start().map_err(Error::Runtime)?;
        // The SDK's detectors (OTEL_RESOURCE_ATTRIBUTES, telemetry.sdk.*), then the name.
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let tracer_provider = match &settings.traces {
            Some(export) => {
                let exporter = SpanExporter::builder()
                    .with_http()
                    .with_http_client(runtime.client(export.timeout))
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(&export.endpoint)
                    .with_headers(export.headers.clone())
                    .with_timeout(export.timeout)
                    .build()
                    .map_err(|source| exporter_error(&TRACES, source))?;
                Some(
                    SdkTracerProvider::builder()
                        .with_resource(resource.clone())
                        .with_batch_exporter(exporter)
                        .build(),
                )
            }
            None => None,
        };
        let meter_provider = match &settings.metrics {
            Some(export) => {
                let exporter = MetricExporter::builder()
                    .with_http()
                    .with_http_client(runtime.client(export.timeout))
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(&export.endpoint)
                    .with_headers(export.headers.clone())
                    .with_timeout(export.timeout)
                    .build()
                    .map_err(|source| exporter_error(&METRICS, source))?;
                Some(
                    SdkMeterProvider::builder()
                        .with_resource(resource)
                        .with_periodic_exporter(exporter)
                        .build(),
                )
            }
            None => None,
        };
        let tracer = match &tracer_provider {
            Some(provider) => BoxedTracer::new(Box::new(provider.tracer_with_scope(scope()))),
            None => BoxedTracer::new(Box::new(
                NoopTracerProvider::new().tracer_with_scope(scope()),
            )),
        };
        let meter: Meter = match &meter_provider {
            Some(provider) => provider.meter_with_scope(scope()),
            None => NoopMeterProvider::new().meter_with_scope(scope()),
        };
        Ok(Some(Otlp {
            observer: OtelObserver::new(tracer, meter),
            service_name: settings.service_name,
            tracer_provider,
            meter_provider,
            runtime,
        }))
    }

    /// The observer recording into these providers; clones share its instruments.
    pub fn observer(&self) -> OtelObserver {
        self.observer.clone()
    }

    /// The `service.name` the telemetry carries.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Whether metrics are exported.
    pub fn exports_metrics(&self) -> bool {
        self.meter_provider.is_some()
    }

    /// Sends what is buffered now, and waits for the answers.
    pub fn force_flush(&self) -> Result<(), Error> {
        let traces = self.tracer_provider.as_ref().map(|p| p.force_flush());
        let metrics = self.meter_provider.as_ref().map(|p| p.force_flush());
        first_error(traces, metrics)
    }

    /// Flushes what is buffered, waits for the answers (each export within its timeout), and
    /// stops the exporters and their threads. Both signals are shut down even if the first
    /// fails; the error is the first failure.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        let traces = self.tracer_provider.take().map(|p| p.shutdown());
        let metrics = self.meter_provider.take().map(|p| p.shutdown());
        first_error(traces, metrics)
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

impl fmt::Debug for Otlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otlp")
            .field("service_name", &self.service_name)
            .field("traces", &self.exports_traces())
            .field("metrics", &self.exports_metrics())
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

fn exporter_error(signal: &settings::Signal, source: ExporterBuildError) -> Error {
    Error::Exporter {
        signal: signal.name,
        source,
    }
}

fn first_error(
    traces: Option<Result<(), OTelSdkError>>,
    metrics: Option<Result<(), OTelSdkError>>,
) -> Result<(), Error> {
    let flush = |signal: &settings::Signal, result: Option<Result<(), OTelSdkError>>| {
        result.unwrap_or(Ok(())).map_err(|source| Error::Flush {
            signal: signal.name,
            source,
        })
    };
    let (traces, metrics) = (flush(&TRACES, traces), flush(&METRICS, metrics));
    traces.and(metrics)
}
