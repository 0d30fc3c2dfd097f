//! One line for an error and everything underneath it, for logs and span status.

use std::error::Error as StdError;

/// An error and its sources, outermost first, joined with `": "`.
///
/// A log line or a span status usually shows one string; this one still says what went
/// wrong underneath (`could not start edge: bind 0.0.0.0:80: permission denied`). A source
/// whose message the text already ends with (an error that prints its source itself and
/// returns it from `source()` too) is not repeated.
///
/// ```
/// use std::{error::Error, fmt};
/// use isopace_observe::error_chain;
///
/// #[derive(Debug)]
/// struct StartFailed(std::io::Error);
///
/// impl fmt::Display for StartFailed {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("could not start edge")
///     }
/// }
///
/// impl Error for StartFailed {
///     fn source(&self) -> Option<&(dyn Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let e = StartFailed(std::io::Error::other("permission denied"));
/// assert_eq!(error_chain(&e), "could not start edge: permission denied");
/// assert_eq!(error_chain(&std::io::Error::other("disk full")), "disk full");
/// ```
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error that prints its source in its own message and returns it from `source()`.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot parse: {}", self.0)
        }
    }

    impl StdError for Repeats {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_source_the_message_already_ends_with_is_not_repeated() {
        let e = Repeats(std::io::Error::other("expected a level"));
        assert_eq!(error_chain(&e), "cannot parse: expected a level");
    }

    #[test]
    #[cfg(feature = "env-filter")]
    fn a_bad_log_directive_says_why_once() {
        let e = crate::LogOptions {
            directives: Some("foo=bar".to_owned()),
            ..crate::LogOptions::default()
        }
        .build_with_writer(std::io::sink)
        .err()
        .expect("the directive does not parse");
        let text = error_chain(&e);
        assert_eq!(text.matches("expected one of").count(), 1, "{text}");
    }
}
