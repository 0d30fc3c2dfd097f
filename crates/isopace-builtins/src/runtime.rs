//! Per-component details published outside the host's status, for `exec` until it
//! publishes through `Env::set_details`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::RwLock;
use serde_json::Value;

/// Live, per-component details as JSON: what a component wants `/components` to show beyond
/// the host's state (an `exec` child's pid, restarts and last exit, for example).
///
/// Cheap to clone; clones share the entries. A component usually holds a [`DetailsSlot`],
/// which removes its entry when dropped, so a component undeployed or replaced by a
/// redeploy leaves nothing stale behind.
///
/// ```
/// use isopace_builtins::Details;
/// use serde_json::json;
///
/// let details = Details::new();
/// let slot = details.slot("worker");
/// slot.set(json!({ "pid": 1234, "restarts": 0 }));
/// assert_eq!(details.get("worker"), Some(json!({ "pid": 1234, "restarts": 0 })));
/// drop(slot);
/// assert_eq!(details.get("worker"), None);
/// ```
#[derive(Clone, Default)]
pub struct Details {
    shared: Arc<DetailsShared>,
}

#[derive(Default)]
struct DetailsShared {
    /// Each entry with the id of the slot that wrote it (0 for [`Details::set`]).
    entries: RwLock<HashMap<String, (u64, Value)>>,
    next_slot: AtomicU64,
}

impl Details {
    /// An empty registry.
    pub fn new() -> Self {
        Details::default()
    }

    /// The details of `component`, if it published any.
    pub fn get(&self, component: &str) -> Option<Value> {
        self.shared
            .entries
            .read()
            .get(component)
            .map(|(_, v)| v.clone())
    }

    /// Every component's details, by name.
    pub fn all(&self) -> BTreeMap<String, Value> {
        self.shared
            .entries
            .read()
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    /// Replaces the details of `component`.
    pub fn set(&self, component: &str, value: Value) {
        self.shared
            .entries
            .write()
            .insert(component.to_owned(), (0, value));
    }

    /// Removes the details of `component`.
    pub fn remove(&self, component: &str) {
        self.shared.entries.write().remove(component);
    }

    /// A slot that publishes the details of `component` and removes them when dropped,
    /// unless another slot has written them since (the replacement in a redeploy).
    pub fn slot(&self, component: &str) -> DetailsSlot {
        DetailsSlot {
            details: self.clone(),
            component: component.to_owned(),
            id: self.shared.next_slot.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

impl fmt::Debug for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Details")
            .field("components", &self.shared.entries.read().len())
            .finish()
    }
}

/// One component's entry in [`Details`], removed when the slot is dropped.
#[must_use = "dropping the slot removes the details it published"]
#[derive(Debug)]
pub struct DetailsSlot {
    details: Details,
    component: String,
    id: u64,
}

impl DetailsSlot {
    /// Publishes `value` as the component's details.
    pub fn set(&self, value: Value) {
        self.details
            .shared
            .entries
            .write()
            .insert(self.component.clone(), (self.id, value));
    }
}

impl Drop for DetailsSlot {
    fn drop(&mut self) {
        let mut entries = self.details.shared.entries.write();
        if entries
            .get(&self.component)
            .is_some_and(|(id, _)| *id == self.id)
        {
            entries.remove(&self.component);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dropped_slot_leaves_its_successor_in_place() {
        let details = Details::new();
        let old = details.slot("edge");
        old.set(json!({ "generation": 1 }));
        let new = details.slot("edge");
        new.set(json!({ "generation": 2 }));
        drop(old);
        assert_eq!(details.get("edge"), Some(json!({ "generation": 2 })));
        drop(new);
        assert!(details.all().is_empty());
    }
}
