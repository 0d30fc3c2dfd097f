//! One component's life between `start` and `stop`: what it reports (readiness, health,
//! details, failures) and the tasks it spawned, tracked so none outlives it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use isopace_observe::Rounded;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::{sync::mpsc, task::AbortHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{Health, status::Key};

/// What a component's current instance reported, read by the host's status. One per
/// registered component, shared by its row and its env; reports from an instance that is
/// no longer the current one are ignored.
#[derive(Debug, Default)]
pub(crate) struct Live {
    state: Mutex<LiveState>,
    /// The host's change signal ([`Host::changed`](crate::Host::changed)), marked when
    /// readiness or health changes; none outside a host. Weak, so an env or instance that
    /// outlives the host does not keep its watchers from seeing it gone.
    changes: Option<Weak<tokio::sync::watch::Sender<()>>>,
}

#[derive(Debug, Default)]
pub(crate) struct LiveState {
    /// The instance these values belong to.
    generation: u64,
    pub(crate) ready: bool,
    pub(crate) health: Health,
    /// Counts health reports, so a delayed unhealthy check knows whether it is still current.
    health_seq: u64,
    pub(crate) details: Option<Value>,
}

impl Live {
    /// A record whose readiness and health changes mark `changes`.
    pub(crate) fn watched(changes: &Arc<tokio::sync::watch::Sender<()>>) -> Live {
        Live {
            state: Mutex::default(),
            changes: Some(Arc::downgrade(changes)),
        }
    }

    /// Wakes the host's watchers, if anyone watches (see `Table::changed`).
    fn touch(&self) {
        if let Some(changes) = self.changes.as_ref().and_then(Weak::upgrade)
            && changes.receiver_count() > 0
        {
            changes.send_replace(());
        }
    }

    /// A new instance begins: not ready, healthy, with no details.
    pub(crate) fn begin(&self, generation: u64) {
        *self.state.lock() = LiveState {
            generation,
            ..LiveState::default()
        };
    }

    /// Reads the current values.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&LiveState) -> R) -> R {
        f(&self.state.lock())
    }

    /// Changes the values if `generation` is still the current instance (0: any), and
    /// returns what `f` returned.
    fn update<R>(&self, generation: u64, f: impl FnOnce(&mut LiveState) -> R) -> Option<R> {
        let mut state = self.state.lock();
        (generation == 0 || state.generation == generation).then(|| f(&mut state))
    }

    pub(crate) fn set_ready(&self, generation: u64, ready: bool) {
        let changed = self.update(generation, |s| {
            std::mem::replace(&mut s.ready, ready) != ready
        });
        if changed == Some(true) {
            self.touch();
        }
    }

    pub(crate) fn set_details(&self, generation: u64, details: Option<Value>) {
        self.update(generation, |s| s.details = details);
    }

    /// Records `health`; returns its sequence number when it was recorded.
    pub(crate) fn set_health(&self, generation: u64, health: Health) -> Option<u64> {
        let (seq, changed) = self.update(generation, |s| {
            let changed = s.health != health;
            s.health = health;
            s.health_seq += 1;
            (s.health_seq, changed)
        })?;
        if changed {
            self.touch();
        }
        Some(seq)
    }

    fn still_unhealthy(&self, generation: u64, seq: u64) -> bool {
        self.update(generation, |s| {
            s.health_seq == seq && matches!(s.health, Health::Unhealthy(_))
        })
        .unwrap_or(false)
    }
}

/// What reaches the host's supervisor about one instance.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) key: Key,
    pub(crate) generation: u64,
    pub(crate) kind: EventKind,
}

#[derive(Debug)]
pub(crate) enum EventKind {
    /// The instance failed after start; the error chain.
    Failed(String),
    /// The instance finished its work cleanly.
    Finished,
    /// A backoff ended: try the component again.
    Retry,
}

/// One started instance of a component: its identity, its tasks and its event channel.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) key: Key,
    pub(crate) generation: u64,
    pub(crate) live: Arc<Live>,
    pub(crate) token: CancellationToken,
    pub(crate) tracker: TaskTracker,
    events: mpsc::UnboundedSender<Event>,
    aborts: Mutex<Aborts>,
    /// Whether the first failure was reported; later ones of the same instance add nothing.
    failed: AtomicBool,
    /// Whether `start` declared readiness comes later.
    pub(crate) ready_later: AtomicBool,
    unhealthy_threshold: Mutex<Duration>,
    /// The stop bound the component asked for, instead of the host's.
    stop_timeout: Mutex<Option<Duration>>,
}

/// Abort handles of the instance's tasks still running, to end those that outlive the stop
/// bound. Each task removes its own entry when it ends.
#[derive(Debug, Default)]
struct Aborts {
    next: u64,
    running: HashMap<u64, Option<AbortHandle>>,
}

impl Instance {
    pub(crate) fn new(
        key: Key,
        generation: u64,
        live: Arc<Live>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Instance {
            key,
            generation,
            live,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            events,
            aborts: Mutex::default(),
            failed: AtomicBool::new(false),
            ready_later: AtomicBool::new(false),
            unhealthy_threshold: Mutex::new(Duration::ZERO),
            stop_timeout: Mutex::new(None),
        }
    }

    fn send(&self, kind: EventKind) {
        // The supervisor is gone only with the host; nothing is left to tell then.
        let _ = self.events.send(Event {
            key: self.key,
            generation: self.generation,
            kind,
        });
    }

    /// Reports a failure after start (its text already redacted); only the first of an
    /// instance counts.
    pub(crate) fn fail(&self, error: String) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            self.send(EventKind::Failed(error));
        }
    }

    /// Reports a clean finish.
    pub(crate) fn finish(&self) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            self.send(EventKind::Finished);
        }
    }

    pub(crate) fn set_stop_timeout(&self, timeout: Duration) {
        *self.stop_timeout.lock() = Some(timeout);
    }

    pub(crate) fn stop_timeout(&self) -> Option<Duration> {
        *self.stop_timeout.lock()
    }

    pub(crate) fn set_unhealthy_threshold(&self, threshold: Duration) {
        *self.unhealthy_threshold.lock() = threshold;
    }

    /// Records `health`; an unhealthy report that lasts past the threshold is a failure.
    pub(crate) fn set_health(self: &Arc<Self>, health: Health) {
        let reason = match &health {
            Health::Unhealthy(reason) => Some(reason.clone()),
            _ => None,
        };
        let Some(seq) = self.live.set_health(self.generation, health) else {
            return;
        };
        let Some(reason) = reason else { return };
        let threshold = *self.unhealthy_threshold.lock();
        let failure = format!("unhealthy for longer than {}: {reason}", Rounded(threshold));
        if threshold.is_zero() {
            self.fail(failure);
            return;
        }
        let instance = Arc::clone(self);
        // Not a tracked task: it watches the instance rather than doing its work.
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(threshold) => {
                    if instance.live.still_unhealthy(instance.generation, seq) {
                        instance.fail(failure);
                    }
                }
                () = instance.token.cancelled() => {}
            }
        });
    }

    /// Registers a task's abort handle; returns the id the task removes when it ends.
    pub(crate) fn reserve(&self) -> u64 {
        let mut aborts = self.aborts.lock();
        aborts.next += 1;
        let id = aborts.next;
        aborts.running.insert(id, None);
        id
    }

    /// Fills in the abort handle of task `id`, unless it has already ended.
    pub(crate) fn register(&self, id: u64, handle: AbortHandle) {
        if let Some(slot) = self.aborts.lock().running.get_mut(&id) {
            *slot = Some(handle);
        }
    }

    pub(crate) fn ended(&self, id: u64) {
        self.aborts.lock().running.remove(&id);
    }

    /// Aborts every task still running; returns how many there were.
    pub(crate) fn abort_all(&self) -> usize {
        let running = std::mem::take(&mut self.aborts.lock().running);
        let n = running.len();
        for handle in running.into_values().flatten() {
            handle.abort();
        }
        n
    }
}

/// Removes a task's abort entry when the task ends, however it ends.
pub(crate) struct TaskGuard {
    pub(crate) instance: Arc<Instance>,
    pub(crate) id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.instance.ended(self.id);
    }
}
