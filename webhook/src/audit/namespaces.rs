//! Which namespaces an audit covers: the excluded ones and those that opt
//! out or are being deleted are skipped; with `--namespace`, only those
//! named are covered at all.

use super::{Audit, Output, api};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashSet;

impl Audit {
    /// Which namespaces are not audited: the excluded ones, those that
    /// opt out by label, and those being deleted (no report can be
    /// created there). Listed by metadata, page by page.
    pub(super) async fn read_namespaces(&mut self) -> Result<(), kube::Error> {
        let mut skipped: HashSet<String> =
            self.options.excluded_namespaces.iter().cloned().collect();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut params = kube::api::ListParams::default().limit(self.options.page_size);
        loop {
            let page = api::retry(&self.metrics, "list", "namespaces", || {
                namespaces.list_metadata(&params)
            })
            .await?;
            for namespace in &page.items {
                if self.skips(namespace) {
                    skipped.insert(namespace.name_any());
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        self.skipped_namespaces = skipped;
        Ok(())
    }

    /// Whether the scan is about `namespace` at all (`None`: cluster
    /// scope), whether or not it skips it: with `--namespace`, the reports
    /// elsewhere are not this scan's to remove.
    pub(super) fn covers(&self, namespace: Option<&str>) -> bool {
        let only = &self.options.only_namespaces;
        only.is_empty() || namespace.is_some_and(|ns| only.contains(ns))
    }

    /// Whether objects in `namespace` (`None`: cluster-scoped) are audited.
    pub(super) fn audits(&self, namespace: Option<&str>) -> bool {
        let only = &self.options.only_namespaces;
        match namespace {
            Some(ns) => {
                !self.skipped_namespaces.contains(ns) && (only.is_empty() || only.contains(ns))
            }
            None => only.is_empty(),
        }
    }

    /// Whether a namespace is left out of the audit.
    fn skips(&self, namespace: &impl Resource) -> bool {
        let opted_out = self
            .options
            .opt_out_label
            .as_ref()
            .is_some_and(|(key, value)| namespace.labels().get(key) == Some(value));
        opted_out
            || namespace.meta().deletion_timestamp.is_some()
            || self
                .options
                .excluded_namespaces
                .contains(&namespace.name_any())
    }

    /// Follows a namespace that changed. True if a full scan is due: it
    /// is audited again and its objects were never judged.
    pub(super) async fn namespace_changed(&mut self, namespace: Namespace) -> bool {
        let name = namespace.name_any();
        let skips = self.skips(&namespace);
        if skips == self.skipped_namespaces.contains(&name) {
            return false;
        }
        if !skips {
            tracing::info!(namespace = %name, "a namespace opted in: scanning again");
            return true;
        }
        self.skipped_namespaces.insert(name.clone());
        // Being deleted, its reports go with it; opted out, they go now.
        if namespace.meta().deletion_timestamp.is_none()
            && let Output::Reports(reports) = &self.output
        {
            tracing::info!(namespace = %name, "a namespace opted out: removing its reports");
            if let Err(e) = reports
                .remove_namespace(&name, self.options.concurrency)
                .await
            {
                tracing::warn!(namespace = %name, error = %e, "reports remain");
            }
        }
        false
    }

    /// Every namespace as it changes.
    pub(super) fn namespace_events(&self) -> impl Stream<Item = Namespace> + Send + use<> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        watcher(
            api,
            watcher::Config::default().page_size(self.options.page_size),
        )
        .default_backoff()
        .applied_objects()
        .filter_map(|namespace| std::future::ready(namespace.ok()))
    }
}
