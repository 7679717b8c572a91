//! The policy set file as written (YAML), before anything is loaded.

use super::quantity::{MemorySize, Timeout};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A policy set: which policies run, in what order, how, and on what.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySetFile {
    /// `agyn.io/v1alpha1`: the format's version, so it can evolve.
    pub api_version: ApiVersion,
    /// `PolicySet`: `check` skips the file if it meets it among manifests.
    pub kind: PolicySetKind,
    /// Objects no policy ever judges. kube-system is always exempt.
    #[serde(default)]
    pub exemptions: Exemptions,
    /// The key every `oci://` module must be signed with, unless its
    /// policy names its own.
    #[serde(default)]
    pub verify: Option<Verify>,
    /// Policies in order: mutations run in this order.
    pub policies: Vec<PolicyEntry>,
}

#[derive(Debug, Deserialize)]
pub enum ApiVersion {
    #[serde(rename = "agyn.io/v1alpha1")]
    V1Alpha1,
}

#[derive(Debug, Deserialize)]
pub enum PolicySetKind {
    PolicySet,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exemptions {
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Users (as the API server authenticates them) whose requests are
    /// admitted unjudged, e.g. `system:serviceaccount:ops:breakglass`.
    #[serde(default)]
    pub usernames: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyEntry {
    /// This entry's name in the set and in every message.
    pub name: Spanned<String>,
    /// `builtin` (the default), the path of a `.wasm` component relative
    /// to the policy set file, or `oci://registry/repository@sha256:…`.
    #[serde(default)]
    pub module: Option<Spanned<String>>,
    /// The policy inside the module; defaults to `name`.
    #[serde(default)]
    pub policy: Option<String>,
    /// Refuse the module unless its sha256 is this (lowercase hex). For an
    /// `oci://` module, the manifest's digest: the reference's pin.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Let an `oci://` module be named by a tag alone, resolved on every
    /// load.
    #[serde(default)]
    pub allow_floating_tags: bool,
    /// The key this policy's `oci://` module must be signed with.
    #[serde(default)]
    pub verify: Option<Verify>,
    #[serde(default)]
    pub mode: Mode,
    /// Let the policy change objects (in the mutating webhook, and in
    /// `check`). Only in `enforce` mode.
    #[serde(default)]
    pub mutate: bool,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default)]
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub memory_limit: Option<MemorySize>,
    #[serde(default, rename = "match")]
    pub matching: MatchFile,
    /// The policy's own settings, checked by the policy at load.
    #[serde(default)]
    pub settings: Option<Spanned<serde_json::Value>>,
}

/// A cosign public key: PEM, in the file or in a file it names (relative
/// to the policy set file).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verify {
    pub key: Spanned<String>,
}

/// What a violation does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny the object.
    #[default]
    Enforce,
    /// Admit it with a warning the user sees.
    Warn,
    /// Admit it and record the violation (audit annotation, log).
    Audit,
}

/// What a policy that fails (traps, times out, errs) does to the request.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
pub enum FailurePolicy {
    /// Deny: a broken policy must not let anything through.
    #[default]
    Fail,
    /// Admit as if the policy were not there.
    Ignore,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchFile {
    /// Only these namespaces (empty: all).
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// On the pod's labels (a workload's pod template labels).
    #[serde(default)]
    pub label_selector: Option<LabelSelector>,
    /// Kinds such as `Pod`, `Deployment`, `CronJob` (empty: all supported).
    #[serde(default)]
    pub kinds: Vec<Spanned<String>>,
    /// Default: CREATE and UPDATE.
    #[serde(default)]
    pub operations: Vec<Operation>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}
