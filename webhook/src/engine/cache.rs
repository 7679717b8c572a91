//! Precompiled components on disk, so a restart loads in milliseconds
//! instead of compiling with Cranelift again.
//!
//! An artifact is native code the process will run, so the cache is
//! trusted only as far as it can be checked:
//!
//! - the directory is created `0700` and used only if this process's user
//!   owns it and nobody else can write it; an artifact likewise (`0600`);
//! - each artifact starts with the sha256 of the rest, written with it and
//!   checked before wasmtime reads it, so a corrupted or half-overwritten
//!   artifact is compiled again (with a warning), never loaded;
//! - the name holds the component's sha256 and a hash of the engine's
//!   compatibility (wasmtime version and every setting that changes code),
//!   so a stale or foreign artifact is never picked up.
//!
//! The checked bytes are read into memory and deserialised from there, so
//! the file cannot change between the check and the load.

use sha2::{Digest, Sha256};
use std::fs::{DirBuilder, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

/// What starts every artifact: a version of this layout, then the sha256
/// of everything after the header.
const MAGIC: &[u8; 8] = b"agyncw01";
const HEADER: usize = MAGIC.len() + 32;

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) struct Cache {
    /// `None` when the directory cannot be trusted: compile every time.
    dir: Option<PathBuf>,
    engine_hash: u64,
}

impl Cache {
    /// Creates the directory if it is missing; refuses (with a warning,
    /// and compiles every time) one that others own or can write.
    pub(super) fn new(dir: &Path, engine: &wasmtime::Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let trusted = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))
            .and_then(|()| std::fs::metadata(dir).map_err(|e| e.to_string()))
            .and_then(|meta| {
                if !meta.is_dir() {
                    return Err("it is not a directory".into());
                }
                owned_by_us(&meta)
            });
        if let Err(why) = &trusted {
            tracing::warn!(
                dir = %dir.display(),
                reason = %why,
                "not using the compiled-policy cache: policies are compiled on every start"
            );
        }
        Cache {
            dir: trusted.ok().map(|()| dir.to_path_buf()),
            engine_hash: hasher.finish(),
        }
    }

    /// The cached artifact if it is there and passes every check, else a
    /// fresh compile that is then stored. A cache that cannot be written
    /// only costs time.
    pub(super) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes);
        };
        let path = dir.join(format!("{digest}-{:016x}.cwasm", self.engine_hash));
        match read_checked(&path) {
            Ok(None) => {}
            Ok(Some(artifact)) => {
                // SAFETY: the bytes are exactly those this process's user
                // wrote after compiling them with an engine of the same
                // compatibility hash (it is in the name): the digest in the
                // header matches, and neither the directory nor the file can
                // be written by another user. They are in our memory, so
                // they cannot change after the check.
                match unsafe { Component::deserialize(engine, &artifact[HEADER..]) } {
                    Ok(component) => return Ok(component),
                    Err(e) => tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "compiling again: the cached policy does not load"
                    ),
                }
            }
            Err(why) => tracing::warn!(
                path = %path.display(),
                reason = %why,
                "compiling again: refusing the cached policy"
            ),
        }
        let artifact = engine.precompile_component(bytes)?;
        if let Err(e) = store(&path, &artifact) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot cache the compiled policy");
        }
        // SAFETY: produced just above by this very engine.
        unsafe { Component::deserialize(engine, &artifact) }
    }
}

/// The artifact with its header, if there is one and it checks out;
/// `Ok(None)` if there is none; the reason to refuse it otherwise.
fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    owned_by_us(&meta)?;
    let artifact = std::fs::read(path).map_err(|e| e.to_string())?;
    let Some((header, body)) = artifact.split_at_checked(HEADER) else {
        return Err("it is shorter than its header".into());
    };
    if &header[..MAGIC.len()] != MAGIC {
        return Err("it does not start with the cache's header".into());
    }
    if header[MAGIC.len()..] != Sha256::digest(body)[..] {
        return Err("its digest does not match its contents (corrupted or tampered with)".into());
    }
    Ok(Some(artifact))
}

/// Writes the header and the artifact through a temporary file (`0600`)
/// and a rename, so a concurrent start never reads half an artifact.
fn store(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&Sha256::digest(artifact))?;
    file.write_all(artifact)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Whether a file or directory is this process's user's alone to write.
fn owned_by_us(meta: &std::fs::Metadata) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(format!(
            "it is owned by uid {}, not this process's uid {euid}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "others can write it (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
