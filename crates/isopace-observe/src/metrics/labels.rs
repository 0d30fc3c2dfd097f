//! Label sets: the canonical (sanitised, sorted, deduplicated) form, hashed and compared
//! without allocating so a hit on an existing labelled series never touches the heap.

use std::fmt;

use crate::facade::{Attr, AttrValue};

/// A label set in canonical form: label names sanitised, sorted by name, one entry per name.
pub(super) trait LabelSet {
    /// How many labels.
    fn len(&self) -> usize;
    /// Writes the `i`th label name (sanitised).
    fn write_name(&self, i: usize, w: &mut dyn fmt::Write) -> fmt::Result;
    /// Writes the `i`th label value (unescaped).
    fn write_value(&self, i: usize, w: &mut dyn fmt::Write) -> fmt::Result;
}

/// The owned form kept with each labelled series.
pub(super) type OwnedLabels = Box<[(String, String)]>;

impl LabelSet for [(String, String)] {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn write_name(&self, i: usize, w: &mut dyn fmt::Write) -> fmt::Result {
        w.write_str(&self[i].0)
    }
    fn write_value(&self, i: usize, w: &mut dyn fmt::Write) -> fmt::Result {
        w.write_str(&self[i].1)
    }
}

/// Label sets up to this size are sorted in a stack buffer.
const INLINE: usize = 16;

/// A canonical view over caller-supplied attributes.
pub(super) struct SortedAttrs<'s, 'a> {
    attrs: &'s [Attr<'a>],
    order: Order,
}

enum Order {
    Inline { buf: [usize; INLINE], len: usize },
    Heap(Vec<usize>),
}

impl Order {
    fn as_slice(&self) -> &[usize] {
        match self {
            Order::Inline { buf, len } => &buf[..*len],
            Order::Heap(v) => v,
        }
    }
}

impl<'s, 'a> SortedAttrs<'s, 'a> {
    /// Sorts `attrs` by sanitised name; of repeated names the last one wins.
    pub(super) fn new(attrs: &'s [Attr<'a>]) -> Self {
        let cmp = |a: &usize, b: &usize| {
            label_name_chars(attrs[*a].key)
                .cmp(label_name_chars(attrs[*b].key))
                .then(a.cmp(b))
        };
        let same =
            |a: usize, b: usize| label_name_chars(attrs[a].key).eq(label_name_chars(attrs[b].key));
        let order = if attrs.len() <= INLINE {
            let mut buf = [0; INLINE];
            for (i, slot) in buf.iter_mut().enumerate().take(attrs.len()) {
                *slot = i;
            }
            // Unstable sort with the index as tie-break: stable in effect, and never allocates.
            buf[..attrs.len()].sort_unstable_by(cmp);
            let len = dedup_keep_last(&mut buf[..attrs.len()], same);
            Order::Inline { buf, len }
        } else {
            let mut v: Vec<usize> = (0..attrs.len()).collect();
            v.sort_unstable_by(cmp);
            let len = dedup_keep_last(&mut v, same);
            v.truncate(len);
            Order::Heap(v)
        };
        SortedAttrs { attrs, order }
    }

    fn attr(&self, i: usize) -> &Attr<'a> {
        &self.attrs[self.order.as_slice()[i]]
    }
}

/// Compacts runs of equal names to their last element; returns the new length.
fn dedup_keep_last(idx: &mut [usize], same: impl Fn(usize, usize) -> bool) -> usize {
    let mut out = 0;
    for i in 0..idx.len() {
        if i + 1 < idx.len() && same(idx[i], idx[i + 1]) {
            continue;
        }
        idx[out] = idx[i];
        out += 1;
    }
    out
}

impl LabelSet for SortedAttrs<'_, '_> {
    fn len(&self) -> usize {
        self.order.as_slice().len()
    }
    fn write_name(&self, i: usize, w: &mut dyn fmt::Write) -> fmt::Result {
        let key = self.attr(i).key;
        if is_label_name(key) {
            w.write_str(key)
        } else {
            label_name_chars(key).try_for_each(|c| w.write_char(c))
        }
    }
    fn write_value(&self, i: usize, w: &mut dyn fmt::Write) -> fmt::Result {
        // Text and booleans skip the formatting machinery: this runs twice per labelled add.
        match &self.attr(i).value {
            AttrValue::Str(s) => w.write_str(s),
            AttrValue::Bool(b) => w.write_str(if *b { "true" } else { "false" }),
            v => write!(w, "{v}"),
        }
    }
}

/// Whether `name` is a valid label name as it is.
fn is_label_name(name: &str) -> bool {
    name.bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
        && !name.is_empty()
}

/// A label name as Prometheus accepts it (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become
/// `_`, a leading digit gets a `_` prefix, and an empty name becomes `_`.
pub(super) fn label_name_chars(name: &str) -> impl Iterator<Item = char> + '_ {
    let prefix = match name.chars().next() {
        None => Some('_'),
        Some(c) if c.is_ascii_digit() => Some('_'),
        Some(_) => None,
    };
    prefix.into_iter().chain(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }))
}

/// Hashes a label set; equal sets hash equally whichever [`LabelSet`] form they come in.
pub(super) fn hash(set: &(impl LabelSet + ?Sized), seed: u64) -> u64 {
    // A byte-at-a-time hash is independent of how `Display` splits its writes, which
    // `std::hash::Hasher` does not promise; collisions are resolved by a full comparison.
    let mut h = Fnv(seed);
    for i in 0..set.len() {
        // Writing into `Fnv` cannot fail.
        let _ = set.write_name(i, &mut h);
        h.byte(0xff);
        let _ = set.write_value(i, &mut h);
        h.byte(0xfe);
    }
    mix(h.0)
}

struct Fnv(u64);

impl Fnv {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

impl fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.byte(b));
        Ok(())
    }
}

/// A final avalanche so the hash table's bucket bits are well spread.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether `set` equals the stored `owned` labels.
pub(super) fn matches(set: &(impl LabelSet + ?Sized), owned: &[(String, String)]) -> bool {
    set.len() == owned.len()
        && owned.iter().enumerate().all(|(i, (name, value))| {
            Expect::check(name, |w| set.write_name(i, w))
                && Expect::check(value, |w| set.write_value(i, w))
        })
}

/// A writer that checks its input against an expected string as it streams in.
struct Expect<'e> {
    rest: &'e str,
}

impl<'e> Expect<'e> {
    fn check(expected: &'e str, write: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) -> bool {
        let mut e = Expect { rest: expected };
        write(&mut e).is_ok() && e.rest.is_empty()
    }
}

impl fmt::Write for Expect<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

/// The owned, canonical copy of a label set.
pub(super) fn to_owned(set: &(impl LabelSet + ?Sized)) -> OwnedLabels {
    (0..set.len())
        .map(|i| {
            let mut name = String::new();
            let mut value = String::new();
            // Writing into a `String` cannot fail.
            let _ = set.write_name(i, &mut name);
            let _ = set.write_value(i, &mut value);
            (name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facade::attr;

    #[test]
    fn attrs_are_sorted_sanitised_and_deduplicated_with_the_last_value_winning() {
        let attrs = [
            attr("b", 1_i64),
            attr("http.method", "GET"),
            attr("9x", true),
            attr("b", 2_u64),
        ];
        let sorted = SortedAttrs::new(&attrs);
        let owned = to_owned(&sorted);
        let expected: Vec<(String, String)> = [("_9x", "true"), ("b", "2"), ("http_method", "GET")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(&*owned, expected.as_slice());
        assert!(matches(&sorted, &owned));
        assert_eq!(hash(&sorted, 7), hash(&*owned, 7));
    }

    #[test]
    fn different_values_do_not_match() {
        let a = [attr("k", "v1")];
        let b = [attr("k", "v2")];
        let owned = to_owned(&SortedAttrs::new(&a));
        assert!(!matches(&SortedAttrs::new(&b), &owned));
        assert!(!matches(&SortedAttrs::new(&[attr("k", "v")]), &owned));
    }

    #[test]
    fn large_label_sets_take_the_heap_path_and_agree() {
        let names: Vec<String> = (0..20).rev().map(|i| format!("k{i:02}")).collect();
        let attrs: Vec<Attr<'_>> = names.iter().map(|n| attr(n, n.as_str())).collect();
        let sorted = SortedAttrs::new(&attrs);
        let owned = to_owned(&sorted);
        assert_eq!(owned.len(), 20);
        assert_eq!(owned[0].0, "k00");
        assert!(matches(&sorted, &owned));
    }
}
