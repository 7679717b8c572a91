use super::decision::{Decision, PolicyOutcome, PolicyResult};
use super::kinds::WorkloadKind;
use super::request::{AdmissionRequest, GuestRequest};
use super::{ReviewError, pod};
use crate::config::{Mode, Operation, Policy, PolicySet};
use crate::engine::{Call, EvalError, Limits};
use kube::core::admission::Operation as RequestOperation;
use serde_json::Value;
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
    let object = request.object.as_ref().ok_or(ReviewError::NoObject)?;
    let pod = pod::extract(kind, object)?;
    let labels = OnceCell::new();
    let labels = || labels.get_or_init(|| pod_labels(&pod)).as_ref();
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
        object: serde_json::to_string(&pod).expect("a JSON value serialises"),
        original: &pod,
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

    let patch = match run.mutated {
        Some(mutated) => json_patch::diff(object, &pod::restore(kind, object, mutated)),
        None => json_patch::Patch::default(),
    };
    Ok(Decision {
        skipped: None,
        results: run.results,
        patch,
    })
}

fn pod_labels(pod: &Value) -> Option<BTreeMap<String, String>> {
    let labels = pod.pointer("/metadata/labels")?;
    serde_json::from_value(labels.clone()).ok()
}

/// The state of one review: the object as the policies have left it so far
/// and the results in the order of the matching policies.
struct Run<'a> {
    set: &'a PolicySet,
    request: String,
    /// The pod as the engine takes it: `mutated` as JSON, else `original`.
    object: String,
    original: &'a Value,
    deadline: Option<Instant>,
    /// The pod as the policies left it, once one changed it.
    mutated: Option<Value>,
    results: Vec<PolicyResult>,
}

impl Run<'_> {
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
                        pod::check_mutation(self.mutated.as_ref().unwrap_or(self.original), json)
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
                        self.object = json;
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
