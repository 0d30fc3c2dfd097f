//! The logging builder: a `tracing-subscriber` stack set up from [`LogOptions`], and a
//! [`LogHandle`] that changes the filter of the running process.

use std::{fmt, io::IsTerminal, str::FromStr, sync::Arc};

use parking_lot::Mutex;
use tracing::{Level, Subscriber};
use tracing_subscriber::{
    Layer, Registry,
    filter::ParseError,
    fmt::MakeWriter,
    layer::{Layered, SubscriberExt},
    reload,
    util::SubscriberInitExt,
};

use crate::error::Error;

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per record.
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level. Needs the `json` feature:
    /// without it the name still parses, but building a logger with this format fails with
    /// [`Error::FeatureDisabled`].
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;

    /// `text` or `json`, case-insensitive, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Error> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("text") {
            Ok(LogFormat::Text)
        } else if t.eq_ignore_ascii_case("json") {
            Ok(LogFormat::Json)
        } else {
            Err(Error::InvalidLogFormat {
                value: s.to_owned(),
            })
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Reads a level name: case-insensitive, surrounding whitespace ignored; `trace`, `debug`,
/// `info`, `warn` or `warning`, `error` or `err`.
///
/// Anything else is an [`Error::InvalidLogLevel`] that names the text and the accepted
/// names, so a caller decides what a bad name means (refuse to start, keep the current level).
///
/// ```
/// use isopace_observe::{Error, parse_level};
/// use tracing::Level;
///
/// assert_eq!(parse_level(" Warning ")?, Level::WARN);
/// let err = parse_level("verbose").unwrap_err();
/// assert!(matches!(err, Error::InvalidLogLevel { .. }));
/// assert!(err.to_string().starts_with("unknown log level `verbose` (expected `trace`"));
/// # Ok::<(), Error>(())
/// ```
pub fn parse_level(s: &str) -> Result<Level, Error> {
    let t = s.trim();
    let is = |name: &str| t.eq_ignore_ascii_case(name);
    if is("trace") {
        Ok(Level::TRACE)
    } else if is("debug") {
        Ok(Level::DEBUG)
    } else if is("info") {
        Ok(Level::INFO)
    } else if is("warn") || is("warning") {
        Ok(Level::WARN)
    } else if is("error") || is("err") {
        Ok(Level::ERROR)
    } else {
        Err(Error::InvalidLogLevel {
            value: s.to_owned(),
        })
    }
}

/// How to set up logging: the analogue of the reference's `LogOptions` and `NewLogger`.
///
/// Build one with struct update syntax over [`Default`] (info level, text, no source
/// location, no directives), then [`init`](Self::init) it once at startup, or
/// [`build_with_writer`](Self::build_with_writer) a subscriber to install yourself.
///
/// ```
/// use isopace_observe::{LogFormat, LogOptions};
/// use tracing::Level;
/// # if cfg!(not(feature = "json")) { return Ok(()); }
///
/// let log = LogOptions {
///     level: Level::INFO,
///     format: LogFormat::Json,
///     source: true,
///     // RUST_LOG syntax: these override the level for the modules they name.
///     directives: Some("isopace_host=debug,hyper=warn".to_owned()),
/// }
/// .init()?;
/// tracing::info!(component = "edge", "started");
///
/// // Later, when the configured level changes:
/// log.set_level(Level::DEBUG)?;
/// # Ok::<(), isopace_observe::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// The minimum level of records written, where no directive says otherwise.
    pub level: Level,
    /// Text or JSON.
    pub format: LogFormat,
    /// Whether records carry the source file and line they were logged from.
    pub source: bool,
    /// `RUST_LOG`-style directives (`target=level`, comma-separated) that override
    /// [`level`](Self::level) for the modules they name. Without the `env-filter` feature
    /// only `target=level`, bare `target` and bare `level` directives are understood; one
    /// with a span or field filter (`[...]`) fails with [`Error::FeatureDisabled`].
    pub directives: Option<String>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            level: Level::INFO,
            format: LogFormat::Text,
            source: false,
            directives: None,
        }
    }
}

/// The level filter: `tracing-subscriber`'s full `RUST_LOG` filter with the `env-filter`
/// feature, its `target=level` subset otherwise.
#[cfg(feature = "env-filter")]
type Filter = tracing_subscriber::EnvFilter;
#[cfg(not(feature = "env-filter"))]
type Filter = tracing_subscriber::filter::Targets;

/// The subscriber stack below the formatting layer.
type Filtered = Layered<reload::Layer<Filter, Registry>, Registry>;

impl LogOptions {
    /// Installs the process-wide subscriber, writing to standard error (in colour when it is
    /// a terminal, the format is text and the `ansi` feature is on).
    ///
    /// Fails if the directives do not parse, if the format needs a feature this build lacks,
    /// or if a global subscriber is already installed.
    pub fn init(self) -> Result<LogHandle, Error> {
        let ansi = cfg!(feature = "ansi") && std::io::stderr().is_terminal();
        let (subscriber, handle) = self.build(std::io::stderr, ansi)?;
        subscriber
            .try_init()
            .map_err(Error::LoggerAlreadyInstalled)?;
        Ok(handle)
    }

    /// The subscriber these options describe, writing to `writer` without colour, and not
    /// installed: pass it to `tracing::subscriber::with_default` or `set_global_default`.
    ///
    /// Fails if the directives do not parse or if the format needs a feature this build lacks.
    pub fn build_with_writer<W>(
        self,
        writer: W,
    ) -> Result<(impl Subscriber + Send + Sync + 'static, LogHandle), Error>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        self.build(writer, false)
    }

    fn build<W>(
        self,
        writer: W,
        ansi: bool,
    ) -> Result<(impl Subscriber + Send + Sync + 'static, LogHandle), Error>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let filter = filter(self.level, self.directives.as_deref())?;
        let (filter, reload) = reload::Layer::new(filter);
        let fmt = tracing_subscriber::fmt::layer()
            .with_file(self.source)
            .with_line_number(self.source);
        let output: Box<dyn Layer<Filtered> + Send + Sync> = match self.format {
            LogFormat::Text => Box::new(fmt.with_ansi(ansi).with_writer(writer)),
            #[cfg(feature = "json")]
            LogFormat::Json => Box::new(
                fmt.json()
                    .flatten_event(true)
                    .with_ansi(false)
                    .with_writer(writer),
            ),
            #[cfg(not(feature = "json"))]
            LogFormat::Json => {
                return Err(Error::FeatureDisabled {
                    option: "JSON log output".to_owned(),
                    feature: "json",
                });
            }
        };
        let subscriber = tracing_subscriber::registry().with(filter).with(output);
        let handle = LogHandle {
            reload,
            state: Arc::new(Mutex::new(FilterState {
                level: self.level,
                directives: self.directives,
            })),
        };
        Ok((subscriber, handle))
    }
}

/// The filter `<level>,<directives>`, with a bad directive named in the error.
fn filter(level: Level, directives: Option<&str>) -> Result<Filter, Error> {
    let mut spec = level_name(level).to_owned();
    if let Some(directives) = directives {
        for directive in directives
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            check_directive(directive).map_err(|e| match e {
                DirectiveError::Invalid(source) => Error::InvalidDirective {
                    directive: directive.to_owned(),
                    directives: directives.to_owned(),
                    source,
                },
                #[cfg(not(feature = "env-filter"))]
                DirectiveError::NeedsFeature(feature) => Error::FeatureDisabled {
                    option: format!("the log directive `{directive}`"),
                    feature,
                },
            })?;
            spec.push(',');
            spec.push_str(directive);
        }
    }
    parse_filter(&spec).map_err(|source| Error::InvalidDirective {
        directive: spec.clone(),
        directives: spec.clone(),
        source,
    })
}

/// Why one directive cannot be used.
enum DirectiveError {
    Invalid(ParseError),
    /// Understood only with this feature of the crate.
    #[cfg(not(feature = "env-filter"))]
    NeedsFeature(&'static str),
}

#[cfg(feature = "env-filter")]
fn check_directive(directive: &str) -> Result<(), DirectiveError> {
    directive
        .parse::<tracing_subscriber::filter::Directive>()
        .map(drop)
        .map_err(DirectiveError::Invalid)
}

#[cfg(feature = "env-filter")]
fn parse_filter(spec: &str) -> Result<Filter, ParseError> {
    Filter::builder().parse(spec)
}

#[cfg(not(feature = "env-filter"))]
fn check_directive(directive: &str) -> Result<(), DirectiveError> {
    // `Targets` would read `[span]=debug` as a target named `[span]` that matches nothing:
    // refuse span and field filters outright instead.
    if directive.contains(['[', '{']) {
        return Err(DirectiveError::NeedsFeature("env-filter"));
    }
    directive
        .parse::<Filter>()
        .map(drop)
        .map_err(DirectiveError::Invalid)
}

#[cfg(not(feature = "env-filter"))]
fn parse_filter(spec: &str) -> Result<Filter, ParseError> {
    spec.parse()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        _ => "error",
    }
}

/// Changes the filter of a logger built from [`LogOptions`] while it runs. Cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    reload: reload::Handle<Filter, Registry>,
    state: Arc<Mutex<FilterState>>,
}

#[derive(Debug)]
struct FilterState {
    level: Level,
    directives: Option<String>,
}

impl LogHandle {
    /// Sets the level for everything the directives do not name.
    pub fn set_level(&self, level: Level) -> Result<(), Error> {
        let mut state = self.state.lock();
        self.apply(level, state.directives.as_deref())?;
        state.level = level;
        Ok(())
    }

    /// Replaces the directives (an empty string clears them). On error the running filter is
    /// left as it was.
    pub fn set_directives(&self, directives: &str) -> Result<(), Error> {
        let directives = Some(directives.trim()).filter(|d| !d.is_empty());
        let mut state = self.state.lock();
        self.apply(state.level, directives)?;
        state.directives = directives.map(str::to_owned);
        Ok(())
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.state.lock().level
    }

    /// The current directives.
    pub fn directives(&self) -> Option<String> {
        self.state.lock().directives.clone()
    }

    fn apply(&self, level: Level, directives: Option<&str>) -> Result<(), Error> {
        let filter = filter(level, directives)?;
        self.reload.reload(filter).map_err(Error::LoggerUnavailable)
    }
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("LogHandle")
            .field("level", &state.level)
            .field("directives", &state.directives)
            .finish()
    }
}
