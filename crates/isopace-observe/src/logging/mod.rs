//! The logging builder: a `tracing-subscriber` stack set up from [`LogOptions`], and a
//! [`LogHandle`] that changes the filter of the running process.

mod fields;
mod line;
mod spans;

use std::{ffi::OsStr, fmt, io::IsTerminal, str::FromStr, sync::Arc};

use parking_lot::Mutex;
use tracing::{Level, Subscriber};
use tracing_subscriber::{
    Registry, filter::ParseError, fmt::MakeWriter, layer::SubscriberExt, reload,
    util::SubscriberInitExt,
};

use self::{line::Lines, spans::SpansAlways};
use crate::error::Error;

/// How log records are written.
///
/// Both formats name the component a line is about in exactly one place: the event's own
/// `component` field if it has one, else the `component` field of the nearest enclosing span
/// (the host's component and lifecycle spans have one). A line about no component has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per record, in `logfmt` style after the message:
    ///
    /// ```text
    /// 2026-12-01T10:00:00.123456Z  INFO component=edge isopace_host::call: started bytes=512 phase=start
    /// ```
    ///
    /// Timestamp (UTC), level, `component=` when there is one, target, the source
    /// `file:line:` when [`LogOptions::source`] asks for it, the message, the event's fields,
    /// then the fields of the enclosing spans (nearest first; each name once, none the event
    /// has, never `component` again; span names are not shown). A string, `%display`,
    /// `?debug` or error value is quoted (and escaped) only when it is empty or has spaces,
    /// quotes, `=` or control characters, so `name=value` pairs read back whole; debug text
    /// that is already one quoted string is left as it is. In the message and in numbers, the
    /// control characters a terminal acts on (ESC, BEL, BS, FF, DEL, the C1 controls) are
    /// escaped (`\x1b`), so logged input cannot restyle the screen.
    #[default]
    Text,
    /// One JSON object per line:
    ///
    /// ```text
    /// {"timestamp":"2026-12-01T10:00:00.123456Z","level":"INFO","component":"edge","target":"isopace_host::call","message":"started","bytes":512,"span":{"phase":"start"}}
    /// ```
    ///
    /// `timestamp`, `level`, `component` (when there is one), `target`, `filename` and
    /// `line_number` (with [`LogOptions::source`]), `message`, then the event's fields at the
    /// top level — integers, floats and booleans as JSON numbers and booleans, everything
    /// else a string — and `span`: one object with the fields of the enclosing spans but
    /// `component` (nearest first, each name once), left out when empty. An event field
    /// named like one of the line's own keys (`timestamp`, `level`, `target`, `span`, and
    /// `filename` and `line_number` with [`LogOptions::source`]) is written as
    /// `fields.<name>` (`"fields.level":"debug"`), so no key appears twice.
    ///
    /// Needs the `json` feature: without it the name still parses, but building a logger with
    /// this format fails with [`Error::FeatureDisabled`].
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
/// [`build_with_writer`](Self::build_with_writer) a subscriber to install yourself. The
/// [`LogFormat`] variants show the lines it writes.
///
/// # Spans are always recorded
///
/// The level and the directives filter events, never spans: a span is recorded whatever its
/// level, so a component's span created while the level was `error` still names the
/// component on every line once the level is lowered through the [`LogHandle`]. The cost is
/// that every span is created in full (a registry slot and its fields kept for the line
/// formats) even when no line inside it is written, and the global max-level shortcut of
/// `tracing` stays at `trace`, so an event below the level costs a cached per-callsite check
/// instead of a single comparison. Keep spans off hot per-item paths. Span directives
/// (`[component{component=edge}]=debug`, with the `env-filter` feature) work as in
/// `RUST_LOG`, for spans created after the directive is set.
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
    /// Whether records carry the source file and line they were logged from (`file:line:`
    /// after the target in text, `filename` and `line_number` in JSON).
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

impl LogOptions {
    /// Installs the process-wide subscriber, writing to standard error — in colour when
    /// [`use_colour`] says so for it (a terminal, text, the `ansi` feature, no `NO_COLOR`).
    ///
    /// Fails if the directives do not parse, if the format needs a feature this build lacks,
    /// or if a global subscriber is already installed.
    pub fn init(self) -> Result<LogHandle, Error> {
        let no_color = std::env::var_os("NO_COLOR");
        let ansi = use_colour(
            std::io::stderr().is_terminal(),
            no_color.as_deref(),
            self.format,
        );
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
        #[cfg(not(feature = "json"))]
        if self.format == LogFormat::Json {
            return Err(Error::FeatureDisabled {
                option: "JSON log output".to_owned(),
                feature: "json",
            });
        }
        let filter = filter(self.level, self.directives.as_deref())?;
        let (filter, reload) = reload::Layer::new(filter);
        let subscriber = tracing_subscriber::registry()
            .with(SpansAlways::new(filter))
            .with(Lines::new(writer, self.format, ansi, self.source));
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

/// Whether log lines are coloured: only text, only on a terminal, only with the `ansi`
/// feature, and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
///
/// [`LogOptions::init`] asks it about standard error; it is public so a program that sets
/// up its own output decides the same way.
///
/// ```
/// use std::ffi::OsStr;
/// use isopace_observe::{LogFormat, use_colour};
///
/// let on = cfg!(feature = "ansi");
/// assert_eq!(use_colour(true, None, LogFormat::Text), on);
/// assert_eq!(use_colour(true, Some(OsStr::new("")), LogFormat::Text), on);
/// assert!(!use_colour(true, Some(OsStr::new("1")), LogFormat::Text));
/// assert!(!use_colour(false, None, LogFormat::Text));
/// assert!(!use_colour(true, None, LogFormat::Json));
/// ```
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>, format: LogFormat) -> bool {
    cfg!(feature = "ansi")
        && is_terminal
        && format == LogFormat::Text
        && no_color.is_none_or(OsStr::is_empty)
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
