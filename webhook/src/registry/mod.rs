//! Policy modules from OCI registries: pulled by digest, checked while
//! streaming, verified against a cosign key when the set asks, and kept
//! in a [`store`] so that a module pulled once loads without the
//! registry.
//!
//! [`Registry::pull`] is the one way a module comes from the network;
//! [`Registry::stored`] the one way it comes from disk. What the webhook
//! does while a module cannot be had is the server's: a policy set loads
//! with the policy marked unavailable ([`crate::config::Unavailable`]).

mod artifact;
mod auth;
mod reference;
pub mod signature;
mod store;

pub use artifact::{Artifact, MAX_MODULE_SIZE};
pub use reference::{ModuleRef, SCHEME, normalize_digest};
pub use signature::VerifyKey;

use artifact::{MANIFEST_MEDIA_TYPES, digest};
use auth::Credentials;
use futures_util::StreamExt;
use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use signature::Signature;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use store::{Store, Stored};

/// How to reach registries, and where pulled modules are kept.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// A Docker `config.json` with credentials by registry.
    pub docker_config: Option<PathBuf>,
    /// Whether `docker_config` is only the default location: then a file
    /// that cannot be read is a warning, not an error, since a command
    /// that pulls nothing must not fail on Docker's own file.
    pub docker_config_is_default: bool,
    /// PEM certificates to trust besides the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Registries (`host` or `host:port`) spoken to in plain HTTP.
    pub insecure: Vec<String>,
    /// The longest one pull may take, retries of the protocol included.
    pub timeout: Duration,
    /// Where pulled modules are kept; `None`: in memory.
    pub store_dir: Option<PathBuf>,
}

/// Connecting is quick or not happening: a registry that does not accept
/// a connection in this long is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Registry {
    credentials: Credentials,
    ca: Vec<Certificate>,
    insecure: Vec<String>,
    timeout: Duration,
    store: Store,
    /// Loopback registries found to speak plain HTTP: asked that way first
    /// from then on.
    plain: Mutex<HashSet<String>>,
}

/// A module ready to compile.
pub struct Pulled {
    pub module: Vec<u8>,
    /// The manifest's digest: the one a set pins.
    pub digest: String,
}

impl Registry {
    /// Reads the credentials and the CA bundle now, so a bad file is an
    /// error at start rather than at the first pull.
    pub fn new(options: &RegistryOptions) -> Result<Self, String> {
        // reqwest uses rustls's process-wide provider: ring, as the server.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let credentials = match &options.docker_config {
            Some(path) => match Credentials::read(path) {
                Ok(credentials) => credentials,
                Err(e) if options.docker_config_is_default => {
                    tracing::warn!(error = %e, "ignoring the registry credentials: pulls are anonymous");
                    Credentials::default()
                }
                Err(e) => return Err(e),
            },
            None => Credentials::default(),
        };
        let ca = match &options.ca_bundle {
            Some(path) => {
                let data = std::fs::read(path)
                    .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
                if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!(
                        "the CA bundle {} holds no PEM certificate",
                        path.display()
                    ));
                }
                vec![Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                }]
            }
            None => Vec::new(),
        };
        Ok(Registry {
            credentials,
            ca,
            insecure: options.insecure.clone(),
            timeout: options.timeout,
            store: Store::new(options.store_dir.clone()),
            plain: Mutex::new(HashSet::new()),
        })
    }

    /// The module as stored by an earlier pull, if it is there, intact,
    /// and (with `key`) signed. A floating tag is taken at the digest it
    /// last resolved to.
    pub fn stored(&self, module: &ModuleRef, key: Option<&VerifyKey>) -> Option<Pulled> {
        let digest = match &module.digest {
            Some(digest) => digest.clone(),
            None => self.store.resolved(&module.reference)?,
        };
        let stored = self.store.get(&digest)?;
        if let Some(key) = key
            && signature::verify(key, &stored.signatures, &digest).is_err()
        {
            // Signed by another key than the one now asked for: the
            // registry may have that signature.
            return None;
        }
        Some(Pulled {
            module: stored.module,
            digest,
        })
    }

    /// A module for a command that can wait: from the store when pinned
    /// and there, else pulled now. A floating tag is resolved again, and
    /// its last resolution used (with a warning) when the registry cannot
    /// be asked.
    pub fn fetch(&self, module: &ModuleRef, key: Option<&VerifyKey>) -> Result<Pulled, String> {
        if module.digest.is_some()
            && let Some(stored) = self.stored(module, key)
        {
            return Ok(stored);
        }
        match block_on(self.pull(module, key)) {
            Ok(pulled) => Ok(pulled),
            Err(e) if module.digest.is_none() => match self.stored(module, key) {
                Some(stored) => {
                    tracing::warn!(
                        module = %module,
                        digest = %stored.digest,
                        error = %e,
                        "cannot resolve the tag; using the digest it last resolved to"
                    );
                    Ok(stored)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Pulls a module, verifies it (and its signature, with `key`), and
    /// stores it. The whole pull is bounded by the registry timeout.
    pub async fn pull(
        &self,
        module: &ModuleRef,
        key: Option<&VerifyKey>,
    ) -> Result<Pulled, String> {
        let pull = self.with_client(module.registry(), |client, auth| async move {
            self.pull_with(&client, &auth, module, key).await
        });
        let pulled = tokio::time::timeout(self.timeout, pull)
            .await
            .map_err(|_| format!("the registry did not answer within {:?}", self.timeout))??;
        if module.digest.is_none() {
            // A warning: what runs can change without the set changing.
            tracing::warn!(
                module = %module,
                digest = %pulled.digest,
                "resolved the floating tag; pin the digest to run the same module everywhere"
            );
            self.store.set_resolved(&module.reference, &pulled.digest);
        }
        Ok(pulled)
    }

    async fn pull_with(
        &self,
        client: &Client,
        auth: &RegistryAuth,
        module: &ModuleRef,
        key: Option<&VerifyKey>,
    ) -> Result<Pulled, OciError> {
        let (manifest, digest) = client
            .pull_manifest_raw(&module.manifest_reference(), auth, MANIFEST_MEDIA_TYPES)
            .await?;
        // oci-client checks a pinned digest; a floating tag's is computed
        // here, not taken from the registry's header.
        let digest_found = digest_of_manifest(&manifest, &digest)?;
        if let Some(pinned) = &module.digest
            && *pinned != digest_found
        {
            return Err(OciError::Refused(format!(
                "the registry's manifest is {digest_found}, not the pinned {pinned}"
            )));
        }
        let digest = digest_found;
        if let Some(stored) = self.stored(&module_at(module, &digest), key) {
            return Ok(stored);
        }
        let layer = artifact::module_layer(&manifest).map_err(OciError::Refused)?;
        let reference = module.at(&digest);
        let mut stream = client.pull_blob_stream(&reference, &layer).await?;
        let mut bytes = Vec::with_capacity(layer.size as usize);
        // The stream fails at its end if the bytes do not match the
        // layer's digest; the size is checked as they come.
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let corrupted = e
                    .get_ref()
                    .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
                OciError::Refused(match corrupted {
                    true => format!(
                        "the module's blob does not match its digest {} (corrupted): {e}",
                        layer.digest
                    ),
                    false => format!("reading the module's blob: {e}"),
                })
            })?;
            if (bytes.len() + chunk.len()) as i64 > layer.size {
                return Err(OciError::Refused(format!(
                    "the module's blob is larger than the {} bytes its manifest says",
                    layer.size
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if artifact::digest(&bytes) != layer.digest {
            return Err(OciError::Refused(format!(
                "the module's blob does not match its digest {} (corrupted)",
                layer.digest
            )));
        }
        let signatures = match key {
            None => Vec::new(),
            Some(key) => {
                let signatures = self.signatures(client, auth, module, &digest).await?;
                signature::verify(key, &signatures, &digest).map_err(OciError::Refused)?;
                signatures
            }
        };
        let stored = Stored {
            manifest: manifest.to_vec(),
            module: bytes,
            signatures,
        };
        self.store.put(&digest, &stored);
        Ok(Pulled {
            module: stored.module,
            digest,
        })
    }

    /// The cosign signatures of `digest`, as fetched; none if there is no
    /// signature tag.
    async fn signatures(
        &self,
        client: &Client,
        auth: &RegistryAuth,
        module: &ModuleRef,
        digest: &str,
    ) -> Result<Vec<Signature>, OciError> {
        let tag = module.tagged(&signature::tag_of(digest));
        let manifest = match client
            .pull_manifest_raw(&tag, auth, MANIFEST_MEDIA_TYPES)
            .await
        {
            Ok((manifest, _)) => manifest,
            Err(e) if not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let manifest: OciImageManifest = serde_json::from_slice(&manifest).map_err(|e| {
            OciError::Refused(format!("the signature manifest cannot be read: {e}"))
        })?;
        let mut signatures = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == signature::SIGNATURE_LAYER_MEDIA_TYPE)
            .take(signature::MAX_SIGNATURES)
        {
            let Some(signature) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(signature::SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            if !(0..=signature::MAX_PAYLOAD_SIZE).contains(&layer.size) {
                continue;
            }
            let mut payload = Vec::new();
            client.pull_blob(&tag, layer, &mut payload).await?;
            signatures.push(Signature {
                payload,
                signature: signature.clone(),
            });
        }
        Ok(signatures)
    }

    /// Pushes an artifact to `target` (its tag, or by digest alone) and
    /// returns the digest to pin.
    pub async fn push(&self, artifact: &Artifact, target: &ModuleRef) -> Result<String, String> {
        let push = self.with_client(target.registry(), |client, auth| async move {
            let reference = &target.reference;
            client
                .store_auth_if_needed(reference.resolve_registry(), &auth)
                .await;
            let config = artifact::digest(&artifact.config);
            client
                .push_blob(reference, artifact.config.clone(), &config)
                .await?;
            let layer = artifact::digest(&artifact.layer);
            client
                .push_blob(reference, artifact.layer.clone(), &layer)
                .await?;
            let digest = artifact.digest();
            let at = match reference.tag() {
                Some(_) => reference.clone(),
                None => target.at(&digest),
            };
            client
                .push_manifest_raw(
                    &at,
                    artifact.manifest.clone(),
                    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE
                        .parse()
                        .expect("a valid header value"),
                )
                .await?;
            Ok(digest)
        });
        tokio::time::timeout(self.timeout.max(Duration::from_secs(60)), push)
            .await
            .map_err(|_| "the registry did not answer in time".to_string())?
    }

    /// Runs `op` with a client for `registry`: in HTTPS, except for
    /// registries named insecure (plain HTTP) and loopback ones, which
    /// are tried in HTTPS and then, if no TLS connection can be made, in
    /// plain HTTP, as Docker does.
    async fn with_client<T, F, Fut>(&self, registry: &str, op: F) -> Result<T, String>
    where
        F: Fn(Client, RegistryAuth) -> Fut,
        Fut: Future<Output = Result<T, OciError>>,
    {
        let auth = self.credentials.for_registry(registry)?;
        let named_insecure = self
            .insecure
            .iter()
            .any(|r| r == registry || registry.rsplit_once(':').is_some_and(|(host, _)| host == r));
        let known_plain = self
            .plain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(registry);
        let attempts: &[bool] = match (named_insecure || known_plain, is_loopback(registry)) {
            (true, _) => &[true],
            (false, true) => &[false, true],
            (false, false) => &[false],
        };
        let mut failures = Vec::new();
        for &plain in attempts {
            let client = self.client(registry, plain)?;
            match op(client, auth.clone()).await {
                Ok(value) => {
                    if plain && !known_plain && !named_insecure {
                        self.plain
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(registry.to_string());
                    }
                    return Ok(value);
                }
                Err(OciError::Registry(e)) if !plain && attempts.len() > 1 && no_tls(&e) => {
                    failures.push(format!("in HTTPS: {}", chain(&e)));
                }
                Err(e) => {
                    let scheme = if plain { "in plain HTTP: " } else { "" };
                    failures.push(format!("{scheme}{}", e.describe(registry)));
                    break;
                }
            }
        }
        Err(failures.join("; then "))
    }

    fn client(&self, registry: &str, plain: bool) -> Result<Client, String> {
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: self.ca.clone(),
            // An index is for images of many platforms; a module is one.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(self.timeout),
            user_agent: concat!("agyn-admission/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Client::try_from(config)
            .map_err(|e| format!("cannot make a client for {registry}: {}", chain(&e)))
    }
}

/// Why a registry operation failed: the registry's (or the network's)
/// error, or the module refused for what it is.
enum OciError {
    Registry(OciDistributionError),
    Refused(String),
}

impl From<OciDistributionError> for OciError {
    fn from(e: OciDistributionError) -> Self {
        OciError::Registry(e)
    }
}

impl OciError {
    fn describe(&self, registry: &str) -> String {
        match self {
            OciError::Refused(why) => why.clone(),
            OciError::Registry(OciDistributionError::UnauthorizedError { .. })
            | OciError::Registry(OciDistributionError::AuthenticationFailure(_)) => format!(
                "{registry} refused the credentials (or their absence): check the registry config"
            ),
            OciError::Registry(e) if not_found(e) => {
                format!("not found in the registry: {}", chain(e))
            }
            OciError::Registry(e) => chain(e),
        }
    }
}

/// Whether the registry said the manifest (a tag, a digest) is not there.
fn not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
                    | oci_client::errors::OciErrorCode::NotFound
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// Whether an HTTPS attempt failed before any HTTP was spoken (no TLS
/// server there).
fn no_tls(e: &OciDistributionError) -> bool {
    matches!(e, OciDistributionError::RequestError(e) if e.is_connect())
}

/// An error with its causes, as `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The digest of the manifest as received, checked against the one the
/// registry gave.
fn digest_of_manifest(manifest: &[u8], given: &str) -> Result<String, OciError> {
    let actual = digest(manifest);
    if given.starts_with("sha256:") && given != actual {
        return Err(OciError::Refused(format!(
            "the registry says the manifest is {given}, but its bytes are {actual}"
        )));
    }
    Ok(actual)
}

/// The same module, pinned at `digest`.
fn module_at(module: &ModuleRef, digest: &str) -> ModuleRef {
    ModuleRef {
        reference: module.reference.clone(),
        digest: Some(digest.to_string()),
    }
}

/// Whether a registry's host is a loopback address (`127.0.0.1:5000`,
/// `[::1]:5000`, `localhost`).
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs a pull to its end from synchronous code: on the runtime of the
/// thread's context (a blocking task's), or on one made for it.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(future),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for one pull")
            .block_on(future),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.8.9.1"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("registry.example.com"));
    }
}
