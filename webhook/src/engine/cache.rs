//! Precompiled components on disk, so a restart loads in milliseconds
//! instead of compiling with Cranelift again.
//!
//! An artifact is named by the sha256 of the component and a hash of the
//! engine's compatibility (wasmtime version and every setting that changes
//! code), so a stale or foreign artifact is never picked up. Loading one is
//! `unsafe` in wasmtime's sense (it is native code): the directory must be
//! writable by this process only, which the chart ensures with an emptyDir.

use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) struct Cache {
    dir: PathBuf,
    engine_hash: u64,
}

impl Cache {
    pub(super) fn new(dir: &Path, engine: &wasmtime::Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Cache {
            dir: dir.to_path_buf(),
            engine_hash: hasher.finish(),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", self.engine_hash))
    }

    /// The cached artifact if it is there and loads, else a fresh compile
    /// that is then stored. A cache that cannot be written only costs time.
    pub(super) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.path(digest);
        if path.exists() {
            // SAFETY: the artifact was written by `precompile_component` of an
            // engine with the same compatibility hash (it is in the name),
            // into a directory only this process writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cached policy")
                }
            }
        }
        let artifact = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&path, &artifact) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot cache the compiled policy");
        }
        // SAFETY: produced just above by this very engine.
        unsafe { Component::deserialize(engine, &artifact) }
    }

    /// Writes through a temporary file and a rename, so a concurrent start
    /// never reads half an artifact.
    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, artifact)?;
        std::fs::rename(&tmp, path)
    }
}
