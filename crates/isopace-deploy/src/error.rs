//! Errors: what is wrong with one descriptor file (with file, line:column and field), and
//! what stops a whole scan.

use std::{
    fmt,
    path::{Path, PathBuf},
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
    /// The file could not be listed, opened or read.
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
    /// The factory refused to build the component.
    Build,
    /// The component was built but failed to start.
    Start,
}

/// A problem with one descriptor file: which file, where in it, which field, and what.
///
/// Displays as `file:line:column: field `f`: message`, leaving out what is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorError {
    // Boxed: errors travel in `Result`s on every path, and most of those are `Ok`.
    inner: Box<Inner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    file: PathBuf,
    position: Option<Position>,
    field: Option<String>,
    kind: ErrorKind,
    message: String,
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
            }),
        }
    }

    pub(crate) fn at(mut self, position: Position) -> Self {
        self.inner.position = Some(position);
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

    /// A serde_json error from parsing a part of the file that starts at `base`.
    pub(crate) fn from_json(
        file: &Path,
        error: &serde_json::Error,
        base: Position,
        field: Option<&str>,
    ) -> Self {
        let kind = match error.classify() {
            serde_json::error::Category::Data => ErrorKind::Field,
            _ => ErrorKind::Syntax,
        };
        let mut e = DescriptorError::new(file, kind).message(json_message(error));
        if error.line() > 0 {
            e = e.at(base.offset_by(error.line(), error.column()));
        } else {
            e = e.at(base);
        }
        match field {
            Some(field) => e.field(field),
            None => e,
        }
    }

    /// The file.
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

    /// The message alone, without file, position or field.
    pub fn detail(&self) -> &str {
        &self.inner.message
    }
}

/// serde_json's message without its trailing " at line L column C".
pub(crate) fn json_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.inner;
        write!(f, "{}", e.file.display())?;
        if let Some(at) = e.position {
            write!(f, ":{at}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &e.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&e.message)
    }
}

impl std::error::Error for DescriptorError {}

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
}
