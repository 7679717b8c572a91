use k8s_openapi::api::core::v1::{
    Capabilities, ContainerPort, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};
use std::fmt;

/// Where in the pod spec a container is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    Container,
    InitContainer,
    EphemeralContainer,
}

impl ContainerKind {
    /// The field of the pod spec that holds this kind of container.
    pub fn field(self) -> &'static str {
        match self {
            ContainerKind::Container => "containers",
            ContainerKind::InitContainer => "initContainers",
            ContainerKind::EphemeralContainer => "ephemeralContainers",
        }
    }

    /// How messages name this kind: `container "app"`, `init container "setup"`.
    pub fn noun(self) -> &'static str {
        match self {
            ContainerKind::Container => "container",
            ContainerKind::InitContainer => "init container",
            ContainerKind::EphemeralContainer => "ephemeral container",
        }
    }
}

/// A read-only view of one container of a pod, of any kind.
#[derive(Clone, Copy, Debug)]
pub struct ContainerRef<'a> {
    pub kind: ContainerKind,
    /// The position in its list (`spec.containers[index]`).
    pub index: usize,
    pub name: &'a str,
    /// The container's own security context, without the pod's.
    pub security_context: Option<&'a SecurityContext>,
    pub ports: &'a [ContainerPort],
    pod_security_context: Option<&'a PodSecurityContext>,
}

impl<'a> ContainerRef<'a> {
    fn new(
        kind: ContainerKind,
        index: usize,
        (name, security_context, ports): ContainerFields<'a>,
        pod_security_context: Option<&'a PodSecurityContext>,
    ) -> Self {
        ContainerRef {
            kind,
            index,
            name,
            security_context: security_context.as_ref(),
            ports: ports.as_deref().unwrap_or_default(),
            pod_security_context,
        }
    }

    /// The settings that apply to this container: its own values, and the
    /// pod's where it sets none (as the kubelet decides).
    pub fn effective(&self) -> EffectiveSecurityContext<'a> {
        let c = self.security_context;
        let p = self.pod_security_context;
        EffectiveSecurityContext {
            run_as_non_root: c
                .and_then(|c| c.run_as_non_root)
                .or_else(|| p.and_then(|p| p.run_as_non_root)),
            run_as_user: c
                .and_then(|c| c.run_as_user)
                .or_else(|| p.and_then(|p| p.run_as_user)),
            run_as_group: c
                .and_then(|c| c.run_as_group)
                .or_else(|| p.and_then(|p| p.run_as_group)),
            seccomp_profile: c
                .and_then(|c| c.seccomp_profile.as_ref())
                .or_else(|| p.and_then(|p| p.seccomp_profile.as_ref())),
            capabilities: c.and_then(|c| c.capabilities.as_ref()),
            read_only_root_filesystem: c.and_then(|c| c.read_only_root_filesystem),
            privileged: c.and_then(|c| c.privileged),
            allow_privilege_escalation: c.and_then(|c| c.allow_privilege_escalation),
        }
    }

    /// The path of a field under this container, for messages:
    /// `spec.initContainers[1].securityContext.runAsUser`.
    pub fn field(&self, field: &str) -> String {
        format!("spec.{}[{}].{field}", self.kind.field(), self.index)
    }
}

impl fmt::Display for ContainerRef<'_> {
    /// `container "app"`: how every message names a container.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind.noun(), self.name)
    }
}

/// The security settings in force for one container: the container's value
/// where it sets one, else the pod's (for the fields both levels have).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EffectiveSecurityContext<'a> {
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub seccomp_profile: Option<&'a SeccompProfile>,
    /// Container level only.
    pub capabilities: Option<&'a Capabilities>,
    /// Container level only.
    pub read_only_root_filesystem: Option<bool>,
    /// Container level only.
    pub privileged: Option<bool>,
    /// Container level only.
    pub allow_privilege_escalation: Option<bool>,
}

/// The fields that containers and ephemeral containers (distinct types) share.
type ContainerFields<'a> = (
    &'a String,
    &'a Option<SecurityContext>,
    &'a Option<Vec<ContainerPort>>,
);

/// Every container of the pod: containers, then init containers, then
/// ephemeral containers.
pub fn containers(pod: &Pod) -> impl Iterator<Item = ContainerRef<'_>> {
    pod.spec.iter().flat_map(|s| {
        let psc = s.security_context.as_ref();
        let view = move |kind, index, c| ContainerRef::new(kind, index, c, psc);
        let regular = s.containers.iter().enumerate().map(move |(i, c)| {
            view(
                ContainerKind::Container,
                i,
                (&c.name, &c.security_context, &c.ports),
            )
        });
        let init = s
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(move |(i, c)| {
                view(
                    ContainerKind::InitContainer,
                    i,
                    (&c.name, &c.security_context, &c.ports),
                )
            });
        let ephemeral = s
            .ephemeral_containers
            .iter()
            .flatten()
            .enumerate()
            .map(move |(i, c)| {
                view(
                    ContainerKind::EphemeralContainer,
                    i,
                    (&c.name, &c.security_context, &c.ports),
                )
            });
        regular.chain(init).chain(ephemeral)
    })
}

/// A container whose security context a mutation may change.
pub struct ContainerMut<'a> {
    pub kind: ContainerKind,
    pub index: usize,
    pub name: &'a str,
    security_context: &'a mut Option<SecurityContext>,
}

impl ContainerMut<'_> {
    /// The container's own security context, if it has one.
    pub fn security_context(&self) -> Option<&SecurityContext> {
        self.security_context.as_ref()
    }

    /// The container's security context, created empty if absent. Call it
    /// only when about to set a field, so that a container needing nothing
    /// is left as it was.
    pub fn security_context_mut(&mut self) -> &mut SecurityContext {
        self.security_context.get_or_insert_with(Default::default)
    }
}

/// Every container of the pod, mutably, in the order of [`containers`].
pub fn containers_mut(pod: &mut Pod) -> impl Iterator<Item = ContainerMut<'_>> {
    pod.spec.iter_mut().flat_map(|s| {
        let regular = s
            .containers
            .iter_mut()
            .enumerate()
            .map(|(index, c)| ContainerMut {
                kind: ContainerKind::Container,
                index,
                name: &c.name,
                security_context: &mut c.security_context,
            });
        let init = s
            .init_containers
            .iter_mut()
            .flatten()
            .enumerate()
            .map(|(index, c)| ContainerMut {
                kind: ContainerKind::InitContainer,
                index,
                name: &c.name,
                security_context: &mut c.security_context,
            });
        let ephemeral =
            s.ephemeral_containers
                .iter_mut()
                .flatten()
                .enumerate()
                .map(|(index, c)| ContainerMut {
                    kind: ContainerKind::EphemeralContainer,
                    index,
                    name: &c.name,
                    security_context: &mut c.security_context,
                });
        regular.chain(init).chain(ephemeral)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn container_values_override_pod_values() {
        let pod = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {runAsUser: 1000, runAsNonRoot: true}
  initContainers:
  - name: init
    image: busybox
    securityContext: {runAsUser: 0}
  containers:
  - name: app
    image: nginx
  ephemeralContainers:
  - name: debug
    image: busybox
    securityContext: {runAsNonRoot: false}
"#);
        let seen: Vec<_> = containers(&pod)
            .map(|c| {
                let e = c.effective();
                (c.to_string(), e.run_as_user, e.run_as_non_root)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("container \"app\"".to_string(), Some(1000), Some(true)),
                ("init container \"init\"".to_string(), Some(0), Some(true)),
                (
                    "ephemeral container \"debug\"".to_string(),
                    Some(1000),
                    Some(false)
                ),
            ]
        );
        let init = containers(&pod).nth(1).unwrap();
        assert_eq!(
            init.field("securityContext.runAsUser"),
            "spec.initContainers[0].securityContext.runAsUser"
        );
    }

    #[test]
    fn mutable_walk_creates_a_security_context_only_on_demand() {
        let mut pod = pod(r#"
kind: Pod
spec:
  containers: [{name: a}, {name: b}]
"#);
        for mut c in containers_mut(&mut pod) {
            if c.name == "b" {
                c.security_context_mut().privileged = Some(false);
            }
        }
        let spec = pod.spec.unwrap();
        assert!(spec.containers[0].security_context.is_none());
        assert_eq!(
            spec.containers[1]
                .security_context
                .as_ref()
                .unwrap()
                .privileged,
            Some(false)
        );
    }
}
