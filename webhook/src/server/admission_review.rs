//! The `admission.k8s.io/v1` AdmissionReview on the wire: reading the API
//! server's request, writing the answer it expects.
//!
//! The response type is ours, not kube's `AdmissionResponse`: kube's
//! serialises the patch as an array of numbers (Go happens to accept it)
//! where the API documents a base64 string, and it can only be built from
//! kube's own request type, which the engine does not parse into.

use crate::admission::{AdmissionRequest, Decision, Violation};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// How much of a decision an answer carries. A pod with thousands of
/// containers can have thousands of violations; the API server hands the
/// message to the user and keeps the annotations in its audit log, so the
/// first ones and a count say enough (the webhook's log has the rest, as
/// bounded). Measured before the bound: a 340 KiB pod made a 5.6 MB answer.
const MAX_MESSAGES: usize = 50;
const MAX_MESSAGE_BYTES: usize = 1024;
const MAX_ANNOTATION_BYTES: usize = 4096;
pub const KIND: &str = "AdmissionReview";

/// The envelope, read loosely so that a wrong `apiVersion` or `kind` is
/// named as such rather than as a parse error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<AdmissionRequest>,
}

/// Reads an AdmissionReview; the error is the message for an HTTP 400.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest, String> {
    let review: Incoming = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
    match (review.api_version.as_deref(), review.kind.as_deref()) {
        (Some(API_VERSION), Some(KIND)) => {}
        (version, kind) => {
            return Err(format!(
                "expected apiVersion {API_VERSION} and kind {KIND}, got apiVersion {} and kind {}",
                version.unwrap_or("(none)"),
                kind.unwrap_or("(none)")
            ));
        }
    }
    let request = review.request.ok_or("the AdmissionReview has no request")?;
    if request.uid.is_empty() {
        return Err("the AdmissionReview's request has an empty uid".into());
    }
    Ok(request)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outgoing<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSON Patch, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// A `metav1.Status`, as much of it as a denial needs.
#[derive(Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl AdmissionResponse {
    pub fn allow(uid: String) -> Self {
        AdmissionResponse {
            uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// The mutating webhook's answer: the patch, never a denial. Denying is
    /// the validating webhook's part: it sees the object after every
    /// mutating webhook, reinvocations included.
    pub fn mutation(uid: String, decision: &Decision) -> Self {
        let mut response = Self::allow(uid);
        if !decision.patch.is_empty() {
            let json = serde_json::to_vec(&decision.patch).expect("a JSON Patch serialises");
            response.patch_type = Some("JSONPatch");
            response.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        }
        response
    }

    /// The validating webhook's answer: denied with every violation when an
    /// enforcing policy objects; warnings (kubectl prints them) for `warn`
    /// policies; audit annotations for `audit` ones.
    ///
    /// In a dry run nothing is denied: what would have been is told as
    /// warnings and recorded as audit annotations.
    pub fn validation(uid: String, decision: &Decision, dry_run: bool) -> Self {
        let mut response = Self::allow(uid);
        let violations = decision.violations();
        response.warnings = decision.warnings().iter().map(line).collect();
        let mut audit = decision.audit();
        if dry_run {
            for v in &violations {
                response.warnings.push(format!(
                    "[{}] (dry run: would deny) {}",
                    v.policy, v.message
                ));
            }
            let changers: Vec<&str> = decision
                .results
                .iter()
                .filter(|r| r.mutated)
                .map(|r| r.policy.as_str())
                .collect();
            if !changers.is_empty() {
                response.warnings.push(format!(
                    "(dry run: would change the object) by {}",
                    changers.join(", ")
                ));
            }
            audit.extend(violations.iter().map(|v| Violation {
                policy: v.policy.clone(),
                message: format!("would deny: {}", v.message),
            }));
        } else if !violations.is_empty() {
            response.allowed = false;
            // A denial only because policies failed is the webhook's error,
            // not the object's: say so, as Pod Security Admission's 403s say
            // the object is forbidden.
            let (code, reason) = if decision.denied_for_failures_only() {
                (500, "InternalError")
            } else {
                (403, "Forbidden")
            };
            response.status = Some(Status {
                status: "Failure",
                code,
                reason,
                message: bounded_list(violations.iter().map(line), "; "),
            });
        }
        response.warnings = bounded(response.warnings);
        for v in audit {
            let value = response.audit_annotations.entry(v.policy).or_default();
            if value.len() >= MAX_ANNOTATION_BYTES {
                continue;
            }
            if !value.is_empty() {
                value.push_str("; ");
            }
            value.push_str(&v.message);
            if value.len() > MAX_ANNOTATION_BYTES {
                *value = clip(value, MAX_ANNOTATION_BYTES).into_owned();
            }
        }
        response
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Outgoing {
            api_version: API_VERSION,
            kind: KIND,
            response: self,
        })
        .expect("a response serialises")
    }
}

fn line(v: &Violation) -> String {
    format!("[{}] {}", v.policy, clip(&v.message, MAX_MESSAGE_BYTES))
}

/// The first [`MAX_MESSAGES`] lines, and how many more there were.
fn bounded(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > MAX_MESSAGES {
        let more = lines.len() - MAX_MESSAGES;
        lines.truncate(MAX_MESSAGES);
        lines.push(format!("... and {more} more"));
    }
    lines
}

fn bounded_list(lines: impl Iterator<Item = String>, separator: &str) -> String {
    bounded(lines.collect()).join(separator)
}

/// `text` cut to at most `max` bytes, at a character boundary, marked.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub(4);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ...", &text[..end]).into()
}
