//! One bounded lifecycle call: timeout, panic capture, re-entrancy guard, span and metrics.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use isopace_observe::{Counter, Observer, attr};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    Component, Env,
    error::{ComponentError, Error, Failure, Phase},
};

/// A lifecycle call in progress on the current task: which host and component it belongs
/// to, and the call it is nested in (a component of one host starting another host).
#[derive(Debug, Clone)]
struct Frame {
    host: u64,
    component: Arc<str>,
    phase: Phase,
    outer: Option<Arc<Frame>>,
}

tokio::task_local! {
    /// The innermost lifecycle call the current task is inside of. Spawned tasks do not
    /// inherit it, which is what makes calls from a component's background tasks legal.
    static FRAME: Frame;
}

/// Fails with [`Error::Reentrant`] when called from inside a start or stop of `host`.
pub(crate) fn check_reentrant(host: u64, call: &'static str) -> Result<(), Error> {
    FRAME
        .try_with(|frame| {
            let mut frame = Some(frame);
            while let Some(f) = frame {
                if f.host == host {
                    return Err(Error::Reentrant {
                        call,
                        component: f.component.to_string(),
                        phase: f.phase,
                    });
                }
                frame = f.outer.as_deref();
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
}

/// The host's lifecycle instruments, looked up once. A call's duration is its
/// `isopace_lifecycle` span, which a metrics observer records as
/// `isopace_lifecycle_duration_seconds`.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    calls: Counter,
    failures: Counter,
}

impl Instruments {
    pub(crate) fn new(observer: &dyn Observer) -> Self {
        observer.describe(
            "isopace_lifecycle_calls_total",
            "Lifecycle calls (start, stop) made to components, by component and phase.",
        );
        observer.describe(
            "isopace_lifecycle_failures_total",
            "Lifecycle calls that failed, by component, phase and reason (error, timeout, panic).",
        );
        observer.describe(
            "isopace_lifecycle_duration_seconds",
            "How long lifecycle calls took, in seconds, by component and phase.",
        );
        Instruments {
            calls: observer.counter("isopace_lifecycle_calls_total"),
            failures: observer.counter("isopace_lifecycle_failures_total"),
        }
    }
}

/// Everything one call needs besides the component.
pub(crate) struct Call<'a> {
    pub(crate) host: u64,
    pub(crate) phase: Phase,
    pub(crate) timeout: Duration,
    pub(crate) env: &'a Env,
    pub(crate) instruments: &'a Instruments,
}

impl Call<'_> {
    /// Runs `phase` of `component`, bounded by the timeout, with panics caught; returns the
    /// outcome and how long the call took.
    pub(crate) async fn run(
        self,
        name: &Arc<str>,
        component: &mut dyn Component,
    ) -> (Result<(), ComponentError>, Duration) {
        let phase = self.phase;
        let frame = Frame {
            host: self.host,
            component: Arc::clone(name),
            phase,
            outer: FRAME.try_with(|outer| Arc::new(outer.clone())).ok(),
        };
        let span = tracing::info_span!("lifecycle", component = &**name, phase = phase.as_str());
        let labels = [attr("component", &**name), attr("phase", phase.as_str())];
        // The call as a span of the observer's: its duration for a metrics observer
        // (`isopace_lifecycle_duration_seconds`), a span an OpenTelemetry observer exports.
        let mut observed = self.env.observer().start_span("isopace_lifecycle", &labels);
        let future = match phase {
            Phase::Start => component.start(self.env),
            Phase::Stop => component.stop(self.env),
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(
            started + self.timeout,
            FRAME.scope(frame, CatchUnwind(future)).instrument(span),
        )
        .await;
        let elapsed = started.elapsed();
        let failure = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(error))) => Some(Failure::Failed(error)),
            Ok(Err(panic)) => Some(Failure::Panicked(panic_message(&*panic))),
            Err(_) => Some(Failure::TimedOut(self.timeout)),
        };
        self.instruments.calls.add(1, &labels);
        let result = match failure {
            None => Ok(()),
            Some(failure) => {
                let reason = match failure {
                    Failure::Failed(_) => "error",
                    Failure::TimedOut(_) => "timeout",
                    Failure::Panicked(_) => "panic",
                };
                // An attribute, not `set_error`: the host logs the failure already, and a
                // logging observer would log it again.
                observed.set_attr(attr("reason", reason));
                self.instruments.failures.add(
                    1,
                    &[
                        attr("component", &**name),
                        attr("phase", phase.as_str()),
                        attr("reason", reason),
                    ],
                );
                Err(ComponentError::new(name, phase, failure))
            }
        };
        observed.end();
        (result, elapsed)
    }
}

/// Polls a boxed future, turning a panic into an error value. The future is never polled
/// again after it panicked.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
