//! Checks that the built-in types' configs share: values that must be positive.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A duration (`"250ms"`, `"5s"`, or seconds as a number) greater than zero.
#[cfg_attr(not(any(feature = "admin", feature = "tcp-proxy")), allow(dead_code))]
pub(crate) fn positive_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let duration = isopace_config::serde_duration::deserialize(deserializer)?;
    if duration.is_zero() {
        return Err(de::Error::custom("must be greater than zero"));
    }
    Ok(duration)
}

/// A count of at least 1.
#[cfg_attr(not(any(feature = "admin", feature = "tcp-proxy")), allow(dead_code))]
pub(crate) fn positive_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<usize, D::Error> {
    let n = usize::deserialize(deserializer)?;
    if n == 0 {
        return Err(de::Error::custom("must be at least 1"));
    }
    Ok(n)
}
