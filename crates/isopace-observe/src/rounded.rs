//! [`Rounded`]: a duration as an operator reads it in a log line.

use std::{fmt, time::Duration};

/// Displays a duration rounded for a log line: `3s`, `2.5s`, `150ms`, `1.2ms`, `850µs`,
/// `1m30s`, instead of `Debug`'s `2.999990736s`.
///
/// Below a minute it keeps at most three significant figures in the largest unit that leaves
/// a whole part (`ns`, `µs`, `ms`, `s`), without trailing zeros; from a minute on it rounds
/// to whole seconds and writes hours, minutes and seconds, leaving out those that are zero
/// (`1m`, `1h5s`). Zero is `0s`. Every form reads back with `isopace_config::parse_duration`,
/// though not always to the same value.
///
/// Log it with `%` so it is written through `Display`:
///
/// ```
/// use std::time::Duration;
/// use isopace_observe::Rounded;
///
/// let waited = Duration::from_nanos(2_999_990_736);
/// tracing::warn!(waited = %Rounded(waited), "still stopping");
/// assert_eq!(Rounded(waited).to_string(), "3s");
/// assert_eq!(Rounded(Duration::from_micros(1_234)).to_string(), "1.23ms");
/// assert_eq!(Rounded(Duration::from_secs(90)).to_string(), "1m30s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rounded(pub Duration);

/// The units below a minute, smallest first: nanoseconds per unit and its symbol.
const UNITS: [(u128, &str); 4] = [
    (1, "ns"),
    (1_000, "µs"),
    (1_000_000, "ms"),
    (1_000_000_000, "s"),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        let mut unit = UNITS
            .iter()
            .rposition(|&(scale, _)| nanos >= scale)
            .unwrap_or(0);
        loop {
            let (scale, symbol) = UNITS[unit];
            let whole = nanos / scale;
            let decimals: u32 = match whole {
                0..10 => 2,
                10..100 => 1,
                _ => 0,
            };
            let factor = 10u128.pow(decimals);
            // Half up, in hundredths, tenths or ones of the unit.
            let rounded = (nanos * factor + scale / 2) / scale;
            let (int, fraction) = (rounded / factor, rounded % factor);
            if symbol == "s" && int >= 60 {
                return minutes(f, (nanos + NANOS_PER_SEC / 2) / NANOS_PER_SEC);
            }
            if int >= 1000 && unit + 1 < UNITS.len() {
                // 999.6ms is 1s, not 1000ms.
                unit += 1;
                continue;
            }
            write!(f, "{int}")?;
            match (decimals, fraction) {
                (_, 0) => {}
                (2, f2) if f2 % 10 == 0 => write!(f, ".{}", f2 / 10)?,
                (2, f2) => write!(f, ".{f2:02}")?,
                (_, f1) => write!(f, ".{f1}")?,
            }
            return f.write_str(symbol);
        }
    }
}

/// Whole seconds as `1h2m3s`, zero parts left out.
fn minutes(f: &mut fmt::Formatter<'_>, secs: u128) -> fmt::Result {
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if hours > 0 {
        write!(f, "{hours}h")?;
    }
    if minutes > 0 {
        write!(f, "{minutes}m")?;
    }
    if seconds > 0 {
        write!(f, "{seconds}s")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_three_significant_figures_in_the_largest_unit() {
        let ns = Duration::from_nanos;
        let table = [
            (Duration::ZERO, "0s"),
            (ns(1), "1ns"),
            (ns(999), "999ns"),
            (ns(1_000), "1µs"),
            (ns(1_005), "1.01µs"),
            (ns(850_000), "850µs"),
            (ns(999_499), "999µs"),
            (ns(999_500), "1ms"),
            (ns(1_200_000), "1.2ms"),
            (ns(1_234_567), "1.23ms"),
            (ns(12_345_678), "12.3ms"),
            (ns(150_000_000), "150ms"),
            (ns(150_400_000), "150ms"),
            (ns(999_600_000), "1s"),
            (ns(1_000_000_000), "1s"),
            (ns(2_500_000_000), "2.5s"),
            (ns(2_999_990_736), "3s"),
            (ns(9_996_000_000), "10s"),
            (ns(12_345_000_000), "12.3s"),
            (ns(59_940_000_000), "59.9s"),
            (ns(59_960_000_000), "1m"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_millis(90_400), "1m30s"),
            (Duration::from_millis(90_600), "1m31s"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(3_605), "1h5s"),
            (Duration::from_secs(3_661), "1h1m1s"),
            (Duration::from_secs(86_400 * 2), "48h"),
        ];
        for (duration, expected) in table {
            assert_eq!(Rounded(duration).to_string(), expected, "{duration:?}");
        }
    }

    #[test]
    fn the_longest_duration_does_not_overflow() {
        // u64::MAX seconds and 999 999 999 ns round up to 2^64 seconds.
        assert_eq!(Rounded(Duration::MAX).to_string(), "5124095576030431h16s");
    }
}
