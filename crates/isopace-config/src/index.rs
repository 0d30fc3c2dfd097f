//! The dot-path index of one tree generation: an open-addressed table built once per load,
//! so a read is one short hash and, almost always, one probe.
//!
//! Config paths are short (`server.http.port` is 16 bytes), so the hash reads the first and
//! last eight bytes with two loads and mixes them with one folded multiply, instead of
//! feeding a general-purpose hasher a byte at a time. The keys are the config file's own
//! paths, not attacker-chosen input, so collision resistance buys nothing here; a lookup
//! still compares the whole key, so a collision can only cost a probe, never a wrong value.

use serde_json::Value;

/// What the index knows about a path.
#[derive(Debug)]
pub(crate) enum Slot {
    /// A scalar or array, copied so the read needs no walk.
    Leaf(Value),
    /// An object: walk the tree (copying every subtree would make the index quadratic).
    Branch,
}

/// One bucket: the hash, the key (its two end words inline, so a short key compares without
/// following a pointer) and the slot.
#[derive(Debug)]
struct Bucket {
    /// `0` marks an empty bucket (a real hash is never `0`).
    hash: u64,
    ends: (u64, u64),
    path: Box<str>,
    slot: Slot,
}

/// A read-only map from dot path to [`Slot`], filled once.
#[derive(Debug)]
pub(crate) struct PathIndex {
    buckets: Box<[Bucket]>,
    len: usize,
    /// `64 - log2(bucket count)`: the bucket is the hash's top bits.
    shift: u32,
}

impl PathIndex {
    /// An index over `entries`. A path given twice keeps its last slot.
    pub(crate) fn new(entries: Vec<(String, Slot)>) -> PathIndex {
        // At most half full, so a miss stops at an empty bucket after a probe or two.
        let count = (entries.len() * 2).next_power_of_two().max(2);
        let mut index = PathIndex {
            buckets: (0..count)
                .map(|_| Bucket {
                    hash: 0,
                    ends: (0, 0),
                    path: Box::default(),
                    slot: Slot::Branch,
                })
                .collect(),
            len: 0,
            shift: 64 - count.trailing_zeros(),
        };
        for (path, slot) in entries {
            index.insert(path.into_boxed_str(), slot);
        }
        index
    }

    fn insert(&mut self, path: Box<str>, slot: Slot) {
        let bytes = path.as_bytes();
        let hash = hash_path(bytes);
        let ends = ends(bytes);
        let mask = self.buckets.len() - 1;
        let mut at = (hash >> self.shift) as usize;
        loop {
            let bucket = &mut self.buckets[at];
            if bucket.hash == 0 {
                self.len += 1;
                *bucket = Bucket {
                    hash,
                    ends,
                    path,
                    slot,
                };
                return;
            }
            if bucket.hash == hash && *bucket.path == *path {
                bucket.slot = slot;
                return;
            }
            at = (at + 1) & mask;
        }
    }

    /// The slot for `path`, if the tree has that path.
    #[inline(always)]
    pub(crate) fn get(&self, path: &str) -> Option<&Slot> {
        let bytes = path.as_bytes();
        let hash = hash_path(bytes);
        let mask = self.buckets.len() - 1;
        let mut at = (hash >> self.shift) as usize;
        loop {
            let bucket = &self.buckets[at];
            if bucket.hash == hash {
                // Equal hashes imply equal lengths only almost always: check. From 4 to 16
                // bytes the two end words cover every byte, so they settle it.
                let same = if (4..=16).contains(&bytes.len()) {
                    bucket.path.len() == bytes.len() && bucket.ends == ends(bytes)
                } else {
                    bucket.path.as_bytes() == bytes
                };
                if same {
                    return Some(&bucket.slot);
                }
            } else if bucket.hash == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// How many paths the index holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

/// Multiplies to 128 bits and folds the halves together: one instruction's worth of mixing.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[inline]
fn half_word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(word))
}

/// The first and last eight bytes of a key of 8 to 16 bytes (overlapping when shorter than
/// 16), the first and last four of a key of 4 to 7, or three of its bytes when shorter. For
/// keys of 4 to 16 bytes they cover every byte.
#[inline]
fn ends(bytes: &[u8]) -> (u64, u64) {
    let len = bytes.len();
    if len >= 8 {
        (word(bytes, 0), word(bytes, len - 8))
    } else if len >= 4 {
        (half_word(bytes, 0), half_word(bytes, len - 4))
    } else if len > 0 {
        let spread =
            u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16;
        (spread, 0)
    } else {
        (0, 0)
    }
}

/// A never-zero hash of a path.
#[inline]
fn hash_path(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let mut state = K2 ^ len as u64;
    let mut rest = bytes;
    while rest.len() > 16 {
        state = fold_mul(word(rest, 0) ^ K0, word(rest, 8) ^ state);
        rest = &rest[16..];
    }
    let (a, b) = ends(rest);
    fold_mul(a ^ K0, b ^ K1 ^ state) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(n: u64) -> Slot {
        Slot::Leaf(Value::from(n))
    }

    fn value(slot: Option<&Slot>) -> Option<&Value> {
        match slot? {
            Slot::Leaf(value) => Some(value),
            Slot::Branch => None,
        }
    }

    #[test]
    fn finds_every_path_of_every_length_and_nothing_else() {
        // Lengths 0..=40 cover the short, the 8-to-16 and the chunked hashing paths.
        let paths: Vec<String> = (0..=40)
            .flat_map(|len| {
                ["a", "b", "."]
                    .into_iter()
                    .map(move |fill| fill.repeat(len))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index = PathIndex::new(
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), leaf(i as u64)))
                .collect(),
        );
        assert_eq!(index.len(), paths.len());
        for (i, path) in paths.iter().enumerate() {
            assert_eq!(
                value(index.get(path)),
                Some(&Value::from(i as u64)),
                "{path:?}"
            );
            // Same length, one byte changed at the start, middle or end: a miss.
            for at in [0, path.len() / 2, path.len().saturating_sub(1)] {
                if path.is_empty() {
                    continue;
                }
                let mut other = path.clone().into_bytes();
                other[at] = b'z';
                let other = String::from_utf8(other).expect("ascii");
                assert!(index.get(&other).is_none(), "{other:?} is not in the index");
            }
        }
        assert!(index.get("c").is_none());
    }

    #[test]
    fn thousands_of_paths_and_a_repeated_path_keeps_the_last_slot() {
        let mut entries: Vec<(String, Slot)> = (0..5_000)
            .map(|i| (format!("section{}.key_{i}", i % 37), leaf(i)))
            .collect();
        entries.push(("section0.key_0".to_owned(), Slot::Branch));
        let index = PathIndex::new(entries);
        assert_eq!(index.len(), 5_000);
        assert!(matches!(index.get("section0.key_0"), Some(Slot::Branch)));
        for i in 1..5_000u64 {
            let path = format!("section{}.key_{i}", i % 37);
            assert_eq!(value(index.get(&path)), Some(&Value::from(i)));
        }
        assert!(index.get("section1.key_0").is_none());
    }

    #[test]
    fn an_empty_index_misses() {
        let index = PathIndex::new(Vec::new());
        assert!(index.get("").is_none());
        assert!(index.get("a.b").is_none());
    }
}
