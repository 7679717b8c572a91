//! `readonly-root-filesystem`: every container (of any kind) must set
//! `securityContext.readOnlyRootFilesystem: true`, so that a compromised
//! process cannot plant binaries or alter the image; scratch space comes from
//! explicit volumes (`emptyDir`) instead.
//!
//! Mutation sets `true` where the field is unset; an explicit `false` is
//! denied, never overridden.
//!
//! Settings:
//! - `exemptContainers` (default empty): names of containers allowed a
//!   writable root filesystem, of any kind. Mutation leaves them as they are.

use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
use agyn_policy_sdk::{Outcome, Policy, Request, Severity, containers, containers_mut, shown};
use serde::Deserialize;

pub struct ReadonlyRootFilesystem;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadonlyRootFilesystemSettings {
    pub exempt_containers: Vec<String>,
}

#[allow(
    clippy::derivable_impls,
    reason = "written out so that every policy states its defaults the same way"
)]
impl Default for ReadonlyRootFilesystemSettings {
    fn default() -> Self {
        ReadonlyRootFilesystemSettings {
            exempt_containers: Vec::new(),
        }
    }
}

impl ReadonlyRootFilesystemSettings {
    fn exempt(&self, name: &str) -> bool {
        self.exempt_containers.iter().any(|n| n == name)
    }
}

impl Policy for ReadonlyRootFilesystem {
    const NAME: &'static str = "readonly-root-filesystem";
    const DESCRIPTION: &'static str =
        "Every container has a read-only root filesystem; mutation sets it where unset.";
    const CATEGORY: &'static str = "Agyn";
    const SEVERITY: Severity = Severity::Medium;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"exemptContainers":{"type":"array","items":{"type":"string"}}}}"#;
    const MUTATING: bool = true;
    type Object = Pod;
    type Settings = ReadonlyRootFilesystemSettings;

    fn validate(_: &Request, pod: &Pod, settings: &Self::Settings) -> Outcome {
        let mut out = Outcome::default();
        for c in containers(pod).filter(|c| !settings.exempt(c.name)) {
            let value = c.effective().read_only_root_filesystem;
            if value != Some(true) {
                out.deny_field(
                    &c,
                    "securityContext.readOnlyRootFilesystem",
                    "true",
                    shown(value),
                );
            }
        }
        out
    }

    fn mutate(_: &Request, pod: &mut Pod, settings: &Self::Settings) -> bool {
        let mut changed = false;
        for mut c in containers_mut(pod).filter(|c| !settings.exempt(c.name)) {
            let unset = c
                .security_context()
                .is_none_or(|sc| sc.read_only_root_filesystem.is_none());
            if unset {
                c.security_context_mut().read_only_root_filesystem = Some(true);
                changed = true;
            }
        }
        changed
    }
}

#[cfg(feature = "export")]
agyn_policy_sdk::export_policies!(ReadonlyRootFilesystem);

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_policy_sdk::entry;
    use agyn_policy_sdk::testing::{Run, pod, request, run, settings};

    fn check(yaml: &str, settings_json: &str, mutate: bool) -> Run<Pod> {
        run::<ReadonlyRootFilesystem>(
            &request("agyn-workloads"),
            pod(yaml),
            &settings::<ReadonlyRootFilesystem>(settings_json),
            mutate,
        )
    }

    /// readOnlyRootFilesystem of every container, in the order of `containers`.
    fn read_only(run: &Run<Pod>) -> Vec<Option<bool>> {
        containers(&run.object)
            .map(|c| c.effective().read_only_root_filesystem)
            .collect()
    }

    const MIXED: &str = r#"
kind: Pod
spec:
  securityContext: {runAsNonRoot: true}
  initContainers:
  - name: init
    securityContext: {readOnlyRootFilesystem: false}
  containers:
  - name: app
    securityContext: {readOnlyRootFilesystem: true}
  - name: sidecar
    securityContext: {privileged: false}
  ephemeralContainers:
  - name: debug
"#;

    #[test]
    fn allows_read_only_containers_of_every_kind() {
        let r = check(
            r#"
kind: Pod
spec:
  initContainers:
  - {name: init, securityContext: {readOnlyRootFilesystem: true}}
  containers:
  - {name: app, securityContext: {readOnlyRootFilesystem: true}}
  ephemeralContainers:
  - {name: debug, securityContext: {readOnlyRootFilesystem: true}}
"#,
            "{}",
            false,
        );
        assert_eq!(r.outcome, Outcome::default());
    }

    #[test]
    fn denies_false_and_unset_in_every_kind_of_container() {
        let r = check(MIXED, "{}", false);
        assert_eq!(
            r.outcome.violations,
            [
                r#"init container "init": securityContext.readOnlyRootFilesystem must be true (is false)"#,
                r#"container "sidecar": securityContext.readOnlyRootFilesystem must be true (is unset)"#,
                r#"ephemeral container "debug": securityContext.readOnlyRootFilesystem must be true (is unset)"#,
            ]
        );
    }

    #[test]
    fn mutation_sets_unset_values_and_keeps_explicit_false() {
        let r = check(MIXED, "{}", true);
        // Order: init containers, then containers, then ephemeral containers.
        assert_eq!(
            read_only(&r),
            [Some(false), Some(true), Some(true), Some(true)]
        );
        let sidecar = r.object.spec.as_ref().unwrap().containers[1]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(sidecar.privileged, Some(false), "other fields are kept");
        assert_eq!(
            r.outcome.violations,
            [
                r#"init container "init": securityContext.readOnlyRootFilesystem must be true (is false)"#
            ]
        );
    }

    #[test]
    fn mutated_pod_passes_validation() {
        let r = check(
            "kind: Pod\nspec:\n  initContainers: [{name: init}]\n  containers: [{name: app}]\n",
            "{}",
            true,
        );
        assert_eq!(r.outcome, Outcome::default());
        assert_eq!(read_only(&r), [Some(true), Some(true)]);
    }

    #[test]
    fn exempt_containers_may_be_writable_and_are_not_mutated() {
        let exempt = r#"{"exemptContainers": ["init", "debug"]}"#;
        let validated = check(MIXED, exempt, false);
        assert_eq!(
            validated.outcome.violations,
            [
                r#"container "sidecar": securityContext.readOnlyRootFilesystem must be true (is unset)"#
            ]
        );
        let mutated = check(MIXED, exempt, true);
        assert_eq!(mutated.outcome, Outcome::default());
        assert_eq!(
            read_only(&mutated),
            [Some(false), Some(true), Some(true), None]
        );
    }

    #[test]
    fn settings_default_and_parse() {
        assert_eq!(
            settings::<ReadonlyRootFilesystem>("{}"),
            ReadonlyRootFilesystemSettings::default()
        );
        assert!(
            ReadonlyRootFilesystemSettings::default()
                .exempt_containers
                .is_empty()
        );
        assert_eq!(
            settings::<ReadonlyRootFilesystem>(r#"{"exemptContainers": ["cache"]}"#)
                .exempt_containers,
            ["cache"]
        );
    }

    #[test]
    fn settings_reject_unknown_fields() {
        let err = entry::<ReadonlyRootFilesystem>()
            .validate_settings(r#"{"exemptContainer": ["cache"]}"#)
            .unwrap_err();
        assert!(
            err.starts_with("invalid settings: unknown field `exemptContainer`"),
            "{err}"
        );
    }
}
