//! `oci://` module references, as a policy set or a command names them.

use oci_client::Reference;
use std::fmt;

/// What marks a module as one to pull from a registry.
pub const SCHEME: &str = "oci://";

/// A module in a registry, and the digest it must have.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModuleRef {
    /// Registry, repository, and the tag if one was given; never the
    /// digest, which is [`ModuleRef::digest`].
    pub reference: Reference,
    /// The manifest digest (`sha256:<hex>`) the module is pinned to; `None`
    /// only for a tag the set lets float.
    pub digest: Option<String>,
}

impl ModuleRef {
    /// Reads `oci://registry/repository[:tag][@sha256:…]`. `pin` is the
    /// set's `sha256` for the module: the same pin as the reference's
    /// digest, written apart; a module pinned neither way is refused unless
    /// `allow_floating` (the set's `allowFloatingTags`).
    pub fn parse(text: &str, pin: Option<&str>, allow_floating: bool) -> Result<Self, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{text:?} does not start with {SCHEME}"))?;
        let parsed = Self::parse_plain(rest)?;
        let pin = pin.map(normalize_digest).transpose()?;
        let digest = match (parsed.digest, pin) {
            (Some(written), Some(pin)) if written != pin => {
                return Err(format!(
                    "the reference's digest {written} and `sha256: {}` differ; they are one pin: give it once",
                    pin.trim_start_matches("sha256:")
                ));
            }
            (written, pin) => written.or(pin),
        };
        if digest.is_none() && !allow_floating {
            return Err(format!(
                "{text} names a tag, which can be moved to other code: pin it with @sha256:<digest> \
                 (as `agyn-admission policy push` prints it), or set `allowFloatingTags: true`"
            ));
        }
        Ok(ModuleRef {
            reference: parsed.reference,
            digest,
        })
    }

    /// Reads `registry/repository[:tag][@sha256:…]`, without the scheme,
    /// as `policy push` and `policy pull` take it.
    pub fn parse_plain(text: &str) -> Result<Self, String> {
        let reference = Reference::try_from(text)
            .map_err(|e| format!("{text:?} is not an OCI reference: {e}"))?;
        // A name without a registry would silently mean Docker Hub.
        let first = text.split('/').next().unwrap_or_default();
        if !text.contains('/')
            || !(first.contains('.') || first.contains(':') || first == "localhost")
        {
            return Err(format!(
                "{text:?} names no registry: write it in full, as registry.example.com/team/policy"
            ));
        }
        let digest = reference.digest().map(str::to_string);
        if let Some(digest) = &digest
            && !digest.starts_with("sha256:")
        {
            return Err(format!("{digest}: only sha256 digests are supported"));
        }
        let tag = match (reference.tag(), &digest) {
            // The parser defaults a bare name to `latest`; a bare name with
            // a digest has no tag.
            (Some(tag), _) if text.contains(&format!(":{tag}")) => Some(tag.to_string()),
            (_, Some(_)) => None,
            (tag, None) => tag.map(str::to_string),
        };
        let registry = reference.registry().to_string();
        let repository = reference.repository().to_string();
        Ok(ModuleRef {
            reference: match tag {
                Some(tag) => Reference::with_tag(registry, repository, tag),
                None => Reference::with_digest(
                    registry,
                    repository,
                    digest.clone().expect("no tag means a digest"),
                ),
            },
            digest: digest.map(|d| d.to_ascii_lowercase()),
        })
    }

    /// The registry's host (and port), as credentials and TLS settings
    /// are keyed.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The reference to ask the registry for the manifest: by digest when
    /// pinned (a moved tag cannot matter), else by tag.
    pub fn manifest_reference(&self) -> Reference {
        match &self.digest {
            Some(digest) => self.at(digest),
            None => self.reference.clone(),
        }
    }

    /// The same repository at `digest`.
    pub fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }

    /// The same repository at `tag`.
    pub fn tagged(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            tag.to_string(),
        )
    }
}

impl fmt::Display for ModuleRef {
    /// `oci://registry/repository[:tag][@digest]`, as a set writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )?;
        if let Some(tag) = self.reference.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `sha256:<hex>` from `<hex>` or `sha256:<hex>`, lowercase; refused
/// unless 64 hex digits.
pub fn normalize_digest(pin: &str) -> Result<String, String> {
    let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{pin:?} is not a sha256 digest (64 hex digits)"));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pins_and_tags() {
        let m =
            ModuleRef::parse(&format!("oci://r.example.com:5000/a/b@{D}"), None, false).unwrap();
        assert_eq!(m.registry(), "r.example.com:5000");
        assert_eq!(m.digest.as_deref(), Some(D));
        assert_eq!(m.to_string(), format!("oci://r.example.com:5000/a/b@{D}"));

        let m = ModuleRef::parse("oci://127.0.0.1:5000/a:v1", Some(&D[7..]), false).unwrap();
        assert_eq!(m.digest.as_deref(), Some(D));
        assert_eq!(m.reference.tag(), Some("v1"));
        assert_eq!(m.manifest_reference().digest(), Some(D));

        let floating = ModuleRef::parse("oci://localhost/a:v1", None, true).unwrap();
        assert_eq!(floating.digest, None);
        assert_eq!(floating.manifest_reference().tag(), Some("v1"));
    }

    #[test]
    fn refusals() {
        let tag = ModuleRef::parse("oci://r.example.com/a:v1", None, false).unwrap_err();
        assert!(tag.contains("allowFloatingTags"), "{tag}");
        let other = format!("sha256:{}", "f".repeat(64));
        let both = ModuleRef::parse(&format!("oci://r.example.com/a@{D}"), Some(&other), false)
            .unwrap_err();
        assert!(both.contains("differ"), "{both}");
        let hub = ModuleRef::parse(&format!("oci://library/a@{D}"), None, false).unwrap_err();
        assert!(hub.contains("names no registry"), "{hub}");
        assert!(ModuleRef::parse("oci://r.example.com/a@sha256:abc", None, false).is_err());
        assert!(normalize_digest("xyz").is_err());
    }
}
