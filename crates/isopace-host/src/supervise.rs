//! Supervision settings and arithmetic: the restart policy, health, backoff and intensity.

use std::{collections::VecDeque, fmt, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{BoxError, Component, Env};

/// When the host restarts a component whose life ended after `start` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Restart {
    /// Never: a failure leaves the component `failed` until it is retried.
    #[default]
    Never,
    /// After a failure (an error or panic in a spawned task, a reported failure, lasting
    /// unhealth), not after a clean finish.
    OnFailure,
    /// After a failure and after a clean finish.
    Always,
}

impl Restart {
    /// The policy as written in descriptors: `never`, `on-failure`, `always`.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Never => "never",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the host restarts one component: the policy, exponential backoff and an intensity
/// limit (at most `max_restarts` within `window`, like Erlang/OTP's intensity and period or
/// systemd's `StartLimitBurst` and `StartLimitIntervalSec`).
///
/// The first restart waits `backoff`, each further one twice as long up to `max_backoff`,
/// each with the host's jitter applied. Once a component has run for a whole `window`
/// without failing, its backoff starts again from `backoff`. A restart beyond the intensity
/// limit does not happen: the component is `failed` until retried.
///
/// ```
/// use std::time::Duration;
/// use isopace_host::{Restart, RestartPolicy};
///
/// let policy = RestartPolicy::on_failure().backoff(Duration::from_millis(100));
/// assert_eq!(policy.policy, Restart::OnFailure);
/// assert_eq!(policy.max_restarts, 5);
/// assert_eq!(RestartPolicy::default().policy, Restart::Never);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// When to restart.
    pub policy: Restart,
    /// The wait before the first restart.
    pub backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// The most restarts within `window`.
    pub max_restarts: u32,
    /// The period the intensity limit counts restarts over.
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// Never restart (what a library component gets unless it asks for more); the other
    /// fields are the descriptor defaults, used once the policy is changed.
    fn default() -> Self {
        RestartPolicy {
            policy: Restart::Never,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Never restart.
    pub fn never() -> Self {
        RestartPolicy::default()
    }

    /// Restart after failures: 100 ms to 30 s of backoff, at most 5 restarts in 60 s.
    pub fn on_failure() -> Self {
        RestartPolicy {
            policy: Restart::OnFailure,
            ..RestartPolicy::default()
        }
    }

    /// Restart after failures and clean finishes, with the same limits as
    /// [`on_failure`](RestartPolicy::on_failure).
    pub fn always() -> Self {
        RestartPolicy {
            policy: Restart::Always,
            ..RestartPolicy::default()
        }
    }

    /// Sets the policy.
    #[must_use]
    pub fn policy(mut self, policy: Restart) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the first wait.
    #[must_use]
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the longest wait.
    #[must_use]
    pub fn max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// Sets the most restarts within the window.
    #[must_use]
    pub fn max_restarts(mut self, max_restarts: u32) -> Self {
        self.max_restarts = max_restarts;
        self
    }

    /// Sets the window.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
}

/// What a component reports about its own health with [`Env::set_health`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Health {
    /// Working as intended (the default).
    #[default]
    Healthy,
    /// Working, but impaired; the reason says how. Not a failure.
    Degraded(String),
    /// Not working; the reason says why. Lasting longer than the component's threshold
    /// ([`Env::set_unhealthy_threshold`], zero unless set) it is a failure.
    Unhealthy(String),
}

impl Health {
    /// `healthy`, `degraded` or `unhealthy`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded(_) => "degraded",
            Health::Unhealthy(_) => "unhealthy",
        }
    }

    /// The reason given with `degraded` or `unhealthy`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Healthy => None,
            Health::Degraded(reason) | Health::Unhealthy(reason) => Some(reason),
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{}: {reason}", self.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

/// Builds a fresh instance of a component for a restart, so a restart starts from a clean
/// state (a descriptor's component is rebuilt from its descriptor). Without one, the host
/// starts the stopped instance again.
pub type Rebuild = Arc<dyn Fn(&Env) -> Result<Box<dyn Component>, BoxError> + Send + Sync>;

/// Rewrites a text so it shows no secret: what a component's configuration took from the
/// environment is replaced by a reference to it. Applied to every error the host logs or
/// keeps in the status for that component, and offered to the component as
/// [`Env::redact`].
pub type Redact = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How the host supervises one component: its restart policy, whether it is critical to
/// readiness, and how to build a fresh instance for a restart.
///
/// ```
/// use isopace_host::{RestartPolicy, Supervision};
///
/// let supervision = Supervision::new()
///     .restart(RestartPolicy::on_failure())
///     .critical(false);
/// assert!(!supervision.is_critical());
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Supervision {
    pub(crate) restart: RestartPolicy,
    pub(crate) critical: bool,
    pub(crate) rebuild: Option<Rebuild>,
    pub(crate) redact: Option<Redact>,
}

impl Supervision {
    /// Never restarted, critical, restarted (when the policy changes) as the same instance.
    pub fn new() -> Self {
        Supervision {
            restart: RestartPolicy::default(),
            critical: true,
            rebuild: None,
            redact: None,
        }
    }

    /// The restart policy.
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Whether readiness needs this component running and ready (default true). A one-shot
    /// job that finishes is marked `false`.
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// Builds each restart's instance fresh.
    pub fn rebuild(mut self, rebuild: Rebuild) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    /// Redacts what the host logs and keeps about this component's errors.
    pub fn redact(mut self, redact: Redact) -> Self {
        self.redact = Some(redact);
        self
    }

    /// The restart policy.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart
    }

    /// Whether readiness needs this component.
    pub fn is_critical(&self) -> bool {
        self.critical
    }
}

impl fmt::Debug for Supervision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervision")
            .field("restart", &self.restart)
            .field("critical", &self.critical)
            .field("rebuild", &self.rebuild.is_some())
            .field("redact", &self.redact.is_some())
            .finish()
    }
}

/// One component's restart bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    /// Restarts so far (what the status shows).
    pub(crate) count: u32,
    /// When the restarts within the current window were scheduled.
    recent: VecDeque<Instant>,
    /// The next wait, before jitter; `None` means the policy's `backoff`.
    next_backoff: Option<Duration>,
}

impl Restarts {
    /// The wait before the next restart, or `None` when the intensity limit forbids one.
    /// `ran` is how long the failed instance ran; a whole window of it resets the backoff.
    pub(crate) fn schedule(
        &mut self,
        policy: &RestartPolicy,
        now: Instant,
        ran: Duration,
        jitter: &Jitter,
    ) -> Option<Duration> {
        if ran >= policy.window {
            self.next_backoff = None;
        }
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= policy.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= policy.max_restarts as usize {
            return None;
        }
        self.recent.push_back(now);
        let wait = self.next_backoff.unwrap_or(policy.backoff);
        self.next_backoff = Some(wait.saturating_mul(2).min(policy.max_backoff));
        Some(jitter.apply(wait))
    }

    /// Forgets the history, for an operator's retry.
    pub(crate) fn reset(&mut self) {
        self.recent.clear();
        self.next_backoff = None;
    }
}

/// Spreads restart waits so components that failed together do not restart together.
///
/// A wait `w` becomes a value in `w × [1 − fraction, 1 + fraction]`, drawn from a small
/// deterministic generator; a fraction of zero gives exact waits, which tests use.
#[derive(Debug)]
pub(crate) struct Jitter {
    fraction: f64,
    state: parking_lot::Mutex<u64>,
}

impl Jitter {
    pub(crate) fn new(fraction: f64, seed: u64) -> Self {
        Jitter {
            fraction: fraction.clamp(0.0, 1.0),
            state: parking_lot::Mutex::new(seed | 1),
        }
    }

    pub(crate) fn apply(&self, wait: Duration) -> Duration {
        if self.fraction == 0.0 || wait.is_zero() {
            return wait;
        }
        // xorshift64*: plenty for spreading waits, and no dependency.
        let bits = {
            let mut x = self.state.lock();
            *x ^= *x >> 12;
            *x ^= *x << 25;
            *x ^= *x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let unit = (bits >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        wait.mul_f64(1.0 + self.fraction * (2.0 * unit - 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_intensity_stops_it() {
        let policy = RestartPolicy::on_failure()
            .backoff(ms(100))
            .max_backoff(ms(300))
            .max_restarts(4)
            .window(Duration::from_secs(60));
        let jitter = Jitter::new(0.0, 1);
        let mut r = Restarts::default();
        let now = Instant::now();
        let waits: Vec<_> = (0..5)
            .map(|_| r.schedule(&policy, now, ms(1), &jitter))
            .collect();
        assert_eq!(
            waits,
            [
                Some(ms(100)),
                Some(ms(200)),
                Some(ms(300)),
                Some(ms(300)),
                None
            ]
        );
        // Once the window has passed, restarts are allowed again, and a long run resets the
        // backoff.
        let later = now + Duration::from_secs(61);
        assert_eq!(
            r.schedule(&policy, later, Duration::from_secs(60), &jitter),
            Some(ms(100))
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let jitter = Jitter::new(0.2, 42);
        for _ in 0..1000 {
            let w = jitter.apply(ms(1000));
            assert!(w >= ms(800) && w <= ms(1200), "{w:?}");
        }
        assert_eq!(Jitter::new(0.0, 42).apply(ms(1000)), ms(1000));
    }
}
