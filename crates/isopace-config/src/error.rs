//! The crate's one error type.

use std::{fmt, path::PathBuf};

/// Everything that can go wrong loading, reading, reloading or watching a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The config file is not a regular file (a FIFO, socket, device or directory), so it
    /// was not read.
    #[error("config file {} is not a regular file ({found})", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead (`"a FIFO"`, `"a directory"`, ...).
        found: &'static str,
    },

    /// The config file is larger than [`MAX_CONFIG_BYTES`](crate::MAX_CONFIG_BYTES), so it
    /// was not read.
    #[error("config file {} is {len} bytes; config files are limited to {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least `limit + 1` when it grew while being read).
        len: u64,
        /// The limit, [`MAX_CONFIG_BYTES`](crate::MAX_CONFIG_BYTES).
        limit: u64,
    },

    /// The input is not valid for its format.
    #[error("invalid {format} in {}", Origin { file: file.as_ref(), line: *line, column: *column })]
    Parse {
        /// The format the input was read as.
        format: crate::Format,
        /// The file, or `None` for bytes given to [`Config::parse`](crate::Config::parse).
        file: Option<PathBuf>,
        /// 1-based line of the problem (0 when the parser did not say).
        line: usize,
        /// 1-based column of the problem (0 when the parser did not say).
        column: usize,
        /// What the parser said, without the position (this error's own message names it,
        /// so an error chain prints it once).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The input parsed, but its top level is not an object.
    #[error("config root {} must be an object, found {found}", Origin { file: file.as_ref(), line: 0, column: 0 })]
    NotAnObject {
        /// The file, or `None` for bytes.
        file: Option<PathBuf>,
        /// What the top level is instead (`"array"`, `"string"`, ...).
        found: &'static str,
    },

    /// The file's format needs a cargo feature that is not enabled.
    #[error("cannot read {format} config {}: enable the `{feature}` feature of isopace-config", Origin { file: file.as_ref(), line: 0, column: 0 })]
    FormatDisabled {
        /// The format that was asked for.
        format: crate::Format,
        /// The file, or `None` for bytes.
        file: Option<PathBuf>,
        /// The cargo feature that enables it.
        feature: &'static str,
    },

    /// `unmarshal_key` (or a handle) was asked for a path that does not exist.
    #[error("config key `{path}` is missing")]
    MissingKey {
        /// The dot path that was asked for.
        path: String,
    },

    /// A value does not decode into the requested type.
    #[error("cannot decode config {}", Field { path, field })]
    Unmarshal {
        /// The dot path that was decoded (empty for the whole tree).
        path: String,
        /// Where inside that value decoding failed (`pool`, `servers[0].port`; empty at its top).
        field: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A validator registered with [`LoadOptions::validator`](crate::LoadOptions::validator)
    /// rejected the tree.
    #[error("config {} rejected by a validator", Origin { file: file.as_ref(), line: 0, column: 0 })]
    Invalid {
        /// The file, or `None` for bytes.
        file: Option<PathBuf>,
        /// The validator's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A boolean is none of 1/0, true/false, yes/no or on/off (see
    /// [`parse_bool`](crate::parse_bool)).
    #[error("invalid boolean {input:?}: use 1/0, true/false, yes/no or on/off")]
    Bool {
        /// The text that was parsed (cut to 64 characters).
        input: String,
    },

    /// A duration string is not in the `1h2m3.5s` form (or a bare number of seconds) or is out
    /// of range.
    #[error("invalid duration {input:?}: {reason}")]
    Duration {
        /// The text that was parsed (cut to 64 characters).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A [`ConfigWatcher`](crate::ConfigWatcher) was started on a config that has no file.
    #[error("cannot watch a config that was not loaded from a file (use Config::load)")]
    NoFile,

    /// A [`ConfigWatcher`](crate::ConfigWatcher) was started twice.
    #[error("config watcher for {} is already running", path.display())]
    AlreadyStarted {
        /// The watched file.
        path: PathBuf,
    },

    /// The watcher's task ended abnormally (it panicked or was cancelled).
    #[error("config watcher task for {} failed", path.display())]
    WatcherTask {
        /// The watched file.
        path: PathBuf,
        /// What tokio reported.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Renders "in FILE:LINE:COLUMN" style locations; bytes have no file name.
struct Origin<'a> {
    file: Option<&'a PathBuf>,
    line: usize,
    column: usize,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => f.write_str("<bytes>")?,
        }
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        Ok(())
    }
}

struct Field<'a> {
    path: &'a str,
    field: &'a str,
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.field.is_empty()) {
            (true, true) => f.write_str("tree"),
            (true, false) => write!(f, "field `{}`", self.field),
            (false, true) => write!(f, "key `{}`", self.path),
            (false, false) => write!(f, "key `{}` at field `{}`", self.path, self.field),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_context_without_repeating_the_source() {
        let source = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = Error::Parse {
            format: crate::Format::Json,
            file: Some(PathBuf::from("/etc/app.json")),
            line: 3,
            column: 7,
            source: Box::new(source),
        };
        assert_eq!(err.to_string(), "invalid JSON in /etc/app.json:3:7");
        assert!(std::error::Error::source(&err).is_some());

        let err = Error::Unmarshal {
            path: "link".into(),
            field: "pool".into(),
            source: serde_json::from_str::<u8>("\"x\"").unwrap_err(),
        };
        assert_eq!(
            err.to_string(),
            "cannot decode config key `link` at field `pool`"
        );
        // A binary that turns the formats on never shows this; a library user acts on it.
        let err = Error::FormatDisabled {
            format: crate::Format::Yaml,
            file: Some(PathBuf::from("app.yml")),
            feature: "yaml",
        };
        assert_eq!(
            err.to_string(),
            "cannot read YAML config app.yml: enable the `yaml` feature of isopace-config"
        );
        let err = Error::MissingKey { path: "a.b".into() };
        assert_eq!(err.to_string(), "config key `a.b` is missing");
    }
}
