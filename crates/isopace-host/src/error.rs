//! The host's error type: lifecycle misuse, and component failures that keep the name and source.

use std::{error::Error as StdError, fmt, time::Duration};

use crate::BoxError;

/// A lifecycle phase of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `Component::start`.
    Start,
    /// `Component::stop`.
    Stop,
}

impl Phase {
    /// The phase as a lowercase word, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Stop => "stop",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one lifecycle call of one component failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The call returned an error.
    Failed(BoxError),
    /// The call ran past its timeout and was abandoned.
    TimedOut(Duration),
    /// The call panicked; the panic message, where it was a string.
    Panicked(String),
}

/// One failed lifecycle call: the component, the phase and what went wrong.
///
/// For [`Failure::Failed`], [`source`](StdError::source) is the component's own error, so it
/// can be downcast to the type the component returned.
#[derive(Debug)]
pub struct ComponentError {
    component: String,
    phase: Phase,
    failure: Failure,
}

impl ComponentError {
    pub(crate) fn new(component: &str, phase: Phase, failure: Failure) -> Self {
        ComponentError {
            component: component.to_owned(),
            phase,
            failure,
        }
    }

    /// The name of the component that failed.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The phase that failed.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What went wrong.
    pub fn failure(&self) -> &Failure {
        &self.failure
    }
}

impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, phase) = (&self.component, self.phase);
        match &self.failure {
            Failure::Failed(_) => write!(f, "component `{name}` failed to {phase}"),
            Failure::TimedOut(after) => {
                write!(f, "component `{name}` did not {phase} within {after:?}")
            }
            Failure::Panicked(message) => {
                write!(f, "component `{name}` panicked in {phase}: {message}")
            }
        }
    }
}

impl StdError for ComponentError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.failure {
            Failure::Failed(source) => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Everything the host can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A component with this name is already registered.
    #[error("component `{0}` is already registered")]
    Duplicate(String),
    /// No component with this name is registered.
    #[error("component `{0}` not found")]
    NotFound(String),
    /// The host is already started (registering or starting again).
    #[error("host is already running")]
    Running,
    /// A lifecycle method was called from inside a component's own start or stop, which
    /// would deadlock; call it from a background task instead.
    #[error(
        "`{call}` called from inside the {phase} of component `{component}`; lifecycle calls are only allowed from outside start and stop (for example from a spawned task)"
    )]
    Reentrant {
        /// The lifecycle method that was called.
        call: &'static str,
        /// The component whose start or stop made the call.
        component: String,
        /// The phase it was in.
        phase: Phase,
    },
    /// One lifecycle call failed (a deploy's start, an undeploy's stop).
    #[error(transparent)]
    Component(ComponentError),
    /// Starting failed; the components already started were stopped again in reverse.
    #[error("host start failed{}", unwind_summary(.unwind))]
    Start {
        /// The start that failed.
        #[source]
        failure: ComponentError,
        /// Failures while unwinding (stopping the failed component and those started before it).
        unwind: Vec<ComponentError>,
    },
    /// Stopping finished, but some components failed to stop.
    #[error("{} failed to stop: {}", plural(.0.len()), names(.0))]
    Stop(Vec<ComponentError>),
    /// The shutdown timeout passed before every component had stopped.
    #[error("shutdown did not finish within {timeout:?}; still stopping: {}", .stopping.join(", "))]
    ShutdownTimeout {
        /// The shutdown timeout.
        timeout: Duration,
        /// Components that had not finished stopping, in stop order.
        stopping: Vec<String>,
        /// Components that failed to stop before the timeout.
        errors: Vec<ComponentError>,
    },
}

impl Error {
    /// Every component failure this error carries, in the order they happened.
    pub fn component_errors(&self) -> Vec<&ComponentError> {
        match self {
            Error::Component(e) => vec![e],
            Error::Start { failure, unwind } => std::iter::once(failure).chain(unwind).collect(),
            Error::Stop(errors) | Error::ShutdownTimeout { errors, .. } => errors.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The component errors' sources: what the components themselves returned.
    pub fn sources(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        self.component_errors()
            .into_iter()
            .filter_map(|e| e.source())
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 component".to_owned()
    } else {
        format!("{n} components")
    }
}

fn names(errors: &[ComponentError]) -> String {
    errors
        .iter()
        .map(|e| format!("`{}`", e.component))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unwind_summary(unwind: &[ComponentError]) -> String {
    if unwind.is_empty() {
        String::new()
    } else {
        format!(
            "; while unwinding, {} failed to stop: {}",
            plural(unwind.len()),
            names(unwind)
        )
    }
}
