//! The checks the `restricted` level adds to `baseline`: current pod
//! hardening best practice.

use crate::baseline::profile_type_allowed;
use crate::format::{containers, join_quote, pluralize};
use crate::registry::Forbidden;
use crate::visit::{self, is_windows, names_where};
use agyn_policy_sdk::k8s_openapi::api::core::v1::{PodSpec, Volume};
use agyn_policy_sdk::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeSet;

/// Why a volume is not allowed at `restricted`, or `None` if it is. The
/// name is the first restricted source found, in PSA's order.
fn restricted_volume_type(v: &Volume) -> Option<&'static str> {
    let allowed = v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.image.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.secret.is_some();
    if allowed {
        return None;
    }
    let restricted = [
        (v.host_path.is_some(), "hostPath"),
        (v.gce_persistent_disk.is_some(), "gcePersistentDisk"),
        (v.aws_elastic_block_store.is_some(), "awsElasticBlockStore"),
        (v.git_repo.is_some(), "gitRepo"),
        (v.nfs.is_some(), "nfs"),
        (v.iscsi.is_some(), "iscsi"),
        (v.glusterfs.is_some(), "glusterfs"),
        (v.rbd.is_some(), "rbd"),
        (v.flex_volume.is_some(), "flexVolume"),
        (v.cinder.is_some(), "cinder"),
        (v.cephfs.is_some(), "cephfs"),
        (v.flocker.is_some(), "flocker"),
        (v.fc.is_some(), "fc"),
        (v.azure_file.is_some(), "azureFile"),
        (v.vsphere_volume.is_some(), "vsphereVolume"),
        (v.quobyte.is_some(), "quobyte"),
        (v.azure_disk.is_some(), "azureDisk"),
        (v.photon_persistent_disk.is_some(), "photonPersistentDisk"),
        (v.portworx_volume.is_some(), "portworxVolume"),
        (v.scale_io.is_some(), "scaleIO"),
        (v.storageos.is_some(), "storageos"),
    ];
    Some(
        restricted
            .into_iter()
            .find(|(set, _)| *set)
            .map_or("unknown", |(_, name)| name),
    )
}

pub fn volumes(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut types = BTreeSet::new();
    let bad: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| match restricted_volume_type(v) {
            Some(t) => {
                types.insert(t);
                true
            }
            None => false,
        })
        .map(|v| v.name.as_str())
        .collect();
    let types: Vec<&str> = types.into_iter().collect();
    Forbidden::unless(bad.is_empty(), "restricted volume types", || {
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        )
    })
}

pub fn allow_privilege_escalation_1_8(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let bad = names_where(spec, |c| {
        c.security_context
            .and_then(|sc| sc.allow_privilege_escalation)
            != Some(false)
    });
    Forbidden::unless(bad.is_empty(), "allowPrivilegeEscalation != false", || {
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers(&bad)
        )
    })
}

pub fn allow_privilege_escalation_1_25(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if is_windows(spec) {
        return None;
    }
    allow_privilege_escalation_1_8(meta, spec)
}

pub fn run_as_non_root_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.run_as_non_root);
    let mut setters = Vec::new();
    if pod == Some(false) {
        setters.push("pod".to_string());
    }
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in visit::containers(spec) {
        match c.security_context.and_then(|sc| sc.run_as_non_root) {
            Some(false) => explicit.push(c.name),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(c.name),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers(&explicit));
    }
    const REASON: &str = "runAsNonRoot != true";
    if !setters.is_empty() {
        return Forbidden::new(
            REASON,
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    Forbidden::unless(implicit.is_empty(), REASON, || {
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers(&implicit)
        )
    })
}

/// From v1.35 a pod in its own user namespace (`hostUsers: false`) may run
/// as UID 0: it is not root on the node.
pub fn run_as_non_root_1_35(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if spec.host_users == Some(false) {
        return None;
    }
    run_as_non_root_1_0(meta, spec)
}

pub fn run_as_user_1_23(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut setters = Vec::new();
    if spec.security_context.as_ref().and_then(|sc| sc.run_as_user) == Some(0) {
        setters.push("pod".to_string());
    }
    let bad = names_where(spec, |c| {
        c.security_context.and_then(|sc| sc.run_as_user) == Some(0)
    });
    if !bad.is_empty() {
        setters.push(containers(&bad));
    }
    Forbidden::unless(setters.is_empty(), "runAsUser=0", || {
        format!("{} must not set runAsUser=0", setters.join(" and "))
    })
}

/// As [`run_as_non_root_1_35`], for `runAsUser`.
pub fn run_as_user_1_35(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if spec.host_users == Some(false) {
        return None;
    }
    run_as_user_1_23(meta, spec)
}

pub fn seccomp_profile_1_19(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut setters = Vec::new();
    let mut types = BTreeSet::new();
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    match pod {
        Some(t) if !profile_type_allowed(t) => {
            setters.push("pod".to_string());
            types.insert(t);
        }
        _ => {}
    }
    let pod_set = pod.is_some_and(profile_type_allowed);
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in visit::containers(spec) {
        match c
            .security_context
            .and_then(|sc| sc.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str())
        {
            Some(t) if !profile_type_allowed(t) => {
                explicit.push(c.name);
                types.insert(t);
            }
            Some(_) => {}
            None if !pod_set => implicit.push(c.name),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers(&explicit));
    }
    if !setters.is_empty() {
        let types: Vec<&str> = types.into_iter().collect();
        return Forbidden::new(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&types)
            ),
        );
    }
    Forbidden::unless(implicit.is_empty(), "seccompProfile", || {
        format!(
            "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
            containers(&implicit)
        )
    })
}

pub fn seccomp_profile_1_25(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if is_windows(spec) {
        return None;
    }
    seccomp_profile_1_19(meta, spec)
}

pub fn capabilities_1_22(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let (mut missing_drop_all, mut adding) = (Vec::new(), Vec::new());
    let mut forbidden = BTreeSet::new();
    for c in visit::containers(spec) {
        let Some(caps) = c.security_context.and_then(|sc| sc.capabilities.as_ref()) else {
            missing_drop_all.push(c.name);
            continue;
        };
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            missing_drop_all.push(c.name);
        }
        let mut adds_forbidden = false;
        for cap in caps
            .add
            .iter()
            .flatten()
            .filter(|a| *a != "NET_BIND_SERVICE")
        {
            forbidden.insert(cap.as_str());
            adds_forbidden = true;
        }
        if adds_forbidden {
            adding.push(c.name);
        }
    }
    let mut parts = Vec::new();
    if !missing_drop_all.is_empty() {
        parts.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        let forbidden: Vec<&str> = forbidden.into_iter().collect();
        parts.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers(&adding),
            join_quote(&forbidden)
        ));
    }
    Forbidden::unless(parts.is_empty(), "unrestricted capabilities", || {
        parts.join("; ")
    })
}

pub fn capabilities_1_25(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if is_windows(spec) {
        return None;
    }
    capabilities_1_22(meta, spec)
}
