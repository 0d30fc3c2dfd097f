//! Environment overrides: maps `PREFIX_A_B=v` onto the tree, matching declared keys first.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use crate::format::kind;

/// Where an overridden value came from: the variable's name and its text as written, so a
/// numeric-looking secret ("0123", a 30-digit token) reads back through `string()` unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvOrigin {
    pub(crate) var: String,
    pub(crate) raw: String,
}

/// The environment as `KEY=value` entries: the given list, or the process environment
/// (entries that are not valid UTF-8 are skipped rather than panicking).
pub(crate) fn environment(explicit: Option<&[String]>) -> Vec<(String, String)> {
    match explicit {
        Some(list) => list
            .iter()
            .filter_map(|entry| {
                let (k, v) = entry.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
        None => std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    }
}

/// Applies every `PREFIX_...` variable to `root` and returns, for each dot path it set or
/// created, the variable responsible. An empty prefix applies nothing.
///
/// Variables are applied in name order so the result does not depend on the order of the
/// process environment; a later duplicate of the same name wins.
pub(crate) fn apply(
    root: &mut Map<String, Value>,
    prefix: &str,
    vars: &[(String, String)],
) -> BTreeMap<String, EnvOrigin> {
    let mut origins = BTreeMap::new();
    if prefix.is_empty() {
        return origins;
    }
    let lead = format!("{prefix}_");
    let mut selected: Vec<&(String, String)> =
        vars.iter().filter(|(k, _)| k.starts_with(&lead)).collect();
    selected.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, raw) in selected {
        let rest = &name[lead.len()..];
        match resolve(root, rest) {
            Ok(keys) => set(root, &keys, name, raw, &mut origins),
            Err(skip) => tracing::warn!(
                variable = %name,
                "skipping environment override: {skip}"
            ),
        }
    }
    origins
}

/// Why an override was not applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The name is empty after the prefix or has empty segments.
    Malformed(&'static str),
    /// The path runs through a scalar (or array) declared in the file.
    ThroughScalar { path: String, found: &'static str },
    /// The path ends on a declared object; replacing a whole section with one scalar is
    /// never what the operator meant.
    ReplacesSection { path: String },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Malformed(why) => f.write_str(why),
            Skip::ThroughScalar { path, found } => write!(
                f,
                "`{path}` is {found} in the config, so nothing can be set below it; keeping it"
            ),
            Skip::ReplacesSection { path } => write!(
                f,
                "`{path}` is a section in the config and cannot be replaced by one value; keeping it"
            ),
        }
    }
}

/// The keys the variable name (after `PREFIX_`) addresses, spelled as the tree spells them.
pub(crate) fn resolve(root: &Map<String, Value>, rest: &str) -> Result<Vec<String>, Skip> {
    if rest.is_empty() {
        return Err(Skip::Malformed("nothing follows the prefix"));
    }
    // A dot would make a key whose dot path collides with a nested key's.
    if rest.contains('.') {
        return Err(Skip::Malformed(
            "`.` in a variable name (separate levels with `_` or `__`)",
        ));
    }
    if rest.contains("__") {
        let groups: Vec<&str> = rest.split("__").collect();
        if groups
            .iter()
            .any(|g| g.is_empty() || g.starts_with('_') || g.ends_with('_'))
        {
            return Err(Skip::Malformed(
                "empty or ambiguous segment around `__` (use exactly two underscores between levels)",
            ));
        }
        return explicit(root, &groups);
    }
    let name = Segments::new(rest);
    if name.ranges.iter().any(|(from, to)| from == to) {
        return Err(Skip::Malformed(
            "empty segment (leading, trailing or doubled-up underscores)",
        ));
    }
    let mut dead_ends = HashSet::new();
    match greedy(root, &name, 0, &mut dead_ends) {
        Some(keys) => Ok(keys),
        None => Err(explain(root, &name)),
    }
}

/// `__`-separated: every group is exactly one level.
fn explicit(root: &Map<String, Value>, groups: &[&str]) -> Result<Vec<String>, Skip> {
    let mut keys = Vec::with_capacity(groups.len());
    let mut node = Some(root);
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let declared = node.and_then(|m| find_key(m, group));
        let Some((key, child)) = declared else {
            keys.push(group.to_ascii_lowercase());
            node = None;
            continue;
        };
        keys.push(key.to_owned());
        match child {
            Value::Object(m) if !last => node = Some(m),
            Value::Object(_) => {
                return Err(Skip::ReplacesSection {
                    path: keys.join("."),
                });
            }
            Value::Array(_) if last => {
                return Err(Skip::ReplacesSection {
                    path: keys.join("."),
                });
            }
            other if !last => {
                return Err(Skip::ThroughScalar {
                    path: keys.join("."),
                    found: kind(other),
                });
            }
            _ => node = None,
        }
    }
    Ok(keys)
}

/// A variable name split at `_`, kept as byte ranges so a run of segments joined by `_` is a
/// slice of the name rather than a new string.
struct Segments<'a> {
    text: &'a str,
    ranges: Vec<(usize, usize)>,
}

impl<'a> Segments<'a> {
    fn new(text: &'a str) -> Self {
        let mut ranges = Vec::new();
        let mut from = 0;
        for (i, byte) in text.bytes().enumerate() {
            if byte == b'_' {
                ranges.push((from, i));
                from = i + 1;
            }
        }
        ranges.push((from, text.len()));
        Segments { text, ranges }
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Segments `start..end` joined by `_`.
    fn run(&self, start: usize, end: usize) -> &'a str {
        &self.text[self.ranges[start].0..self.ranges[end - 1].1]
    }
}

/// Single underscores: at each level, the longest run of segments naming a declared key wins,
/// backing off to shorter runs when the longer one leads through a scalar. Where no declared
/// key matches, each remaining segment is a new, lower-cased level.
///
/// `dead_ends` remembers (object, position) pairs known to fail, which keeps the search
/// linear in practice and polynomial for adversarial trees; runs longer than the object's
/// longest key are never tried, so a long name costs little.
fn greedy(
    node: &Map<String, Value>,
    name: &Segments<'_>,
    start: usize,
    dead_ends: &mut HashSet<(usize, usize)>,
) -> Option<Vec<String>> {
    let memo_key = (std::ptr::from_ref(node) as usize, start);
    if dead_ends.contains(&memo_key) {
        return None;
    }
    let longest_key = node.keys().map(String::len).max().unwrap_or(0);
    let mut any_declared = false;
    for end in (start + 1..=name.len()).rev() {
        let candidate = name.run(start, end);
        if candidate.len() > longest_key {
            continue;
        }
        let Some((key, child)) = find_key(node, candidate) else {
            continue;
        };
        any_declared = true;
        let last = end == name.len();
        match child {
            Value::Object(m) if !last => {
                if let Some(mut tail) = greedy(m, name, end, dead_ends) {
                    tail.insert(0, key.to_owned());
                    return Some(tail);
                }
            }
            Value::Object(_) | Value::Array(_) => {}
            _ if last => return Some(vec![key.to_owned()]),
            _ => {}
        }
    }
    if any_declared {
        dead_ends.insert(memo_key);
        return None;
    }
    Some(
        (start..name.len())
            .map(|i| name.run(i, i + 1).to_ascii_lowercase())
            .collect(),
    )
}

/// Why the greedy walk failed, following the longest declared match at each level.
fn explain(root: &Map<String, Value>, name: &Segments<'_>) -> Skip {
    let mut node = root;
    let mut keys: Vec<String> = Vec::new();
    let mut start = 0;
    while start < name.len() {
        let found = (start + 1..=name.len())
            .rev()
            .find_map(|end| find_key(node, name.run(start, end)).map(|(k, v)| (end, k, v)));
        let Some((end, key, child)) = found else {
            break;
        };
        keys.push(key.to_owned());
        match child {
            Value::Object(m) if end < name.len() => node = m,
            Value::Object(_) | Value::Array(_) if end == name.len() => {
                return Skip::ReplacesSection {
                    path: keys.join("."),
                };
            }
            other => {
                return Skip::ThroughScalar {
                    path: keys.join("."),
                    found: kind(other),
                };
            }
        }
        start = end;
    }
    Skip::Malformed("no consistent path through the declared keys")
}

/// The declared key matching `candidate` ignoring ASCII case, with `-` in a key matching `_`.
/// An exact lower-case match is preferred so the choice is deterministic when keys differ
/// only in case.
fn find_key<'a>(node: &'a Map<String, Value>, candidate: &str) -> Option<(&'a str, &'a Value)> {
    let lower = candidate.to_ascii_lowercase();
    if let Some((k, v)) = node.get_key_value(&lower) {
        return Some((k.as_str(), v));
    }
    node.iter()
        .find(|(k, _)| {
            k.len() == candidate.len()
                && k.bytes()
                    .zip(candidate.bytes())
                    .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'-' && b == b'_'))
        })
        .map(|(k, v)| (k.as_str(), v))
}

/// A variable's value: JSON numbers, bools and null take that type; anything else is text.
pub(crate) fn typed(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
        _ => Value::String(raw.to_owned()),
    }
}

fn set(
    root: &mut Map<String, Value>,
    keys: &[String],
    var: &str,
    raw: &str,
    origins: &mut BTreeMap<String, EnvOrigin>,
) {
    let origin = EnvOrigin {
        var: var.to_owned(),
        raw: raw.to_owned(),
    };
    let Some((leaf, parents)) = keys.split_last() else {
        return;
    };
    let mut node = root;
    let mut path = String::new();
    for key in parents {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        let entry = node.entry(key.clone()).or_insert_with(|| {
            origins
                .entry(path.clone())
                .or_insert_with(|| origin.clone());
            Value::Object(Map::new())
        });
        // `resolve` only walks through objects or creates them, so this always matches; the
        // guard keeps the function total if that ever changes.
        let Value::Object(next) = entry else {
            return;
        };
        node = next;
    }
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(leaf);
    node.insert(leaf.clone(), typed(raw));
    origins.insert(path, origin);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test trees are objects"),
        }
    }

    fn vars(list: &[&str]) -> Vec<(String, String)> {
        environment(Some(
            &list.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ))
    }

    fn run(tree: Value, env: &[&str]) -> (Value, BTreeMap<String, EnvOrigin>) {
        let mut root = obj(tree);
        let origins = apply(&mut root, "ISO", &vars(env));
        (Value::Object(root), origins)
    }

    #[test]
    fn values_take_json_scalar_types_or_stay_strings() {
        assert_eq!(typed("5"), json!(5));
        assert_eq!(typed("2.5"), json!(2.5));
        assert_eq!(typed("true"), json!(true));
        assert_eq!(typed("null"), Value::Null);
        assert_eq!(typed("hello"), json!("hello"));
        assert_eq!(typed("[1"), json!("[1"));
        assert_eq!(typed("[1,2]"), json!("[1,2]"));
        assert_eq!(typed("{\"a\":1}"), json!("{\"a\":1}"));
        assert_eq!(typed("0123"), json!("0123"));
        assert_eq!(typed(""), json!(""));
    }

    #[test]
    fn scalars_are_overridden_and_new_keys_created() {
        let (tree, origins) = run(
            json!({"link": {"pool": 2}, "flag": true}),
            &[
                "ISO_LINK_POOL=4",
                "ISO_FLAG=false",
                "ISO_NEW_KEY=hello",
                "OTHER_IGNORED=1",
                "ISOLATED=1",
            ],
        );
        assert_eq!(
            tree,
            json!({"link": {"pool": 4}, "flag": false, "new": {"key": "hello"}})
        );
        assert_eq!(origins["link.pool"].var, "ISO_LINK_POOL");
        assert_eq!(origins["new.key"].var, "ISO_NEW_KEY");
        assert_eq!(origins["new"].var, "ISO_NEW_KEY");
        assert_eq!(origins.len(), 4);
    }

    #[test]
    fn underscores_match_declared_keys_greedily_and_case_insensitively() {
        let (tree, _) = run(
            json!({"link": {"max_conns": 1, "Retry-Limit": 3}}),
            &["ISO_LINK_MAX_CONNS=8", "ISO_LINK_RETRY_LIMIT=5"],
        );
        assert_eq!(tree, json!({"link": {"max_conns": 8, "Retry-Limit": 5}}));
    }

    #[test]
    fn undeclared_underscores_are_levels() {
        let (tree, _) = run(json!({}), &["ISO_LINK_MAX_CONNS=8"]);
        assert_eq!(tree, json!({"link": {"max": {"conns": 8}}}));
    }

    #[test]
    fn double_underscore_is_an_explicit_separator() {
        let (tree, _) = run(json!({}), &["ISO_LINK__MAX_CONNS=8"]);
        assert_eq!(tree, json!({"link": {"max_conns": 8}}));
        let (tree, _) = run(
            json!({"Link": {"Max_Conns": 1}}),
            &["ISO_LINK__MAX_CONNS=8"],
        );
        assert_eq!(tree, json!({"Link": {"Max_Conns": 8}}));
    }

    #[test]
    fn greedy_backs_off_when_the_longest_match_is_a_dead_end() {
        let tree = obj(json!({"a_b": 1, "a": {"b_c": 2}}));
        assert_eq!(resolve(&tree, "A_B_C").unwrap(), vec!["a", "b_c"]);
        assert_eq!(resolve(&tree, "A_B").unwrap(), vec!["a_b"]);
    }

    #[test]
    fn an_override_through_a_declared_scalar_is_skipped() {
        let (tree, origins) = run(json!({"server": "plain"}), &["ISO_SERVER_PORT=8080"]);
        assert_eq!(tree, json!({"server": "plain"}));
        assert!(origins.is_empty());
        let root = obj(json!({"server": "plain", "list": [1]}));
        assert_eq!(
            resolve(&root, "SERVER_PORT"),
            Err(Skip::ThroughScalar {
                path: "server".into(),
                found: "a string"
            })
        );
        assert!(matches!(
            resolve(&root, "LIST_0"),
            Err(Skip::ThroughScalar { .. })
        ));
        assert!(matches!(
            resolve(&root, "SERVER__PORT"),
            Err(Skip::ThroughScalar { .. })
        ));
    }

    #[test]
    fn an_override_never_replaces_a_section() {
        let root = obj(json!({"link": {"pool": 2}, "hosts": ["a"]}));
        assert_eq!(
            resolve(&root, "LINK"),
            Err(Skip::ReplacesSection {
                path: "link".into()
            })
        );
        assert!(matches!(
            resolve(&root, "HOSTS"),
            Err(Skip::ReplacesSection { .. })
        ));
        assert!(matches!(resolve(&root, "LINK__"), Err(Skip::Malformed(_))));
    }

    #[test]
    fn malformed_names_are_skipped() {
        let root = obj(json!({}));
        for rest in ["", "_A", "A_", "A___B", "A____B", "__A", "A__"] {
            assert!(
                matches!(resolve(&root, rest), Err(Skip::Malformed(_))),
                "{rest:?}"
            );
        }
    }

    #[test]
    fn an_empty_prefix_applies_nothing() {
        let mut root = obj(json!({"a": 1}));
        let origins = apply(&mut root, "", &vars(&["_A=2", "A=3"]));
        assert!(origins.is_empty());
        assert_eq!(Value::Object(root), json!({"a": 1}));
    }

    #[test]
    fn later_variables_see_earlier_ones() {
        let (tree, origins) = run(json!({}), &["ISO_A_B=2", "ISO_A=1"]);
        assert_eq!(tree, json!({"a": 1}));
        assert_eq!(origins["a"].var, "ISO_A");
    }

    #[test]
    fn long_names_resolve_quickly() {
        let root = obj(json!({"a": {"b": 1}}));
        let rest = vec!["X"; 20_000].join("_");
        let keys = resolve(&root, &rest).unwrap();
        assert_eq!(keys.len(), 20_000);
        assert!(keys.iter().all(|k| k == "x"));
    }

    #[test]
    fn the_search_stays_fast_on_adversarial_trees() {
        // Every level declares `a`, `a_a`, `a_a_a`, ...: without memoising dead ends the
        // number of partitions explored would be exponential in the name's length.
        fn level(depth: usize) -> Value {
            if depth == 0 {
                return json!(1);
            }
            let mut m = Map::new();
            for n in 1..=6 {
                m.insert(vec!["a"; n].join("_"), level(depth - 1));
            }
            Value::Object(m)
        }
        let root = obj(level(4));
        let rest = vec!["A"; 40].join("_") + "_Z";
        assert!(resolve(&root, &rest).is_err());
    }
}
