//! The API server's own admission policies as a fallback for the webhook:
//! a policy set's built-in policies as ValidatingAdmissionPolicies (and,
//! on request, their mutations as MutatingAdmissionPolicies), which the API
//! server runs in process, so they keep enforcing while the webhook is
//! down.
//!
//! The CEL of each built-in policy is data (`cel/`, see [`template`]); this
//! module wraps it in policies and bindings with the set's matching,
//! exemptions and modes. Settings are written into the expressions: a
//! policy with `paramKind` denies everything while its parameters are
//! missing, bootstrap requests included. A component of the set's own is
//! not translated; [`Fallback::skipped`] names it with the reason.

mod cel;
mod template;

use crate::admission::registration::{self, Rule};
use crate::config::{FailurePolicy, Mode, Policy, PolicySet};
use crate::engine::builtin_sha256;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
    MutatingAdmissionPolicyBindingSpec, MutatingAdmissionPolicySpec, NamedRuleWithOperations,
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde_json::Value;
use std::collections::BTreeMap;
use template::Translation;

/// Where the generated policies are deployed, beyond what the set says.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also generate MutatingAdmissionPolicies for the mutations.
    pub mutations: bool,
    /// Namespaces never judged beside the set's exemptions: the webhook's
    /// own, and any the deployment excludes. kube-system always is.
    pub exclude_namespaces: Vec<String>,
    /// A namespace label that opts a namespace out, as `(key, value)`.
    pub opt_out_label: Option<(String, String)>,
}

/// The generated objects, in the order to apply them.
#[derive(Debug, Default)]
pub struct Fallback {
    /// Policies, each followed by its bindings, as JSON.
    pub objects: Vec<Value>,
    /// Policies of the set that have no fallback, and why.
    pub skipped: Vec<Skipped>,
    /// Where a fallback enforces less, or otherwise, than the webhook.
    pub notes: Vec<String>,
}

#[derive(Debug)]
pub struct Skipped {
    pub policy: String,
    pub reason: String,
}

/// The label every generated object carries, whose value is the policy's
/// name in the set: how an operator finds (and deletes) them.
pub const POLICY_LABEL: &str = "agyn.io/fallback-for";

/// The API server's own admission policies for what `set` enforces.
pub fn generate(set: &PolicySet, options: &Options) -> Fallback {
    let mut out = Fallback::default();
    // A registry module is never built in: only the reason differs.
    for policy in &set.unavailable {
        out.skipped.push(Skipped {
            policy: policy.name.clone(),
            reason: format!("not a built-in policy, and {}", policy.error()),
        });
    }
    for policy in &set.policies {
        let builtin = set.components[policy.component].sha256() == builtin_sha256();
        let translation = if builtin {
            template::translate(&policy.inner, &policy.settings)
        } else {
            None
        };
        let translation = match translation {
            Some(Ok(translation)) => translation,
            Some(Err(e)) => {
                out.skipped.push(Skipped {
                    policy: policy.name.clone(),
                    reason: e,
                });
                continue;
            }
            None => {
                out.skipped.push(Skipped {
                    policy: policy.name.clone(),
                    reason: "not a built-in policy: its component's code has no CEL form".into(),
                });
                continue;
            }
        };
        let settings = settings(policy);
        let version = settings.get("version").and_then(Value::as_str);
        if policy.inner == "pod-security"
            && let Some(version) = version.filter(|v| *v != "latest")
        {
            out.notes.push(format!(
                "{}: the fallback checks the current Pod Security Standards, not those of {version}",
                policy.name
            ));
        }
        let matching = Matching {
            namespaces: set_namespaces(set, policy),
            conditions: match_conditions(set, policy),
        };
        out.objects
            .extend(validating(policy, &translation, &matching, options));
        if options.mutations && registration::mutates(set, policy) {
            out.objects
                .extend(mutating(policy, translation, matching, options));
        }
    }
    out
}

fn settings(policy: &Policy) -> serde_json::Map<String, Value> {
    match serde_json::from_str(&policy.settings) {
        Ok(Value::Object(map)) => map,
        _ => Default::default(),
    }
}

/// The name of a generated object: `agyn-admission.<policy>`, the
/// policy's name made a DNS subdomain.
fn name(policy: &Policy) -> String {
    let mut name: String = policy
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(200);
    format!("agyn-admission.{}", name.trim_matches('-'))
}

fn metadata(policy: &Policy, name: String) -> ObjectMeta {
    let label: String = policy
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    ObjectMeta {
        name: Some(name),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "agyn-admission".to_string(),
            ),
            (
                POLICY_LABEL.to_string(),
                label
                    .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                    .into(),
            ),
        ])),
        ..Default::default()
    }
}

/// What the set says a policy judges, beyond its rules: its namespaces,
/// exempt users and label selector.
struct Matching {
    namespaces: LabelSelector,
    conditions: Vec<MatchCondition>,
}

/// The policy's requests as the API server's rules.
fn resource_rules(rules: Vec<Rule>) -> Vec<NamedRuleWithOperations> {
    rules
        .into_iter()
        .map(|r| NamedRuleWithOperations {
            api_groups: Some(r.api_groups),
            api_versions: Some(r.api_versions),
            operations: Some(r.operations),
            resources: Some(r.resources),
            scope: Some(r.scope.into()),
            resource_names: None,
        })
        .collect()
}

/// The set's namespaces for the policy: its exemptions and the policy's
/// own match, by the name label every namespace carries.
fn set_namespaces(set: &PolicySet, policy: &Policy) -> LabelSelector {
    let mut excluded: Vec<String> = set.exempt_namespaces.clone();
    excluded.extend(policy.matching.exclude_namespaces().iter().cloned());
    let mut requirements = vec![name_requirement("NotIn", excluded)];
    if !policy.matching.namespaces().is_empty() {
        requirements.push(name_requirement(
            "In",
            policy.matching.namespaces().to_vec(),
        ));
    }
    LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    }
}

/// Where the deployment lets the bindings act: never in kube-system, the
/// excluded namespaces, or one opted out.
fn deployed_namespaces(options: &Options) -> LabelSelector {
    let mut excluded = vec!["kube-system".to_string()];
    for namespace in &options.exclude_namespaces {
        if !excluded.contains(namespace) {
            excluded.push(namespace.clone());
        }
    }
    let mut requirements = vec![name_requirement("NotIn", excluded)];
    if let Some((key, value)) = &options.opt_out_label {
        requirements.push(LabelSelectorRequirement {
            key: key.clone(),
            operator: "NotIn".into(),
            values: Some(vec![value.clone()]),
        });
    }
    LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    }
}

fn name_requirement(operator: &str, mut names: Vec<String>) -> LabelSelectorRequirement {
    names.sort();
    names.dedup();
    LabelSelectorRequirement {
        key: "kubernetes.io/metadata.name".into(),
        operator: operator.into(),
        values: Some(names),
    }
}

/// The labels of the pod, whatever kind carries it; match conditions
/// cannot use the policy's variables.
const POD_LABELS: &str = "(object.kind == 'Pod' ? object.metadata : \
     object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.?metadata.orValue({}) : \
     object.spec.template.?metadata.orValue({})).?labels.orValue({})";

/// The set's exempt users and the policy's label selector.
fn match_conditions(set: &PolicySet, policy: &Policy) -> Vec<MatchCondition> {
    let mut conditions = Vec::new();
    if !set.exempt_usernames.is_empty() {
        conditions.push(MatchCondition {
            name: "not-an-exempt-user".into(),
            expression: format!(
                "!(request.userInfo.username in {})",
                cel::literal(&Value::from(set.exempt_usernames.clone()))
            ),
        });
    }
    if let Some(selector) = policy.matching.label_selector() {
        conditions.push(MatchCondition {
            name: "pod-labels-match".into(),
            expression: cel::selector(selector, POD_LABELS),
        });
    }
    conditions
}

/// A mutation runs before the API server validates the object: one
/// without a pod spec (a template-less ReplicationController) is left for
/// that validation to refuse, not failed by a CEL error on the way.
const HAS_CONTAINERS: &str = "(object.kind == 'Pod' ? object.?spec : \
     object.kind == 'CronJob' ? object.?spec.?jobTemplate.?spec.?template.?spec : \
     object.?spec.?template.?spec).?containers.orValue(null) != null";

fn actions(mode: Mode) -> Vec<String> {
    vec![
        match mode {
            Mode::Enforce => "Deny",
            Mode::Warn => "Warn",
            Mode::Audit => "Audit",
        }
        .to_string(),
    ]
}

fn failure_policy(policy: &Policy) -> String {
    match policy.failure_policy {
        FailurePolicy::Fail => "Fail",
        FailurePolicy::Ignore => "Ignore",
    }
    .into()
}

/// Each message names the policy first, as the webhook's do. A computed
/// message over 4000 bytes is cut to 1000 characters (at most 4000 bytes):
/// over about 5 KiB the API server drops it for `failed expression: ...`.
fn prefixed(policy: &Policy, validation: &Validation) -> Validation {
    let prefix = format!("[{}] ", policy.name);
    Validation {
        message: validation.message.as_ref().map(|m| format!("{prefix}{m}")),
        message_expression: validation.message_expression.as_ref().map(|m| {
            format!(
                "[{} + ({m})].map(m, bytes(m).size() > 4000 ? m.substring(0, 1000) + ' ...' : m)[0]",
                cel::string(&prefix)
            )
        }),
        ..validation.clone()
    }
}

/// A ValidatingAdmissionPolicy and its bindings. A pod-security policy
/// that only warns about workload templates gets a second binding for
/// them, with Warn.
fn validating(
    policy: &Policy,
    translation: &Translation,
    matching: &Matching,
    options: &Options,
) -> Vec<Value> {
    let name = name(policy);
    let rules = resource_rules(registration::merge(registration::requests(policy, false)));
    let vap = ValidatingAdmissionPolicy {
        metadata: metadata(policy, name.clone()),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some(failure_policy(policy)),
            match_constraints: Some(MatchResources {
                resource_rules: Some(rules.clone()),
                namespace_selector: Some(matching.namespaces.clone()),
                ..Default::default()
            }),
            match_conditions: Some(
                [&matching.conditions[..], &translation.match_conditions[..]].concat(),
            )
            .filter(|c| !c.is_empty()),
            variables: Some(translation.variables.clone()),
            validations: Some(
                translation
                    .validations
                    .iter()
                    .map(|v| prefixed(policy, v))
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    };
    let binding = |suffix: &str, actions: Vec<String>, rules: Option<Vec<_>>| {
        ValidatingAdmissionPolicyBinding {
            metadata: metadata(policy, format!("{name}{suffix}")),
            spec: ValidatingAdmissionPolicyBindingSpec {
                policy_name: name.clone(),
                validation_actions: actions,
                match_resources: Some(MatchResources {
                    namespace_selector: Some(deployed_namespaces(options)),
                    resource_rules: rules,
                    ..Default::default()
                }),
                param_ref: None,
            },
        }
    };
    let mut out = vec![to_json(&vap)];
    let templates_warn = policy.inner == "pod-security"
        && policy.mode == Mode::Enforce
        && settings(policy)
            .get("workloadTemplates")
            .and_then(Value::as_str)
            != Some("deny");
    if templates_warn {
        let (pods, workloads): (Vec<_>, Vec<_>) = rules.into_iter().partition(|r| {
            r.api_groups.as_deref() == Some(&[String::new()])
                && r.resources.iter().flatten().all(|r| r.starts_with("pods"))
        });
        out.push(to_json(&binding("", actions(Mode::Enforce), Some(pods))));
        if !workloads.is_empty() {
            out.push(to_json(&binding(
                ".templates",
                actions(Mode::Warn),
                Some(workloads),
            )));
        }
    } else {
        out.push(to_json(&binding("", actions(policy.mode), None)));
    }
    out
}

/// A MutatingAdmissionPolicy and its binding.
fn mutating(
    policy: &Policy,
    translation: Translation,
    matching: Matching,
    options: &Options,
) -> Vec<Value> {
    if translation.mutations.is_empty() {
        return Vec::new();
    }
    let name = name(policy);
    let rules = resource_rules(registration::merge(registration::requests(policy, true)));
    let map = MutatingAdmissionPolicy {
        metadata: metadata(policy, name.clone()),
        spec: Some(MutatingAdmissionPolicySpec {
            failure_policy: Some(failure_policy(policy)),
            match_constraints: Some(MatchResources {
                resource_rules: Some(rules),
                namespace_selector: Some(matching.namespaces),
                ..Default::default()
            }),
            // The policy's own conditions are its validation's (which
            // objects pod-security judges); its mutations apply to all.
            match_conditions: Some(
                [
                    matching.conditions,
                    vec![MatchCondition {
                        name: "has-a-pod-spec".into(),
                        expression: HAS_CONTAINERS.into(),
                    }],
                ]
                .concat(),
            ),
            variables: Some(translation.mutation_variables),
            mutations: Some(translation.mutations),
            // A later policy's mutation may leave something an earlier one
            // fills (the webhook runs them in the set's order).
            reinvocation_policy: Some("IfNeeded".into()),
            param_kind: None,
        }),
    };
    let binding = MutatingAdmissionPolicyBinding {
        metadata: metadata(policy, name.clone()),
        spec: Some(MutatingAdmissionPolicyBindingSpec {
            policy_name: Some(name),
            match_resources: Some(MatchResources {
                namespace_selector: Some(deployed_namespaces(options)),
                ..Default::default()
            }),
            param_ref: None,
        }),
    };
    vec![to_json(&map), to_json(&binding)]
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("Kubernetes objects serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::engine::{Engine, EngineOptions};

    const SET: &str = r#"
apiVersion: agyn.io/v1alpha1
kind: PolicySet
exemptions:
  usernames: ["system:serviceaccount:ops:breakglass"]
policies:
  - name: pod-security
    mutate: true
    settings: {level: baseline}
    match:
      namespaces: [agyn]
      labelSelector: {matchLabels: {tier: web}}
  - name: readonly-root-filesystem
    mode: warn
    mutate: false
  - name: own
    module: ../tests/fixtures/run-as-non-root-0.1.0.wasm
    policy: run-as-non-root
"#;

    /// Generated once: loading the set compiles the built-in component.
    fn generated() -> &'static Fallback {
        static FALLBACK: std::sync::LazyLock<Fallback> = std::sync::LazyLock::new(|| {
            let engine = Engine::new(&EngineOptions::default()).unwrap();
            let set =
                PolicySet::from_text(SET, &Source::Builtin, &engine, &crate::config::NoRegistry)
                    .unwrap();
            generate(
                &set,
                &Options {
                    mutations: true,
                    exclude_namespaces: vec!["agyn-system".into()],
                    opt_out_label: None,
                },
            )
        });
        &FALLBACK
    }

    fn of_kind<'a>(fallback: &'a Fallback, kind: &str) -> Vec<&'a Value> {
        let kinds = fallback.objects.iter();
        kinds.filter(|o| o["kind"] == kind).collect()
    }

    #[test]
    fn the_sets_matching_exemptions_and_modes_become_the_api_servers() {
        let fallback = generated();
        let policies = of_kind(fallback, "ValidatingAdmissionPolicy");
        assert_eq!(policies.len(), 2);
        let pss = policies[0];
        let selector = &pss["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"];
        assert_eq!(selector[0]["operator"], "NotIn");
        assert_eq!(selector[0]["values"], serde_json::json!(["kube-system"]));
        assert_eq!(selector[1]["operator"], "In");
        assert_eq!(selector[1]["values"], serde_json::json!(["agyn"]));
        let conditions = pss["spec"]["matchConditions"].to_string();
        assert!(conditions.contains("system:serviceaccount:ops:breakglass"));
        assert!(
            conditions.contains("'tier' in (object.kind"),
            "{conditions}"
        );
        // Baseline only: none of restricted's checks.
        assert!(
            !pss["spec"]["validations"]
                .to_string()
                .contains("runAsNonRoot")
        );

        // Templates only warned about (the default), pods denied: two
        // bindings. The warn-mode policy: one binding that warns.
        let bindings = of_kind(fallback, "ValidatingAdmissionPolicyBinding");
        let actions: Vec<_> = bindings
            .iter()
            .map(|b| {
                (
                    b["metadata"]["name"].as_str().unwrap(),
                    b["spec"]["validationActions"].clone(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            [
                ("agyn-admission.pod-security", serde_json::json!(["Deny"])),
                (
                    "agyn-admission.pod-security.templates",
                    serde_json::json!(["Warn"])
                ),
                (
                    "agyn-admission.readonly-root-filesystem",
                    serde_json::json!(["Warn"])
                ),
            ]
        );
        for binding in bindings {
            let never =
                &binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0];
            assert_eq!(
                never["values"],
                serde_json::json!(["agyn-system", "kube-system"])
            );
        }

        // Only pod-security mutates here (readonly-root-filesystem warns);
        // its mutation runs on workload templates too, and on pods only
        // at creation.
        let mutating = of_kind(fallback, "MutatingAdmissionPolicy");
        assert_eq!(mutating.len(), 1);
        let rules = mutating[0]["spec"]["matchConstraints"]["resourceRules"].to_string();
        assert!(rules.contains("deployments") && !rules.contains("ephemeralcontainers"));

        assert_eq!(fallback.skipped.len(), 1);
        assert_eq!(fallback.skipped[0].policy, "own");
    }

    #[test]
    fn messages_name_the_policy_and_stay_under_the_api_servers_limit() {
        let fallback = generated();
        let policy = of_kind(fallback, "ValidatingAdmissionPolicy")[1];
        let message = policy["spec"]["validations"][0]["messageExpression"]
            .as_str()
            .unwrap();
        assert!(
            message.starts_with("['[readonly-root-filesystem] ' + ("),
            "{message}"
        );
        assert!(
            message.ends_with("bytes(m).size() > 4000 ? m.substring(0, 1000) + ' ...' : m)[0]")
        );
    }
}
