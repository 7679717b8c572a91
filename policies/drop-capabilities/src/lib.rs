//! `drop-capabilities`: every container (of any kind) must drop all Linux
//! capabilities (`securityContext.capabilities.drop` contains `ALL`) and may
//! add back only allowed ones.
//!
//! Capability names are compared case-insensitively and without a `CAP_`
//! prefix: Kubernetes writes `NET_ADMIN`, and `CAP_NET_ADMIN` or `net_admin`
//! mean the same. The one exception is `ALL` in `drop`: container runtimes
//! recognise only `ALL` there (in any case), so `CAP_ALL` drops nothing.
//!
//! Mutation appends `ALL` to `drop` where it is missing, keeping the other
//! drops; an added capability that is not allowed is denied, never removed.
//!
//! Settings:
//! - `allowedCapabilities` (default empty): capabilities any container may
//!   add;
//! - `allowedCapabilitiesByNamespace` (default empty): namespace → further
//!   capabilities containers may add in that namespace.
//!
//! `ALL` is rejected in both: it would allow every capability.

use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
use agyn_policy_sdk::{Outcome, Policy, Request, Severity, containers, containers_mut, shown};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

pub struct DropCapabilities;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DropCapabilitiesSettings {
    pub allowed_capabilities: Vec<String>,
    pub allowed_capabilities_by_namespace: BTreeMap<String, Vec<String>>,
}

#[allow(
    clippy::derivable_impls,
    reason = "written out so that every policy states its defaults the same way"
)]
impl Default for DropCapabilitiesSettings {
    fn default() -> Self {
        DropCapabilitiesSettings {
            allowed_capabilities: Vec::new(),
            allowed_capabilities_by_namespace: BTreeMap::new(),
        }
    }
}

impl DropCapabilitiesSettings {
    /// The capabilities containers in `namespace` may add, normalised.
    fn allowed(&self, namespace: &str) -> BTreeSet<String> {
        let extra = self.allowed_capabilities_by_namespace.get(namespace);
        self.allowed_capabilities
            .iter()
            .chain(extra.into_iter().flatten())
            .map(|c| normalize(c))
            .collect()
    }
}

/// `net_admin` and `CAP_NET_ADMIN` as Kubernetes writes them: `NET_ADMIN`.
fn normalize(capability: &str) -> String {
    let upper = capability.to_ascii_uppercase();
    match upper.strip_prefix("CAP_") {
        Some(name) => name.to_string(),
        None => upper,
    }
}

fn drops_all(drop: Option<&Vec<String>>) -> bool {
    drop.is_some_and(|d| d.iter().any(|c| c.eq_ignore_ascii_case("ALL")))
}

fn check_allow_list(field: &str, list: &[String]) -> Result<(), String> {
    for capability in list {
        match normalize(capability).as_str() {
            "ALL" => {
                return Err(format!(
                    "{field} must not contain {capability:?}: it would allow every capability"
                ));
            }
            "" => return Err(format!("{field} must not contain an empty name")),
            _ => {}
        }
    }
    Ok(())
}

impl Policy for DropCapabilities {
    const NAME: &'static str = "drop-capabilities";
    const DESCRIPTION: &'static str = "Every container drops ALL capabilities and adds back only allowed ones; mutation adds the drop where unset.";
    const CATEGORY: &'static str = "Agyn";
    const SEVERITY: Severity = Severity::High;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"allowedCapabilities":{"type":"array","items":{"type":"string"}},"allowedCapabilitiesByNamespace":{"type":"object","additionalProperties":{"type":"array","items":{"type":"string"}}}}}"#;
    const MUTATING: bool = true;
    type Object = Pod;
    type Settings = DropCapabilitiesSettings;

    fn check_settings(settings: &Self::Settings) -> Result<(), String> {
        check_allow_list("allowedCapabilities", &settings.allowed_capabilities)?;
        for (namespace, list) in &settings.allowed_capabilities_by_namespace {
            let field = format!("allowedCapabilitiesByNamespace[{namespace:?}]");
            check_allow_list(&field, list)?;
        }
        Ok(())
    }

    fn validate(request: &Request, pod: &Pod, settings: &Self::Settings) -> Outcome {
        let allowed = settings.allowed(request.namespace());
        let mut out = Outcome::default();
        for c in containers(pod) {
            let capabilities = c.effective().capabilities;
            let drop = capabilities.and_then(|c| c.drop.as_ref());
            if !drops_all(drop) {
                out.deny_field(
                    &c,
                    "securityContext.capabilities.drop",
                    "a list containing ALL",
                    shown(drop),
                );
            }
            let add = capabilities.and_then(|c| c.add.as_ref());
            if let Some(add) = add.filter(|a| a.iter().any(|c| !allowed.contains(&normalize(c)))) {
                let required = if allowed.is_empty() {
                    "empty".to_string()
                } else {
                    let list: Vec<_> = allowed.iter().map(String::as_str).collect();
                    format!("limited to [{}]", list.join(", "))
                };
                out.deny_field(
                    &c,
                    "securityContext.capabilities.add",
                    required,
                    format!("{add:?}"),
                );
            }
        }
        out
    }

    fn mutate(_: &Request, pod: &mut Pod, _: &Self::Settings) -> bool {
        let mut changed = false;
        for mut c in containers_mut(pod) {
            let drop = c
                .security_context()
                .and_then(|sc| sc.capabilities.as_ref())
                .and_then(|caps| caps.drop.as_ref());
            if !drops_all(drop) {
                c.security_context_mut()
                    .capabilities
                    .get_or_insert_with(Default::default)
                    .drop
                    .get_or_insert_with(Vec::new)
                    .push("ALL".to_string());
                changed = true;
            }
        }
        changed
    }
}

#[cfg(feature = "export")]
agyn_policy_sdk::export_policies!(DropCapabilities);

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_policy_sdk::entry;
    use agyn_policy_sdk::k8s_openapi::api::core::v1::Capabilities;
    use agyn_policy_sdk::testing::{Run, pod, request, run, settings};

    fn check(namespace: &str, yaml: &str, settings_json: &str, mutate: bool) -> Run<Pod> {
        run::<DropCapabilities>(
            &request(namespace),
            pod(yaml),
            &settings::<DropCapabilities>(settings_json),
            mutate,
        )
    }

    /// The capabilities of every container, in the order of `containers`.
    fn capabilities(run: &Run<Pod>) -> Vec<Option<Capabilities>> {
        containers(&run.object)
            .map(|c| c.effective().capabilities.cloned())
            .collect()
    }

    fn caps(add: &[&str], drop: &[&str]) -> Option<Capabilities> {
        let list = |l: &[&str]| (!l.is_empty()).then(|| l.iter().map(|c| c.to_string()).collect());
        Some(Capabilities {
            add: list(add),
            drop: list(drop),
        })
    }

    const ALLOW_NET: &str = r#"{
        "allowedCapabilities": ["NET_BIND_SERVICE"],
        "allowedCapabilitiesByNamespace": {"net-tools": ["cap_net_admin"]}
    }"#;

    #[test]
    fn allows_drop_all_in_every_kind_of_container() {
        let r = check(
            "agyn-workloads",
            r#"
kind: Pod
spec:
  initContainers:
  - {name: init, securityContext: {capabilities: {drop: [all]}}}
  containers:
  - {name: app, securityContext: {capabilities: {drop: [NET_RAW, ALL], add: []}}}
  ephemeralContainers:
  - {name: debug, securityContext: {capabilities: {drop: [ALL]}}}
"#,
            "{}",
            false,
        );
        assert_eq!(r.outcome, Outcome::default());
    }

    #[test]
    fn denies_missing_drop_all_in_every_kind_of_container() {
        let r = check(
            "agyn-workloads",
            r#"
kind: Pod
spec:
  initContainers:
  - {name: init, securityContext: {capabilities: {drop: [NET_RAW]}}}
  containers:
  - {name: app}
  ephemeralContainers:
  - {name: debug, securityContext: {capabilities: {drop: [CAP_ALL]}}}
"#,
            "{}",
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [
                r#"init container "init": securityContext.capabilities.drop must be a list containing ALL (is ["NET_RAW"])"#,
                r#"container "app": securityContext.capabilities.drop must be a list containing ALL (is unset)"#,
                r#"ephemeral container "debug": securityContext.capabilities.drop must be a list containing ALL (is ["CAP_ALL"])"#,
            ]
        );
    }

    #[test]
    fn denies_any_added_capability_by_default() {
        let r = check(
            "agyn-workloads",
            r#"
kind: Pod
spec:
  containers:
  - name: app
    securityContext: {capabilities: {drop: [ALL], add: [NET_BIND_SERVICE, CAP_SYS_ADMIN]}}
"#,
            "{}",
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [
                r#"container "app": securityContext.capabilities.add must be empty (is ["NET_BIND_SERVICE", "CAP_SYS_ADMIN"])"#
            ]
        );
    }

    #[test]
    fn allows_configured_capabilities_in_any_spelling() {
        let yaml = r#"
kind: Pod
spec:
  containers:
  - name: app
    securityContext: {capabilities: {drop: [ALL], add: [cap_net_bind_service, NET_ADMIN]}}
"#;
        let r = check("net-tools", yaml, ALLOW_NET, false);
        assert_eq!(r.outcome, Outcome::default());
    }

    #[test]
    fn namespace_allowances_stay_in_their_namespace() {
        let yaml = r#"
kind: Pod
spec:
  initContainers:
  - name: init
    securityContext: {capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}
  containers:
  - name: app
    securityContext: {capabilities: {drop: [ALL], add: [NET_BIND_SERVICE, NET_ADMIN]}}
"#;
        let r = check("agyn-workloads", yaml, ALLOW_NET, false);
        assert_eq!(
            r.outcome.violations,
            [
                r#"container "app": securityContext.capabilities.add must be limited to [NET_BIND_SERVICE] (is ["NET_BIND_SERVICE", "NET_ADMIN"])"#
            ]
        );
    }

    #[test]
    fn mutation_adds_drop_all_and_keeps_everything_else() {
        let r = check(
            "agyn-workloads",
            r#"
kind: Pod
spec:
  initContainers:
  - {name: init, securityContext: {runAsUser: 1000}}
  containers:
  - {name: app, securityContext: {capabilities: {drop: [NET_RAW], add: [SYS_ADMIN]}}}
  - {name: ok, securityContext: {capabilities: {drop: [all]}}}
  ephemeralContainers:
  - {name: debug}
"#,
            "{}",
            true,
        );
        assert_eq!(
            capabilities(&r),
            [
                caps(&[], &["ALL"]),
                caps(&["SYS_ADMIN"], &["NET_RAW", "ALL"]),
                caps(&[], &["all"]),
                caps(&[], &["ALL"]),
            ]
        );
        let init = containers(&r.object).next().unwrap().effective();
        assert_eq!(init.run_as_user, Some(1000), "other fields are kept");
        assert_eq!(
            r.outcome.violations,
            [
                r#"container "app": securityContext.capabilities.add must be empty (is ["SYS_ADMIN"])"#
            ]
        );
    }

    #[test]
    fn mutated_pod_passes_validation() {
        let r = check(
            "agyn-workloads",
            "kind: Pod\nspec:\n  initContainers: [{name: init}]\n  containers: [{name: app}]\n",
            "{}",
            true,
        );
        assert_eq!(r.outcome, Outcome::default());
        assert_eq!(capabilities(&r), [caps(&[], &["ALL"]), caps(&[], &["ALL"])]);
    }

    #[test]
    fn settings_default_and_parse() {
        assert_eq!(
            settings::<DropCapabilities>("{}"),
            DropCapabilitiesSettings::default()
        );
        let s = settings::<DropCapabilities>(ALLOW_NET);
        assert_eq!(s.allowed_capabilities, ["NET_BIND_SERVICE"]);
        assert_eq!(
            s.allowed("net-tools").into_iter().collect::<Vec<_>>(),
            ["NET_ADMIN", "NET_BIND_SERVICE"]
        );
    }

    #[test]
    fn settings_reject_unknown_fields_and_all() {
        let e = entry::<DropCapabilities>();
        let err = e
            .validate_settings(r#"{"allowCapabilities": ["NET_ADMIN"]}"#)
            .unwrap_err();
        assert!(
            err.starts_with("invalid settings: unknown field `allowCapabilities`"),
            "{err}"
        );
        assert_eq!(
            e.validate_settings(r#"{"allowedCapabilities": ["NET_RAW", "all"]}"#),
            Err(r#"invalid settings: allowedCapabilities must not contain "all": it would allow every capability"#.into())
        );
        assert_eq!(
            e.validate_settings(r#"{"allowedCapabilitiesByNamespace": {"ops": ["CAP_ALL"]}}"#),
            Err(r#"invalid settings: allowedCapabilitiesByNamespace["ops"] must not contain "CAP_ALL": it would allow every capability"#.into())
        );
        assert_eq!(
            e.validate_settings(r#"{"allowedCapabilities": [""]}"#),
            Err("invalid settings: allowedCapabilities must not contain an empty name".into())
        );
    }
}
