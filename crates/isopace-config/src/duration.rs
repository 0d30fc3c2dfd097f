//! Go-style duration strings ("1m30s", "250ms") and numbers of seconds, parsed without panics.

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

use crate::Error;

/// The longest duration accepted: `i64::MAX` nanoseconds (about 292 years), the reference's
/// limit. Anything longer is a typo, and staying inside it means a value never wraps when a
/// caller converts it to signed nanoseconds.
pub const MAX_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go-style duration: a sequence of decimal numbers, each with an optional fraction
/// and a unit, such as `"300ms"`, `"1.5s"`, `"1m30s"` or `"2h45m"`.
///
/// Units are `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h` and `d` (24 hours). A bare number
/// (`"30"`, `"1.5"`) means seconds, as a JSON number does; in a sequence every number needs
/// a unit. A leading `+` is allowed, and surrounding whitespace is ignored. Negative durations and durations
/// longer than [`MAX_DURATION`] are errors. Digits of a fraction below a nanosecond are
/// dropped.
///
/// ```
/// use std::time::Duration;
/// use isopace_config::parse_duration;
///
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
/// assert_eq!(parse_duration("1d12h").unwrap(), Duration::from_secs(36 * 3600));
/// assert!(parse_duration("1m30").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let fail = |reason: &'static str| Error::Duration {
        input: input.chars().take(64).collect(),
        reason,
    };
    let text = input.trim();
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if text.is_empty() {
        return Err(fail("empty duration"));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, after) = rest.split_at(int_end);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after) => {
                let end = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(end)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(fail("expected a number"));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let bare = unit.is_empty() && rest.len() == text.len() && next.is_empty();
        let scale: u128 = match unit {
            _ if bare => 1_000_000_000,
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(fail("missing unit (use ns, us, ms, s, m, h or d)")),
            _ => return Err(fail("unknown unit (use ns, us, ms, s, m, h or d)")),
        };
        let mut whole: u128 = 0;
        for digit in int_digits.bytes() {
            whole = whole * 10 + u128::from(digit - b'0');
            if whole > MAX_NANOS {
                return Err(fail("out of range"));
            }
        }
        let mut nanos = whole * scale;
        // 19 fraction digits are already below a nanosecond even for hours, and stopping
        // there keeps `fraction * scale` far from overflowing.
        let (mut fraction, mut divisor) = (0u128, 1u128);
        for digit in frac_digits.bytes().take(19) {
            fraction = fraction * 10 + u128::from(digit - b'0');
            divisor *= 10;
        }
        nanos += fraction * scale / divisor;
        total += nanos;
        if total > MAX_NANOS {
            return Err(fail("out of range"));
        }
        rest = next;
    }
    if negative && total > 0 {
        return Err(fail("negative durations are not supported"));
    }
    Ok(nanos_to_duration(total))
}

fn nanos_to_duration(nanos: u128) -> Duration {
    // Callers keep nanos <= i64::MAX, so both parts fit.
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

/// A JSON number of seconds as a duration: `None` when negative, NaN or beyond
/// [`MAX_DURATION`].
pub(crate) fn seconds(number: &serde_json::Number) -> Option<Duration> {
    if let Some(secs) = number.as_u64() {
        return from_whole_seconds(secs);
    }
    if number.as_i64().is_some() {
        return None;
    }
    number.as_f64().and_then(from_fractional_seconds)
}

fn from_whole_seconds(secs: u64) -> Option<Duration> {
    let duration = Duration::from_secs(secs);
    (duration <= MAX_DURATION).then_some(duration)
}

fn from_fractional_seconds(secs: f64) -> Option<Duration> {
    // The range check also rejects NaN, which compares false with everything.
    if !(0.0..=MAX_DURATION.as_secs_f64()).contains(&secs) {
        return None;
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

/// A config value as a duration: a Go-style string or a number of seconds.
pub(crate) fn from_value(value: &Value) -> Option<Duration> {
    match value {
        Value::String(s) => parse_duration(s).ok(),
        Value::Number(n) => seconds(n),
        _ => None,
    }
}

/// Formats a duration the way Go prints one (`"1h2m3.5s"`, `"250ms"`, `"1.5µs"`, `"0s"`), so
/// [`parse_duration`] reads it back.
///
/// ```
/// use std::time::Duration;
/// use isopace_config::format_duration;
///
/// assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
/// assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
/// ```
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let mut out = String::new();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        push_decimal(&mut out, nanos, scale);
        out.push_str(unit);
        return out;
    }
    let secs = duration.as_secs();
    let (hours, minutes) = (secs / 3600, secs % 3600 / 60);
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    push_decimal(
        &mut out,
        u128::from(secs % 60) * 1_000_000_000 + u128::from(duration.subsec_nanos()),
        1_000_000_000,
    );
    out.push('s');
    out
}

/// Writes `value / scale` with the fraction's trailing zeros trimmed.
fn push_decimal(out: &mut String, value: u128, scale: u128) {
    let _ = write!(out, "{}", value / scale);
    let fraction = value % scale;
    if fraction > 0 {
        let width = scale.ilog10() as usize;
        let digits = format!("{fraction:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Serde support for [`Duration`] fields written as Go-style strings or numbers of seconds.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Link {
///     #[serde(with = "isopace_config::serde_duration")]
///     timeout: Duration,
///     #[serde(default, with = "isopace_config::serde_duration::option")]
///     idle: Option<Duration>,
/// }
///
/// let link: Link = serde_json::from_str(r#"{"timeout": "1m30s"}"#).unwrap();
/// assert_eq!(link.timeout, Duration::from_secs(90));
/// assert_eq!(link.idle, None);
/// let link: Link = serde_json::from_str(r#"{"timeout": 2.5, "idle": "5m"}"#).unwrap();
/// assert_eq!(link.timeout, Duration::from_millis(2500));
/// assert_eq!(serde_json::to_string(&link).unwrap(), r#"{"timeout":"2.5s","idle":"5m0s"}"#);
/// ```
pub mod serde_duration {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, Serializer, de};

    use super::{format_duration, from_fractional_seconds, from_whole_seconds, parse_duration};

    /// Writes the duration as a Go-style string.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    /// Reads a Go-style string or a non-negative number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"1m30s\" or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            from_whole_seconds(v).ok_or_else(|| E::custom("duration out of range"))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .ok()
                .and_then(from_whole_seconds)
                .ok_or_else(|| E::custom("duration must be non-negative and at most 292 years"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            from_fractional_seconds(v).ok_or_else(|| {
                E::custom("duration must be finite, non-negative and at most 292 years")
            })
        }
    }

    /// The same for `Option<Duration>`: null or absent (with `#[serde(default)]`) is `None`.
    pub mod option {
        use std::{fmt, time::Duration};

        use serde::{Deserializer, Serializer, de};

        /// Writes `Some` as a Go-style string and `None` as null.
        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(d) => super::serialize(d, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads null as `None`, anything else as [`super::deserialize`] does.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            deserializer.deserialize_option(OptionVisitor)
        }

        struct OptionVisitor;

        impl<'de> de::Visitor<'de> for OptionVisitor {
            type Value = Option<Duration>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null, a duration such as \"1m30s\" or a number of seconds")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                super::deserialize(d).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn go_style_strings_parse() {
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("300us"), Duration::from_micros(300));
        assert_eq!(ok("300µs"), Duration::from_micros(300));
        assert_eq!(ok("300μs"), Duration::from_micros(300));
        assert_eq!(ok("10ns"), Duration::from_nanos(10));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok(" .5s "), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("1h2m3.5s"), Duration::new(3723, 500_000_000));
        assert_eq!(
            ok("1.0000000000000000000000001h"),
            Duration::from_secs(3600)
        );
        assert_eq!(ok("2562047h47m16.854775807s"), MAX_DURATION);
        assert_eq!(ok("106751d23h47m16.854775807s"), MAX_DURATION);
    }

    #[test]
    fn a_bare_number_is_seconds_and_d_is_days() {
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok(" 1.5 "), Duration::from_millis(1500));
        assert_eq!(ok(".25"), Duration::from_millis(250));
        assert_eq!(ok("+7"), Duration::from_secs(7));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("2d12h"), Duration::from_secs(60 * 3600));
        assert_eq!(ok("0.5d"), Duration::from_secs(43_200));
        assert_eq!(ok("9223372036.854775807"), MAX_DURATION);
        assert!(parse_duration("9223372036.854775808").is_err());
        assert!(parse_duration("106752d").is_err());
        // As JSON numbers and strings read alike.
        assert_eq!(from_value(&Value::from("30")), from_value(&Value::from(30)));
    }

    #[test]
    fn bad_strings_are_errors_with_a_reason() {
        for (input, reason) in [
            ("", "empty duration"),
            ("1m30", "missing unit (use ns, us, ms, s, m, h or d)"),
            ("1.5.5", "missing unit (use ns, us, ms, s, m, h or d)"),
            ("-5", "negative durations are not supported"),
            ("5x", "unknown unit (use ns, us, ms, s, m, h or d)"),
            (".s", "expected a number"),
            ("s", "expected a number"),
            ("-5s", "negative durations are not supported"),
            ("2562047h47m16.854775808s", "out of range"),
            ("99999999999999999999999999999999999h", "out of range"),
            ("1e3s", "unknown unit (use ns, us, ms, s, m, h or d)"),
        ] {
            match parse_duration(input) {
                Err(Error::Duration { reason: r, .. }) => assert_eq!(r, reason, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parsing_is_total_on_odd_input() {
        for input in [
            "µ",
            "1µ",
            "1.2.3s",
            "..",
            "-",
            "+",
            "1s-",
            "１s",
            "\u{0}",
            "9".repeat(500).as_str(),
        ] {
            assert!(parse_duration(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn numbers_are_seconds_and_out_of_range_is_none() {
        let n = |v: Value| from_value(&v);
        assert_eq!(n(serde_json::json!(5)), Some(Duration::from_secs(5)));
        assert_eq!(n(serde_json::json!(0.25)), Some(Duration::from_millis(250)));
        assert_eq!(n(serde_json::json!(1e19)), None);
        assert_eq!(n(serde_json::json!(10_000_000_000_000_000_000u64)), None);
        assert_eq!(n(serde_json::json!(-1)), None);
        assert_eq!(n(serde_json::json!(-0.5)), None);
        assert_eq!(n(serde_json::json!(true)), None);
        assert_eq!(from_fractional_seconds(f64::NAN), None);
        assert_eq!(from_fractional_seconds(f64::INFINITY), None);
    }

    #[test]
    fn formatting_round_trips() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(10), "10ns"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::new(3723, 500_000_000), "1h2m3.5s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(ok(text), d);
        }
    }
}
