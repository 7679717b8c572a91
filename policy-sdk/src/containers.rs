use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EphemeralContainer, Pod, PodSecurityContext,
    ResourceRequirements, SeccompProfile, SecurityContext,
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
    /// The image, `""` when unset.
    pub image: &'a str,
    pub ports: &'a [ContainerPort],
    pub env: &'a [EnvVar],
    /// Requests and limits (an ephemeral container may not set them).
    pub resources: Option<&'a ResourceRequirements>,
    /// The container's own security context, without the pod's.
    pub security_context: Option<&'a SecurityContext>,
    pod_security_context: Option<&'a PodSecurityContext>,
}

impl<'a> ContainerRef<'a> {
    fn new(
        kind: ContainerKind,
        index: usize,
        c: Fields<'a>,
        pod_security_context: Option<&'a PodSecurityContext>,
    ) -> Self {
        ContainerRef {
            kind,
            index,
            name: c.name,
            image: c.image.as_deref().unwrap_or_default(),
            ports: c.ports.as_deref().unwrap_or_default(),
            env: c.env.as_deref().unwrap_or_default(),
            resources: c.resources.as_ref(),
            security_context: c.security_context.as_ref(),
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

/// The fields that containers and ephemeral containers (distinct types)
/// share, borrowed.
struct Fields<'a> {
    name: &'a str,
    image: &'a Option<String>,
    ports: &'a Option<Vec<ContainerPort>>,
    env: &'a Option<Vec<EnvVar>>,
    resources: &'a Option<ResourceRequirements>,
    security_context: &'a Option<SecurityContext>,
}

macro_rules! fields {
    ($c:expr) => {
        Fields {
            name: &$c.name,
            image: &$c.image,
            ports: &$c.ports,
            env: &$c.env,
            resources: &$c.resources,
            security_context: &$c.security_context,
        }
    };
}

/// Every container of the pod, in the order Kubernetes visits them (as
/// Pod Security Admission reports them): init containers, then containers,
/// then ephemeral containers.
pub fn containers(pod: &Pod) -> impl Iterator<Item = ContainerRef<'_>> {
    pod.spec.iter().flat_map(|s| {
        let psc = s.security_context.as_ref();
        let view = move |kind, index, c| ContainerRef::new(kind, index, c, psc);
        let regular = s
            .containers
            .iter()
            .enumerate()
            .map(move |(i, c): (usize, &Container)| view(ContainerKind::Container, i, fields!(c)));
        let init = s.init_containers.iter().flatten().enumerate().map(
            move |(i, c): (usize, &Container)| view(ContainerKind::InitContainer, i, fields!(c)),
        );
        let ephemeral = s.ephemeral_containers.iter().flatten().enumerate().map(
            move |(i, c): (usize, &EphemeralContainer)| {
                view(ContainerKind::EphemeralContainer, i, fields!(c))
            },
        );
        init.chain(regular).chain(ephemeral)
    })
}

/// A container that a mutation may change: the fields containers and
/// ephemeral containers share.
pub struct ContainerMut<'a> {
    pub kind: ContainerKind,
    pub index: usize,
    pub name: &'a str,
    pub image: &'a mut Option<String>,
    pub env: &'a mut Option<Vec<EnvVar>>,
    pub resources: &'a mut Option<ResourceRequirements>,
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

macro_rules! container_mut {
    ($kind:expr, $index:expr, $c:expr) => {
        ContainerMut {
            kind: $kind,
            index: $index,
            name: &$c.name,
            image: &mut $c.image,
            env: &mut $c.env,
            resources: &mut $c.resources,
            security_context: &mut $c.security_context,
        }
    };
}

/// Every container of the pod, mutably, in the order of [`containers`].
pub fn containers_mut(pod: &mut Pod) -> impl Iterator<Item = ContainerMut<'_>> {
    pod.spec.iter_mut().flat_map(|s| {
        let regular = s
            .containers
            .iter_mut()
            .enumerate()
            .map(|(i, c)| container_mut!(ContainerKind::Container, i, c));
        let init = s
            .init_containers
            .iter_mut()
            .flatten()
            .enumerate()
            .map(|(i, c)| container_mut!(ContainerKind::InitContainer, i, c));
        let ephemeral = s
            .ephemeral_containers
            .iter_mut()
            .flatten()
            .enumerate()
            .map(|(i, c)| container_mut!(ContainerKind::EphemeralContainer, i, c));
        init.chain(regular).chain(ephemeral)
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
                (c.to_string(), c.image, e.run_as_user, e.run_as_non_root)
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "init container \"init\"".to_string(),
                    "busybox",
                    Some(0),
                    Some(true)
                ),
                (
                    "container \"app\"".to_string(),
                    "nginx",
                    Some(1000),
                    Some(true)
                ),
                (
                    "ephemeral container \"debug\"".to_string(),
                    "busybox",
                    Some(1000),
                    Some(false)
                ),
            ]
        );
        let init = containers(&pod).next().unwrap();
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
