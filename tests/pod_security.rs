//! The Pod Security Standards fixtures through the compiled WASM: every
//! case of `policies/pod-security/tests/fixtures` checked by the built
//! binary's `check`, with the example policy sets at `latest` and a set
//! per other level and version a case names. The same cases run natively
//! in the policy's own tests; here they prove the component, the policy
//! set and `check` give the same verdicts and messages.

mod common;
#[path = "../policies/pod-security/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agyn-admission");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The policy set for a level and version: the examples at `latest`, as
/// users run them; a written one otherwise.
fn policy_set(dir: &Path, level: &str, version: &str) -> PathBuf {
    if version == "latest" {
        return repo().join(format!("examples/policy-sets/pss-{level}.yaml"));
    }
    let path = dir.join(format!("pss-{level}-{version}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: pod-security\n    settings: {{level: {level}, version: {version}}}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_with_the_example_policy_sets_gives_psas_verdicts() {
    let cases = support::load(&repo().join("policies/pod-security/tests/fixtures"));
    let work = common::temp_dir("pss-fixtures");

    // Each level and version, with the cases that name it.
    let mut groups: BTreeMap<(String, String), Vec<(&support::Case, &support::Expectation)>> =
        BTreeMap::new();
    for case in &cases {
        for e in &case.expect {
            groups
                .entry((e.level.clone(), e.version.clone()))
                .or_default()
                .push((case, e));
        }
    }

    let mut failures = Vec::new();
    let mut judged = 0;
    for ((level, version), group) in &groups {
        let manifests = work.join(format!("{level}-{version}"));
        std::fs::create_dir_all(&manifests).unwrap();
        for (case, _) in group {
            let path = manifests.join(format!("{}.yaml", case.name));
            std::fs::write(path, serde_json::to_string_pretty(&case.pod).unwrap()).unwrap();
        }
        let out = Command::new(BIN)
            .arg("check")
            .args(["--cache-dir", common::cache_dir().to_str().unwrap()])
            .arg("--policies")
            .arg(policy_set(&work, level, version))
            .args(["-o", "json"])
            .arg(&manifests)
            .output()
            .unwrap();
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{level}:{version}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let denied = group.iter().any(|(_, e)| e.violations.is_some());
        assert_eq!(
            out.status.code(),
            Some(i32::from(denied)),
            "{level}:{version}"
        );
        for (case, e) in group {
            let result = results
                .iter()
                .find(|r| r["name"] == case.name.as_str())
                .unwrap_or_else(|| panic!("{}: no result", case.name));
            let violations = result["violations"].as_array().unwrap();
            let got = match violations.as_slice() {
                [] => None,
                [one] => {
                    assert_eq!(one["policy"], "pod-security");
                    one["message"].as_str().map(str::to_string)
                }
                more => panic!("{}: one message per pod, got {more:?}", case.name),
            };
            assert_eq!(result["allowed"], got.is_none(), "{}", case.name);
            failures.extend(e.mismatch(case, got.as_deref()));
            judged += 1;
        }
    }
    support::assert_none_differ(&failures, judged);
    assert!(judged > 150, "only {judged} verdicts");
}

/// The examples hold `pod-security` alone: enforced, no mutation, no
/// exemptions beyond the one every set has.
#[test]
fn the_example_policy_sets_are_plain_psa() {
    for level in ["baseline", "restricted"] {
        let path = repo().join(format!("examples/policy-sets/pss-{level}.yaml"));
        let set: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let policies = set["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 1, "{level}");
        let p = &policies[0];
        assert_eq!(p["name"], "pod-security");
        assert_eq!(p["settings"]["level"], level);
        assert_eq!(p["settings"]["version"], "latest");
        for absent in ["mutate", "mode", "match"] {
            assert!(p.get(absent).is_none(), "{level}: {absent} set");
        }
        assert!(set.get("exemptions").is_none(), "{level}: exemptions");
    }
}

/// A Deployment whose template breaks the standards is admitted with PSA's
/// warning, as PSA admits it (its pods are what PSA rejects); the exit code
/// says all was admitted.
#[test]
fn a_workload_template_gets_psas_warning() {
    let dir = common::temp_dir("pss-deployment");
    let manifest = dir.join("deployment.yaml");
    std::fs::write(
        &manifest,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .args(["--cache-dir", common::cache_dir().to_str().unwrap()])
        .arg("--policies")
        .arg(repo().join("examples/policy-sets/pss-restricted.yaml"))
        .args(["-o", "json"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["allowed"], true);
    assert_eq!(
        results[0]["warnings"][0]["message"],
        r#"would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "web" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "web" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "web" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "web" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#
    );
}
