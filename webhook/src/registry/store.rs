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

pub struct Store {
    dir: Option<PathBuf>,
    /// What could not be written to `dir` (or all, without one): a module
    /// pulled must load even where nothing can be kept on disk.
    modules: Mutex<HashMap<String, Stored>>,
    tags: Mutex<HashMap<String, String>>,
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
        Store {
            dir,
            modules: Mutex::default(),
            tags: Mutex::default(),
        }
    }

    /// The module stored under `digest`, if it is there and intact.
    pub fn get(&self, digest_wanted: &str) -> Option<Stored> {
        if let Some(stored) = lock(&self.modules).get(digest_wanted) {
            return Some(stored.clone());
        }
        let entry = entry(self.dir.as_ref()?, digest_wanted);
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
    /// reader never sees half of one. What cannot be written is kept in
    /// memory.
    pub fn put(&self, digest: &str, stored: &Stored) {
        if let Some(dir) = &self.dir {
            match put(dir, digest, stored) {
                Ok(()) => return,
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "cannot keep the pulled module on disk: kept in memory, pulled again after a restart"
                ),
            }
        }
        lock(&self.modules).insert(digest.to_string(), stored.clone());
    }

    /// The digest a floating tag last resolved to, for when the registry
    /// cannot be asked.
    pub fn resolved(&self, reference: &Reference) -> Option<String> {
        let text = match lock(&self.tags).get(&reference.whole()) {
            Some(digest) => digest.clone(),
            None => std::fs::read_to_string(tag_file(self.dir.as_ref()?, reference)).ok()?,
        };
        super::reference::normalize_digest(text.trim()).ok()
    }

    pub fn set_resolved(&self, reference: &Reference, digest: &str) {
        let result = match &self.dir {
            None => Err(None),
            Some(dir) => {
                let path = tag_file(dir, reference);
                (|| {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(path.parent().expect("a tag file has a folder"))?;
                    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                    std::fs::write(&tmp, digest)?;
                    std::fs::rename(&tmp, &path)
                })()
                .map_err(|e| Some((path, e)))
            }
        };
        match result {
            Ok(()) => {
                lock(&self.tags).remove(&reference.whole());
            }
            Err(failed) => {
                if let Some((path, e)) = failed {
                    tracing::warn!(path = %path.display(), error = %e, "cannot record the tag's digest");
                }
                lock(&self.tags).insert(reference.whole(), digest.to_string());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> (String, Stored) {
        let artifact = crate::registry::Artifact::new(b"\0asm module".to_vec(), "m.wasm", &[]);
        let digest = artifact.digest();
        let stored = Stored {
            manifest: artifact.manifest,
            module: artifact.layer,
            signatures: Vec::new(),
        };
        (digest, stored)
    }

    #[test]
    fn what_is_read_back_is_checked_again() {
        let dir = std::env::temp_dir().join(format!("agyn-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(Some(dir.clone()));
        let (digest, stored) = module();
        assert!(store.get(&digest).is_none());
        store.put(&digest, &stored);
        assert_eq!(store.get(&digest).unwrap().module, stored.module);
        // Another digest's name on it: refused.
        let other = format!("sha256:{}", "1".repeat(64));
        std::fs::rename(entry(&dir, &digest), entry(&dir, &other)).unwrap();
        assert!(store.get(&other).is_none());
        std::fs::rename(entry(&dir, &other), entry(&dir, &digest)).unwrap();
        // The module changed on disk: refused, to be pulled again.
        std::fs::write(entry(&dir, &digest).join("module.wasm"), b"\0asm other").unwrap();
        assert!(store.get(&digest).is_none());
        store.put(&digest, &stored);
        assert!(store.get(&digest).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn in_memory_without_a_directory() {
        let store = Store::new(None);
        let (digest, stored) = module();
        store.put(&digest, &stored);
        assert_eq!(store.get(&digest).unwrap().manifest, stored.manifest);
        let reference: Reference = "r.example.com/a:1".parse().unwrap();
        assert_eq!(store.resolved(&reference), None);
        store.set_resolved(&reference, &digest);
        assert_eq!(store.resolved(&reference), Some(digest));
    }
}
