//! Gauges: the facade's gauge over an OpenTelemetry observable gauge, with the series kept
//! here so that `add` is exact and `remove` really drops a series.
//!
//! OpenTelemetry's synchronous gauge only records absolute values and never forgets an
//! attribute set. An observable gauge reports what its callback observes at each collection,
//! and the SDK exports only the attribute sets observed in the latest one: so the adapter
//! keeps each series' current value, `add` reads and writes it, and a removed series is
//! simply no longer observed.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use isopace_observe::{Attr, GaugeBackend};
use opentelemetry::{KeyValue, Value, metrics::Meter};
use parking_lot::RwLock;

use crate::attrs::key_values;

/// Series by [`series_key`], shared with the instrument's callback.
type SeriesMap = HashMap<String, Series>;

/// One attribute set and its current value (an `f64`, as bits).
struct Series {
    attributes: Vec<KeyValue>,
    value: AtomicU64,
}

/// An isopace gauge backed by an OpenTelemetry observable gauge.
pub(crate) struct OtelGauge {
    series: Arc<RwLock<SeriesMap>>,
}

impl OtelGauge {
    /// The gauge `name`, registered with `meter`. Create one per name: each registers a
    /// callback of its own.
    pub(crate) fn new(meter: &Meter, name: &str, description: String) -> Self {
        let series = Arc::new(RwLock::new(SeriesMap::new()));
        // Weak, so once every handle is gone the callback observes nothing rather than
        // exporting the last values for as long as the meter provider lives.
        let observed: Weak<RwLock<SeriesMap>> = Arc::downgrade(&series);
        meter
            .f64_observable_gauge(name.to_owned())
            .with_description(description)
            .with_callback(move |instrument| {
                let Some(series) = observed.upgrade() else {
                    return;
                };
                for s in series.read().values() {
                    instrument.observe(f64::from_bits(s.value.load(Relaxed)), &s.attributes);
                }
            })
            .build();
        OtelGauge { series }
    }

    /// Applies `f` to the value of the series for `attrs`, creating it at zero if new.
    fn update(&self, attrs: &[Attr<'_>], f: impl Fn(f64) -> f64) {
        let attributes = canonical(attrs);
        let key = series_key(&attributes);
        let apply = |s: &Series| {
            // `fetch_update` only fails when the closure returns `None`, which it never does.
            let _ = s.value.fetch_update(Relaxed, Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
        };
        if let Some(s) = self.series.read().get(&key) {
            return apply(s);
        }
        let mut map = self.series.write();
        let s = map.entry(key).or_insert_with(|| Series {
            attributes,
            value: AtomicU64::new(0.0_f64.to_bits()),
        });
        apply(s);
    }

    /// Drops every series whose attributes include each of `wanted` (from [`canonical`],
    /// not empty).
    pub(crate) fn forget(&self, wanted: &[KeyValue]) {
        self.series
            .write()
            .retain(|_, s| !wanted.iter().all(|w| s.attributes.contains(w)));
    }
}

impl GaugeBackend for OtelGauge {
    fn set(&self, value: f64, attrs: &[Attr<'_>]) {
        self.update(attrs, |_| value);
    }

    fn add(&self, delta: f64, attrs: &[Attr<'_>]) {
        self.update(attrs, |v| v + delta);
    }

    fn remove(&self, attrs: &[Attr<'_>]) {
        let key = series_key(&canonical(attrs));
        self.series.write().remove(&key);
    }
}

/// The key-values for `attrs`, sorted by key, one per key with the last one winning (as
/// the facade's other backends read a repeated key).
pub(crate) fn canonical(attrs: &[Attr<'_>]) -> Vec<KeyValue> {
    let mut kvs = key_values(attrs);
    // A stable sort keeps repeated keys in their given order, so the last is the one kept.
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: Vec<KeyValue> = Vec::with_capacity(kvs.len());
    for kv in kvs {
        match out.last_mut() {
            Some(last) if last.key == kv.key => *last = kv,
            _ => out.push(kv),
        }
    }
    out
}

/// A map key for a canonical attribute set: each key and typed value, so `"1"` and `1`
/// are different series, as they are to OpenTelemetry.
fn series_key(attributes: &[KeyValue]) -> String {
    let mut key = String::new();
    for kv in attributes {
        let tag = match &kv.value {
            Value::Bool(_) => 'b',
            Value::I64(_) => 'i',
            Value::F64(_) => 'f',
            Value::String(_) => 's',
            _ => 'a',
        };
        // Writing to a String cannot fail.
        let _ = write!(key, "{}\0{tag}{}\0", kv.key.as_str(), kv.value);
    }
    key
}

#[cfg(test)]
mod tests {
    use isopace_observe::attr;

    use super::*;

    #[test]
    fn canonical_sorts_by_key_and_keeps_the_last_of_a_repeated_key() {
        let kvs = canonical(&[attr("b", 1_i64), attr("a", "x"), attr("b", 2_i64)]);
        assert_eq!(
            kvs,
            vec![KeyValue::new("a", "x"), KeyValue::new("b", 2_i64)]
        );
    }

    #[test]
    fn series_keys_tell_types_apart_and_ignore_order() {
        let text = series_key(&canonical(&[attr("n", "1")]));
        let number = series_key(&canonical(&[attr("n", 1_i64)]));
        assert_ne!(text, number);
        assert_eq!(
            series_key(&canonical(&[attr("a", 1_u64), attr("b", true)])),
            series_key(&canonical(&[attr("b", true), attr("a", 1_i64)]))
        );
    }
}
