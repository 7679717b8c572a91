//! `policy build`: a policy crate to a component, with no tool to install
//! beyond Rust. Cargo builds the crate for `wasm32-unknown-unknown` (the
//! target is added if missing) into one target directory shared by all of
//! an author's policy crates; wit-component makes the component here, as
//! the webhook's own build makes the built-in one; the engine then loads it
//! as the webhook would, so a component that would not load is never
//! written.

use super::profile::{POLICY_PROFILE, POLICY_PROFILE_CONFIG, POLICY_RUSTFLAGS};
use crate::cli::{CacheArgs, Exit};
use crate::engine::Limits;
use anyhow::{Context, bail};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-unknown-unknown";

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The policy crate (default: the current directory).
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Where cargo builds, shared by every policy crate so that the SDK's
    /// dependencies compile once. Default: `policy-target` in the cache
    /// directory.
    #[arg(long, env = "AGYN_POLICY_TARGET_DIR", value_name = "DIR")]
    target_dir: Option<PathBuf>,

    /// The component to write. Default: `DIR/<crate name>.wasm`.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: BuildArgs) -> anyhow::Result<Exit> {
    let manifest = args.dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} has no Cargo.toml: give the policy crate's folder",
            args.dir.display()
        );
    }
    ensure_target()?;
    let target_dir = match &args.target_dir {
        Some(dir) => dir.clone(),
        None => args
            .cache
            .cache_root()
            .context("no cache directory: give --target-dir")?
            .join("policy-target"),
    };
    let (name, module) = cargo_build(&manifest, &target_dir)?;
    let bytes =
        std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .and_then(|encoder| encoder.encode())
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(|| {
            format!(
                "{} is not a policy module (does the crate call agyn_policy_sdk::export_policies!?)",
                module.display()
            )
        })?;
    let loaded = args
        .cache
        .engine()?
        .load(&component, None, Limits::default())
        .context("the component does not load")?;
    let output = args
        .output
        .unwrap_or_else(|| args.dir.join(format!("{name}.wasm")));
    std::fs::write(&output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "{}: {} bytes, sha256 {}, policies {}",
        output.display(),
        component.len(),
        loaded.sha256(),
        loaded.policies().join(", ")
    );
    for name in loaded.policies() {
        if loaded.metadata(name).is_some_and(|m| m.rules.is_empty()) {
            eprintln!(
                "warning: policy {name} declares no rules: it judges nothing (set Policy::RULES)"
            );
        }
    }
    Ok(Exit::Admitted)
}

/// Adds the target's standard library when missing, as rustup would be
/// asked to.
fn ensure_target() -> anyhow::Result<()> {
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.is_some_and(|dir| dir.exists()) {
        return Ok(());
    }
    eprintln!("adding the {TARGET} target (rustup target add {TARGET})");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed");
    }
    Ok(())
}

/// Builds the crate's library and returns its name and the core module.
fn cargo_build(manifest: &Path, target_dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .args([
            "build",
            "--lib",
            "--target",
            TARGET,
            "--profile",
            POLICY_PROFILE,
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for setting in POLICY_PROFILE_CONFIG {
        command.args(["--config", setting]);
    }
    command.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        POLICY_RUSTFLAGS,
    );
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().expect("piped");
    let mut built = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let cdylib = message["target"]["crate_types"]
            .as_array()
            .is_some_and(|types| types.iter().any(|t| t == "cdylib"));
        if message["reason"] == "compiler-artifact" && cdylib {
            let wasm = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"));
            if let (Some(name), Some(wasm)) = (message["target"]["name"].as_str(), wasm) {
                built = Some((name.replace('_', "-"), PathBuf::from(wasm)));
            }
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build failed (see above)");
    }
    built.context(
        "cargo built no cdylib: the crate needs `crate-type = [\"cdylib\", \"rlib\"]` in [lib]",
    )
}
