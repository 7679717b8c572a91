//! `agyn-admission check` end to end: the built binary on the bundled
//! examples and on generated input, its outputs and its exit codes.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn check(args: &[&str], stdin: Option<&str>) -> Output {
    common::check(args, stdin.unwrap_or_default())
}

fn json(output: &Output) -> Vec<Value> {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn the_examples_are_judged_as_their_comments_say() {
    let out = check(&["-o", "json", examples().to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = json(&out);
    let verdict = |name: &str| {
        let r = results
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        match (r.get("skipped"), r["allowed"].as_bool().unwrap()) {
            (Some(_), _) => "skipped",
            (None, true) => "admitted",
            (None, false) => "denied",
        }
    };
    for (name, expected) in [
        ("api", "admitted"),
        ("gateway", "admitted"),
        ("agent-run-43", "admitted"),
        ("api-config", "skipped"),
        ("debug", "denied"),
        ("legacy-worker", "denied"),
        ("agent-run-42", "denied"),
        ("node-exporter", "denied"),
    ] {
        assert_eq!(verdict(name), expected, "{name}");
    }
    for r in &results {
        for field in [
            "source",
            "kind",
            "namespace",
            "name",
            "allowed",
            "violations",
            "warnings",
            "patch",
        ] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
    }
    let debug = results.iter().find(|r| r["name"] == "debug").unwrap();
    let messages: Vec<String> = debug["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}: {}",
                v["policy"].as_str().unwrap(),
                v["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(messages.contains(&"readonly-root-filesystem: container \"shell\": securityContext.readOnlyRootFilesystem must be true (is false)".to_string()), "{messages:?}");
    assert!(
        debug["source"]
            .as_str()
            .unwrap()
            .ends_with("examples/agyn/debug-pod.yaml#1")
    );
}

#[test]
fn mutated_manifests_are_admitted_as_they_are() {
    let bare = examples().join("agyn/bare-deployment.yaml");
    let out = check(&["-o", "manifests", bare.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let mutated = String::from_utf8(out.stdout).unwrap();
    assert!(
        mutated.contains("readOnlyRootFilesystem: true"),
        "{mutated}"
    );
    // Checked again, the mutated manifest needs no patch and passes.
    let again = check(&["-o", "json", "-"], Some(&mutated));
    assert_eq!(again.status.code(), Some(0));
    let results = json(&again);
    assert_eq!(results[0]["patch"], Value::Array(vec![]));
    assert_eq!(results[0]["source"], "-#1");
}

#[test]
fn stdin_lists_and_the_namespace_flag() {
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
         "spec": {"containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0}}]}}]}"#;
    let out = check(&["-o", "json", "-n", "agyn", "-"], Some(list));
    assert_eq!(out.status.code(), Some(1));
    let results = json(&out);
    assert_eq!(results[0]["namespace"], "agyn");
    assert_eq!(results[0]["source"], "-#1.items[0]");
    // kube-system is exempt: the same pod passes there.
    let out = check(&["-n", "kube-system", "-"], Some(list));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn input_errors_exit_2_and_name_the_file_and_document() {
    let dir = common::temp_dir("bad-input");
    let file = dir.join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\njust a string\n",
    )
    .unwrap();
    let out = check(&[file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.yaml#2: not a Kubernetes object"),
        "{stderr}"
    );

    // A file that cannot be read: its name, and the cause once.
    for (args, file) in [
        (
            &["/nonexistent/manifest.yaml"][..],
            "/nonexistent/manifest.yaml",
        ),
        (
            &["--policies", "/nonexistent/set.yaml", "-"],
            "/nonexistent/set.yaml",
        ),
    ] {
        let out = check(args, Some(""));
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("error: cannot read {file}: No such file or directory (os error 2)\n")
        );
    }
    let out = check(&["--output", "xml", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn junit_and_sarif_reports() {
    let dir = examples();
    let out = check(&["-o", "junit", dir.to_str().unwrap()], None);
    let junit = String::from_utf8(out.stdout).unwrap();
    assert!(
        junit.contains(r#"tests="11" failures="4" skipped="4""#),
        "{junit}"
    );
    assert!(
        junit.contains("<failure message=\"denied by 3 violation(s)\">"),
        "{junit}"
    );

    let out = check(&["-o", "sarif", dir.to_str().unwrap()], None);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["level"] == "error"));
    // The pod starts on line 2, below a comment.
    assert!(results.iter().any(|r| {
        let location = &r["locations"][0]["physicalLocation"];
        r["ruleId"] == "workload-isolation"
            && location["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with("host-access-pod.yaml")
            && location["region"] == serde_json::json!({"startLine": 2})
    }));
    // Rules carry what the policies' metadata says of them.
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    let isolation = rules
        .iter()
        .find(|r| r["id"] == "workload-isolation")
        .unwrap();
    assert!(
        isolation["shortDescription"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Agent pods run only in the workload namespace"),
        "{isolation}"
    );
    assert_eq!(isolation["properties"]["severity"], "critical");
}

/// A stream of documents: a comment, an admitted pod, a denied one after a
/// blank line and a comment, and a List of two (one denied).
const STREAM: &str = "# header\n\
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec:
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: c
      image: i
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
---

# the second
apiVersion: v1
kind: Pod
metadata: {name: root}
spec: {containers: [{name: c, image: i, securityContext: {runAsUser: 0}}]}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: cm}}
  - {apiVersion: v1, kind: Pod, metadata: {name: root-too}, spec: {containers: [{name: c, image: i, securityContext: {runAsUser: 0}}]}}
";

#[test]
fn reports_point_at_the_line_each_object_starts_on() {
    let dir = common::temp_dir("lines");
    let file = dir.join("stream.yaml");
    std::fs::write(&file, STREAM).unwrap();
    // The same stream with an anchor, which the fast YAML path leaves to
    // serde-saphyr: the lines must not depend on the reader.
    let anchored = dir.join("anchored.yaml");
    std::fs::write(&anchored, STREAM.replace("name: c\n", "name: &n c\n")).unwrap();
    for file in [&file, &anchored] {
        let path = file.to_str().unwrap();
        let out = check(&["-o", "json", path], None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<(String, u64)> = json(&out)
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().into(),
                    r["line"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected = [("fine", 2), ("root", 15), ("cm", 20), ("root-too", 20)];
        assert_eq!(lines, expected.map(|(n, l)| (n.to_string(), l)), "{path}");

        let out = check(&["-o", "sarif", path], None);
        let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
        let regions: Vec<&Value> = sarif["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["locations"][0]["physicalLocation"]["region"]["startLine"])
            .collect();
        assert!(!regions.is_empty());
        assert!(regions.iter().all(|l| *l == 15 || *l == 20), "{regions:?}");
        assert!(regions.contains(&&Value::from(15)) && regions.contains(&&Value::from(20)));
    }

    let path = file.to_str().unwrap();
    let table = String::from_utf8(check(&[path], None).stdout).unwrap();
    assert!(
        table.contains(&format!("Pod default/root  {path}#2, line 15 (mutated")),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "Pod default/root-too  {path}#3.items[1], line 20 ("
        )),
        "{table}"
    );
    let junit = String::from_utf8(check(&["-o", "junit", path], None).stdout).unwrap();
    assert!(
        junit.contains(&format!(
            r#"<testcase classname="{path}#2" name="Pod default/root" file="{path}" line="15">"#
        )),
        "{junit}"
    );

    // A file of one document says no line in the table.
    let bare = examples().join("agyn/debug-pod.yaml");
    let table = String::from_utf8(check(&[bare.to_str().unwrap()], None).stdout).unwrap();
    assert!(table.contains("debug-pod.yaml#1 (mutated"), "{table}");
}

#[test]
fn a_policy_that_fails_under_failure_policy_ignore_is_a_warning() {
    let dir = common::temp_dir("ignored-failure");
    let set = dir.join("set.yaml");
    std::fs::write(
        &set,
        format!(
            "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n  - {{name: trap, module: {}, failurePolicy: Ignore}}\n",
            common::HOSTILE_WASM
        ),
    )
    .unwrap();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n";
    let run = |format: &str| {
        let out = check(
            &["--policies", set.to_str().unwrap(), "-o", format, "-"],
            Some(pod),
        );
        // Ignore admits the object.
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let failed = "the policy failed (failurePolicy: Ignore, so it was left out): it trapped: ";

    let table = run("table");
    assert!(
        table.starts_with("ADMITTED Pod default/p  -#1\n"),
        "{table}"
    );
    assert!(
        table.contains(&format!("  warn  trap: {failed}")),
        "{table}"
    );
    assert!(table.contains("unreachable"), "{table}");

    let results: Vec<Value> = serde_json::from_str(&run("json")).unwrap();
    let warnings = results[0]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0]["policy"], "trap");
    assert!(warnings[0]["message"].as_str().unwrap().starts_with(failed));
    assert_eq!(results[0]["allowed"], true);

    let junit = run("junit");
    assert!(junit.contains(r#"tests="1" failures="0""#), "{junit}");
    assert!(
        junit.contains(&format!("<system-out>warn trap: {failed}")),
        "{junit}"
    );

    let sarif: Value = serde_json::from_str(&run("sarif")).unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["level"], "warning");
    assert_eq!(results[0]["ruleId"], "trap");
    assert!(
        results[0]["message"]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Pod default/p: {failed}"))
    );
}

/// A pod that every built-in policy admits unchanged.
fn compliant_pod(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/typical-pod.yaml"),
    )
    .unwrap()
    .replace("agent-api-7f9c8d6b5-x2k4p", name)
}

#[test]
fn files_judged_in_parallel_are_reported_in_order() {
    let dir = common::temp_dir("many");
    for i in 0..40 {
        std::fs::write(
            dir.join(format!("pod-{i:02}.yaml")),
            compliant_pod(&format!("pod-{i}")),
        )
        .unwrap();
    }
    let out = check(&["-o", "json", dir.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = json(&out)
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..40).map(|i| format!("pod-{i}")).collect();
    assert_eq!(names, expected);

    // The first broken file in order is the one reported, although the one
    // after it, being short, fails first on another core.
    let slow: String = (0..300)
        .map(|i| format!("---\n{}", compliant_pod(&format!("slow-{i}"))))
        .collect();
    std::fs::write(
        dir.join("pod-07.yaml"),
        format!("{slow}---\njust a string\n"),
    )
    .unwrap();
    std::fs::write(dir.join("pod-08.yaml"), "just a string\n").unwrap();
    let out = check(&[dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pod-07.yaml#301: not a Kubernetes object"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
