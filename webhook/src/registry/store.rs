//! Pulled modules on disk, by manifest digest, so a module pulled once
//! never needs the registry again: a restart while the registry is down,
//! or `check` in CI, loads it from here. Without a directory (`--no-cache`)
//! they are kept in memory, for the life of the process.
//!
//! Everything read back is checked as if it came from the registry: the
//! manifest's sha256 must be the digest it is stored under, the module's
//! the manifest's layer digest, and signatures are verified again against
//! the key in use. A damaged or tampered entry is a miss (pulled again),
//! never loaded.

use super::artifact::{self, digest};
use super::signature::Signature;
use oci_client::Reference;
use std::collections::HashMap;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Mutex;

pub enum Store {
    Disk(PathBuf),
    Memory {
        modules: Mutex<HashMap<String, Stored>>,
        tags: Mutex<HashMap<String, String>>,
    },
}

/// A module as stored: checked against its digest.
#[derive(Clone)]
pub struct Stored {
    pub manifest: Vec<u8>,
    pub module: Vec<u8>,
    pub signatures: Vec<Signature>,
}

impl Store {
    /// The store under `dir` (created `0700`, as the compiled cache), or
    /// in memory.
    pub fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => Store::Disk(dir),
            None => Store::Memory {
                modules: Mutex::default(),
                tags: Mutex::default(),
            },
        }
    }

    /// The module stored under `digest`, if it is there and intact.
    pub fn get(&self, digest_wanted: &str) -> Option<Stored> {
        let dir = match self {
            Store::Disk(dir) => dir,
            Store::Memory { modules, .. } => {
                return lock(modules).get(digest_wanted).cloned();
            }
        };
        let entry = entry(dir, digest_wanted);
        let manifest = std::fs::read(entry.join("manifest.json")).ok()?;
        let damaged = |what: &str| {
            tracing::warn!(
                entry = %entry.display(),
                "ignoring the stored module: {what}; it will be pulled again"
            );
        };
        if digest(&manifest) != digest_wanted {
            damaged("its manifest does not match its digest");
            return None;
        }
        let layer = artifact::module_layer(&manifest).ok()?;
        let module = std::fs::read(entry.join("module.wasm")).ok()?;
        if digest(&module) != layer.digest {
            damaged("the module does not match the manifest's layer digest");
            return None;
        }
        let signatures = match std::fs::read(entry.join("signatures.json")) {
            Ok(text) => serde_json::from_slice(&text).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        Some(Stored {
            manifest,
            module,
            signatures,
        })
    }

    /// Stores a pulled module (with the signatures that were fetched, if
    /// any). The entry is written beside and renamed into place, so a
    /// reader never sees half of one. Failing to store costs only a pull
    /// next time.
    pub fn put(&self, digest: &str, stored: &Stored) {
        match self {
            Store::Disk(dir) => {
                if let Err(e) = put(dir, digest, stored) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the pulled module");
                }
            }
            Store::Memory { modules, .. } => {
                lock(modules).insert(digest.to_string(), stored.clone());
            }
        }
    }

    /// The digest a floating tag last resolved to, for when the registry
    /// cannot be asked.
    pub fn resolved(&self, reference: &Reference) -> Option<String> {
        let text = match self {
            Store::Disk(dir) => std::fs::read_to_string(tag_file(dir, reference)).ok()?,
            Store::Memory { tags, .. } => lock(tags).get(&reference.whole())?.clone(),
        };
        super::reference::normalize_digest(text.trim()).ok()
    }

    pub fn set_resolved(&self, reference: &Reference, digest: &str) {
        let dir = match self {
            Store::Disk(dir) => dir,
            Store::Memory { tags, .. } => {
                lock(tags).insert(reference.whole(), digest.to_string());
                return;
            }
        };
        let path = tag_file(dir, reference);
        let result = (|| {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path.parent().expect("a tag file has a folder"))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, digest)?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the tag's digest");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn entry(dir: &std::path::Path, digest: &str) -> PathBuf {
    dir.join(digest.replacen(':', "-", 1))
}

fn tag_file(dir: &std::path::Path, reference: &Reference) -> PathBuf {
    let name = digest(reference.whole().as_bytes()).replacen(':', "-", 1);
    dir.join("tags").join(name)
}

fn put(dir: &std::path::Path, digest: &str, stored: &Stored) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let entry = entry(dir, digest);
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
    DirBuilder::new().mode(0o700).create(&tmp)?;
    let write = || -> std::io::Result<()> {
        std::fs::write(tmp.join("manifest.json"), &stored.manifest)?;
        std::fs::write(tmp.join("module.wasm"), &stored.module)?;
        std::fs::write(
            tmp.join("signatures.json"),
            serde_json::to_vec(&stored.signatures).expect("signatures serialise"),
        )?;
        if entry.exists() {
            std::fs::remove_dir_all(&entry)?;
        }
        std::fs::rename(&tmp, &entry)
    };
    let result = write();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// A name no other writer in this process uses at the same time.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
