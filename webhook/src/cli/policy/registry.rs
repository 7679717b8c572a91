//! `policy push` and `policy pull`: a component to and from an OCI
//! registry, as the webhook pulls it.

use crate::cli::{CacheArgs, Exit, RegistryArgs};
use crate::engine::Limits;
use crate::registry::{Artifact, ModuleRef, SCHEME};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The component (`.wasm`), checked to load before it is pushed.
    file: PathBuf,

    /// Where: REGISTRY/REPOSITORY:TAG (`oci://` optional). Prints the
    /// digest to pin in a policy set.
    reference: String,

    #[command(flatten)]
    cache: CacheArgs,

    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// What: REGISTRY/REPOSITORY@sha256:DIGEST, or :TAG (`oci://`
    /// optional). Prints the digest; the module is kept in the cache, so
    /// `check` then loads it without the registry.
    reference: String,

    /// Also write the component here.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// A cosign public key (PEM) the module must be signed with.
    #[arg(long, value_name = "FILE")]
    verify_key: Option<PathBuf>,

    #[command(flatten)]
    cache: CacheArgs,

    #[command(flatten)]
    registry: RegistryArgs,
}

fn reference(text: &str) -> anyhow::Result<ModuleRef> {
    ModuleRef::parse_plain(text.strip_prefix(SCHEME).unwrap_or(text)).map_err(anyhow::Error::msg)
}

pub fn push(args: PushArgs) -> anyhow::Result<Exit> {
    let target = reference(&args.reference)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let engine = args.cache.engine()?;
    let component = engine
        .load(&bytes, None, Limits::default())
        .with_context(|| format!("{}: not a policy component", args.file.display()))?;
    let title = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let artifact = Artifact::new(bytes, &title, component.policies());
    let registry = args.registry.registry(args.cache.cache_root())?;
    let digest = runtime()?
        .block_on(registry.push(&artifact, &target))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("pushing to {}", target.reference))?;
    eprintln!(
        "pushed {} ({} bytes; policies: {})",
        target.reference,
        artifact.layer.len(),
        component.policies().join(", ")
    );
    println!("{}", pinned(&target, &digest));
    Ok(Exit::Admitted)
}

pub fn pull(args: PullArgs) -> anyhow::Result<Exit> {
    let module = reference(&args.reference)?;
    let key = args
        .verify_key
        .as_ref()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            crate::registry::VerifyKey::from_pem(&pem, path.display().to_string())
                .map_err(anyhow::Error::msg)
        })
        .transpose()?;
    let registry = args.registry.registry(args.cache.cache_root())?;
    let pulled = runtime()?
        .block_on(registry.pull(&module, key.as_ref()))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("pulling {}", module.reference))?;
    if let Some(output) = &args.output {
        std::fs::write(output, &pulled.module)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    println!("{}", pinned(&module, &pulled.digest));
    Ok(Exit::Admitted)
}

/// The reference as a policy set pins it.
fn pinned(module: &ModuleRef, digest: &str) -> String {
    ModuleRef {
        reference: module.reference.clone(),
        digest: Some(digest.to_string()),
    }
    .to_string()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
