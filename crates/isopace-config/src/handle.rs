//! Typed handles: a value decoded once per tree generation, read with one atomic load.

use std::{
    fmt,
    marker::PhantomData,
    sync::{Arc, atomic::Ordering},
};

use arc_swap::ArcSwapOption;
use serde::de::DeserializeOwned;

use crate::{Config, Error};

/// The value at one path, decoded for one generation.
struct Decoded<T> {
    generation: u64,
    value: Result<Arc<T>, Error>,
}

/// A typed view of the value at one path, for hot paths.
///
/// The value is decoded at most once per tree generation and shared by all clones of the
/// handle; after that, [`Handle::get`] costs one atomic load and a compare. A reload is seen
/// by the next read. Each thread or task should own a clone (clones are cheap): reading needs
/// `&mut self` so the handle can keep its own pointer to the decoded value without reference
/// counting on every read. Where only `&self` is available, use [`Handle::load`].
///
/// ```
/// use isopace_config::{Config, LoadOptions};
///
/// let config = Config::parse(br#"{"link": {"pool": 4}}"#, LoadOptions::new()).unwrap();
/// let mut pool = config.handle::<u32>("link.pool");
/// assert_eq!(pool.get(), Some(&4));
/// ```
pub struct Handle<T> {
    config: Config,
    path: Arc<str>,
    shared: Arc<ArcSwapOption<Decoded<T>>>,
    local: Arc<Decoded<T>>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            config: self.config.clone(),
            path: self.path.clone(),
            shared: self.shared.clone(),
            local: self.local.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("path", &self.path)
            .field("type", &std::any::type_name::<T>())
            .field("generation", &self.local.generation)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Handle<T> {
    pub(crate) fn new(config: Config, path: &str) -> Self {
        let path: Arc<str> = path.into();
        let shared = Arc::new(ArcSwapOption::empty());
        let local = refresh(&config, &path, &shared);
        Handle {
            config,
            path,
            shared,
            local,
            _marker: PhantomData,
        }
    }

    /// The path this handle reads.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value decoded from the current tree, or `None` when the path is missing or does
    /// not decode as `T` ([`Handle::try_get`] says why).
    #[inline]
    pub fn get(&mut self) -> Option<&T> {
        self.try_get().ok()
    }

    /// The value decoded from the current tree, or why there is none.
    #[inline]
    pub fn try_get(&mut self) -> Result<&T, &Error> {
        let current = self.config.inner.generation.load(Ordering::Acquire);
        if self.local.generation != current {
            self.local = refresh(&self.config, &self.path, &self.shared);
        }
        self.local.value.as_deref()
    }

    /// The same value through `&self`: slower than [`Handle::get`] (an `arc-swap` load and a
    /// reference count increment per read) but still lock-free.
    pub fn load(&self) -> Option<Arc<T>> {
        refresh(&self.config, &self.path, &self.shared)
            .value
            .as_ref()
            .ok()
            .cloned()
    }

    /// The generation of the value the handle holds.
    pub fn generation(&self) -> u64 {
        self.local.generation
    }
}

/// The decoded value for the current tree: the shared one when it is current, otherwise
/// freshly decoded and published for the other clones.
#[cold]
fn refresh<T: DeserializeOwned>(
    config: &Config,
    path: &str,
    shared: &ArcSwapOption<Decoded<T>>,
) -> Arc<Decoded<T>> {
    let tree = config.inner.tree.load_full();
    if let Some(current) = shared.load_full()
        && current.generation == tree.generation
    {
        return current;
    }
    let decoded = Arc::new(Decoded {
        generation: tree.generation,
        value: tree.unmarshal_key(path).map(Arc::new),
    });
    shared.store(Some(decoded.clone()));
    decoded
}
