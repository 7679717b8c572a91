//! Every check of the standards, the versions each changed at, and how a
//! level and version select them, as Pod Security Admission selects them.
//!
//! A check has one entry per version at which its behaviour changed; a
//! policy version uses the newest entry not newer than itself, and a check
//! with none is absent. `restricted` runs the `baseline` checks too, except
//! those a restricted check replaces. Checks run in the order of their IDs
//! (baseline first), so the violations of a pod are always listed in PSA's
//! order.

use crate::version::Version;
use crate::{baseline, restricted};
use agyn_policy_sdk::k8s_openapi::api::core::v1::PodSpec;
use agyn_policy_sdk::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use std::fmt;

/// A level of the standards.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Baseline,
    #[default]
    Restricted,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

/// Why a check forbids a pod: PSA's short reason and its detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: String,
    pub detail: String,
}

impl Forbidden {
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Option<Forbidden> {
        Some(Forbidden {
            reason: reason.into(),
            detail: detail.into(),
        })
    }

    /// `None` when `allowed`, else the violation. The detail is written
    /// only then: most pods pass most checks, and formatting every detail
    /// would cost more than the checks.
    pub fn unless<D: Into<String>>(
        allowed: bool,
        reason: impl Into<String>,
        detail: impl FnOnce() -> D,
    ) -> Option<Forbidden> {
        if allowed {
            None
        } else {
            Forbidden::new(reason, detail())
        }
    }
}

/// `reason (detail), reason (detail)`: PSA's list of violations.
impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

type CheckFn = fn(&ObjectMeta, &PodSpec) -> Option<Forbidden>;

/// One behaviour of a check, from a version of the standards on.
pub struct Entry {
    /// The minor version (`v1.N`) this behaviour starts at.
    pub since: u32,
    pub check: CheckFn,
    /// Baseline checks this restricted check replaces while it applies.
    pub overrides: &'static [&'static str],
}

pub struct Check {
    /// PSA's ID for the check; the order of IDs is the order of messages.
    pub id: &'static str,
    pub level: Level,
    pub entries: &'static [Entry],
}

const fn entry(since: u32, check: CheckFn) -> Entry {
    Entry {
        since,
        check,
        overrides: &[],
    }
}

const fn replacing(since: u32, check: CheckFn, overrides: &'static [&'static str]) -> Entry {
    Entry {
        since,
        check,
        overrides,
    }
}

/// Every check, baseline then restricted, each group sorted by ID.
pub const CHECKS: &[Check] = &[
    Check {
        id: "appArmorProfile",
        level: Level::Baseline,
        entries: &[entry(0, baseline::apparmor_profile)],
    },
    Check {
        id: "capabilities_baseline",
        level: Level::Baseline,
        entries: &[entry(0, baseline::capabilities)],
    },
    Check {
        id: "hostNamespaces",
        level: Level::Baseline,
        entries: &[entry(0, baseline::host_namespaces)],
    },
    Check {
        id: "hostPathVolumes",
        level: Level::Baseline,
        entries: &[entry(0, baseline::host_path_volumes)],
    },
    Check {
        id: "hostPorts",
        level: Level::Baseline,
        entries: &[entry(0, baseline::host_ports)],
    },
    Check {
        id: "hostProbesAndHostLifecycle",
        level: Level::Baseline,
        entries: &[entry(34, baseline::host_probes_and_lifecycle)],
    },
    Check {
        id: "privileged",
        level: Level::Baseline,
        entries: &[entry(0, baseline::privileged)],
    },
    Check {
        id: "procMount",
        level: Level::Baseline,
        entries: &[
            entry(0, baseline::proc_mount_1_0),
            entry(35, baseline::proc_mount_1_35),
        ],
    },
    Check {
        id: "seLinuxOptions",
        level: Level::Baseline,
        entries: &[
            entry(0, baseline::selinux_options_1_0),
            entry(31, baseline::selinux_options_1_31),
        ],
    },
    Check {
        id: "seccompProfile_baseline",
        level: Level::Baseline,
        entries: &[
            entry(0, baseline::seccomp_profile_1_0),
            entry(19, baseline::seccomp_profile_1_19),
        ],
    },
    Check {
        id: "sysctls",
        level: Level::Baseline,
        entries: &[
            entry(0, baseline::sysctls_1_0),
            entry(27, baseline::sysctls_1_27),
            entry(29, baseline::sysctls_1_29),
            entry(32, baseline::sysctls_1_32),
            entry(37, baseline::sysctls_1_37),
        ],
    },
    Check {
        id: "windowsHostProcess",
        level: Level::Baseline,
        entries: &[entry(0, baseline::windows_host_process)],
    },
    Check {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        entries: &[
            entry(8, restricted::allow_privilege_escalation_1_8),
            entry(25, restricted::allow_privilege_escalation_1_25),
        ],
    },
    Check {
        id: "capabilities_restricted",
        level: Level::Restricted,
        entries: &[
            replacing(
                22,
                restricted::capabilities_1_22,
                &["capabilities_baseline"],
            ),
            replacing(
                25,
                restricted::capabilities_1_25,
                &["capabilities_baseline"],
            ),
        ],
    },
    Check {
        id: "procMount_restricted",
        level: Level::Restricted,
        entries: &[replacing(35, baseline::proc_mount_1_0, &["procMount"])],
    },
    Check {
        id: "restrictedVolumes",
        level: Level::Restricted,
        entries: &[replacing(0, restricted::volumes, &["hostPathVolumes"])],
    },
    Check {
        id: "runAsNonRoot",
        level: Level::Restricted,
        entries: &[
            entry(0, restricted::run_as_non_root_1_0),
            entry(35, restricted::run_as_non_root_1_35),
        ],
    },
    Check {
        id: "runAsUser",
        level: Level::Restricted,
        entries: &[
            entry(23, restricted::run_as_user_1_23),
            entry(35, restricted::run_as_user_1_35),
        ],
    },
    Check {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        entries: &[
            replacing(
                19,
                restricted::seccomp_profile_1_19,
                &["seccompProfile_baseline"],
            ),
            replacing(
                25,
                restricted::seccomp_profile_1_25,
                &["seccompProfile_baseline"],
            ),
        ],
    },
];

impl Check {
    /// The behaviour at `minor`, if the check exists there.
    fn at(&self, minor: u32) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.since <= minor)
    }
}

/// What the checks of `level` at `version` forbid in a pod, in PSA's order.
pub fn evaluate(
    level: Level,
    version: Version,
    meta: &ObjectMeta,
    spec: &PodSpec,
) -> Vec<Forbidden> {
    let minor = version.minor();
    let replaced: Vec<&str> = CHECKS
        .iter()
        .filter(|c| c.level == Level::Restricted && level == Level::Restricted)
        .filter_map(|c| c.at(minor))
        .flat_map(|e| e.overrides.iter().copied())
        .collect();
    CHECKS
        .iter()
        .filter(|c| c.level <= level && !replaced.contains(&c.id))
        .filter_map(|c| c.at(minor))
        .filter_map(|e| (e.check)(meta, spec))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_in_psa_order() {
        for pair in CHECKS.windows(2) {
            let key = |c: &Check| (c.level, c.id.as_bytes());
            assert!(
                key(&pair[0]) < key(&pair[1]),
                "{} must come after {}",
                pair[0].id,
                pair[1].id
            );
        }
    }

    #[test]
    fn entries_are_in_version_order() {
        for check in CHECKS {
            assert!(
                check.entries.windows(2).all(|e| e[0].since < e[1].since),
                "{}",
                check.id
            );
        }
    }

    #[test]
    fn only_restricted_checks_replace_and_only_baseline_ones() {
        for check in CHECKS {
            for id in check.entries.iter().flat_map(|e| e.overrides) {
                assert_eq!(check.level, Level::Restricted, "{}", check.id);
                let target = CHECKS.iter().find(|c| c.id == *id).expect(id);
                assert_eq!(target.level, Level::Baseline, "{id}");
            }
        }
    }

    #[test]
    fn the_newest_entry_is_latest() {
        let newest = CHECKS
            .iter()
            .flat_map(|c| c.entries.iter().map(|e| e.since))
            .max();
        assert_eq!(newest, Some(crate::version::LATEST_MINOR));
    }
}
