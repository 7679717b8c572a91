//! One report per audited object, in the `openreports.io/v1alpha1` API
//! (`Report`, `ClusterReport`) or the older `wgpolicyk8s.io/v1alpha2`
//! (`PolicyReport`, `ClusterPolicyReport`): the same fields but the
//! top-level `source` and `configuration`, which only Open Reports has.

use super::judge::{AuditResult, Judged, Status, Subject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write;

/// What reports say produced them, and the field manager they are
/// applied with.
pub const SOURCE: &str = "agyn-admission";
/// The label every report of ours carries, and no other.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "agyn-admission");
/// The label naming the policy set the results came from.
pub const POLICY_SET_LABEL: &str = "agyn.io/policy-set";
/// The annotation holding the digest of the results: a report whose
/// results did not change is not written again.
pub const DIGEST_ANNOTATION: &str = "agyn.io/results-digest";

/// Kubernetes' longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportApi {
    /// openreports.io/v1alpha1 Report and ClusterReport.
    Openreports,
    /// wgpolicyk8s.io/v1alpha2 PolicyReport and ClusterPolicyReport.
    Wgpolicyk8s,
}

impl ReportApi {
    /// The report kind for namespaced objects, or for cluster-scoped ones.
    pub fn resource(self, namespaced: bool) -> ApiResource {
        let (group, version, kind, plural) = match (self, namespaced) {
            (ReportApi::Openreports, true) => ("openreports.io", "v1alpha1", "Report", "reports"),
            (ReportApi::Openreports, false) => (
                "openreports.io",
                "v1alpha1",
                "ClusterReport",
                "clusterreports",
            ),
            (ReportApi::Wgpolicyk8s, true) => (
                "wgpolicyk8s.io",
                "v1alpha2",
                "PolicyReport",
                "policyreports",
            ),
            (ReportApi::Wgpolicyk8s, false) => (
                "wgpolicyk8s.io",
                "v1alpha2",
                "ClusterPolicyReport",
                "clusterpolicyreports",
            ),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }
}

/// Which results a report keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Results {
    /// Every policy's result, passes included.
    All,
    /// Only `fail` and `error`: an object with neither has no report.
    Failures,
}

impl Results {
    fn keeps(self, status: Status) -> bool {
        self == Results::All || matches!(status, Status::Fail | Status::Error)
    }
}

/// A report ready to apply.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    /// `None`: a cluster report.
    pub namespace: Option<String>,
    /// The subject's kind, to sweep reports by the kinds fully listed.
    pub subject_kind: String,
    pub digest: String,
    pub body: Value,
}

/// The name of `subject`'s report: kind and name, readable in `kubectl
/// get`; when too long, cut and ended with a hash of the whole.
pub fn name(subject: &Subject) -> String {
    let full = format!("{}-{}", subject.kind.to_ascii_lowercase(), subject.name);
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = hex(&Sha256::digest(full.as_bytes()))[..10].to_string();
    // Names are ASCII: cutting at any byte is a character boundary.
    let mut cut = full[..MAX_NAME - hash.len() - 1].to_string();
    // A name must end with an alphanumeric character.
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{cut}-{hash}")
}

/// The report on `judged`, or `None` when the object needs none (no
/// policy judged it, or none failed and only failures are kept).
pub fn build(
    api: ReportApi,
    filter: Results,
    policy_set: &str,
    judged: &Judged,
    now: (i64, u32),
) -> Option<Report> {
    if judged.skipped.is_some() || judged.results.is_empty() {
        return None;
    }
    let kept: Vec<&AuditResult> = judged
        .results
        .iter()
        .filter(|r| filter.keeps(r.status))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let subject = &judged.subject;
    let mut summary: BTreeMap<&str, usize> = ["pass", "fail", "warn", "error", "skip"]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for result in &judged.results {
        *summary.entry(result.status.as_str()).or_default() += 1;
    }
    let scope = json!({
        "apiVersion": subject.api_version,
        "kind": subject.kind,
        "name": subject.name,
        "namespace": subject.namespace,
        "uid": subject.uid,
    });
    // Everything the report says but the time it was said: equal digests,
    // equal reports.
    let mut hasher = Sha256::new();
    let mut line = format!("{api:?}\0{filter:?}\0{policy_set}\0{scope}\0");
    for r in &kept {
        let _ = writeln!(
            line,
            "{}\0{}\0{}\0{:?}\0{}\0{:?}",
            r.policy,
            r.status.as_str(),
            r.message,
            r.mode,
            r.category,
            r.severity
        );
    }
    hasher.update(line.as_bytes());
    let digest = hex(&hasher.finalize())[..32].to_string();

    let results: Vec<Value> = kept
        .iter()
        .map(|r| {
            // Only what a reader needs: each field costs the API server
            // on every write of every report.
            let mut result = json!({
                "source": SOURCE,
                "policy": r.policy,
                "result": r.status.as_str(),
                "timestamp": {"seconds": now.0, "nanos": now.1},
            });
            if !r.message.is_empty() {
                result["message"] = r.message.clone().into();
            }
            if !r.category.is_empty() {
                result["category"] = r.category.clone().into();
            }
            if let Some(severity) = r.severity {
                result["severity"] = severity.as_str().into();
            }
            result
        })
        .collect();
    let resource = api.resource(subject.namespace.is_some());
    let name = name(subject);
    let mut metadata = json!({
        "name": name,
        "labels": {
            MANAGED_BY.0: MANAGED_BY.1,
            POLICY_SET_LABEL: policy_set,
        },
        "annotations": {DIGEST_ANNOTATION: digest},
        // Deleted with the object by the garbage collector, where there
        // is one; the audit removes reports of deleted objects too.
        "ownerReferences": [{
            "apiVersion": subject.api_version,
            "kind": subject.kind,
            "name": subject.name,
            "uid": subject.uid,
        }],
    });
    if let Some(namespace) = &subject.namespace {
        metadata["namespace"] = namespace.clone().into();
    }
    let mut body = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": metadata,
        "scope": scope,
        "summary": summary,
        "results": results,
    });
    if subject.namespace.is_none() {
        body["scope"]
            .as_object_mut()
            .expect("an object")
            .remove("namespace");
    }
    if api == ReportApi::Openreports {
        body["source"] = SOURCE.into();
        // Always there, so that a report first created and later applied
        // carries no field of the other filter.
        let kept: Vec<&str> = ["pass", "fail", "warn", "error", "skip"]
            .into_iter()
            .filter(|s| filter == Results::All || matches!(*s, "fail" | "error"))
            .collect();
        body["configuration"] = json!({"limits": {"statusFilter": kept}});
    }
    Some(Report {
        name,
        namespace: subject.namespace.clone(),
        subject_kind: subject.kind.clone(),
        digest,
        body,
    })
}

/// A short digest of text, for labels: the policy set's revision.
pub fn revision(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Decision;
    use crate::config::Mode;

    fn judged(name: &str, statuses: &[Status]) -> Judged {
        Judged {
            subject: Subject {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.into(),
                namespace: Some("team".into()),
                uid: "u-1".into(),
            },
            skipped: None,
            results: statuses
                .iter()
                .enumerate()
                .map(|(i, status)| AuditResult {
                    policy: format!("p{i}"),
                    status: *status,
                    message: format!("m{i}"),
                    mode: Mode::Enforce,
                    category: "Pod Security".into(),
                    severity: None,
                    changes: vec![],
                })
                .collect(),
            decision: Decision::default(),
            patch: json_patch::Patch::default(),
        }
    }

    #[test]
    fn names_are_kind_and_name_and_long_ones_end_with_a_hash() {
        let short = judged("web-1", &[]).subject;
        assert_eq!(name(&short), "pod-web-1");
        let mut long = short.clone();
        long.name = format!("{}-x", "a".repeat(250));
        let cut = name(&long);
        assert_eq!(cut.len(), MAX_NAME);
        long.name = format!("{}-y", "a".repeat(250));
        let other = name(&long);
        assert_ne!(cut, other, "the hash tells apart names cut alike");
        assert!(cut.starts_with("pod-aaaa"));
    }

    #[test]
    fn a_report_counts_every_result_and_keeps_what_the_filter_keeps() {
        let j = judged("web", &[Status::Pass, Status::Fail, Status::Error]);
        let all = build(ReportApi::Openreports, Results::All, "rev", &j, (5, 0)).unwrap();
        assert_eq!(all.body["kind"], "Report");
        assert_eq!(all.body["source"], SOURCE);
        assert_eq!(all.body["results"].as_array().unwrap().len(), 3);
        assert_eq!(all.body["summary"]["pass"], 1);
        assert_eq!(all.body["summary"]["fail"], 1);
        assert_eq!(all.body["summary"]["warn"], 0);
        assert_eq!(all.body["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(all.body["results"][1]["category"], "Pod Security");

        let failures = build(ReportApi::Openreports, Results::Failures, "rev", &j, (5, 0)).unwrap();
        assert_eq!(failures.body["results"].as_array().unwrap().len(), 2);
        assert_eq!(
            failures.body["summary"]["pass"], 1,
            "the summary counts all"
        );
        assert_ne!(failures.digest, all.digest);

        let passing = judged("ok", &[Status::Pass]);
        assert!(
            build(
                ReportApi::Openreports,
                Results::Failures,
                "rev",
                &passing,
                (5, 0)
            )
            .is_none()
        );

        let wg = build(ReportApi::Wgpolicyk8s, Results::All, "rev", &j, (5, 0)).unwrap();
        assert_eq!(wg.body["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(wg.body["kind"], "PolicyReport");
        assert!(wg.body.get("source").is_none());
    }

    #[test]
    fn the_digest_ignores_the_time_and_follows_the_results_and_the_set() {
        let j = judged("web", &[Status::Fail]);
        let at = |t, set| build(ReportApi::Openreports, Results::All, set, &j, (t, 0)).unwrap();
        assert_eq!(at(1, "a").digest, at(2, "a").digest);
        assert_ne!(at(1, "a").digest, at(1, "b").digest);
        let mut changed = judged("web", &[Status::Fail]);
        changed.results[0].message = "another".into();
        let other = build(ReportApi::Openreports, Results::All, "a", &changed, (1, 0)).unwrap();
        assert_ne!(other.digest, at(1, "a").digest);
    }
}
