//! The kinds the host knows: the workload kinds and where each keeps its
//! pod template, and the resource (plural) and scope of every kind
//! k8s-openapi types, for requests that do not name them (`check`'s).

use std::borrow::Cow;

/// A kind that is a Pod or carries a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
}

use WorkloadKind::*;

/// Group, kind, and the JSON pointer of the pod template ("" for a Pod).
const TABLE: &[(WorkloadKind, &str, &str, &str)] = &[
    (Pod, "", "Pod", ""),
    (Deployment, "apps", "Deployment", "/spec/template"),
    (StatefulSet, "apps", "StatefulSet", "/spec/template"),
    (DaemonSet, "apps", "DaemonSet", "/spec/template"),
    (ReplicaSet, "apps", "ReplicaSet", "/spec/template"),
    (
        ReplicationController,
        "",
        "ReplicationController",
        "/spec/template",
    ),
    (Job, "batch", "Job", "/spec/template"),
    (
        CronJob,
        "batch",
        "CronJob",
        "/spec/jobTemplate/spec/template",
    ),
];

impl WorkloadKind {
    /// Every kind, in the order of the table.
    pub fn all() -> impl Iterator<Item = WorkloadKind> {
        TABLE.iter().map(|row| row.0)
    }

    fn row(self) -> &'static (WorkloadKind, &'static str, &'static str, &'static str) {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .expect("every kind has a row")
    }

    /// The kind for an API group (`""` for the core group) and kind name.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        TABLE
            .iter()
            .find(|(_, g, k, _)| *g == group && *k == kind)
            .map(|row| row.0)
    }

    /// The kind by its name alone, as policy sets list kinds.
    pub fn from_kind(kind: &str) -> Option<Self> {
        TABLE.iter().find(|row| row.2 == kind).map(|row| row.0)
    }

    pub fn kind(self) -> &'static str {
        self.row().2
    }

    /// The JSON pointer of the pod template; `""` for a Pod itself.
    pub fn template_pointer(self) -> &'static str {
        self.row().3
    }
}

/// The resource and scope of a kind: `("services", true)`.
pub struct KnownKind {
    pub resource: Cow<'static, str>,
    pub namespaced: bool,
}

macro_rules! known_kinds {
    ($($ty:path),+ $(,)?) => {
        /// A kind k8s-openapi types, by group, version (`None`: any) and
        /// kind; with its group and version.
        fn known(
            group: Option<&str>,
            version: Option<&str>,
            kind: &str,
        ) -> Option<(&'static str, &'static str, KnownKind)> {
            use k8s_openapi::{NamespaceResourceScope, Resource};
            use std::any::TypeId;
            $(
                if group.is_none_or(|g| g == <$ty as Resource>::GROUP)
                    && version.is_none_or(|v| v == <$ty as Resource>::VERSION)
                    && <$ty as Resource>::KIND == kind
                {
                    return Some((<$ty as Resource>::GROUP, <$ty as Resource>::VERSION,
                    KnownKind {
                        resource: Cow::Borrowed(<$ty as Resource>::URL_PATH_SEGMENT),
                        namespaced: TypeId::of::<<$ty as Resource>::Scope>()
                            == TypeId::of::<NamespaceResourceScope>(),
                    }));
                }
            )+
            None
        }

        /// The Rust type k8s-openapi gives a kind, by name, as source text:
        /// `k8s_openapi::api::core::v1::Service`.
        pub fn rust_type(kind: &str) -> Option<&'static str> {
            use k8s_openapi::Resource;
            $(
                if <$ty as Resource>::KIND == kind {
                    return Some(stringify!($ty));
                }
            )+
            None
        }

        /// The kind k8s-openapi gives a group's resource (plural).
        pub fn kind_of_resource(group: &str, resource: &str) -> Option<&'static str> {
            use k8s_openapi::Resource;
            $(
                if <$ty as Resource>::GROUP == group
                    && <$ty as Resource>::URL_PATH_SEGMENT == resource
                {
                    return Some(<$ty as Resource>::KIND);
                }
            )+
            None
        }

        /// A kind of an API group k8s-openapi types, if it knows the group.
        pub fn by_group(group: &str) -> Option<&'static str> {
            use k8s_openapi::Resource;
            $(
                if <$ty as Resource>::GROUP == group {
                    return Some(<$ty as Resource>::KIND);
                }
            )+
            None
        }
    };
}

known_kinds!(
    k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
    k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    k8s_openapi::api::apps::v1::ControllerRevision,
    k8s_openapi::api::apps::v1::DaemonSet,
    k8s_openapi::api::apps::v1::Deployment,
    k8s_openapi::api::apps::v1::ReplicaSet,
    k8s_openapi::api::apps::v1::StatefulSet,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    k8s_openapi::api::batch::v1::CronJob,
    k8s_openapi::api::batch::v1::Job,
    k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    k8s_openapi::api::coordination::v1::Lease,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::core::v1::Endpoints,
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::Namespace,
    k8s_openapi::api::core::v1::Node,
    k8s_openapi::api::core::v1::PersistentVolume,
    k8s_openapi::api::core::v1::PersistentVolumeClaim,
    k8s_openapi::api::core::v1::Pod,
    k8s_openapi::api::core::v1::PodTemplate,
    k8s_openapi::api::core::v1::ReplicationController,
    k8s_openapi::api::core::v1::ResourceQuota,
    k8s_openapi::api::core::v1::Secret,
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::discovery::v1::EndpointSlice,
    k8s_openapi::api::networking::v1::Ingress,
    k8s_openapi::api::networking::v1::IngressClass,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::node::v1::RuntimeClass,
    k8s_openapi::api::policy::v1::PodDisruptionBudget,
    k8s_openapi::api::rbac::v1::ClusterRole,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::scheduling::v1::PriorityClass,
    k8s_openapi::api::storage::v1::CSIDriver,
    k8s_openapi::api::storage::v1::StorageClass,
    k8s_openapi::api::storage::v1::VolumeAttachment,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
);

/// The resource (plural) and scope of a kind. For a kind k8s-openapi does
/// not type (a custom resource) the plural is guessed as the API server's
/// default (`kind` in lower case, pluralised in English) and the scope is
/// taken to be namespaced, as most custom resources are.
pub fn resource_of(group: &str, version: &str, kind: &str) -> KnownKind {
    known(Some(group), Some(version), kind).map_or_else(
        || {
            let lower = kind.to_ascii_lowercase();
            let resource = if let Some(stem) = lower.strip_suffix('y')
                && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
            {
                format!("{stem}ies")
            } else if lower.ends_with(['s', 'x', 'z'])
                || lower.ends_with("ch")
                || lower.ends_with("sh")
            {
                format!("{lower}es")
            } else {
                format!("{lower}s")
            };
            KnownKind {
                resource: Cow::Owned(resource),
                namespaced: true,
            }
        },
        |(_, _, known)| known,
    )
}

/// Group, version and resource of a kind k8s-openapi types, by its name
/// alone, as policy sets list kinds.
pub fn by_name(kind: &str) -> Option<(&'static str, &'static str, KnownKind)> {
    known(None, None, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_group_and_kind() {
        assert_eq!(
            WorkloadKind::from_group_kind("apps", "Deployment"),
            Some(Deployment)
        );
        assert_eq!(WorkloadKind::from_group_kind("", "Pod"), Some(Pod));
        assert_eq!(
            WorkloadKind::from_group_kind("batch", "CronJob"),
            Some(CronJob)
        );
        // Same kind name, another group: not ours.
        assert_eq!(
            WorkloadKind::from_group_kind("example.com", "Deployment"),
            None
        );
        assert_eq!(WorkloadKind::from_group_kind("", "ConfigMap"), None);
        for kind in WorkloadKind::all() {
            assert_eq!(WorkloadKind::from_kind(kind.kind()), Some(kind));
        }
    }
}

#[cfg(test)]
mod resource_tests {
    use super::resource_of;

    #[test]
    fn known_kinds_have_their_plural_and_scope() {
        let role = resource_of("rbac.authorization.k8s.io", "v1", "ClusterRole");
        assert_eq!((&*role.resource, role.namespaced), ("clusterroles", false));
        let ingress = resource_of("networking.k8s.io", "v1", "Ingress");
        assert_eq!(
            (&*ingress.resource, ingress.namespaced),
            ("ingresses", true)
        );
        assert_eq!(resource_of("", "v1", "Endpoints").resource, "endpoints");
    }

    #[test]
    fn custom_kinds_get_the_default_plural() {
        assert_eq!(
            resource_of("example.com", "v1", "Widget").resource,
            "widgets"
        );
        assert_eq!(
            resource_of("example.com", "v1", "Policy").resource,
            "policies"
        );
        assert_eq!(
            resource_of("example.com", "v1", "Gateway").resource,
            "gateways"
        );
        assert_eq!(
            resource_of("example.com", "v1", "Mailbox").resource,
            "mailboxes"
        );
    }
}
