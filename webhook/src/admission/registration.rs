//! Which requests the API server must send for a policy: the rules of the
//! webhook configurations (`agyn-admission rules`) and of the API server's
//! own admission policies (`agyn-admission fallback`), from the policy's
//! metadata and the set's match.

use super::kinds::{self, WorkloadKind};
use crate::config::{Mode, Policy, PolicySet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One rule, in the form webhook configurations and admission policies
/// take.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub operations: Vec<String>,
    pub resources: Vec<String>,
    pub scope: &'static str,
}

/// Group, version, resource and operation: the unit rules are merged from.
pub type Request = (String, String, String, String);

/// Whether the set lets `policy` change objects: an enforcing policy with
/// mutation on whose component says it mutates.
pub fn mutates(set: &PolicySet, policy: &Policy) -> bool {
    policy.mutate
        && policy.mode == Mode::Enforce
        && set.metadata(policy).is_some_and(|m| m.mutating)
}

/// Every request `policy` judges (`mutating`: may change), within the
/// set's match: its rules' resources, and for a pod policy the pod
/// templates of the workload kinds and (validated only) the
/// `pods/ephemeralcontainers` subresource.
pub fn requests(policy: &Policy, mutating: bool) -> BTreeSet<Request> {
    let mut out = BTreeSet::new();
    let kinds_allowed = |kind: &str| policy.matching.names_kind(kind);
    for rule in &policy.rules {
        for operation in policy.matching.operations() {
            let operation = operation.as_str();
            if !rule.covers_operation(operation) {
                continue;
            }
            for group in &rule.api_groups {
                for version in &rule.api_versions {
                    for resource in &rule.resources {
                        // A Pod's spec is immutable once created: the host
                        // never mutates a Pod on UPDATE.
                        if mutating
                            && group.is_empty()
                            && resource == "pods"
                            && operation == "UPDATE"
                        {
                            continue;
                        }
                        if kind_of(group, resource).is_none_or(kinds_allowed) {
                            out.insert((
                                group.clone(),
                                version.clone(),
                                resource.clone(),
                                operation.to_string(),
                            ));
                        }
                    }
                }
            }
            if !rule.names_pods() {
                continue;
            }
            for kind in WorkloadKind::all().filter(|k| *k != WorkloadKind::Pod) {
                if !kinds_allowed(kind.kind()) {
                    continue;
                }
                let (group, version, known) =
                    kinds::by_name(kind.kind()).expect("workload kinds are typed");
                out.insert((
                    group.into(),
                    version.into(),
                    known.resource.into(),
                    operation.into(),
                ));
            }
            if !mutating && operation == "UPDATE" && kinds_allowed("Pod") {
                out.insert((
                    "".into(),
                    "v1".into(),
                    "pods/ephemeralcontainers".into(),
                    "UPDATE".into(),
                ));
            }
        }
    }
    out
}

/// The kind of a resource, when k8s-openapi types it (`None` for custom
/// resources and wildcards, which a set's kinds cannot narrow here).
fn kind_of(group: &str, resource: &str) -> Option<&'static str> {
    kinds::kind_of_resource(group, resource.split('/').next().unwrap_or(resource))
}

/// Rules in the chart's shape: one per group, version and operations, with
/// the resources sorted.
pub fn merge(requests: BTreeSet<Request>) -> Vec<Rule> {
    let mut by_resource: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for (group, version, resource, operation) in requests {
        by_resource
            .entry((group, version, resource))
            .or_default()
            .insert(operation);
    }
    let mut grouped: BTreeMap<(String, String, Vec<String>, &'static str), Vec<String>> =
        BTreeMap::new();
    for ((group, version, resource), operations) in by_resource {
        let scope = scope(&group, &resource);
        grouped
            .entry((group, version, operations.into_iter().collect(), scope))
            .or_default()
            .push(resource);
    }
    grouped
        .into_iter()
        .map(|((group, version, operations, scope), resources)| Rule {
            api_groups: vec![group],
            api_versions: vec![version],
            operations,
            resources,
            scope,
        })
        .collect()
}

fn scope(group: &str, resource: &str) -> &'static str {
    let base = resource.split('/').next().unwrap_or(resource);
    match kinds::kind_of_resource(group, base).and_then(kinds::by_name) {
        Some((_, _, known)) if known.namespaced => "Namespaced",
        Some(_) => "Cluster",
        None => "*",
    }
}
