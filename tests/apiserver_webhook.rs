//! `agyn-admission serve` behind a real Kubernetes API server
//! (tests/apiserver): the built-in policy set, registered by URL for one
//! test namespace as the chart registers it, judging what the API server
//! sends after its own admission plugins ran. Skipped unless
//! `AGYN_TEST_KUBECONFIG` is set (scripts/test.sh sets it).

mod apiserver;
mod common;
mod webhook_harness;

use apiserver::{Cluster, TestNamespace, Webhooks};
use common::yaml;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde::de::DeserializeOwned;
use webhook_harness::Server;

const TYPICAL_POD: &str = include_str!("data/typical-pod.yaml");

/// Sets none of the fields the built-in policies ask for: the mutating
/// webhook fills them all in.
const BARE_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: bare}
spec:
  containers:
    - {name: app, image: ghcr.io/agynio/app:1.0}
"#;

/// Asks for root explicitly, which no mutation overrides.
const ROOT_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: root}
spec:
  containers:
    - name: app
      image: nginx
      securityContext: {runAsUser: 0}
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: nginx}
"#;

fn parse<K: DeserializeOwned>(text: &str) -> K {
    serde_json::from_value(yaml(text)).unwrap()
}

/// A labelled namespace with the built-in set's webhooks registered for it
/// (failure policy `Fail`), and the server they call.
async fn webhook_for(cluster: &Cluster, hint: &str) -> (Server, TestNamespace, Webhooks) {
    let server = Server::start(None, &[]);
    let namespace = cluster.namespace(hint).await;
    let webhooks = namespace
        .register(server.webhook, &server.pki.ca_pem(), "Fail")
        .await;
    (server, namespace, webhooks)
}

/// Whether a pod has the token volume the ServiceAccount admission plugin
/// adds, or a container mounting it.
fn has_token_volume(spec: &PodSpec) -> bool {
    let injected = |name: &str| name.starts_with("kube-api-access-");
    spec.volumes.iter().flatten().any(|v| injected(&v.name))
        || spec
            .containers
            .iter()
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| injected(&m.name))
}

/// What the built-in set's mutation makes of a spec that sets nothing.
fn assert_secured(spec: &PodSpec) {
    assert_eq!(spec.automount_service_account_token, Some(false));
    let pod = spec
        .security_context
        .as_ref()
        .expect("a pod securityContext");
    assert_eq!(pod.run_as_non_root, Some(true), "{pod:?}");
    assert!(pod.run_as_user.is_some_and(|uid| uid != 0), "{pod:?}");
    for container in &spec.containers {
        let context = container
            .security_context
            .as_ref()
            .expect("a container securityContext");
        assert_eq!(context.read_only_root_filesystem, Some(true), "{context:?}");
        let drop = context.capabilities.as_ref().and_then(|c| c.drop.as_ref());
        assert_eq!(drop, Some(&vec!["ALL".to_string()]), "{context:?}");
    }
    assert!(!has_token_volume(spec), "{spec:?}");
}

#[tokio::test]
async fn a_root_pod_is_denied_with_the_webhooks_message() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let (_server, namespace, webhooks) = webhook_for(&cluster, "root-pod").await;

    let refused = namespace
        .create(&parse::<Pod>(ROOT_POD), false)
        .await
        .expect_err("a root pod is refused");
    assert_eq!(refused.code, 403, "{refused:?}");
    for expected in [
        r#"admission webhook "validate.agyn.io" denied the request"#,
        r#"[run-as-non-root] container "app": securityContext.runAsUser must be a non-zero UID (is 0)"#,
    ] {
        assert!(refused.message.contains(expected), "{refused:?}");
    }
    assert!(namespace.get::<Pod>("root").await.is_none(), "not stored");

    webhooks.remove().await;
    namespace.delete().await;
}

#[tokio::test]
async fn a_bare_pod_is_stored_as_the_mutating_webhook_made_it() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let (_server, namespace, webhooks) = webhook_for(&cluster, "bare-pod").await;

    // The API server's ServiceAccount plugin adds the token volume before
    // webhooks run; service-account-token's mutation takes it out again.
    let created = namespace
        .create(&parse::<Pod>(BARE_POD), false)
        .await
        .expect("a bare pod is admitted");
    assert_secured(created.spec.as_ref().unwrap());
    let stored: Pod = namespace.get("bare").await.expect("stored");
    assert_eq!(stored.spec, created.spec);

    webhooks.remove().await;
    namespace.delete().await;
}

#[tokio::test]
async fn a_compliant_pod_is_admitted_as_it_is() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let (server, namespace, webhooks) = webhook_for(&cluster, "typical-pod").await;
    namespace.service_account("agent-api").await;

    let pod: Pod = parse(TYPICAL_POD);
    let created = namespace
        .create(&pod, true)
        .await
        .expect("a compliant pod is admitted");
    // The API server fills in defaults, so compare what the policies judge.
    let (submitted, admitted) = (pod.spec.unwrap(), created.spec.unwrap());
    assert_eq!(admitted.security_context, submitted.security_context);
    assert_eq!(
        admitted.automount_service_account_token,
        submitted.automount_service_account_token
    );
    let contexts = |spec: &PodSpec| {
        let init = spec.init_containers.iter().flatten();
        let all = init.chain(&spec.containers);
        all.map(|c| c.security_context.clone()).collect::<Vec<_>>()
    };
    assert_eq!(contexts(&admitted), contexts(&submitted));
    assert!(!has_token_volume(&admitted));
    // Admitted by the webhook, not past it: each endpoint was asked once.
    let metrics = server.metrics_text().await;
    for endpoint in ["mutate", "validate"] {
        let line = format!(
            r#"agyn_admission_requests_total{{endpoint="{endpoint}",outcome="allowed"}} 1"#
        );
        assert!(metrics.contains(&line), "{line} missing from {metrics}");
    }

    webhooks.remove().await;
    namespace.delete().await;
}

#[tokio::test]
async fn a_deployments_pod_template_is_mutated() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let (_server, namespace, webhooks) = webhook_for(&cluster, "deployment").await;

    let created = namespace
        .create(&parse::<Deployment>(DEPLOYMENT), false)
        .await
        .expect("a Deployment is admitted");
    let template = created.spec.template.spec.unwrap();
    assert_secured(&template);

    webhooks.remove().await;
    namespace.delete().await;
}

#[tokio::test]
async fn a_namespace_without_the_test_label_is_not_affected() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let (_server, judged, webhooks) = webhook_for(&cluster, "judged").await;
    let other = cluster.unlabelled_namespace("unjudged").await;

    // The webhooks are in effect where they are registered...
    let mutated = judged.create(&parse::<Pod>(BARE_POD), true).await.unwrap();
    assert_secured(mutated.spec.as_ref().unwrap());
    // ...and nowhere else: the pod is as the API server alone makes it,
    // and root is allowed.
    let untouched = other.create(&parse::<Pod>(BARE_POD), true).await.unwrap();
    let spec = untouched.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, None);
    assert_eq!(
        spec.security_context.clone().unwrap_or_default(),
        Default::default()
    );
    assert_eq!(spec.containers[0].security_context, None);
    assert!(has_token_volume(&spec), "{spec:?}");
    other
        .create(&parse::<Pod>(ROOT_POD), true)
        .await
        .expect("root is not judged here");

    webhooks.remove().await;
    judged.delete().await;
    other.delete().await;
}

#[tokio::test]
async fn a_webhook_that_is_down_fails_closed_with_failure_policy_fail() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    let (server, closed, fail) = webhook_for(&cluster, "fail-closed").await;
    // The same server, registered for a second namespace to be ignored when
    // down: what differs between the two is the failure policy alone.
    let open = cluster.namespace("fail-open").await;
    let ignore = open
        .register(server.webhook, &server.pki.ca_pem(), "Ignore")
        .await;
    drop(server); // kills it

    let refused = closed
        .create(&parse::<Pod>(BARE_POD), false)
        .await
        .expect_err("no pod gets past a webhook that is down");
    // An error of the API server's (500 InternalError), not a denial.
    assert_eq!(refused.code, 500, "{refused:?}");
    assert!(
        refused
            .message
            .contains(r#"failed calling webhook "mutate.agyn.io""#),
        "{refused:?}"
    );
    assert!(closed.get::<Pod>("bare").await.is_none(), "not stored");

    let admitted = open
        .create(&parse::<Pod>(BARE_POD), false)
        .await
        .expect("Ignore admits without the webhook");
    assert!(
        has_token_volume(admitted.spec.as_ref().unwrap()),
        "unmutated"
    );

    fail.remove().await;
    ignore.remove().await;
    closed.delete().await;
    open.delete().await;
}
