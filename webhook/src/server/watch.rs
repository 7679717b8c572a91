//! Noticing that files changed: the policy set, the certificate and its key.

use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Writers rarely change a file in one event (an editor writes, renames,
/// touches; the kubelet swaps a symlink): one reload after they settle.
const SETTLE: Duration = Duration::from_millis(200);

/// Keeps watching until dropped.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` on a thread of its own after the files at `paths` may
/// have changed.
///
/// The watch is on the files' directories, not the files: a Kubernetes
/// volume replaces a file by swapping the `..data` symlink next to it, and
/// an editor by renaming a new file over it, and neither is an event of
/// the old file. Other files in the directories are ignored.
pub fn watch(
    paths: &[&Path],
    name: &str,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<FileWatch> {
    let names: BTreeSet<OsString> = paths
        .iter()
        .filter_map(|p| p.file_name().map(OsString::from))
        .collect();
    let concerns = move |path: &PathBuf| {
        path.file_name()
            .is_some_and(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
    };
    let (events, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
            && event.paths.iter().any(&concerns)
        {
            let _ = events.send(());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name(format!("watch-{name}"))
        .spawn(move || {
            while changes.recv().is_ok() {
                std::thread::sleep(SETTLE);
                while changes.try_recv().is_ok() {}
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(FileWatch { _watcher: watcher })
}
