//! The reports in the cluster: which exist (read once, by metadata, page
//! by page), writing a report only when its results changed, and
//! removing the reports no scan vouched for.

use super::api::{self, retry};
use super::metrics::{Metrics, ReportAction};
use super::report::{DIGEST_ANNOTATION, MANAGED_BY, Report, ReportApi, SOURCE};
use futures_util::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A report's place: namespace (`None` for a cluster report) and name.
type Key = (Option<String>, String);

struct Existing {
    digest: String,
    /// The kind of the object it reports on.
    subject_kind: String,
    /// Written or found current since the last [`Reports::unvouch`].
    vouched: bool,
}

/// The audit's reports in the cluster, as far as deciding what to write
/// and what to remove needs: a few dozen bytes per report, never the
/// reports themselves.
pub struct Reports {
    client: Client,
    api: ReportApi,
    metrics: Arc<Metrics>,
    existing: Mutex<HashMap<Key, Existing>>,
}

impl Reports {
    /// Reads the reports of ours already in the cluster. Fails when the
    /// report API is not served: nothing could be written.
    pub async fn load(
        client: Client,
        api: ReportApi,
        page_size: u32,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Reports> {
        let mut existing = HashMap::new();
        for namespaced in [true, false] {
            let resource = api.resource(namespaced);
            let reports: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let mut params = ListParams::default()
                .labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
                .limit(page_size);
            loop {
                let page = retry(&metrics, "list", &resource.plural, || {
                    reports.list_metadata(&params)
                })
                .await
                .map_err(|e| match api::not_found(&e) {
                    true => anyhow::anyhow!(
                        "the API server does not serve {}/{}: install the report CRDs (the \
                         chart's crds/ folder) or choose another --report-api",
                        resource.api_version,
                        resource.plural
                    ),
                    false => anyhow::Error::new(e)
                        .context(format!("cannot list the existing {}", resource.plural)),
                })?;
                for report in page.items {
                    let subject_kind = report
                        .metadata
                        .owner_references
                        .as_ref()
                        .and_then(|owners| owners.first())
                        .map(|o| o.kind.clone())
                        .unwrap_or_default();
                    existing.insert(
                        (report.namespace(), report.name_any()),
                        Existing {
                            digest: report
                                .annotations()
                                .get(DIGEST_ANNOTATION)
                                .cloned()
                                .unwrap_or_default(),
                            subject_kind,
                            vouched: false,
                        },
                    );
                }
                match page.metadata.continue_ {
                    Some(token) if !token.is_empty() => params = params.continue_token(&token),
                    _ => break,
                }
            }
        }
        Ok(Reports {
            client,
            api,
            metrics,
            existing: Mutex::new(existing),
        })
    }

    /// How many reports of ours the cluster holds, as far as known.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Existing>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.existing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reports(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = self.api.resource(namespace.is_some());
        match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Applies a report, unless one with the same results is there; either
    /// way it is vouched for.
    pub async fn put(&self, report: Report) -> Result<(), kube::Error> {
        let key = (report.namespace.clone(), report.name.clone());
        let known = match self.lock().get_mut(&key) {
            Some(existing) if existing.digest == report.digest => {
                existing.vouched = true;
                self.metrics.report(ReportAction::Unchanged);
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        let reports = self.reports(report.namespace.as_deref());
        // A report none of ours has is created: a fifth cheaper for the
        // API server than an apply, and most of a first scan's writes.
        let created = match known {
            true => false,
            false => {
                let object: DynamicObject =
                    serde_json::from_value(report.body.clone()).map_err(kube::Error::SerdeError)?;
                let params = PostParams {
                    field_manager: Some(SOURCE.into()),
                    ..PostParams::default()
                };
                match retry(&self.metrics, "create", &report.name, || {
                    reports.create(&params, &object)
                })
                .await
                {
                    Ok(_) => true,
                    // There after all (another writer, or a report made
                    // without our label): applied over below.
                    Err(kube::Error::Api(status)) if status.code == 409 => false,
                    // Its namespace is going away, and the object with it.
                    Err(e) if api::namespace_gone(&e) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        if !created {
            // Server-side apply, forced: the fields are ours, whoever
            // touched them last.
            let params = PatchParams::apply(SOURCE).force();
            let patch = Patch::Apply(&report.body);
            match retry(&self.metrics, "apply", &report.name, || {
                reports.patch(&report.name, &params, &patch)
            })
            .await
            {
                Ok(_) => {}
                Err(e) if api::namespace_gone(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.lock().insert(
            key,
            Existing {
                digest: report.digest,
                subject_kind: report.subject_kind,
                vouched: true,
            },
        );
        self.metrics.report(ReportAction::Written);
        Ok(())
    }

    /// Forgets that the reports on objects of `kind` were vouched for: a
    /// listing of that kind starts, and will vouch for the ones still due.
    pub fn unvouch(&self, kind: &str) {
        for existing in self.lock().values_mut() {
            if existing.subject_kind == kind {
                existing.vouched = false;
            }
        }
    }

    /// Removes the report named `name`, if it is ours.
    pub async fn remove(&self, namespace: Option<&str>, name: &str) -> Result<(), kube::Error> {
        let key = (namespace.map(str::to_string), name.to_string());
        if !self.lock().contains_key(&key) {
            return Ok(());
        }
        let reports = self.reports(namespace);
        let params = DeleteParams::default();
        match retry(&self.metrics, "delete", name, || {
            reports.delete(name, &params)
        })
        .await
        {
            Ok(_) => {}
            // Gone already: the garbage collector was first.
            Err(e) if api::not_found(&e) => {}
            Err(e) => return Err(e),
        }
        self.lock().remove(&key);
        self.metrics.report(ReportAction::Deleted);
        Ok(())
    }

    /// Removes every report in `namespace`.
    pub async fn remove_namespace(
        &self,
        namespace: &str,
        concurrency: usize,
    ) -> Result<(), kube::Error> {
        let keys: Vec<Key> = self
            .lock()
            .keys()
            .filter(|(ns, _)| ns.as_deref() == Some(namespace))
            .cloned()
            .collect();
        self.remove_all(keys, concurrency).await
    }

    /// Removes the unvouched reports that `stale` picks by namespace and
    /// kind (kinds fully listed since [`Reports::unvouch`], or no longer
    /// audited, in the namespaces the scan covers): their object is gone,
    /// out of scope, passing under `--results failures`, or no longer
    /// judged. `concurrency` deletions run at once. Returns the first
    /// error, having tried every report.
    pub async fn sweep(
        &self,
        stale: impl Fn(Option<&str>, &str) -> bool,
        concurrency: usize,
    ) -> Result<(), kube::Error> {
        let keys: Vec<Key> = self
            .lock()
            .iter()
            .filter(|((namespace, _), e)| {
                !e.vouched && stale(namespace.as_deref(), &e.subject_kind)
            })
            .map(|(key, _)| key.clone())
            .collect();
        self.remove_all(keys, concurrency).await
    }

    /// Removes reports, `concurrency` at once. Returns the first error,
    /// having tried every report.
    async fn remove_all(&self, keys: Vec<Key>, concurrency: usize) -> Result<(), kube::Error> {
        let results: Vec<Result<(), kube::Error>> = futures_util::stream::iter(keys)
            .map(|(namespace, name)| async move {
                let removed = self.remove(namespace.as_deref(), &name).await;
                if let Err(e) = &removed {
                    tracing::warn!(report = %name, error = %e, "cannot remove a report");
                }
                removed
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }
}
