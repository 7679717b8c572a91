//! The pod as Pod Security Admission sees it.
//!
//! PSA judges a pod after the API server has defaulted it; `check` reads
//! manifests as written. Where a default changes PSA's verdict or message,
//! it is applied here, so the dry run and the cluster agree. On a pod that
//! came through the API server (the webhook) these are no-ops: the
//! defaults are already there.

use crate::visit;
use agyn_policy_sdk::k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, EmptyDirVolumeSource, Pod, Volume,
};
use std::borrow::Cow;

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// `pod` with the API server's defaults that matter to the standards.
///
/// A workload's pod template gets only the volume default: the host ports
/// and the AppArmor copy are done to pods, so PSA's warning about a
/// template does not show them (its pods' denials will).
pub fn as_admitted(pod: &Pod, template: bool) -> Cow<'_, Pod> {
    let Some(spec) = pod.spec.as_ref() else {
        return Cow::Borrowed(pod);
    };
    let host_network = spec.host_network == Some(true);
    let defaults_ports = !template
        && host_network
        && spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(leaves_host_ports_unset);
    let defaults_volumes = spec.volumes.iter().flatten().any(has_no_source);
    let apparmor = if template {
        Vec::new()
    } else {
        apparmor_from_annotations(pod)
    };
    if !defaults_ports && !defaults_volumes && apparmor.is_empty() {
        return Cow::Borrowed(pod);
    }

    let mut pod = pod.clone();
    let spec = pod.spec.as_mut().expect("checked above");
    if defaults_ports {
        // A pod on the host's network listens on the node: its container
        // ports are host ports.
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or_default() == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
    for volume in spec.volumes.iter_mut().flatten() {
        if has_no_source(volume) {
            volume.empty_dir = Some(EmptyDirVolumeSource::default());
        }
    }
    for (name, profile) in apparmor {
        let init = spec.init_containers.iter_mut().flatten();
        let regular = spec.containers.iter_mut();
        let ephemeral = spec.ephemeral_containers.iter_mut().flatten();
        let contexts = init
            .chain(regular)
            .map(|c| (&c.name, &mut c.security_context))
            .chain(ephemeral.map(|c| (&c.name, &mut c.security_context)));
        for (_, sc) in contexts.filter(|(n, _)| **n == name) {
            sc.get_or_insert_with(Default::default).app_armor_profile = Some(profile.clone());
        }
    }
    Cow::Owned(pod)
}

/// The AppArmor profiles the API server copies from the deprecated
/// per-container annotations into the fields when it creates a pod: for a
/// container with an annotation and no field of its own, unless the
/// profile is the pod's anyway. Windows pods are left alone; unknown values
/// are not copied (and fail validation).
fn apparmor_from_annotations(pod: &Pod) -> Vec<(String, AppArmorProfile)> {
    let (Some(spec), Some(annotations)) = (pod.spec.as_ref(), pod.metadata.annotations.as_ref())
    else {
        return Vec::new();
    };
    let has_apparmor = annotations
        .keys()
        .any(|k| k.starts_with(APPARMOR_ANNOTATION_PREFIX));
    if !has_apparmor || visit::is_windows(spec) {
        return Vec::new();
    }
    let pod_profile = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.app_armor_profile.as_ref());
    visit::containers(spec)
        .filter(|c| {
            c.security_context
                .is_none_or(|sc| sc.app_armor_profile.is_none())
        })
        .filter_map(|c| {
            let value = annotations.get(&format!("{APPARMOR_ANNOTATION_PREFIX}{}", c.name))?;
            let profile = apparmor_field(value)?;
            (Some(&profile) != pod_profile).then(|| (c.name.to_string(), profile))
        })
        .collect()
}

fn apparmor_field(annotation: &str) -> Option<AppArmorProfile> {
    let profile = |type_: &str, localhost: Option<&str>| AppArmorProfile {
        type_: type_.into(),
        localhost_profile: localhost.map(Into::into),
    };
    match annotation {
        "unconfined" => Some(profile("Unconfined", None)),
        "runtime/default" => Some(profile("RuntimeDefault", None)),
        _ => {
            let name = annotation.strip_prefix("localhost/")?;
            let valid = !name.is_empty() && name.trim() == name && name.len() <= 4095;
            valid.then(|| profile("Localhost", Some(name)))
        }
    }
}

fn leaves_host_ports_unset(c: &Container) -> bool {
    c.ports
        .iter()
        .flatten()
        .any(|p| p.host_port.unwrap_or_default() == 0)
}

/// A volume naming no source: the API server makes it an `emptyDir`.
fn has_no_source(v: &Volume) -> bool {
    // The common sources first, so that most volumes are decided without
    // the whole comparison.
    let common = v.config_map.is_some()
        || v.secret.is_some()
        || v.empty_dir.is_some()
        || v.projected.is_some()
        || v.persistent_volume_claim.is_some();
    !common
        && *v
            == Volume {
                name: v.name.clone(),
                ..Volume::default()
            }
}
