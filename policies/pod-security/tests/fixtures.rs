//! The Pod Security Standards fixtures, run natively: every case at every
//! level and version it names must get PSA's verdict and message.

mod support;

use agyn_policy_sdk::Policy;
use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
use agyn_policy_sdk::testing::{request, run, settings};
use pod_security::PodSecurity;
use pod_security::registry::CHECKS;
use std::path::Path;
use support::{Case, Expectation};

fn cases() -> Vec<Case> {
    support::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn judge(case: &Case, e: &Expectation, mutate: bool) -> (Option<String>, Pod) {
    let pod: Pod = serde_json::from_value(case.pod.clone())
        .unwrap_or_else(|err| panic!("{}: not a Pod: {err}", case.name));
    let settings = settings::<PodSecurity>(&format!(
        r#"{{"level": "{}", "version": "{}"}}"#,
        e.level, e.version
    ));
    let result = run::<PodSecurity>(&request("pss-fixtures"), pod, &settings, mutate);
    assert!(result.outcome.violations.len() <= 1, "one message per pod");
    (result.outcome.violations.into_iter().next(), result.object)
}

#[test]
fn every_case_gets_psas_verdict() {
    let mut failures = Vec::new();
    let mut judged = 0;
    for case in cases() {
        for e in &case.expect {
            let (got, _) = judge(&case, e, false);
            failures.extend(e.mismatch(&case, got.as_deref()));
            judged += 1;
        }
    }
    support::assert_none_differ(&failures, judged);
}

/// The acceptance: every check has a fixture file with a pod it admits and
/// a pod it denies; the only other file holds the documentation's pods.
#[test]
fn every_check_has_passing_and_failing_fixtures() {
    let cases = cases();
    for check in CHECKS {
        let of_check: Vec<&Case> = cases.iter().filter(|c| c.check == check.id).collect();
        let level = format!("{:?}", check.level).to_lowercase();
        let verdicts = || {
            of_check
                .iter()
                .flat_map(|c| &c.expect)
                .filter(|e| e.level == level)
        };
        assert!(
            verdicts().any(|e| e.violations.is_none()),
            "{}: no fixture passes at {level}",
            check.id
        );
        assert!(
            verdicts().any(|e| e.violations.is_some()),
            "{}: no fixture fails at {level}",
            check.id
        );
    }
    for case in &cases {
        assert!(
            case.check == "documentation" || CHECKS.iter().any(|c| c.id == case.check),
            "fixture file {}.yaml names no check",
            case.check
        );
    }
}

/// With mutation, every pod that fails `restricted` only for what it left
/// unset is admitted, and mutation never makes a denied pod's message
/// change for what it did set.
#[test]
fn mutation_fills_only_what_is_unset() {
    let restricted = Expectation {
        level: "restricted".into(),
        version: "latest".into(),
        violations: None,
    };
    for case in cases() {
        let (before, _) = judge(&case, &restricted, false);
        let (after, mutated) = judge(&case, &restricted, true);
        if before.is_none() {
            assert_eq!(after, None, "{}: mutation broke a compliant pod", case.name);
        }
        // Mutation only adds: whatever the pod set is still there.
        let original: Pod = serde_json::from_value(case.pod.clone()).unwrap();
        let was = serde_json::to_value(&original).unwrap();
        let now = serde_json::to_value(&mutated).unwrap();
        let patch = json_patch::diff(&was, &now);
        for op in patch.0 {
            assert!(
                matches!(op, json_patch::PatchOperation::Add(_)),
                "{}: mutation did more than add: {op:?}",
                case.name
            );
        }
    }
}

#[test]
fn settings_are_checked() {
    let entry = agyn_policy_sdk::entry::<PodSecurity>();
    assert!(
        entry
            .validate_settings(r#"{"level": "baseline", "version": "v1.30"}"#)
            .is_ok()
    );
    for bad in [
        r#"{"level": "privileged"}"#,
        r#"{"version": "1.30"}"#,
        r#"{"levle": "baseline"}"#,
        r#"{"exemptRuntimeClasses": [""]}"#,
    ] {
        assert!(entry.validate_settings(bad).is_err(), "{bad} accepted");
    }
    assert_eq!(PodSecurity::NAME, "pod-security");
}

/// PSA admits a workload whose template violates the standards, with a
/// warning, and rejects its pods; `workloadTemplates: deny` rejects the
/// workload itself.
#[test]
fn a_workload_template_is_warned_about_as_psa_does() {
    let mut deployment = request("pss-fixtures");
    deployment.kind.kind = "Deployment".into();
    let pod = agyn_policy_sdk::testing::pod(
        "{kind: Pod, spec: {containers: [{name: app, image: nginx, securityContext: {privileged: true}}]}}",
    );
    let expected = "PodSecurity \"baseline:latest\": privileged (container \"app\" must not set securityContext.privileged=true)";

    let warn = settings::<PodSecurity>(r#"{"level": "baseline"}"#);
    let out = run::<PodSecurity>(&deployment, pod.clone(), &warn, false).outcome;
    assert_eq!(out.violations, Vec::<String>::new());
    assert_eq!(out.warnings, [format!("would violate {expected}")]);

    let deny = settings::<PodSecurity>(r#"{"level": "baseline", "workloadTemplates": "deny"}"#);
    let out = run::<PodSecurity>(&deployment, pod.clone(), &deny, false).outcome;
    assert_eq!(out.violations, [format!("violates {expected}")]);

    // A Pod is denied whatever the setting.
    let out = run::<PodSecurity>(&request("pss-fixtures"), pod, &warn, false).outcome;
    assert_eq!(out.violations, [format!("violates {expected}")]);
}

#[test]
fn exempt_runtime_classes_and_ignored_subresources_are_not_checked() {
    let pod = agyn_policy_sdk::testing::pod(
        "{kind: Pod, spec: {runtimeClassName: kata, hostNetwork: true, containers: [{name: app, image: nginx}]}}",
    );
    let exempt =
        settings::<PodSecurity>(r#"{"level": "baseline", "exemptRuntimeClasses": ["kata"]}"#);
    let out = run::<PodSecurity>(&request("ns"), pod.clone(), &exempt, true);
    assert!(out.outcome.is_allowed());
    assert_eq!(out.object, pod, "nothing mutated either");

    let other =
        settings::<PodSecurity>(r#"{"level": "baseline", "exemptRuntimeClasses": ["gvisor"]}"#);
    assert!(
        !run::<PodSecurity>(&request("ns"), pod.clone(), &other, false)
            .outcome
            .is_allowed()
    );

    let mut status = request("ns");
    status.sub_resource = Some("status".into());
    assert!(
        run::<PodSecurity>(&status, pod.clone(), &other, false)
            .outcome
            .is_allowed()
    );
    let mut ephemeral = request("ns");
    ephemeral.sub_resource = Some("ephemeralcontainers".into());
    assert!(
        !run::<PodSecurity>(&ephemeral, pod, &other, false)
            .outcome
            .is_allowed()
    );
}

fn mutated(yaml: &str, level: &str) -> (Pod, agyn_policy_sdk::Outcome) {
    let settings = settings::<PodSecurity>(&format!(r#"{{"level": "{level}"}}"#));
    let r = run::<PodSecurity>(
        &request("agyn"),
        agyn_policy_sdk::testing::pod(yaml),
        &settings,
        true,
    );
    (r.object, r.outcome)
}

#[test]
fn mutation_makes_a_bare_pod_restricted() {
    let bare = "{kind: Pod, spec: {initContainers: [{name: init, image: busybox}], containers: [{name: app, image: nginx}]}}";
    let (pod, outcome) = mutated(bare, "restricted");
    assert!(outcome.is_allowed(), "{:?}", outcome.violations);
    let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    for list in ["initContainers", "containers"] {
        let sc = &spec[list][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{list}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{list}"
        );
    }

    // baseline asks nothing to be set: nothing is.
    let (pod, outcome) = mutated(bare, "baseline");
    assert!(outcome.is_allowed());
    assert_eq!(pod, agyn_policy_sdk::testing::pod(bare));

    // A Windows pod gets what Windows allows, and is then compliant.
    let windows = "{kind: Pod, spec: {os: {name: windows}, containers: [{name: app, image: iis}]}}";
    let (pod, outcome) = mutated(windows, "restricted");
    assert!(outcome.is_allowed(), "{:?}", outcome.violations);
    let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
    assert_eq!(
        spec["securityContext"],
        serde_json::json!({"runAsNonRoot": true})
    );
    assert!(spec["containers"][0].get("securityContext").is_none());
}

#[test]
fn mutation_never_overrides_what_the_pod_set() {
    // Explicit insecure values stay, and are denied with PSA's message.
    let (pod, outcome) = mutated(
        "{kind: Pod, spec: {securityContext: {runAsNonRoot: false, seccompProfile: {type: Unconfined}}, containers: [{name: app, image: nginx, securityContext: {allowPrivilegeEscalation: true}}]}}",
        "restricted",
    );
    let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
    assert_eq!(spec["securityContext"]["runAsNonRoot"], false);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "Unconfined"
    );
    assert_eq!(
        spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
        true
    );
    assert_eq!(
        outcome.violations,
        [
            "violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false), seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
        ]
    );

    // A privileged container is not given allowPrivilegeEscalation=false,
    // which the API server would refuse alongside privileged: it is denied
    // for being privileged instead.
    let (pod, outcome) = mutated(
        "{kind: Pod, spec: {containers: [{name: app, image: nginx, securityContext: {privileged: true}}]}}",
        "restricted",
    );
    let sc = serde_json::to_value(&pod.spec.unwrap().containers[0].security_context).unwrap();
    assert!(sc.get("allowPrivilegeEscalation").is_none());
    assert!(
        outcome.violations[0].contains(
            "privileged (container \"app\" must not set securityContext.privileged=true)"
        )
    );

    // A user-namespaced pod may run as root from v1.35: no runAsNonRoot.
    let (pod, outcome) = mutated(
        "{kind: Pod, spec: {hostUsers: false, containers: [{name: app, image: nginx}]}}",
        "restricted",
    );
    assert!(outcome.is_allowed(), "{:?}", outcome.violations);
    assert_eq!(
        pod.spec.unwrap().security_context.unwrap().run_as_non_root,
        None
    );
}

/// The API server turns a host-network pod's container ports into host
/// ports, and copies AppArmor annotations into fields, for pods only: PSA's
/// warning about a template shows neither, the pods' denials both.
#[test]
fn templates_get_only_the_defaults_the_api_server_gives_them() {
    let yaml = "{kind: Pod, metadata: {annotations: {container.apparmor.security.beta.kubernetes.io/app: unconfined}}, spec: {hostNetwork: true, containers: [{name: app, image: nginx, ports: [{containerPort: 80}]}]}}";
    let baseline = settings::<PodSecurity>(r#"{"level": "baseline"}"#);
    let mut deployment = request("ns");
    deployment.kind.kind = "Deployment".into();
    let template = run::<PodSecurity>(
        &deployment,
        agyn_policy_sdk::testing::pod(yaml),
        &baseline,
        false,
    );
    assert_eq!(
        template.outcome.warnings,
        [
            "would violate PodSecurity \"baseline:latest\": forbidden AppArmor profile (annotation must not set AppArmor profile type to \"container.apparmor.security.beta.kubernetes.io/app=\"unconfined\"\"), host namespaces (hostNetwork=true)"
        ]
    );
    let pod = run::<PodSecurity>(
        &request("ns"),
        agyn_policy_sdk::testing::pod(yaml),
        &baseline,
        false,
    );
    assert_eq!(
        pod.outcome.violations,
        [
            "violates PodSecurity \"baseline:latest\": forbidden AppArmor profiles (container \"app\" and annotation must not set AppArmor profile type to \"Unconfined\", \"container.apparmor.security.beta.kubernetes.io/app=\"unconfined\"\"), host namespaces (hostNetwork=true), hostPort (container \"app\" uses hostPort 80)"
        ]
    );
}
