//! Log capture: the events code under test logs, with their fields and the fields of the
//! spans they happen in, so a test can check what was reported and about what.

use std::{collections::BTreeMap, fmt, sync::Arc};

use parking_lot::Mutex;
use serde_json::Value;
use tracing::{
    Event, Level, Metadata, Subscriber,
    field::{Field, Visit},
    span,
    subscriber::DefaultGuard,
};
use tracing_subscriber::{
    layer::{Context, Layer, SubscriberExt as _},
    registry::LookupSpan,
};

/// One captured event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CapturedEvent {
    /// Its level.
    pub level: Level,
    /// Its target (the module path, unless the macro named another).
    pub target: String,
    /// Its own fields by name, the message under `message`. Strings, numbers and bools keep
    /// their JSON type; anything else is its `Debug` text (its `Display` text with `%`).
    pub fields: BTreeMap<String, Value>,
    /// The spans it happened in, outermost first.
    pub spans: Vec<CapturedSpan>,
    /// The fields recorded as errors (`error = &e as &dyn Error`), with their sources.
    pub errors: Vec<CapturedError>,
}

/// A span an event happened in.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CapturedSpan {
    /// The span's name.
    pub name: String,
    /// Its fields, as for [`CapturedEvent::fields`], as of the event.
    pub fields: BTreeMap<String, Value>,
}

/// A field recorded as an error: what a subscriber receives of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CapturedError {
    /// The field's name.
    pub field: String,
    /// The error's own message.
    pub message: String,
    /// Each source's message, nearest first.
    pub sources: Vec<String>,
}

impl CapturedEvent {
    /// The message, or `""` for an event without one.
    pub fn message(&self) -> &str {
        self.fields
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The field `name`: the event's own, else the innermost span's that has it. The
    /// host names a component in the span of its lifecycle calls and tasks, so
    /// `field("component")` finds it either way.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).or_else(|| {
            self.spans
                .iter()
                .rev()
                .find_map(|span| span.fields.get(name))
        })
    }

    /// The field `name` (as [`field`](Self::field) finds it) if it is a string.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(Value::as_str)
    }

    /// The event as one JSON object, shaped like a JSON log line: `level`, `target` and the
    /// event's fields at the top level, and the spans, each with its `name` and fields,
    /// under `spans`.
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("level".into(), self.level.as_str().into());
        object.insert("target".into(), self.target.clone().into());
        object.extend(self.fields.clone());
        let spans = self
            .spans
            .iter()
            .map(|span| {
                let mut object = serde_json::Map::new();
                object.insert("name".into(), span.name.clone().into());
                object.extend(span.fields.clone());
                Value::Object(object)
            })
            .collect();
        object.insert("spans".into(), Value::Array(spans));
        Value::Object(object)
    }
}

/// Captures the events logged on the current thread until dropped.
///
/// It is installed as the thread's default subscriber, so a test on a current-thread runtime
/// sees everything its host, deployer and components log, including from their tasks, and
/// nothing from tests running on other threads. Work on other threads (a multi-threaded
/// runtime's workers, `spawn_blocking`) is not captured.
#[must_use = "logs are captured only while the capture is alive"]
pub struct LogCapture {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
    _guard: DefaultGuard,
}

impl LogCapture {
    /// Starts capturing events of every level on this thread.
    pub fn install() -> LogCapture {
        LogCapture::install_at(Level::TRACE)
    }

    /// Starts capturing events at `level` and above (`WARN` captures warnings and errors)
    /// on this thread. Spans of every level are followed, for their fields.
    pub fn install_at(level: Level) -> LogCapture {
        let events = Arc::default();
        let layer = CaptureLayer {
            events: Arc::clone(&events),
            level,
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        LogCapture {
            events,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every event captured so far, in order.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events.lock().clone()
    }

    /// Every event captured so far as JSON objects (see [`CapturedEvent::to_json`]).
    pub fn records(&self) -> Vec<Value> {
        self.events
            .lock()
            .iter()
            .map(CapturedEvent::to_json)
            .collect()
    }

    /// The first event about `component` (its field or its span's) whose `error` field
    /// contains `text`.
    pub fn find(&self, component: &str, text: &str) -> Option<CapturedEvent> {
        self.events
            .lock()
            .iter()
            .find(|e| {
                e.text("component") == Some(component)
                    && e.text("error").is_some_and(|error| error.contains(text))
            })
            .cloned()
    }

    /// Forgets what was captured so far.
    pub fn clear(&self) {
        self.events.lock().clear();
    }
}

impl fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCapture")
            .field("events", &self.events.lock().len())
            .finish()
    }
}

/// The layer behind [`LogCapture`]: span fields kept in the registry's span extensions,
/// events recorded with the fields of their scope.
struct CaptureLayer {
    events: Arc<Mutex<Vec<CapturedEvent>>>,
    level: Level,
}

/// A span's fields, kept in its extensions.
struct SpanFields(BTreeMap<String, Value>);

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        metadata.is_span() || *metadata.level() <= self.level
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.values));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = ctx.span(id)
            && let Some(SpanFields(known)) = span.extensions_mut().get_mut::<SpanFields>()
        {
            known.extend(fields.values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| CapturedSpan {
                        name: span.name().to_owned(),
                        fields: span
                            .extensions()
                            .get::<SpanFields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metadata = event.metadata();
        self.events.lock().push(CapturedEvent {
            level: *metadata.level(),
            target: metadata.target().to_owned(),
            fields: fields.values,
            spans,
            errors: fields.errors,
        });
    }
}

/// Collects fields as JSON values.
#[derive(Default)]
struct Fields {
    values: BTreeMap<String, Value>,
    errors: Vec<CapturedError>,
}

impl Fields {
    fn insert(&mut self, field: &Field, value: impl Into<Value>) {
        self.values.insert(field.name().to_owned(), value.into());
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string());
        let mut sources = Vec::new();
        let mut source = value.source();
        while let Some(s) = source {
            sources.push(s.to_string());
            source = s.source();
        }
        self.errors.push(CapturedError {
            field: field.name().to_owned(),
            message: value.to_string(),
            sources,
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_fields_their_spans_and_their_errors() {
        let logs = LogCapture::install();
        let span = tracing::info_span!("lifecycle", component = "edge", attempt = 1_u64);
        span.in_scope(|| {
            let error = Outer(Inner("disk gone"));
            tracing::warn!(
                error = &error as &(dyn std::error::Error + 'static),
                ok = false,
                "stop failed after {}s",
                2
            );
        });
        tracing::debug!(path = %"/etc/app.json", "reloaded");
        let events = logs.events();
        assert_eq!(events.len(), 2, "{events:#?}");
        let warn = &events[0];
        assert_eq!(warn.level, Level::WARN);
        assert_eq!(warn.message(), "stop failed after 2s");
        assert_eq!(warn.text("component"), Some("edge"));
        assert_eq!(warn.field("attempt"), Some(&Value::from(1)));
        assert_eq!(warn.field("ok"), Some(&Value::from(false)));
        assert_eq!(warn.text("error"), Some("cannot stop"));
        assert_eq!(warn.errors[0].message, "cannot stop");
        assert_eq!(warn.errors[0].sources, ["disk gone"]);
        assert!(logs.find("edge", "stop").is_some());
        assert!(logs.find("other", "stop").is_none());
        let json = logs.records().remove(1);
        assert_eq!(json["path"], "/etc/app.json");
        assert_eq!(json["level"], "DEBUG");
        assert_eq!(json["spans"], serde_json::json!([]));
        logs.clear();
        assert!(logs.events().is_empty());
    }

    #[test]
    fn a_level_leaves_out_what_is_less_severe() {
        let logs = LogCapture::install_at(Level::WARN);
        tracing::info!("not kept");
        tracing::error!("kept");
        let messages: Vec<String> = logs
            .events()
            .iter()
            .map(|e| e.message().to_owned())
            .collect();
        assert_eq!(messages, ["kept"]);
    }

    /// An error with a source.
    #[derive(Debug)]
    struct Outer(Inner);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot stop")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Inner(&'static str);

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Inner {}
}
