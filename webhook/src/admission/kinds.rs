//! The kinds policies judge, and where each keeps its pod.

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
