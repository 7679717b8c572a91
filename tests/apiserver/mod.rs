//! A real Kubernetes API server for the tests: the one `scripts/test.sh`
//! starts from `KUBEBUILDER_ASSETS` (../shared/kube) and names by
//! `AGYN_TEST_KUBECONFIG`. Every test suite shares it, so each test works in
//! namespaces of its own, labelled for it, and registers its webhooks with a
//! namespace selector on that label: tests never see each other's webhooks.
//!
//! The API server has no controller-manager: a namespace's `default`
//! ServiceAccount is created here, pods are stored but never run, and a
//! deleted namespace stays `Terminating`. Nothing a test leaves behind can
//! reach another test, whose namespaces carry other labels.
#![allow(dead_code)] // each test crate uses its own part

use base64::Engine as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace as NamespaceObject, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The kubeconfig of the shared API server's administrator.
pub const KUBECONFIG_ENV: &str = "AGYN_TEST_KUBECONFIG";

/// The label that ties a namespace to the webhooks registered for it; its
/// value is the namespace's name.
pub const TEST_LABEL: &str = "agyn-admission.test/namespace";

/// Marks the probe pods by which a registration is seen to take effect.
/// The webhooks under test never see them.
const PROBE_LABEL: &str = "agyn-admission.test/probe";

/// A URL nothing listens on: the probe webhooks' calls fail at once.
const UNREACHABLE: &str = "https://127.0.0.1:1/probe";

/// How long the API server may take to act on a new or deleted webhook
/// configuration (it watches them; usually well under a second).
const PROPAGATION: Duration = Duration::from_secs(30);

/// The rules of charts/agyn-admission/templates/webhooks.yaml: pods on
/// creation, workload kinds (their pod templates) on creation and update.
fn workload_rules() -> Vec<Value> {
    let rule = |group: &str, resources: &[&str], operations: &[&str]| {
        json!({
            "apiGroups": [group],
            "apiVersions": ["v1"],
            "resources": resources,
            "operations": operations,
            "scope": "Namespaced",
        })
    };
    let changes = ["CREATE", "UPDATE"];
    vec![
        rule("", &["pods"], &["CREATE"]),
        rule("", &["replicationcontrollers"], &changes),
        rule(
            "apps",
            &["deployments", "statefulsets", "daemonsets", "replicasets"],
            &changes,
        ),
        rule("batch", &["jobs", "cronjobs"], &changes),
    ]
}

/// A client of the shared API server.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
}

impl Cluster {
    /// The API server named by `AGYN_TEST_KUBECONFIG`; `None`, with a
    /// message saying why the caller skips, when it is unset.
    pub async fn from_env() -> Option<Cluster> {
        let Some(path) = std::env::var_os(KUBECONFIG_ENV) else {
            // libtest names each test's thread after the test.
            let test = std::thread::current().name().unwrap_or("").to_string();
            eprintln!(
                "{test} skipped: {KUBECONFIG_ENV} is not set; run scripts/test.sh with \
                 KUBEBUILDER_ASSETS=.../shared/kube/bin"
            );
            return None;
        };
        let kubeconfig = Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: {e}", path.display()));
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Some(Cluster {
            client: Client::try_from(config).unwrap(),
        })
    }

    /// A new namespace, named after `hint` and unique on the API server,
    /// carrying [`TEST_LABEL`], with its `default` ServiceAccount.
    pub async fn namespace(&self, hint: &str) -> TestNamespace {
        self.create_namespace(hint, true).await
    }

    /// Like [`Cluster::namespace`] but without [`TEST_LABEL`]: no test's
    /// webhooks are called for it.
    pub async fn unlabelled_namespace(&self, hint: &str) -> TestNamespace {
        self.create_namespace(hint, false).await
    }

    async fn create_namespace(&self, hint: &str, labelled: bool) -> TestNamespace {
        static N: AtomicUsize = AtomicUsize::new(0);
        assert!(
            hint.len() <= 30
                && hint
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{hint:?}: up to 30 of [a-z0-9-]"
        );
        let namespaces: Api<NamespaceObject> = Api::all(self.client.clone());
        // The process id keeps test binaries running side by side apart;
        // a name left by an earlier run of this process id is skipped.
        let name = loop {
            let name = format!(
                "{hint}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let mut labels = serde_json::Map::new();
            if labelled {
                labels.insert(TEST_LABEL.to_string(), json!(name));
            }
            let namespace: NamespaceObject =
                serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                    .unwrap();
            match namespaces.create(&PostParams::default(), &namespace).await {
                Ok(_) => break name,
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => panic!("creating namespace {name}: {e}"),
            }
        };
        let namespace = TestNamespace {
            name,
            labelled,
            client: self.client.clone(),
        };
        namespace.service_account("default").await;
        namespace
    }
}

/// A namespace of one test.
pub struct TestNamespace {
    pub name: String,
    labelled: bool,
    client: Client,
}

/// What the API server answered instead of the object.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

impl TestNamespace {
    /// Creates a ServiceAccount, which a pod naming it needs: the API
    /// server refuses a pod whose account does not exist.
    pub async fn service_account(&self, name: &str) {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        self.create(&account, false)
            .await
            .unwrap_or_else(|e| panic!("creating ServiceAccount {name}: {e:?}"));
    }

    /// Creates `object` in this namespace (whatever namespace it names),
    /// with server-side dry run if `dry_run` (admission runs in full, nothing
    /// is stored), and returns the object as the API server returned it, or
    /// the API server's refusal.
    pub async fn create<K>(&self, object: &K, dry_run: bool) -> Result<K, ApiError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let mut object = object.clone();
        object.meta_mut().namespace = Some(self.name.clone());
        let params = PostParams {
            dry_run,
            ..PostParams::default()
        };
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.name);
        match api.create(&params, &object).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(status)) => Err(ApiError {
                code: status.code,
                message: status.message.clone(),
            }),
            Err(e) => panic!("creating {}: {e}", K::kind(&())),
        }
    }

    /// The stored object, or `None` if there is none by that name.
    pub async fn get<K>(&self, name: &str) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.name);
        api.get_opt(name).await.unwrap()
    }

    /// Registers a mutating (`/mutate`) and a validating (`/validate`)
    /// webhook at `webhook` (an `agyn-admission serve` address) for this
    /// namespace alone, as the chart does (same rules, sideEffects None,
    /// AdmissionReview v1), trusting `ca_pem`, with `failure_policy`
    /// ("Fail" or "Ignore"). Returns once the API server calls them.
    pub async fn register(
        &self,
        webhook: SocketAddr,
        ca_pem: &str,
        failure_policy: &str,
    ) -> Webhooks {
        static N: AtomicUsize = AtomicUsize::new(0);
        assert!(self.labelled, "{} has no {TEST_LABEL}", self.name);
        let name = format!("{}-{}", self.name, N.fetch_add(1, Ordering::Relaxed));
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let namespace_selector = json!({"matchLabels": {TEST_LABEL: self.name}});
        let entry = |kind: &str, path: &str, rules: Vec<Value>| {
            json!({
                "name": format!("{kind}.agyn.io"),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 10,
                "failurePolicy": failure_policy,
                "clientConfig": {"url": format!("https://{webhook}{path}"), "caBundle": ca_bundle},
                "namespaceSelector": namespace_selector,
                "objectSelector": {"matchExpressions": [{"key": PROBE_LABEL, "operator": "DoesNotExist"}]},
                "rules": rules,
            })
        };
        // A configuration's webhooks take effect together, when the API
        // server's watch delivers it: a probe webhook beside the real one,
        // failing every pod that carries its label, shows when that is.
        let probe = |kind: &str| {
            json!({
                "name": format!("probe.{kind}.agyn.io"),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "timeoutSeconds": 1,
                "failurePolicy": "Fail",
                "clientConfig": {"url": UNREACHABLE},
                "namespaceSelector": namespace_selector,
                "objectSelector": {"matchLabels": {PROBE_LABEL: format!("{kind}-{name}")}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                           "operations": ["CREATE"], "scope": "Namespaced"}],
            })
        };
        // Mutation can be undone by a later mutating webhook: the chart
        // asks to be called again, and so do these.
        let mut mutate = entry("mutate", "/mutate", workload_rules());
        mutate["reinvocationPolicy"] = json!("IfNeeded");
        // Ephemeral containers are added by an UPDATE of a subresource:
        // judged, never mutated.
        let mut validated = workload_rules();
        validated.push(json!({
            "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/ephemeralcontainers"],
            "operations": ["UPDATE"], "scope": "Namespaced",
        }));
        let validate = entry("validate", "/validate", validated);

        let metadata = json!({"name": name, "labels": {TEST_LABEL: self.name}});
        let mutating: MutatingWebhookConfiguration = serde_json::from_value(
            json!({"metadata": metadata.clone(), "webhooks": [mutate, probe("mutate")]}),
        )
        .unwrap();
        let validating: ValidatingWebhookConfiguration = serde_json::from_value(
            json!({"metadata": metadata, "webhooks": [validate, probe("validate")]}),
        )
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &mutating)
            .await
            .unwrap();
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &validating)
            .await
            .unwrap();
        let webhooks = Webhooks {
            name,
            namespace: self.name.clone(),
            client: self.client.clone(),
        };
        webhooks.wait_until(true).await;
        webhooks
    }

    /// Deletes the namespace. Without a controller-manager it stays
    /// `Terminating` with whatever it holds, but nothing can be created in
    /// it any more.
    pub async fn delete(self) {
        Api::<NamespaceObject>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// The webhook configurations [`TestNamespace::register`] made.
pub struct Webhooks {
    /// Of both configurations (they are of two kinds).
    pub name: String,
    namespace: String,
    client: Client,
}

impl Webhooks {
    /// Deletes both configurations and returns once the API server no
    /// longer calls them.
    pub async fn remove(self) {
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        self.wait_until(false).await;
    }

    /// Waits until both configurations are in effect (`active`) or gone,
    /// by dry-run creations of the probe pods.
    async fn wait_until(&self, active: bool) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        for kind in ["mutate", "validate"] {
            let probe: Pod = serde_json::from_value(json!({
                "metadata": {"name": "probe", "labels": {PROBE_LABEL: format!("{kind}-{}", self.name)}},
                "spec": {"containers": [{"name": "probe", "image": "probe"}]},
            }))
            .unwrap();
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let webhook = format!("\"probe.{kind}.agyn.io\"");
            let start = Instant::now();
            loop {
                let outcome = pods.create(&params, &probe).await;
                let probed = match &outcome {
                    Err(kube::Error::Api(status)) => status.message.contains(&webhook),
                    _ => false,
                };
                if probed == active {
                    break;
                }
                assert!(
                    start.elapsed() < PROPAGATION,
                    "{} not {} after {PROPAGATION:?}: the probe pod got {outcome:?}",
                    self.name,
                    if active { "in effect" } else { "gone" },
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
