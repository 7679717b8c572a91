//! What a pod costs: one policy through the engine, the whole built-in set
//! through the engine and through `review` (with the host's JSON work), and
//! the same policies as native Rust, the floor. The pod is in `agyn`, so
//! every built-in policy judges it, `pod-security` included.

use agyn_admission::admission::{AdmissionRequest, review};
use agyn_admission::config::{PolicySet, Source};
use agyn_admission::engine::BUILTIN_COMPONENT;
use agyn_admission::engine::{Call, Engine, EngineOptions, Limits};
use agyn_policy_sdk::{Entry, entry};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;

const POD: &str = include_str!("../../tests/data/typical-pod.yaml");

const NATIVE: &[Entry] = &[
    entry::<run_as_non_root::RunAsNonRoot>(),
    entry::<readonly_root_filesystem::ReadonlyRootFilesystem>(),
    entry::<drop_capabilities::DropCapabilities>(),
    entry::<service_account_token::ServiceAccountToken>(),
    entry::<workload_isolation::WorkloadIsolation>(),
    entry::<pod_security::PodSecurity>(),
];

/// The built-in set's policies, with their settings, as engine calls.
fn calls(set: &PolicySet) -> Vec<Call> {
    set.policies
        .iter()
        .map(|p| Call {
            policy: p.inner.clone(),
            settings: p.settings.clone(),
            mutate: p.mutate,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pod: Value = serde_saphyr::from_str(POD).unwrap();
    let object = pod.to_string();
    let request_json = json!({
        "uid": "b", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "agyn", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
    });
    let request = request_json.to_string();
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let component = engine
        .load(BUILTIN_COMPONENT, None, Limits::default())
        .unwrap();
    let set = PolicySet::load(&Source::Builtin, &engine).unwrap();
    let all = calls(&set);
    let one = &all[..1];
    let single = std::fs::read(env!("AGYN_RUN_AS_NON_ROOT_WASM")).unwrap();
    let single = engine.load(&single, None, Limits::default()).unwrap();
    for (name, component) in [
        ("wasm: one policy, its own component", &single),
        ("wasm: one policy, in the bundle", &component),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                component
                    .evaluate(&request, black_box(&object), None, one, Limits::default())
                    .unwrap()
            })
        });
    }
    c.bench_function("wasm: built-in set, one call", |b| {
        b.iter(|| {
            component
                .evaluate(&request, black_box(&object), None, &all, Limits::default())
                .unwrap()
        })
    });

    let mut admission = request_json.clone();
    admission["object"] = pod.clone();
    let admission: AdmissionRequest = serde_json::from_str(&admission.to_string()).unwrap();
    c.bench_function("review: built-in set", |b| {
        b.iter(|| {
            let decision = review(&set, black_box(&admission)).unwrap();
            assert!(decision.allowed());
        })
    });

    let native_calls: Vec<agyn_policy_sdk::Call> = all
        .iter()
        .map(|c| agyn_policy_sdk::Call {
            policy: c.policy.clone(),
            settings: c.settings.clone(),
            mutate: c.mutate,
        })
        .collect();
    c.bench_function("native: built-in set", |b| {
        b.iter(|| {
            agyn_policy_sdk::evaluate(NATIVE, &request, black_box(&object), None, &native_calls)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
