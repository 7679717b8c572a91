//! `agyn-admission policy test` end to end: the built binary on test files
//! for the policies built as their own components, as authors build
//! theirs, and for the built-in component; its report, its JUnit output
//! and its exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_agyn-admission");
const RUN_AS_NON_ROOT: &str = env!("AGYN_RUN_AS_NON_ROOT_WASM");

/// Runs `policy test` in `dir` with the tests' shared compile cache.
fn policy_test(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["policy", "test", "--cache-dir"])
        .arg(common::cache_dir())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The command exited with `code`; its output is shown when not.
#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}{}",
        stdout(output),
        stderr(output)
    );
}

/// Writes `files` (path, text) under a fresh directory.
fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = common::temp_dir(name);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// A component's path as a YAML string.
fn module(path: &str) -> String {
    format!("module: {path:?}\n")
}

const ROOT_POD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: root, namespace: agyn}
spec:
  securityContext: {runAsNonRoot: false, runAsUser: 0, runAsGroup: 0}
  containers: [{name: app, image: nginx}]
";

/// Tests of run-as-non-root that hold: what the policy answers, as the
/// webhook runs it.
const PASSING: &str = r#"
settings: {defaultUser: 65532, defaultGroup: 65532}
tests:
  - name: a pod running as root is denied
    file: objects/root-pod.yaml
    user: alice
    groups: [developers]
    expect:
      allowed: false
      messagesExactly: true
      messages:
        - 'container "app": securityContext.runAsNonRoot must be true (is false)'
        - 'container "app": securityContext.runAsUser must be a non-zero UID (is 0)'
        - 'container "app": securityContext.runAsGroup must be a non-zero GID (is 0)'
      patch: []

  - name: a bare pod is given non-root IDs
    object: &bare
      apiVersion: v1
      kind: Pod
      metadata: {name: bare}
      spec:
        containers: [{name: app, image: nginx}]
    expect:
      allowed: true
      messagesExactly: true
      messages: []
      patch:
        - op: add
          path: /spec/securityContext
          value: {runAsGroup: 65532, runAsNonRoot: true, runAsUser: 65532}

  - name: the settings choose the IDs
    settings: {defaultUser: 1000, defaultGroup: 3000}
    object: *bare
    expect:
      object:
        apiVersion: v1
        kind: Pod
        metadata: {name: bare}
        spec:
          securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 3000}
          containers: [{name: app, image: nginx}]

  - name: a pod is not mutated on UPDATE, so a bare one is denied
    operation: UPDATE
    object: *bare
    oldObject: *bare
    expect:
      allowed: false
      messages: ['container "app": securityContext.runAsUser must be a non-zero UID (is unset)']
      patch: []

  - name: without mutation a bare pod is denied
    mutate: false
    object: *bare
    expect: {allowed: false, patch: []}

  - name: a Deployment's pod template is mutated
    namespace: agyn
    object:
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: web}
      spec:
        selector: {matchLabels: {app: web}}
        template:
          metadata: {labels: {app: web}}
          spec:
            containers: [{name: app, image: nginx}]
    expect:
      allowed: true
      patch:
        - op: add
          path: /spec/template/spec/securityContext
          value: {runAsGroup: 65532, runAsNonRoot: true, runAsUser: 65532}

  - name: a ConfigMap is not the policy's to judge
    object: {apiVersion: v1, kind: ConfigMap, metadata: {name: settings}}
    expect: {skipped: true}

  - name: a root default is refused
    settings: {defaultUser: 0}
    object: *bare
    expect:
      error: "defaultUser must be a positive ID (is 0)"
"#;

#[test]
fn a_passing_file_reports_every_test_ok() {
    let hostile = format!(
        "{}policy: trap\ntests:\n  - name: a trap is a failure, not a denial\n    object: {{apiVersion: v1, kind: Pod, metadata: {{name: p}}, spec: {{containers: []}}}}\n    expect: {{error: \"the policy failed: it trapped\"}}\n",
        module(common::HOSTILE_WASM)
    );
    let dir = tree(
        "policy-test-pass",
        &[
            (
                "tests/run-as-non-root.test.yaml",
                &(module(RUN_AS_NON_ROOT) + PASSING),
            ),
            // Not a test file: found only through `file:`.
            ("tests/objects/root-pod.yaml", ROOT_POD),
            ("tests/more/hostile.test.yml", &hostile),
        ],
    );
    let out = policy_test(&dir, &[]);
    assert_exit(&out, 0);
    let file = "tests/run-as-non-root.test.yaml";
    let expected = [
        "running 9 tests".to_string(),
        "test tests/more/hostile.test.yml: a trap is a failure, not a denial ... ok".into(),
        format!("test {file}: a pod running as root is denied ... ok"),
        format!("test {file}: a bare pod is given non-root IDs ... ok"),
        format!("test {file}: the settings choose the IDs ... ok"),
        format!("test {file}: a pod is not mutated on UPDATE, so a bare one is denied ... ok"),
        format!("test {file}: without mutation a bare pod is denied ... ok"),
        format!("test {file}: a Deployment's pod template is mutated ... ok"),
        format!("test {file}: a ConfigMap is not the policy's to judge ... ok"),
        format!("test {file}: a root default is refused ... ok"),
        String::new(),
        "test result: ok. 9 passed; 0 failed".into(),
    ];
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_failing_test_shows_what_it_expected_and_what_came() {
    let dir = tree(
        "policy-test-fail",
        &[(
            "wrong.test.yaml",
            &(module(RUN_AS_NON_ROOT)
                + r#"tests:
  - name: a wrong message
    object: &root
      apiVersion: v1
      kind: Pod
      metadata: {name: root}
      spec:
        securityContext: {runAsNonRoot: true, runAsUser: 0, runAsGroup: 1000}
        containers: [{name: app, image: nginx}]
    expect:
      allowed: false
      messages: ['container "app": must not run as root']
  - name: a wrong patch
    object: {apiVersion: v1, kind: Pod, metadata: {name: bare}, spec: {containers: [{name: app, image: nginx}]}}
    expect:
      patch: [{op: add, path: /spec/securityContext, value: {runAsUser: 1000}}]
  - name: a denial expected to be admitted
    object: *root
    expect: {allowed: true}
  - name: a test of a kind the policy never judges
    object: {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
    expect: {allowed: true}
  - name: the right verdict
    object: *root
    expect: {allowed: false}
"#),
        )],
    );
    let out = policy_test(&dir, &["wrong.test.yaml"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("test wrong.test.yaml: a wrong message ... FAILED\n"));
    assert!(text.contains("test wrong.test.yaml: the right verdict ... ok\n"));
    for section in [
        r#"
---- wrong.test.yaml: a wrong message (line 3) ----
messages: not among the denial messages:
    container "app": must not run as root
  the denial messages:
    container "app": securityContext.runAsUser must be a non-zero UID (is 0)
"#,
        r#"
---- wrong.test.yaml: a wrong patch (line 14) ----
patch: not the expected one
  expected:
    {"op":"add","path":"/spec/securityContext","value":{"runAsUser":1000}}
  got:
    {"op":"add","path":"/spec/securityContext","value":{"runAsGroup":65532,"runAsNonRoot":true,"runAsUser":65532}}
"#,
        r#"
---- wrong.test.yaml: a denial expected to be admitted (line 18) ----
allowed: expected true, got false
  the denial messages:
    container "app": securityContext.runAsUser must be a non-zero UID (is 0)
"#,
        "
---- wrong.test.yaml: a test of a kind the policy never judges (line 21) ----
the policy did not judge the request: no policy judges a ConfigMap
",
        "
failures:
    wrong.test.yaml: a wrong message
    wrong.test.yaml: a wrong patch
    wrong.test.yaml: a denial expected to be admitted
    wrong.test.yaml: a test of a kind the policy never judges

test result: FAILED. 1 passed; 4 failed
",
    ] {
        assert!(text.contains(section), "{section}\nnot in:\n{text}");
    }
}

#[test]
fn bad_input_is_refused_with_its_line_and_nothing_runs() {
    let pod = "{apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: []}}";
    let head = "module: builtin\npolicy: run-as-non-root\ntests:\n  - name: t\n";
    let cases = [
        (
            format!("{head}    object: {pod}\n    expect:\n      alowed: false\n"),
            "bad.test.yaml: error: line 7 column 7: unknown field `alowed`",
        ),
        (
            format!("{head}    expect: {{allowed: true}}\n"),
            "bad.test.yaml: line 4: test \"t\": no object: give `object` or `file`",
        ),
        (
            format!(
                "{head}    operation: UPDATE\n    object: {pod}\n    expect: {{allowed: true}}\n"
            ),
            "bad.test.yaml: line 5: test \"t\": an UPDATE needs the object before it",
        ),
        (
            format!("{head}    file: missing.yaml\n    expect: {{allowed: true}}\n"),
            "bad.test.yaml: line 5: test \"t\": `file`: cannot read ./missing.yaml",
        ),
        (
            format!("{head}    object: {pod}\n    expect: {{allowed: true, error: x}}\n"),
            "bad.test.yaml: line 6: test \"t\": `error` expects no verdict",
        ),
        (
            format!("{head}    object: {pod}\n    expect: {{messagesExactly: true}}\n"),
            "bad.test.yaml: line 6: test \"t\": `messagesExactly` needs `messages`",
        ),
        (
            format!(
                "{head}    namespace: agyn\n    object: {{apiVersion: v1, kind: Namespace, metadata: {{name: agyn}}}}\n    expect: {{skipped: true}}\n"
            ),
            "bad.test.yaml: line 5: test \"t\": a Namespace is cluster-scoped: it has no namespace",
        ),
        (
            format!(
                "module: builtin\npolicy: run-as-root\ntests:\n  - name: t\n    object: {pod}\n    expect: {{allowed: true}}\n"
            ),
            "bad.test.yaml: line 2: the module has no policy \"run-as-root\" (it has: run-as-non-root, readonly-root-filesystem,",
        ),
        (
            format!(
                "module: builtin\ntests:\n  - name: t\n    object: {pod}\n    expect: {{allowed: true}}\n"
            ),
            "bad.test.yaml: line 3: test \"t\": which policy? The module has 6: name one with `policy:`",
        ),
        (
            format!(
                "module: missing.wasm\ntests:\n  - name: t\n    object: {pod}\n    expect: {{allowed: true}}\n"
            ),
            "bad.test.yaml: line 1: module: cannot read ./missing.wasm",
        ),
        (
            format!("tests:\n  - name: t\n    object: {pod}\n    expect: {{allowed: true}}\n"),
            "bad.test.yaml: no module to test",
        ),
        (
            format!(
                "{head}    object: {pod}\n    expect: {{allowed: true}}\n  - name: t\n    object: {pod}\n    expect: {{allowed: true}}\n"
            ),
            "bad.test.yaml: line 7: test \"t\": the name is used twice in this file",
        ),
        (
            "module: builtin\ntests: []\n".to_string(),
            "bad.test.yaml: line 2: no tests",
        ),
    ];
    for (text, error) in cases {
        let dir = tree("policy-test-bad", &[("bad.test.yaml", &text)]);
        let out = policy_test(&dir, &["./bad.test.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert_eq!(stdout(&out), "", "nothing runs");
        let expected = format!("error: ./{error}");
        assert!(
            stderr(&out).starts_with(&expected),
            "{}\nexpected: {expected}",
            stderr(&out)
        );
    }

    // One bad file among good ones: none of them runs.
    let dir = tree(
        "policy-test-bad-among-good",
        &[
            ("a.test.yaml", &(module(RUN_AS_NON_ROOT) + PASSING)),
            ("objects/root-pod.yaml", ROOT_POD),
            ("z.test.yaml", "tests: [{name: t}]\n"),
        ],
    );
    let out = policy_test(&dir, &["."]);
    assert_exit(&out, 2);
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).starts_with("error: ./z.test.yaml: error: line 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn junit_counts_every_test_of_every_file() {
    let dir = tree(
        "policy-test-junit",
        &[
            ("tests/a.test.yaml", &(module(RUN_AS_NON_ROOT) + PASSING)),
            ("tests/objects/root-pod.yaml", ROOT_POD),
            (
                "tests/b.test.yaml",
                &(module(RUN_AS_NON_ROOT)
                    + "tests:\n  - name: <expected> & denied\n    object: {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: app, image: nginx}]}}\n    mutate: false\n    expect: {allowed: true}\n  - name: ok\n    object: {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: []}}\n    expect: {allowed: true}\n"),
            ),
        ],
    );
    let out = policy_test(&dir, &["-o", "junit"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    let xml = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let root = xml.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("10"));
    assert_eq!(root.attribute("failures"), Some("1"));
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    let counts: Vec<_> = suites
        .iter()
        .map(|s| {
            let cases = s.children().filter(|n| n.has_tag_name("testcase")).count();
            (
                s.attribute("name").unwrap(),
                s.attribute("tests").unwrap(),
                s.attribute("failures").unwrap(),
                cases,
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("tests/a.test.yaml", "8", "0", 8),
            ("tests/b.test.yaml", "2", "1", 2)
        ]
    );
    let failed = xml
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    let case = failed.parent().unwrap();
    assert_eq!(case.attribute("name"), Some("<expected> & denied"));
    assert_eq!(case.attribute("classname"), Some("tests/b.test.yaml"));
    assert_eq!(
        failed.attribute("message"),
        Some("allowed: expected true, got false")
    );
    assert!(
        failed
            .text()
            .unwrap()
            .contains("container \"app\": securityContext.runAsNonRoot must be true (is unset)"),
        "{text}"
    );
}

#[test]
fn the_builtin_component_and_module_override() {
    // The built-in component, by name: nothing to build to try the command.
    let builtin = "module: builtin\npolicy: run-as-non-root\ntests:\n  - name: root\n    file: root-pod.yaml\n    expect:\n      messages: ['container \"app\": securityContext.runAsUser must be a non-zero UID (is 0)']\n";
    // A file whose module is elsewhere, run with --module.
    let elsewhere = format!(
        "module: not-built-yet.wasm\n{}",
        PASSING.replace("objects/root-pod.yaml", "root-pod.yaml")
    );
    let dir = tree(
        "policy-test-module",
        &[
            ("builtin.test.yaml", builtin),
            ("elsewhere.test.yaml", &elsewhere),
            ("root-pod.yaml", ROOT_POD),
        ],
    );
    let out = policy_test(&dir, &["builtin.test.yaml"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).ends_with("test result: ok. 1 passed; 0 failed\n"));

    let out = policy_test(&dir, &["elsewhere.test.yaml"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out)
            .contains("elsewhere.test.yaml: line 1: module: cannot read not-built-yet.wasm"),
        "{}",
        stderr(&out)
    );
    // No tests/ folder: the current one is searched, and both files run
    // the component --module names.
    let out = policy_test(&dir, &["--module", RUN_AS_NON_ROOT]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("running 9 tests\n"));
    assert!(stdout(&out).ends_with("test result: ok. 9 passed; 0 failed\n"));
}
