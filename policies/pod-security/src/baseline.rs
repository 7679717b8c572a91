//! The checks of the `baseline` level: no known privilege escalation.
//!
//! Each function is one version of one check, judging the pod as Pod
//! Security Admission does and saying why in PSA's words. Which version
//! applies when is in [`crate::registry`].

use crate::format::{containers, go_quote, join_quote, pluralize};
use crate::registry::Forbidden;
use crate::visit::{self, names_where};
use agyn_policy_sdk::k8s_openapi::api::core::v1::{
    LifecycleHandler, PodSpec, SELinuxOptions, SecurityContext,
};
use agyn_policy_sdk::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeSet;

pub fn host_namespaces(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let used: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(on, _)| *on == Some(true))
    .map(|(_, text)| text)
    .collect();
    Forbidden::unless(used.is_empty(), "host namespaces", || used.join(", "))
}

pub fn privileged(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let bad = names_where(spec, |c| {
        c.security_context.and_then(|sc| sc.privileged) == Some(true)
    });
    Forbidden::unless(bad.is_empty(), "privileged", || {
        format!(
            "{} must not set securityContext.privileged=true",
            containers(&bad)
        )
    })
}

/// What a container may add at `baseline`: the container runtimes'
/// default set, minus `NET_RAW`.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

pub fn capabilities(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut capabilities = BTreeSet::new();
    let bad = names_where(spec, |c| {
        let added = c
            .security_context
            .and_then(|sc| sc.capabilities.as_ref())
            .and_then(|caps| caps.add.as_deref())
            .unwrap_or_default();
        let mut found = false;
        for cap in added
            .iter()
            .filter(|c| !BASELINE_CAPABILITIES.contains(&c.as_str()))
        {
            capabilities.insert(cap.as_str());
            found = true;
        }
        found
    });
    let capabilities: Vec<&str> = capabilities.into_iter().collect();
    Forbidden::unless(bad.is_empty(), "non-default capabilities", || {
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers(&bad),
            join_quote(&capabilities)
        )
    })
}

pub fn host_path_volumes(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let bad: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    Forbidden::unless(bad.is_empty(), "hostPath volumes", || {
        format!(
            "{} {}",
            pluralize("volume", "volumes", bad.len()),
            join_quote(&bad)
        )
    })
}

pub fn host_ports(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut ports = BTreeSet::new();
    let bad = names_where(spec, |c| {
        let mut found = false;
        for port in c
            .ports
            .iter()
            .filter_map(|p| p.host_port)
            .filter(|&p| p != 0)
        {
            // A set of strings: PSA sorts the ports as text.
            ports.insert(port.to_string());
            found = true;
        }
        found
    });
    let ports: Vec<String> = ports.into_iter().collect();
    Forbidden::unless(bad.is_empty(), "hostPort", || {
        format!(
            "{} {} {} {}",
            containers(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        )
    })
}

pub fn host_probes_and_lifecycle(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut bad = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for c in visit::containers(spec) {
        let handlers = c
            .probes
            .iter()
            .flatten()
            .map(|p| (&p.http_get, &p.tcp_socket));
        let lifecycle = c
            .lifecycle
            .into_iter()
            .flat_map(|l| [&l.post_start, &l.pre_stop])
            .flatten()
            .map(|h: &LifecycleHandler| (&h.http_get, &h.tcp_socket));
        for (http, tcp) in handlers.chain(lifecycle) {
            let http = http.as_ref().and_then(|h| h.host.as_deref());
            let tcp = tcp.as_ref().and_then(|t| t.host.as_deref());
            for host in [http, tcp].into_iter().flatten().filter(|h| !h.is_empty()) {
                hosts.insert(host);
                bad.insert(c.name);
            }
        }
    }
    let bad: Vec<&str> = bad.into_iter().collect();
    let hosts: Vec<&str> = hosts.into_iter().collect();
    Forbidden::unless(bad.is_empty(), "probe or lifecycle host", || {
        format!(
            "{} {} {} {}",
            containers(&bad),
            pluralize("uses", "use", bad.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                hosts.len()
            ),
            join_quote(&hosts)
        )
    })
}

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

pub fn apparmor_profile(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.app_armor_profile.as_ref());
    let (mut setters, types) = bad_profiles(spec, pod.map(|p| p.type_.as_str()), |sc| {
        sc.app_armor_profile.as_ref().map(|p| p.type_.as_str())
    });
    let mut annotations: Vec<String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(APPARMOR_ANNOTATION_PREFIX))
        .filter(|(_, value)| {
            !(value.is_empty() || *value == "runtime/default" || value.starts_with("localhost/"))
        })
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect();
    annotations.sort();
    if !annotations.is_empty() {
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_string());
    }
    let values: Vec<String> = types
        .into_iter()
        .map(str::to_string)
        .chain(annotations)
        .collect();
    Forbidden::unless(
        setters.is_empty(),
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        || {
            format!(
                "{} must not set AppArmor profile type to {}",
                setters.join(" and "),
                join_quote(&values)
            )
        },
    )
}

/// SELinux types a container may run as before v1.31.
const SELINUX_TYPES_1_0: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t"];

pub fn selinux_options_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    selinux_options(spec, SELINUX_TYPES_1_0)
}

/// v1.31 also allows `container_engine_t`, for container engines in pods.
pub fn selinux_options_1_31(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let types = [SELINUX_TYPES_1_0, &["container_engine_t"]].concat();
    selinux_options(spec, &types)
}

fn selinux_options(spec: &PodSpec, allowed: &[&str]) -> Option<Forbidden> {
    let mut types = BTreeSet::new();
    let (mut user_set, mut role_set) = (false, false);
    let mut invalid = |options: &SELinuxOptions| {
        let mut bad = false;
        let t = options.type_.as_deref().unwrap_or_default();
        if !allowed.contains(&t) {
            types.insert(t.to_string());
            bad = true;
        }
        if options.user.as_deref().is_some_and(|u| !u.is_empty()) {
            user_set = true;
            bad = true;
        }
        if options.role.as_deref().is_some_and(|r| !r.is_empty()) {
            role_set = true;
            bad = true;
        }
        bad
    };
    let mut setters = Vec::new();
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.se_linux_options.as_ref());
    if pod.is_some_and(&mut invalid) {
        setters.push("pod".to_string());
    }
    let bad = names_where(spec, |c| {
        c.security_context
            .and_then(|sc| sc.se_linux_options.as_ref())
            .is_some_and(&mut invalid)
    });
    if !bad.is_empty() {
        setters.push(containers(&bad));
    }
    let mut problems = Vec::new();
    if !types.is_empty() {
        let types: Vec<String> = types.into_iter().collect();
        problems.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if user_set {
        problems.push("user may not be set".to_string());
    }
    if role_set {
        problems.push("role may not be set".to_string());
    }
    Forbidden::unless(setters.is_empty(), "seLinuxOptions", || {
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            problems.join("; ")
        )
    })
}

/// `procMount` must be `Default` (or unset) in every container.
pub fn proc_mount_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut values = BTreeSet::new();
    let bad = names_where(spec, |c| {
        let bad = c
            .security_context
            .and_then(|sc| sc.proc_mount.as_deref())
            .filter(|m| *m != "Default");
        values.extend(bad);
        bad.is_some()
    });
    let values: Vec<&str> = values.into_iter().collect();
    Forbidden::unless(bad.is_empty(), "procMount", || {
        format!(
            "{} must not set securityContext.procMount to {}",
            containers(&bad),
            join_quote(&values)
        )
    })
}

/// From v1.35 a pod in its own user namespace (`hostUsers: false`) may
/// unmask `/proc` at `baseline`: root in the pod is not root on the node.
pub fn proc_mount_1_35(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if spec.host_users == Some(false) {
        return None;
    }
    proc_mount_1_0(meta, spec)
}

const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Before v1.19, seccomp was set by the alpha annotations only.
pub fn seccomp_profile_1_0(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let annotations = meta.annotations.as_ref();
    let allowed = |value: &str| {
        matches!(value, "runtime/default" | "docker/default") || value.starts_with("localhost/")
    };
    let mut bad = BTreeSet::new();
    let mut judge = |key: String| {
        if let Some(value) = annotations.and_then(|a| a.get(&key))
            && !allowed(value)
        {
            bad.insert(format!("{key}={}", go_quote(value)));
        }
    };
    judge(SECCOMP_POD_ANNOTATION.to_string());
    for c in visit::containers(spec) {
        judge(format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", c.name));
    }
    let bad: Vec<String> = bad.into_iter().collect();
    Forbidden::unless(bad.is_empty(), "seccompProfile", || {
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", bad.len()),
            bad.join(", ")
        )
    })
}

/// Profile types, seccomp and AppArmor, that confine a container.
pub fn profile_type_allowed(profile_type: &str) -> bool {
    matches!(profile_type, "RuntimeDefault" | "Localhost")
}

/// Who sets a profile type other than RuntimeDefault or Localhost, as PSA
/// names them (`pod`, then `containers "a", "b"`), and the types they set.
/// The pod's security context is another type than a container's, so its
/// profile comes in already read.
fn bad_profiles<'a>(
    spec: &'a PodSpec,
    pod: Option<&'a str>,
    container: impl Fn(&'a SecurityContext) -> Option<&'a str>,
) -> (Vec<String>, BTreeSet<&'a str>) {
    let mut setters = Vec::new();
    let mut types = BTreeSet::new();
    if let Some(t) = pod.filter(|t| !profile_type_allowed(t)) {
        setters.push("pod".to_string());
        types.insert(t);
    }
    let bad = names_where(spec, |c| {
        let bad = c
            .security_context
            .and_then(&container)
            .filter(|t| !profile_type_allowed(t));
        types.extend(bad);
        bad.is_some()
    });
    if !bad.is_empty() {
        setters.push(containers(&bad));
    }
    (setters, types)
}

/// From v1.19, the `seccompProfile` fields: anything but `RuntimeDefault`
/// or `Localhost` that is set is forbidden; unset is fine at `baseline`.
pub fn seccomp_profile_1_19(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref());
    let (setters, types) = bad_profiles(spec, pod.map(|p| p.type_.as_str()), |sc| {
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str())
    });
    let types: Vec<&str> = types.into_iter().collect();
    Forbidden::unless(setters.is_empty(), "seccompProfile", || {
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&types)
        )
    })
}

/// Sysctls that are namespaced and safe, allowed at `baseline`, by the
/// version that allowed them.
const SAFE_SYSCTLS: &[(u32, &str)] = &[
    (0, "kernel.shm_rmid_forced"),
    (0, "net.ipv4.ip_local_port_range"),
    (0, "net.ipv4.tcp_syncookies"),
    (0, "net.ipv4.ping_group_range"),
    (0, "net.ipv4.ip_unprivileged_port_start"),
    (27, "net.ipv4.ip_local_reserved_ports"),
    (29, "net.ipv4.tcp_keepalive_time"),
    (29, "net.ipv4.tcp_fin_timeout"),
    (29, "net.ipv4.tcp_keepalive_intvl"),
    (29, "net.ipv4.tcp_keepalive_probes"),
    (32, "net.ipv4.tcp_rmem"),
    (32, "net.ipv4.tcp_wmem"),
    (37, "net.ipv4.tcp_slow_start_after_idle"),
    (37, "net.ipv4.tcp_notsent_lowat"),
];

/// One function per version at which the list grew, as the registry
/// expects one per behaviour.
macro_rules! sysctls_since {
    ($($name:ident = $minor:literal),* $(,)?) => {$(
        pub fn $name(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
            sysctls(spec, $minor)
        }
    )*};
}

sysctls_since!(
    sysctls_1_0 = 0,
    sysctls_1_27 = 27,
    sysctls_1_29 = 29,
    sysctls_1_32 = 32,
    sysctls_1_37 = 37,
);

fn sysctls(spec: &PodSpec, minor: u32) -> Option<Forbidden> {
    let bad: Vec<&str> = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.sysctls.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| {
            !SAFE_SYSCTLS
                .iter()
                .any(|&(since, safe)| since <= minor && safe == *name)
        })
        .collect();
    Forbidden::unless(bad.is_empty(), "forbidden sysctls", || bad.join(", "))
}

pub fn windows_host_process(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut setters = Vec::new();
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.windows_options.as_ref())
        .and_then(|w| w.host_process);
    if pod == Some(true) {
        setters.push("pod".to_string());
    }
    let bad = names_where(spec, |c| {
        c.security_context
            .and_then(|sc| sc.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
    });
    if !bad.is_empty() {
        setters.push(containers(&bad));
    }
    Forbidden::unless(setters.is_empty(), "hostProcess", || {
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        )
    })
}
