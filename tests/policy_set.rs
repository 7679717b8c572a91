//! Policy set files: every mistake is a load error that names the file,
//! the line where it can, and the policy.

mod common;

use agyn_admission::engine::Limits;
use common::{engine, load_set};

fn error(yaml: &str) -> String {
    load_set(&engine(), yaml).expect_err("the set must be refused")
}

const HEADER: &str = "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\n";

#[test]
fn unknown_fields_and_bad_values_name_their_line() {
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n    mdoe: warn\n"
    ));
    assert!(e.contains("mdoe") && e.contains("line 5"), "{e}");
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n    mode: deny\n"
    ));
    assert!(e.contains("deny") && e.contains("line 5"), "{e}");
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n    timeout: 5m\n"
    ));
    assert!(
        e.contains("invalid timeout \"5m\"") && e.contains("line 5"),
        "{e}"
    );
    let e = error("apiVersion: agyn.io/v2\nkind: PolicySet\npolicies: []\n");
    assert!(e.contains("agyn.io/v2") && e.contains("line 1"), "{e}");
}

#[test]
fn settings_are_checked_by_the_policy_at_load() {
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n    settings: {{defaultUser: 0}}\n"
    ));
    assert!(
        e.contains("line 5: policy \"run-as-non-root\": settings: invalid settings: defaultUser must be a positive ID (is 0)"),
        "{e}"
    );
    let e = error(&format!(
        "{HEADER}policies:\n  - name: drop-capabilities\n    settings: {{allowedCaps: [NET_RAW]}}\n"
    ));
    assert!(
        e.contains(
            "policy \"drop-capabilities\": settings: invalid settings: unknown field `allowedCaps`"
        ),
        "{e}"
    );
    // The position is the YAML's, not that of the JSON the loader made.
    assert!(!e.contains("column"), "{e}");
}

#[test]
fn modules_policies_kinds_and_names_are_checked() {
    let e = error(&format!("{HEADER}policies:\n  - name: nope\n"));
    assert!(
        e.contains("policy \"nope\": its module has no policy \"nope\""),
        "{e}"
    );
    let e = error(&format!(
        "{HEADER}policies:\n  - name: x\n    module: missing.wasm\n"
    ));
    assert!(
        e.contains("cannot read module") && e.contains("missing.wasm"),
        "{e}"
    );
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n    match: {{kinds: [Deploymnet]}}\n"
    ));
    assert!(
        e.contains(r#"line 5: policy "run-as-non-root": the policy never judges the kind "Deploymnet": its rules cover pods (and the pod templates of workloads)"#),
        "{e}"
    );
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n    match: {{kinds: [Service]}}\n"
    ));
    assert!(e.contains(r#"never judges the kind "Service""#), "{e}");
    let e = error(&format!(
        "{HEADER}policies:\n  - name: run-as-non-root\n  - name: run-as-non-root\n"
    ));
    assert!(e.contains("line 5") && e.contains("used twice"), "{e}");
    let e = error(&format!(
        "{HEADER}policies:\n  - name: pinned\n    policy: run-as-non-root\n    sha256: {}\n",
        "ab".repeat(32)
    ));
    assert!(e.contains("sha256 mismatch"), "{e}");
}

#[test]
fn a_settings_rejection_by_a_file_module_names_the_policy() {
    let e = error(&format!(
        "{HEADER}policies:\n  - name: picky\n    module: {}\n    policy: allow\n    settings: reject\n",
        common::HOSTILE_WASM
    ));
    assert!(
        e.contains("line 7: policy \"picky\": settings: allow refuses these settings"),
        "{e}"
    );
}

#[test]
fn kube_system_is_exempt_even_when_the_file_forgets_it() {
    let set = load_set(&engine(), &format!("{HEADER}policies: []\n")).unwrap();
    assert_eq!(set.exempt_namespaces, ["kube-system"]);
}

/// The built-in bundle is made a component without WASI (webhook/build.rs):
/// every import would cost each evaluation a trampoline, and WASI's bring
/// two more core instances. A component built for wasm32-wasip2, as an
/// author builds one, imports WASI and still loads.
#[test]
fn the_builtin_bundle_imports_no_wasi_and_a_wasip2_component_still_loads() {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let wasmtime = wasmtime::Engine::new(&config).unwrap();
    let wasi_imports = |bytes: &[u8]| {
        let component = wasmtime::component::Component::new(&wasmtime, bytes).unwrap();
        component
            .component_type()
            .imports(&wasmtime)
            .filter(|(name, _)| name.starts_with("wasi:"))
            .count()
    };
    let builtin = agyn_admission::engine::BUILTIN_COMPONENT;
    assert_eq!(wasi_imports(builtin), 0);
    let wasip2 = std::fs::read(env!("AGYN_RUN_AS_NON_ROOT_WASM")).unwrap();
    assert!(wasi_imports(&wasip2) > 0);
    let component = engine()
        .load(&wasip2, None, Limits::default())
        .expect("a wasip2 component loads");
    assert_eq!(component.policies(), ["run-as-non-root"]);
}

/// Registry modules are had once per module and key: two policies naming
/// the same module with different keys (inline keys all come "from the
/// set") are each verified with their own, and a third under the set-wide
/// key, the first's, reuses the first's module.
#[test]
fn registry_modules_are_had_once_per_module_and_key() {
    use agyn_admission::config::{ModuleSource, PolicySet, Source};
    use agyn_admission::registry::{ModuleRef, Pulled, VerifyKey};
    use std::cell::RefCell;

    struct Recording(RefCell<Vec<String>>);
    impl ModuleSource for Recording {
        fn module(&self, _: &ModuleRef, key: Option<&VerifyKey>) -> Result<Pulled, String> {
            self.0
                .borrow_mut()
                .push(key.map(VerifyKey::fingerprint).unwrap_or_default());
            Ok(Pulled {
                module: std::fs::read(env!("AGYN_DROP_CAPABILITIES_WASM")).unwrap(),
                digest: format!("sha256:{}", "a".repeat(64)),
            })
        }
    }
    let key = |name: &str| {
        let pem = std::fs::read_to_string(format!(
            "{}/../tests/fixtures/cosign/{name}/key.pub",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        format!(
            "  verify:\n    key: |\n{}",
            pem.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        )
    };
    let module = format!("oci://r.example.com/team/caps@sha256:{}", "a".repeat(64));
    let entry = |name: &str, key: &str| {
        format!("- name: {name}\n  policy: drop-capabilities\n  module: {module}\n{key}")
    };
    // The third takes the set-wide key, the same as the first's.
    let yaml = format!(
        "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\n{}policies:\n{}{}{}",
        key("sigstore-rs-busybox").trim_start(),
        entry("first", &key("sigstore-rs-busybox")),
        entry("second", &key("tobby-fetch-cosign-v3")),
        entry("third", ""),
    );
    let dir = common::temp_dir("module-keys");
    std::fs::write(dir.join("set.yaml"), yaml).unwrap();
    let source = Recording(RefCell::new(Vec::new()));
    let set =
        PolicySet::load_with(&Source::File(dir.join("set.yaml")), &engine(), &source).unwrap();
    assert_eq!(set.policies.len(), 3);
    assert!(set.unavailable.is_empty());
    let asked = source.0.into_inner();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_ne!(asked[0], asked[1]);
    assert_eq!(set.registry_modules.len(), 3);
}
