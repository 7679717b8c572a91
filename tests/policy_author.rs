//! The policy author's path, as the README tells it, from an empty folder
//! outside the repository: `policy new` → edit → `policy build` →
//! `policy test` → `check` with a policy set using the module, for a
//! Service, an Ingress and a ClusterRole. Nothing is installed but Rust.
//!
//! The crates build in the target directory the webhook's build script
//! builds the built-in policies in, with the same profile, so the SDK's
//! dependencies are compiled once per machine, not once per test.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_agyn-admission");

/// `target/policy-wasm`, where build.rs built the built-in component.
fn shared_target_dir() -> PathBuf {
    Path::new(env!("AGYN_BUILTIN_POLICIES_WASM"))
        .ancestors()
        .nth(3)
        .expect("policy-wasm/<target>/<profile>/<file>")
        .to_path_buf()
}

fn agyn(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env("AGYN_POLICY_TARGET_DIR", shared_target_dir())
        .env("AGYN_CACHE_DIR", common::cache_dir())
        .output()
        .unwrap();
    eprintln!(
        "$ agyn-admission {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn succeeds(dir: &Path, args: &[&str]) -> String {
    let output = agyn(dir, args);
    assert!(output.status.success(), "{args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// Checks `manifest` with a set holding the crate's policy; the results.
fn check(dir: &Path, name: &str, settings: &str, manifest: &str) -> (i32, Value) {
    std::fs::write(
        dir.join("set.yaml"),
        format!(
            "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: {name}\n    module: {name}/{name}.wasm\n    mutate: true\n    settings: {settings}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("object.yaml"), manifest).unwrap();
    let output = agyn(
        dir,
        &[
            "check",
            "--policies",
            "set.yaml",
            "-o",
            "json",
            "object.yaml",
        ],
    );
    let results: Value = serde_json::from_slice(&output.stdout).expect("check prints JSON");
    (output.status.code().unwrap(), results[0].clone())
}

#[test]
fn a_new_policy_builds_tests_and_judges_services_ingresses_and_cluster_roles() {
    let root = common::temp_dir("author");
    assert!(!root.starts_with(env!("CARGO_MANIFEST_DIR")));

    // A Service policy, with the SDK written beside it.
    let created = succeeds(
        &root,
        &["policy", "new", "require-owner", "--kind", "Service"],
    );
    assert!(created.contains("created require-owner"), "{created}");
    let crate_dir = root.join("require-owner");
    // The edit an author makes: a second label to require.
    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace(
        "\"metadata.labels.{} must name the owner (is unset)\"",
        "\"metadata.labels.{} must name the owning team (is unset)\"",
    );
    assert_ne!(source, edited, "the template has the message to edit");
    std::fs::write(&lib, edited).unwrap();
    let tests = crate_dir.join("tests/require-owner.test.yaml");
    let yaml = std::fs::read_to_string(&tests).unwrap();
    std::fs::write(
        &tests,
        yaml.replace("the owner (is unset)", "the owning team (is unset)"),
    )
    .unwrap();

    let built = succeeds(&crate_dir, &["policy", "build"]);
    assert!(
        built.contains("require-owner.wasm") && built.contains("sha256"),
        "{built}"
    );
    let tested = succeeds(&crate_dir, &["policy", "test"]);
    assert!(tested.contains("2 passed; 0 failed"), "{tested}");

    let inspected = succeeds(
        &crate_dir,
        &["policy", "inspect", "require-owner.wasm", "-o", "json"],
    );
    let inspected: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["world"], "agyn:policy@0.2.0");
    assert_eq!(inspected["wasi"], false);
    assert_eq!(
        inspected["policies"][0]["rules"][0]["resources"],
        serde_json::json!(["services"])
    );

    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: agyn}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n";
    let (code, denied) = check(&root, "require-owner", "{}", service);
    assert_eq!(code, 1, "{denied}");
    assert_eq!(
        denied["violations"][0]["message"],
        "metadata.labels.owner must name the owning team (is unset)",
        "{denied}"
    );
    let (code, fixed) = check(&root, "require-owner", "{defaultOwner: web-team}", service);
    assert_eq!(code, 0, "{fixed}");
    assert_eq!(
        fixed["patch"],
        serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {"owner": "web-team"}}])
    );

    // An Ingress and a ClusterRole (cluster-scoped), sharing that SDK.
    let sdk = crate_dir.join("agyn-policy-sdk");
    for (name, kind, manifest) in [
        (
            "ingress-owner",
            "Ingress",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: agyn}\nspec: {rules: [{host: example.com}]}\n",
        ),
        (
            "role-owner",
            "ClusterRole",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\nrules: [{apiGroups: [\"\"], resources: [pods], verbs: [get]}]\n",
        ),
    ] {
        succeeds(
            &root,
            &[
                "policy",
                "new",
                name,
                "--kind",
                kind,
                "--sdk",
                sdk.to_str().unwrap(),
            ],
        );
        let dir = root.join(name);
        succeeds(&dir, &["policy", "build"]);
        let tested = succeeds(&dir, &["policy", "test"]);
        assert!(tested.contains("2 passed; 0 failed"), "{tested}");
        let (code, denied) = check(&root, name, "{}", manifest);
        assert_eq!(code, 1, "{denied}");
        assert_eq!(denied["kind"], kind);
        assert_eq!(
            denied["violations"][0]["message"],
            "metadata.labels.owner must name the owner (is unset)"
        );
        // A pod is not theirs to judge.
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: nginx:1.27}]}\n";
        let (code, skipped) = check(&root, name, "{}", pod);
        assert_eq!(code, 0, "{skipped}");
    }
    // A cluster-scoped object has no namespace, whatever the default.
    let (_, role) = check(
        &root,
        "role-owner",
        "{}",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\n",
    );
    assert_eq!(role["namespace"], "");
}

#[test]
fn new_refuses_bad_names_kinds_and_existing_folders() {
    let root = common::temp_dir("author-errors");
    for (args, message) in [
        (&["policy", "new", "Bad_Name"][..], "is not a policy name"),
        (
            &["policy", "new", "widgets", "--kind", "Widget"][..],
            "give a custom resource's group too, as `example.com/Widget`",
        ),
    ] {
        let output = agyn(&root, args);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
    succeeds(
        &root,
        &[
            "policy",
            "new",
            "widgets",
            "--kind",
            "example.com/Widget",
            "--sdk",
            "/nonexistent",
        ],
    );
    let lib = std::fs::read_to_string(root.join("widgets/src/lib.rs")).unwrap();
    assert!(lib.contains("type Object = DynamicObject;"), "{lib}");
    assert!(lib.contains("resources: &[\"widgets\"]"), "{lib}");
    let again = agyn(&root, &["policy", "new", "widgets"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
