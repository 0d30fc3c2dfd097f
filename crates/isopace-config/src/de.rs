//! Decoding the tree into user types, lenient about scalars that crossed an environment
//! variable: `ISO_DB_PASSWORD=12345` becomes a JSON number, and a `String` field must still
//! accept it, as an `int` getter accepts `"8080"`.

use serde::{
    Deserializer,
    de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor},
    forward_to_deserialize_any,
};
use serde_json::{Number, Value};

use crate::Error;

/// Decodes `value` (found at dot path `path`) into `T`, naming the failing field on error.
pub(crate) fn decode<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T, Error> {
    serde_path_to_error::deserialize(Lenient(value)).map_err(|e| Error::Unmarshal {
        path: path.to_owned(),
        field: field_path(e.path()),
        source: e.into_inner(),
    })
}

/// serde_path_to_error prints an empty path as "."; the error message wants it empty.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

/// A number written as text, for targets that want a number.
fn number_in(text: &str) -> Option<Value> {
    serde_json::from_str::<Number>(text.trim())
        .ok()
        .map(Value::Number)
}

/// A `&Value` deserializer that converts between text and numbers or bools when the target
/// asks for the other; everything else behaves exactly like serde_json's own.
struct Lenient<'a>(&'a Value);

macro_rules! numeric {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            match self.0 {
                Value::String(s) => match number_in(s) {
                    Some(n) => n.$method(visitor),
                    None => self.0.$method(visitor),
                },
                other => other.$method(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Lenient<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = Seq(items.iter());
                let value = visitor.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(value),
                    _ => Err(de::Error::invalid_length(
                        items.len(),
                        &"fewer elements in array",
                    )),
                }
            }
            Value::Object(map) => visitor.visit_map(Entries {
                iter: map.iter(),
                value: None,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            other => other.deserialize_str(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::String(s) if s.eq_ignore_ascii_case("true") => visitor.visit_bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => visitor.visit_bool(false),
            other => other.deserialize_bool(visitor),
        }
    }

    numeric! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_char(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_byte_buf(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_identifier(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! { seq tuple tuple_struct map struct }
}

struct Seq<'a>(std::slice::Iter<'a, Value>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Lenient(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'a> {
    iter: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Lenient(value)),
            None => Err(de::Error::custom("map value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A map key: text, which numeric key types (`HashMap<u16, _>`) may parse.
struct Key<'a>(&'a str);

macro_rules! numeric_key {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            match number_in(self.0) {
                Some(n) => n.$method(visitor),
                None => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::value::BorrowedStrDeserializer::<serde_json::Error>::new(self.0)
            .deserialize_enum(name, variants, visitor)
    }

    numeric_key! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    forward_to_deserialize_any! {
        bool char str string bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Db {
        password: String,
        port: u16,
        tls: bool,
        ratio: f64,
        hosts: Vec<String>,
        limit: Option<u32>,
        #[serde(default)]
        mode: Mode,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        #[default]
        Fast,
        Safe,
    }

    #[test]
    fn scalars_convert_where_the_target_asks() {
        let value = json!({
            "password": 12345, "port": "8080", "tls": "TRUE", "ratio": "0.5",
            "hosts": ["a", 2], "limit": null, "mode": "safe"
        });
        let db: Db = decode(&value, "db").unwrap();
        assert_eq!(
            db,
            Db {
                password: "12345".into(),
                port: 8080,
                tls: true,
                ratio: 0.5,
                hosts: vec!["a".into(), "2".into()],
                limit: None,
                mode: Mode::Safe,
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let value = json!({"servers": [{"port": 1}, {"port": "x"}]});
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Server {
            port: u16,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Root {
            servers: Vec<Server>,
        }
        match decode::<Root>(&value, "") {
            Err(Error::Unmarshal { path, field, .. }) => {
                assert_eq!(path, "");
                assert_eq!(field, "servers[1].port");
            }
            other => panic!("unexpected {other:?}"),
        }
        match decode::<u16>(&json!("x"), "link.port") {
            Err(Error::Unmarshal { path, field, .. }) => {
                assert_eq!((path.as_str(), field.as_str()), ("link.port", ""));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn numeric_map_keys_and_tuples() {
        let keyed: BTreeMap<u16, String> =
            decode(&json!({"80": "http", "443": "https"}), "").unwrap();
        assert_eq!(keyed[&443], "https");
        let pair: (u8, String) = decode(&json!([1, "a"]), "").unwrap();
        assert_eq!(pair, (1, "a".into()));
        assert!(decode::<(u8,)>(&json!([1, 2]), "").is_err());
        let any: Value = decode(&json!({"a": [1, {"b": null}]}), "").unwrap();
        assert_eq!(any, json!({"a": [1, {"b": null}]}));
    }
}
