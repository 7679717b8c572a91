//! Policies that loop, hoard memory, trap or return garbage are each an
//! error of that policy, within its deadline, and the engine goes on.

mod common;

use agyn_admission::engine::{Call, EvalError, Limits, LoadError, PolicyComponent};
use std::time::{Duration, Instant};

fn hostile() -> PolicyComponent {
    let bytes = std::fs::read(common::HOSTILE_WASM).unwrap();
    common::engine()
        .load(&bytes, None, Limits::default())
        .expect("the hostile component loads")
}

fn call(component: &PolicyComponent, policy: &str, limits: Limits) -> Result<(), EvalError> {
    let calls = [Call {
        policy: policy.into(),
        settings: String::new(),
        mutate: false,
    }];
    component
        .evaluate(
            "{}",
            r#"{"kind":"Pod","metadata":{"name":"p"}}"#,
            None,
            &calls,
            limits,
        )
        .map(|_| ())
}

const LIMITS: Limits = Limits {
    deadline: Duration::from_millis(50),
    memory: 16 << 20,
};

#[test]
fn an_infinite_loop_hits_the_deadline_and_the_next_call_works() {
    let component = hostile();
    let start = Instant::now();
    assert_eq!(
        call(&component, "loop", LIMITS),
        Err(EvalError::Deadline(Duration::from_millis(50)))
    );
    // The epoch ticks every 2 ms: the trap comes within a few ticks of the
    // deadline, far below this bound even on a loaded machine.
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(call(&component, "allow", LIMITS), Ok(()));
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let component = hostile();
    assert_eq!(
        call(&component, "memory-bomb", LIMITS),
        Err(EvalError::Memory(16 << 20))
    );
    assert_eq!(call(&component, "allow", LIMITS), Ok(()));
}

#[test]
fn a_trap_is_reported_with_its_cause() {
    let component = hostile();
    match call(&component, "trap", LIMITS) {
        Err(EvalError::Trap(message)) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(call(&component, "allow", LIMITS), Ok(()));
}

#[test]
fn a_panic_is_reported_with_its_message_not_wasm_frames() {
    let component = hostile();
    assert_eq!(
        call(&component, "panic", LIMITS),
        Err(EvalError::Trap(
            "panicked at src/lib.rs:1:1:\nno pods today".into()
        ))
    );
    // The message belonged to that call only.
    match call(&component, "trap", LIMITS) {
        Err(EvalError::Trap(message)) => assert!(!message.contains("no pods"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// A component built for the first world (`agyn:policy@0.1.0`, committed as
/// built then) loads as a pod policy and judges pods and templates.
#[test]
fn a_component_of_the_first_world_still_loads_and_judges_pods() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/run-as-non-root-0.1.0.wasm"
    );
    let bytes = std::fs::read(fixture).unwrap();
    let component = common::engine()
        .load(&bytes, None, Limits::default())
        .expect("a 0.1.0 component loads");
    assert_eq!(component.world(), "agyn:policy@0.1.0");
    assert_eq!(component.policies(), ["run-as-non-root"]);
    let rules = &component.metadata("run-as-non-root").unwrap().rules;
    assert_eq!(rules[0].resources, ["pods"]);

    let engine = common::engine();
    let set = common::load_set(
        &engine,
        &format!(
            "apiVersion: agyn.io/v1alpha1\nkind: PolicySet\npolicies:\n  - name: run-as-non-root\n    module: {fixture}\n    mutate: true\n"
        ),
    )
    .unwrap();
    let root = common::yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: app, image: nginx:1.27, securityContext: {runAsUser: 0}}]\n",
    );
    let denied = agyn_admission::admission::review(&set, &common::create("agyn", root)).unwrap();
    assert!(!denied.allowed());
    let bare = common::yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers: [{name: app, image: nginx:1.27}]\n",
    );
    let fixed = agyn_admission::admission::review(&set, &common::create("agyn", bare)).unwrap();
    assert!(fixed.allowed(), "{fixed:?}");
    assert!(
        fixed.patch.0.iter().any(|op| op
            .path()
            .to_string()
            .starts_with("/spec/template/spec/securityContext")),
        "{:?}",
        fixed.patch
    );
}

#[test]
fn a_verdict_count_that_does_not_match_the_calls_is_malformed() {
    assert_eq!(
        call(&hostile(), "wrong-count", LIMITS),
        Err(EvalError::Malformed("0 verdicts for 1 policies".into()))
    );
}

#[test]
fn hostile_calls_in_parallel_do_not_disturb_each_other() {
    let component = hostile();
    std::thread::scope(|s| {
        let handles: Vec<_> = ["loop", "memory-bomb", "trap", "allow"]
            .iter()
            .cycle()
            .take(16)
            .map(|policy| {
                let component = component.clone();
                s.spawn(move || (policy, call(&component, policy, LIMITS)))
            })
            .collect();
        for handle in handles {
            let (policy, result) = handle.join().unwrap();
            match (*policy, result) {
                ("loop", Err(EvalError::Deadline(_)))
                // Sixteen threads on a small machine can make the bomb's
                // page faults outlast its deadline: stopped either way.
                | ("memory-bomb", Err(EvalError::Memory(_) | EvalError::Deadline(_)))
                | ("trap", Err(EvalError::Trap(_)))
                | ("allow", Ok(())) => {}
                (policy, result) => panic!("{policy}: {result:?}"),
            }
        }
    });
}

#[test]
fn a_pinned_sha256_refuses_any_other_module() {
    let bytes = std::fs::read(common::HOSTILE_WASM).unwrap();
    let engine = common::engine();
    let good = engine
        .load(&bytes, None, Limits::default())
        .unwrap()
        .sha256()
        .to_string();
    assert!(engine.load(&bytes, Some(&good), Limits::default()).is_ok());
    let wrong = "0".repeat(64);
    match engine.load(&bytes, Some(&wrong), Limits::default()) {
        Err(LoadError::Sha256Mismatch { expected, actual }) => {
            assert_eq!((expected, actual), (wrong, good));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_a_component_are_a_load_error_that_says_what_to_do() {
    let engine = common::engine();
    let error = |bytes: &[u8]| {
        engine
            .load(bytes, None, Limits::default())
            .expect_err("not a component")
            .to_string()
    };
    // A core module: what `cargo build --target wasm32-unknown-unknown` makes.
    assert_eq!(
        error(b"\0asm\x01\0\0\0"),
        "a core WebAssembly module, not a component: build it for wasm32-wasip2, or with `agyn-admission policy build`"
    );
    // A policy set or manifest given as the module: no byte dump.
    assert_eq!(
        error(b"apiVersion: agyn.io/v1alpha1\nkind: PolicySet\n"),
        r#"not a WebAssembly file (it starts with "apiVersion: agyn")"#
    );
    assert_eq!(error(b""), "not a WebAssembly file");
    // A component header with nothing valid after it.
    assert!(matches!(
        engine.load(b"\0asm\x0d\0\x01\0\xff", None, Limits::default()),
        Err(LoadError::Compile(_))
    ));
}

/// The compiled-module cache holds native code: a tampered, foreign or
/// world-writable artifact is compiled again with a warning, never loaded.
#[test]
fn a_tampered_or_foreign_cached_artifact_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::temp_dir("cache");
    let cache = dir.join("cache");
    let check = |expect: Option<&str>| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_agyn-admission"))
            .args(["check", "--cache-dir"])
            .arg(&cache)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/agyn/compliant-pod.yaml"
            ))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        match expect {
            None => assert!(!stderr.contains("WARN"), "{stderr}"),
            Some(warning) => assert!(stderr.contains(warning), "{warning:?} not in {stderr}"),
        }
    };
    check(None);
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the cache directory is private");
    let artifact = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact was cached");
    let mode = std::fs::metadata(&artifact).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the artifact is private");
    check(None);

    // One flipped byte in the middle of the code.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&artifact, &bytes).unwrap();
    check(Some("its digest does not match its contents"));
    check(None);

    // Writable by others.
    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
    check(Some("others can write it"));
    // Owned by another user (the tests may run as root, which can hand it
    // over; otherwise this part cannot be set up).
    if std::os::unix::fs::chown(&artifact, Some(65534), Some(65534)).is_ok() {
        check(Some("owned by uid 65534"));
    }
    // A directory others can write is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    check(Some("not using the compiled-policy cache"));
}
