//! Descriptor migrations: deprecated fields a component type still accepts, moved to what
//! replaced them before a descriptor is checked or built, each with a deprecation warning.

use std::{fmt, path::PathBuf};

use isopace_host::RestartPolicy;

use crate::{Descriptor, DescriptorError, descriptor::default_restart};

/// Moves a descriptor's deprecated fields to their replacements; see
/// [`Registry::register_migration`](crate::Registry::register_migration).
pub(crate) type Migration =
    dyn Fn(&mut Descriptor) -> Result<Vec<Deprecation>, DescriptorError> + Send + Sync;

/// A field of a descriptor's `restart` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartField {
    /// `restart.policy`.
    Policy,
    /// `restart.backoff`.
    Backoff,
    /// `restart.max_backoff`.
    MaxBackoff,
    /// `restart.max_restarts`.
    MaxRestarts,
    /// `restart.window`.
    Window,
}

impl RestartField {
    /// Every field, in the order the descriptor documents them.
    pub const ALL: [RestartField; 5] = [
        RestartField::Policy,
        RestartField::Backoff,
        RestartField::MaxBackoff,
        RestartField::MaxRestarts,
        RestartField::Window,
    ];

    /// The field's path in a descriptor: `restart.policy`, `restart.backoff`, ...
    pub fn path(self) -> &'static str {
        match self {
            RestartField::Policy => "restart.policy",
            RestartField::Backoff => "restart.backoff",
            RestartField::MaxBackoff => "restart.max_backoff",
            RestartField::MaxRestarts => "restart.max_restarts",
            RestartField::Window => "restart.window",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Whether `a` and `b` differ in this field.
    fn differs(self, a: &RestartPolicy, b: &RestartPolicy) -> bool {
        match self {
            RestartField::Policy => a.policy != b.policy,
            RestartField::Backoff => a.backoff != b.backoff,
            RestartField::MaxBackoff => a.max_backoff != b.max_backoff,
            RestartField::MaxRestarts => a.max_restarts != b.max_restarts,
            RestartField::Window => a.window != b.window,
        }
    }
}

impl fmt::Display for RestartField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// The `restart` fields a descriptor sets itself (in its file, or with
/// [`Descriptor::restart`]), so a migration never overrides them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RestartFields(u8);

impl RestartFields {
    pub(crate) const ALL: RestartFields = RestartFields(0b1_1111);

    pub(crate) fn insert(&mut self, field: RestartField) {
        self.0 |= field.bit();
    }

    pub(crate) fn contains(self, field: RestartField) -> bool {
        self.0 & field.bit() != 0
    }
}

/// A deprecated descriptor field that a migration moved to its replacement.
///
/// [`Registry::migrate`](crate::Registry::migrate) logs each one as a warning; its display
/// names the file, the deprecated field and the one to use instead:
///
/// ```
/// use isopace_deploy::Deprecation;
///
/// let d = Deprecation::new("deploy/worker.json", "config.max_restarts", "restart.max_restarts");
/// assert_eq!(
///     d.to_string(),
///     "deploy/worker.json: `config.max_restarts` is deprecated; use `restart.max_restarts`"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deprecation {
    /// The descriptor's file; empty for a descriptor built in code.
    pub file: PathBuf,
    /// The deprecated field's path, such as `config.max_restarts`.
    pub field: String,
    /// The field to use instead, such as `restart.max_restarts`.
    pub replacement: String,
    /// Whether the descriptor sets the replacement too, which then wins: the deprecated
    /// value was dropped.
    pub overridden: bool,
}

impl Deprecation {
    /// `field` of the descriptor in `file` is deprecated in favour of `replacement`.
    pub fn new(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        replacement: impl Into<String>,
    ) -> Self {
        Deprecation {
            file: file.into(),
            field: field.into(),
            replacement: replacement.into(),
            overridden: false,
        }
    }
}

impl fmt::Display for Deprecation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}: ", self.file.display())?;
        }
        write!(
            f,
            "`{}` is deprecated; use `{}`",
            self.field, self.replacement
        )?;
        if self.overridden {
            write!(
                f,
                " (ignored here: the descriptor sets `{}` itself)",
                self.replacement
            )?;
        }
        Ok(())
    }
}

impl Descriptor {
    /// Whether the descriptor sets `field` of its restart policy itself: in its file's
    /// `restart` object, with [`restart`](Descriptor::restart), or by a value in the
    /// [`restart`](Descriptor::restart) field other than the default.
    ///
    /// ```
    /// use isopace_deploy::{Descriptor, RestartField};
    ///
    /// let d = Descriptor::parse(
    ///     r#"{"name": "w", "type": "exec", "restart": {"max_restarts": 5}}"#,
    ///     "w.json",
    /// )?;
    /// // 5 is the default, but the file says it.
    /// assert!(d.sets_restart(RestartField::MaxRestarts));
    /// assert!(!d.sets_restart(RestartField::Backoff));
    /// # Ok::<(), isopace_deploy::DescriptorError>(())
    /// ```
    pub fn sets_restart(&self, field: RestartField) -> bool {
        self.restart_given.contains(field) || field.differs(&self.restart, &default_restart())
    }

    /// For a migration: moves the value of the deprecated field `deprecated` (its path, such
    /// as `config.max_restarts`) to the restart field `field`, and returns the deprecation to
    /// report.
    ///
    /// `set` writes the value into the restart policy unless the descriptor
    /// [sets `field` itself](Descriptor::sets_restart), which then wins; the deprecation
    /// says so. Removing the deprecated field from the config is the migration's part.
    ///
    /// ```
    /// use isopace_deploy::{Descriptor, RestartField};
    ///
    /// let mut d = Descriptor::new("w", "exec");
    /// let deprecation = d.migrate_restart("config.max_restarts", RestartField::MaxRestarts, |r| {
    ///     r.max_restarts = 2
    /// });
    /// assert_eq!(d.restart.max_restarts, 2);
    /// assert_eq!(deprecation.replacement, "restart.max_restarts");
    /// assert!(!deprecation.overridden);
    /// ```
    pub fn migrate_restart(
        &mut self,
        deprecated: &str,
        field: RestartField,
        set: impl FnOnce(&mut RestartPolicy),
    ) -> Deprecation {
        let mut deprecation = Deprecation::new(&self.file, deprecated, field.path());
        if self.sets_restart(field) {
            deprecation.overridden = true;
        } else {
            set(&mut self.restart);
            self.restart_given.insert(field);
        }
        deprecation
    }

    /// For a migration: removes the key `key` from the config object and returns its value.
    pub fn take_config(&mut self, key: &str) -> Option<serde_json::Value> {
        let value = self.config.as_object_mut()?.remove(key)?;
        if let Some(located) = &mut self.located {
            // The file's text no longer says what the config says.
            located.config = None;
        }
        Some(value)
    }
}
