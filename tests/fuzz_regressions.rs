//! Inputs that crashed the host once, found by fuzzing (`fuzz/`) or by
//! probing it, run through the same entry points as the fuzz targets: each
//! must return without a panic. Add a crasher to `fuzz/regressions/TARGET/`
//! and it is tested here.

use std::path::Path;

fn each_input(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&input));
        assert!(result.is_ok(), "{} panicked", path.display());
        count += 1;
    }
    assert!(count > 0, "no inputs in {}", dir.display());
}

#[test]
fn admission_reviews() {
    each_input("admission_review", agyn_admission::fuzz::admission_review);
}

#[test]
fn policy_sets() {
    each_input("policy_set", agyn_admission::fuzz::policy_set);
}

#[test]
fn manifests() {
    each_input("manifests", agyn_admission::fuzz::manifests);
}
