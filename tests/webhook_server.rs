//! `agyn-admission serve` end to end, with the test playing the API
//! server: AdmissionReview v1 over TLS from a client that trusts only the
//! test CA, the mutating webhook's patch applied before validation.

mod common;
mod webhook_harness;

use common::yaml;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use webhook_harness::{Server, create, replace, review};

const TYPICAL_POD: &str = include_str!("data/typical-pod.yaml");

/// A pod that sets none of the fields the built-in policies ask for: the
/// mutating webhook can fix all of it.
const BARE_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: agyn}
spec:
  containers:
    - name: app
      image: ghcr.io/agynio/app:1.0
      env: [{name: API_KEY, value: s3cr3t-do-not-log}]
"#;

/// A pod that asks for what the policies forbid: no mutation overrides an
/// explicit choice, so it is denied even after the mutating webhook.
const ROOT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: root, namespace: agyn}
spec:
  containers:
    - name: app
      image: nginx
      securityContext:
        runAsUser: 0
        readOnlyRootFilesystem: false
        capabilities: {add: [NET_ADMIN]}
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: agyn}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: nginx}
"#;

fn policy_set(policies: &str) -> String {
    format!("apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n{policies}")
}

/// A set with one hostile policy that never returns.
fn hanging_set(failure_policy: &str, timeout: &str) -> String {
    policy_set(&format!(
        "  - name: hangs\n    module: {}\n    policy: loop\n    timeout: {timeout}\n    failurePolicy: {failure_policy}\n",
        common::HOSTILE_WASM
    ))
}

fn messages(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_compliant_pod_is_admitted_unchanged() {
    let server = Server::start(None, &[]);
    let admission = server.admit(&create("agyn", yaml(TYPICAL_POD))).await;
    assert_eq!(admission.mutation["allowed"], true);
    assert!(
        admission.mutation.get("patch").is_none(),
        "no patch when nothing changes"
    );
    assert_eq!(
        admission.validation["allowed"], true,
        "{}",
        admission.validation
    );
    assert!(admission.validation.get("warnings").is_none());
    assert!(admission.validation.get("status").is_none());
}

#[tokio::test]
async fn a_violating_pod_is_denied_with_every_message() {
    let server = Server::start(None, &[]);
    let admission = server.admit(&create("agyn", yaml(ROOT_POD))).await;
    let validation = admission.validation;
    assert_eq!(validation["allowed"], false);
    assert_eq!(validation["status"]["code"], 403);
    assert_eq!(validation["status"]["reason"], "Forbidden");
    let message = messages(&validation);
    for expected in [
        r#"[run-as-non-root] container "app": securityContext.runAsUser must be a non-zero UID (is 0)"#,
        r#"[readonly-root-filesystem] container "app": securityContext.readOnlyRootFilesystem must be true (is false)"#,
        r#"[drop-capabilities] container "app": securityContext.capabilities.add must be empty (is ["NET_ADMIN"])"#,
        r#"[pod-security] violates PodSecurity "restricted:latest": unrestricted capabilities (container "app" must not include "NET_ADMIN" in securityContext.capabilities.add), runAsUser=0 (container "app" must not set runAsUser=0)"#,
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from {message}"
        );
    }
    assert_eq!(
        message.matches("; [").count(),
        3,
        "exactly four violations: {message}"
    );

    // Without the mutating webhook, everything the pod leaves unset is a
    // violation too.
    let direct = server
        .review("/validate?timeout=10s", &create("agyn", yaml(BARE_POD)))
        .await;
    let message = messages(&direct);
    for policy in [
        "run-as-non-root",
        "readonly-root-filesystem",
        "drop-capabilities",
        "service-account-token",
    ] {
        assert!(
            message.contains(&format!("[{policy}]")),
            "{policy}: {message}"
        );
    }
}

#[tokio::test]
async fn a_pod_fixed_by_mutation_is_then_admitted() {
    let server = Server::start(None, &[]);
    let request = create("agyn", yaml(BARE_POD));
    let admission = server.admit(&request).await;
    assert!(admission.mutation["patch"].is_string());
    let spec = &admission.object["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        spec["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    // pod-security: the restricted standard in `agyn`, met by mutation.
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        spec["containers"][0]["env"], request["object"]["spec"]["containers"][0]["env"],
        "what the policies do not own is untouched"
    );
    assert_eq!(
        admission.validation["allowed"], true,
        "{}",
        admission.validation
    );
}

#[tokio::test]
async fn a_deployment_template_is_mutated() {
    let server = Server::start(None, &[]);
    let admission = server.admit(&create("agyn", yaml(DEPLOYMENT))).await;
    let patch = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            admission.mutation["patch"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let patch: Vec<Value> = serde_json::from_str(&patch).unwrap();
    assert!(!patch.is_empty());
    for op in &patch {
        let path = op["path"].as_str().unwrap();
        assert!(
            path.starts_with("/spec/template/spec"),
            "{path} outside the template"
        );
    }
    let template = &admission.object["spec"]["template"]["spec"];
    assert_eq!(
        template["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(admission.object["spec"]["replicas"], 2);
    assert_eq!(
        admission.validation["allowed"], true,
        "{}",
        admission.validation
    );
}

#[tokio::test]
async fn warn_mode_warns_and_audit_mode_annotates() {
    let set = policy_set(
        "  - name: run-as-non-root\n    mode: warn\n  - name: drop-capabilities\n    mode: audit\n",
    );
    let server = Server::start(Some(&set), &[]);
    let admission = server.admit(&create("agyn", yaml(ROOT_POD))).await;
    assert!(
        admission.mutation.get("patch").is_none(),
        "only enforcing policies mutate"
    );
    let validation = admission.validation;
    assert_eq!(validation["allowed"], true, "{validation}");
    assert_eq!(
        warnings(&validation),
        [
            r#"[run-as-non-root] container "app": securityContext.runAsNonRoot must be true (is unset)"#,
            r#"[run-as-non-root] container "app": securityContext.runAsUser must be a non-zero UID (is 0)"#,
            r#"[run-as-non-root] container "app": securityContext.runAsGroup must be a non-zero GID (is unset)"#
        ]
    );
    let audit = validation["auditAnnotations"]["drop-capabilities"]
        .as_str()
        .unwrap();
    assert!(audit.contains("capabilities.add must be empty"), "{audit}");
    assert!(
        audit.contains("capabilities.drop must be a list containing ALL"),
        "{audit}"
    );
}

#[tokio::test]
async fn dry_run_warns_and_never_denies_or_patches() {
    let server = Server::start(None, &["--dry-run"]);
    let admission = server.admit(&create("agyn", yaml(ROOT_POD))).await;
    assert_eq!(admission.mutation["allowed"], true);
    assert!(
        admission.mutation.get("patch").is_none(),
        "a dry run patches nothing"
    );
    let validation = admission.validation;
    assert_eq!(validation["allowed"], true, "{validation}");
    let warnings = warnings(&validation);
    assert!(
        warnings.contains(&r#"[run-as-non-root] (dry run: would deny) container "app": securityContext.runAsUser must be a non-zero UID (is 0)"#.to_string()),
        "{warnings:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("(dry run: would change the object) by ")),
        "{warnings:#?}"
    );
    // What mutation would fix is not reported as a denial: the review
    // mutates before it judges, as enforcement would.
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("automountServiceAccountToken")),
        "{warnings:#?}"
    );
    assert!(
        validation["auditAnnotations"]["drop-capabilities"]
            .as_str()
            .unwrap()
            .starts_with("would deny: ")
    );
    // A compliant object draws no warning.
    let typical = server
        .review("/validate?timeout=10s", &create("agyn", yaml(TYPICAL_POD)))
        .await;
    assert!(typical.get("warnings").is_none(), "{typical}");
}

#[tokio::test]
async fn a_hanging_policy_is_answered_before_the_timeout_by_its_failure_policy() {
    // A 30 s policy budget is cut by the request's; a 100 ms one runs on
    // the async worker, the 30 s one on the blocking pool.
    for (failure_policy, timeout, allowed) in [
        ("Fail", "30s", false),
        ("Ignore", "30s", true),
        ("Fail", "100ms", false),
    ] {
        let server = Server::start(Some(&hanging_set(failure_policy, timeout)), &[]);
        let start = Instant::now();
        let response = server
            .review("/validate?timeout=1s", &create("agyn", yaml(BARE_POD)))
            .await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
        assert_eq!(response["allowed"], allowed, "{response}");
        if !allowed {
            let message = messages(&response);
            assert!(
                message.contains("[hangs] the policy failed: it exceeded its deadline"),
                "{message}"
            );
        }
        // The server is still serving, and counted the deadline.
        let metrics = server.metrics_text().await;
        assert!(
            metrics.contains(
                r#"agyn_admission_policy_errors_total{policy="hangs",cause="deadline"} 1"#
            ),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_changed_policy_set_is_swapped_in_and_a_broken_one_refused() {
    let enforce = policy_set("  - name: run-as-non-root\n");
    let mut server = Server::start(Some(&enforce), &[]);
    let request = create("agyn", yaml(ROOT_POD));
    let denied = server.review("/validate", &request).await;
    assert_eq!(denied["allowed"], false);

    let warn = policy_set("  - name: run-as-non-root\n    mode: warn\n");
    replace(&server.dir.join("policies.yaml"), warn.as_bytes());
    server.wait_for_log(Duration::from_secs(10), |e| {
        e["message"] == "policy set reloaded"
    });
    let warned = server.review("/validate", &request).await;
    assert_eq!(warned["allowed"], true, "{warned}");
    assert!(!warnings(&warned).is_empty());

    let broken = policy_set("  - name: run-as-non-root\n    mode: sometimes\n");
    replace(&server.dir.join("policies.yaml"), broken.as_bytes());
    let refusal = server.wait_for_log(Duration::from_secs(10), |e| {
        e["message"] == "refusing the changed policy set; the previous one keeps serving"
    });
    assert!(
        refusal["error"].as_str().unwrap().contains("sometimes"),
        "{refusal}"
    );
    let still = server.review("/validate", &request).await;
    assert_eq!(
        still["allowed"], true,
        "the previous set keeps serving: {still}"
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"agyn_admission_policy_set_reloads_total{result="loaded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"agyn_admission_policy_set_reloads_total{result="refused"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn malformed_requests_get_a_clear_4xx_and_never_an_allowed() {
    let server = Server::start(None, &["--max-request-size", "1Mi"]);
    let pod = create("agyn", yaml(BARE_POD));
    let without = |field: &str| {
        let mut request = pod.clone();
        request.as_object_mut().unwrap().remove(field);
        review(&request).to_string()
    };
    let with_empty_uid = {
        let mut request = pod.clone();
        request["uid"] = json!("");
        review(&request).to_string()
    };
    let big = {
        let mut request = pod.clone();
        request["object"]["metadata"]["annotations"] = json!({"big": "x".repeat(1_100_000)});
        review(&request).to_string()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/validate", "{not json".into(), 400, "the body is not an AdmissionReview"),
        ("/validate", "".into(), 400, "the body is not an AdmissionReview"),
        ("/validate", json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": pod}).to_string(), 400, "expected apiVersion admission.k8s.io/v1"),
        ("/validate", json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": pod}).to_string(), 400, "got apiVersion admission.k8s.io/v1 and kind Pod"),
        ("/mutate", json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(), 400, "has no request"),
        ("/validate", without("uid"), 400, "missing field `uid`"),
        ("/validate", with_empty_uid, 400, "empty uid"),
        ("/mutate", big, 413, "larger than the limit of 1048576 bytes"),
        ("/validate?timeout=soon", review(&pod).to_string(), 400, "invalid duration"),
        ("/validate/no-such-policy", review(&pod).to_string(), 404, "no policy \"no-such-policy\""),
    ];
    for (path, body, status, message) in cases {
        let (got, body) = server.post(path, body).await;
        assert_eq!(got, status, "{path}: {body}");
        let text = body
            .as_str()
            .unwrap_or_else(|| panic!("{path}: not a text error: {body}"));
        assert!(text.contains(message), "{path}: {text:?} lacks {message:?}");
    }
    // Still up, still judging; an absurd timeout is only the API server's
    // 30 s at most, and does not overflow the clock.
    let fine = server
        .review(
            "/validate?timeout=4000000000000000h",
            &create("agyn", yaml(TYPICAL_POD)),
        )
        .await;
    assert_eq!(fine["allowed"], true);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"agyn_admission_requests_total{endpoint="validate",outcome="error"} 7"#),
        "{metrics}"
    );

    // A well-formed review whose object cannot be judged is owed a verdict,
    // not a 4xx that would hand the decision to the registration's
    // failurePolicy: the matching policies' failure policies (Fail) deny.
    for field in ["object", "namespace"] {
        let (status, body) = server.post("/validate", without(field)).await;
        assert_eq!(status, 200, "{field}: {body}");
        let response = &body["response"];
        assert_eq!(response["allowed"], false, "{field}: {body}");
        assert_eq!(
            response["status"]["code"], 500,
            "a failure, not a violation"
        );
        assert!(
            messages(response)
                .contains("the policy failed: it was not run: the object cannot be read"),
            "{field}: {body}"
        );
    }
}

#[tokio::test]
async fn what_no_policy_judges_is_allowed_without_running_policies() {
    let server = Server::start(None, &[]);
    let root = create("agyn", yaml(ROOT_POD));
    let mut delete = root.clone();
    delete["operation"] = json!("DELETE");
    delete["oldObject"] = delete["object"].take();
    let mut status = root.clone();
    status["subResource"] = json!("status");
    let config_map = create(
        "agyn",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
    );
    let exempt = create("kube-system", yaml(ROOT_POD));
    for request in [delete, status, config_map, exempt] {
        let response = server.review("/validate", &request).await;
        assert_eq!(response["allowed"], true, "{request}");
        let mutation = server.review("/mutate", &request).await;
        assert!(mutation.get("patch").is_none());
    }
    let metrics = server.metrics_text().await;
    assert!(
        !metrics.contains("agyn_admission_policy_duration_seconds_count"),
        "no policy ran: {metrics}"
    );

    // Ephemeral containers are judged.
    let mut ephemeral = root.clone();
    ephemeral["subResource"] = json!("ephemeralcontainers");
    assert_eq!(
        server.review("/validate", &ephemeral).await["allowed"],
        false
    );
}

#[tokio::test]
async fn one_policy_endpoints_run_that_policy_alone() {
    let server = Server::start(None, &[]);
    let request = create("agyn", yaml(BARE_POD));
    let response = server.review("/validate/drop-capabilities", &request).await;
    assert_eq!(response["allowed"], false);
    let message = messages(&response);
    assert!(message.starts_with("[drop-capabilities] "), "{message}");
    assert!(!message.contains("[run-as-non-root]"), "{message}");

    let mutation = server
        .review("/mutate/service-account-token", &request)
        .await;
    let patch = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        mutation["patch"].as_str().unwrap(),
    )
    .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/automountServiceAccountToken", "value": false}])
    );
}

#[tokio::test]
async fn metrics_count_requests_policies_and_the_loaded_set() {
    let server = Server::start(None, &[]);
    server.admit(&create("agyn", yaml(ROOT_POD))).await;
    let metrics = server.metrics_text().await;
    for line in [
        r#"agyn_admission_requests_total{endpoint="mutate",outcome="allowed"} 1"#,
        r#"agyn_admission_requests_total{endpoint="validate",outcome="denied"} 1"#,
        r#"agyn_admission_request_duration_seconds_count{endpoint="validate"} 1"#,
        r#"agyn_admission_policy_duration_seconds_count{policy="run-as-non-root"} 2"#,
        r#"agyn_admission_policy_duration_seconds_count{policy="workload-isolation"} 2"#,
        "agyn_admission_policies_loaded 6",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    for probe in ["/healthz", "/readyz"] {
        let on_metrics = reqwest::get(format!("http://{}{probe}", server.metrics))
            .await
            .unwrap();
        assert_eq!(on_metrics.status(), 200);
        let on_webhook = server.client().get(server.url(probe)).send().await.unwrap();
        assert_eq!(on_webhook.status(), 200);
    }
}

#[tokio::test]
async fn each_decision_is_logged_once_without_the_object() {
    let mut server = Server::start(None, &[]);
    let mut request = create("agyn", yaml(BARE_POD));
    request["uid"] = json!("a1b2c3");
    server.review("/validate", &request).await;
    let event = server.wait_for_log(Duration::from_secs(5), |e| e["uid"] == "a1b2c3");
    assert_eq!(event["target"], "agyn_admission::audit");
    assert_eq!(event["operation"], "Create");
    assert_eq!(event["kind"], "Pod");
    assert_eq!(event["namespace"], "agyn");
    assert_eq!(event["name"], "bare");
    assert_eq!(event["user"], "alice");
    assert_eq!(event["allowed"], false);
    let verdicts = event["verdicts"].as_str().unwrap();
    for policy in ["run-as-non-root=violated", "workload-isolation=allowed"] {
        assert!(verdicts.contains(policy), "{verdicts}");
    }
    assert!(event["took_us"].as_u64().is_some());
    let logs = serde_json::to_string(&server.logs()).unwrap();
    assert!(
        !logs.contains("s3cr3t-do-not-log"),
        "the object's contents were logged"
    );
    assert_eq!(logs.matches("a1b2c3").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_requests_in_flight_then_exits() {
    // Each review takes the policy's whole 1 s deadline.
    let set = policy_set(&format!(
        "  - name: slow\n    module: {}\n    policy: loop\n    timeout: 1s\n    failurePolicy: Ignore\n",
        common::HOSTILE_WASM
    ));
    let mut server = Server::start(Some(&set), &[]);
    let in_flight = {
        let client = server.client();
        let url = server.url("/validate?timeout=10s");
        let body = review(&create("agyn", yaml(BARE_POD))).to_string();
        tokio::spawn(async move { client.post(url).body(body).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status}");
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight was answered");
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["response"]["allowed"], true);
}

#[test]
fn serve_help_documents_every_flag() {
    let help = std::process::Command::new(webhook_harness::BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--tls-cert-file",
        "--tls-private-key-file",
        "--listen",
        "--metrics-listen",
        "--policies",
        "--dry-run",
        "--cache-dir",
        "--no-cache",
        "--max-request-size",
        "--max-concurrent-reviews",
        "--default-timeout",
        "--shutdown-grace",
        "--shutdown-delay",
        "--max-connections",
        "--read-timeout",
        "--idle-timeout",
        "--log-format",
        "/validate/{policy}",
        "/metrics",
    ] {
        assert!(help.contains(flag), "{flag} undocumented:\n{help}");
    }
}

#[test]
fn a_broken_policy_set_stops_the_start_with_its_error() {
    let dir = common::temp_dir("broken-start");
    let pki = webhook_harness::Pki::new();
    pki.issue(&dir, "agyn-admission");
    std::fs::write(
        dir.join("set.yaml"),
        policy_set("  - name: no-such-policy\n"),
    )
    .unwrap();
    let out = std::process::Command::new(webhook_harness::BIN)
        .arg("serve")
        .arg("--tls-cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--tls-private-key-file")
        .arg(dir.join("tls.key"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--policies",
        ])
        .arg(dir.join("set.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy \"no-such-policy\""), "{stderr}");
}

#[tokio::test]
async fn the_load_test_review_is_the_typical_pod_and_admitted_unchanged() {
    let fixture: Value =
        serde_json::from_str(include_str!("data/typical-pod-review.json")).unwrap();
    assert_eq!(fixture["request"]["object"], yaml(TYPICAL_POD));
    let server = Server::start(None, &[]);
    let admission = server.admit(&fixture["request"]).await;
    assert!(admission.mutation.get("patch").is_none());
    assert_eq!(admission.validation["allowed"], true);
}

#[tokio::test]
async fn over_the_concurrency_bound_requests_wait_their_turn() {
    // Each review spins for its policy's whole 300 ms (on the blocking
    // pool: the budget is over the inline limit); one review at a time.
    let set = policy_set(&format!(
        "  - name: slow\n    module: {}\n    policy: loop\n    timeout: 300ms\n    failurePolicy: Ignore\n",
        common::HOSTILE_WASM
    ));
    let server = Server::start(Some(&set), &["--max-concurrent-reviews", "1"]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let client = server.client();
            let url = server.url("/validate?timeout=10s");
            let body = review(&create("agyn", yaml(BARE_POD))).to_string();
            tokio::spawn(async move {
                let response = client.post(url).body(body).send().await.unwrap();
                serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap()
            })
        })
        .collect();
    // While the reviews queue, the probes answer at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probe = Instant::now();
    let ready = reqwest::get(format!("http://{}/readyz", server.metrics))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        probe.elapsed() < Duration::from_millis(150),
        "{:?}",
        probe.elapsed()
    );
    for task in tasks {
        assert_eq!(task.await.unwrap()["response"]["allowed"], true);
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(850),
        "three 300 ms reviews overlapped: {took:?}"
    );
}
