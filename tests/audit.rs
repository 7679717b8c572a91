//! `agyn-admission audit` on a real API server (tests/apiserver): reports
//! written for what is stored, kept when nothing changed, changed when an
//! object or the policy set does, removed when their object goes; the dry
//! run agreeing with `check`; the watch mode following changes within
//! seconds. Skipped unless `AGYN_TEST_KUBECONFIG` is set (scripts/test.sh
//! sets it).
//!
//! An audit scans the whole API server, and other test binaries (run one
//! after another by cargo) leave objects behind: assertions look only at
//! this file's namespaces. The one-off tests write Open Reports, the
//! watch test wgpolicyk8s reports, so that the two never sweep each
//! other's.

mod apiserver;
mod common;

use apiserver::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agyn-admission");
const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/agyn-admission/crds");

fn report_api(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn open_reports() -> ApiResource {
    report_api("openreports.io", "v1alpha1", "Report", "reports")
}

fn policy_reports() -> ApiResource {
    report_api(
        "wgpolicyk8s.io",
        "v1alpha2",
        "PolicyReport",
        "policyreports",
    )
}

/// Installs the chart's report CRDs, as `helm install` does where absent,
/// and waits until the API server serves them.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(CRDS).expect("the chart's crds/ folder") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            if document.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(document).unwrap();
            let name = crd.name_any();
            crds.patch(
                &name,
                &PatchParams::apply("agyn-admission-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(name);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = crds.get(&name).await.unwrap();
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never became established");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn kubeconfig() -> String {
    std::env::var(apiserver::KUBECONFIG_ENV).unwrap()
}

/// `agyn-admission audit ARGS` against the test API server.
fn audit(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("audit")
        .args(["--kubeconfig", &kubeconfig()])
        .args(["--cache-dir", common::cache_dir().to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn pod(name: &str, secure: bool) -> Pod {
    let security = match secure {
        true => json!({
            "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        }),
        false => json!({"runAsUser": 0, "privileged": true}),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.example/app:1", "securityContext": security}],
        },
    }))
    .unwrap()
}

fn deployment(name: &str, secure: bool) -> Deployment {
    let template = serde_json::to_value(pod(name, secure)).unwrap();
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": template["spec"]},
        },
    }))
    .unwrap()
}

/// Kills the audit if a test fails before stopping it: it would hold the
/// test's output open.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 20 s until this namespace's wgpolicyk8s reports are `done`.
async fn until(
    client: &Client,
    namespace: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, Value>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = reports(client, &policy_reports(), namespace).await;
        if done(&found) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {found:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This namespace's reports of `resource`, by name.
async fn reports(
    client: &Client,
    resource: &ApiResource,
    namespace: &str,
) -> BTreeMap<String, Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| (r.name_any(), serde_json::to_value(r).unwrap()))
        .collect()
}

/// Each result's policy and result.
fn verdicts(report: &Value) -> BTreeMap<String, String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["policy"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn resource_version(report: &Value) -> &str {
    report["metadata"]["resourceVersion"].as_str().unwrap()
}

#[tokio::test]
async fn reports_follow_the_objects_and_the_policy_set() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let client = cluster.client.clone();
    install_crds(&client).await;
    let team = cluster.unlabelled_namespace("audit-team").await;
    let other = cluster.unlabelled_namespace("audit-other").await;
    let opted_out = cluster.unlabelled_namespace("audit-opted-out").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &opted_out.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"agyn.io/admission": "disabled"}}})),
        )
        .await
        .unwrap();

    let good = team.create(&pod("good", true), false).await.unwrap();
    let root = team.create(&pod("root", false), false).await.unwrap();
    let web = team.create(&deployment("web", false), false).await.unwrap();
    // What a Deployment's controllers would make: a ReplicaSet and a Pod,
    // each controlled by the one above. Judged with the Deployment.
    let owner = |kind: &str, name: &str, uid: &str, api_version: &str| json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let pod_spec = serde_json::to_value(pod("web", false).spec).unwrap();
    let replicas: k8s_openapi::api::apps::v1::ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-5d9", "ownerReferences": owner("Deployment", "web", &web.uid().unwrap(), "apps/v1")},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec},
        },
    }))
    .unwrap();
    let replicas = team.create(&replicas, false).await.unwrap();
    let mut replica = pod("web-5d9-x2", false);
    replica.metadata.owner_references = serde_json::from_value(owner(
        "ReplicaSet",
        "web-5d9",
        &replicas.uid().unwrap(),
        "apps/v1",
    ))
    .unwrap();
    team.create(&replica, false).await.unwrap();
    let nightly: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "registry.example/job:1"}]}}}}},
    }))
    .unwrap();
    other.create(&nightly, false).await.unwrap();
    // Compliant but for the user and group, which the webhook fills in.
    let mut almost = pod("almost", true);
    let container = &mut almost.spec.as_mut().unwrap().containers[0];
    let security = container.security_context.as_mut().unwrap();
    (security.run_as_user, security.run_as_group) = (None, None);
    other.create(&almost, false).await.unwrap();
    opted_out
        .create(&pod("ignored", false), false)
        .await
        .unwrap();
    let mut system_pod = pod("audit-system-pod", false);
    system_pod.metadata.namespace = Some("kube-system".into());
    // Both may be left by an earlier run.
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    let _ = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        client.clone(),
        "kube-system",
    )
    .create(&Default::default(), &account)
    .await;
    match Api::<Pod>::namespaced(client.clone(), "kube-system")
        .create(&Default::default(), &system_pod)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("creating a pod in kube-system: {e}"),
    }

    // The first scan: a report per object judged on its own.
    assert_ok(&audit(&[]));
    let found = reports(&client, &open_reports(), &team.name).await;
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["deployment-web", "pod-good", "pod-root"],
        "the ReplicaSet and its Pod are judged with the Deployment"
    );
    let good_report = &found["pod-good"];
    assert!(
        verdicts(good_report).values().all(|r| r == "pass"),
        "{good_report:#}"
    );
    assert_eq!(good_report["summary"]["pass"], 5, "{good_report:#}");
    assert_eq!(good_report["summary"]["fail"], 0);
    assert_eq!(good_report["scope"]["uid"], json!(good.uid().unwrap()));
    assert_eq!(
        good_report["metadata"]["ownerReferences"][0]["uid"],
        json!(good.uid().unwrap())
    );
    assert_eq!(good_report["source"], "agyn-admission");
    let root_report = &found["pod-root"];
    assert_eq!(
        verdicts(root_report)["run-as-non-root"],
        "fail",
        "{root_report:#}"
    );
    assert_eq!(root_report["scope"]["uid"], json!(root.uid().unwrap()));
    let root_result = root_report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == "drop-capabilities")
        .unwrap();
    assert_eq!(root_result["result"], "fail");
    assert!(!root_result["message"].as_str().unwrap().is_empty());
    assert!(root_report["summary"]["fail"].as_u64().unwrap() >= 2);
    // What the webhook would fill in is a failure, naming the fields.
    let almost = &reports(&client, &open_reports(), &other.name).await["pod-almost"];
    assert_eq!(verdicts(almost)["run-as-non-root"], "fail", "{almost:#}");
    assert_eq!(almost["summary"]["fail"], 1, "{almost:#}");
    let message = almost["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == "run-as-non-root")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("runAsUser must be a non-zero UID")
            && message.contains("the webhook would change the object at /spec/securityContext"),
        "{message}"
    );
    assert!(
        reports(&client, &open_reports(), &opted_out.name)
            .await
            .is_empty()
    );
    assert!(
        !reports(&client, &open_reports(), "kube-system")
            .await
            .contains_key("pod-audit-system-pod"),
        "kube-system is never audited"
    );

    // Nothing changed: nothing is written again.
    assert_ok(&audit(&[]));
    let again = reports(&client, &open_reports(), &team.name).await;
    for (name, report) in &found {
        assert_eq!(
            resource_version(report),
            resource_version(&again[name]),
            "{name} was rewritten"
        );
    }

    // The Deployment fixed, the root pod deleted: the one report changes,
    // the other goes (no garbage collector runs here).
    Api::<Deployment>::namespaced(client.clone(), &team.name)
        .replace("web", &Default::default(), &{
            let mut fixed = deployment("web", true);
            fixed.metadata = web.metadata.clone();
            fixed.metadata.resource_version = None;
            fixed
        })
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), &team.name)
        .delete("root", &DeleteParams::default())
        .await
        .unwrap();
    assert_ok(&audit(&[]));
    let after = reports(&client, &open_reports(), &team.name).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["deployment-web", "pod-good"]
    );
    assert!(
        verdicts(&after["deployment-web"])
            .values()
            .all(|r| r == "pass"),
        "{:#}",
        after["deployment-web"]
    );
    assert_eq!(
        resource_version(&after["pod-good"]),
        resource_version(&found["pod-good"])
    );

    // Another policy set: its results alone, labelled with its revision.
    let dir = common::temp_dir("audit-set");
    let set = dir.join("set.yaml");
    std::fs::write(
        &set,
        "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: run-as-non-root\n    mutate: true\n",
    )
    .unwrap();
    assert_ok(&audit(&["--policies", set.to_str().unwrap()]));
    let narrowed = reports(&client, &open_reports(), &team.name).await;
    assert_eq!(
        verdicts(&narrowed["pod-good"]),
        BTreeMap::from([("run-as-non-root".to_string(), "pass".to_string())])
    );
    assert_ne!(
        narrowed["pod-good"]["metadata"]["labels"]["agyn.io/policy-set"],
        found["pod-good"]["metadata"]["labels"]["agyn.io/policy-set"]
    );

    // Failures only: a passing object has no report.
    assert_ok(&audit(&["--results", "failures"]));
    let failing = reports(&client, &open_reports(), &other.name).await;
    assert_eq!(
        failing.keys().collect::<Vec<_>>(),
        ["cronjob-nightly", "pod-almost"]
    );
    assert!(
        verdicts(&failing["cronjob-nightly"])
            .values()
            .all(|r| r == "fail" || r == "error")
    );
    assert!(
        reports(&client, &open_reports(), &team.name)
            .await
            .is_empty()
    );

    // One namespace alone: the reports elsewhere are not its to touch.
    assert_ok(&audit(&[]));
    let before = reports(&client, &open_reports(), &team.name).await;
    assert_eq!(before.len(), 2);
    assert_ok(&audit(&[
        "--namespace",
        &other.name,
        "--results",
        "failures",
    ]));
    let after = reports(&client, &open_reports(), &team.name).await;
    for (name, report) in &before {
        assert_eq!(
            resource_version(report),
            resource_version(&after[name]),
            "{name}"
        );
    }
    let failing = reports(&client, &open_reports(), &other.name).await;
    assert_eq!(
        failing["pod-almost"]["configuration"]["limits"]["statusFilter"],
        json!(["fail", "error"])
    );

    for namespace in [team, other, opted_out] {
        namespace.delete().await;
    }
}

/// `audit --dry-run -o json` and `check -o json` on the same objects, read
/// back from the API, with a set that does not mutate: the same verdicts.
#[tokio::test]
async fn the_dry_run_agrees_with_check_on_the_stored_objects() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let client = cluster.client.clone();
    let namespace = cluster.unlabelled_namespace("audit-dry-run").await;
    namespace.create(&pod("secure", true), false).await.unwrap();
    namespace
        .create(&pod("insecure", false), false)
        .await
        .unwrap();
    namespace
        .create(&deployment("app", false), false)
        .await
        .unwrap();
    let set = common::temp_dir("audit-dry").join("set.yaml");
    let builtin = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/agyn-policy-set.yaml"
    ))
    .unwrap();
    std::fs::write(&set, builtin.replace("mutate: true", "mutate: false")).unwrap();
    let set = set.to_str().unwrap();

    let output = audit(&["--dry-run", "-o", "json", "--policies", set]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let audited: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let audited: BTreeMap<(String, String), &Value> = audited
        .iter()
        .filter(|r| r["namespace"] == json!(namespace.name))
        .map(|r| {
            (
                (
                    r["kind"].as_str().unwrap().into(),
                    r["name"].as_str().unwrap().into(),
                ),
                r,
            )
        })
        .collect();
    assert_eq!(audited.len(), 3, "{audited:#?}");

    let mut stored = Vec::new();
    for (kind, plural, group) in [("Pod", "pods", ""), ("Deployment", "deployments", "apps")] {
        let version = "v1";
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace.name, &ar);
        for mut object in api.list(&ListParams::default()).await.unwrap().items {
            object.types = Some(kube::core::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: kind.into(),
            });
            stored.push(serde_json::to_value(object).unwrap());
        }
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": stored}).to_string();
    let checked = common::check(&["-o", "json", "--policies", set, "-"], &list);
    assert_eq!(checked.status.code(), Some(1));
    let checked: Vec<Value> = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(checked.len(), 3);
    let fields = |r: &Value| {
        json!({"allowed": r["allowed"], "violations": r["violations"], "warnings": r["warnings"],
               "audit": r["audit"], "patch": r["patch"]})
    };
    for result in &checked {
        let key = (
            result["kind"].as_str().unwrap().to_string(),
            result["name"].as_str().unwrap().to_string(),
        );
        assert_eq!(fields(audited[&key]), fields(result), "{key:?}");
    }
    assert_eq!(audited[&("Pod".into(), "secure".into())]["allowed"], true);
    assert_eq!(
        audited[&("Pod".into(), "insecure".into())]["allowed"],
        false
    );

    // With the built-in set, which mutates: what the webhook would fill in
    // is a violation of the stored object, and its patch is shown.
    let output = audit(&["--dry-run", "-o", "json"]);
    let audited: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let app = audited
        .iter()
        .find(|r| r["namespace"] == json!(namespace.name) && r["name"] == "app")
        .unwrap();
    assert_eq!(app["allowed"], false);
    assert!(!app["patch"].as_array().unwrap().is_empty(), "{app:#}");
    namespace.delete().await;
}

/// `audit --watch`: reports follow objects within seconds, and /readyz
/// and /metrics answer.
#[tokio::test]
async fn the_watch_mode_keeps_reports_fresh() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let client = cluster.client.clone();
    install_crds(&client).await;
    let namespace = cluster.unlabelled_namespace("audit-watch").await;
    namespace.create(&pod("before", true), false).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let watching = Command::new(BIN)
        .arg("audit")
        .args(["--kubeconfig", &kubeconfig()])
        .args(["--cache-dir", common::cache_dir().to_str().unwrap()])
        .args(["--report-api", "wgpolicyk8s", "--watch"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut watching = KillOnDrop(watching);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    until(&client, &namespace.name, "the first scan", |r| {
        r.contains_key("pod-before")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(url("/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    namespace.create(&pod("after", false), false).await.unwrap();
    until(&client, &namespace.name, "a new pod", |r| {
        r.get("pod-after")
            .is_some_and(|r| verdicts(r)["run-as-non-root"] == "fail")
    })
    .await;
    namespace
        .create(&deployment("svc", true), false)
        .await
        .unwrap();
    until(&client, &namespace.name, "a new deployment", |r| {
        r.contains_key("deployment-svc")
    })
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace.name);
    let mut insecure = deployments.get("svc").await.unwrap();
    insecure.spec = deployment("svc", false).spec;
    deployments
        .replace("svc", &Default::default(), &insecure)
        .await
        .unwrap();
    until(&client, &namespace.name, "a changed deployment", |r| {
        r.get("deployment-svc")
            .is_some_and(|r| verdicts(r).values().any(|v| v == "fail"))
    })
    .await;
    Api::<Pod>::namespaced(client.clone(), &namespace.name)
        .delete("after", &DeleteParams::default())
        .await
        .unwrap();
    until(&client, &namespace.name, "a deleted pod", |r| {
        !r.contains_key("pod-after")
    })
    .await;
    eprintln!("four changes followed in {:?}", started.elapsed());

    let metrics = http
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("agyn_audit_objects_scanned_total{kind=\"Pod\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agyn_audit_reports_total{action=\"written\"}"),
        "{metrics}"
    );
    // SIGTERM, as the kubelet stops the pod: a clean exit.
    let pid = watching.0.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = watching.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    namespace.delete().await;
}
