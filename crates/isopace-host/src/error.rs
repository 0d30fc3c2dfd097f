//! The host's error type: lifecycle misuse, and component failures that keep the name and source.

use std::{error::Error as StdError, fmt, time::Duration};

use isopace_observe::Rounded;

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

/// The plain form names the component and the phase; the alternate form (`{:#}`) adds the
/// component's own error and its causes, each after ": ".
impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, phase) = (&self.component, self.phase);
        match &self.failure {
            Failure::Failed(source) if f.alternate() => write!(
                f,
                "component `{name}` failed to {phase}: {}",
                crate::error_chain(source.as_ref())
            ),
            Failure::Failed(_) => write!(f, "component `{name}` failed to {phase}"),
            Failure::TimedOut(after) => {
                write!(
                    f,
                    "component `{name}` did not {phase} within {}",
                    Rounded(*after)
                )
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
///
/// The combined errors ([`Error::Start`], [`Error::Stop`], [`Error::ShutdownTimeout`]) carry
/// several component failures. Their plain `Display` is a one-line summary naming the
/// components; the alternate form (`{:#}`) prints every failure with its whole cause chain;
/// [`source`](StdError::source) is the first failure, and [`Error::component_errors`] walks
/// all of them.
///
/// ```
/// # use isopace_host::{async_trait, BoxError, Component, Env, Error, Host};
/// struct Broken(&'static str);
///
/// #[async_trait]
/// impl Component for Broken {
///     fn name(&self) -> &str { self.0 }
///     async fn start(&mut self, _: &Env) -> Result<(), BoxError> { Err("port taken".into()) }
///     async fn stop(&mut self, _: &Env) -> Result<(), BoxError> { Err("socket stuck".into()) }
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let host = Host::default();
/// host.register(Broken("edge")).unwrap();
/// let error = host.start().await.unwrap_err();
/// assert_eq!(
///     format!("{error:#}"),
///     "host start failed: component `edge` failed to start: port taken; \
///      while unwinding: component `edge` failed to stop: socket stuck"
/// );
/// assert_eq!(error.component_errors().count(), 2);
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A component with this name is already registered.
    Duplicate(String),
    /// No component with this name is registered.
    NotFound(String),
    /// The host is already started (registering or starting again).
    Running,
    /// A lifecycle method was called from inside a component's own start or stop, which
    /// would deadlock; call it from a background task instead.
    Reentrant {
        /// The lifecycle method that was called.
        call: &'static str,
        /// The component whose start or stop made the call.
        component: String,
        /// The phase it was in.
        phase: Phase,
    },
    /// One lifecycle call failed (a deploy's start, an undeploy's stop).
    Component(ComponentError),
    /// Starting failed; the components already started were stopped again in reverse.
    Start {
        /// The start that failed.
        failure: ComponentError,
        /// Failures while unwinding (stopping the failed component and those started before it).
        unwind: Vec<ComponentError>,
    },
    /// Stopping finished, but some components failed to stop.
    Stop(Vec<ComponentError>),
    /// The shutdown timeout passed before every component had stopped.
    ShutdownTimeout {
        /// The shutdown timeout.
        timeout: Duration,
        /// Components that had not finished stopping, in stop order.
        stopping: Vec<String>,
        /// Components that failed to stop before the timeout.
        errors: Vec<ComponentError>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = f.alternate();
        match self {
            Error::Duplicate(name) => write!(f, "component `{name}` is already registered"),
            Error::NotFound(name) => write!(f, "component `{name}` not found"),
            Error::Running => f.write_str("host is already running"),
            Error::Reentrant {
                call,
                component,
                phase,
            } => write!(
                f,
                "`{call}` called from inside the {phase} of component `{component}`; lifecycle calls are only allowed from outside start and stop (for example from a spawned task)"
            ),
            Error::Component(e) if full => write!(f, "{e:#}"),
            Error::Component(e) => write!(f, "{e}"),
            Error::Start { failure, unwind } if full => {
                write!(f, "host start failed: {failure:#}")?;
                if !unwind.is_empty() {
                    f.write_str("; while unwinding: ")?;
                    write_all(f, unwind)?;
                }
                Ok(())
            }
            Error::Start { unwind, .. } => {
                write!(f, "host start failed{}", unwind_summary(unwind))
            }
            Error::Stop(errors) if full => write_all(f, errors),
            Error::Stop(errors) => {
                write!(
                    f,
                    "{} failed to stop: {}",
                    plural(errors.len()),
                    names(errors)
                )
            }
            Error::ShutdownTimeout {
                timeout,
                stopping,
                errors,
            } => {
                write!(
                    f,
                    "shutdown did not finish within {}; still stopping: {}",
                    Rounded(*timeout),
                    stopping.join(", ")
                )?;
                if full && !errors.is_empty() {
                    f.write_str("; failed to stop: ")?;
                    write_all(f, errors)?;
                }
                Ok(())
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // Transparent: the component error's own source comes next.
            Error::Component(e) => e.source(),
            _ => self
                .component_errors()
                .next()
                .map(|e| e as &(dyn StdError + 'static)),
        }
    }
}

/// Writes each error with its causes, joined with "; ".
fn write_all(f: &mut fmt::Formatter<'_>, errors: &[ComponentError]) -> fmt::Result {
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{e:#}")?;
    }
    Ok(())
}

impl Error {
    /// Every component failure this error carries, in the order they happened.
    pub fn component_errors(&self) -> impl Iterator<Item = &ComponentError> {
        let (first, rest): (Option<&ComponentError>, &[ComponentError]) = match self {
            Error::Component(e) => (Some(e), &[]),
            Error::Start { failure, unwind } => (Some(failure), unwind),
            Error::Stop(errors) | Error::ShutdownTimeout { errors, .. } => (None, errors),
            _ => (None, &[]),
        };
        first.into_iter().chain(rest)
    }

    /// The component errors' sources: what the components themselves returned.
    pub fn sources(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        self.component_errors().filter_map(|e| e.source())
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
