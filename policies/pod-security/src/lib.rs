//! `pod-security`: the Kubernetes Pod Security Standards, `baseline` or
//! `restricted`, at any version from `v1.0` to `latest` (v1.37), with Pod
//! Security Admission's verdicts and messages.
//!
//! Kubernetes' built-in Pod Security Admission (PSA) applies the standards
//! per namespace, at admission only. This policy applies the same checks
//! anywhere a policy set does (with its modes, matching and exemptions),
//! and in the CI dry run, so a manifest's fate under PSA is known before it
//! reaches a cluster. A denial reads as PSA's does:
//!
//! ```text
//! violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false
//! (container "app" must set securityContext.allowPrivilegeEscalation=false), ...
//! ```
//!
//! The dry run reads manifests as written, before the API server has
//! defaulted them; [`defaults`] applies the defaults PSA's verdict depends
//! on, so both see the same pod.
//!
//! Settings:
//! - `level` (default `restricted`): `baseline` or `restricted`;
//! - `version` (default `latest`): `latest` or `v1.N`, as in PSA's
//!   `pod-security.kubernetes.io/enforce-version` label;
//! - `exemptRuntimeClasses` (default empty): pods with one of these
//!   `runtimeClassName`s are not checked, as PSA's runtime class exemption;
//! - `workloadTemplates` (default `warn`): what a violation in the pod
//!   template of a Deployment, Job or other workload controller does. PSA
//!   only warns there (`would violate PodSecurity ...`) and rejects the
//!   pods later; `deny` rejects the workload itself;
//! - with `mutate: true` in the policy set, a `restricted` policy fills in
//!   what the pod leaves unset with compliant values (see [`mutate`]).

mod baseline;
pub mod defaults;
mod format;
pub mod mutate;
pub mod registry;
mod restricted;
pub mod version;
mod visit;

use agyn_policy_sdk::k8s_openapi::api::core::v1::{Pod, PodSpec};
use agyn_policy_sdk::{Outcome, Policy, Request, Severity};
pub use registry::Level;
use serde::Deserialize;
pub use version::Version;

pub struct PodSecurity;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodSecuritySettings {
    pub level: Level,
    pub version: Version,
    pub exempt_runtime_classes: Vec<String>,
    pub workload_templates: TemplateAction,
}

/// What a violation in a workload's pod template does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TemplateAction {
    /// As PSA: the workload is admitted with a warning.
    #[default]
    Warn,
    Deny,
}

#[allow(
    clippy::derivable_impls,
    reason = "written out so that every policy states its defaults the same way"
)]
impl Default for PodSecuritySettings {
    fn default() -> Self {
        PodSecuritySettings {
            level: Level::Restricted,
            version: Version::Latest,
            exempt_runtime_classes: Vec::new(),
            workload_templates: TemplateAction::Warn,
        }
    }
}

/// Subresources of a pod PSA lets through unchecked: they cannot change
/// what the standards look at.
const IGNORED_SUBRESOURCES: &[&str] = &[
    "attach",
    "binding",
    "eviction",
    "exec",
    "log",
    "portforward",
    "proxy",
    "status",
];

fn exempt(request: &Request, pod: &Pod, settings: &PodSecuritySettings) -> bool {
    let runtime_class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        .filter(|rc| !rc.is_empty());
    request
        .sub_resource
        .as_deref()
        .is_some_and(|s| IGNORED_SUBRESOURCES.contains(&s))
        || runtime_class.is_some_and(|rc| settings.exempt_runtime_classes.iter().any(|e| e == rc))
}

impl Policy for PodSecurity {
    const NAME: &'static str = "pod-security";
    const DESCRIPTION: &'static str = "The Kubernetes Pod Security Standards (baseline or restricted, at any version), with Pod Security Admission's verdicts and messages.";
    const CATEGORY: &'static str = "Pod Security Standards";
    const SEVERITY: Severity = Severity::High;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"level":{"enum":["baseline","restricted"],"default":"restricted"},"version":{"type":"string","pattern":"^(latest|v1\\.[0-9]+)$","default":"latest"},"exemptRuntimeClasses":{"type":"array","items":{"type":"string"}},"workloadTemplates":{"enum":["warn","deny"],"default":"warn"}}}"#;
    const MUTATING: bool = true;
    type Object = Pod;
    type Settings = PodSecuritySettings;

    fn check_settings(settings: &Self::Settings) -> Result<(), String> {
        if settings.exempt_runtime_classes.iter().any(String::is_empty) {
            return Err("exemptRuntimeClasses must not contain an empty name".into());
        }
        Ok(())
    }

    fn validate(request: &Request, pod: &Pod, settings: &Self::Settings) -> Outcome {
        let mut out = Outcome::default();
        if exempt(request, pod, settings) {
            return out;
        }
        // The host presents a workload's template as a Pod; the request
        // still says what was submitted.
        let template = !matches!(request.kind.kind.as_str(), "Pod" | "");
        let pod = defaults::as_admitted(pod, template);
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let forbidden = registry::evaluate(settings.level, settings.version, &pod.metadata, spec);
        if forbidden.is_empty() {
            return out;
        }
        let list: Vec<String> = forbidden.iter().map(ToString::to_string).collect();
        let violation = format!(
            "PodSecurity \"{}:{}\": {}",
            settings.level,
            settings.version,
            list.join(", ")
        );
        if template && settings.workload_templates == TemplateAction::Warn {
            out.warn(format!("would violate {violation}"));
        } else {
            out.deny(format!("violates {violation}"));
        }
        out
    }

    fn mutate(request: &Request, pod: &mut Pod, settings: &Self::Settings) -> bool {
        if exempt(request, pod, settings) || settings.level != Level::Restricted {
            return false;
        }
        mutate::fill_restricted(pod, settings.version)
    }
}

#[cfg(feature = "export")]
agyn_policy_sdk::export_policies!(PodSecurity);
