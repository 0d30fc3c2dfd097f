//! The cells that hold metric values, and a family of them keyed by label set.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
};

use parking_lot::RwLock;

use crate::facade::Attr;

use super::{
    labels::{self, LabelSet, OwnedLabels, SortedAttrs},
    sharded::ShardedCounter,
};

/// A gauge: one `f64`, kept as its bits.
///
/// [`UNSET`] marks a series never written or removed since: it reads as zero, but does not
/// count as having recorded something, so a removed unlabelled series stays hidden.
pub(super) struct GaugeCell(AtomicU64);

/// A NaN payload that neither `set` nor `add` ever stores (they store NaN as the canonical
/// one), so it cannot be mistaken for a value.
const UNSET: u64 = 0x7ff8_0000_0000_0ace;

impl Default for GaugeCell {
    fn default() -> Self {
        GaugeCell(AtomicU64::new(UNSET))
    }
}

/// `v`'s bits, with every NaN made the canonical one so no value collides with [`UNSET`].
fn gauge_bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

impl GaugeCell {
    pub(super) fn set(&self, v: f64) {
        self.0.store(gauge_bits(v), Relaxed);
    }
    pub(super) fn add(&self, d: f64) {
        // `fetch_update` only fails when the closure returns `None`, which it never does.
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some(gauge_bits(value_of(bits) + d))
        });
    }
    /// Back to never written.
    pub(super) fn clear(&self) {
        self.0.store(UNSET, Relaxed);
    }
    pub(super) fn get(&self) -> f64 {
        value_of(self.0.load(Relaxed))
    }
    fn is_set(&self) -> bool {
        self.0.load(Relaxed) != UNSET
    }
}

fn value_of(bits: u64) -> f64 {
    if bits == UNSET {
        0.0
    } else {
        f64::from_bits(bits)
    }
}

/// A histogram: per-bucket counts (not cumulative; the encoder sums them), the last one for
/// values above every bound, and the sum of observations.
pub(super) struct HistogramCell {
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A point-in-time copy of a histogram series.
pub(super) struct HistogramSnapshot {
    /// `(upper bound, cumulative count)` for each finite bound.
    pub(super) buckets: Vec<(f64, u64)>,
    pub(super) count: u64,
    pub(super) sum: f64,
}

impl HistogramCell {
    pub(super) fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        HistogramCell {
            bounds,
            counts,
            sum: AtomicU64::new(0.0_f64.to_bits()),
        }
    }

    pub(super) fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        // `fetch_update` only fails when the closure returns `None`, which it never does.
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    pub(super) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub(super) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(self.counts.iter())
            .map(|(b, c)| {
                cumulative += c.load(Relaxed);
                (*b, cumulative)
            })
            .collect();
        // The count is the sum of the buckets so `+Inf` always equals `_count`.
        let count = cumulative + self.counts[self.bounds.len()].load(Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum: f64::from_bits(self.sum.load(Relaxed)),
        }
    }
}

/// What a family needs from its cells.
pub(crate) trait Series: Send + Sync + 'static {
    /// The cell of a labelled series.
    type Labelled: Send + Sync + 'static;
    /// What rendering reads from a cell.
    type Value;
    /// An empty labelled cell configured like `self`.
    fn new_labelled(&self) -> Self::Labelled;
    /// Reads the unlabelled cell.
    fn read(&self) -> Self::Value;
    /// Reads a labelled cell.
    fn read_labelled(cell: &Self::Labelled) -> Self::Value;
    /// Whether the cell has recorded anything (decides whether an unlabelled series renders
    /// next to labelled ones).
    fn is_touched(&self) -> bool;
}

/// The unlabelled series of a counter is sharded per thread. Labelled series are one atomic
/// each: finding one takes the map's read lock, a shared atomic operation already, so
/// sharding them would cost memory for little.
impl Series for ShardedCounter {
    type Labelled = AtomicU64;
    type Value = u64;
    fn new_labelled(&self) -> AtomicU64 {
        AtomicU64::new(0)
    }
    fn read(&self) -> u64 {
        self.get()
    }
    fn read_labelled(cell: &AtomicU64) -> u64 {
        cell.load(Relaxed)
    }
    fn is_touched(&self) -> bool {
        self.get() != 0
    }
}

impl Series for GaugeCell {
    type Labelled = GaugeCell;
    type Value = f64;
    fn new_labelled(&self) -> Self {
        GaugeCell::default()
    }
    fn read(&self) -> f64 {
        self.get()
    }
    fn read_labelled(cell: &Self) -> f64 {
        cell.get()
    }
    fn is_touched(&self) -> bool {
        self.is_set()
    }
}

impl Series for HistogramCell {
    type Labelled = HistogramCell;
    type Value = HistogramSnapshot;
    fn new_labelled(&self) -> Self {
        HistogramCell::new(self.bounds.clone())
    }
    fn read(&self) -> HistogramSnapshot {
        self.snapshot()
    }
    fn read_labelled(cell: &Self) -> HistogramSnapshot {
        cell.snapshot()
    }
    fn is_touched(&self) -> bool {
        self.count() != 0
    }
}

/// A labelled series.
pub(super) struct Labelled<S> {
    pub(super) labels: OwnedLabels,
    pub(super) cell: S,
    /// Set when the series is dropped from its family, so a holder of this handle (a span
    /// in flight) knows to look its labels up again rather than write into a cell nobody
    /// renders.
    dropped: AtomicBool,
}

impl<S> Labelled<S> {
    /// Whether the series was dropped from its family after this handle was taken.
    pub(super) fn is_dropped(&self) -> bool {
        self.dropped.load(Relaxed)
    }
}

/// The label hashes are already well mixed, so the map need not hash them again.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type SeriesMap<L> = HashMap<u64, Vec<Arc<Labelled<L>>>, BuildHasherDefault<Identity>>;

/// All series of one metric: the unlabelled one inline, so an add without attributes is one
/// atomic operation, and the labelled ones in a map keyed by the hash of the label set.
///
/// Dropping series ([`forget`](Self::forget), [`remove_labelled`](Self::remove_labelled)) leaves the family
/// itself in place, so handles on it stay valid: a later write through one finds no series
/// and creates a fresh one, starting from zero.
pub(crate) struct Family<S: Series> {
    pub(super) unlabelled: S,
    labelled: RwLock<SeriesMap<S::Labelled>>,
    /// Whether the unlabelled series renders before it has recorded anything. True until
    /// the metric gets a labelled series (or, for a gauge, its unlabelled series is removed):
    /// a metric registered but unused shows up as a zero, and one whose labelled series
    /// were all forgotten disappears rather than coming back as that zero.
    show_idle: AtomicBool,
    seed: u64,
}

impl<S: Series> Family<S> {
    pub(super) fn new(unlabelled: S) -> Self {
        // A random seed per family, so label sets crafted to collide are hard to come by.
        let seed = RandomState::new().build_hasher().finish();
        Family {
            unlabelled,
            labelled: RwLock::new(SeriesMap::default()),
            show_idle: AtomicBool::new(true),
            seed,
        }
    }

    /// Runs `f` on the labelled series for `set` (which must not be empty), creating it on
    /// first use. An existing series is found under the read lock without allocating.
    #[inline]
    pub(super) fn with<R>(
        &self,
        set: &(impl LabelSet + ?Sized),
        f: impl FnOnce(&S::Labelled) -> R,
    ) -> R {
        debug_assert!(set.len() > 0, "the unlabelled series is `self.unlabelled`");
        let h = labels::hash(set, self.seed);
        {
            let map = self.labelled.read();
            if let Some(s) = find(&map, h, set) {
                return f(&s.cell);
            }
        }
        f(&self.insert(h, set).cell)
    }

    /// The series for `set` as a handle that outlives the lock, or `None` for the unlabelled one.
    pub(super) fn labelled(
        &self,
        set: &(impl LabelSet + ?Sized),
    ) -> Option<Arc<Labelled<S::Labelled>>> {
        if set.len() == 0 {
            return None;
        }
        let h = labels::hash(set, self.seed);
        if let Some(s) = find(&self.labelled.read(), h, set) {
            return Some(s.clone());
        }
        Some(self.insert(h, set))
    }

    #[cold]
    fn insert(&self, h: u64, set: &(impl LabelSet + ?Sized)) -> Arc<Labelled<S::Labelled>> {
        let mut map = self.labelled.write();
        if let Some(s) = find(&map, h, set) {
            return s.clone();
        }
        let s = Arc::new(Labelled {
            labels: labels::to_owned(set),
            cell: self.unlabelled.new_labelled(),
            dropped: AtomicBool::new(false),
        });
        map.entry(h).or_default().push(s.clone());
        self.show_idle.store(false, Relaxed);
        s
    }

    /// Drops every labelled series whose labels include each of `wanted` (a canonical,
    /// non-empty label set). The unlabelled series includes no label, so it stays.
    pub(super) fn forget(&self, wanted: &[(String, String)]) {
        debug_assert!(!wanted.is_empty(), "an empty set would match every series");
        self.labelled.write().retain(|_, bucket| {
            bucket.retain(|s| {
                let drop = wanted.iter().all(|w| s.labels.contains(w));
                if drop {
                    s.dropped.store(true, Relaxed);
                }
                !drop
            });
            !bucket.is_empty()
        });
    }

    /// Drops the labelled series for exactly `set` (which must not be empty), if there is one.
    pub(super) fn remove_labelled(&self, set: &(impl LabelSet + ?Sized)) {
        debug_assert!(set.len() > 0, "the unlabelled series is `self.unlabelled`");
        let h = labels::hash(set, self.seed);
        let mut map = self.labelled.write();
        let Some(bucket) = map.get_mut(&h) else {
            return;
        };
        bucket.retain(|s| {
            let drop = labels::matches(set, &s.labels);
            if drop {
                s.dropped.store(true, Relaxed);
            }
            !drop
        });
        if bucket.is_empty() {
            map.remove(&h);
        }
    }

    /// Stops an untouched unlabelled series from rendering (see `show_idle`).
    pub(super) fn hide_idle(&self) {
        self.show_idle.store(false, Relaxed);
    }

    /// Every series to render, sorted by label set: the unlabelled one first when it has
    /// recorded something, or when there are no labelled ones and there never were (see
    /// `show_idle`). Empty when the metric has nothing to show.
    pub(super) fn series(&self) -> Vec<(OwnedLabels, S::Value)> {
        let mut out: Vec<(OwnedLabels, S::Value)> = {
            let map = self.labelled.read();
            map.values()
                .flatten()
                .map(|s| (s.labels.clone(), S::read_labelled(&s.cell)))
                .collect()
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if self.unlabelled.is_touched() || (out.is_empty() && self.show_idle.load(Relaxed)) {
            out.insert(0, (OwnedLabels::default(), self.unlabelled.read()));
        }
        out
    }
}

impl<S: Series<Labelled = S>> Family<S> {
    /// Runs `f` on the series for `attrs`, labelled or not.
    #[inline]
    pub(super) fn with_any<R>(&self, attrs: &[Attr<'_>], f: impl FnOnce(&S) -> R) -> R {
        if attrs.is_empty() {
            f(&self.unlabelled)
        } else {
            self.with(&SortedAttrs::new(attrs), f)
        }
    }
}

fn find<'m, L>(
    map: &'m SeriesMap<L>,
    h: u64,
    set: &(impl LabelSet + ?Sized),
) -> Option<&'m Arc<Labelled<L>>> {
    map.get(&h)?
        .iter()
        .find(|s| labels::matches(set, &s.labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_nan_is_ignored() {
        let h = HistogramCell::new(Arc::from([1.0, 2.0]));
        for v in [0.5, 1.0, 1.5, 3.0, f64::NAN, f64::INFINITY] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (2.0, 3)]);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum, f64::INFINITY);
    }

    #[test]
    fn no_gauge_write_stores_the_unset_marker() {
        let g = GaugeCell::default();
        assert!(!g.is_set());
        assert_eq!(g.get(), 0.0);
        g.set(f64::from_bits(UNSET));
        assert!(g.is_set() && g.get().is_nan());
        g.clear();
        g.add(f64::from_bits(UNSET));
        assert!(g.is_set() && g.get().is_nan());
        g.clear();
        g.add(-2.5);
        assert_eq!(g.get(), -2.5);
    }
}
