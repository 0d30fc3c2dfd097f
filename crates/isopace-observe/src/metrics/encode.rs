//! The Prometheus text exposition format (version 0.0.4): names, escaping and sample lines.

use std::{borrow::Cow, fmt::Write as _};

/// A metric name as Prometheus accepts it (`[a-zA-Z_:][a-zA-Z0-9_:]*`): other characters
/// become `_`, a leading digit gets a `_` prefix, and an empty name becomes `_`.
pub(super) fn metric_name(name: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let leading_digit = name.starts_with(|c: char| c.is_ascii_digit());
    if !name.is_empty() && !leading_digit && name.chars().all(valid) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.is_empty() || leading_digit {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if valid(c) { c } else { '_' }));
    Cow::Owned(out)
}

/// The rendered name of a counter: sanitised, with `_total` added if absent.
pub(super) fn counter_name(name: &str) -> String {
    let base = metric_name(name);
    if base.ends_with("_total") {
        base.into_owned()
    } else {
        format!("{base}_total")
    }
}

/// Writes `# HELP` (when there is help text) and `# TYPE` for one metric family.
pub(super) fn header(out: &mut String, name: &str, kind: &str, help: Option<&str>) {
    if let Some(help) = help {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    // Writing into a `String` cannot fail.
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line: `name{labels,extra} value`.
pub(super) fn sample(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    extra: Option<(&str, &str)>,
    value: &str,
) {
    out.push_str(name);
    let extra = extra.iter().map(|(k, v)| (*k, *v));
    let mut all = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra)
        .peekable();
    if all.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A float as the format spells it: `+Inf`, `-Inf`, `NaN`, otherwise the shortest decimal
/// that reads back as the same value.
pub(super) fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(metric_name("http.requests-in"), "http_requests_in");
        assert_eq!(metric_name("1xx"), "_1xx");
        assert_eq!(metric_name(""), "_");
        assert_eq!(metric_name("ns:ok_name"), "ns:ok_name");
        assert!(matches!(metric_name("ok"), Cow::Borrowed(_)));
        assert_eq!(counter_name("requests"), "requests_total");
        assert_eq!(counter_name("requests_total"), "requests_total");
        assert_eq!(counter_name("dns.lookups"), "dns_lookups_total");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = String::new();
        header(&mut out, "m", "gauge", Some("a \\ b\nc \"q\""));
        let labels = [("path".to_owned(), "C:\\x \"y\"\nz".to_owned())];
        sample(&mut out, "m", &labels, None, "1");
        assert_eq!(
            out,
            "# HELP m a \\\\ b\\nc \"q\"\n# TYPE m gauge\nm{path=\"C:\\\\x \\\"y\\\"\\nz\"} 1\n"
        );
    }

    #[test]
    fn floats_use_the_format_spelling() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(1.0), "1");
    }
}
