//! "Did you mean" hints for a mistyped type name or field, so a typo is fixed from the
//! message alone.

/// The candidate closest to `word`, when one is close enough to be a likely typo: at most
/// one edit per three characters (and always one), fewer edits than `word` has characters, a
/// swap of two neighbours counting as one. Ties go to the first candidate.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let length = word.chars().count();
    let limit = (length / 3).max(1).min(length.saturating_sub(1));
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `"; did you mean `x`?"` for the closest candidate, or nothing.
pub(crate) fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or_else(String::new, |c| format!("; did you mean `{c}`?"))
}

/// serde's "unknown field `x`, expected one of `a`, `b`" with a hint for the closest
/// expected field appended; any other message as it is.
pub(crate) fn unknown_field(message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message;
    };
    // The expected names are the backquoted parts: every odd piece between backquotes.
    let names = expected.split('`').skip(1).step_by(2);
    let hint = hint(field, names);
    message + &hint
}

/// The optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbours, by characters.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows: two back (for swaps), the previous and the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            current[j] = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_count_edits_and_swaps() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("tcp-proxy", "tcp-proxy"), 0);
        assert_eq!(distance("tcp-prxy", "tcp-proxy"), 1);
        assert_eq!(distance("tpye", "type"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("µs", "us"), 1);
    }

    #[test]
    fn only_a_close_candidate_is_suggested() {
        let types = ["admin", "exec", "heartbeat", "tcp-proxy"];
        assert_eq!(closest("tcp-prxy", types), Some("tcp-proxy"));
        assert_eq!(closest("tcpproxy", types), Some("tcp-proxy"));
        assert_eq!(closest("hearbeat", types), Some("heartbeat"));
        assert_eq!(closest("exe", types), Some("exec"));
        assert_eq!(closest("http", types), None);
        assert_eq!(closest("a", ["b"]), None);
        assert_eq!(closest("ab", ["b"]), Some("b"));
        assert_eq!(closest("ab", ["cd"]), None);
        assert_eq!(closest("admin", types), None, "an exact name needs no hint");
        assert_eq!(hint("exe", types), "; did you mean `exec`?");
        assert_eq!(hint("http", types), "");
    }

    #[test]
    fn serdes_unknown_field_messages_get_a_hint() {
        let msg = |s: &str| unknown_field(s.to_owned());
        assert_eq!(
            msg("unknown field `tpye`, expected one of `name`, `type`, `config`"),
            "unknown field `tpye`, expected one of `name`, `type`, `config`; did you mean `type`?"
        );
        assert_eq!(
            msg("unknown field `prot`, expected `port`"),
            "unknown field `prot`, expected `port`; did you mean `port`?"
        );
        for unchanged in [
            "unknown field `zzz`, expected one of `name`, `type`",
            "unknown field `x`, there are no fields",
            "missing field `port`",
            "unknown field `broken",
        ] {
            assert_eq!(msg(unchanged), unchanged);
        }
    }
}
