//! Mapping of isopace attributes to OpenTelemetry key-values.

use isopace_observe::{Attr, AttrValue};
use opentelemetry::{KeyValue, Value};

/// The OpenTelemetry key-value for an isopace attribute, typed as the attribute is.
///
/// OpenTelemetry has no unsigned integers: a `u64` that fits an `i64` becomes one, a larger
/// one becomes its decimal text so no digit is lost.
pub(crate) fn key_value(attr: &Attr<'_>) -> KeyValue {
    KeyValue::new(attr.key.to_owned(), value(&attr.value))
}

/// The key-values for a slice of attributes, in order.
pub(crate) fn key_values(attrs: &[Attr<'_>]) -> Vec<KeyValue> {
    attrs.iter().map(key_value).collect()
}

/// Calls `f` with the key-values for `attrs`. Measurements usually carry a few attributes,
/// so up to three are converted on the stack: one allocation fewer per measurement.
pub(crate) fn with_key_values<R>(attrs: &[Attr<'_>], f: impl FnOnce(&[KeyValue]) -> R) -> R {
    match attrs {
        [] => f(&[]),
        [a] => f(&[key_value(a)]),
        [a, b] => f(&[key_value(a), key_value(b)]),
        [a, b, c] => f(&[key_value(a), key_value(b), key_value(c)]),
        _ => f(&key_values(attrs)),
    }
}

fn value(value: &AttrValue<'_>) -> Value {
    match value {
        AttrValue::Str(s) => Value::from(s.clone().into_owned()),
        AttrValue::I64(v) => Value::I64(*v),
        AttrValue::U64(v) => match i64::try_from(*v) {
            Ok(v) => Value::I64(v),
            Err(_) => Value::from(v.to_string()),
        },
        AttrValue::F64(v) => Value::F64(*v),
        AttrValue::Bool(v) => Value::Bool(*v),
    }
}

#[cfg(test)]
mod tests {
    use isopace_observe::attr;

    use super::*;

    #[test]
    fn each_type_maps_to_its_opentelemetry_type() {
        let cases = [
            (attr("s", "text"), Value::from("text")),
            (attr("i", -3_i64), Value::I64(-3)),
            (attr("u", 7_u64), Value::I64(7)),
            (attr("f", 0.5_f64), Value::F64(0.5)),
            (attr("b", true), Value::Bool(true)),
        ];
        for (attr, expected) in cases {
            let kv = key_value(&attr);
            assert_eq!(kv.key.as_str(), attr.key);
            assert_eq!(kv.value, expected, "attribute {}", attr.key);
        }
    }

    #[test]
    fn unsigned_beyond_i64_keeps_every_digit_as_text() {
        let kv = key_value(&attr("big", u64::MAX));
        assert_eq!(kv.value, Value::from(u64::MAX.to_string()));
        let kv = key_value(&attr("edge", i64::MAX as u64));
        assert_eq!(kv.value, Value::I64(i64::MAX));
    }

    #[test]
    fn key_values_keep_order_however_many() {
        let all = [
            attr("a", 1_i64),
            attr("b", "x"),
            attr("c", true),
            attr("d", 2.0_f64),
            attr("e", 3_u64),
        ];
        for n in 0..=all.len() {
            let attrs = &all[..n];
            let keys = with_key_values(attrs, |kvs| {
                kvs.iter().map(|kv| kv.key.to_string()).collect::<Vec<_>>()
            });
            let expected: Vec<String> = attrs.iter().map(|a| a.key.to_owned()).collect();
            assert_eq!(keys, expected, "{n} attributes");
            assert_eq!(key_values(attrs).len(), n);
        }
    }
}
