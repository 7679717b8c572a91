//! Builds the policy components and hands their paths to the crate: the
//! built-in bundle (embedded in the binary), each Agyn policy as its own
//! component and the hostile test component (used by the tests).
//!
//! A nested `cargo build` with its own target directory: the outer build
//! holds the lock on its own, and the policies need another target, another
//! profile (`wasm`: small and fast to instantiate) and none of the outer
//! build's flags.
//!
//! Two targets. The bundle is built for `wasm32-unknown-unknown` and made a
//! component here by wit-component: with no WASI imports it has one core
//! module to instantiate instead of three and no host functions to link,
//! which takes about 3 µs off every evaluation. The other components are
//! built as a policy author builds one, for `wasm32-wasip2`, so that the
//! tests also load components that import WASI.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

// POLICY_PROFILE, its settings and flags: shared with `policy build`.
include!("src/cli/policy/profile.rs");

/// One nested cargo invocation: a target and the components built for it.
/// The bundle links the policy crates as libraries, which must not carry
/// their own exports (`export` on) in the same build, hence two.
struct Build {
    /// rustc makes a component for wasm32-wasip2 only; for any other
    /// target the module is made a component here.
    target: &'static str,
    /// Package, the feature that makes it a component, and the variable
    /// that gives the crate the component's path.
    components: &'static [(&'static str, &'static str, &'static str)],
}

const BUILDS: &[Build] = &[
    Build {
        target: "wasm32-unknown-unknown",
        components: &[("agyn-builtin-policies", "", "AGYN_BUILTIN_POLICIES_WASM")],
    },
    Build {
        target: "wasm32-wasip2",
        components: &[
            ("hostile-policies", "", "AGYN_HOSTILE_POLICIES_WASM"),
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
        ],
    },
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    // Relative to this crate, not absolute: Cargo gives another clone of the
    // workspace sharing a target directory the same build script run, and
    // absolute paths would leave it watching that clone's files.
    for watched in [
        "policy-sdk",
        "policies",
        "tests/policies",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed=../{watched}");
    }

    // `cargo +nightly fuzz` runs this script under a nightly whose wasm
    // targets may not be installable: AGYN_POLICY_TOOLCHAIN then names the
    // toolchain that builds the policies (fuzz/README.md).
    println!("cargo:rerun-if-env-changed=AGYN_POLICY_TOOLCHAIN");
    let toolchain = env::var("AGYN_POLICY_TOOLCHAIN").ok();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-wasm");

    for build_spec in BUILDS {
        ensure_target(root, build_spec.target, toolchain.as_deref());
        build(&cargo, root, &target_dir, build_spec, toolchain.as_deref());
    }
}

/// `tool` (cargo, rustc) of the toolchain running this script, or of
/// `toolchain` through rustup.
fn tool(path: &OsStr, name: &str, toolchain: Option<&str>) -> Command {
    match toolchain {
        None => Command::new(path),
        Some(toolchain) => {
            let mut command = Command::new("rustup");
            // The outer cargo's RUSTC is the other toolchain's compiler.
            command
                .args(["run", toolchain, name])
                .env_remove("RUSTC")
                .env_remove("RUSTDOC");
            command
        }
    }
}

fn build(cargo: &OsStr, root: &Path, target_dir: &Path, spec: &Build, toolchain: Option<&str>) {
    let mut command = tool(cargo, "cargo", toolchain);
    command
        .current_dir(root)
        .args([
            "build",
            "--profile",
            POLICY_PROFILE,
            "--target",
            spec.target,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    for (package, feature, _) in spec.components {
        command.args(["-p", package]);
        if !feature.is_empty() {
            command.args(["--features", feature]);
        }
    }
    for setting in POLICY_PROFILE_CONFIG {
        command.args(["--config", setting]);
    }
    scrub_environment(&mut command);
    let triple = spec.target.to_uppercase().replace('-', "_");
    command.env(format!("CARGO_TARGET_{triple}_RUSTFLAGS"), POLICY_RUSTFLAGS);
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the policies: {e}"));
    assert!(
        status.success(),
        "building the policy components for {} failed (see the errors above)",
        spec.target
    );
    for (package, _, var) in spec.components {
        let built = target_dir
            .join(spec.target)
            .join(POLICY_PROFILE)
            .join(format!("{}.wasm", package.replace('-', "_")));
        assert!(built.exists(), "{} was not built", built.display());
        let component = if spec.target == "wasm32-wasip2" {
            built
        } else {
            componentize(&built)
        };
        println!("cargo:rustc-env={var}={}", component.display());
    }
}

/// Makes a component of a core module whose interface wit-bindgen
/// embedded in it, beside the module as `<name>.component.wasm`.
fn componentize(module: &Path) -> PathBuf {
    let bytes =
        std::fs::read(module).unwrap_or_else(|e| panic!("cannot read {}: {e}", module.display()));
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .and_then(|encoder| encoder.encode())
        .unwrap_or_else(|e| panic!("cannot make a component of {}: {e:#}", module.display()));
    let path = module.with_extension("component.wasm");
    std::fs::write(&path, component)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
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

/// Adds the target's standard library when it is missing: machines here do
/// not install a toolchain's targets by themselves.
fn ensure_target(root: &Path, target: &str, toolchain: Option<&str>) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = tool(&rustc, "rustc", toolchain)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|dir| dir.exists()) {
        return;
    }
    let mut add = Command::new("rustup");
    add.current_dir(root).args(["target", "add", target]);
    if let Some(toolchain) = toolchain {
        add.args(["--toolchain", toolchain]);
    }
    let status = add.status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "the {target} target is missing and `rustup target add {target}` failed"
    );
}
