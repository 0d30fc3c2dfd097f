//! The isopace configuration tree: JSON plus environment overrides, read lock-free.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
//!
//! # Feature flags
//!
//! - `toml`: reads `.toml` files (and [`Format::Toml`] bytes) with the
//!   [`toml`](https://docs.rs/toml) crate.
//! - `yaml`: reads `.yaml`/`.yml` files (and [`Format::Yaml`] bytes) with
//!   [`serde-saphyr`](https://docs.rs/serde-saphyr). It is chosen over the alternatives because
//!   it is maintained, written in safe Rust (no `unsafe-libyaml` port underneath, unlike
//!   `serde_yaml_ng` and `serde_norway`), deserializes straight into serde types without an
//!   intermediate YAML tree, reports errors with line and column, and bounds alias expansion
//!   and nesting by default, which matters for files an operator may get wrong.
//!
//! Both are off by default; every format becomes the same tree, so nothing else changes.
//! JSON has no NaN or infinity: the YAML reader rejects them as a parse error at their line,
//! and TOML's `nan`/`inf` read as null, so getters fall back to their defaults.
//!
//! # Environment overrides
//!
//! With [`LoadOptions::env_prefix`] set to `ISO`, a variable `ISO_A_B=v` sets the path `a.b`:
//!
//! - The value takes its JSON type when it is a JSON number, bool or null (`5`, `true`);
//!   anything else is a string (`hello`, `[1`). [`Config::string`] still returns the
//!   variable's text as written.
//! - Segments are matched case-insensitively against keys the file declares, longest first,
//!   so `ISO_LINK_MAX_CONNS` sets a declared `link.max_conns` (a `-` in a declared key matches
//!   `_`). Below keys the file does not declare, every `_` is a level and new keys are
//!   lower-case: `ISO_NEW_KEY` creates `new.key`.
//! - `__` separates levels explicitly, and then single underscores are part of the key:
//!   `ISO_LINK__MAX_CONNS` sets `link.max_conns`.
//! - An override is skipped, with a warning, when its path runs through a scalar or array the
//!   file declares (`{"server": "plain"}` keeps `"plain"` under `ISO_SERVER_PORT=8080`), or
//!   when it would replace a whole declared object or array with one value.
//! - Variables are applied in name order; those not starting with `ISO_` are ignored.
//!
//! # Reading
//!
//! Every read goes through an [`arc_swap::ArcSwap`] and never blocks, also while a reload
//! swaps the tree. Use [`Config::snapshot`] when several reads must come from one generation,
//! and [`Config::handle`] for a typed value read on a hot path.
//!
//! The getters on [`Config`] (`get`, `string`, `int`, ...) read through a small per-thread
//! cache of the current tree, checked against the config's generation with one atomic load, so
//! they write to no shared memory at all. A reload is seen by the next read on every thread.
//! The price is memory: each thread keeps the tree it last read, for up to four configs, so
//! after a reload the old tree is freed once every thread that read it has read again (or
//! exited).

mod boolean;
mod config;
mod de;
mod duration;
mod env;
mod error;
mod file;
mod format;
mod handle;
mod index;
mod local;
mod tree;
mod watcher;

pub use boolean::parse_bool;
pub use config::{Config, LoadOptions, MAX_CONFIG_BYTES};
pub use duration::{MAX_DURATION, format_duration, parse_duration, serde_duration};
pub use error::Error;
pub use file::{ReadError, read_regular_file};
pub use format::Format;
pub use handle::Handle;
pub use tree::{Entry, Snapshot, Source};
pub use watcher::ConfigWatcher;
