//! Typed extensions: values the host or a daemon provides to components, looked up by type.

use std::{
    any::{Any, TypeId, type_name},
    collections::HashMap,
    fmt,
    sync::Arc,
};

use parking_lot::RwLock;

/// A map from a type to one value of that type, shared by every clone of an [`Env`].
///
/// This is how a host or a daemon hands components what they need without a global: the
/// daemon inserts its deployer handle or metrics registry once, and any component reads it
/// in `start` with [`Env::extension`]. Values are cloned out, so store cheap handles (an
/// `Arc`, a channel sender, a registry handle). In the manner of `http::Extensions`, the
/// type is the key: wrap a value in a newtype to give it a distinct meaning.
///
/// ```
/// use isopace_host::Env;
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct Region(&'static str);
///
/// let env = Env::default();
/// assert_eq!(env.insert_extension(Region("eu-west")), None);
/// // A component's env shares the host's extensions, including later inserts.
/// let scoped = env.for_component("edge");
/// assert_eq!(scoped.extension::<Region>(), Some(Region("eu-west")));
/// assert_eq!(scoped.extension::<u32>(), None);
/// ```
///
/// [`Env`]: crate::Env
/// [`Env::extension`]: crate::Env::extension
#[derive(Clone, Default)]
pub struct Extensions {
    map: Arc<RwLock<HashMap<TypeId, Entry>>>,
}

struct Entry {
    type_name: &'static str,
    value: Box<dyn Any + Send + Sync>,
}

impl Extensions {
    /// Stores `value`, returning the value of the same type it replaced.
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let entry = Entry {
            type_name: type_name::<T>(),
            value: Box::new(value),
        };
        self.map
            .write()
            .insert(TypeId::of::<T>(), entry)
            .and_then(|old| old.value.downcast::<T>().ok())
            .map(|old| *old)
    }

    /// A clone of the value of type `T`, if one was inserted.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map
            .read()
            .get(&TypeId::of::<T>())
            .and_then(|entry| entry.value.downcast_ref::<T>())
            .cloned()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map
            .write()
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.value.downcast::<T>().ok())
            .map(|old| *old)
    }

    /// Whether a value of type `T` is present.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.map.read().contains_key(&TypeId::of::<T>())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.read();
        let mut names: Vec<&str> = map.values().map(|e| e.type_name).collect();
        names.sort_unstable();
        f.debug_set().entries(names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_returns_the_previous_value() {
        let ext = Extensions::default();
        assert_eq!(ext.insert(1_u8), None);
        assert_eq!(ext.insert(2_u8), Some(1));
        assert_eq!(ext.get::<u8>(), Some(2));
        assert!(ext.contains::<u8>());
        assert_eq!(ext.remove::<u8>(), Some(2));
        assert!(!ext.contains::<u8>());
    }

    #[test]
    fn debug_lists_the_types_not_the_values() {
        let ext = Extensions::default();
        ext.insert(String::from("secret-value"));
        let text = format!("{ext:?}");
        assert!(text.contains("alloc::string::String"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
    }
}
