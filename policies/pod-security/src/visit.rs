//! The containers of a pod as Pod Security Admission walks them.
//!
//! PSA's order is init containers, containers, then ephemeral containers,
//! and its messages list names in that order; the SDK's walk starts with
//! `containers`, so this crate has its own. An ephemeral container is a
//! different type in k8s-openapi with the same fields; the view unifies the
//! ones the standards look at.

use agyn_policy_sdk::k8s_openapi::api::core::v1::{
    Container, ContainerPort, EphemeralContainer, Lifecycle, PodSpec, Probe, SecurityContext,
};

pub struct ContainerView<'a> {
    pub name: &'a str,
    pub security_context: Option<&'a SecurityContext>,
    pub ports: &'a [ContainerPort],
    /// Liveness, readiness and startup probes.
    pub probes: [Option<&'a Probe>; 3],
    pub lifecycle: Option<&'a Lifecycle>,
}

/// The same fields under two types: one conversion for both.
macro_rules! view_of {
    ($($container:ty),*) => {$(
        impl<'a> From<&'a $container> for ContainerView<'a> {
            fn from(c: &'a $container) -> Self {
                ContainerView {
                    name: &c.name,
                    security_context: c.security_context.as_ref(),
                    ports: c.ports.as_deref().unwrap_or_default(),
                    probes: [
                        c.liveness_probe.as_ref(),
                        c.readiness_probe.as_ref(),
                        c.startup_probe.as_ref(),
                    ],
                    lifecycle: c.lifecycle.as_ref(),
                }
            }
        }
    )*};
}

view_of!(Container, EphemeralContainer);

/// A Windows pod (`spec.os.name`): the standards exempt it from the
/// Linux-only checks from v1.25, and the API server refuses Linux fields
/// on it.
pub fn is_windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
}

/// Init containers, containers, ephemeral containers, each in list order.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerView<'_>> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(ContainerView::from);
    let regular = spec.containers.iter().map(ContainerView::from);
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(ContainerView::from);
    init.chain(regular).chain(ephemeral)
}

/// The names of the containers for which `bad` holds, in PSA's order.
pub fn names_where<'a>(
    spec: &'a PodSpec,
    mut bad: impl FnMut(&ContainerView<'a>) -> bool,
) -> Vec<&'a str> {
    containers(spec)
        .filter(|c| bad(c))
        .map(|c| c.name)
        .collect()
}
