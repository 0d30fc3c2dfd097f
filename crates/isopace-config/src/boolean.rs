//! Booleans written as people and service managers write them: `1`, `yes`, `on`, ...

use crate::Error;

/// Parses a boolean as an environment variable or a command line gives it: `1`, `true`,
/// `yes` or `on` is true, `0`, `false`, `no` or `off` is false, in any case and with
/// surrounding whitespace ignored. Anything else is an [`Error::Bool`] that lists them.
///
/// ```
/// use isopace_config::parse_bool;
///
/// assert_eq!(parse_bool("Yes").unwrap(), true);
/// assert_eq!(parse_bool("0").unwrap(), false);
/// assert_eq!(
///     parse_bool("maybe").unwrap_err().to_string(),
///     "invalid boolean \"maybe\": use 1/0, true/false, yes/no or on/off"
/// );
/// ```
pub fn parse_bool(input: &str) -> Result<bool, Error> {
    match input.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Bool {
            input: input.chars().take(64).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_in_any_case_and_nothing_else() {
        for yes in ["1", "true", "TRUE", "yes", "Yes", "on", "ON", " on "] {
            assert!(parse_bool(yes).unwrap(), "{yes:?}");
        }
        for no in ["0", "false", "False", "no", "NO", "off", "oFF", "\t0\n"] {
            assert!(!parse_bool(no).unwrap(), "{no:?}");
        }
        for bad in ["", "2", "y", "n", "t", "enable", "truee", "-1", "o n"] {
            assert!(
                matches!(parse_bool(bad), Err(Error::Bool { ref input }) if input == bad),
                "{bad:?}"
            );
        }
    }
}
