//! Observable component state: what each component is doing, since when, and its last error.

use std::{collections::BTreeMap, collections::HashMap, fmt, sync::Arc, time::SystemTime};

use isopace_observe::{Gauge, attr};
use serde_json::Value;
use tokio::{sync::watch, time::Instant};

use crate::{
    Component, Env, Health, Supervision,
    instance::{Instance, Live},
    supervise::Restarts,
};

/// The gauge the host keeps per component and state: 1 for the state it is in, 0 for the
/// others. Written on every transition, removed with the component.
pub const STATE_GAUGE: &str = "isopace_component_state";

/// The lifecycle state of one component.
///
/// ```text
///  waiting -> starting -> running (ready?, health) -> stopping -> stopped
///                 |            | failure                            ^
///                 v            v                                    |
///               failed <--- backoff (restart policy) ---------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Waiting for what it depends on before it starts (reserved for dependencies between
    /// components).
    Waiting,
    /// Its start is in progress.
    Starting,
    /// Started, and not failed, finished or asked to stop since.
    Running,
    /// It failed and waits out its backoff before the next start (see
    /// [`ComponentStatus::next_try`]).
    Backoff,
    /// Its stop is in progress.
    Stopping,
    /// Registered but not running: never started, stopped cleanly, or finished its work.
    Stopped,
    /// Its start or stop failed, or it failed while running and its restart policy gave up;
    /// it stays failed until retried.
    Failed,
}

impl State {
    /// The state as a lowercase word, as used in logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [State; 7] = [
        State::Waiting,
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::Failed,
    ];
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point-in-time view of one component.
///
/// The host's status is the single source for every view of a component: an admin
/// endpoint, metrics and logs about state all read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentStatus {
    /// The component's name.
    pub name: String,
    /// What it is doing.
    pub state: State,
    /// When it entered that state.
    pub since: SystemTime,
    /// Whether it is running and says it is ready (see [`Env::ready_later`](crate::Env::ready_later)).
    pub ready: bool,
    /// What it last reported with [`Env::set_health`](crate::Env::set_health).
    pub health: Health,
    /// Whether readiness needs it (see [`Supervision::critical`]).
    pub critical: bool,
    /// How often the host restarted it.
    pub restarts: u32,
    /// The last failure (with its source chain), kept until the next one replaces it.
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<SystemTime>,
    /// While in [`State::Backoff`], when the next start is due.
    pub next_try: Option<SystemTime>,
    /// What the component published about itself through
    /// [`Env::set_details`](crate::Env::set_details), if anything.
    pub details: Option<Value>,
    /// Earlier versions of it still stopping in the background, after a
    /// [`retire`](crate::Host::retire).
    pub draining: Vec<Draining>,
}

impl ComponentStatus {
    /// Whether this component keeps its host from being ready: it is critical and not
    /// running and ready.
    pub fn blocks_readiness(&self) -> bool {
        self.critical && !self.ready
    }
}

/// A registered component and the env scoped to it (bound to its current instance once
/// started).
pub(crate) struct Slot {
    pub(crate) component: Box<dyn Component>,
    pub(crate) env: Env,
}

/// One row of the table; the name is shared with the name index.
struct Row {
    seq: u64,
    name: Arc<str>,
    state: State,
    since: SystemTime,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    live: Arc<Live>,
    supervision: Supervision,
    restarts: Restarts,
    next_try: Option<SystemTime>,
    /// The current instance, from its start until the next one begins.
    instance: Option<Arc<Instance>>,
    /// When the current instance's start succeeded.
    running_since: Option<Instant>,
    /// Empty while one of the component's lifecycle calls runs.
    slot: Option<Slot>,
}

/// Where a component's row lives in the table. Stable while the component is registered;
/// reused after it is removed.
pub(crate) type Key = usize;

/// Names, states and slots of every registered component.
///
/// Kept apart from the lifecycle lock so status and listing never wait for a lifecycle call
/// in progress. Rows live in a slab, so the per-call operations (take, put, set) are O(1)
/// by key; registration order is a map from a monotonic sequence number to the key, and the
/// name index a hash map, so insert and remove are O(log n).
pub(crate) struct Table {
    /// [`STATE_GAUGE`], kept in step with every row's state.
    gauge: Gauge,
    /// Marked changed on every state transition, registration and removal, and by each
    /// component's [`Live`] record when its readiness or health changes.
    changes: Arc<watch::Sender<()>>,
    slab: Vec<Option<Row>>,
    free: Vec<Key>,
    order: BTreeMap<u64, Key>,
    by_name: HashMap<Arc<str>, Key>,
    next_seq: u64,
}

impl Table {
    pub(crate) fn new(gauge: Gauge) -> Self {
        Table {
            gauge,
            changes: Arc::new(watch::Sender::new(())),
            slab: Vec::new(),
            free: Vec::new(),
            order: BTreeMap::new(),
            by_name: HashMap::new(),
            next_seq: 0,
        }
    }

    /// A receiver marked changed whenever a component changes state, is added or removed.
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Tells subscribers that something in a status changed outside the table (a
    /// background stop ended).
    pub(crate) fn touch(&self) {
        self.changed();
    }

    /// Wakes the watchers of [`Host::changed`](crate::Host::changed). Waking costs a lock
    /// per notifier shard even with nobody watching, and transitions are the hot path of
    /// deploy and undeploy, so it is skipped when nobody watches: a later watcher starts
    /// from the current state anyway.
    fn changed(&self) {
        if self.changes.receiver_count() > 0 {
            self.changes.send_replace(());
        }
    }

    /// Moves `name`'s state gauge from `from` (if any) to `to`, and tells subscribers.
    fn publish(&self, name: &str, from: Option<State>, to: State) {
        if from == Some(to) {
            return;
        }
        self.changed();
        let component = attr("component", name);
        match from {
            Some(from) => self
                .gauge
                .set(0.0, &[component.clone(), attr("state", from.as_str())]),
            None => {
                for state in State::ALL.into_iter().filter(|&s| s != to) {
                    self.gauge
                        .set(0.0, &[component.clone(), attr("state", state.as_str())]);
                }
            }
        }
        self.gauge
            .set(1.0, &[component, attr("state", to.as_str())]);
    }

    pub(crate) fn key_of(&self, name: &str) -> Option<Key> {
        self.by_name.get(name).copied()
    }

    /// Adds a component in the `Stopped` state with an env scoped to it, and returns its
    /// key; `Err` gives the taken name back.
    pub(crate) fn insert(
        &mut self,
        component: Box<dyn Component>,
        env: &Env,
        supervision: Supervision,
    ) -> Result<Key, String> {
        let name = component.name();
        if self.by_name.contains_key(name) {
            return Err(name.to_owned());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let name: Arc<str> = Arc::from(name);
        let live = Arc::new(Live::watched(&self.changes));
        let env = env
            .scoped(&name, Arc::clone(&live))
            .with_redact(supervision.redact.clone());
        self.publish(&name, None, State::Stopped);
        let row = Row {
            seq,
            name: Arc::clone(&name),
            state: State::Stopped,
            since: SystemTime::now(),
            last_error: None,
            last_error_at: None,
            live,
            supervision,
            restarts: Restarts::default(),
            next_try: None,
            instance: None,
            running_since: None,
            slot: Some(Slot { component, env }),
        };
        let key = match self.free.pop() {
            Some(key) => {
                self.slab[key] = Some(row);
                key
            }
            None => {
                self.slab.push(Some(row));
                self.slab.len() - 1
            }
        };
        self.by_name.insert(name, key);
        self.order.insert(seq, key);
        Ok(key)
    }

    fn row(&self, key: Key) -> Option<&Row> {
        self.slab.get(key)?.as_ref()
    }

    fn row_mut(&mut self, key: Key) -> Option<&mut Row> {
        self.slab.get_mut(key)?.as_mut()
    }

    /// Takes the component out for a lifecycle call, entering `state` at `at`.
    pub(crate) fn take(
        &mut self,
        key: Key,
        state: State,
        at: SystemTime,
    ) -> Option<(Arc<str>, Slot)> {
        let row = self.row_mut(key)?;
        let slot = row.slot.take()?;
        let name = Arc::clone(&row.name);
        self.set_at(key, state, at, None);
        Some((name, slot))
    }

    /// Puts the component back after a lifecycle call, entering `state` at `at`.
    pub(crate) fn put(
        &mut self,
        key: Key,
        slot: Slot,
        state: State,
        at: SystemTime,
        error: Option<String>,
    ) {
        if let Some(row) = self.row_mut(key) {
            row.slot = Some(slot);
        }
        self.set_at(key, state, at, error);
    }

    /// Swaps in a freshly built component (a restart's rebuild).
    pub(crate) fn replace(&mut self, key: Key, component: Box<dyn Component>) {
        if let Some(slot) = self.row_mut(key).and_then(|r| r.slot.as_mut()) {
            slot.component = component;
        }
    }

    /// Removes the row and its state gauge series.
    pub(crate) fn remove(&mut self, key: Key) {
        if let Some(row) = self.slab.get_mut(key).and_then(Option::take) {
            for state in State::ALL {
                self.gauge
                    .remove(&[attr("component", &*row.name), attr("state", state.as_str())]);
            }
            self.by_name.remove(&row.name);
            self.order.remove(&row.seq);
            self.free.push(key);
            self.changed();
        }
    }

    pub(crate) fn set(&mut self, key: Key, state: State, error: Option<String>) {
        self.set_at(key, state, SystemTime::now(), error);
    }

    fn set_at(&mut self, key: Key, state: State, at: SystemTime, error: Option<String>) {
        let Some(row) = self.slab.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let from = row.state;
        row.state = state;
        row.since = at;
        if error.is_some() {
            row.last_error = error;
            row.last_error_at = Some(at);
        }
        if state != State::Backoff {
            row.next_try = None;
        }
        let name = Arc::clone(&row.name);
        self.publish(&name, Some(from), state);
    }

    pub(crate) fn state(&self, key: Key) -> Option<State> {
        self.row(key).map(|r| r.state)
    }

    /// The row's supervision bookkeeping, for the host's supervisor.
    pub(crate) fn supervised(&mut self, key: Key) -> Option<Supervised<'_>> {
        let row = self.row_mut(key)?;
        Some(Supervised {
            supervision: &row.supervision,
            restarts: &mut row.restarts,
            instance: &mut row.instance,
            running_since: &mut row.running_since,
            next_try: &mut row.next_try,
            live: &row.live,
        })
    }

    pub(crate) fn name(&self, key: Key) -> Option<Arc<str>> {
        self.row(key).map(|r| Arc::clone(&r.name))
    }

    fn rows(&self) -> impl Iterator<Item = (Key, &Row)> {
        self.order
            .values()
            .filter_map(|&key| Some((key, self.row(key)?)))
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.rows().map(|(_, r)| r.name.to_string()).collect()
    }

    pub(crate) fn statuses(&self) -> Vec<ComponentStatus> {
        self.rows().map(|(_, r)| r.status()).collect()
    }

    pub(crate) fn status_of(&self, name: &str) -> Option<ComponentStatus> {
        self.row(self.key_of(name)?).map(Row::status)
    }

    /// Every key, in lifecycle order.
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.order.values().copied().collect()
    }

    /// Keys of components in the given state, in lifecycle order.
    pub(crate) fn keys_in(&self, state: State) -> Vec<Key> {
        self.rows()
            .filter(|(_, r)| r.state == state)
            .map(|(key, _)| key)
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// A retired instance of a component whose tasks still finish in the background (a proxy
/// draining its open connections), shown in the status of the component that replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Draining {
    /// When its stop bound runs out.
    pub until: SystemTime,
    /// What it published last (a proxy's open connections, for example).
    pub details: Option<Value>,
}

/// The parts of a row the supervisor reads and changes.
pub(crate) struct Supervised<'a> {
    pub(crate) supervision: &'a Supervision,
    pub(crate) restarts: &'a mut Restarts,
    pub(crate) instance: &'a mut Option<Arc<Instance>>,
    pub(crate) running_since: &'a mut Option<Instant>,
    pub(crate) next_try: &'a mut Option<SystemTime>,
    pub(crate) live: &'a Arc<Live>,
}

impl Row {
    fn status(&self) -> ComponentStatus {
        let (ready, health, details) = self
            .live
            .read(|l| (l.ready, l.health.clone(), l.details.clone()));
        ComponentStatus {
            name: self.name.to_string(),
            state: self.state,
            since: self.since,
            ready: ready && self.state == State::Running,
            health,
            critical: self.supervision.critical,
            restarts: self.restarts.count,
            last_error: self.last_error.clone(),
            last_error_at: self.last_error_at,
            next_try: self.next_try,
            details,
            draining: Vec::new(),
        }
    }
}
