//! The optional mutation: fill in what a pod leaves unset with the values
//! `restricted` requires, so a pod written without security settings is
//! admitted, while one that sets an insecure value is still denied.
//!
//! - `allowPrivilegeEscalation: false` on every container that leaves it
//!   unset (except a privileged one or one adding `CAP_SYS_ADMIN`, which the
//!   API server would reject with the field set: it is denied instead);
//! - `seccompProfile.type: RuntimeDefault` at pod level, when some
//!   container has no profile of its own and the pod has none;
//! - `ALL` added to every container's `capabilities.drop` (dropping more
//!   never grants anything; added capabilities are left for the check);
//! - `runAsNonRoot: true` at pod level, when some container leaves it unset
//!   and the pod does too (not for a pod in its own user namespace from
//!   v1.35, where the standards allow root).
//!
//! Windows pods get only `runAsNonRoot`: the others are Linux settings the
//! API server rejects on Windows, and the standards exempt them there.

use crate::version::Version;
use agyn_policy_sdk::k8s_openapi::api::core::v1::{Pod, SeccompProfile, SecurityContext};
use agyn_policy_sdk::{ContainerMut, containers_mut};

/// Fills the unset fields; returns whether anything changed.
pub fn fill_restricted(pod: &mut Pod, version: Version) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let windows = crate::visit::is_windows(spec);
    let own_user_namespace = version.minor() >= 35 && spec.host_users == Some(false);
    let pod_context = spec.security_context.as_ref();
    let pod_seccomp = pod_context.is_some_and(|sc| sc.seccomp_profile.is_some());
    let pod_non_root = pod_context.is_some_and(|sc| sc.run_as_non_root.is_some());

    let mut changed = false;
    let (mut needs_seccomp, mut needs_non_root) = (false, false);
    for mut c in containers_mut(pod) {
        let sc = c.security_context();
        needs_seccomp |= sc.is_none_or(|sc| sc.seccomp_profile.is_none());
        needs_non_root |= sc.is_none_or(|sc| sc.run_as_non_root.is_none());
        if !windows {
            changed |= forbid_escalation(&mut c);
            changed |= drop_all(&mut c);
        }
    }

    let spec = pod.spec.get_or_insert_with(Default::default);
    if !windows && needs_seccomp && !pod_seccomp {
        spec.security_context
            .get_or_insert_with(Default::default)
            .seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
        changed = true;
    }
    if needs_non_root && !pod_non_root && !own_user_namespace {
        spec.security_context
            .get_or_insert_with(Default::default)
            .run_as_non_root = Some(true);
        changed = true;
    }
    changed
}

fn forbid_escalation(c: &mut ContainerMut<'_>) -> bool {
    let sc = c.security_context();
    let unset = sc.is_none_or(|sc| sc.allow_privilege_escalation.is_none());
    if !unset || sc.is_some_and(escalates_anyway) {
        return false;
    }
    c.security_context_mut().allow_privilege_escalation = Some(false);
    true
}

/// A container the API server refuses `allowPrivilegeEscalation: false`
/// for: privileged, or adding `CAP_SYS_ADMIN` (its validation compares
/// that exact string).
fn escalates_anyway(sc: &SecurityContext) -> bool {
    let sys_admin = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .is_some_and(|add| add.iter().any(|a| a == "CAP_SYS_ADMIN"));
    sc.privileged == Some(true) || sys_admin
}

fn drop_all(c: &mut ContainerMut<'_>) -> bool {
    let drops_all = c
        .security_context()
        .and_then(|sc| sc.capabilities.as_ref())
        .and_then(|caps| caps.drop.as_ref())
        .is_some_and(|d| d.iter().any(|c| c == "ALL"));
    if drops_all {
        return false;
    }
    c.security_context_mut()
        .capabilities
        .get_or_insert_with(Default::default)
        .drop
        .get_or_insert_with(Vec::new)
        .push("ALL".into());
    true
}
