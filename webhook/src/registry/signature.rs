//! Cosign's key-based signatures of a module.
//!
//! `cosign sign --key` stores a signature of the manifest digest `D` in
//! the same repository, under the tag `sha256-<hex of D>.sig`: an OCI
//! manifest whose layers (`application/vnd.dev.cosign.simplesigning.v1+json`)
//! are simple-signing payloads, each with its signature (base64 of an
//! ASN.1 DER ECDSA P-256 signature over the payload's SHA-256) in the
//! layer's `dev.cosignproject.cosign/signature` annotation. A signature is
//! good if it verifies with the key and its payload names `D`. No
//! transparency log is consulted (Rekor is not reachable from a cluster
//! that may have no internet), and keyless (Fulcio) signatures are not
//! verified.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

pub const SIGNATURE_LAYER_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A payload is a few hundred bytes; this bounds what a registry can make
/// the webhook read and parse.
pub const MAX_PAYLOAD_SIZE: i64 = 64 << 10;
/// Signatures tried per module: one per signer is usual.
pub const MAX_SIGNATURES: usize = 16;

/// The cosign signature tag of a manifest digest.
pub fn tag_of(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// A public key that signatures must verify with.
#[derive(Clone, Debug)]
pub struct VerifyKey {
    key: VerifyingKey,
    /// Where it came from, for messages.
    pub origin: String,
}

impl PartialEq for VerifyKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for VerifyKey {}

impl VerifyKey {
    /// Reads a PEM `PUBLIC KEY` (as `cosign generate-key-pair` writes
    /// `cosign.pub`).
    pub fn from_pem(pem: &str, origin: String) -> Result<Self, String> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            format!("{origin}: not a PEM ECDSA P-256 public key (as cosign.pub): {e}")
        })?;
        Ok(VerifyKey { key, origin })
    }

    /// The key's point, in hex: tells keys apart whatever their origin.
    pub fn fingerprint(&self) -> String {
        self.key
            .to_encoded_point(true)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One signature as it was fetched: the payload's bytes and the
/// annotation's base64. Kept with a pulled module, so it is checked again
/// (against the key of the moment) each time the module is loaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Signature {
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub signature: String,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Whether one of `signatures` verifies with `key` and names `digest`;
/// if none does, why each failed.
pub fn verify(key: &VerifyKey, signatures: &[Signature], digest: &str) -> Result<(), String> {
    if signatures.is_empty() {
        return Err(format!(
            "the module is not signed: no cosign signature ({})",
            tag_of(digest)
        ));
    }
    let mut reasons = Vec::new();
    for signature in signatures {
        match verify_one(key, signature, digest) {
            Ok(()) => return Ok(()),
            Err(why) => reasons.push(why),
        }
    }
    Err(format!(
        "no signature of the module verifies with the key {}: {}",
        key.origin,
        reasons.join("; ")
    ))
}

fn verify_one(key: &VerifyKey, signature: &Signature, digest: &str) -> Result<(), String> {
    // `cosign attach signature` may keep base64's line breaks.
    let text: String = signature.signature.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("the signature is not base64: {e}"))?;
    let der = DerSignature::from_bytes(&der)
        .map_err(|_| "the signature is not an ASN.1 DER ECDSA signature".to_string())?;
    key.key
        .verify(&signature.payload, &der)
        .map_err(|_| "a signature does not match the key".to_string())?;
    // Only a verified payload is read.
    let payload: Payload = serde_json::from_slice(&signature.payload)
        .map_err(|e| format!("the signed payload is not a simple-signing payload: {e}"))?;
    if payload.critical.kind != "cosign container image signature" {
        return Err(format!(
            "the signed payload's type is {:?}, not a cosign signature",
            payload.critical.kind
        ));
    }
    if payload.critical.image.digest != digest {
        return Err(format!(
            "a valid signature is of {}, not of this module ({digest})",
            payload.critical.image.digest
        ));
    }
    Ok(())
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signatures made by the real `cosign sign --key`, as published in
    /// sigstore-rs, ratify and tobby-fetch tests (tests/fixtures/cosign).
    /// Two are high-S, as Go's ECDSA makes them: they must verify too.
    macro_rules! fixture {
        ($name:literal) => {
            (
                include_str!(concat!(
                    "../../../tests/fixtures/cosign/",
                    $name,
                    "/key.pub"
                )),
                include_bytes!(concat!(
                    "../../../tests/fixtures/cosign/",
                    $name,
                    "/payload.json"
                )),
                include_str!(concat!(
                    "../../../tests/fixtures/cosign/",
                    $name,
                    "/signature.b64"
                )),
            )
        };
    }

    const FIXTURES: [(&str, &[u8], &str); 3] = [
        fixture!("sigstore-rs-busybox"),
        fixture!("tobby-fetch-cosign-v3"),
        fixture!("ratify-akv-p256"),
    ];

    fn digest_in(payload: &[u8]) -> String {
        let payload: Payload = serde_json::from_slice(payload).unwrap();
        payload.critical.image.digest
    }

    #[test]
    fn verifies_real_cosign_signatures() {
        for (key, payload, signature) in FIXTURES {
            let key = VerifyKey::from_pem(key, "fixture".into()).unwrap();
            let signature = Signature {
                payload: payload.to_vec(),
                signature: signature.to_string(),
            };
            let digest = digest_in(payload);
            verify(&key, std::slice::from_ref(&signature), &digest).unwrap();
            // Another module's digest: the signature is valid, not for it.
            let other = format!("sha256:{}", "0".repeat(64));
            let e = verify(&key, std::slice::from_ref(&signature), &other).unwrap_err();
            assert!(e.contains("not of this module"), "{e}");
            // One bit of the payload changed.
            let mut tampered = signature.clone();
            tampered.payload[20] ^= 1;
            let e = verify(&key, &[tampered], &digest).unwrap_err();
            assert!(e.contains("does not match the key"), "{e}");
        }
    }

    #[test]
    fn refuses_other_keys_and_no_signature() {
        let (key, _, _) = FIXTURES[0];
        let (_, payload, signature) = FIXTURES[1];
        let key = VerifyKey::from_pem(key, "fixture".into()).unwrap();
        let signature = Signature {
            payload: payload.to_vec(),
            signature: signature.to_string(),
        };
        let digest = digest_in(payload);
        let e = verify(&key, &[signature], &digest).unwrap_err();
        assert!(e.contains("does not match the key"), "{e}");
        let e = verify(&key, &[], &digest).unwrap_err();
        assert!(e.contains("not signed") && e.contains(".sig"), "{e}");
        assert!(VerifyKey::from_pem("not a key", "x".into()).is_err());
        assert_eq!(
            tag_of(&format!("sha256:{}", "a".repeat(64))),
            format!("sha256-{}.sig", "a".repeat(64))
        );
    }
}
