//! `run-as-non-root`: every container (of any kind) must run as a non-root
//! user and group.
//!
//! For each container, the effective security context (the container's
//! value, else the pod's) must have `runAsNonRoot: true`, a non-zero
//! `runAsUser` and a non-zero `runAsGroup`. Explicit IDs keep the identity in
//! the manifest instead of the image: `runAsNonRoot` alone leaves the UID to
//! the image's `USER`, and without `runAsGroup` the primary group comes from
//! the image too, often root (GID 0).
//!
//! Mutation fills what is missing at pod level (`spec.securityContext`), so
//! that every container inherits it; values already set, at either level, are
//! never changed, and explicit root is denied instead.
//!
//! Settings:
//! - `defaultUser` (default `65532`): the `runAsUser` set by mutation;
//! - `defaultGroup` (default `65532`): the `runAsGroup` set by mutation.
//!
//! 65532 is the distroless `nonroot` user and group. Both must be positive.

use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
use agyn_policy_sdk::{Outcome, Policy, Request, Severity, containers, shown};
use serde::Deserialize;

pub struct RunAsNonRoot;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RunAsNonRootSettings {
    pub default_user: i64,
    pub default_group: i64,
}

impl Default for RunAsNonRootSettings {
    fn default() -> Self {
        RunAsNonRootSettings {
            default_user: 65532,
            default_group: 65532,
        }
    }
}

impl Policy for RunAsNonRoot {
    const NAME: &'static str = "run-as-non-root";
    const DESCRIPTION: &'static str = "Every container runs as a non-root user and group, with explicit UIDs and GIDs; mutation fills unset IDs at pod level.";
    const CATEGORY: &'static str = "Agyn";
    const SEVERITY: Severity = Severity::High;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"defaultUser":{"type":"integer","minimum":1,"default":65532},"defaultGroup":{"type":"integer","minimum":1,"default":65532}}}"#;
    const MUTATING: bool = true;
    type Object = Pod;
    type Settings = RunAsNonRootSettings;

    fn check_settings(settings: &Self::Settings) -> Result<(), String> {
        // A mutation must never produce what validation denies.
        for (field, id) in [
            ("defaultUser", settings.default_user),
            ("defaultGroup", settings.default_group),
        ] {
            if id <= 0 {
                return Err(format!("{field} must be a positive ID (is {id})"));
            }
        }
        Ok(())
    }

    fn validate(_: &Request, pod: &Pod, _: &Self::Settings) -> Outcome {
        let mut out = Outcome::default();
        for c in containers(pod) {
            let e = c.effective();
            if e.run_as_non_root != Some(true) {
                out.deny_field(
                    &c,
                    "securityContext.runAsNonRoot",
                    "true",
                    shown(e.run_as_non_root),
                );
            }
            // Negative IDs are rejected by the API server's own validation,
            // so only root (0) and unset are left to catch here.
            if matches!(e.run_as_user, None | Some(0)) {
                out.deny_field(
                    &c,
                    "securityContext.runAsUser",
                    "a non-zero UID",
                    shown(e.run_as_user),
                );
            }
            if matches!(e.run_as_group, None | Some(0)) {
                out.deny_field(
                    &c,
                    "securityContext.runAsGroup",
                    "a non-zero GID",
                    shown(e.run_as_group),
                );
            }
        }
        out
    }

    fn mutate(_: &Request, pod: &mut Pod, settings: &Self::Settings) -> bool {
        // An effective value is unset only when the pod level is unset too,
        // so filling the pod level never shadows a container's own value.
        let (mut non_root, mut user, mut group) = (false, false, false);
        for c in containers(pod) {
            let e = c.effective();
            non_root |= e.run_as_non_root.is_none();
            user |= e.run_as_user.is_none();
            group |= e.run_as_group.is_none();
        }
        if !(non_root || user || group) {
            return false;
        }
        let Some(spec) = pod.spec.as_mut() else {
            return false;
        };
        let psc = spec.security_context.get_or_insert_with(Default::default);
        if non_root {
            psc.run_as_non_root.get_or_insert(true);
        }
        if user {
            psc.run_as_user.get_or_insert(settings.default_user);
        }
        if group {
            psc.run_as_group.get_or_insert(settings.default_group);
        }
        true
    }
}

#[cfg(feature = "export")]
agyn_policy_sdk::export_policies!(RunAsNonRoot);

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_policy_sdk::entry;
    use agyn_policy_sdk::testing::{Run, pod, request, run, settings};

    fn check(yaml: &str, mutate: bool) -> Run<Pod> {
        run::<RunAsNonRoot>(
            &request("agyn-workloads"),
            pod(yaml),
            &RunAsNonRootSettings::default(),
            mutate,
        )
    }

    #[test]
    fn allows_pod_level_values_inherited_by_every_container() {
        let r = check(
            r#"
kind: Pod
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}
  initContainers: [{name: init}]
  containers: [{name: app}]
  ephemeralContainers: [{name: debug}]
"#,
            false,
        );
        assert_eq!(r.outcome, Outcome::default());
    }

    #[test]
    fn allows_container_level_values() {
        let r = check(
            r#"
kind: Pod
spec:
  containers:
  - name: app
    securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001}
"#,
            false,
        );
        assert!(r.outcome.is_allowed(), "{:?}", r.outcome);
    }

    #[test]
    fn denies_unset_values_in_every_kind_of_container() {
        let r = check(
            r#"
kind: Pod
spec:
  securityContext: {runAsNonRoot: true, runAsGroup: 1000}
  initContainers: [{name: init}]
  containers:
  - name: app
    securityContext: {runAsUser: 1000}
  ephemeralContainers: [{name: debug}]
"#,
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [
                r#"init container "init": securityContext.runAsUser must be a non-zero UID (is unset)"#,
                r#"ephemeral container "debug": securityContext.runAsUser must be a non-zero UID (is unset)"#,
            ]
        );
    }

    #[test]
    fn denies_explicit_root_at_either_level() {
        let r = check(
            r#"
kind: Pod
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 0, runAsGroup: 0}
  containers:
  - name: app
    securityContext: {runAsNonRoot: false, runAsUser: 1000}
  - name: sidecar
"#,
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [
                r#"container "app": securityContext.runAsNonRoot must be true (is false)"#,
                r#"container "app": securityContext.runAsGroup must be a non-zero GID (is 0)"#,
                r#"container "sidecar": securityContext.runAsUser must be a non-zero UID (is 0)"#,
                r#"container "sidecar": securityContext.runAsGroup must be a non-zero GID (is 0)"#,
            ]
        );
    }

    #[test]
    fn container_value_overrides_a_root_pod_value() {
        let r = check(
            r#"
kind: Pod
spec:
  securityContext: {runAsNonRoot: false, runAsUser: 0, runAsGroup: 0}
  containers:
  - name: app
    securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}
"#,
            false,
        );
        assert!(r.outcome.is_allowed(), "{:?}", r.outcome);
    }

    #[test]
    fn mutation_fills_the_pod_level_with_the_defaults() {
        let r = check(
            r#"
kind: Pod
spec:
  initContainers: [{name: init}]
  containers: [{name: app}]
  ephemeralContainers: [{name: debug}]
"#,
            true,
        );
        assert_eq!(r.outcome, Outcome::default());
        let spec = r.object.spec.unwrap();
        let psc = spec.security_context.unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user, psc.run_as_group),
            (Some(true), Some(65532), Some(65532))
        );
        assert!(spec.containers[0].security_context.is_none());
    }

    #[test]
    fn mutation_uses_configured_ids() {
        let s = settings::<RunAsNonRoot>(r#"{"defaultUser": 1001, "defaultGroup": 2002}"#);
        let r = run::<RunAsNonRoot>(
            &request("team"),
            pod("kind: Pod\nspec:\n  containers: [{name: app}]\n"),
            &s,
            true,
        );
        assert!(r.outcome.is_allowed(), "{:?}", r.outcome);
        let psc = r.object.spec.unwrap().security_context.unwrap();
        assert_eq!(
            (psc.run_as_user, psc.run_as_group),
            (Some(1001), Some(2002))
        );
    }

    #[test]
    fn mutation_leaves_explicit_values_alone() {
        let r = check(
            r#"
kind: Pod
spec:
  securityContext: {runAsUser: 0}
  containers:
  - name: app
    securityContext: {runAsNonRoot: false, runAsGroup: 0}
  - name: ok
    securityContext: {runAsNonRoot: true, runAsGroup: 3000}
"#,
            true,
        );
        let spec = r.object.spec.as_ref().unwrap();
        let psc = spec.security_context.as_ref().unwrap();
        // runAsUser is set at pod level: kept. The other two are unset for
        // no container: "app" and "ok" each set their own.
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user, psc.run_as_group),
            (None, Some(0), None)
        );
        let app = spec.containers[0].security_context.as_ref().unwrap();
        assert_eq!(
            (app.run_as_non_root, app.run_as_user, app.run_as_group),
            (Some(false), None, Some(0))
        );
        assert_eq!(
            r.outcome.violations,
            [
                r#"container "app": securityContext.runAsNonRoot must be true (is false)"#,
                r#"container "app": securityContext.runAsUser must be a non-zero UID (is 0)"#,
                r#"container "app": securityContext.runAsGroup must be a non-zero GID (is 0)"#,
                r#"container "ok": securityContext.runAsUser must be a non-zero UID (is 0)"#,
            ]
        );
    }

    #[test]
    fn mutation_fills_pod_level_only_for_fields_some_container_lacks() {
        let r = check(
            r#"
kind: Pod
spec:
  containers:
  - name: a
    securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}
  - name: b
    securityContext: {runAsNonRoot: true, runAsUser: 2000}
"#,
            true,
        );
        assert!(r.outcome.is_allowed(), "{:?}", r.outcome);
        let psc = r.object.spec.unwrap().security_context.unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user, psc.run_as_group),
            (None, None, Some(65532))
        );
    }

    #[test]
    fn mutation_changes_nothing_on_a_compliant_pod() {
        let yaml = r#"
kind: Pod
spec:
  containers:
  - name: app
    securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}
"#;
        assert_eq!(check(yaml, true).object, pod(yaml));
    }

    #[test]
    fn settings_default_and_parse() {
        assert_eq!(
            settings::<RunAsNonRoot>("{}"),
            RunAsNonRootSettings::default()
        );
        assert_eq!(entry::<RunAsNonRoot>().validate_settings("null"), Ok(()));
        assert_eq!(
            settings::<RunAsNonRoot>(r#"{"defaultUser": 1000}"#),
            RunAsNonRootSettings {
                default_user: 1000,
                default_group: 65532
            }
        );
    }

    #[test]
    fn settings_reject_unknown_fields_and_root_or_negative_ids() {
        let e = entry::<RunAsNonRoot>();
        let err = e.validate_settings(r#"{"defaultUid": 1000}"#).unwrap_err();
        assert!(
            err.starts_with("invalid settings: unknown field `defaultUid`"),
            "{err}"
        );
        assert_eq!(
            e.validate_settings(r#"{"defaultUser": 0}"#),
            Err("invalid settings: defaultUser must be a positive ID (is 0)".into())
        );
        assert_eq!(
            e.validate_settings(r#"{"defaultGroup": -1}"#),
            Err("invalid settings: defaultGroup must be a positive ID (is -1)".into())
        );
    }
}
