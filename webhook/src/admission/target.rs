//! What a request asks to admit (kind, resource, operation, namespace), and
//! how each policy sees it: the object itself, or, for a policy over pods
//! and a workload, the workload's pod template as a Pod.

use super::kinds::{self, WorkloadKind, resource_of};
use super::request::AdmissionRequest;
use crate::config::Operation;
use crate::engine::metadata::Rule;
use std::borrow::Cow;

/// The request, as far as choosing policies goes.
#[derive(Debug)]
pub(super) struct Target<'r> {
    pub operation: Operation,
    pub group: &'r str,
    pub version: &'r str,
    pub kind: &'r str,
    pub resource: Cow<'r, str>,
    pub subresource: Option<&'r str>,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<&'r str>,
    /// A Pod, or a kind with a pod template.
    pub workload: Option<WorkloadKind>,
}

/// The form in which a policy receives the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// The object as submitted.
    Object,
    /// A workload's pod template, as a Pod.
    PodTemplate,
}

impl<'r> Target<'r> {
    pub fn new(request: &'r AdmissionRequest, operation: Operation) -> Self {
        let gvk = &request.kind;
        let resource = match &request.resource {
            Some(r) => Cow::Borrowed(r.resource.as_str()),
            None => resource_of(&gvk.group, &gvk.version, &gvk.kind).resource,
        };
        Target {
            operation,
            group: &gvk.group,
            version: &gvk.version,
            kind: &gvk.kind,
            resource,
            subresource: request.sub_resource.as_deref().filter(|s| !s.is_empty()),
            namespace: request.namespace.as_deref().filter(|n| !n.is_empty()),
            workload: WorkloadKind::from_group_kind(&gvk.group, &gvk.kind),
        }
    }

    /// How a policy with these rules sees this request, if it judges it.
    ///
    /// Rules that cover the request give the object itself. A rule naming
    /// pods also brings a Pod's `ephemeralcontainers` subresource (the Pod)
    /// and the workload kinds' pod templates, as Pods.
    pub fn view(&self, rules: &[Rule]) -> Option<View> {
        let operation = self.operation.as_str();
        if rules.iter().any(|r| {
            r.covers(
                self.group,
                self.version,
                &self.resource,
                self.subresource,
                operation,
            )
        }) {
            return Some(View::Object);
        }
        let pods = rules
            .iter()
            .any(|r| r.names_pods() && r.covers_operation(operation));
        match (pods, self.workload, self.subresource) {
            (true, Some(WorkloadKind::Pod), Some("ephemeralcontainers")) => Some(View::Object),
            (true, Some(kind), None) if kind != WorkloadKind::Pod => Some(View::PodTemplate),
            _ => None,
        }
    }
}

/// Whether a policy with these rules can judge objects of a kind named in a
/// policy set (`Service`, `Deployment`, `Widget`): a kind k8s-openapi types
/// must be covered by a rule (or be a workload, for a policy over pods); a
/// kind it does not (a custom resource) needs a rule for a group it does
/// not know either, or `*`.
pub fn can_judge(rules: &[Rule], kind: &str) -> bool {
    match kinds::by_name(kind) {
        Some((group, version, known)) => rules.iter().any(|rule| {
            let covered = ["CREATE", "UPDATE"]
                .iter()
                .any(|operation| rule.covers(group, version, &known.resource, None, operation));
            covered || (rule.names_pods() && WorkloadKind::from_group_kind(group, kind).is_some())
        }),
        None => rules.iter().any(|rule| {
            rule.api_groups
                .iter()
                .any(|g| g == "*" || kinds::by_group(g).is_none())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::GroupVersionKind;

    fn target<'a>(request: &'a AdmissionRequest) -> Target<'a> {
        Target::new(request, Operation::Create)
    }

    fn request(group: &str, version: &str, kind: &str, sub: Option<&str>) -> AdmissionRequest {
        serde_json::from_value(serde_json::json!({
            "uid": "u",
            "kind": GroupVersionKind::gvk(group, version, kind),
            "subResource": sub,
            "namespace": "ns",
            "operation": "CREATE",
        }))
        .unwrap()
    }

    #[test]
    fn pod_rules_bring_templates_and_ephemeral_containers() {
        let pods = [Rule::pods()];
        let pod = request("", "v1", "Pod", None);
        let debug = request("", "v1", "Pod", Some("ephemeralcontainers"));
        let exec = request("", "v1", "Pod", Some("exec"));
        let deployment = request("apps", "v1", "Deployment", None);
        let scale = request("apps", "v1", "Deployment", Some("scale"));
        let service = request("", "v1", "Service", None);
        assert_eq!(target(&pod).view(&pods), Some(View::Object));
        assert_eq!(target(&debug).view(&pods), Some(View::Object));
        assert_eq!(target(&exec).view(&pods), None);
        assert_eq!(target(&deployment).view(&pods), Some(View::PodTemplate));
        assert_eq!(target(&scale).view(&pods), None);
        assert_eq!(target(&service).view(&pods), None);
    }

    #[test]
    fn other_rules_see_the_object() {
        let rule = |group: &str, resource: &str| Rule {
            api_groups: vec![group.into()],
            api_versions: vec!["*".into()],
            resources: vec![resource.into()],
            operations: vec!["*".into()],
        };
        let deployment = request("apps", "v1", "Deployment", None);
        let role = request("rbac.authorization.k8s.io", "v1", "ClusterRole", None);
        let widget = request("example.com", "v1alpha1", "Widget", None);
        assert_eq!(
            target(&deployment).view(&[rule("apps", "deployments")]),
            Some(View::Object)
        );
        assert_eq!(
            target(&role).view(&[rule("rbac.authorization.k8s.io", "clusterroles")]),
            Some(View::Object)
        );
        assert_eq!(
            target(&widget).view(&[rule("example.com", "widgets")]),
            Some(View::Object)
        );
        assert_eq!(target(&widget).view(&[rule("*", "*")]), Some(View::Object));
        assert_eq!(target(&widget).view(&[rule("apps", "*")]), None);
    }
}
