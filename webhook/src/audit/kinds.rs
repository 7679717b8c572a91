//! Which kinds an audit lists: every resource the policy set judges on
//! CREATE, as `rules` registers them with the API server, in the order
//! that lets an owner be judged before what it owns.

use crate::admission::kinds::{self, WorkloadKind};
use crate::admission::registration;
use crate::config::PolicySet;
use kube::core::{ApiResource, GroupVersionKind};
use std::collections::BTreeSet;

/// One kind to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditedKind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl AuditedKind {
    /// Owners first: a CronJob before its Jobs, a Deployment before its
    /// ReplicaSets, every workload before the Pods, so that what an owner
    /// controls can be left to the owner's report.
    fn rank(&self) -> u8 {
        match WorkloadKind::from_group_kind(&self.resource.group, &self.resource.kind) {
            Some(WorkloadKind::Pod) => 2,
            Some(WorkloadKind::Job | WorkloadKind::ReplicaSet) => 1,
            _ => 0,
        }
    }

    /// Pods and pod templates: what an owner's report covers.
    pub fn is_workload(&self) -> bool {
        WorkloadKind::from_group_kind(&self.resource.group, &self.resource.kind).is_some()
    }
}

/// The kinds the set judges on CREATE, owners first; and, for each
/// resource that cannot be audited, why.
///
/// Kinds are those k8s-openapi types: a policy over a custom resource or
/// a wildcard is left out with a note, since its kind and scope are not
/// known without discovery.
pub fn audited(set: &PolicySet) -> (Vec<AuditedKind>, Vec<String>) {
    let mut resources = BTreeSet::new();
    for policy in &set.policies {
        for (group, version, resource, operation) in registration::requests(policy, false) {
            if operation == "CREATE" && !resource.contains('/') {
                resources.insert((policy.name.clone(), group, version, resource));
            }
        }
    }
    let mut out: Vec<AuditedKind> = Vec::new();
    let mut notes = Vec::new();
    for (policy, group, version, resource) in resources {
        let Some(kind) = kinds::kind_of_resource(&group, &resource) else {
            notes.push(format!(
                "policy {policy}: {resource} in group {group:?} is not audited: \
                 only the kinds Kubernetes itself serves are"
            ));
            continue;
        };
        let known = kinds::resource_of(&group, &version, kind);
        let audited = AuditedKind {
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(&group, &version, kind),
                &resource,
            ),
            namespaced: known.namespaced,
        };
        if !out.contains(&audited) {
            out.push(audited);
        }
    }
    out.sort_by_key(AuditedKind::rank);
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::engine::{Engine, EngineOptions};

    #[test]
    fn the_builtin_set_audits_pods_and_the_workload_kinds_owners_first() {
        let engine = Engine::new(&EngineOptions { cache_dir: None }).unwrap();
        let set = PolicySet::load(&Source::Builtin, &engine).unwrap();
        let (kinds, notes) = audited(&set);
        assert!(notes.is_empty(), "{notes:?}");
        let names: Vec<&str> = kinds.iter().map(|k| k.resource.kind.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "CronJob",
                "DaemonSet",
                "Deployment",
                "Job",
                "Pod",
                "ReplicaSet",
                "ReplicationController",
                "StatefulSet"
            ]
        );
        let at = |kind| names.iter().position(|k| *k == kind).unwrap();
        assert!(at("CronJob") < at("Job") && at("Job") < at("Pod"));
        assert!(at("Deployment") < at("ReplicaSet") && at("ReplicaSet") < at("Pod"));
        assert_eq!(names.last(), Some(&"Pod"));
        let pods = &kinds[at("Pod")];
        assert_eq!(pods.resource.plural, "pods");
        assert!(pods.namespaced);
    }
}
