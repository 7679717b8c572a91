//! `service-account-token`: a pod gets a Kubernetes API token only when it
//! opts in, with the label or annotation `optInKey: optInValue`.
//!
//! Unless the pod opts in:
//! - `spec.automountServiceAccountToken` must be explicitly `false`. Unset is
//!   a violation too: the ServiceAccount's own setting would then decide,
//!   and the webhook cannot see it.
//! - no volume may project a `serviceAccountToken`, which would mount a
//!   token by hand.
//!
//! An opted-in pod is allowed anything here.
//!
//! Mutation sets `automountServiceAccountToken: false` where it is unset
//! (never where it is `true`: that is denied). The API server's ServiceAccount
//! admission plugin runs before admission webhooks and, when the field is
//! unset, has already added its token volume (`kube-api-access-<suffix>`) and
//! the containers' mounts of it; mutation removes those too, leaving the pod
//! as the API server would have made it with the field `false`. A token volume
//! in a pod whose field was set is the user's own, and is denied instead.
//!
//! Settings:
//! - `optInKey` (default `agyn.io/kube-api-access`): the label or annotation
//!   key by which a pod opts in to API access; must not be empty;
//! - `optInValue` (default `"true"`): the value it must have.

use agyn_policy_sdk::k8s_openapi::api::core::v1::{Pod, Volume, VolumeMount};
use agyn_policy_sdk::{Outcome, Policy, Request, Severity, shown};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct ServiceAccountToken;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceAccountTokenSettings {
    pub opt_in_key: String,
    pub opt_in_value: String,
}

impl Default for ServiceAccountTokenSettings {
    fn default() -> Self {
        ServiceAccountTokenSettings {
            opt_in_key: "agyn.io/kube-api-access".to_string(),
            opt_in_value: "true".to_string(),
        }
    }
}

impl ServiceAccountTokenSettings {
    fn opted_in(&self, pod: &Pod) -> bool {
        let has = |map: Option<&BTreeMap<String, String>>| {
            map.and_then(|m| m.get(&self.opt_in_key)) == Some(&self.opt_in_value)
        };
        has(pod.metadata.labels.as_ref()) || has(pod.metadata.annotations.as_ref())
    }

    /// How every message tells the user the way out.
    fn unless_opted_in(&self) -> String {
        format!(
            "without the opt-in label or annotation {}: {:?}",
            self.opt_in_key, self.opt_in_value
        )
    }
}

/// The token volume the ServiceAccount admission plugin adds.
const INJECTED_VOLUME_PREFIX: &str = "kube-api-access-";

fn token_sources(volume: &Volume) -> impl Iterator<Item = usize> + '_ {
    let sources = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
    sources
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, s)| s.service_account_token.is_some())
        .map(|(index, _)| index)
}

fn is_injected(volume: &Volume) -> bool {
    volume.name.starts_with(INJECTED_VOLUME_PREFIX) && token_sources(volume).next().is_some()
}

impl Policy for ServiceAccountToken {
    const NAME: &'static str = "service-account-token";
    const DESCRIPTION: &'static str = "Pods do not mount a ServiceAccount token unless they opt in by a label; mutation sets automountServiceAccountToken to false.";
    const CATEGORY: &'static str = "Agyn";
    const SEVERITY: Severity = Severity::Medium;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"optInKey":{"type":"string"},"optInValue":{"type":"string"}}}"#;
    const MUTATING: bool = true;
    type Object = Pod;
    type Settings = ServiceAccountTokenSettings;

    fn check_settings(settings: &Self::Settings) -> Result<(), String> {
        if settings.opt_in_key.is_empty() {
            return Err("optInKey must not be empty".to_string());
        }
        Ok(())
    }

    fn validate(_: &Request, pod: &Pod, settings: &Self::Settings) -> Outcome {
        let mut out = Outcome::default();
        if settings.opted_in(pod) {
            return out;
        }
        let Some(spec) = pod.spec.as_ref() else {
            return out;
        };
        let unless = settings.unless_opted_in();
        let automount = spec.automount_service_account_token;
        if automount != Some(false) {
            out.deny(format!(
                "spec.automountServiceAccountToken must be false {unless} (is {})",
                shown(automount)
            ));
        }
        for volume in spec.volumes.iter().flatten() {
            for source in token_sources(volume) {
                out.deny(format!(
                    "volume {:?}: projected.sources[{source}].serviceAccountToken must be unset {unless} (is set)",
                    volume.name
                ));
            }
        }
        out
    }

    fn mutate(_: &Request, pod: &mut Pod, settings: &Self::Settings) -> bool {
        if settings.opted_in(pod) {
            return false;
        }
        let Some(spec) = pod.spec.as_mut() else {
            return false;
        };
        if spec.automount_service_account_token.is_some() {
            return false;
        }
        spec.automount_service_account_token = Some(false);

        let injected: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| is_injected(v))
            .map(|v| v.name.clone())
            .collect();
        if injected.is_empty() {
            return true;
        }
        retain_or_unset(&mut spec.volumes, |v| !injected.contains(&v.name));
        let keep = |m: &VolumeMount| !injected.contains(&m.name);
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            retain_or_unset(&mut c.volume_mounts, keep);
        }
        for c in spec.ephemeral_containers.iter_mut().flatten() {
            retain_or_unset(&mut c.volume_mounts, keep);
        }
        true
    }
}

/// A list left empty becomes unset, as it was before the plugin added to it.
fn retain_or_unset<T>(list: &mut Option<Vec<T>>, keep: impl Fn(&T) -> bool) {
    if let Some(items) = list {
        items.retain(keep);
        if items.is_empty() {
            *list = None;
        }
    }
}

#[cfg(feature = "export")]
agyn_policy_sdk::export_policies!(ServiceAccountToken);

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_policy_sdk::entry;
    use agyn_policy_sdk::testing::{Run, pod, request, run, settings};

    fn check(yaml: &str, mutate: bool) -> Run<Pod> {
        run::<ServiceAccountToken>(
            &request("agyn-workloads"),
            pod(yaml),
            &ServiceAccountTokenSettings::default(),
            mutate,
        )
    }

    const UNLESS: &str =
        r#"without the opt-in label or annotation agyn.io/kube-api-access: "true""#;

    fn automount(run: &Run<Pod>) -> Option<bool> {
        run.object
            .spec
            .as_ref()
            .unwrap()
            .automount_service_account_token
    }

    fn volume_names(run: &Run<Pod>) -> Vec<&str> {
        let volumes = run.object.spec.as_ref().unwrap().volumes.iter().flatten();
        volumes.map(|v| v.name.as_str()).collect()
    }

    /// A pod as admission webhooks receive it when automountServiceAccountToken
    /// is unset: the ServiceAccount plugin has added its volume and mounts.
    const INJECTED: &str = r#"
kind: Pod
spec:
  serviceAccountName: default
  volumes:
  - name: data
    emptyDir: {}
  - name: kube-api-access-x7k2p
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 3607, path: token}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items:
          - path: namespace
            fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}
  initContainers:
  - name: init
    volumeMounts:
    - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  containers:
  - name: app
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
"#;

    #[test]
    fn allows_explicit_false_and_other_projected_volumes() {
        let r = check(
            r#"
kind: Pod
spec:
  automountServiceAccountToken: false
  volumes:
  - name: config
    projected:
      sources: [{configMap: {name: app-config}}]
  containers: [{name: app}]
"#,
            false,
        );
        assert_eq!(r.outcome, Outcome::default());
    }

    #[test]
    fn denies_unset_and_true() {
        let unset = check("kind: Pod\nspec:\n  containers: [{name: app}]\n", false);
        assert_eq!(
            unset.outcome.violations,
            [format!(
                "spec.automountServiceAccountToken must be false {UNLESS} (is unset)"
            )]
        );
        let yes = check(
            "kind: Pod\nspec:\n  automountServiceAccountToken: true\n  containers: [{name: app}]\n",
            false,
        );
        assert_eq!(
            yes.outcome.violations,
            [format!(
                "spec.automountServiceAccountToken must be false {UNLESS} (is true)"
            )]
        );
    }

    #[test]
    fn denies_hand_written_token_volumes() {
        let r = check(
            r#"
kind: Pod
spec:
  automountServiceAccountToken: false
  volumes:
  - name: token
    projected:
      sources:
      - configMap: {name: kube-root-ca.crt}
      - serviceAccountToken: {path: token, audience: vault}
  containers: [{name: app}]
"#,
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [format!(
                r#"volume "token": projected.sources[1].serviceAccountToken must be unset {UNLESS} (is set)"#
            )]
        );
    }

    #[test]
    fn opted_in_pods_are_allowed_anything() {
        for metadata in [
            r#"{labels: {agyn.io/kube-api-access: "true"}}"#,
            r#"{annotations: {agyn.io/kube-api-access: "true"}}"#,
        ] {
            let yaml =
                INJECTED.replace("kind: Pod\n", &format!("kind: Pod\nmetadata: {metadata}\n"));
            let validated = check(&yaml, false);
            assert_eq!(validated.outcome, Outcome::default(), "{metadata}");
            let mutated = check(&yaml, true);
            assert_eq!(
                mutated.object,
                pod(&yaml),
                "mutation leaves {metadata} alone"
            );
        }
    }

    #[test]
    fn another_opt_in_value_is_no_opt_in() {
        let r = check(
            r#"
kind: Pod
metadata:
  labels: {agyn.io/kube-api-access: "false"}
  annotations: {agyn.io/kube-api-access: "yes"}
spec:
  automountServiceAccountToken: true
  containers: [{name: app}]
"#,
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [format!(
                "spec.automountServiceAccountToken must be false {UNLESS} (is true)"
            )]
        );
    }

    #[test]
    fn mutation_sets_false_and_removes_the_injected_volume() {
        let r = check(INJECTED, true);
        assert_eq!(r.outcome, Outcome::default());
        assert_eq!(automount(&r), Some(false));
        assert_eq!(volume_names(&r), ["data"]);
        let spec = r.object.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init[0].volume_mounts, None);
        let app_mounts = spec.containers[0].volume_mounts.as_ref().unwrap();
        assert_eq!(app_mounts.len(), 1);
        assert_eq!(app_mounts[0].name, "data");
    }

    #[test]
    fn mutation_without_injected_volume_only_sets_the_field() {
        let r = check(
            "kind: Pod\nspec:\n  containers: [{name: app}]\n  ephemeralContainers: [{name: debug}]\n",
            true,
        );
        assert_eq!(r.outcome, Outcome::default());
        assert_eq!(automount(&r), Some(false));
        assert_eq!(r.object.spec.unwrap().volumes, None);
    }

    #[test]
    fn mutation_leaves_explicit_values_and_their_volumes_alone() {
        // With the field set to true, the plugin's volume is what the user
        // asked for: deny, do not undo.
        let yaml = INJECTED.replace(
            "  serviceAccountName: default\n",
            "  serviceAccountName: default\n  automountServiceAccountToken: true\n",
        );
        let r = check(&yaml, true);
        assert_eq!(r.object, pod(&yaml));
        assert_eq!(
            r.outcome.violations,
            [
                format!("spec.automountServiceAccountToken must be false {UNLESS} (is true)"),
                format!(
                    r#"volume "kube-api-access-x7k2p": projected.sources[0].serviceAccountToken must be unset {UNLESS} (is set)"#
                ),
            ]
        );
        // With the field false the plugin adds nothing, so a volume of the
        // plugin's shape is hand-written.
        let yaml = yaml.replace(
            "automountServiceAccountToken: true",
            "automountServiceAccountToken: false",
        );
        let r = check(&yaml, true);
        assert_eq!(r.object, pod(&yaml));
        assert_eq!(volume_names(&r), ["data", "kube-api-access-x7k2p"]);
        assert_eq!(r.outcome.violations.len(), 1);
    }

    #[test]
    fn mutation_keeps_hand_written_token_volumes_by_other_names() {
        let r = check(
            r#"
kind: Pod
spec:
  volumes:
  - name: vault-token
    projected:
      sources: [{serviceAccountToken: {path: token, audience: vault}}]
  containers:
  - name: app
    volumeMounts: [{name: vault-token, mountPath: /var/run/secrets/vault}]
"#,
            true,
        );
        assert_eq!(automount(&r), Some(false));
        assert_eq!(volume_names(&r), ["vault-token"]);
        assert_eq!(
            r.outcome.violations,
            [format!(
                r#"volume "vault-token": projected.sources[0].serviceAccountToken must be unset {UNLESS} (is set)"#
            )]
        );
    }

    #[test]
    fn custom_opt_in_key_and_value() {
        let s = settings::<ServiceAccountToken>(
            r#"{"optInKey": "example.com/api", "optInValue": "enabled"}"#,
        );
        let opted_in = pod(r#"
kind: Pod
metadata: {annotations: {example.com/api: enabled}}
spec: {automountServiceAccountToken: true, containers: [{name: app}]}
"#);
        let default_key = pod(r#"
kind: Pod
metadata: {labels: {agyn.io/kube-api-access: "true"}}
spec: {automountServiceAccountToken: true, containers: [{name: app}]}
"#);
        let req = request("agyn-workloads");
        assert!(
            run::<ServiceAccountToken>(&req, opted_in, &s, false)
                .outcome
                .is_allowed()
        );
        assert_eq!(
            run::<ServiceAccountToken>(&req, default_key, &s, false)
                .outcome
                .violations,
            [
                r#"spec.automountServiceAccountToken must be false without the opt-in label or annotation example.com/api: "enabled" (is true)"#
            ]
        );
    }

    #[test]
    fn settings_default_and_parse() {
        let s = settings::<ServiceAccountToken>("{}");
        assert_eq!(s, ServiceAccountTokenSettings::default());
        assert_eq!(
            (s.opt_in_key.as_str(), s.opt_in_value.as_str()),
            ("agyn.io/kube-api-access", "true")
        );
    }

    #[test]
    fn settings_reject_unknown_fields_and_an_empty_key() {
        let e = entry::<ServiceAccountToken>();
        let err = e.validate_settings(r#"{"optInLabel": "x"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid settings: unknown field `optInLabel`"),
            "{err}"
        );
        assert_eq!(
            e.validate_settings(r#"{"optInKey": ""}"#),
            Err("invalid settings: optInKey must not be empty".into())
        );
    }
}
