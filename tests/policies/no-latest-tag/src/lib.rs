use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
use agyn_policy_sdk::{Outcome, Policy, Request, Severity, containers};
use serde::Deserialize;

/// Images must name a version: `:latest`, or no tag at all, can change
/// under a running workload.
pub struct NoLatestTag;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Registries whose images may float (mirrors of pinned images).
    pub exempt_registries: Vec<String>,
}

impl Policy for NoLatestTag {
    const NAME: &'static str = "no-latest-tag";
    const DESCRIPTION: &'static str = "Every container image names a version or a digest.";
    const CATEGORY: &'static str = "Supply chain";
    const SEVERITY: Severity = Severity::Medium;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"exemptRegistries":{"type":"array","items":{"type":"string","minLength":1}}}}"#;
    type Object = Pod;
    type Settings = Settings;

    fn check_settings(settings: &Settings) -> Result<(), String> {
        match settings.exempt_registries.iter().any(|r| r.is_empty()) {
            true => Err("exemptRegistries must not hold an empty name".into()),
            false => Ok(()),
        }
    }

    fn validate(_request: &Request, pod: &Pod, settings: &Settings) -> Outcome {
        let mut out = Outcome::default();
        // Init, regular and ephemeral containers, in Kubernetes' order.
        for c in containers(pod) {
            let exempt = settings
                .exempt_registries
                .iter()
                .any(|r| c.image.starts_with(r.as_str()));
            if !exempt && floating(c.image) {
                out.deny(format!(
                    "{c}: image must name a version or a digest (is {:?})",
                    c.image
                ));
            }
        }
        out
    }
}

/// `nginx`, `nginx:latest` and `host:5000/nginx` float; `nginx:1.27` and
/// `nginx@sha256:…` do not.
fn floating(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit_once('/').map_or(image, |(_, last)| last);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

agyn_policy_sdk::export_policies!(NoLatestTag);

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_policy_sdk::testing::{pod, request, run, settings};

    #[test]
    fn floating_tags_are_denied_in_every_kind_of_container() {
        let p = pod("
kind: Pod
spec:
  initContainers: [{name: init, image: busybox}]
  containers: [{name: app, image: 'registry:5000/nginx:1.27'}]
  ephemeralContainers: [{name: debug, image: 'alpine:latest'}]
");
        let result = run::<NoLatestTag>(&request("agyn"), p, &Settings::default(), false);
        assert_eq!(
            result.outcome.violations,
            [
                r#"init container "init": image must name a version or a digest (is "busybox")"#,
                r#"ephemeral container "debug": image must name a version or a digest (is "alpine:latest")"#,
            ]
        );
    }

    #[test]
    fn digests_and_exempt_registries_are_admitted() {
        let p = pod("
kind: Pod
spec:
  containers:
    - {name: app, image: 'nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'}
    - {name: mirror, image: 'mirror.example.com/envoy'}
");
        let exempt = settings::<NoLatestTag>(r#"{"exemptRegistries": ["mirror.example.com/"]}"#);
        assert!(
            run::<NoLatestTag>(&request("agyn"), p, &exempt, false)
                .outcome
                .is_allowed()
        );
    }
}
