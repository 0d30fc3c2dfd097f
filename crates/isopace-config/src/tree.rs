//! One immutable generation of the configuration: values, provenance, and the reads on them.

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{
    Error,
    de::decode,
    duration,
    env::EnvOrigin,
    index::{PathIndex, Slot},
};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The config file.
    File(PathBuf),
    /// The environment variable with this name.
    Env(String),
    /// The bytes given to [`Config::parse`](crate::Config::parse).
    Inline,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Inline => f.write_str("inline"),
        }
    }
}

/// One leaf of the tree, as listed by [`Config::entries`](crate::Config::entries).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Entry {
    /// The dot path (`link.pool`).
    pub path: String,
    /// The value, unredacted: print [`Entry::display_value`] instead.
    pub value: Value,
    /// Where the value came from.
    pub source: Source,
    /// Whether the path names a secret (a password, token, key, ...), so its value must not be
    /// shown.
    pub secret: bool,
}

impl Entry {
    /// The value safe to show: `"***"` for a secret, and nested secrets masked inside arrays.
    pub fn display_value(&self) -> Value {
        if self.secret {
            Value::String(REDACTED.into())
        } else {
            redact_value(&self.value)
        }
    }
}

const REDACTED: &str = "***";

/// Whether a key looks like it holds a secret: password, passwd, passphrase, secret, token,
/// credential(s), private key, API key, access key, or any key whose last word is `key`.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let squashed: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "credential",
        "privatekey",
        "apikey",
        "accesskey",
        "pwd",
    ];
    if WORDS.iter().any(|w| squashed.contains(w)) {
        return true;
    }
    // `tls.key`, `signing_key`, `clientKey`: the last word is "key" (but not `keyboard`,
    // `key_file` or `monkey`).
    matches!(last_word(key).as_str(), "key" | "keys")
}

/// The last word of a key, split at non-alphanumerics and at lower-to-upper case changes.
fn last_word(key: &str) -> String {
    let mut word = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_ascii_alphanumeric() {
            word.clear();
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower {
            word.clear();
        }
        previous_lower = c.is_ascii_lowercase();
        word.push(c.to_ascii_lowercase());
    }
    word
}

/// The tree with every value under a secret-looking key replaced by `"***"`.
pub(crate) fn redact_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) {
                        mask(v)
                    } else {
                        redact_value(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        other => other.clone(),
    }
}

/// Masks every scalar but keeps the shape, so a dump still shows which keys exist.
fn mask(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), mask(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        Value::Null => Value::Null,
        _ => Value::String(REDACTED.into()),
    }
}

/// One generation of the configuration. Never mutated after it is built: a reload builds a
/// new one and swaps the pointer.
#[derive(Debug)]
pub(crate) struct Tree {
    pub(crate) root: Value,
    pub(crate) env: BTreeMap<String, EnvOrigin>,
    pub(crate) file: Option<PathBuf>,
    pub(crate) generation: u64,
    /// A hash of the bytes the tree was parsed from, so the watcher can tell a real change
    /// from an event that touched the directory but not the content.
    pub(crate) digest: u64,
    /// Every dot path of the tree, so a read is one hash lookup instead of a split and a map
    /// search per level.
    index: PathIndex,
    /// Whether any array exists: only then can a path missing from the index (`list.0.x`)
    /// still resolve.
    has_arrays: bool,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new(Value::Object(Map::new()), BTreeMap::new(), None, 0, 0)
    }
}

impl Tree {
    pub(crate) fn new(
        root: Value,
        env: BTreeMap<String, EnvOrigin>,
        file: Option<PathBuf>,
        generation: u64,
        digest: u64,
    ) -> Tree {
        let mut paths = Vec::new();
        let mut has_arrays = false;
        if let Value::Object(map) = &root {
            let mut path = String::new();
            index_object(map, &mut path, &mut paths, &mut has_arrays);
        }
        let index = PathIndex::new(paths);
        Tree {
            root,
            env,
            file,
            generation,
            digest,
            index,
            has_arrays,
        }
    }
}

fn index_object(
    map: &Map<String, Value>,
    path: &mut String,
    index: &mut Vec<(String, Slot)>,
    has_arrays: &mut bool,
) {
    for (key, value) in map {
        // A dot path cannot name a key that contains a dot; indexing it would shadow the
        // nested path it spells.
        if key.contains('.') {
            continue;
        }
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        path.push_str(key);
        match value {
            Value::Object(child) => {
                index.push((path.clone(), Slot::Branch));
                index_object(child, path, index, has_arrays);
            }
            other => {
                *has_arrays |= other.is_array();
                index.push((path.clone(), Slot::Leaf(other.clone())));
            }
        }
        path.truncate(len);
    }
}

/// Follows a dot path; numeric segments index arrays. The empty path is the whole tree.
#[cold]
#[inline(never)]
pub(crate) fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(root);
    }
    let mut node = root;
    for segment in path.split('.') {
        node = match node {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

impl Tree {
    #[inline(always)]
    pub(crate) fn lookup(&self, path: &str) -> Option<&Value> {
        match self.index.get(path) {
            Some(Slot::Leaf(value)) => Some(value),
            Some(Slot::Branch) => lookup(&self.root, path),
            None if self.has_arrays || path.is_empty() => lookup(&self.root, path),
            None => None,
        }
    }

    /// The value at `path`, cloned.
    #[inline]
    pub(crate) fn get(&self, path: &str) -> Option<Value> {
        // Arm by arm rather than `Value::clone`, whose generated code builds the value on the
        // stack and copies it out at an offset, which stalls store-to-load forwarding.
        Some(match self.lookup(path)? {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(n) => Value::Number(n.clone()),
            Value::String(s) => Value::String(s.clone()),
            Value::Array(items) => Value::Array(items.clone()),
            Value::Object(map) => Value::Object(map.clone()),
        })
    }

    #[inline]
    pub(crate) fn string(&self, path: &str, default: &str) -> String {
        match self.lookup(path) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => match self.env.get(path) {
                Some(origin) => origin.raw.clone(),
                None => v.to_string(),
            },
            _ => default.to_owned(),
        }
    }

    #[inline]
    pub(crate) fn int(&self, path: &str, default: i64) -> i64 {
        let number = match self.lookup(path) {
            Some(Value::Number(n)) => n.clone(),
            Some(Value::String(s)) => match s.trim().parse::<serde_json::Number>() {
                Ok(n) => n,
                Err(_) => return default,
            },
            _ => return default,
        };
        if let Some(i) = number.as_i64() {
            return i;
        }
        if number.as_u64().is_some() {
            return default;
        }
        // Whole floats only: 2.5 is not an int, and NaN or 1e300 must not saturate.
        match number.as_f64() {
            Some(f)
                if f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
            {
                f as i64
            }
            _ => default,
        }
    }

    #[inline]
    pub(crate) fn bool(&self, path: &str, default: bool) -> bool {
        match self.lookup(path) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            _ => default,
        }
    }

    #[inline]
    pub(crate) fn duration(&self, path: &str, default: Duration) -> Duration {
        self.lookup(path)
            .and_then(duration::from_value)
            .unwrap_or(default)
    }

    pub(crate) fn unmarshal_key<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let value = self.lookup(path).ok_or_else(|| Error::MissingKey {
            path: path.to_owned(),
        })?;
        decode(value, path)
    }

    pub(crate) fn source_of(&self, path: &str) -> Option<Source> {
        self.lookup(path)?;
        Some(match self.env.get(path) {
            Some(origin) => Source::Env(origin.var.clone()),
            None => self.file_source(),
        })
    }

    fn file_source(&self) -> Source {
        match &self.file {
            Some(path) => Source::File(path.clone()),
            None => Source::Inline,
        }
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        if let Value::Object(map) = &self.root {
            for (key, value) in map {
                self.collect(key.clone(), value, is_secret_key(key), &mut out);
            }
        }
        // serde_json keeps insertion order when its `preserve_order` feature is on somewhere
        // in the build; the listing is sorted either way.
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    fn collect(&self, path: String, value: &Value, secret: bool, out: &mut Vec<Entry>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let secret = secret || is_secret_key(key);
                    self.collect(format!("{path}.{key}"), child, secret, out);
                }
            }
            _ => {
                let source = match self.env.get(&path) {
                    Some(origin) => Source::Env(origin.var.clone()),
                    None => self.file_source(),
                };
                out.push(Entry {
                    path,
                    value: value.clone(),
                    source,
                    secret,
                });
            }
        }
    }
}

/// A fixed view of one generation of the tree: every read on it sees the same values, however
/// many reloads happen meanwhile. Cheap to take and to clone.
///
/// Meant to be short-lived (a request, a batch of reads). Holding many snapshots on one
/// thread for a long time is correct but moves that thread's later reads off `arc-swap`'s
/// fastest path, and keeps the old tree in memory.
pub struct Snapshot {
    /// An `arc-swap` guard rather than a cloned `Arc`: taking one writes only to this
    /// thread's own slot, where cloning the `Arc` would bounce its reference count between
    /// every core that reads.
    pub(crate) tree: arc_swap::Guard<Arc<Tree>>,
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Snapshot {
            tree: arc_swap::Guard::from_inner(Arc::clone(&self.tree)),
        }
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("file", &self.tree.file)
            .field("generation", &self.tree.generation)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The value at a dot path (`"link.pool"`; numeric segments index arrays; `""` is the
    /// whole tree), cloned.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.tree.get(path)
    }

    /// The value at a dot path, borrowed from the snapshot: no clone.
    pub fn get_ref(&self, path: &str) -> Option<&Value> {
        self.tree.lookup(path)
    }

    /// The whole tree.
    pub fn tree(&self) -> &Value {
        &self.tree.root
    }

    /// See [`Config::string`](crate::Config::string).
    pub fn string(&self, path: &str, default: &str) -> String {
        self.tree.string(path, default)
    }

    /// See [`Config::int`](crate::Config::int).
    pub fn int(&self, path: &str, default: i64) -> i64 {
        self.tree.int(path, default)
    }

    /// See [`Config::bool`](crate::Config::bool).
    pub fn bool(&self, path: &str, default: bool) -> bool {
        self.tree.bool(path, default)
    }

    /// See [`Config::duration`](crate::Config::duration).
    pub fn duration(&self, path: &str, default: Duration) -> Duration {
        self.tree.duration(path, default)
    }

    /// See [`Config::unmarshal`](crate::Config::unmarshal).
    pub fn unmarshal<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.tree.unmarshal_key("")
    }

    /// See [`Config::unmarshal_key`](crate::Config::unmarshal_key).
    pub fn unmarshal_key<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.tree.unmarshal_key(path)
    }

    /// The generation this snapshot belongs to.
    pub fn generation(&self) -> u64 {
        self.tree.generation
    }

    /// See [`Config::source_of`](crate::Config::source_of).
    pub fn source_of(&self, path: &str) -> Option<Source> {
        self.tree.source_of(path)
    }

    /// See [`Config::entries`](crate::Config::entries).
    pub fn entries(&self) -> Vec<Entry> {
        self.tree.entries()
    }

    /// See [`Config::redacted`](crate::Config::redacted).
    pub fn redacted(&self) -> Value {
        redact_value(&self.tree.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(root: Value) -> Tree {
        Tree::new(root, BTreeMap::new(), None, 0, 0)
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "password",
            "db_password",
            "Passwd",
            "passphrase",
            "client_secret",
            "secrets",
            "accessToken",
            "refresh-token",
            "credentials",
            "private_key",
            "privateKey",
            "api_key",
            "ApiKey",
            "access_key_id",
            "key",
            "tls.key",
            "signingKey",
            "keys",
            "pwd",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "name",
            "keyboard",
            "key_file",
            "monkey",
            "host",
            "port",
            "keepalive",
            "key_",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn lookups_follow_objects_and_array_indexes() {
        let t = tree(json!({"a": {"b": {"c": 1}}, "list": [{"x": 2}]}));
        assert_eq!(t.lookup("a.b.c"), Some(&json!(1)));
        assert_eq!(t.lookup("list.0.x"), Some(&json!(2)));
        assert_eq!(t.lookup("list.1.x"), None);
        assert_eq!(t.lookup("list.x"), None);
        assert_eq!(t.lookup("a.b.c.d"), None);
        assert_eq!(t.lookup("a..b"), None);
        assert_eq!(t.lookup(""), Some(&t.root));
        assert_eq!(t.lookup("a.b"), Some(&json!({"c": 1})));

        let plain = tree(json!({"a": {"b": 1}, "c": {}}));
        assert_eq!(plain.lookup("a.b"), Some(&json!(1)));
        assert_eq!(plain.lookup("a"), Some(&json!({"b": 1})));
        assert_eq!(plain.lookup("c"), Some(&json!({})));
        assert_eq!(plain.lookup("a.x"), None);
        assert_eq!(plain.lookup("a.b.c"), None);
    }

    #[test]
    fn keys_containing_dots_do_not_shadow_nested_paths() {
        let t = tree(json!({"a.b": 1, "a": {"b": 2}, "x.y": 3}));
        assert_eq!(t.lookup("a.b"), Some(&json!(2)));
        assert_eq!(t.lookup("x.y"), None);
    }

    #[test]
    fn typed_getters_convert_or_fall_back() {
        let t = tree(json!({
            "s": "text", "n": 42, "neg": -7, "f": 3.0, "half": 2.5, "big": 1e300,
            "huge": 18446744073709551615u64, "ns": " 17 ", "bad": "x",
            "t": true, "ts": "TRUE", "fs": "false", "one": 1,
            "d": "1m30s", "dn": 5, "df": 0.5, "dbig": 1e19, "dneg": -1, "dbad": "soon"
        }));
        assert_eq!(t.string("s", "-"), "text");
        assert_eq!(t.string("n", "-"), "42");
        assert_eq!(t.string("t", "-"), "true");
        assert_eq!(t.string("missing", "-"), "-");
        assert_eq!(t.int("n", 0), 42);
        assert_eq!(t.int("neg", 0), -7);
        assert_eq!(t.int("f", 0), 3);
        assert_eq!(t.int("half", 0), 0);
        assert_eq!(t.int("big", 9), 9);
        assert_eq!(t.int("huge", 9), 9);
        assert_eq!(t.int("ns", 0), 17);
        assert_eq!(t.int("bad", 9), 9);
        assert!(t.bool("t", false));
        assert!(t.bool("ts", false));
        assert!(!t.bool("fs", true));
        assert!(t.bool("one", true));
        assert!(!t.bool("one", false));
        let def = Duration::from_secs(7);
        assert_eq!(t.duration("d", def), Duration::from_secs(90));
        assert_eq!(t.duration("dn", def), Duration::from_secs(5));
        assert_eq!(t.duration("df", def), Duration::from_millis(500));
        assert_eq!(t.duration("dbig", def), def);
        assert_eq!(t.duration("dneg", def), def);
        assert_eq!(t.duration("dbad", def), def);
        assert_eq!(t.duration("s", def), def);
    }

    #[test]
    fn string_returns_the_variables_text_for_env_numbers() {
        let mut t = tree(json!({"pin": 1.5}));
        t.env.insert(
            "pin".into(),
            EnvOrigin {
                var: "ISO_PIN".into(),
                raw: "1.50".into(),
            },
        );
        assert_eq!(t.string("pin", ""), "1.50");
    }

    #[test]
    fn redaction_masks_secret_subtrees_and_nested_arrays() {
        let t = tree(json!({
            "db": {"host": "h", "password": "p"},
            "credentials": {"user": "u", "pass": "x", "n": null},
            "users": [{"name": "a", "token": "t"}]
        }));
        assert_eq!(
            redact_value(&t.root),
            json!({
                "db": {"host": "h", "password": "***"},
                "credentials": {"user": "***", "pass": "***", "n": null},
                "users": [{"name": "a", "token": "***"}]
            })
        );
        let entries = t.entries();
        let users = entries.iter().find(|e| e.path == "users").unwrap();
        assert!(!users.secret);
        assert_eq!(
            users.display_value(),
            json!([{"name": "a", "token": "***"}])
        );
        let pass = entries
            .iter()
            .find(|e| e.path == "credentials.pass")
            .unwrap();
        assert!(pass.secret);
        assert_eq!(pass.display_value(), json!("***"));
        assert_eq!(pass.value, json!("x"));
    }
}
