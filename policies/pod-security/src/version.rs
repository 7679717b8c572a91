//! Which release of the standards to apply: `latest` or `v1.N`, as in
//! Pod Security Admission's `pod-security.kubernetes.io/enforce-version`.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// The newest Kubernetes minor release whose standards this crate
/// implements; `latest` means this one.
pub const LATEST_MINOR: u32 = 37;

/// A version of the standards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// The newest standards, whatever release that is.
    #[default]
    Latest,
    /// The standards as Kubernetes `v1.N` enforced them.
    Minor(u32),
}

impl Version {
    /// The minor release whose checks apply. Releases newer than
    /// [`LATEST_MINOR`] get the newest checks, as PSA gives a newer-than-known
    /// version the latest ones.
    pub fn minor(self) -> u32 {
        match self {
            Version::Latest => LATEST_MINOR,
            Version::Minor(n) => n.min(LATEST_MINOR),
        }
    }

    /// Parses `latest` or `v1.N` (N without leading zeros), the forms PSA
    /// accepts in its namespace labels.
    pub fn parse(text: &str) -> Result<Version, String> {
        if text == "latest" {
            return Ok(Version::Latest);
        }
        text.strip_prefix("v1.")
            .filter(|n| !n.is_empty() && (n == &"0" || !n.starts_with('0')))
            .and_then(|n| n.parse().ok())
            .map(Version::Minor)
            .ok_or_else(|| {
                format!("version must be \"latest\" or \"v1.N\", such as \"v1.30\" (is {text:?})")
            })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::Minor(n) => write!(f, "v1.{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Version::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_psa_labels_accept() {
        assert_eq!(Version::parse("latest"), Ok(Version::Latest));
        assert_eq!(Version::parse("v1.0"), Ok(Version::Minor(0)));
        assert_eq!(Version::parse("v1.25"), Ok(Version::Minor(25)));
        for bad in [
            "", "1.25", "v2.0", "v1.", "v1.025", "v1.x", "Latest", "v1.25.3",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn newer_than_known_means_latest_checks() {
        assert_eq!(Version::Minor(99).minor(), LATEST_MINOR);
        assert_eq!(Version::Minor(99).to_string(), "v1.99");
        assert_eq!(Version::Minor(3).minor(), 3);
    }
}
