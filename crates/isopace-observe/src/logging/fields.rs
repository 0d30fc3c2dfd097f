//! Field values as the line formats see them: borrowed from an event, or kept per span with
//! the span's `component` apart.

use std::{error::Error as StdError, fmt};

use tracing::field::{Field, Visit};

/// The field that names the component a line is about.
pub(super) const COMPONENT: &str = "component";

/// One field value, borrowed for as long as the visit lasts.
pub(super) enum FieldValue<'a> {
    /// Recorded as a string (`field = "text"`): quoted in text output only when it has to be.
    Str(&'a str),
    /// Anything written through `Debug` (which is how `%x` passes its `Display` text).
    Debug(&'a dyn fmt::Debug),
    /// Text kept from an earlier `Debug`, `Display` or error: written as it is.
    Text(&'a str),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Bool(bool),
    /// An error, written with its sources (`a: b: c`).
    Error(&'a (dyn StdError + 'static)),
}

impl FieldValue<'_> {
    /// Writes the value's plain text: no quotes, no escapes.
    pub(super) fn write_plain(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match *self {
            FieldValue::Str(s) | FieldValue::Text(s) => out.write_str(s),
            FieldValue::Debug(d) => write!(out, "{d:?}"),
            FieldValue::I64(n) => write!(out, "{n}"),
            FieldValue::U64(n) => write!(out, "{n}"),
            FieldValue::I128(n) => write!(out, "{n}"),
            FieldValue::U128(n) => write!(out, "{n}"),
            FieldValue::F64(n) => write!(out, "{n:?}"),
            FieldValue::Bool(b) => write!(out, "{b}"),
            FieldValue::Error(e) => write_error(out, e),
        }
    }

    fn to_owned_value(&self) -> Value {
        match *self {
            FieldValue::Str(s) => Value::Str(s.to_owned()),
            FieldValue::I64(n) => Value::I64(n),
            FieldValue::U64(n) => Value::U64(n),
            FieldValue::I128(n) if i64::try_from(n).is_ok() => Value::I64(n as i64),
            FieldValue::U128(n) if u64::try_from(n).is_ok() => Value::U64(n as u64),
            FieldValue::F64(n) => Value::F64(n),
            FieldValue::Bool(b) => Value::Bool(b),
            ref other => {
                let mut text = String::new();
                let _ = other.write_plain(&mut text);
                Value::Text(text)
            }
        }
    }
}

/// The error and its sources, outermost first, as `crate::error_chain` joins them.
fn write_error(out: &mut impl fmt::Write, error: &(dyn StdError + 'static)) -> fmt::Result {
    write!(out, "{error}")?;
    let mut source = error.source();
    while let Some(s) = source {
        write!(out, ": {s}")?;
        source = s.source();
    }
    Ok(())
}

/// A span field value, owned by the span.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Str(String),
    /// The text of a value written through `Debug` or `Display`, or of an error.
    Text(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Value {
    pub(super) fn as_field(&self) -> FieldValue<'_> {
        match self {
            Value::Str(s) => FieldValue::Str(s),
            Value::Text(s) => FieldValue::Text(s),
            Value::I64(n) => FieldValue::I64(*n),
            Value::U64(n) => FieldValue::U64(*n),
            Value::F64(n) => FieldValue::F64(*n),
            Value::Bool(b) => FieldValue::Bool(*b),
        }
    }
}

/// The fields of one span, kept in its extensions by the line layer: `component` apart, the
/// others in the order they were declared.
#[derive(Debug, Default)]
pub(super) struct SpanFields {
    pub(super) component: Option<String>,
    pub(super) fields: Vec<(&'static str, Value)>,
}

impl SpanFields {
    /// A visitor that sets the fields it is shown, replacing earlier values.
    pub(super) fn recorder(&mut self) -> Visitor<impl FnMut(&'static str, FieldValue<'_>) + '_> {
        Visitor(move |name, value: FieldValue<'_>| {
            if name == COMPONENT {
                let mut text = String::new();
                let _ = value.write_plain(&mut text);
                self.component = Some(text);
                return;
            }
            let value = value.to_owned_value();
            match self.fields.iter_mut().find(|(key, _)| *key == name) {
                Some(slot) => slot.1 = value,
                None => self.fields.push((name, value)),
            }
        })
    }
}

/// Shows each field to a closure as its name (a raw identifier's `r#` removed) and value.
pub(super) struct Visitor<F>(pub(super) F);

impl<F: FnMut(&'static str, FieldValue<'_>)> Visitor<F> {
    fn show(&mut self, field: &Field, value: FieldValue<'_>) {
        let name = field.name();
        (self.0)(name.strip_prefix("r#").unwrap_or(name), value);
    }
}

impl<F: FnMut(&'static str, FieldValue<'_>)> Visit for Visitor<F> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.show(field, FieldValue::Debug(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.show(field, FieldValue::Str(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.show(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.show(field, FieldValue::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.show(field, FieldValue::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.show(field, FieldValue::U128(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.show(field, FieldValue::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.show(field, FieldValue::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn StdError + 'static)) {
        self.show(field, FieldValue::Error(value));
    }
}
