//! [`Lines`]: the layer that writes one text or JSON line per event, with the component the
//! event is about in one place.

use std::{cell::RefCell, fmt::Write as _, io::Write as _};

use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::{
    fmt::{
        MakeWriter,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    layer::{Context, Layer},
    registry::{LookupSpan, Scope},
};

use super::{
    LogFormat,
    fields::{COMPONENT, FieldValue, SpanFields, Visitor},
};

/// Writes each event as one line, and keeps the fields of every span (see [`SpanFields`]) so
/// the lines can name the component they are about.
pub(super) struct Lines<W> {
    writer: W,
    format: LogFormat,
    ansi: bool,
    source: bool,
}

impl<W> Lines<W> {
    /// `ansi` applies to text only: JSON is never coloured.
    pub(super) fn new(writer: W, format: LogFormat, ansi: bool, source: bool) -> Self {
        Lines {
            writer,
            format,
            ansi: ansi && format == LogFormat::Text,
            source,
        }
    }
}

/// The buffers one line is put together in, reused by each thread.
#[derive(Default)]
struct Buffers {
    line: String,
    /// The event's fields but `component` and `message`, already in the output format.
    fields: String,
    component: String,
    message: String,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl<S, W> Layer<S> for Lines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut fields.recorder());
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut fields.recorder());
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        BUFFERS.with(|buffers| match buffers.try_borrow_mut() {
            Ok(mut buffers) => self.write(event, &ctx, &mut buffers),
            // A value's `Debug` that logs while being written: fresh buffers for it.
            Err(_) => self.write(event, &ctx, &mut Buffers::default()),
        });
    }
}

impl<W> Lines<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn write<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, b: &mut Buffers)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Buffers {
            line,
            fields,
            component,
            message,
        } = b;
        for buffer in [&mut *line, &mut *fields, &mut *component, &mut *message] {
            buffer.clear();
        }
        let mut has_component = false;
        event.record(&mut Visitor(|name, value: FieldValue<'_>| match name {
            COMPONENT => {
                has_component = true;
                let _ = value.write_plain(component);
            }
            "message" => {
                let _ = value.write_plain(message);
            }
            _ => match self.format {
                LogFormat::Text => text_field(fields, self.ansi, name, &value),
                LogFormat::Json if self.json_key_taken(name) => {
                    json_field(fields, &format!("fields.{name}"), &value)
                }
                LogFormat::Json => json_field(fields, name, &value),
            },
        }));
        let scope = ctx.event_scope(event);
        if !has_component && let Some(scope) = ctx.event_scope(event) {
            has_component = nearest_component(scope, component);
        }
        let component = has_component.then_some(component.as_str());
        match self.format {
            LogFormat::Text => self.text_line(line, event, component, message, fields, scope),
            LogFormat::Json => self.json_line(line, event, component, message, fields, scope),
        }
        line.push('\n');
        let _ = self
            .writer
            .make_writer_for(event.metadata())
            .write_all(line.as_bytes());
    }

    /// `2026-12-01T10:00:00.123456Z  INFO component=edge isopace_host::call: started phase=start`
    fn text_line<S>(
        &self,
        line: &mut String,
        event: &Event<'_>,
        component: Option<&str>,
        message: &str,
        fields: &str,
        scope: Option<Scope<'_, S>>,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        let paint = |line: &mut String, style: &str, text: &dyn Fn(&mut String)| {
            if self.ansi {
                line.push_str(style);
                text(line);
                line.push_str(RESET);
            } else {
                text(line);
            }
        };
        paint(line, DIM, &|line| timestamp(line));
        line.push(' ');
        let level = *meta.level();
        paint(line, level_style(level), &|line| {
            line.push_str(match level {
                Level::TRACE => "TRACE",
                Level::DEBUG => "DEBUG",
                Level::INFO => " INFO",
                Level::WARN => " WARN",
                _ => "ERROR",
            })
        });
        line.push(' ');
        if let Some(component) = component {
            paint(line, BOLD, &|line| {
                line.push_str("component=");
                push_text(line, component);
            });
            line.push(' ');
        }
        paint(line, DIM, &|line| {
            line.push_str(meta.target());
            line.push(':');
        });
        if self.source
            && let (Some(file), Some(number)) = (meta.file(), meta.line())
        {
            line.push(' ');
            paint(line, DIM, &|line| {
                let _ = write!(line, "{file}:{number}:");
            });
        }
        line.push(' ');
        let _ = TerminalEscape(line).write_str(message);
        // Each field starts with a space; without a message the first one is not needed.
        let start = line.len();
        line.push_str(fields);
        if let Some(scope) = scope {
            // The spans' fields, nearest span first, each name once, none the event has.
            for_each_span_field(scope, |name, value| {
                if meta.fields().field(name).is_none() {
                    text_field(line, self.ansi, name, &value);
                }
            });
        }
        if message.is_empty() && line.len() > start {
            line.remove(start);
        }
    }

    /// Whether a JSON line has a key `name` of its own, which an event field of that name
    /// must not repeat: a reader keeps one value of a repeated key, often the last.
    fn json_key_taken(&self, name: &str) -> bool {
        match name {
            "timestamp" | "level" | "target" | "span" => true,
            "filename" | "line_number" => self.source,
            _ => false,
        }
    }

    /// `{"timestamp":…,"level":"INFO","component":"edge","target":…,"message":…,<fields>,"span":{…}}`
    fn json_line<S>(
        &self,
        line: &mut String,
        event: &Event<'_>,
        component: Option<&str>,
        message: &str,
        fields: &str,
        scope: Option<Scope<'_, S>>,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        line.push_str(r#"{"timestamp":""#);
        timestamp(line);
        line.push_str(r#"","level":""#);
        line.push_str(meta.level().as_str());
        line.push('"');
        if let Some(component) = component {
            line.push_str(r#","component":"#);
            push_json_str(line, component);
        }
        line.push_str(r#","target":"#);
        push_json_str(line, meta.target());
        if self.source
            && let (Some(file), Some(number)) = (meta.file(), meta.line())
        {
            line.push_str(r#","filename":"#);
            push_json_str(line, file);
            let _ = write!(line, r#","line_number":{number}"#);
        }
        if !message.is_empty() {
            line.push_str(r#","message":"#);
            push_json_str(line, message);
        }
        line.push_str(fields);
        if let Some(scope) = scope {
            let start = line.len();
            for_each_span_field(scope, |name, value| json_field(line, name, &value));
            if line.len() > start {
                // `,"a":1,"b":2` becomes `,"span":{"a":1,"b":2}`.
                line.replace_range(start..start + 1, r#","span":{"#);
                line.push('}');
            }
        }
        line.push('}');
    }
}

/// Copies the `component` of the nearest span that has one into `out`.
fn nearest_component<S>(scope: Scope<'_, S>, out: &mut String) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    for span in scope {
        if let Some(component) = span
            .extensions()
            .get::<SpanFields>()
            .and_then(|f| f.component.as_deref())
        {
            out.push_str(component);
            return true;
        }
    }
    false
}

/// Shows `f` the fields of the spans in `scope` but `component`, nearest span first; a field
/// a nearer span already showed is left out.
fn for_each_span_field<S>(scope: Scope<'_, S>, mut f: impl FnMut(&'static str, FieldValue<'_>))
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Spans nest a few deep with a few fields each: a fixed set, no allocation. Past its
    // size names are no longer checked, so a deep stack may show a shadowed field.
    let mut seen: [&str; 32] = [""; 32];
    let mut len = 0;
    for span in scope {
        let extensions = span.extensions();
        let Some(fields) = extensions.get::<SpanFields>() else {
            continue;
        };
        for (name, value) in &fields.fields {
            if seen[..len].contains(name) {
                continue;
            }
            if len < seen.len() {
                seen[len] = name;
                len += 1;
            }
            f(name, value.as_field());
        }
    }
}

/// ` name=value` in text: a string value quoted only when it has to be.
fn text_field(out: &mut String, ansi: bool, name: &str, value: &FieldValue<'_>) {
    out.push(' ');
    if ansi {
        out.push_str(ITALIC);
        out.push_str(name);
        out.push_str(RESET);
    } else {
        out.push_str(name);
    }
    out.push('=');
    match value {
        FieldValue::Str(s) => push_text(out, s),
        // `%display`, `?debug` and errors are quoted like strings when they must be, so a
        // reader splitting `name=value` pairs gets `error="connection refused"` whole; text
        // that is already a quoted string (`?"a b"`) stays as it is.
        FieldValue::Debug(_) | FieldValue::Text(_) | FieldValue::Error(_) => {
            let mut text = String::new();
            let _ = value.write_plain(&mut text);
            if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
                let _ = TerminalEscape(out).write_str(&text);
            } else {
                push_text(out, &text);
            }
        }
        other => {
            let _ = other.write_plain(&mut TerminalEscape(out));
        }
    }
}

/// Escapes, in text, the control characters a terminal acts on (ESC, BEL, BS, FF, DEL and
/// the C1 controls), as `\x1b` or `\u{9b}`: a logged value, such as a child's output, must
/// not restyle or rewrite the screen of an operator reading the log.
struct TerminalEscape<'a>(&'a mut String);

impl std::fmt::Write for TerminalEscape<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let acts = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if !s.contains(acts) {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            match c {
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c if acts(c) => write!(self.0, "\\x{:02x}", c as u32)?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// A string as it is, or quoted and escaped when it is empty or has spaces, quotes, `=` or
/// control characters, so every `name=value` pair reads back unambiguously.
fn push_text(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && !s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if plain {
        out.push_str(s);
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// `,"name":value` in JSON: numbers and booleans as such, everything else a string.
fn json_field(out: &mut String, name: &str, value: &FieldValue<'_>) {
    out.push(',');
    push_json_str(out, name);
    out.push(':');
    match *value {
        FieldValue::I64(n) => {
            let _ = write!(out, "{n}");
        }
        FieldValue::U64(n) => {
            let _ = write!(out, "{n}");
        }
        // Beyond 64 bits a JSON reader may lose precision: those stay strings.
        FieldValue::I128(n) if i64::try_from(n).is_ok() => {
            let _ = write!(out, "{n}");
        }
        FieldValue::U128(n) if u64::try_from(n).is_ok() => {
            let _ = write!(out, "{n}");
        }
        FieldValue::F64(n) if n.is_finite() => {
            let _ = write!(out, "{n}");
        }
        FieldValue::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        ref other => {
            out.push('"');
            let _ = other.write_plain(&mut JsonEscape(out));
            out.push('"');
        }
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let _ = JsonEscape(out).write_str(s);
    out.push('"');
}

/// Escapes what it is written for the inside of a JSON string.
struct JsonEscape<'a>(&'a mut String);

impl std::fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if c < ' ' => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

fn timestamp(out: &mut String) {
    let _ = SystemTime.format_time(&mut Writer::new(out));
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const ITALIC: &str = "\x1b[3m";

fn level_style(level: Level) -> &'static str {
    match level {
        Level::TRACE => "\x1b[35m",
        Level::DEBUG => "\x1b[34m",
        Level::INFO => "\x1b[32m",
        Level::WARN => "\x1b[33m",
        _ => "\x1b[31m",
    }
}
