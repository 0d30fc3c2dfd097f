//! Errors: what is wrong with one descriptor file (with file, line:column and field), and
//! what stops a whole scan.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A 1-based line and column in a descriptor file (the column counts bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

impl Position {
    /// The first character of a file.
    pub const START: Position = Position { line: 1, column: 1 };

    /// The position of byte `offset` in `text`.
    pub(crate) fn of(text: &str, offset: usize) -> Position {
        Position::START.advance(&text[..offset.min(text.len())])
    }

    /// The position just after `text`, which starts at `self`.
    pub(crate) fn advance(self, text: &str) -> Position {
        match text.rfind('\n') {
            Some(last) => Position {
                line: self.line + text.matches('\n').count(),
                column: text.len() - last,
            },
            None => Position {
                line: self.line,
                column: self.column + text.len(),
            },
        }
    }

    /// Maps a 1-based line and column inside a text that starts at `self` to the file.
    pub(crate) fn offset_by(self, line: usize, column: usize) -> Position {
        if line <= 1 {
            Position {
                line: self.line,
                column: self.column + column.saturating_sub(1),
            }
        } else {
            Position {
                line: self.line + line - 1,
                // serde_json says column 0 for an error at a newline; columns count from 1.
                column: column.max(1),
            }
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What kind of problem a [`DescriptorError`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be listed, opened or read; the operating system's error is the
    /// source.
    ///
    /// Also, without a source, a file that is not read at all: one that is not a regular
    /// file (a FIFO, socket, device or directory named `*.json`, said as `not a regular file
    /// (a FIFO)`), and one whose name is not UTF-8 (displayed with the invalid bytes
    /// replaced by `U+FFFD`; [`DescriptorError::file`] is the real path).
    Io,
    /// The file is larger than [`MAX_DESCRIPTOR_BYTES`](crate::MAX_DESCRIPTOR_BYTES).
    TooLarge,
    /// Not valid JSON (or not UTF-8, or empty).
    Syntax,
    /// A field is unknown, missing, empty or of the wrong type (top level or the type's
    /// config).
    Field,
    /// `${VAR}` names an unset variable and has no default.
    UnsetVariable(String),
    /// No factory is registered for the descriptor's `type`.
    UnknownType(String),
    /// Another file, earlier in lexical order, already declares this component name.
    DuplicateName {
        /// The file that declares it first and wins.
        first: PathBuf,
    },
    /// A [preflight check](crate::Registry::register_preflight) of the type found the config
    /// unfit for this machine (its program does not exist, its address cannot be bound).
    /// Errors reject the descriptor like any problem; warnings are only reported.
    Preflight(crate::Severity),
    /// A field the type deprecated: it still works, moved to what replaced it. Only
    /// [`validate_dir_with`](crate::validate_dir_with) reports it, as a warning (the
    /// deployer logs it).
    Deprecated,
    /// The factory refused to build the component.
    Build,
    /// The component was built but failed to start.
    Start,
}

/// A cause kept behind a [`DescriptorError`]: shared, so the error stays `Clone` (a scan
/// reports it and keeps it in the file's status).
type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A problem with one descriptor file: which file, where in it, which field, and what.
///
/// Displays as `file:line:column: field `f`: message`, leaving out what is unknown (a
/// descriptor built in code has no file and no positions). The cause, when there is one, is
/// the [`source`](std::error::Error::source) and is not repeated in the message: the
/// operating system's [`io::Error`](std::io::Error) for [`ErrorKind::Io`] (when it reported
/// one), serde_json's error for [`ErrorKind::Syntax`], the factory's own error for
/// [`ErrorKind::Build`] and the host's for [`ErrorKind::Start`]. Print it with its sources (`isopace_host::error_chain`), or use
/// [`detail`](Self::detail) for the text without the location.
///
/// Two errors are equal when they say the same: the same file, position, field, kind and
/// message, and causes with the same text.
#[derive(Debug, Clone)]
pub struct DescriptorError {
    // Boxed: errors travel in `Result`s on every path, and most of those are `Ok`.
    inner: Box<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    file: PathBuf,
    position: Option<Position>,
    field: Option<String>,
    kind: ErrorKind,
    message: String,
    cause: Option<Cause>,
}

impl DescriptorError {
    pub(crate) fn new(file: &Path, kind: ErrorKind) -> Self {
        DescriptorError {
            inner: Box::new(Inner {
                file: file.to_path_buf(),
                position: None,
                field: None,
                kind,
                message: String::new(),
                cause: None,
            }),
        }
    }

    /// A file that could not be listed, opened or read.
    pub(crate) fn io(file: &Path, error: std::io::Error) -> Self {
        DescriptorError::new(file, ErrorKind::Io)
            .message("cannot read")
            .caused_by(error)
    }

    pub(crate) fn at(mut self, position: Position) -> Self {
        self.inner.position = Some(position);
        self
    }

    /// At `position` when it is known.
    pub(crate) fn at_maybe(mut self, position: Option<Position>) -> Self {
        self.inner.position = position;
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.inner.field = Some(field.into());
        self
    }

    pub(crate) fn message(mut self, message: impl Into<String>) -> Self {
        self.inner.message = message.into();
        self
    }

    pub(crate) fn caused_by(
        mut self,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.inner.cause = Some(Arc::new(cause));
        self
    }

    /// Keeps a boxed error (a factory's) as the cause; its source is the error the factory
    /// returned, not a wrapper around it.
    pub(crate) fn caused_by_boxed(
        mut self,
        cause: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        self.inner.cause = Some(Arc::from(cause));
        self
    }

    /// The same error with `redact` applied to its message and causes. A cause whose text
    /// changes is replaced by its redacted text (it can no longer be downcast); one that does
    /// not change is kept as it is.
    pub(crate) fn redacted(mut self, redact: &dyn Fn(&str) -> String) -> Self {
        self.inner.message = redact(&self.inner.message);
        if let Some(cause) = &self.inner.cause {
            let text = isopace_host::error_chain(&**cause);
            let clean = redact(&text);
            if clean != text {
                self.inner.cause = Some(Arc::new(Redacted(clean)));
            }
        }
        self
    }

    /// A serde_json error from parsing a part of the file that starts at `base`.
    ///
    /// A syntax error keeps serde_json's error as its cause: the whole file was parsed, so
    /// its line and column are the file's. A field error (unknown, missing, wrong type) is
    /// described in serde's words without its position, which is relative to the part that
    /// was parsed; the error's own position is the file's.
    pub(crate) fn from_json(
        file: &Path,
        error: serde_json::Error,
        base: Position,
        field: Option<&str>,
    ) -> Self {
        let at = if error.line() > 0 {
            base.offset_by(error.line(), error.column())
        } else {
            base
        };
        let e = match error.classify() {
            serde_json::error::Category::Data => {
                DescriptorError::new(file, ErrorKind::Field).message(json_message(&error))
            }
            _ => DescriptorError::new(file, ErrorKind::Syntax)
                .message("invalid JSON")
                .caused_by(error),
        };
        let e = e.at(at);
        match field {
            Some(field) => e.field(field),
            None => e,
        }
    }

    /// The file; empty for a descriptor built in code without
    /// [`Descriptor::file`](crate::Descriptor::file).
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// Where in the file, when known.
    pub fn position(&self) -> Option<Position> {
        self.inner.position
    }

    /// The field (a dot path such as `config.listen`), when known.
    pub fn field_path(&self) -> Option<&str> {
        self.inner.field.as_deref()
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// What went wrong, followed by its causes, without file, position or field: for a
    /// display that shows those apart.
    pub fn detail(&self) -> String {
        match &self.inner.cause {
            None => self.inner.message.clone(),
            Some(cause) => format!(
                "{}: {}",
                self.inner.message,
                isopace_host::error_chain(&**cause)
            ),
        }
    }
}

/// serde_json's message without its trailing " at line L column C", with a hint for the
/// closest expected field when it names an unknown one.
pub(crate) fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    crate::suggest::unknown_field(text.strip_suffix(&suffix).unwrap_or(&text).to_owned())
}

/// "unknown component type `x`" with a hint for the closest of `known`, else the list of them.
pub(crate) fn unknown_type(name: &str, known: &[&str]) -> String {
    let hint = crate::suggest::hint(name, known.iter().copied());
    if !hint.is_empty() {
        format!("unknown component type `{name}`{hint}")
    } else if known.is_empty() {
        format!("unknown component type `{name}` (none is registered)")
    } else {
        format!(
            "unknown component type `{name}` (registered: {})",
            known.join(", ")
        )
    }
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.inner;
        let file = e.file.as_os_str();
        match (file.is_empty(), e.position) {
            (false, Some(at)) => write!(f, "{}:{at}: ", e.file.display())?,
            (false, None) => write!(f, "{}: ", e.file.display())?,
            (true, Some(at)) => write!(f, "{at}: ")?,
            (true, None) => {}
        }
        if let Some(field) = &e.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&e.message)
    }
}

impl std::error::Error for DescriptorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// A cause whose text named a secret, kept as its redacted text.
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

impl PartialEq for DescriptorError {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.inner, &other.inner);
        // A rescan meets a file's io::Error anew each time: equal text is the same problem.
        let cause = |c: &Option<Cause>| c.as_deref().map(|c| isopace_host::error_chain(c));
        a.file == b.file
            && a.position == b.position
            && a.field == b.field
            && a.kind == b.kind
            && a.message == b.message
            && cause(&a.cause) == cause(&b.cause)
    }
}

impl Eq for DescriptorError {}

/// What stops a whole scan. Nothing is deployed or undeployed when a scan fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The descriptor directory is missing or cannot be listed.
    #[error("cannot read the descriptor directory {}; nothing was deployed or undeployed", .dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host the deployer works for has been dropped.
    #[error("the host is gone")]
    HostGone,
    /// A type was registered twice.
    #[error("component type `{0}` is already registered")]
    DuplicateType(String),
    /// The deployer is already started.
    #[error("the deployer is already started")]
    AlreadyStarted,
    /// No type of this name is registered (from [`Registry::type_info`](crate::Registry::type_info)).
    #[error("{}", unknown_type(.name, &.known.iter().map(String::as_str).collect::<Vec<_>>()))]
    UnknownType {
        /// The name asked for.
        name: String,
        /// The registered names, sorted.
        known: Vec<String>,
    },
}

impl Error {
    /// A copy to keep while the original goes to the caller (an OS error keeps its code).
    pub(crate) fn snapshot(&self) -> Error {
        match self {
            Error::Directory { dir, source } => Error::Directory {
                dir: dir.clone(),
                source: source.raw_os_error().map_or_else(
                    || std::io::Error::new(source.kind(), source.to_string()),
                    std::io::Error::from_raw_os_error,
                ),
            },
            Error::HostGone => Error::HostGone,
            Error::DuplicateType(name) => Error::DuplicateType(name.clone()),
            Error::AlreadyStarted => Error::AlreadyStarted,
            Error::UnknownType { name, known } => Error::UnknownType {
                name: name.clone(),
                known: known.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_advance_over_lines() {
        let p = Position::START.advance("ab\ncd");
        assert_eq!(p, Position { line: 2, column: 3 });
        assert_eq!(Position::of("ab\ncd", 4), Position { line: 2, column: 2 });
        let base = Position {
            line: 3,
            column: 12,
        };
        assert_eq!(
            base.offset_by(1, 5),
            Position {
                line: 3,
                column: 16
            }
        );
        assert_eq!(base.offset_by(2, 5), Position { line: 4, column: 5 });
    }

    #[test]
    fn the_cause_is_the_source_and_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = DescriptorError::io(Path::new("d/a.json"), io());
        assert_eq!(e.to_string(), "d/a.json: cannot read");
        assert_eq!(e.detail(), "cannot read: gone");
        assert_eq!(isopace_host::error_chain(&e), "d/a.json: cannot read: gone");
        let source = std::error::Error::source(&e).unwrap();
        assert_eq!(
            source.downcast_ref::<std::io::Error>().unwrap().kind(),
            std::io::ErrorKind::NotFound
        );
        // Equal when they say the same, though each io::Error is a new value.
        assert_eq!(e, DescriptorError::io(Path::new("d/a.json"), io()));
        let other = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_ne!(e, DescriptorError::io(Path::new("d/a.json"), other));
    }
}
