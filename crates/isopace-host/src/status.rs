//! Observable component state: what each component is doing, since when, and its last error.

use std::{collections::BTreeMap, collections::HashMap, fmt, sync::Arc, time::SystemTime};

use isopace_observe::{Gauge, attr};
use serde_json::Value;

use crate::{Component, Env, env::DetailsCell};

/// The gauge the host keeps per component and state: 1 for the state it is in, 0 for the
/// others. Written on every transition, removed with the component.
pub const STATE_GAUGE: &str = "isopace_component_state";

/// The lifecycle state of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Its start is in progress.
    Starting,
    /// Started and not yet asked to stop.
    Running,
    /// Its stop is in progress.
    Stopping,
    /// Registered but not running: never started, or stopped cleanly.
    Stopped,
    /// Its last start or stop failed, timed out or panicked.
    Failed,
}

impl State {
    /// The state as a lowercase word, as used in logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Running,
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
    /// The last lifecycle error (with its source chain), kept until the next error replaces it.
    pub last_error: Option<String>,
    /// What the component published about itself through
    /// [`Env::set_details`](crate::Env::set_details), if anything.
    pub details: Option<Value>,
}

/// A registered component and the env scoped to it.
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
    details: DetailsCell,
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
            slab: Vec::new(),
            free: Vec::new(),
            order: BTreeMap::new(),
            by_name: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Moves `name`'s state gauge from `from` (if any) to `to`.
    fn publish(&self, name: &str, from: Option<State>, to: State) {
        if from == Some(to) {
            return;
        }
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
    ) -> Result<Key, String> {
        let name = component.name();
        if self.by_name.contains_key(name) {
            return Err(name.to_owned());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let name: Arc<str> = Arc::from(name);
        let env = env.for_component(&name);
        let details = Arc::clone(env.details_cell().expect("a component's env has details"));
        self.publish(&name, None, State::Stopped);
        let row = Row {
            seq,
            name: Arc::clone(&name),
            state: State::Stopped,
            since: SystemTime::now(),
            last_error: None,
            details,
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
        }
        let name = Arc::clone(&row.name);
        self.publish(&name, Some(from), state);
    }

    pub(crate) fn state(&self, key: Key) -> Option<State> {
        self.row(key).map(|r| r.state)
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

impl Row {
    fn status(&self) -> ComponentStatus {
        ComponentStatus {
            name: self.name.to_string(),
            state: self.state,
            since: self.since,
            last_error: self.last_error.clone(),
            details: self.details.lock().clone(),
        }
    }
}
