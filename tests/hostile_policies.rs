//! Policies that loop, hoard memory, trap or return garbage are each an
//! error of that policy, within its deadline, and the engine goes on.

mod common;

use agyn_admission::engine::{Call, EvalError, Limits, LoadError, PolicyComponent};
use std::time::{Duration, Instant};

fn hostile() -> PolicyComponent {
    let bytes = std::fs::read(common::HOSTILE_WASM).unwrap();
    common::engine()
        .load(&bytes, None)
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
    let good = engine.load(&bytes, None).unwrap().sha256().to_string();
    assert!(engine.load(&bytes, Some(&good)).is_ok());
    let wrong = "0".repeat(64);
    match engine.load(&bytes, Some(&wrong)) {
        Err(LoadError::Sha256Mismatch { expected, actual }) => {
            assert_eq!((expected, actual), (wrong, good));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn bytes_that_are_not_a_component_are_a_load_error() {
    let engine = common::engine();
    for garbage in [&b"\0asm\x01\0\0\0"[..], b"not wasm at all", b""] {
        assert!(matches!(
            engine.load(garbage, None),
            Err(LoadError::Compile(_))
        ));
    }
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
