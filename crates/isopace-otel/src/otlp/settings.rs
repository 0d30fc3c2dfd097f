//! The standard `OTEL_*` variables, read and checked before anything is built.
//!
//! The exporter and SDK builders read most of these variables themselves and quietly fall
//! back to defaults on a value they cannot use. Checking them here first turns a typo into
//! an error at startup that names the variable; the values found are then handed to the
//! builders explicitly, so what is checked is what is used. No error quotes a value:
//! headers carry credentials, and endpoints may.

use std::{collections::HashMap, env::VarError, time::Duration};

use hyper::{
    Uri,
    header::{HeaderName, HeaderValue},
};

use super::Error;

/// Turns the whole SDK off when `true`.
pub(crate) const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
pub(crate) const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// Read by the SDK's batch span processor; checked here.
const BATCH_VARIABLES: &[&str] = &[
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
];
/// Read by the SDK's periodic metric reader; checked here.
const READER_VARIABLES: &[&str] = &["OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT"];
/// The exporter's request timeout when no variable sets one (the specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One kind of telemetry and the names of its variables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signal {
    /// `traces` or `metrics`.
    pub(crate) name: &'static str,
    exporter: &'static str,
    endpoint: &'static str,
    headers: &'static str,
    timeout: &'static str,
    protocol: &'static str,
    /// Appended to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    path: &'static str,
    /// The SDK's own variables for this signal's processor or reader.
    sdk: &'static [&'static str],
}

pub(crate) const TRACES: Signal = Signal {
    name: "traces",
    exporter: "OTEL_TRACES_EXPORTER",
    endpoint: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    headers: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    timeout: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    protocol: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    path: "v1/traces",
    sdk: BATCH_VARIABLES,
};

pub(crate) const METRICS: Signal = Signal {
    name: "metrics",
    exporter: "OTEL_METRICS_EXPORTER",
    endpoint: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    headers: "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    timeout: "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    protocol: "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    path: "v1/metrics",
    sdk: READER_VARIABLES,
};

/// Where and how one signal is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Export {
    /// The full URL requests go to (`…/v1/traces`, `…/v1/metrics`).
    pub(crate) endpoint: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) timeout: Duration,
}

/// What the variables ask for, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) service_name: String,
    pub(crate) traces: Option<Export>,
    pub(crate) metrics: Option<Export>,
}

/// Reads the variables through `var` (shaped like `std::env::var`). `None` when nothing is
/// to be exported: `OTEL_SDK_DISABLED=true`, or no endpoint variable names a collector.
pub(crate) fn read(
    default_service_name: &str,
    var: &dyn Fn(&str) -> Result<String, VarError>,
) -> Result<Option<Settings>, Error> {
    let vars = Vars(var);
    match vars
        .get(SDK_DISABLED)?
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => {}
        Some("true") => return Ok(None),
        Some(_) => return Err(Error::variable(SDK_DISABLED, "must be `true` or `false`")),
    }
    let traces = vars.export(&TRACES)?;
    let metrics = vars.export(&METRICS)?;
    if traces.is_none() && metrics.is_none() {
        return Ok(None);
    }
    let service_name = vars.service_name(default_service_name)?;
    Ok(Some(Settings {
        service_name,
        traces,
        metrics,
    }))
}

struct Vars<'a>(&'a dyn Fn(&str) -> Result<String, VarError>);

impl Vars<'_> {
    /// The variable's value; an empty one counts as unset, as the specification says.
    fn get(&self, name: &'static str) -> Result<Option<String>, Error> {
        match (self.0)(name) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => Ok(Some(value.trim().to_owned())),
            Err(VarError::NotPresent) => Ok(None),
            Err(VarError::NotUnicode(_)) => Err(Error::variable(name, "is not valid UTF-8")),
        }
    }

    /// The signal-specific variable if set, else the general one, with the name it came from.
    fn either(
        &self,
        specific: &'static str,
        general: &'static str,
    ) -> Result<Option<(&'static str, String)>, Error> {
        if let Some(value) = self.get(specific)? {
            return Ok(Some((specific, value)));
        }
        Ok(self.get(general)?.map(|value| (general, value)))
    }

    fn export(&self, signal: &Signal) -> Result<Option<Export>, Error> {
        let endpoint = if let Some(url) = self.get(signal.endpoint)? {
            check_endpoint(signal.endpoint, &url)?;
            url
        } else if let Some(base) = self.get(ENDPOINT)? {
            check_endpoint(ENDPOINT, &base)?;
            format!("{}/{}", base.trim_end_matches('/'), signal.path)
        } else {
            return Ok(None);
        };
        match self.get(signal.exporter)?.as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(_) => {
                return Err(Error::variable(
                    signal.exporter,
                    "must be `otlp` or `none`: this build exports only over OTLP",
                ));
            }
        }
        if let Some((name, protocol)) = self.either(signal.protocol, PROTOCOL)?
            && protocol != "http/protobuf"
        {
            return Err(Error::variable(
                name,
                "must be `http/protobuf`: this build sends neither gRPC nor JSON",
            ));
        }
        let headers = match self.either(signal.headers, HEADERS)? {
            Some((name, list)) => parse_headers(name, &list)?,
            None => HashMap::new(),
        };
        let timeout = match self.either(signal.timeout, TIMEOUT)? {
            Some((name, ms)) => Duration::from_millis(whole_number(name, &ms)?),
            None => DEFAULT_TIMEOUT,
        };
        for &name in signal.sdk {
            if let Some(value) = self.get(name)? {
                whole_number(name, &value)?;
            }
        }
        Ok(Some(Export {
            endpoint,
            headers,
            timeout,
        }))
    }

    /// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else the
    /// default.
    fn service_name(&self, default: &str) -> Result<String, Error> {
        let mut from_attributes = None;
        if let Some(list) = self.get(RESOURCE_ATTRIBUTES)? {
            for (index, entry) in entries(&list) {
                match entry.split_once('=') {
                    Some((key, value)) if !key.trim().is_empty() => {
                        if key.trim() == "service.name" {
                            from_attributes = Some(value.trim().to_owned());
                        }
                    }
                    _ => return Err(not_key_value(RESOURCE_ATTRIBUTES, index)),
                }
            }
        }
        Ok(self
            .get(SERVICE_NAME)?
            .or(from_attributes)
            .unwrap_or_else(|| default.to_owned()))
    }
}

/// Only plain `http://` with a host: TLS is not built in.
fn check_endpoint(name: &'static str, url: &str) -> Result<(), Error> {
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::variable(name, "is not a URL"))?;
    match uri.scheme_str() {
        Some("http") if uri.authority().is_some() => Ok(()),
        Some("http") => Err(Error::variable(name, "has no host")),
        Some("https") => Err(Error::variable(
            name,
            "is an https:// URL, but this build has no TLS: send to a collector over http:// \
             (a local agent or sidecar)",
        )),
        _ => Err(Error::variable(name, "must be an http:// URL")),
    }
}

fn whole_number(name: &'static str, value: &str) -> Result<u64, Error> {
    value
        .parse()
        .map_err(|_| Error::variable(name, "must be a whole number (milliseconds or a count)"))
}

/// The non-empty comma-separated entries of a list, numbered from 1.
fn entries(list: &str) -> impl Iterator<Item = (usize, &str)> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
        .map(|(i, e)| (i + 1, e))
}

fn not_key_value(name: &'static str, index: usize) -> Error {
    Error::Variable {
        name,
        problem: format!("entry {index} is not `key=value`"),
    }
}

/// `key=value` pairs, values percent-decoded, each a valid HTTP header.
fn parse_headers(name: &'static str, list: &str) -> Result<HashMap<String, String>, Error> {
    let mut headers = HashMap::new();
    for (index, entry) in entries(list) {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| not_key_value(name, index))?;
        let invalid = |what: &str| Error::Variable {
            name,
            problem: format!("entry {index}: {what}"),
        };
        let key = key.trim();
        HeaderName::from_bytes(key.as_bytes()).map_err(|_| invalid("not a header name"))?;
        let value = percent_decode(value.trim()).ok_or_else(|| invalid("bad %-escape"))?;
        HeaderValue::from_str(&value).map_err(|_| invalid("not a header value"))?;
        headers.insert(key.to_owned(), value);
    }
    Ok(headers)
}

/// Decodes `%XX` escapes; `None` on a broken escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_from(pairs: &[(&str, &str)]) -> Result<Option<Settings>, Error> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read("isopace", &|name| {
            map.get(name).cloned().ok_or(VarError::NotPresent)
        })
    }

    fn problem(pairs: &[(&str, &str)]) -> String {
        read_from(pairs).expect_err("an error").to_string()
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(read_from(&[]).unwrap(), None);
        // Variables that only shape an export are not enough, and are not checked.
        let shaping = [
            (TIMEOUT, "soon"),
            (HEADERS, "broken"),
            ("OTEL_BSP_SCHEDULE_DELAY", "x"),
        ];
        assert_eq!(read_from(&shaping).unwrap(), None);
        assert_eq!(read_from(&[(ENDPOINT, "")]).unwrap(), None);
    }

    #[test]
    fn the_general_endpoint_gets_each_signal_path() {
        let settings = read_from(&[(ENDPOINT, "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(settings.service_name, "isopace");
        let traces = settings.traces.unwrap();
        assert_eq!(traces.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(traces.timeout, DEFAULT_TIMEOUT);
        assert!(traces.headers.is_empty());
        let metrics = settings.metrics.unwrap();
        assert_eq!(metrics.endpoint, "http://collector:4318/v1/metrics");
        let prefixed = read_from(&[(ENDPOINT, "http://gw/otlp")]).unwrap().unwrap();
        assert_eq!(
            prefixed.traces.unwrap().endpoint,
            "http://gw/otlp/v1/traces"
        );
    }

    #[test]
    fn a_signal_endpoint_is_used_as_given_and_alone_turns_on_its_signal() {
        let settings = read_from(&[(TRACES.endpoint, "http://127.0.0.1:9/spans")])
            .unwrap()
            .unwrap();
        assert_eq!(
            settings.traces.unwrap().endpoint,
            "http://127.0.0.1:9/spans"
        );
        assert_eq!(settings.metrics, None);
        let both = read_from(&[(ENDPOINT, "http://a:1"), (METRICS.endpoint, "http://b:2/m")])
            .unwrap()
            .unwrap();
        assert_eq!(both.traces.unwrap().endpoint, "http://a:1/v1/traces");
        assert_eq!(both.metrics.unwrap().endpoint, "http://b:2/m");
    }

    #[test]
    fn disabled_sdk_and_none_exporters_turn_export_off() {
        let on = (ENDPOINT, "http://a:1");
        assert_eq!(read_from(&[on, (SDK_DISABLED, "TRUE")]).unwrap(), None);
        assert!(read_from(&[on, (SDK_DISABLED, "false")]).unwrap().is_some());
        let metrics_only = read_from(&[on, (TRACES.exporter, "none")])
            .unwrap()
            .unwrap();
        assert_eq!(metrics_only.traces, None);
        assert!(metrics_only.metrics.is_some());
        let off = [on, (TRACES.exporter, "none"), (METRICS.exporter, "none")];
        assert_eq!(read_from(&off).unwrap(), None);
    }

    #[test]
    fn headers_and_timeouts_prefer_the_signal_variable() {
        let settings = read_from(&[
            (ENDPOINT, "http://a:1"),
            (HEADERS, "authorization=Bearer%20s3cret, x-tenant = blue ,"),
            (METRICS.headers, "x-only=metrics"),
            (TIMEOUT, "2500"),
            (TRACES.timeout, "700"),
        ])
        .unwrap()
        .unwrap();
        let traces = settings.traces.unwrap();
        assert_eq!(traces.headers["authorization"], "Bearer s3cret");
        assert_eq!(traces.headers["x-tenant"], "blue");
        assert_eq!(traces.timeout, Duration::from_millis(700));
        let metrics = settings.metrics.unwrap();
        assert_eq!(
            metrics.headers,
            HashMap::from([("x-only".to_owned(), "metrics".to_owned())])
        );
        assert_eq!(metrics.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn the_service_name_comes_from_the_variables_before_the_default() {
        let on = (ENDPOINT, "http://a:1");
        let name = |pairs: &[(&str, &str)]| read_from(pairs).unwrap().unwrap().service_name;
        assert_eq!(name(&[on]), "isopace");
        assert_eq!(
            name(&[
                on,
                (
                    RESOURCE_ATTRIBUTES,
                    "deployment.environment=prod,service.name=edge"
                )
            ]),
            "edge"
        );
        assert_eq!(
            name(&[
                on,
                (RESOURCE_ATTRIBUTES, "service.name=edge"),
                (SERVICE_NAME, "gw")
            ]),
            "gw"
        );
    }

    #[test]
    fn bad_variables_are_named_and_their_values_never_shown() {
        let on = (ENDPOINT, "http://a:1");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[on, (SDK_DISABLED, "yes-s3cret")],
                "OTEL_SDK_DISABLED: must be `true` or `false`",
            ),
            (
                &[(ENDPOINT, "https://s3cret@collector")],
                "OTEL_EXPORTER_OTLP_ENDPOINT: is an https:// URL",
            ),
            (
                &[(ENDPOINT, "collector:4318 s3cret")],
                "OTEL_EXPORTER_OTLP_ENDPOINT: is not a URL",
            ),
            (
                &[(TRACES.endpoint, "ftp://host/s3cret")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: must be an http:// URL",
            ),
            (
                &[on, (PROTOCOL, "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL: must be `http/protobuf`",
            ),
            (
                &[on, (METRICS.protocol, "http/json")],
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: must be",
            ),
            (
                &[on, (HEADERS, "a=1,s3cret")],
                "OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not `key=value`",
            ),
            (
                &[on, (HEADERS, "bad key=s3cret")],
                "OTEL_EXPORTER_OTLP_HEADERS: entry 1: not a header name",
            ),
            (
                &[on, (TRACES.headers, "k=s3cret%zz")],
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 1: bad %-escape",
            ),
            (
                &[on, (HEADERS, "k=s3cret%0A")],
                "OTEL_EXPORTER_OTLP_HEADERS: entry 1: not a header value",
            ),
            (
                &[on, (TIMEOUT, "10s3cret")],
                "OTEL_EXPORTER_OTLP_TIMEOUT: must be a whole number",
            ),
            (
                &[on, ("OTEL_BSP_SCHEDULE_DELAY", "1s")],
                "OTEL_BSP_SCHEDULE_DELAY: must be a whole number",
            ),
            (
                &[on, ("OTEL_METRIC_EXPORT_INTERVAL", "-1")],
                "OTEL_METRIC_EXPORT_INTERVAL: must be",
            ),
            (
                &[on, (RESOURCE_ATTRIBUTES, "=s3cret")],
                "OTEL_RESOURCE_ATTRIBUTES: entry 1 is not",
            ),
            (
                &[on, (METRICS.exporter, "prometheus")],
                "OTEL_METRICS_EXPORTER: must be `otlp` or `none`",
            ),
        ];
        for (pairs, expected) in cases {
            let message = problem(pairs);
            assert!(message.starts_with(expected), "{pairs:?}: {message}");
            assert!(!message.contains("s3cret"), "{pairs:?}: {message}");
        }
    }
}
