//! The two units a policy set writes limits in: `250ms` / `2s` and
//! `64Mi` / `1Gi` (Kubernetes' binary suffixes). Deserialising into these
//! types makes a bad value an error at its line in the file.

use serde::de::{self, Deserialize, Deserializer};
use std::time::Duration;

/// A timeout such as `100ms` or `2s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_timeout(&text).map(Timeout).map_err(de::Error::custom)
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid timeout {text:?}: write it as 250ms or 2s (at most 30s)");
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else {
        return Err(invalid());
    };
    let ms: u64 = number.parse().map_err(|_| invalid())?;
    let duration = Duration::from_millis(ms * scale);
    if duration.is_zero() || duration > super::MAX_TIMEOUT {
        return Err(invalid());
    }
    Ok(duration)
}

/// A memory size such as `64Mi`, bounded by the engine's ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySize(pub usize);

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_size(&text).map(MemorySize).map_err(de::Error::custom)
    }
}

/// A size in bytes written with a binary suffix, from 1Mi to 1Gi: memory
/// limits in a policy set, and the server's largest request.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let max = crate::engine::MAX_MEMORY_LIMIT;
    let invalid = || {
        format!(
            "invalid size {text:?}: write it as 64Mi, between 1Mi and {}Mi",
            max >> 20
        )
    };
    let (number, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30)]
        .iter()
        .find_map(|(suffix, shift)| text.strip_suffix(suffix).map(|n| (n, *shift)))
        .ok_or_else(invalid)?;
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_shl(shift))
        .filter(|b| (1 << 20..=max).contains(b))
        .ok_or_else(invalid)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "0ms", "31s", "1m", "ms", "-1s", "1.5s"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("2048Ki"), Ok(2 << 20));
        for bad in ["64", "64M", "2Gi", "512Ki", "Mi", "0Mi"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
