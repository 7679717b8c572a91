//! Builds the policy components for wasm32-wasip2 and hands their paths to
//! the crate: the built-in bundle (embedded in the binary) and the hostile
//! test component (used by the tests).
//!
//! A nested `cargo build` with its own target directory: the outer build
//! holds the lock on its own, and the policies need another target, another
//! profile (`wasm`: small and fast to instantiate) and none of the outer
//! build's flags.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "wasm";
/// Package, the feature that makes it a component, and the variable that
/// gives the crate the component's path. Built in two cargo invocations:
/// the bundle links the policy crates as libraries, which must not carry
/// their own exports (`export` on) in the same build.
const BUNDLES: &[(&str, &str, &str)] = &[
    ("agyn-builtin-policies", "", "AGYN_BUILTIN_POLICIES_WASM"),
    ("hostile-policies", "", "AGYN_HOSTILE_POLICIES_WASM"),
];
const SINGLE_POLICIES: &[(&str, &str, &str)] = &[
    (
        "run-as-non-root",
        "run-as-non-root/export",
        "AGYN_RUN_AS_NON_ROOT_WASM",
    ),
    (
        "readonly-root-filesystem",
        "readonly-root-filesystem/export",
        "AGYN_READONLY_ROOT_FILESYSTEM_WASM",
    ),
    (
        "drop-capabilities",
        "drop-capabilities/export",
        "AGYN_DROP_CAPABILITIES_WASM",
    ),
    (
        "service-account-token",
        "service-account-token/export",
        "AGYN_SERVICE_ACCOUNT_TOKEN_WASM",
    ),
    (
        "workload-isolation",
        "workload-isolation/export",
        "AGYN_WORKLOAD_ISOLATION_WASM",
    ),
    (
        "pod-security",
        "pod-security/export",
        "AGYN_POD_SECURITY_WASM",
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    for watched in [
        "policy-sdk",
        "policies",
        "tests/policies",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target(root);
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-wasm");

    for components in [BUNDLES, SINGLE_POLICIES] {
        build(&cargo, root, &target_dir, components);
    }
}

fn build(cargo: &OsStr, root: &Path, target_dir: &Path, components: &[(&str, &str, &str)]) {
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--profile", PROFILE, "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for (package, feature, _) in components {
        command.args(["-p", package]);
        if !feature.is_empty() {
            command.args(["--features", feature]);
        }
    }
    scrub_environment(&mut command);
    // Guest stack of 64 KiB: a policy needs little, and every page of
    // memory an instance has is a page the pooling allocator resets after
    // each evaluation.
    command.env(
        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
        "-C link-arg=-zstack-size=65536",
    );
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the policies: {e}"));
    assert!(
        status.success(),
        "building the policy components for {TARGET} failed (see the errors above)"
    );
    for (package, _, var) in components {
        let file = target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{}.wasm", package.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
        println!("cargo:rustc-env={var}={}", file.display());
    }
}

/// The outer build's variables describe the host build; passed on they
/// would make the nested one compile for the wrong target, with clippy, or
/// with the host's flags.
fn scrub_environment(command: &mut Command) {
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let inherited =
            key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE";
        if inherited
            || matches!(
                &*key,
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTDOC"
                    | "RUSTC_LINKER"
            )
        {
            command.env_remove(&*key);
        }
    }
}

/// Adds the wasm32-wasip2 standard library when it is missing: machines
/// here do not install a toolchain's targets by themselves.
fn ensure_target(root: &Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|dir| dir.exists()) {
        return;
    }
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", TARGET])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed"
    );
}
