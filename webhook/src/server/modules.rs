//! Registry modules in the webhook: a set loads at once from what is
//! stored, and what is missing is pulled in the background, with
//! backoff, until it comes; each success reloads the set.
//!
//! A start or a reload therefore never waits on a registry: the policies
//! whose modules are there serve at once, and the others fail by their
//! failure policy until theirs arrive. `/readyz` waits for the first round
//! of pulls only (bounded by the registry timeout), so that a replica
//! starting beside healthy ones takes traffic once it has tried; it then
//! answers 200 even with modules missing, saying which: a registry outage
//! hits every replica alike, and a 503 on all of them would take the
//! webhook's endpoints away, turning one policy's outage into every
//! policy's.

use super::metrics::Metrics;
use super::routes::Shared;
use crate::config::{ConfigError, ModuleSource, PolicySet, Source};
use crate::engine::Engine;
use crate::registry::{ModuleRef, Pulled, Registry, VerifyKey};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Modules {
    registry: Registry,
    /// A reload happened: the set's missing modules may have changed.
    wake: Notify,
    /// The first round of pulls has ended (or there was nothing to pull).
    tried: AtomicBool,
    /// Floating tags of the set last loaded, at the digest they loaded
    /// at: resolved again once per load.
    floating: Mutex<Vec<(ModuleRef, Option<VerifyKey>, String)>>,
    /// One load at a time: a file change and a pull may both reload.
    loading: Mutex<()>,
}

/// What the store has, never the network: a miss is "not pulled yet",
/// which [`Modules::retry`] then pulls.
struct Stored<'a> {
    registry: &'a Registry,
    floating: Mutex<Vec<(ModuleRef, Option<VerifyKey>, String)>>,
}

impl ModuleSource for Stored<'_> {
    fn module(&self, module: &ModuleRef, key: Option<&VerifyKey>) -> Result<Pulled, String> {
        let stored = self.registry.stored(module, key);
        if module.digest.is_none() {
            let digest = stored
                .as_ref()
                .map(|p| p.digest.clone())
                .unwrap_or_default();
            let mut floating = self.floating.lock().unwrap_or_else(|e| e.into_inner());
            floating.push((module.clone(), key.cloned(), digest));
        }
        stored.ok_or_else(|| "not pulled yet".into())
    }
}

impl Modules {
    pub fn new(registry: Registry) -> Self {
        Modules {
            registry,
            wake: Notify::new(),
            tried: AtomicBool::new(false),
            floating: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
        }
    }

    /// Whether the first round of pulls is over.
    pub fn tried(&self) -> bool {
        self.tried.load(Ordering::Relaxed)
    }

    /// Loads the set from what is stored, and has the retry loop pull
    /// what is not.
    pub fn load(&self, source: &Source, engine: &Engine) -> Result<PolicySet, ConfigError> {
        let stored = Stored {
            registry: &self.registry,
            floating: Mutex::new(Vec::new()),
        };
        let set = PolicySet::load_with(source, engine, &stored)?;
        *self.floating.lock().unwrap_or_else(|e| e.into_inner()) = stored
            .floating
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(set)
    }

    /// Runs `load_and_install` under the load lock, then wakes the retry
    /// loop.
    pub fn reloaded<T>(&self, load_and_install: impl FnOnce() -> T) -> T {
        let result = {
            let _one = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            load_and_install()
        };
        self.wake.notify_one();
        result
    }

    /// Pulls what the served set misses, with backoff, until it has it
    /// all; `reload` (blocking) loads and installs the set again after
    /// each success. Runs for the life of the server.
    pub async fn retry(
        self: Arc<Self>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        reload: Arc<dyn Fn() + Send + Sync>,
    ) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let wanted = missing(&shared);
            let floating =
                std::mem::take(&mut *self.floating.lock().unwrap_or_else(|e| e.into_inner()));
            if wanted.is_empty() && floating.is_empty() {
                self.tried.store(true, Ordering::Relaxed);
                backoff = FIRST_BACKOFF;
                self.wake.notified().await;
                continue;
            }
            let registry = &self.registry;
            let pulls = wanted
                .iter()
                .map(|(module, key)| (module, key, None))
                .chain(
                    floating
                        .iter()
                        // A tag never resolved is missing, and pulled as such.
                        .filter(|(m, k, _)| !wanted.iter().any(|(w, v)| w == m && v == k))
                        .map(|(m, k, d)| (m, k, Some(d.as_str()))),
                )
                .map(|(module, key, loaded_at)| async move {
                    (module, loaded_at, registry.pull(module, key.as_ref()).await)
                });
            let mut progressed = false;
            let mut failed = false;
            for (module, loaded_at, result) in futures_util::future::join_all(pulls).await {
                let text = module.to_string();
                match result {
                    Ok(pulled) => {
                        metrics.pull(&text, true);
                        tracing::info!(module = %text, digest = %pulled.digest, "module pulled");
                        progressed |= loaded_at != Some(pulled.digest.as_str());
                    }
                    Err(e) => {
                        metrics.pull(&text, false);
                        failed |= loaded_at.is_none();
                        tracing::warn!(
                            module = %text,
                            error = %e,
                            retry_in = ?backoff,
                            "cannot pull the module; its policy's failure policy answers meanwhile"
                        );
                        if let Some(set) = shared.set.load_full() {
                            for policy in &set.unavailable {
                                if policy.pull.as_ref().is_some_and(|(m, _)| m == module) {
                                    policy.set_reason(format!("cannot be pulled: {e}; retrying"));
                                }
                            }
                        }
                    }
                }
            }
            if progressed {
                let reload = reload.clone();
                let _ = tokio::task::spawn_blocking(move || reload()).await;
                self.tried.store(true, Ordering::Relaxed);
                if wanted.is_empty() || missing(&shared) != wanted {
                    backoff = FIRST_BACKOFF;
                    continue;
                }
                // Pulled, and still missing (the store could not keep
                // it): wait as after a failure, not pull again at once.
                failed = true;
            }
            self.tried.store(true, Ordering::Relaxed);
            if !failed {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.wake.notified() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// What the served set misses and a pull may bring, once each.
fn missing(shared: &Shared) -> Vec<(ModuleRef, Option<VerifyKey>)> {
    let mut wanted = Vec::new();
    if let Some(set) = shared.set.load_full() {
        for pull in set.unavailable.iter().filter_map(|u| u.pull.clone()) {
            if !wanted.contains(&pull) {
                wanted.push(pull);
            }
        }
    }
    wanted
}
