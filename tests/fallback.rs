//! `agyn-admission fallback` on a real API server (tests/apiserver), with no
//! webhook registered at all: the generated Validating and Mutating
//! admission policies alone must give every example manifest, and every
//! case the Agyn guidance names, the verdict `check` gives with the same
//! policy set, in every namespace the set covers, and leave kube-system and
//! the webhook's own namespace alone. Skipped unless `AGYN_TEST_KUBECONFIG`
//! is set (scripts/test.sh sets it).
//!
//! The generated policies act on the whole API server, so this file holds
//! one test: everything else sharing the API server runs in other test
//! binaries, which cargo runs one after another.

mod apiserver;
mod common;
#[path = "../policies/pod-security/tests/support/mod.rs"]
mod support;

use agyn_admission::admission::kinds;
use apiserver::Cluster;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agyn-admission");

/// The label on every generated object.
const POLICY_LABEL: &str = "agyn.io/fallback-for";

/// The webhook's namespace, as `fallback` is told it.
const WEBHOOK_NAMESPACE: &str = "agyn-system";

/// Another namespace, which the built-in set covers like any.
const OTHER: &str = "fallback-team-a";

/// The generated kinds, with their plurals.
const GENERATED: [(&str, &str); 4] = [
    ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    (
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    ),
    ("MutatingAdmissionPolicy", "mutatingadmissionpolicies"),
    (
        "MutatingAdmissionPolicyBinding",
        "mutatingadmissionpolicybindings",
    ),
];

#[tokio::test]
async fn the_api_servers_own_policies_enforce_the_set_without_the_webhook() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let client = cluster.client.clone();
    remove_generated(&client).await;
    // Whatever fails, the cluster-wide policies go before the next suite.
    let result = tokio::spawn(judge_everything(client.clone())).await;
    remove_generated(&client).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn judge_everything(client: Client) {
    for namespace in [
        "agyn",
        "agyn-workloads",
        WEBHOOK_NAMESPACE,
        OTHER,
        "kube-system",
    ] {
        ensure_namespace(&client, namespace).await;
        ensure_service_account(&client, namespace, "agyn-agent").await;
    }

    let objects = fallback(&["--mutations", "--webhook-namespace", WEBHOOK_NAMESPACE]);
    for object in &objects {
        create_cluster_object(&client, object).await;
    }
    wait_until_enforced(&client).await;

    examples_agree_with_check(&client).await;
    pod_security_fixtures_agree_with_check(&client).await;
    guidance_cases(&client).await;
    largest_pods_stay_within_the_cel_cost_budget(&client).await;
}

/// Every example manifest: the same verdict from the API server as from
/// `check`, each denial naming a policy `check` denies with, and each
/// admitted object changed as `check` changes it.
async fn examples_agree_with_check(client: &Client) {
    let mut compared = 0;
    for path in manifests(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples"
    ))) {
        if path.components().any(|c| c.as_os_str() == "policy-sets") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text).unwrap() {
            if document.is_null() {
                continue;
            }
            let what = format!("{} ({})", path.display(), document["metadata"]["name"]);
            agree(client, &document, &what).await;
            compared += 1;
        }
    }
    assert!(compared >= 8, "only {compared} example objects");
}

/// Kubernetes' Pod Security fixtures (policies/pod-security), each as a
/// pod in `agyn`, where the built-in set runs pod-security at restricted
/// beside the Agyn policies: the API server and `check` agree on every one
/// the API server lets reach admission (it refuses some before, as invalid:
/// an AppArmor annotation that contradicts its field, ephemeral containers
/// on create).
async fn pod_security_fixtures_agree_with_check(client: &Client) {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/pod-security/tests/fixtures"
    );
    let cases = support::load(Path::new(dir));
    let (mut judged, mut refused) = (0, Vec::new());
    for case in &cases {
        let mut pod = case.pod.clone();
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        pod["metadata"]["name"] = json!(case.name);
        pod["metadata"]["namespace"] = json!("agyn");
        if let Err(message) = dry_run(client, &pod).await
            && !message.contains("AdmissionPolicy")
        {
            refused.push(format!("{}: {message}", case.name));
            continue;
        }
        agree(client, &pod, &format!("fixture {}", case.name)).await;
        judged += 1;
    }
    // Refused by the API server's validation, which runs after the
    // mutating admission (a Windows pod given Linux-only fields) or at
    // create (ephemeral containers come by their subresource).
    for refusal in &refused {
        assert!(refusal.contains(" is invalid: "), "{refusal}");
    }
    assert!(judged >= 60, "{judged} of {} fixtures judged", cases.len());
}

/// The cases the Agyn guidance names, in namespaces the set covers, and
/// the namespaces the fallback must leave alone.
async fn guidance_cases(client: &Client) {
    let compliant = || compliant_pod(1);
    let mut cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
        ("compliant", OTHER, compliant(), None),
        ("compliant", "agyn", compliant(), None),
    ];
    let mut root = compliant();
    root["spec"]["securityContext"]["runAsUser"] = json!(0);
    let mut writable = compliant();
    writable["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false);
    let mut capabilities = compliant();
    capabilities["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
        json!(["NET_ADMIN"]);
    let mut token = compliant();
    token["spec"]["automountServiceAccountToken"] = json!(true);
    let mut agent = compliant();
    agent["metadata"]["labels"]["agyn.io/role"] = json!("agent");
    agent["spec"]["serviceAccountName"] = json!("agyn-agent");
    for namespace in ["agyn", OTHER] {
        cases.extend([
            ("root", namespace, root.clone(), Some("run-as-non-root")),
            (
                "writable root filesystem",
                namespace,
                writable.clone(),
                Some("readonly-root-filesystem"),
            ),
            (
                "added capability",
                namespace,
                capabilities.clone(),
                Some("drop-capabilities"),
            ),
            (
                "automounted token",
                namespace,
                token.clone(),
                Some("service-account-token"),
            ),
            (
                "agent outside agyn-workloads",
                namespace,
                agent.clone(),
                Some("workload-isolation"),
            ),
        ]);
    }
    cases.push(("agent", "agyn-workloads", agent.clone(), None));
    cases.push((
        "not an agent",
        "agyn-workloads",
        compliant(),
        Some("workload-isolation"),
    ));
    // Mutation makes a bare pod compliant, in agyn under restricted too.
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": "ghcr.io/agynio/app:1.0"}]},
    });
    cases.push(("bare", "agyn", bare.clone(), None));
    cases.push(("bare", OTHER, bare, None));
    for (what, namespace, mut pod, denied_by) in cases {
        pod["metadata"]["namespace"] = json!(namespace);
        let what = format!("{what} pod in {namespace}");
        // The API server names the first policy that denies; `agree`
        // checks that `check` denies by it too, and here that `check`
        // names the expected one among its own.
        let (allowed, message, policies) = agree(client, &pod, &what).await;
        match denied_by {
            None => assert!(allowed, "{what}: denied: {message}"),
            Some(policy) => assert!(
                !allowed && policies.iter().any(|p| p == policy),
                "{what}: expected a denial by {policy}, got {message} (check: {policies:?})"
            ),
        }
    }

    // Never judged: kube-system, and the webhook's own namespace (which
    // `check` knows nothing of, so only the API server is asked).
    for namespace in ["kube-system", WEBHOOK_NAMESPACE] {
        let mut pod = root.clone();
        pod["metadata"]["namespace"] = json!(namespace);
        let answer = dry_run(client, &pod).await;
        assert!(answer.is_ok(), "a root pod in {namespace}: {answer:?}");
        let unchanged = answer.unwrap();
        assert_eq!(
            unchanged["spec"]["containers"][0].get("securityContext"),
            pod["spec"]["containers"][0].get("securityContext"),
            "mutated in {namespace}"
        );
    }
}

/// Pods as large as the API server takes in practice, each policy's CEL
/// walking every container, env var, port and mount: no expression may
/// run out of its cost budget (which, at failurePolicy Fail, would deny).
async fn largest_pods_stay_within_the_cel_cost_budget(client: &Client) {
    let big = |bare: bool| {
        let mut pod = compliant_pod(0);
        let spec = pod["spec"].as_object_mut().unwrap();
        let container = |kind: &str, i: usize| {
            let mut c = json!({
                "name": format!("{kind}-{i}"),
                "image": "ghcr.io/agynio/app:1.0",
                "env": (0..20).map(|e| json!({"name": format!("VAR_{e}"), "value": "x".repeat(16)})).collect::<Vec<_>>(),
                "ports": (0..3).map(|p| json!({"containerPort": 8000 + p, "name": format!("p{p}-{i}").chars().take(15).collect::<String>()})).collect::<Vec<_>>(),
                "volumeMounts": (0..10).map(|v| json!({"name": format!("vol-{v}"), "mountPath": format!("/mnt/{v}")})).collect::<Vec<_>>(),
            });
            if !bare {
                c["securityContext"] = json!({
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                });
            }
            c
        };
        spec.insert(
            "initContainers".into(),
            (0..100).map(|i| container("init", i)).collect(),
        );
        spec.insert(
            "containers".into(),
            (0..300).map(|i| container("app", i)).collect(),
        );
        spec.insert(
            "volumes".into(),
            (0..10)
                .map(|v| json!({"name": format!("vol-{v}"), "emptyDir": {}}))
                .collect(),
        );
        if bare {
            spec.remove("securityContext");
            spec.remove("automountServiceAccountToken");
        }
        pod["metadata"]["name"] = json!("big");
        pod["metadata"]["namespace"] = json!("agyn");
        pod
    };
    let compliant = big(false);
    assert!(compliant.to_string().len() > 500_000);
    let admitted = dry_run(client, &compliant).await;
    assert!(admitted.is_ok(), "{:?}", admitted.err());

    let mut root = compliant.clone();
    root["spec"]["containers"][299]["securityContext"]["runAsUser"] = json!(0);
    let denied = dry_run(client, &root).await.unwrap_err();
    // The first denying policy (pod-security or run-as-non-root) names the
    // one root container, with its message, not a CEL failure.
    assert!(
        denied.contains("\"app-299\"")
            && !denied.contains("cost")
            && !denied.contains("failed expression"),
        "{denied}"
    );

    // Every mutation, on every one of the 400 containers.
    let fixed = dry_run(client, &big(true)).await;
    let fixed = fixed.unwrap_or_else(|e| panic!("the bare big pod: {e}"));
    assert_eq!(
        fixed["spec"]["containers"][299]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
}

/// A compliant pod for the other namespace and agyn alike (restricted).
fn compliant_pod(n: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{n}"), "labels": {"app": "api"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "api", "image": "ghcr.io/agynio/api:1.4.2",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    })
}

/// Judges `object` by `check` and by the API server, asserts that they
/// agree, and returns the API server's verdict and message, and the
/// policies `check` denies by.
async fn agree(client: &Client, object: &Value, what: &str) -> (bool, String, Vec<String>) {
    let result = check(object);
    let answer = dry_run(client, object).await;
    let allowed = result["allowed"].as_bool().unwrap();
    let policies: Vec<String> = result["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["policy"].as_str().unwrap().to_string())
        .collect();
    match &answer {
        Ok(admitted) => {
            assert!(
                allowed,
                "{what}: the API server admits what check denies: {:#}",
                result["violations"]
            );
            if result["patch"].as_array().is_some_and(|p| !p.is_empty()) {
                let mut expected = object.clone();
                json_patch::patch(
                    &mut expected,
                    &serde_json::from_value::<json_patch::Patch>(result["patch"].clone()).unwrap(),
                )
                .unwrap();
                assert_eq!(
                    secured_fields(admitted),
                    secured_fields(&expected),
                    "{what}: the API server's mutation differs from check's"
                );
            }
            (true, String::new(), policies)
        }
        Err(message) => {
            assert!(!allowed, "{what}: the API server denies: {message}");
            assert!(
                policies
                    .iter()
                    .any(|p| message.contains(&format!("denied request: [{p}] "))),
                "{what}: the API server's denial names none of check's policies {policies:?}: {message}"
            );
            (false, message.clone(), policies)
        }
    }
}

/// What the policies' mutations set: the pod's security context, token
/// automount and account, and each container's security context.
fn secured_fields(object: &Value) -> Value {
    let spec = match object["kind"].as_str() {
        Some("Pod") => &object["spec"],
        Some("CronJob") => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &object["spec"]["template"]["spec"],
    };
    let containers = |list: &str| {
        spec[list]
            .as_array()
            .map(|cs| cs.iter().map(|c| c["securityContext"].clone()).collect())
            .unwrap_or(Value::Null)
    };
    json!({
        "securityContext": spec["securityContext"],
        "automountServiceAccountToken": spec["automountServiceAccountToken"],
        "initContainers": containers("initContainers"),
        "containers": containers("containers"),
    })
}

/// `check -o json` on one object: its result.
fn check(object: &Value) -> Value {
    let out = common::check(&["-o", "json", "-"], &object.to_string());
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check's output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    results.into_iter().next().expect("one result")
}

/// `fallback -o json` with `args`: the objects.
fn fallback(args: &[&str]) -> Vec<Value> {
    let out = Command::new(BIN)
        .arg("fallback")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

/// Creates `object` with server-side dry run: the object as admitted, or
/// the API server's refusal.
async fn dry_run(client: &Client, object: &Value) -> Result<Value, String> {
    let kind = object["kind"].as_str().unwrap();
    let (_, _, known) = kinds::by_name(kind).unwrap_or_else(|| panic!("unknown kind {kind}"));
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &api_resource(object, &known.resource),
    );
    let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(created) => Ok(serde_json::to_value(created).unwrap()),
        Err(kube::Error::Api(status)) => Err(status.message.clone()),
        Err(e) => panic!("creating {kind}: {e}"),
    }
}

fn api_resource(object: &Value, plural: &str) -> ApiResource {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

fn generated_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

async fn create_cluster_object(client: &Client, object: &Value) {
    let kind = object["kind"].as_str().unwrap();
    let (_, plural) = GENERATED
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap_or_else(|| panic!("fallback printed a {kind}"));
    let typed: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    generated_api(client, kind, plural)
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("the API server refused {kind} {}: {e}", typed.name_any()));
}

/// Deletes every generated object, leftovers of an earlier run included.
async fn remove_generated(client: &Client) {
    for (kind, plural) in GENERATED {
        let api = generated_api(client, kind, plural);
        for object in api
            .list(&ListParams::default().labels(POLICY_LABEL))
            .await
            .unwrap()
        {
            api.delete(&object.name_any(), &DeleteParams::default())
                .await
                .unwrap();
        }
    }
}

/// The API server acts on new admission policies once its watch delivers
/// them: a root pod denied and a bare pod mutated show it has them all.
async fn wait_until_enforced(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut root = compliant_pod(0);
    root["metadata"]["namespace"] = json!("agyn");
    root["spec"]["securityContext"]["runAsUser"] = json!(0);
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "agyn"},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    });
    loop {
        let denied = dry_run(client, &root).await.is_err();
        let mutated = dry_run(client, &bare)
            .await
            .is_ok_and(|pod| pod["spec"]["securityContext"]["seccompProfile"].is_object());
        if denied && mutated {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the generated policies never took effect"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn ensure_namespace(client: &Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
    ensure_service_account(client, name, "default").await;
}

async fn ensure_service_account(client: &Client, namespace: &str, name: &str) {
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("creating ServiceAccount {namespace}/{name}: {e}"),
    }
}

/// YAML files under `dir`, sorted.
fn manifests(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(manifests(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}
