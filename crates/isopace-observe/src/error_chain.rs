//! One line for an error and everything underneath it, for logs and span status.

use std::error::Error as StdError;

/// An error and its sources, outermost first, joined with `": "`.
///
/// A log line or a span status usually shows one string; this one still says what went
/// wrong underneath (`could not start edge: bind 0.0.0.0:80: permission denied`).
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
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
