//! The shared record of what probes did: every lifecycle call, which probes run now, and a
//! way to wait until the record shows something.

use std::{collections::BTreeMap, fmt, sync::Arc};

use isopace_host::Phase;
use parking_lot::Mutex;
use tokio::sync::watch;

/// One lifecycle call a probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The component's name.
    pub component: String,
    /// The `tag` of the version that received the call (empty unless one was given).
    pub tag: String,
    /// Start or stop.
    pub phase: Phase,
}

/// `component:phase`, as in `"db:start"`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.component, self.phase)
    }
}

/// What every probe recording into it did: each call, and which probes run now.
///
/// Cheap to clone; clones share one record.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    record: Mutex<Record>,
    /// Bumped after every change, for [`Lifecycle::wait_until`].
    changed: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct Record {
    events: Vec<Event>,
    /// Component name → tag of the version whose start succeeded and that has not been
    /// asked to stop since.
    running: BTreeMap<String, String>,
}

impl Lifecycle {
    /// An empty record.
    pub fn new() -> Self {
        Lifecycle::default()
    }

    /// Every call so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.inner.record.lock().events.clone()
    }

    /// Every call so far as `component:phase` strings, forgetting them: what happened since
    /// the last time a test asked.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.record.lock().events)
            .iter()
            .map(Event::to_string)
            .collect()
    }

    /// How many events there are so far; with [`events_since`](Self::events_since), what
    /// one step did.
    pub fn event_count(&self) -> usize {
        self.inner.record.lock().events.len()
    }

    /// The events after the first `count`.
    pub fn events_since(&self, count: usize) -> Vec<Event> {
        self.inner
            .record
            .lock()
            .events
            .get(count..)
            .unwrap_or(&[])
            .to_vec()
    }

    /// How many times `component`'s start was called (whatever the outcome).
    pub fn starts(&self, component: &str) -> usize {
        self.count(component, Phase::Start)
    }

    /// How many times `component`'s stop was called (whatever the outcome).
    pub fn stops(&self, component: &str) -> usize {
        self.count(component, Phase::Stop)
    }

    fn count(&self, component: &str, phase: Phase) -> usize {
        self.inner
            .record
            .lock()
            .events
            .iter()
            .filter(|e| e.component == component && e.phase == phase)
            .count()
    }

    /// Every probe that started successfully and has not been asked to stop: name → tag.
    pub fn running(&self) -> BTreeMap<String, String> {
        self.inner.record.lock().running.clone()
    }

    /// The tag of the running version of `component`, if one runs.
    pub fn running_tag(&self, component: &str) -> Option<String> {
        self.inner.record.lock().running.get(component).cloned()
    }

    /// Forgets the events (not which probes run), so long runs do not accumulate them.
    pub fn clear_events(&self) {
        self.inner.record.lock().events.clear();
    }

    /// Waits until `done` holds for this record; it is checked now and after every change.
    ///
    /// Bound it with `tokio::time::timeout` where the change may never come.
    pub async fn wait_until(&self, mut done: impl FnMut(&Lifecycle) -> bool) {
        let mut changes = self.inner.changed.subscribe();
        // The receiver only lends the value; the record is read through `self`.
        let _ = changes.wait_for(|()| done(self)).await;
    }

    pub(crate) fn record(&self, component: &str, tag: &str, phase: Phase) {
        {
            let mut record = self.inner.record.lock();
            record.events.push(Event {
                component: component.to_owned(),
                tag: tag.to_owned(),
                phase,
            });
            if phase == Phase::Stop {
                record.running.remove(component);
            }
        }
        self.inner.changed.send_replace(());
    }

    pub(crate) fn started(&self, component: &str, tag: &str) {
        self.inner
            .record
            .lock()
            .running
            .insert(component.to_owned(), tag.to_owned());
        self.inner.changed.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_record_counts_calls_and_tracks_what_runs() {
        let lifecycle = Lifecycle::new();
        lifecycle.record("a", "v1", Phase::Start);
        lifecycle.started("a", "v1");
        lifecycle.record("b", "", Phase::Start);
        assert_eq!(lifecycle.running_tag("a").as_deref(), Some("v1"));
        assert_eq!(lifecycle.running().len(), 1);
        let count = lifecycle.event_count();
        lifecycle.record("a", "v1", Phase::Stop);
        assert_eq!(lifecycle.events_since(count)[0].to_string(), "a:stop");
        assert_eq!((lifecycle.starts("a"), lifecycle.stops("a")), (1, 1));
        assert!(lifecycle.running().is_empty());
        assert_eq!(lifecycle.take_calls(), ["a:start", "b:start", "a:stop"]);
        assert_eq!(lifecycle.event_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_returns_once_the_record_shows_it() {
        let lifecycle = Lifecycle::new();
        let later = lifecycle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            later.record("a", "v2", Phase::Start);
            later.started("a", "v2");
        });
        let began = tokio::time::Instant::now();
        lifecycle
            .wait_until(|l| l.running_tag("a").as_deref() == Some("v2"))
            .await;
        assert_eq!(began.elapsed(), Duration::from_secs(1));
        // Already true: returns at once.
        lifecycle.wait_until(|l| l.starts("a") == 1).await;
    }
}
