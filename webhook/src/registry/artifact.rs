//! What a policy module is in a registry: an OCI image manifest whose one
//! WebAssembly layer is the component.
//!
//! Two conventions are read: the CNCF TAG Runtime's Wasm artifact (config
//! `application/vnd.wasm.config.v0+json`, layer `application/wasm`), which
//! `policy push` writes, and Kubewarden's (config
//! `application/vnd.wasm.config.v1+json`, layer
//! `application/vnd.wasm.content.layer.v1+wasm`).

use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
const KUBEWARDEN_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// The manifest media types asked for: OCI's, and Docker's v2, which
/// older tools write with the same structure.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The largest module pulled: a Python policy is about 40 MB; anything
/// near this is not a policy, and would only fill memory.
pub const MAX_MODULE_SIZE: u64 = 256 << 20;

/// The module's layer in a manifest, refusing anything that is not a
/// policy module.
pub fn module_layer(manifest: &[u8]) -> Result<OciDescriptor, String> {
    let manifest: OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
    let mut wasm = manifest.layers.iter().filter(|l| {
        l.media_type == LAYER_MEDIA_TYPE || l.media_type == KUBEWARDEN_LAYER_MEDIA_TYPE
    });
    let layer = match (wasm.next(), wasm.next()) {
        (Some(layer), None) => layer.clone(),
        (None, _) => {
            let types: Vec<&str> = manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect();
            return Err(format!(
                "not a policy module: no layer is WebAssembly ({LAYER_MEDIA_TYPE} or \
                 {KUBEWARDEN_LAYER_MEDIA_TYPE}); its layers are [{}]",
                types.join(", ")
            ));
        }
        (Some(_), Some(_)) => {
            return Err("not a policy module: it has several WebAssembly layers".into());
        }
    };
    if layer.size < 0 || layer.size as u64 > MAX_MODULE_SIZE {
        return Err(format!(
            "the module's layer is {} bytes; the largest taken is {MAX_MODULE_SIZE}",
            layer.size
        ));
    }
    Ok(layer)
}

/// An artifact to push: its blobs and the manifest's exact bytes, whose
/// sha256 is the digest to pin.
pub struct Artifact {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl Artifact {
    /// The CNCF Wasm artifact for a component. Nothing in it depends on
    /// time or place, so pushing the same file twice gives the same digest.
    /// `policies` (the component's) and `title` become annotations.
    pub fn new(module: Vec<u8>, title: &str, policies: &[String]) -> Self {
        let layer_digest = digest(&module);
        let config = serde_json::to_vec(&json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest],
        }))
        .expect("JSON serialises");
        let annotations = BTreeMap::from([
            (
                "org.opencontainers.image.title".to_string(),
                title.to_string(),
            ),
            ("io.agyn.admission.policies".to_string(), policies.join(",")),
        ]);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": layer_digest,
                "size": module.len(),
            }],
            "annotations": annotations,
        }))
        .expect("JSON serialises");
        Artifact {
            config,
            layer: module,
            manifest,
        }
    }

    /// The manifest's digest: what a policy set pins.
    pub fn digest(&self) -> String {
        digest(&self.manifest)
    }
}

/// `sha256:<hex>` of some bytes, as OCI names content.
pub fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_what_it_reads() {
        let artifact = Artifact::new(b"\0asm\x0d\0\x01\0".to_vec(), "p.wasm", &["p".into()]);
        let layer = module_layer(&artifact.manifest).unwrap();
        assert_eq!(layer.digest, digest(&artifact.layer));
        assert_eq!(layer.media_type, LAYER_MEDIA_TYPE);
        // Reproducible.
        let again = Artifact::new(b"\0asm\x0d\0\x01\0".to_vec(), "p.wasm", &["p".into()]);
        assert_eq!(artifact.digest(), again.digest());
    }

    #[test]
    fn refuses_what_is_not_a_module() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:00","size":1}]}"#;
        let e = module_layer(image).unwrap_err();
        assert!(e.contains("no layer is WebAssembly"), "{e}");
        assert!(module_layer(b"{}").is_err());
    }
}
