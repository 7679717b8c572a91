//! The two units a policy set writes limits in: durations as Go writes
//! them (`250ms`, `1.5s`, the same reading as the server's flags) and
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
    let invalid = || format!("invalid timeout {text:?}: write it as 250ms or 1.5s (at most 30s)");
    let duration = super::duration::parse(text).map_err(|_| invalid())?;
    if duration < Duration::from_millis(1) || duration > super::MAX_TIMEOUT {
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
        // checked_shl checks only the shift: the product can overflow.
        .and_then(|n| n.checked_mul(1 << shift))
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
        assert_eq!(parse_timeout("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        for bad in [
            "",
            "0ms",
            "31s",
            "1m",
            "ms",
            "-1s",
            "10us",
            "18446744073709551615s",
            "99999999999999999999999ms",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("2048Ki"), Ok(2 << 20));
        for bad in [
            "64",
            "64M",
            "2Gi",
            "512Ki",
            "Mi",
            "0Mi",
            // Would wrap to exactly 1Gi in 64 bits if the product went
            // unchecked.
            "17179869185Gi",
            "18014398509481985Mi",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
