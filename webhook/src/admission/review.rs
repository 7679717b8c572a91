use super::decision::{Decision, PolicyOutcome, PolicyResult};
use super::kinds::WorkloadKind;
use super::request::{AdmissionRequest, GuestRequest};
use super::{ReviewError, pod};
use crate::config::{Mode, Operation, Policy, PolicySet};
use crate::engine::{Call, EvalError, Limits};
use kube::core::admission::Operation as RequestOperation;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::time::Instant;

/// Which part of admission a review plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Mutate, then judge the result: the whole of admission in one call,
    /// as `check` predicts it.
    #[default]
    Both,
    /// Only the enforcing policies that mutate, for their changes: the
    /// mutating webhook.
    Mutate,
    /// Every policy judges the object as it arrives, changing nothing: the
    /// validating webhook, called after every mutating webhook has run.
    Validate,
}

/// How to review: the phase, which policies, and by when.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    pub phase: Phase,
    /// Only this policy of the set (the webhook's per-policy endpoints).
    pub policy: Option<&'a str>,
    /// When every verdict must be in: a policy still running then fails
    /// with a deadline error, and its failure policy decides.
    pub deadline: Option<Instant>,
}

/// Judges one admission request with a policy set: [`review_with`] with
/// the default options (mutate, then judge; every policy; no deadline
/// beyond each policy's own).
pub fn review(set: &PolicySet, request: &AdmissionRequest) -> Result<Decision, ReviewError> {
    review_with(set, request, &Options::default())
}

/// Judges one admission request with a policy set.
///
/// Mutating policies run first, in the set's order, each on the previous
/// one's result; every policy then judges the final object. Policies that
/// sit next to each other in the set and share a component run in one
/// engine call, so the built-in set costs one instance and one parse.
pub fn review_with(
    set: &PolicySet,
    request: &AdmissionRequest,
    options: &Options,
) -> Result<Decision, ReviewError> {
    let operation = match request.operation {
        RequestOperation::Create => Operation::Create,
        RequestOperation::Update => Operation::Update,
        RequestOperation::Delete | RequestOperation::Connect => {
            return Ok(Decision::skipped("DELETE and CONNECT are not judged"));
        }
    };
    let gvk = &request.kind;
    let Some(kind) = WorkloadKind::from_group_kind(&gvk.group, &gvk.kind) else {
        return Ok(Decision::skipped(format!(
            "no policy judges a {}",
            gvk.kind
        )));
    };
    match request.sub_resource.as_deref() {
        None | Some("") => {}
        Some("ephemeralcontainers") if kind == WorkloadKind::Pod => {}
        Some(other) => {
            return Ok(Decision::skipped(format!(
                "the {other} subresource is not judged"
            )));
        }
    }
    let namespace = request
        .namespace
        .as_deref()
        .ok_or(ReviewError::NoNamespace)?;
    if set.exempt_namespaces.iter().any(|n| n == namespace) {
        return Ok(Decision::skipped(format!(
            "namespace {namespace} is exempt"
        )));
    }
    let username = request.user_info.username.as_deref().unwrap_or_default();
    if set.exempt_usernames.iter().any(|u| u == username) {
        return Ok(Decision::skipped(format!("user {username} is exempt")));
    }
    let raw = request
        .object
        .as_deref()
        .ok_or(ReviewError::NoObject)?
        .get();
    // A Pod goes to the policies as the text it came in; only a template
    // has to be parsed on the host, to be cut out.
    let whole = OnceCell::new();
    let object = || whole.get_or_init(|| parse(raw));
    let (pod_json, original): (Cow<str>, OnceCell<Value>) = if kind == WorkloadKind::Pod {
        if !raw.trim_start().starts_with('{') {
            return Err(ReviewError::NotAnObject);
        }
        (Cow::Borrowed(raw), OnceCell::new())
    } else {
        let pod = pod::extract(kind, object())?;
        let json = serde_json::to_string(&pod).expect("a JSON value serialises");
        (Cow::Owned(json), OnceCell::from(pod))
    };
    let labels = OnceCell::new();
    let labels = || labels.get_or_init(|| pod_labels(&pod_json)).as_ref();
    let matching: Vec<&Policy> = set
        .policies
        .iter()
        .filter(|p| options.policy.is_none_or(|only| p.name == only))
        .filter(|p| options.phase != Phase::Mutate || (p.mutate && p.mode == Mode::Enforce))
        .filter(|p| p.matching.matches(kind, operation, namespace, labels))
        .collect();
    if matching.is_empty() {
        return Ok(Decision::skipped("no policy matches"));
    }

    let guest_request = serde_json::to_string(&GuestRequest::new(request, namespace))
        .expect("a request serialises");
    let mut run = Run {
        set,
        request: guest_request,
        object: Cow::Borrowed(&pod_json),
        original_json: &pod_json,
        original,
        deadline: options.deadline,
        mutated: None,
        results: Vec::with_capacity(matching.len()),
    };
    // Most of a Pod's spec is immutable once created: a patch on UPDATE
    // would only make the API server refuse the update.
    let mutate = options.phase != Phase::Validate
        && (operation == Operation::Create || kind != WorkloadKind::Pod);
    // Verdicts before the last segment that changed the object were on an
    // older object: those policies are judged again on the final one.
    let mut stale = 0;
    for segment in matching.chunk_by(|a, b| a.component == b.component) {
        let start = run.results.len();
        if run.evaluate(segment, mutate) {
            stale = start;
        }
    }
    run.revalidate(&matching[..stale]);

    let patch = match run.mutated.take() {
        None => json_patch::Patch::default(),
        Some(mutated) if kind == WorkloadKind::Pod => json_patch::diff(run.original(), &mutated),
        Some(mutated) => {
            let object = object();
            json_patch::diff(object, &pod::restore(kind, object, mutated))
        }
    };
    Ok(Decision {
        skipped: None,
        results: run.results,
        patch,
    })
}

/// Parses JSON that serde_json has already read once, as a `RawValue` or
/// from a `Value`: it cannot fail.
fn parse(json: &str) -> Value {
    serde_json::from_str(json).expect("JSON that was valid when the request was read")
}

/// The pod's labels, read without building the rest of it: only label
/// selectors need them.
fn pod_labels(pod: &str) -> Option<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct Labelled {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(Default, Deserialize)]
    struct Metadata {
        labels: Option<BTreeMap<String, String>>,
    }
    serde_json::from_str::<Labelled>(pod).ok()?.metadata.labels
}

/// The state of one review: the object as the policies have left it so far
/// and the results in the order of the matching policies.
struct Run<'a> {
    set: &'a PolicySet,
    request: String,
    /// The pod as the engine takes it: `mutated` as JSON, else as it came.
    object: Cow<'a, str>,
    /// The pod as it came, as text, and parsed the first time it is needed
    /// (a template's pod, cut out of the parsed workload, starts parsed).
    original_json: &'a str,
    original: OnceCell<Value>,
    deadline: Option<Instant>,
    /// The pod as the policies left it, once one changed it.
    mutated: Option<Value>,
    results: Vec<PolicyResult>,
}

impl Run<'_> {
    fn original(&self) -> &Value {
        self.original.get_or_init(|| parse(self.original_json))
    }

    /// Runs policies of one component in one call and appends their
    /// results. Returns whether they changed the object.
    fn evaluate(&mut self, policies: &[&Policy], mutate: bool) -> bool {
        let component = &self.set.components[policies[0].component];
        let calls: Vec<Call> = policies
            .iter()
            .map(|p| Call {
                policy: p.inner.clone(),
                settings: p.settings.clone(),
                mutate: mutate && p.mutate && p.mode == Mode::Enforce,
            })
            .collect();
        let own_deadline = policies
            .iter()
            .map(|p| p.limits.deadline)
            .max()
            .unwrap_or_default();
        let limits = Limits {
            deadline: match self.deadline {
                Some(by) => own_deadline.min(by.saturating_duration_since(Instant::now())),
                None => own_deadline,
            },
            memory: policies
                .iter()
                .map(|p| p.limits.memory)
                .max()
                .unwrap_or_default(),
        };
        let start = Instant::now();
        let evaluation = component
            .evaluate(&self.request, &self.object, &calls, limits)
            .and_then(|e| {
                let mutated = match &e.mutated_object {
                    Some(json) => Some(
                        pod::check_mutation(
                            self.mutated.as_ref().unwrap_or_else(|| self.original()),
                            json,
                        )
                        .map_err(|m| {
                            EvalError::Malformed(format!("invalid mutated object: {m}"))
                        })?,
                    ),
                    None => None,
                };
                Ok((e, mutated))
            });
        let duration = start.elapsed();
        let result = |policy: &Policy, outcome, mutated| PolicyResult {
            policy: policy.name.clone(),
            mode: policy.mode,
            failure_policy: policy.failure_policy,
            outcome,
            mutated,
            duration,
        };
        match evaluation {
            Err(e) => {
                for p in policies {
                    self.results
                        .push(result(p, PolicyOutcome::Failed(e.clone()), false));
                }
                false
            }
            Ok((evaluation, mutated)) => {
                for (p, verdict) in policies.iter().zip(evaluation.verdicts) {
                    let (outcome, changed) = match verdict {
                        Ok(v) if v.violations.is_empty() => (
                            PolicyOutcome::Allowed {
                                warnings: v.warnings,
                            },
                            v.mutated,
                        ),
                        Ok(v) => (
                            PolicyOutcome::Denied {
                                violations: v.violations,
                                warnings: v.warnings,
                            },
                            v.mutated,
                        ),
                        Err(e) => (PolicyOutcome::Failed(EvalError::Policy(e)), false),
                    };
                    self.results.push(result(p, outcome, changed));
                }
                match (mutated, evaluation.mutated_object) {
                    (Some(pod), Some(json)) => {
                        self.mutated = Some(pod);
                        self.object = Cow::Owned(json);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    /// Judges again, without mutation, the first policies of the run, whose
    /// verdicts were on an object that a later policy changed: validation
    /// must see the final object.
    fn revalidate(&mut self, stale: &[&Policy]) {
        let mut by_component: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, policy) in stale.iter().enumerate() {
            by_component.entry(policy.component).or_default().push(i);
        }
        for indices in by_component.into_values() {
            let policies: Vec<&Policy> = indices.iter().map(|&i| stale[i]).collect();
            let before = self.results.len();
            self.evaluate(&policies, false);
            let fresh: Vec<PolicyResult> = self.results.drain(before..).collect();
            for (i, mut result) in indices.into_iter().zip(fresh) {
                result.mutated = self.results[i].mutated;
                self.results[i] = result;
            }
        }
    }
}
