//! Registry credentials from a Docker `config.json`: the format of a
//! Kubernetes `kubernetes.io/dockerconfigjson` pull secret, of `docker
//! login` and of `oras login`.

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    /// base64 of `username:password`.
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// A registry's own bearer token.
    registrytoken: Option<String>,
    /// An OAuth refresh token to trade at the registry's token service:
    /// not supported, and said so, rather than silently anonymous.
    identitytoken: Option<String>,
}

/// Credentials by registry host (`registry.example.com`, `host:5000`).
#[derive(Default)]
pub struct Credentials {
    by_registry: HashMap<String, Result<RegistryAuth, String>>,
}

impl Credentials {
    /// Reads a `config.json`. An entry it cannot use is kept as an error,
    /// reported when that registry is used; a file it cannot read at all
    /// is an error now.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let file: ConfigFile =
            serde_json::from_slice(text).map_err(|e| format!("not a Docker config.json: {e}"))?;
        let by_registry = file
            .auths
            .into_iter()
            .map(|(key, entry)| (host_of(&key), entry.auth()))
            .collect();
        Ok(Credentials { by_registry })
    }

    /// What to present to `registry`: anonymous when no entry names it.
    pub fn for_registry(&self, registry: &str) -> Result<RegistryAuth, String> {
        match self.by_registry.get(registry) {
            None => Ok(RegistryAuth::Anonymous),
            Some(Ok(auth)) => Ok(auth.clone()),
            Some(Err(why)) => Err(format!("the credentials for {registry}: {why}")),
        }
    }
}

impl Entry {
    fn auth(self) -> Result<RegistryAuth, String> {
        if let Some(token) = self.registrytoken {
            return Ok(RegistryAuth::Bearer(token));
        }
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            return Ok(RegistryAuth::Basic(username.clone(), password.clone()));
        }
        if let Some(auth) = &self.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("`auth` is not base64: {e}"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| "`auth` is not UTF-8".to_string())?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or("`auth` is not base64 of username:password")?;
            return Ok(RegistryAuth::Basic(username.into(), password.into()));
        }
        if self.identitytoken.is_some() {
            return Err(
                "an `identitytoken` (OAuth refresh token) is not supported: \
                 give a username and password, or a `registrytoken`"
                    .into(),
            );
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// The host a `config.json` key names: keys may be URLs
/// (`https://index.docker.io/v1/`) or bare hosts.
fn host_of(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pull_secret_format() {
        let json = br#"{"auths": {
            "https://r.example.com/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "t.example.com": {"registrytoken": "tok"},
            "o.example.com": {"identitytoken": "refresh"},
            "bad.example.com": {"auth": "!!"}
        }}"#;
        let c = Credentials::parse(json).unwrap();
        assert_eq!(
            c.for_registry("r.example.com").unwrap(),
            RegistryAuth::Basic("user".into(), "pa:ss".into())
        );
        assert_eq!(
            c.for_registry("127.0.0.1:5000").unwrap(),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            c.for_registry("t.example.com").unwrap(),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(
            c.for_registry("elsewhere.example.com").unwrap(),
            RegistryAuth::Anonymous
        );
        assert!(
            c.for_registry("o.example.com")
                .unwrap_err()
                .contains("identitytoken")
        );
        assert!(
            c.for_registry("bad.example.com")
                .unwrap_err()
                .contains("base64")
        );
        assert!(Credentials::parse(br#"{"auths": ["r.example.com"]}"#).is_err());
        assert!(Credentials::parse(b"not json").is_err());
    }
}
