//! A per-thread cache of each config's current tree, so a getter on [`Config`](crate::Config)
//! costs a thread-local access and one atomic load instead of taking an `arc-swap` guard
//! (which writes to the thread's debt slot twice per read).
//!
//! Each thread keeps the tree it last read for up to [`SLOTS`] configs. A cached tree is used
//! only while its generation is the config's current one, so a reload is seen by the next
//! read on every thread. The cost is memory: an old tree stays alive until every thread that
//! cached it reads that config again, caches other configs, or exits.

use std::{
    cell::RefCell,
    sync::{Arc, Weak, atomic::Ordering},
};

use crate::{config::Inner, tree::Tree};

/// How many configs one thread keeps a tree for; a daemon typically has one.
const SLOTS: usize = 4;

struct Cached {
    /// The config's address: with `config` holding the allocation, no other config can
    /// have it while this entry exists.
    id: usize,
    /// Weak, so the cache never keeps a config alive.
    config: Weak<Inner>,
    tree: Arc<Tree>,
}

thread_local! {
    static TREES: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}

/// Runs `read` on the current tree of `config`.
#[inline(always)]
pub(crate) fn with_tree<R>(config: &Arc<Inner>, read: impl FnOnce(&Tree) -> R) -> R {
    let current = config.generation.load(Ordering::Acquire);
    let id = Arc::as_ptr(config) as usize;
    let mut read = Some(read);
    let mut value = None;
    let _ = TREES.try_with(|trees| {
        // Busy only when a read runs inside another read's `read` (a `Deserialize` impl
        // that reads the config) and misses: the inner read then takes the slow path.
        let Ok(trees) = trees.try_borrow() else {
            return;
        };
        if let Some(cached) = trees.iter().find(|cached| cached.id == id)
            && cached.tree.generation == current
            && let Some(read) = read.take()
        {
            value = Some(read(&cached.tree));
        }
    });
    match (value, read) {
        (Some(value), _) => value,
        (None, Some(read)) => miss(config, read),
        (None, None) => unreachable!("`read` is taken only when it runs"),
    }
}

/// Loads the current tree, caches it for this thread and reads it.
#[cold]
#[inline(never)]
fn miss<R>(config: &Arc<Inner>, read: impl FnOnce(&Tree) -> R) -> R {
    let tree = config.tree.load_full();
    remember(config, &tree);
    read(&tree)
}

#[cold]
fn remember(config: &Arc<Inner>, tree: &Arc<Tree>) {
    // During thread teardown, or with the cache borrowed by an enclosing read, skip caching.
    let _ = TREES.try_with(|trees| {
        let Ok(mut trees) = trees.try_borrow_mut() else {
            return;
        };
        trees.retain(|cached| cached.config.strong_count() > 0);
        let id = Arc::as_ptr(config) as usize;
        if let Some(cached) = trees.iter_mut().find(|cached| cached.id == id) {
            cached.tree = Arc::clone(tree);
            return;
        }
        if trees.len() == SLOTS {
            trees.remove(0);
        }
        trees.push(Cached {
            id,
            config: Arc::downgrade(config),
            tree: Arc::clone(tree),
        });
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{Config, LoadOptions};

    fn config(text: &str) -> Config {
        Config::parse(text.as_bytes(), LoadOptions::new()).expect("valid json")
    }

    #[test]
    fn each_config_reads_its_own_tree_beyond_the_cache_size() {
        let configs: Vec<Config> = (0..super::SLOTS as u64 * 3)
            .map(|i| config(&format!(r#"{{"n": {i}}}"#)))
            .collect();
        for _ in 0..3 {
            for (i, config) in configs.iter().enumerate() {
                assert_eq!(config.int("n", -1), i as i64);
            }
        }
    }

    #[test]
    fn a_reload_is_seen_by_the_next_read_on_a_thread_that_cached_the_old_tree() {
        let config = config(r#"{"n": 1}"#);
        assert_eq!(config.int("n", 0), 1);
        config.install(br#"{"n": 2}"#).expect("install");
        assert_eq!(config.int("n", 0), 2);
        // Another thread that cached generation 1 earlier also sees 2.
        let other = config.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(other.int("n", 0), 2);
                other.install(br#"{"n": 3}"#).expect("install");
                assert_eq!(other.int("n", 0), 3);
            });
        });
        assert_eq!(config.int("n", 0), 3);
    }

    #[test]
    fn the_cache_does_not_keep_a_config_alive() {
        let config = config(r#"{"n": 1}"#);
        assert_eq!(config.int("n", 0), 1);
        let weak = Arc::downgrade(&config.inner);
        drop(config);
        assert_eq!(weak.strong_count(), 0);
        // The next miss forgets the dropped config.
        let other = self::config(r#"{"n": 2}"#);
        assert_eq!(other.int("n", 0), 2);
        super::TREES.with(|trees| {
            assert!(
                trees
                    .borrow()
                    .iter()
                    .all(|cached| cached.config.strong_count() > 0)
            );
        });
    }

    #[test]
    fn a_read_inside_a_read_works() {
        #[derive(Debug)]
        struct Nested(i64);
        thread_local! {
            static CONFIG: std::cell::RefCell<Option<Config>> = const { std::cell::RefCell::new(None) };
        }
        impl<'de> serde::Deserialize<'de> for Nested {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let outer = i64::deserialize(d)?;
                // Reads the config (and another one, which misses) while the outer read runs.
                let inner = CONFIG.with(|c| c.borrow().as_ref().map(|c| c.int("m", 0)));
                let fresh = config(r#"{"k": 5}"#).int("k", 0);
                Ok(Nested(outer + inner.unwrap_or(0) + fresh))
            }
        }
        let config = config(r#"{"n": 1, "m": 10}"#);
        CONFIG.with(|c| *c.borrow_mut() = Some(config.clone()));
        let nested: Nested = config.unmarshal_key("n").expect("decodes");
        assert_eq!(nested.0, 16);
    }
}
