//! Admission decisions with real compiled policies: the built-in set on
//! Pods and workloads, mutation then validation, modes, failure policies,
//! and everything that is not judged.

mod common;

use agyn_admission::admission::{PolicyOutcome, review};
use agyn_admission::config::Mode;
use agyn_admission::engine::{Call, EvalError, Limits};
use common::{builtin, create, engine, load_set, yaml};
use serde_json::{Value, json};
use std::time::Duration;

const BARE_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: bare, labels: {app: web}}
spec:
  containers:
    - name: web
      image: nginx:1.27
  initContainers:
    - name: setup
      image: busybox:1.37
"#;

const ROOT_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy}
spec:
  selector: {matchLabels: {app: legacy}}
  template:
    metadata: {labels: {app: legacy}}
    spec:
      securityContext: {runAsUser: 0}
      containers:
        - name: app
          image: legacy:1
"#;

fn apply(mut object: Value, patch: &json_patch::Patch) -> Value {
    json_patch::patch(&mut object, patch).expect("the patch applies");
    object
}

#[test]
fn a_bare_pod_is_fixed_by_mutation_and_the_result_passes_every_built_in_policy() {
    let engine = engine();
    let set = builtin(&engine);
    let pod = yaml(BARE_POD);
    let decision = review(&set, &create("agyn", pod.clone())).unwrap();
    assert!(decision.allowed(), "{:?}", decision.violations());
    assert!(!decision.patch.0.is_empty());

    // As the API server does: apply the patch, send the result to validation.
    let patched = apply(pod, &decision.patch);
    assert_eq!(
        patched["spec"]["automountServiceAccountToken"],
        json!(false)
    );
    assert_eq!(
        patched["spec"]["securityContext"]["runAsNonRoot"],
        json!(true)
    );
    assert_eq!(
        patched["spec"]["initContainers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    // pod-security makes it meet the restricted standard in `agyn`.
    assert_eq!(
        patched["spec"]["securityContext"]["seccompProfile"],
        json!({"type": "RuntimeDefault"})
    );
    assert_eq!(
        patched["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"],
        json!(false)
    );
    let again = review(&set, &create("agyn", patched)).unwrap();
    assert!(
        again.patch.0.is_empty(),
        "a compliant pod needs no patch: {:?}",
        again.patch
    );
    let ran: Vec<(&str, bool)> = again
        .results
        .iter()
        .map(|r| {
            (
                r.policy.as_str(),
                matches!(r.outcome, PolicyOutcome::Allowed { .. }),
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            ("run-as-non-root", true),
            ("readonly-root-filesystem", true),
            ("drop-capabilities", true),
            ("service-account-token", true),
            ("workload-isolation", true),
            ("pod-security", true),
        ]
    );
}

#[test]
fn a_deployment_whose_template_runs_as_root_is_denied_with_the_container_and_field() {
    let engine = engine();
    let decision = review(&builtin(&engine), &create("agyn", yaml(ROOT_DEPLOYMENT))).unwrap();
    assert!(!decision.allowed());
    let messages: Vec<String> = decision
        .violations()
        .iter()
        .map(|v| format!("{}: {}", v.policy, v.message))
        .collect();
    assert_eq!(
        messages,
        [
            "run-as-non-root: container \"app\": securityContext.runAsUser must be a non-zero UID (is 0)",
            "pod-security: violates PodSecurity \"restricted:latest\": runAsUser=0 (pod must not set runAsUser=0)",
        ]
    );
    // Mutation still filled what was unset, on the template's paths.
    let paths: Vec<String> = decision
        .patch
        .0
        .iter()
        .map(|op| op.path().to_string())
        .collect();
    assert!(
        paths.iter().all(|p| p.starts_with("/spec/template/")),
        "{paths:?}"
    );
}

#[test]
fn cronjob_templates_are_judged_and_patched_at_their_own_path() {
    let engine = engine();
    let cronjob = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "job:1"}]}}}}}
    });
    let decision = review(&builtin(&engine), &create("agyn", cronjob.clone())).unwrap();
    assert!(decision.allowed());
    let patched = apply(cronjob, &decision.patch);
    assert_eq!(
        patched.pointer("/spec/jobTemplate/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem"),
        Some(&json!(true))
    );
}

#[test]
fn without_mutation_a_bare_pod_is_denied_by_every_policy_but_isolation() {
    let engine = engine();
    let set = load_set(
        &engine,
        r#"
apiVersion: agyn.io/v1alpha1
kind: PolicySet
policies:
  - {name: run-as-non-root}
  - {name: readonly-root-filesystem}
  - {name: drop-capabilities}
  - {name: service-account-token}
  - {name: workload-isolation}
"#,
    )
    .unwrap();
    let decision = review(&set, &create("agyn", yaml(BARE_POD))).unwrap();
    assert!(decision.patch.0.is_empty());
    let mut denying: Vec<String> = decision
        .violations()
        .into_iter()
        .map(|v| v.policy)
        .collect();
    denying.dedup();
    assert_eq!(
        denying,
        [
            "run-as-non-root",
            "readonly-root-filesystem",
            "drop-capabilities",
            "service-account-token"
        ]
    );
}

#[test]
fn warn_and_audit_modes_admit_and_report() {
    let engine = engine();
    let set = load_set(
        &engine,
        r#"
apiVersion: agyn.io/v1alpha1
kind: PolicySet
policies:
  - {name: run-as-non-root, mode: warn}
  - {name: readonly-root-filesystem, mode: audit, mutate: true}
"#,
    )
    .unwrap();
    let decision = review(&set, &create("agyn", yaml(BARE_POD))).unwrap();
    assert!(decision.allowed());
    // Only enforcing policies mutate.
    assert!(decision.patch.0.is_empty());
    let warned: Vec<_> = decision.warnings().into_iter().map(|v| v.policy).collect();
    assert!(!warned.is_empty() && warned.iter().all(|p| p == "run-as-non-root"));
    let audited: Vec<_> = decision.audit().into_iter().map(|v| v.policy).collect();
    assert_eq!(
        audited,
        ["readonly-root-filesystem", "readonly-root-filesystem"]
    );
    assert_eq!(decision.results[0].mode, Mode::Warn);
}

#[test]
fn a_policy_that_returns_an_invalid_object_fails_by_its_failure_policy() {
    let engine = engine();
    let set = |failure: &str, policy: &str| {
        load_set(
            &engine,
            &format!(
                r#"
apiVersion: agyn.io/v1alpha1
kind: PolicySet
policies:
  - name: broken
    module: {module}
    policy: {policy}
    mutate: true
    failurePolicy: {failure}
"#,
                module = common::HOSTILE_WASM
            ),
        )
        .unwrap()
    };
    let pod = || create("agyn", yaml(BARE_POD));

    let decision = review(&set("Fail", "bad-json"), &pod()).unwrap();
    assert!(!decision.allowed());
    let message = &decision.violations()[0].message;
    assert!(
        message.starts_with(
            "the policy failed: it returned a malformed verdict: invalid mutated object: not JSON"
        ),
        "{message}"
    );
    assert!(
        decision.patch.0.is_empty(),
        "a failed mutation changes nothing"
    );

    let decision = review(&set("Fail", "renames"), &pod()).unwrap();
    assert_eq!(
        decision.violations()[0].message,
        "the policy failed: it returned a malformed verdict: invalid mutated object: it changed /metadata/name, which a policy may not"
    );

    let decision = review(&set("Ignore", "trap"), &pod()).unwrap();
    assert!(decision.allowed());
    assert!(matches!(
        decision.results[0].outcome,
        PolicyOutcome::Failed(EvalError::Trap(_))
    ));
}

#[test]
fn what_is_not_judged_is_skipped() {
    let engine = engine();
    let set = builtin(&engine);
    let root_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"securityContext": {"runAsUser": 0}, "containers": [{"name": "c", "image": "i"}]}});

    let exempt = review(&set, &create("kube-system", root_pod.clone())).unwrap();
    assert_eq!(
        exempt.skipped.as_deref(),
        Some("namespace kube-system is exempt")
    );
    assert!(exempt.allowed() && exempt.results.is_empty());

    let mut delete = create("agyn", root_pod.clone());
    delete.operation = kube::core::admission::Operation::Delete;
    assert!(review(&set, &delete).unwrap().skipped.is_some());

    let mut status = create("agyn", root_pod.clone());
    status.sub_resource = Some("status".into());
    assert!(review(&set, &status).unwrap().skipped.is_some());

    let mut ephemeral = create("agyn", root_pod.clone());
    ephemeral.sub_resource = Some("ephemeralcontainers".into());
    ephemeral.operation = kube::core::admission::Operation::Update;
    assert!(!review(&set, &ephemeral).unwrap().allowed());

    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert_eq!(
        review(&set, &create("agyn", config_map))
            .unwrap()
            .skipped
            .as_deref(),
        Some("no policy judges a ConfigMap")
    );
}

#[test]
fn malformed_objects_are_review_errors() {
    let engine = engine();
    let set = builtin(&engine);
    let no_template = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}});
    assert_eq!(
        review(&set, &create("agyn", no_template))
            .unwrap_err()
            .to_string(),
        "the Deployment has no pod template at /spec/template"
    );
    let mut no_object = create("agyn", yaml(BARE_POD));
    no_object.object = None;
    assert_eq!(
        review(&set, &no_object).unwrap_err().to_string(),
        "the request has no object"
    );
}

#[test]
fn the_policies_as_separate_components_decide_as_the_bundle_does() {
    let engine = engine();
    let set = load_set(
        &engine,
        &format!(
            r#"
apiVersion: agyn.io/v1alpha1
kind: PolicySet
policies:
  - {{name: run-as-non-root, module: {}, mutate: true}}
  - {{name: readonly-root-filesystem, module: {}, mutate: true}}
  - {{name: drop-capabilities, module: {}, mutate: true}}
  - {{name: service-account-token, module: {}, mutate: true}}
  - {{name: workload-isolation, module: {}, mutate: true}}
  - {{name: pod-security, module: {}, mutate: true, match: {{namespaces: [agyn]}}, settings: {{workloadTemplates: deny}}}}
"#,
            env!("AGYN_RUN_AS_NON_ROOT_WASM"),
            env!("AGYN_READONLY_ROOT_FILESYSTEM_WASM"),
            env!("AGYN_DROP_CAPABILITIES_WASM"),
            env!("AGYN_SERVICE_ACCOUNT_TOKEN_WASM"),
            env!("AGYN_WORKLOAD_ISOLATION_WASM"),
            env!("AGYN_POD_SECURITY_WASM"),
        ),
    )
    .unwrap();
    assert_eq!(set.components.len(), 6);
    let bundle = builtin(&engine);
    for object in [yaml(BARE_POD), yaml(ROOT_DEPLOYMENT)] {
        let request = create("agyn", object);
        let separate = review(&set, &request).unwrap();
        let together = review(&bundle, &request).unwrap();
        // Each mutation lands in its own call; the earlier policies are then
        // judged again on the final object, so the outcome is the same.
        assert_eq!(separate.patch, together.patch);
        assert_eq!(separate.violations(), together.violations());
        let outcomes = |d: &agyn_admission::admission::Decision| {
            d.results
                .iter()
                .map(|r| (r.outcome.clone(), r.mutated))
                .collect::<Vec<_>>()
        };
        assert_eq!(outcomes(&separate), outcomes(&together));
    }
}

/// Policies of one component run in one call; when it fails, each runs
/// alone, so each reports its own cause and the others their verdicts.
#[test]
fn a_failing_policy_fails_alone_with_its_own_cause() {
    let engine = engine();
    let entries: String = ["memory-bomb", "trap", "wrong-count", "allow"]
        .iter()
        .map(|p| {
            format!(
                "  - {{name: {p}, module: {}, memoryLimit: 16Mi, failurePolicy: Ignore}}\n",
                common::HOSTILE_WASM
            )
        })
        .collect();
    let set = load_set(
        &engine,
        &format!("apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n{entries}"),
    )
    .unwrap();
    let decision = review(&set, &create("agyn", yaml(BARE_POD))).unwrap();
    let outcomes: Vec<(&str, &PolicyOutcome)> = decision
        .results
        .iter()
        .map(|r| (r.policy.as_str(), &r.outcome))
        .collect();
    assert!(
        matches!(
            outcomes[..],
            [
                ("memory-bomb", PolicyOutcome::Failed(EvalError::Memory(_))),
                ("trap", PolicyOutcome::Failed(EvalError::Trap(_))),
                (
                    "wrong-count",
                    PolicyOutcome::Failed(EvalError::Malformed(_))
                ),
                ("allow", PolicyOutcome::Allowed { .. }),
            ]
        ),
        "{outcomes:#?}"
    );
}

/// A privileged, root, hostPID pod padded to 653 KiB (5,000 containers
/// and a long annotation): judged together, the built-in policies outgrow
/// one call's memory cap; alone, most fit, so the pod is denied on its
/// violations even when every failure policy is Ignore.
#[test]
fn a_padded_privileged_pod_is_denied_even_when_failures_are_ignored() {
    let engine = engine();
    // Ignore, and a long deadline: this is about memory, on a busy machine.
    let set_text = include_str!("../policies/agyn-policy-set.yaml").replace(
        "    mutate: true\n",
        "    mutate: true\n    failurePolicy: Ignore\n    timeout: 10s\n",
    );
    assert_eq!(set_text.matches("failurePolicy: Ignore").count(), 6);
    let set = load_set(&engine, &set_text).unwrap();
    let containers: Vec<Value> = (0..5000)
        .map(|i| {
            json!({"name": format!("shell{i}"), "image": "alpine",
                "securityContext": {"privileged": true, "runAsUser": 0}})
        })
        .collect();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "padded", "namespace": "agyn",
            "annotations": {"padding": "x".repeat(205_000)}},
        "spec": {"hostPID": true, "containers": containers},
    });
    let size = pod.to_string().len();
    assert!((630 << 10..670 << 10).contains(&size), "{size} bytes");
    // The premise: the six in one call outgrow the default memory cap.
    let calls: Vec<Call> = set
        .policies
        .iter()
        .map(|p| Call {
            policy: p.inner.clone(),
            settings: p.settings.clone(),
            mutate: p.mutate,
        })
        .collect();
    let together = set.components[0].evaluate(
        r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"agyn","operation":"CREATE","userInfo":{},"dryRun":false}"#,
        &pod.to_string(),
        None,
        &calls,
        Limits {
            deadline: Duration::from_secs(10),
            ..Limits::default()
        },
    );
    assert!(
        matches!(together, Err(EvalError::Memory(_))),
        "{:?}",
        together.map(|_| ())
    );
    let decision = review(&set, &create("agyn", pod)).unwrap();
    assert!(!decision.allowed(), "{:#?}", decision.results);
    let violations = decision.violations();
    assert!(
        violations.iter().any(|v| v.policy == "run-as-non-root"),
        "{violations:#?}"
    );
    let memory: Vec<&str> = decision
        .results
        .iter()
        .filter(|r| matches!(r.outcome, PolicyOutcome::Failed(EvalError::Memory(_))))
        .map(|r| r.policy.as_str())
        .collect();
    assert!(
        memory.len() < 6,
        "only the policies that outgrow it alone: {memory:?}"
    );
}
