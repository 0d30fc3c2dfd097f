//! Which of a daemon's log settings wins: its flags, `RUST_LOG`, or its config file.

use std::fmt;

use tracing::Level;

/// Where the running log filter came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOrigin {
    /// The command line (a level flag, a filter flag, or the variables that stand for them
    /// when they are set explicitly).
    Flags,
    /// The `RUST_LOG` variable.
    RustLog,
    /// The config file (its level, which a reload may change).
    Config,
    /// Nothing was set: info.
    Default,
}

impl FilterOrigin {
    /// Whether a level read from the config file takes effect: only when nothing of higher
    /// precedence was set.
    pub fn config_applies(self) -> bool {
        matches!(self, FilterOrigin::Config | FilterOrigin::Default)
    }
}

impl fmt::Display for FilterOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterOrigin::Flags => "the command line",
            FilterOrigin::RustLog => "RUST_LOG",
            FilterOrigin::Config => "the config file",
            FilterOrigin::Default => "the default",
        })
    }
}

/// A daemon's log settings, from every place they can come from; [`resolve`](Self::resolve)
/// applies the precedence:
///
/// 1. the command line: a level and/or `RUST_LOG`-style directives (`--log-level`,
///    `--log-filter` in `isopace run`, or their variables);
/// 2. `RUST_LOG` (directives; an empty value counts as unset);
/// 3. the config file's level;
/// 4. info.
///
/// The first source that says anything decides the whole filter; lower ones are ignored,
/// including later changes to the config file (the daemon should say so once when one
/// arrives, see [`FilterOrigin::config_applies`]).
///
/// ```
/// use isopace_observe::{FilterOrigin, FilterSources};
/// use tracing::Level;
///
/// let sources = FilterSources {
///     rust_log: Some("warn,isopace_host=debug".into()),
///     config_level: Some(Level::DEBUG),
///     ..FilterSources::default()
/// };
/// let (filter, origin) = sources.resolve();
/// assert_eq!(origin, FilterOrigin::RustLog);
/// // A bare level among the directives is the base level.
/// assert_eq!(filter.level, Level::WARN);
/// assert_eq!(filter.directives.as_deref(), Some("isopace_host=debug"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSources {
    /// The level given on the command line.
    pub flag_level: Option<Level>,
    /// The directives given on the command line.
    pub flag_filter: Option<String>,
    /// `RUST_LOG`'s value.
    pub rust_log: Option<String>,
    /// The config file's level.
    pub config_level: Option<Level>,
}

/// What a resolved filter is made of: the level for everything no directive names, and the
/// directives for the targets, spans and fields they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFilter {
    /// The base level.
    pub level: Level,
    /// `RUST_LOG`-style directives on top of it.
    pub directives: Option<String>,
}

impl FilterSources {
    /// Reads `RUST_LOG` from the environment into [`rust_log`](Self::rust_log).
    #[must_use]
    pub fn with_rust_log_from_env(mut self) -> Self {
        self.rust_log = std::env::var("RUST_LOG").ok();
        self
    }

    /// The filter these sources give, and where it came from.
    pub fn resolve(&self) -> (ResolvedFilter, FilterOrigin) {
        let given = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let flag_filter = given(&self.flag_filter);
        if self.flag_level.is_some() || flag_filter.is_some() {
            let filter = split(self.flag_level.unwrap_or(Level::INFO), flag_filter);
            return (filter, FilterOrigin::Flags);
        }
        if let Some(rust_log) = given(&self.rust_log) {
            return (split(Level::INFO, Some(rust_log)), FilterOrigin::RustLog);
        }
        match self.config_level {
            Some(level) => (
                ResolvedFilter {
                    level,
                    directives: None,
                },
                FilterOrigin::Config,
            ),
            None => (
                ResolvedFilter {
                    level: Level::INFO,
                    directives: None,
                },
                FilterOrigin::Default,
            ),
        }
    }
}

/// `level` and `directives`, with the last bare level among the directives (`debug` in
/// `debug,hyper=warn`) taken out as the base level.
fn split(mut level: Level, directives: Option<String>) -> ResolvedFilter {
    let Some(directives) = directives else {
        return ResolvedFilter {
            level,
            directives: None,
        };
    };
    let mut rest = Vec::new();
    for directive in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        match crate::parse_level(directive) {
            Ok(bare) => level = bare,
            Err(_) => rest.push(directive),
        }
    }
    ResolvedFilter {
        level,
        directives: Some(rest.join(",")).filter(|d| !d.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(
        flag_level: Option<Level>,
        flag_filter: Option<&str>,
        rust_log: Option<&str>,
        config_level: Option<Level>,
    ) -> FilterSources {
        FilterSources {
            flag_level,
            flag_filter: flag_filter.map(str::to_owned),
            rust_log: rust_log.map(str::to_owned),
            config_level,
        }
    }

    #[test]
    fn the_first_source_that_says_anything_decides() {
        use FilterOrigin::*;
        let (e, d, w) = (Level::ERROR, Level::DEBUG, Level::WARN);
        let cases: &[(FilterSources, Level, Option<&str>, FilterOrigin)] = &[
            (
                sources(Some(e), None, Some("debug"), Some(d)),
                e,
                None,
                Flags,
            ),
            (
                sources(None, Some("hyper=warn"), Some("debug"), Some(d)),
                Level::INFO,
                Some("hyper=warn"),
                Flags,
            ),
            (
                sources(Some(w), Some("hyper=debug"), None, None),
                w,
                Some("hyper=debug"),
                Flags,
            ),
            (
                sources(None, None, Some("trace"), Some(d)),
                Level::TRACE,
                None,
                RustLog,
            ),
            (
                sources(None, None, Some("hyper=warn, debug"), None),
                d,
                Some("hyper=warn"),
                RustLog,
            ),
            // The level flag is the base; a bare level in the filter flag beats it.
            (sources(Some(e), Some("warn"), None, None), w, None, Flags),
            // An empty or blank value is no value.
            (sources(None, Some(" "), Some(""), Some(d)), d, None, Config),
            (sources(None, None, None, None), Level::INFO, None, Default),
        ];
        for (sources, level, directives, origin) in cases {
            let (filter, got) = sources.resolve();
            assert_eq!(
                (filter.level, filter.directives.as_deref(), got),
                (*level, *directives, *origin),
                "{sources:?}"
            );
        }
    }

    #[test]
    fn only_config_and_default_let_the_config_file_change_the_level() {
        assert!(FilterOrigin::Config.config_applies());
        assert!(FilterOrigin::Default.config_applies());
        assert!(!FilterOrigin::Flags.config_applies());
        assert!(!FilterOrigin::RustLog.config_applies());
    }
}
