//! Judging one stored object: the webhook's review of a CREATE, without
//! changing anything. Each policy judges the object as it is stored; a
//! policy that would change it fails, naming the fields.

use super::kinds::AuditedKind;
use crate::admission::{
    self, AdmissionRequest, Decision, Options, Phase, PolicyOutcome, Resource, kinds,
};
use crate::config::{FailurePolicy, Mode, PolicySet};
use crate::engine::EvalError;
use crate::engine::metadata::Severity;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::{DynamicObject, GroupVersionKind, TypeMeta};

/// A report's verdict on one policy, as the report APIs spell it. (They
/// also know `skip`, which an audit never gives: a policy that does not
/// judge an object has no result.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
            Status::Error => "error",
        }
    }
}

/// One policy's verdict on the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditResult {
    pub policy: String,
    pub status: Status,
    pub message: String,
    pub mode: Mode,
    pub category: String,
    pub severity: Option<Severity>,
    /// Where a mutating policy would change the object (JSON pointers).
    pub changes: Vec<String>,
}

/// The object an audit judged, as its report names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    pub uid: String,
}

/// What the policies said of one object.
#[derive(Debug)]
pub struct Judged {
    pub subject: Subject,
    /// Why no policy judged it (an exempt namespace, no policy matching).
    pub skipped: Option<String>,
    /// Every policy that judged it, in the set's order.
    pub results: Vec<AuditResult>,
    /// The review of the object as it is, every policy judging and none
    /// changing it: what `check` would say of it with mutation off.
    pub decision: Decision,
    /// What the mutating policies would change, as one JSON Patch.
    pub patch: json_patch::Patch,
}

/// Who the audit is to the policies: the username it runs as, so that a
/// set's exempt usernames apply to the audit only if they name it.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
}

impl Subject {
    /// The object's path in the API, as dry-run results name their source.
    pub fn url(&self) -> String {
        let base = match self.api_version.contains('/') {
            true => format!("/apis/{}", self.api_version),
            false => format!("/api/{}", self.api_version),
        };
        let plural = kinds::by_name(&self.kind)
            .map(|(_, _, known)| known.resource.into_owned())
            .unwrap_or_else(|| self.kind.to_ascii_lowercase());
        match &self.namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{plural}/{}", self.name),
            None => format!("{base}/{plural}/{}", self.name),
        }
    }
}

/// The subject of a stored object of `kind`.
pub fn subject(kind: &AuditedKind, object: &DynamicObject) -> Subject {
    let ar = &kind.resource;
    Subject {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
        name: object.metadata.name.clone().unwrap_or_default(),
        namespace: object
            .metadata
            .namespace
            .clone()
            .filter(|_| kind.namespaced),
        uid: object.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Judges objects of one kind on every core, in their order.
pub fn judge_all(
    set: &PolicySet,
    kind: &AuditedKind,
    identity: &Identity,
    objects: Vec<DynamicObject>,
) -> Vec<Judged> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(objects.len());
    if workers <= 1 {
        return objects
            .into_iter()
            .map(|o| judge(set, kind, identity, o))
            .collect();
    }
    let per_worker = objects.len().div_ceil(workers);
    let mut objects = objects.into_iter();
    let chunks: Vec<Vec<DynamicObject>> = (0..workers)
        .map(|_| objects.by_ref().take(per_worker).collect())
        .collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|o| judge(set, kind, identity, o))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Judges a stored object of `kind` as the webhook would judge its
/// creation by `identity`.
pub fn judge(
    set: &PolicySet,
    kind: &AuditedKind,
    identity: &Identity,
    mut object: DynamicObject,
) -> Judged {
    let ar = &kind.resource;
    // A list's items carry no apiVersion and kind; an admission request's
    // object does, and policies may read them.
    object.types = Some(TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    // Bookkeeping of the API server's, often the bulk of a stored object:
    // no admission request carries it.
    object.metadata.managed_fields = None;
    let subject = subject(kind, &object);
    let request = AdmissionRequest {
        uid: format!("audit-{}", subject.uid),
        kind: GroupVersionKind::gvk(&ar.group, &ar.version, &ar.kind),
        resource: Some(Resource {
            group: ar.group.clone(),
            version: ar.version.clone(),
            resource: ar.plural.clone(),
        }),
        sub_resource: None,
        name: Some(subject.name.clone()),
        namespace: subject.namespace.clone(),
        operation: Operation::Create,
        user_info: UserInfo {
            username: Some(identity.username.clone()),
            groups: Some(identity.groups.clone()),
            ..UserInfo::default()
        },
        object: serde_json::value::to_raw_value(&object).ok(),
        old_object: None,
        dry_run: true,
    };
    let review_once = |phase, policy: Option<&str>| {
        let options = Options {
            phase,
            policy,
            deadline: None,
        };
        admission::review_with(set, &request, &options).unwrap_or_else(|e| {
            admission::unjudged(
                set,
                &request,
                &options,
                EvalError::Unreadable(e.to_string()),
            )
        })
    };
    // A policy that misses its deadline on a busy node would flip its
    // result between error and its verdict from one scan to the next, and
    // rewrite the report each time: such a review is made once more.
    let review = |phase, policy: Option<&str>| {
        let first = review_once(phase, policy);
        match first
            .results
            .iter()
            .any(|r| matches!(r.outcome, PolicyOutcome::Failed(EvalError::Deadline(_))))
        {
            true => review_once(phase, policy),
            false => first,
        }
    };
    let decision = review(Phase::Validate, None);
    if decision.skipped.is_some() {
        return Judged {
            subject,
            skipped: decision.skipped.clone(),
            results: vec![],
            decision,
            patch: json_patch::Patch::default(),
        };
    }
    let mutation = review(Phase::Mutate, None);
    // Which policy changes what. When one policy alone changed the
    // object, the set's run says; otherwise a policy is run alone on the
    // stored object, but only if its own check passed: one that failed
    // has said what is wrong, and each such run costs a whole engine call.
    let mutated: Vec<&str> = mutation
        .results
        .iter()
        .filter(|r| r.mutated)
        .map(|r| r.policy.as_str())
        .collect();
    let changes = |policy: &str, passed: bool| -> Vec<String> {
        let patch = match mutated.as_slice() {
            [only] if *only == policy => &mutation.patch,
            _ if passed && mutated.contains(&policy) => &review(Phase::Mutate, Some(policy)).patch,
            _ => return vec![],
        };
        patch.0.iter().map(|op| op.path().to_string()).collect()
    };
    let results = decision
        .results
        .iter()
        .map(|r| {
            let metadata = set
                .policies
                .iter()
                .find(|p| p.name == r.policy)
                .and_then(|p| set.metadata(p));
            let (mut status, mut messages) = match &r.outcome {
                PolicyOutcome::Allowed { .. } => (Status::Pass, vec![]),
                PolicyOutcome::Denied { violations, .. } => {
                    let status = match r.mode {
                        Mode::Enforce => Status::Fail,
                        Mode::Warn | Mode::Audit => Status::Warn,
                    };
                    (status, violations.clone())
                }
                PolicyOutcome::Failed(e) => {
                    let ignored = match r.failure_policy {
                        FailurePolicy::Ignore => " (failurePolicy: Ignore admits the object)",
                        FailurePolicy::Fail => "",
                    };
                    (
                        Status::Error,
                        vec![format!("the policy failed: it {e}{ignored}")],
                    )
                }
            };
            // A policy that judged the object but failed to say what it
            // would change has not given its whole verdict.
            if status != Status::Error
                && let Some(e) = mutation.results.iter().find_map(|m| match &m.outcome {
                    PolicyOutcome::Failed(e) if m.policy == r.policy => Some(e),
                    _ => None,
                })
            {
                status = Status::Error;
                messages.push(format!("the policy failed while mutating: it {e}"));
            }
            let changed = changes(&r.policy, status == Status::Pass);
            if !changed.is_empty() {
                // Only enforcing policies mutate: a failure of theirs
                // stays an error.
                if status == Status::Pass {
                    status = Status::Fail;
                }
                messages.push(changes_message(&changed));
            }
            AuditResult {
                policy: r.policy.clone(),
                status,
                message: messages.join("; "),
                mode: r.mode,
                category: metadata.map(|m| m.category.clone()).unwrap_or_default(),
                severity: metadata.map(|m| m.severity),
                changes: changed,
            }
        })
        .collect();
    Judged {
        subject,
        skipped: None,
        results,
        decision,
        patch: mutation.patch,
    }
}

/// How a report says what a mutating policy would change.
pub fn changes_message(paths: &[String]) -> String {
    format!(
        "the webhook would change the object at {}",
        paths.join(", ")
    )
}
