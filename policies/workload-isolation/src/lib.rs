//! `workload-isolation`: Agyn agent pods run in the workload namespace, only
//! agent pods run there, and there they are kept away from the node and from
//! the cluster's default identity.
//!
//! - A pod matching `agentSelector` must be in `workloadNamespace`.
//! - A pod in `workloadNamespace` must match `agentSelector`, and must:
//!   - run as one of `allowedServiceAccounts` (an unset `serviceAccountName`
//!     means `default`, which is never allowed);
//!   - not set `hostNetwork`, `hostPID` or `hostIPC` to true;
//!   - have no `hostPath` volume;
//!   - have no container (of any kind) with a non-zero `hostPort`;
//!   - have no privileged container (of any kind).
//!
//! Mutation gives an agent pod in `workloadNamespace` that names no
//! ServiceAccount the first of `allowedServiceAccounts`. A named one, even
//! `default`, is left alone and judged. For a bare Pod (not a pod template)
//! the API server's ServiceAccount admission plugin has already set
//! `default` before webhooks run, so such pods must name their account.
//!
//! Settings:
//! - `agentSelector` (default `matchLabels: {agyn.io/role: agent}`): a
//!   Kubernetes label selector for agent pods; must not be empty;
//! - `workloadNamespace` (default `agyn-workloads`);
//! - `allowedServiceAccounts` (default `["agyn-agent"]`): must not be empty
//!   nor contain `default`.

use agyn_policy_sdk::k8s_openapi::api::core::v1::{Pod, PodSpec};
use agyn_policy_sdk::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use agyn_policy_sdk::{Outcome, Policy, Request, Severity, containers, selector_matches, shown};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct WorkloadIsolation;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadIsolationSettings {
    pub agent_selector: LabelSelector,
    pub workload_namespace: String,
    pub allowed_service_accounts: Vec<String>,
}

impl Default for WorkloadIsolationSettings {
    fn default() -> Self {
        WorkloadIsolationSettings {
            agent_selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "agyn.io/role".to_string(),
                    "agent".to_string(),
                )])),
                match_expressions: None,
            },
            workload_namespace: "agyn-workloads".to_string(),
            allowed_service_accounts: vec!["agyn-agent".to_string()],
        }
    }
}

const DEFAULT_SERVICE_ACCOUNT: &str = "default";
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// The ServiceAccount the pod names, through the current field or its
/// deprecated alias (which the API server copies when only it is set).
fn service_account(spec: &PodSpec) -> Option<&str> {
    [&spec.service_account_name, &spec.service_account]
        .into_iter()
        .filter_map(|name| name.as_deref())
        .find(|name| !name.is_empty())
}

/// A selector as `kubectl get -l` writes it: `agyn.io/role=agent,tier in (a,b)`.
fn describe(selector: &LabelSelector) -> String {
    let pairs = selector.match_labels.iter().flatten();
    let pairs = pairs.map(|(k, v)| format!("{k}={v}"));
    let exprs = selector.match_expressions.iter().flatten().map(|e| {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        }
    });
    pairs.chain(exprs).collect::<Vec<_>>().join(",")
}

impl Policy for WorkloadIsolation {
    const NAME: &'static str = "workload-isolation";
    const DESCRIPTION: &'static str = "Agent pods run only in the workload namespace, with an allowed ServiceAccount; mutation sets the ServiceAccount where unset.";
    const CATEGORY: &'static str = "Agyn";
    const SEVERITY: Severity = Severity::Critical;
    const SETTINGS_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"agentSelector":{"type":"object"},"workloadNamespace":{"type":"string"},"allowedServiceAccounts":{"type":"array","items":{"type":"string"}}}}"#;
    const MUTATING: bool = true;
    type Object = Pod;
    type Settings = WorkloadIsolationSettings;

    fn check_settings(settings: &Self::Settings) -> Result<(), String> {
        let selector = &settings.agent_selector;
        if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty())
        {
            return Err("agentSelector must not be empty: it would select every pod".into());
        }
        // An unknown operator selects nothing, which would let agent pods
        // run anywhere: reject a typo here rather than fail open.
        for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
            if !OPERATORS.contains(&e.operator.as_str()) {
                return Err(format!(
                    "agentSelector.matchExpressions[{i}].operator must be one of {} (is {:?})",
                    OPERATORS.join(", "),
                    e.operator
                ));
            }
        }
        if settings.workload_namespace.is_empty() {
            return Err("workloadNamespace must not be empty".into());
        }
        let accounts = &settings.allowed_service_accounts;
        if accounts.is_empty() {
            return Err("allowedServiceAccounts must not be empty".into());
        }
        for account in accounts {
            if account.is_empty() || account == DEFAULT_SERVICE_ACCOUNT {
                return Err(format!(
                    "allowedServiceAccounts must not contain {account:?}: a pod naming no ServiceAccount runs as \"default\""
                ));
            }
        }
        Ok(())
    }

    fn validate(request: &Request, pod: &Pod, settings: &Self::Settings) -> Outcome {
        let mut out = Outcome::default();
        let labels = pod.metadata.labels.as_ref();
        let agent = selector_matches(&settings.agent_selector, labels);
        let namespace = request.namespace();
        let workload_namespace = settings.workload_namespace.as_str();
        if namespace != workload_namespace {
            if agent {
                out.deny(format!(
                    "metadata.namespace must be {workload_namespace:?} for pods matching {} (is {namespace:?})",
                    describe(&settings.agent_selector)
                ));
            }
            return out;
        }
        if !agent {
            out.deny(format!(
                "metadata.labels must match {} in namespace {workload_namespace:?} (is {})",
                describe(&settings.agent_selector),
                shown(labels)
            ));
        }
        let Some(spec) = pod.spec.as_ref() else {
            return out;
        };

        let account = service_account(spec);
        if !account.is_some_and(|a| settings.allowed_service_accounts.iter().any(|s| s == a)) {
            let found = match account {
                Some(a) => format!("{a:?}"),
                None => format!("unset, meaning {DEFAULT_SERVICE_ACCOUNT:?}"),
            };
            out.deny(format!(
                "spec.serviceAccountName must be one of {:?} (is {found})",
                settings.allowed_service_accounts
            ));
        }

        for (field, value) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if value == Some(true) {
                out.deny(format!("spec.{field} must be false (is true)"));
            }
        }

        for volume in spec.volumes.iter().flatten() {
            if let Some(host_path) = &volume.host_path {
                out.deny(format!(
                    "volume {:?}: hostPath must be unset (is {:?})",
                    volume.name, host_path.path
                ));
            }
        }

        for c in containers(pod) {
            for (i, port) in c.ports.iter().enumerate() {
                if let Some(host_port) = port.host_port.filter(|&p| p != 0) {
                    out.deny_field(&c, &format!("ports[{i}].hostPort"), "unset or 0", host_port);
                }
            }
            if c.effective().privileged == Some(true) {
                out.deny_field(&c, "securityContext.privileged", "false or unset", true);
            }
        }
        out
    }

    fn mutate(request: &Request, pod: &mut Pod, settings: &Self::Settings) -> bool {
        if request.namespace() != settings.workload_namespace
            || !selector_matches(&settings.agent_selector, pod.metadata.labels.as_ref())
        {
            return false;
        }
        let Some(spec) = pod.spec.as_mut() else {
            return false;
        };
        if service_account(spec).is_some() {
            return false;
        }
        spec.service_account_name = settings.allowed_service_accounts.first().cloned();
        true
    }
}

#[cfg(feature = "export")]
agyn_policy_sdk::export_policies!(WorkloadIsolation);

#[cfg(test)]
mod tests {
    use super::*;
    use agyn_policy_sdk::entry;
    use agyn_policy_sdk::testing::{Run, pod, request, run, settings};

    const NS: &str = "agyn-workloads";

    fn check(namespace: &str, yaml: &str, mutate: bool) -> Run<Pod> {
        run::<WorkloadIsolation>(
            &request(namespace),
            pod(yaml),
            &WorkloadIsolationSettings::default(),
            mutate,
        )
    }

    fn account(run: &Run<Pod>) -> Option<&str> {
        run.object
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref()
    }

    const AGENT: &str = r#"
kind: Pod
metadata: {labels: {agyn.io/role: agent}}
spec:
  serviceAccountName: agyn-agent
  containers: [{name: app, ports: [{containerPort: 8080, hostPort: 0}]}]
"#;

    #[test]
    fn allows_an_agent_pod_in_the_workload_namespace() {
        assert_eq!(check(NS, AGENT, false).outcome, Outcome::default());
    }

    #[test]
    fn ignores_other_pods_in_other_namespaces() {
        let r = check(
            "monitoring",
            r#"
kind: Pod
metadata: {labels: {agyn.io/role: exporter}}
spec:
  hostNetwork: true
  volumes: [{name: proc, hostPath: {path: /proc}}]
  containers: [{name: node-exporter, securityContext: {privileged: true}}]
"#,
            false,
        );
        assert_eq!(r.outcome, Outcome::default());
    }

    #[test]
    fn denies_an_agent_pod_elsewhere() {
        let r = check("team-a", AGENT, true);
        assert_eq!(
            r.outcome.violations,
            [
                r#"metadata.namespace must be "agyn-workloads" for pods matching agyn.io/role=agent (is "team-a")"#
            ]
        );
        assert_eq!(r.object, pod(AGENT));
    }

    #[test]
    fn denies_other_pods_in_the_workload_namespace() {
        let unlabelled = AGENT.replace("metadata: {labels: {agyn.io/role: agent}}\n", "");
        assert_eq!(
            check(NS, &unlabelled, false).outcome.violations,
            [
                r#"metadata.labels must match agyn.io/role=agent in namespace "agyn-workloads" (is unset)"#
            ]
        );
        let other = AGENT.replace("agyn.io/role: agent", "app: web");
        assert_eq!(
            check(NS, &other, true).outcome.violations,
            [
                r#"metadata.labels must match agyn.io/role=agent in namespace "agyn-workloads" (is {"app": "web"})"#
            ]
        );
    }

    #[test]
    fn denies_service_accounts_that_are_not_allowed() {
        let cases = [
            ("serviceAccountName: default", r#""default""#),
            ("serviceAccountName: builder", r#""builder""#),
            ("serviceAccount: builder", r#""builder""#),
            ("serviceAccountName: \"\"", r#"unset, meaning "default""#),
        ];
        for (field, found) in cases {
            let yaml = AGENT.replace("serviceAccountName: agyn-agent", field);
            assert_eq!(
                check(NS, &yaml, false).outcome.violations,
                [format!(
                    r#"spec.serviceAccountName must be one of ["agyn-agent"] (is {found})"#
                )],
                "{field}"
            );
        }
        let deprecated_ok = AGENT.replace("serviceAccountName:", "serviceAccount:");
        assert!(check(NS, &deprecated_ok, false).outcome.is_allowed());
    }

    #[test]
    fn denies_host_access_of_every_kind() {
        let r = check(
            NS,
            r#"
kind: Pod
metadata: {labels: {agyn.io/role: agent}}
spec:
  serviceAccountName: agyn-agent
  hostNetwork: true
  hostPID: true
  hostIPC: true
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: docker, hostPath: {path: /var/run/docker.sock, type: Socket}}
  initContainers:
  - {name: init, securityContext: {privileged: true}}
  containers:
  - name: app
    ports: [{containerPort: 80}, {containerPort: 443, hostPort: 443}]
    securityContext: {privileged: false}
  ephemeralContainers:
  - {name: debug, ports: [{containerPort: 22, hostPort: 2222}], securityContext: {privileged: true}}
"#,
            false,
        );
        assert_eq!(
            r.outcome.violations,
            [
                "spec.hostNetwork must be false (is true)",
                "spec.hostPID must be false (is true)",
                "spec.hostIPC must be false (is true)",
                r#"volume "docker": hostPath must be unset (is "/var/run/docker.sock")"#,
                r#"init container "init": securityContext.privileged must be false or unset (is true)"#,
                r#"container "app": ports[1].hostPort must be unset or 0 (is 443)"#,
                r#"ephemeral container "debug": ports[0].hostPort must be unset or 0 (is 2222)"#,
                r#"ephemeral container "debug": securityContext.privileged must be false or unset (is true)"#,
            ]
        );
    }

    #[test]
    fn explicit_false_host_namespaces_are_fine() {
        let yaml = AGENT.replace(
            "  serviceAccountName",
            "  hostNetwork: false\n  hostPID: false\n  hostIPC: false\n  serviceAccountName",
        );
        assert_eq!(check(NS, &yaml, false).outcome, Outcome::default());
    }

    #[test]
    fn mutation_gives_an_agent_pod_the_first_allowed_account() {
        let yaml = AGENT.replace("  serviceAccountName: agyn-agent\n", "");
        let r = check(NS, &yaml, true);
        assert_eq!(r.outcome, Outcome::default());
        assert_eq!(account(&r), Some("agyn-agent"));

        let s = settings::<WorkloadIsolation>(
            r#"{"allowedServiceAccounts": ["agyn-runner", "agyn-agent"]}"#,
        );
        let r = run::<WorkloadIsolation>(&request(NS), pod(&yaml), &s, true);
        assert_eq!(account(&r), Some("agyn-runner"));
        assert!(r.outcome.is_allowed());
    }

    #[test]
    fn mutation_leaves_named_accounts_and_other_pods_alone() {
        for explicit in ["serviceAccountName: default", "serviceAccount: builder"] {
            let yaml = AGENT.replace("serviceAccountName: agyn-agent", explicit);
            let r = check(NS, &yaml, true);
            assert_eq!(r.object, pod(&yaml), "{explicit}");
            assert!(!r.outcome.is_allowed(), "{explicit}");
        }
        let no_account = AGENT.replace("  serviceAccountName: agyn-agent\n", "");
        let outside = check("team-a", &no_account, true);
        assert_eq!(outside.object, pod(&no_account));
        let not_agent = no_account.replace("agyn.io/role: agent", "app: web");
        let r = check(NS, &not_agent, true);
        assert_eq!(account(&r), None);
        assert_eq!(r.outcome.violations.len(), 2);
    }

    #[test]
    fn custom_selector_and_namespace() {
        let s = settings::<WorkloadIsolation>(
            r#"{
                "agentSelector": {"matchExpressions": [
                    {"key": "example.com/kind", "operator": "In", "values": ["agent", "runner"]},
                    {"key": "example.com/legacy", "operator": "DoesNotExist"}
                ]},
                "workloadNamespace": "sandbox"
            }"#,
        );
        let runner = pod(r#"
kind: Pod
metadata: {labels: {example.com/kind: runner}}
spec: {serviceAccountName: agyn-agent, containers: [{name: app}]}
"#);
        let verdict = |ns: &str, pod: Pod| {
            run::<WorkloadIsolation>(&request(ns), pod, &s, false)
                .outcome
                .violations
        };
        assert!(verdict("sandbox", runner.clone()).is_empty());
        assert_eq!(
            verdict("agyn-workloads", runner),
            [
                r#"metadata.namespace must be "sandbox" for pods matching example.com/kind in (agent,runner),!example.com/legacy (is "agyn-workloads")"#
            ]
        );
        assert!(verdict("agyn-workloads", pod(AGENT)).is_empty());
    }

    #[test]
    fn settings_default_and_parse() {
        let s = settings::<WorkloadIsolation>("{}");
        assert_eq!(s, WorkloadIsolationSettings::default());
        assert_eq!(describe(&s.agent_selector), "agyn.io/role=agent");
        assert_eq!(s.workload_namespace, "agyn-workloads");
        assert_eq!(s.allowed_service_accounts, ["agyn-agent"]);
    }

    #[test]
    fn settings_reject_unknown_fields_and_unsafe_values() {
        let e = entry::<WorkloadIsolation>();
        let err = e.validate_settings(r#"{"namespace": "x"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid settings: unknown field `namespace`"),
            "{err}"
        );
        let cases = [
            (
                r#"{"allowedServiceAccounts": []}"#,
                "allowedServiceAccounts must not be empty",
            ),
            (
                r#"{"allowedServiceAccounts": ["agyn-agent", "default"]}"#,
                r#"allowedServiceAccounts must not contain "default": a pod naming no ServiceAccount runs as "default""#,
            ),
            (
                r#"{"agentSelector": {"matchLabels": {}}}"#,
                "agentSelector must not be empty: it would select every pod",
            ),
            (
                r#"{"agentSelector": {"matchExpressions": [{"key": "role", "operator": "in", "values": ["agent"]}]}}"#,
                r#"agentSelector.matchExpressions[0].operator must be one of In, NotIn, Exists, DoesNotExist (is "in")"#,
            ),
            (
                r#"{"workloadNamespace": ""}"#,
                "workloadNamespace must not be empty",
            ),
        ];
        for (json, message) in cases {
            assert_eq!(
                e.validate_settings(json),
                Err(format!("invalid settings: {message}")),
                "{json}"
            );
        }
    }
}
