//! The audit's Prometheus metrics, served by `audit --metrics-listen` and
//! summed up in its last log line.

use super::judge::Judged;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

/// What happened to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportAction {
    Written,
    /// Its results had not changed: not written again.
    Unchanged,
    Deleted,
}

impl ReportAction {
    fn as_str(self) -> &'static str {
        match self {
            ReportAction::Written => "written",
            ReportAction::Unchanged => "unchanged",
            ReportAction::Deleted => "deleted",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    objects: Family<KindLabels, Counter>,
    results: Family<ResultLabels, Counter>,
    api_errors: Family<VerbLabels, Counter>,
    reports: Family<ActionLabels, Counter>,
    scan_seconds: Histogram,
    last_scan_objects: Gauge,
    /// API errors for the log line, without walking the family.
    errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agyn_audit");
        let objects = Family::default();
        let results = Family::default();
        let api_errors = Family::default();
        let reports = Family::default();
        // 1 s to about 2 h: a small cluster to a very large one.
        let scan_seconds = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let last_scan_objects = Gauge::default();
        registry.register(
            "objects_scanned",
            "Objects judged, by kind (a pod controlled by an audited workload is judged with it)",
            objects.clone(),
        );
        registry.register(
            "results",
            "Policy results, by policy and result (pass, fail, warn, error)",
            results.clone(),
        );
        registry.register(
            "api_errors",
            "Kubernetes API calls that failed, retries included, by verb",
            api_errors.clone(),
        );
        registry.register(
            "reports",
            "Reports written, left as they were (results unchanged) and deleted",
            reports.clone(),
        );
        registry.register(
            "scan_duration_seconds",
            "Time of a full scan: every audited kind listed and judged, reports written and stale ones removed",
            scan_seconds.clone(),
        );
        registry.register(
            "last_scan_objects",
            "Objects judged by the last full scan",
            last_scan_objects.clone(),
        );
        Metrics {
            registry,
            objects,
            results,
            api_errors,
            reports,
            scan_seconds,
            last_scan_objects,
            errors: AtomicU64::new(0),
        }
    }

    pub fn judged(&self, judged: &Judged) {
        if judged.skipped.is_some() {
            return;
        }
        self.objects
            .get_or_create(&KindLabels {
                kind: judged.subject.kind.clone(),
            })
            .inc();
        for r in &judged.results {
            self.results
                .get_or_create(&ResultLabels {
                    policy: r.policy.clone(),
                    result: r.status.as_str(),
                })
                .inc();
        }
    }

    pub fn api_error(&self, verb: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.api_errors.get_or_create(&VerbLabels { verb }).inc();
    }

    pub fn report(&self, action: ReportAction) {
        let action = action.as_str();
        self.reports.get_or_create(&ActionLabels { action }).inc();
    }

    pub fn scan_done(&self, took: Duration, objects: u64) {
        self.scan_seconds.observe(took.as_secs_f64());
        self.last_scan_objects.set(objects as i64);
    }

    /// API errors so far.
    pub fn api_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Reports by action so far.
    pub fn report_count(&self, action: ReportAction) -> u64 {
        let action = action.as_str();
        self.reports.get_or_create(&ActionLabels { action }).get()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
