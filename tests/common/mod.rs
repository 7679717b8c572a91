//! Helpers shared by the end-to-end tests.
#![allow(dead_code)] // each test crate uses its own part

use agyn_admission::admission::AdmissionRequest;
use agyn_admission::config::{PolicySet, Source};
use agyn_admission::engine::{Engine, EngineOptions};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The deliberately broken component built by webhook/build.rs.
pub const HOSTILE_WASM: &str = env!("AGYN_HOSTILE_POLICIES_WASM");

/// Tests share one compiled-policy cache so the built-in component is
/// compiled once per run, not once per test.
pub fn engine() -> Engine {
    Engine::new(&EngineOptions {
        cache_dir: Some(cache_dir()),
    })
    .expect("engine")
}

pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("agyn-admission-test-cache")
}

/// A fresh directory under the target directory's temp space.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "agyn-admission-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a policy set file and loads it.
pub fn load_set(engine: &Engine, yaml: &str) -> Result<PolicySet, String> {
    let path = temp_dir("set").join("policy-set.yaml");
    std::fs::write(&path, yaml).unwrap();
    PolicySet::load(&Source::File(path), engine).map_err(|e| e.to_string())
}

pub fn builtin(engine: &Engine) -> PolicySet {
    PolicySet::load(&Source::Builtin, engine).expect("the built-in set loads")
}

/// A CREATE request for `object` in `namespace`, as the API server sends it.
pub fn create(namespace: &str, object: Value) -> AdmissionRequest {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    let resource = agyn_admission::admission::kinds::resource_of(group, version, kind).resource;
    serde_json::from_str(
        &json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "namespace": namespace,
        "name": object["metadata"]["name"],
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object,
        "dryRun": false,
        })
        .to_string(),
    )
    .unwrap()
}

/// A pod from YAML.
pub fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

/// `agyn-admission check ARGS` on the built binary, with `stdin`, sharing
/// the tests' compiled-module cache.
pub fn check(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agyn-admission"))
        .arg("check")
        .args(["--cache-dir", cache_dir().to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
