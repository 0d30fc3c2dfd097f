//! `Config`: the shared, lock-free handle on the current tree, and how it is loaded and reloaded.

use std::{
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    Entry, Error, Format, Handle, Snapshot, Source, env,
    file::{ReadError, read_regular_file},
    format::parse_tree,
    local,
    tree::{Tree, redact_value},
};

/// What a validator returns when it rejects a tree: any error, so one that comes from I/O or
/// a parser keeps its type for the caller.
type ValidatorError = Box<dyn std::error::Error + Send + Sync>;

type Validator = Arc<dyn Fn(&Value) -> Result<(), ValidatorError> + Send + Sync>;

/// How [`Config::load`] and [`Config::parse`] build the tree, kept for every reload.
#[derive(Clone, Default)]
#[must_use]
pub struct LoadOptions {
    env_prefix: String,
    environ: Option<Arc<[String]>>,
    format: Option<Format>,
    validators: Vec<Validator>,
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment may hold secrets: show its size, never its values.
        f.debug_struct("LoadOptions")
            .field("env_prefix", &self.env_prefix)
            .field("environ", &self.environ.as_ref().map(|e| e.len()))
            .field("format", &self.format)
            .field("validators", &self.validators.len())
            .finish()
    }
}

impl LoadOptions {
    /// No environment overrides, the process environment, format from the file extension.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables environment overrides: `PREFIX_A_B=v` sets `a.b`. Empty (the default) disables
    /// them. The prefix is matched case-sensitively, followed by `_`; the `_` may be given
    /// with the prefix, so `ISO_` and `ISO` are the same prefix.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        // `ISO_` would otherwise select `ISO__...` variables only, applying nothing.
        if prefix.ends_with('_') {
            prefix.pop();
        }
        self.env_prefix = prefix;
        self
    }

    /// Reads overrides from this list of `KEY=value` entries instead of the process
    /// environment (for tests). Entries without `=` are ignored.
    pub fn environ(mut self, environ: Vec<String>) -> Self {
        self.environ = Some(environ.into());
        self
    }

    /// Reads the input as this format instead of guessing from the file extension (bytes
    /// given to [`Config::parse`] are JSON unless told otherwise).
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Adds a check on the finished tree (after overrides). Loading fails, and a reload
    /// keeps the previous tree, when any validator returns an error; that error is the
    /// [`Error::Invalid`]'s source. A message is an error too: `Err("port must be set".into())`.
    pub fn validator(
        mut self,
        check: impl Fn(&Value) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.validators.push(Arc::new(check));
        self
    }
}

/// A hierarchical configuration tree, addressed by dot paths (`"link.timeout"`), loaded from a
/// file or bytes and overlaid with environment variables.
///
/// Clones share one tree, so a reload through any clone is seen by all. Reads never block: the
/// current tree is behind an [`arc_swap::ArcSwap`], and a reload builds a new tree beside it and
/// swaps the pointer.
#[derive(Clone, Default)]
pub struct Config {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) tree: ArcSwap<Tree>,
    /// Mirrors `tree.generation`, stored after each swap, so a [`Handle`] can tell with one
    /// atomic load whether its decoded value is still current.
    pub(crate) generation: AtomicU64,
    path: Option<PathBuf>,
    options: LoadOptions,
    /// Serialises reloads so generations increase by one per successful reload.
    reload_lock: Mutex<()>,
    changes: watch::Sender<u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner::new(Tree::default(), None, LoadOptions::default())
    }
}

impl Inner {
    fn new(tree: Tree, path: Option<PathBuf>, options: LoadOptions) -> Self {
        let generation = tree.generation;
        Inner {
            tree: ArcSwap::from_pointee(tree),
            generation: AtomicU64::new(generation),
            path,
            options,
            reload_lock: Mutex::new(()),
            changes: watch::Sender::new(generation),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.inner.path)
            .field("generation", &self.generation())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A hash of file content; the watcher compares it to skip events that changed nothing.
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn build(
    bytes: &[u8],
    file: Option<&Path>,
    options: &LoadOptions,
    generation: u64,
) -> Result<Tree, Error> {
    let format = options
        .format
        .or_else(|| file.map(Format::from_path))
        .unwrap_or_default();
    let mut root = parse_tree(bytes, format, file)?;
    let vars = env::environment(options.environ.as_deref());
    let origins = env::apply(&mut root, &options.env_prefix, &vars);
    let root = Value::Object(root);
    for check in &options.validators {
        check(&root).map_err(|source| Error::Invalid {
            file: file.map(Path::to_path_buf),
            source,
        })?;
    }
    Ok(Tree::new(
        root,
        origins,
        file.map(Path::to_path_buf),
        generation,
        digest(bytes),
    ))
}

/// The largest config file read: 16 MiB. A larger file is rejected with
/// [`Error::TooLarge`] before it is read, so a wrong path (a log, a disk image) cannot
/// exhaust memory. Real configs are kilobytes; the parsed tree takes several times the
/// file's size.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the config file whole, within [`MAX_CONFIG_BYTES`]. Blocking file I/O: async code
/// runs it on a blocking thread.
///
/// Only a regular file is read. Opening a FIFO for reading waits for a writer, forever if
/// none comes, and a device may never end. So the type is checked after following links,
/// the file is opened without blocking, and the type and size are checked again on what was
/// opened, in case the path was swapped in between.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    read_regular_file(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        ReadError::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        ReadError::NotRegular(found) => Error::NotRegularFile {
            path: path.to_path_buf(),
            found,
        },
        ReadError::TooLarge { len, limit } => Error::TooLarge {
            path: path.to_path_buf(),
            len,
            limit,
        },
    })
}

impl Config {
    /// Reads and parses a config file, then applies environment overrides and validators.
    ///
    /// The format follows the extension: `.toml` (feature `toml`), `.yaml`/`.yml` (feature
    /// `yaml`), anything else JSON; [`LoadOptions::format`] overrides it.
    ///
    /// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: anything else (a FIFO, a
    /// device, a directory) is [`Error::NotRegularFile`], a larger file [`Error::TooLarge`],
    /// both without reading it. This is blocking file I/O; async code calls it through
    /// `tokio::task::spawn_blocking`.
    pub fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Config, Error> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let tree = build(&bytes, Some(path), &options, 0)?;
        Ok(Config {
            inner: Arc::new(Inner::new(tree, Some(path.to_path_buf()), options)),
        })
    }

    /// Builds a config from bytes (JSON unless [`LoadOptions::format`] says otherwise). There
    /// is no file behind it, so [`Config::reload`] does nothing.
    pub fn parse(bytes: &[u8], options: LoadOptions) -> Result<Config, Error> {
        let tree = build(bytes, None, &options, 0)?;
        Ok(Config {
            inner: Arc::new(Inner::new(tree, None, options)),
        })
    }

    /// The value at a dot path, cloned; numeric segments index arrays and `""` is the whole
    /// tree.
    pub fn get(&self, path: &str) -> Option<Value> {
        local::with_tree(&self.inner, |tree| tree.get(path))
    }

    /// The text at `path`, or `default`. Numbers and bools are rendered as text (as the
    /// environment variable spelled them, when one set the value).
    pub fn string(&self, path: &str, default: &str) -> String {
        local::with_tree(&self.inner, |tree| tree.string(path, default))
    }

    /// The integer at `path`, or `default`. Accepts numbers and numeric strings; a fraction,
    /// NaN or a value outside `i64` gives the default.
    pub fn int(&self, path: &str, default: i64) -> i64 {
        local::with_tree(&self.inner, |tree| tree.int(path, default))
    }

    /// The bool at `path`, or `default`. Accepts bools and the strings `"true"`/`"false"` (any
    /// case).
    pub fn bool(&self, path: &str, default: bool) -> bool {
        local::with_tree(&self.inner, |tree| tree.bool(path, default))
    }

    /// The duration at `path`, or `default`. Accepts Go-style strings (see
    /// [`parse_duration`](crate::parse_duration)) and numbers of seconds; negative, NaN,
    /// infinite and out-of-range values give the default.
    pub fn duration(&self, path: &str, default: Duration) -> Duration {
        local::with_tree(&self.inner, |tree| tree.duration(path, default))
    }

    /// Decodes the whole tree into `T`.
    pub fn unmarshal<T: DeserializeOwned>(&self) -> Result<T, Error> {
        local::with_tree(&self.inner, |tree| tree.unmarshal_key(""))
    }

    /// Decodes the subtree at `path` into `T`; a missing path is [`Error::MissingKey`].
    ///
    /// Numbers and bools decode into text fields and numeric or bool text into number or bool
    /// fields, so a value that came through an environment variable fits either way.
    pub fn unmarshal_key<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        local::with_tree(&self.inner, |tree| tree.unmarshal_key(path))
    }

    /// One consistent view of the whole tree, for reads that must belong together.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            tree: self.inner.tree.load(),
        }
    }

    /// A typed handle on the value at `path`, decoded once per tree generation; see [`Handle`].
    pub fn handle<T>(&self, path: &str) -> Handle<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        Handle::new(self.clone(), path)
    }

    /// Where the value at `path` came from, or `None` when there is no such value.
    pub fn source_of(&self, path: &str) -> Option<Source> {
        local::with_tree(&self.inner, |tree| tree.source_of(path))
    }

    /// Every leaf (scalars, arrays and empty objects) with its dot path, value, source and
    /// whether it is a secret, in path order.
    pub fn entries(&self) -> Vec<Entry> {
        self.inner.tree.load().entries()
    }

    /// The whole tree with values under secret-looking keys replaced by `"***"`.
    pub fn redacted(&self) -> Value {
        redact_value(&self.inner.tree.load().root)
    }

    /// The file this config was loaded from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The current generation: 0 after loading, plus one per successful reload.
    pub fn generation(&self) -> u64 {
        self.inner.tree.load().generation
    }

    /// A receiver that sees the generation of every successful reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Re-reads the file, re-applies overrides (re-reading the process environment unless an
    /// explicit one was given) and validators, and swaps the tree atomically.
    ///
    /// On any error the current tree stays in place. A config parsed from bytes has nothing to
    /// re-read: this returns `Ok` and changes nothing. The file is read as by
    /// [`Config::load`], with its checks, and the same blocking I/O; a [`ConfigWatcher`]
    /// reloads on a blocking thread.
    ///
    /// [`ConfigWatcher`]: crate::ConfigWatcher
    pub fn reload(&self) -> Result<(), Error> {
        let Some(path) = &self.inner.path else {
            return Ok(());
        };
        let bytes = read_file(path)?;
        self.install(&bytes).map(|_| ())
    }

    /// Builds a tree from `bytes` and swaps it in; returns the new generation.
    pub(crate) fn install(&self, bytes: &[u8]) -> Result<u64, Error> {
        let _serial = self
            .inner
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = self.inner.tree.load().generation + 1;
        let tree = build(bytes, self.path(), &self.inner.options, generation)?;
        // The generation first: a getter that finds its cached tree older than the generation
        // loads the tree, so once any reader can see the new tree, no getter on any thread
        // answers from the old one.
        self.inner.generation.store(generation, Ordering::Release);
        self.inner.tree.store(Arc::new(tree));
        self.inner.changes.send_replace(generation);
        Ok(generation)
    }

    /// The digest of the bytes the current tree was built from.
    pub(crate) fn current_digest(&self) -> u64 {
        self.inner.tree.load().digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn config_is_send_sync_and_default_is_empty() {
        assert_send_sync::<Config>();
        assert_send_sync::<Snapshot>();
        let config = Config::default();
        assert_eq!(config.get(""), Some(json!({})));
        assert_eq!(config.path(), None);
        assert_eq!(config.generation(), 0);
        assert!(config.reload().is_ok());
    }

    #[test]
    fn debug_does_not_show_the_environment() {
        let options = LoadOptions::new()
            .env_prefix("ISO")
            .environ(vec!["ISO_DB_PASSWORD=hunter2".into()]);
        let config = Config::parse(b"{}", options).unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("ISO"), "{text}");
    }

    /// Loads `path` on a thread and gives up after a few seconds, so a read that blocks
    /// fails the test instead of hanging it (the stuck thread is abandoned).
    fn load_bounded(path: &Path) -> Result<Config, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || tx.send(Config::load(&path, LoadOptions::new())));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("loading a config file must not block")
    }

    #[cfg(unix)]
    #[test]
    fn only_a_regular_file_is_read_and_a_fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let err = load_bounded(&path).unwrap_err();
        assert!(
            matches!(&err, Error::NotRegularFile { path: p, found: "a FIFO" } if *p == path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "config file {} is not a regular file (a FIFO)",
                path.display()
            )
        );

        // A reload finds the FIFO where the file was and keeps the tree.
        fs::remove_file(&path).unwrap();
        fs::write(&path, r#"{"a": 1}"#).unwrap();
        let config = Config::load(&path, LoadOptions::new()).unwrap();
        fs::remove_file(&path).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let reload = {
            let config = config.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(config.reload()));
            rx.recv_timeout(Duration::from_secs(5))
                .expect("reloading from a FIFO must not block")
        };
        assert!(
            matches!(reload, Err(Error::NotRegularFile { .. })),
            "{reload:?}"
        );
        assert_eq!(config.int("a", 0), 1);
        assert_eq!(config.generation(), 0);

        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let err = load_bounded(&path).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRegularFile {
                    found: "a directory",
                    ..
                }
            ),
            "{err:?}"
        );
        let null = dir.path().join("null.json");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        let err = load_bounded(&null).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRegularFile {
                    found: "a character device",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_rejected_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.json");
        // Sparse: as large as it says, without writing it.
        let file = fs::File::create(&path).unwrap();
        file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = Config::load(&path, LoadOptions::new()).unwrap_err();
        match &err {
            Error::TooLarge {
                path: p,
                len,
                limit,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*len, MAX_CONFIG_BYTES + 1);
                assert_eq!(*limit, MAX_CONFIG_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "config file {} is 16777217 bytes; config files are limited to 16777216 bytes",
                path.display()
            )
        );

        // At the limit the file is read: zeros are not JSON.
        file.set_len(MAX_CONFIG_BYTES).unwrap();
        let err = Config::load(&path, LoadOptions::new()).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 1, .. }), "{err:?}");
    }
}
