use super::breaker::Ticket;
use super::decision::{Decision, PolicyOutcome, PolicyResult};
use super::kinds::WorkloadKind;
use super::request::{AdmissionRequest, GuestRequest};
use super::{ReviewError, pod, readable};
use crate::config::{Mode, Operation, Policy, PolicySet};
use crate::engine::{Call, EvalError, Limits};
use kube::core::admission::Operation as RequestOperation;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
/// engine call, so the built-in set costs one instance and one parse; when
/// that call fails, its policies run again one by one, so that each fails
/// (or not) for its own reasons.
pub fn review_with(
    set: &PolicySet,
    request: &AdmissionRequest,
    options: &Options,
) -> Result<Decision, ReviewError> {
    let (operation, kind, namespace) = match scope(set, request) {
        Scope::Skip(decision) => return Ok(decision),
        Scope::Judge {
            operation,
            kind,
            namespace,
        } => (operation, kind, namespace.ok_or(ReviewError::NoNamespace)?),
    };
    let raw = request
        .object
        .as_deref()
        .ok_or(ReviewError::NoObject)?
        .get();
    // Refuse now what the host could not parse later, should a policy
    // change the object: the same object must not be judged or not by
    // whether a mutation happened to touch it.
    readable::check(raw).map_err(ReviewError::Unreadable)?;
    // A Pod goes to the policies as the text it came in; only a template
    // has to be parsed on the host, to be cut out.
    let whole = if kind == WorkloadKind::Pod {
        if !raw.trim_start().starts_with('{') {
            return Err(ReviewError::NotAnObject);
        }
        None
    } else {
        Some(parse(raw).map_err(ReviewError::Unreadable)?)
    };
    let (pod_json, original): (Cow<str>, OnceCell<Result<Value, String>>) = match &whole {
        None => (Cow::Borrowed(raw), OnceCell::new()),
        Some(object) => {
            let pod = pod::extract(kind, object)?;
            let json = serde_json::to_string(&pod).expect("a JSON value serialises");
            (Cow::Owned(json), OnceCell::from(Ok(pod)))
        }
    };
    let labels = OnceCell::new();
    let labels = || labels.get_or_init(|| pod_labels(&pod_json)).as_ref();
    let matching: Vec<&Policy> = set
        .policies
        .iter()
        .filter(|p| takes_part(p, options))
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
        Some(mutated) => match &whole {
            None => json_patch::diff(run.original().map_err(ReviewError::Unreadable)?, &mutated),
            Some(object) => json_patch::diff(object, &pod::restore(kind, object, mutated)?),
        },
    };
    Ok(Decision {
        skipped: None,
        results: run.results,
        patch,
    })
}

/// The decision owed when a review cannot be completed (the object cannot
/// be read, no capacity in time, an internal error): every policy that may
/// judge the object fails with `error`, so each one's failure policy
/// answers, as if it had failed itself. The object is not read: a policy
/// with a label selector is taken to match, and so is every policy when
/// the request names no namespace.
pub fn unjudged(
    set: &PolicySet,
    request: &AdmissionRequest,
    options: &Options,
    error: EvalError,
) -> Decision {
    let (operation, kind, namespace) = match scope(set, request) {
        Scope::Skip(decision) => return decision,
        Scope::Judge {
            operation,
            kind,
            namespace,
        } => (operation, kind, namespace),
    };
    let results: Vec<PolicyResult> = set
        .policies
        .iter()
        .filter(|p| takes_part(p, options))
        .filter(|p| {
            namespace.is_none_or(|namespace| p.matching.may_match(kind, operation, namespace))
        })
        .map(|p| PolicyResult {
            policy: p.name.clone(),
            mode: p.mode,
            failure_policy: p.failure_policy,
            outcome: PolicyOutcome::Failed(error.clone()),
            mutated: false,
            duration: Duration::ZERO,
        })
        .collect();
    if results.is_empty() {
        return Decision::skipped("no policy matches");
    }
    Decision {
        skipped: None,
        results,
        patch: json_patch::Patch::default(),
    }
}

/// What a request is to the policies: not for them, or which kind,
/// operation and namespace.
enum Scope<'r> {
    Skip(Decision),
    Judge {
        operation: Operation,
        kind: WorkloadKind,
        namespace: Option<&'r str>,
    },
}

/// What can be told from the request's envelope alone, without its object.
fn scope<'r>(set: &PolicySet, request: &'r AdmissionRequest) -> Scope<'r> {
    let operation = match request.operation {
        RequestOperation::Create => Operation::Create,
        RequestOperation::Update => Operation::Update,
        RequestOperation::Delete | RequestOperation::Connect => {
            return Scope::Skip(Decision::skipped("DELETE and CONNECT are not judged"));
        }
    };
    let gvk = &request.kind;
    let Some(kind) = WorkloadKind::from_group_kind(&gvk.group, &gvk.kind) else {
        return Scope::Skip(Decision::skipped(format!(
            "no policy judges a {}",
            gvk.kind
        )));
    };
    match request.sub_resource.as_deref() {
        None | Some("") => {}
        Some("ephemeralcontainers") if kind == WorkloadKind::Pod => {}
        Some(other) => {
            return Scope::Skip(Decision::skipped(format!(
                "the {other} subresource is not judged"
            )));
        }
    }
    let namespace = request.namespace.as_deref();
    if let Some(namespace) = namespace
        && set.exempt_namespaces.iter().any(|n| n == namespace)
    {
        return Scope::Skip(Decision::skipped(format!(
            "namespace {namespace} is exempt"
        )));
    }
    let username = request.user_info.username.as_deref().unwrap_or_default();
    if set.exempt_usernames.iter().any(|u| u == username) {
        return Scope::Skip(Decision::skipped(format!("user {username} is exempt")));
    }
    Scope::Judge {
        operation,
        kind,
        namespace,
    }
}

/// Whether a policy runs in this review at all, whatever the object.
fn takes_part(policy: &Policy, options: &Options) -> bool {
    options.policy.is_none_or(|only| policy.name == only)
        && (options.phase != Phase::Mutate || (policy.mutate && policy.mode == Mode::Enforce))
}

/// Parses JSON that serde_json has read once as a `RawValue`, which
/// accepts what a `Value` refuses: numbers out of range (`1e400`) and
/// nesting past serde_json's recursion limit.
fn parse(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
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
    original: OnceCell<Result<Value, String>>,
    deadline: Option<Instant>,
    /// The pod as the policies left it, once one changed it.
    mutated: Option<Value>,
    results: Vec<PolicyResult>,
}

impl Run<'_> {
    fn original(&self) -> Result<&Value, String> {
        self.original
            .get_or_init(|| parse(self.original_json))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs policies of one component and appends their results in order.
    /// A policy whose circuit is open and already being probed is not run
    /// (its failure policy answers for it). Returns whether the object
    /// changed.
    fn evaluate(&mut self, policies: &[&Policy], mutate: bool) -> bool {
        let tickets: Vec<Option<Ticket>> = policies.iter().map(|p| p.breaker.admit()).collect();
        if tickets.iter().all(Option::is_some) {
            return self.call(policies, mutate);
        }
        let runnable: Vec<&Policy> = policies
            .iter()
            .zip(&tickets)
            .filter(|(_, t)| t.is_some())
            .map(|(p, _)| *p)
            .collect();
        let start = self.results.len();
        let changed = !runnable.is_empty() && self.call(&runnable, mutate);
        let mut ran = self.results.drain(start..);
        let results: Vec<PolicyResult> = policies
            .iter()
            .zip(&tickets)
            .map(|(p, ticket)| match ticket {
                Some(_) => ran.next().expect("one result per policy run"),
                None => shed(p),
            })
            .collect();
        drop(ran);
        self.results.extend(results);
        changed
    }

    /// One engine call for `policies`; if it fails and they are several,
    /// one call each instead. Appends their results; returns whether the
    /// object changed.
    fn call(&mut self, policies: &[&Policy], mutate: bool) -> bool {
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
                    Some(json) => {
                        let before = match &self.mutated {
                            Some(mutated) => mutated,
                            None => self.original().map_err(EvalError::Unreadable)?,
                        };
                        Some(pod::check_mutation(before, json).map_err(|m| {
                            EvalError::Malformed(format!("invalid mutated object: {m}"))
                        })?)
                    }
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
            Err(_) if policies.len() > 1 => self.apart(policies, mutate),
            Err(e) => {
                policies[0]
                    .breaker
                    .record(matches!(e, EvalError::Deadline(_)));
                self.results
                    .push(result(policies[0], PolicyOutcome::Failed(e), false));
                false
            }
            Ok((evaluation, mutated)) => {
                for (p, verdict) in policies.iter().zip(evaluation.verdicts) {
                    p.breaker.record(false);
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

    /// Runs the policies of a failed call one by one, as the call would
    /// have: each mutating in turn, then the ones before the last change
    /// judged again on the final object. One policy's trap, deadline or
    /// memory cap then costs only its own verdict, and each failure is
    /// reported with its own cause.
    fn apart(&mut self, policies: &[&Policy], mutate: bool) -> bool {
        let start = self.results.len();
        let mut last_change = None;
        for (i, policy) in policies.iter().enumerate() {
            if self.call(&[*policy], mutate) {
                last_change = Some(i);
            }
        }
        let Some(last) = last_change else {
            return false;
        };
        for (i, policy) in policies[..last].iter().enumerate() {
            if matches!(self.results[start + i].outcome, PolicyOutcome::Failed(_)) {
                continue;
            }
            let mutated = self.results[start + i].mutated;
            self.call(&[*policy], false);
            let mut fresh = self.results.pop().expect("call appends one result");
            fresh.mutated = mutated;
            self.results[start + i] = fresh;
        }
        true
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

/// The result of a policy not run because its circuit is open.
fn shed(policy: &Policy) -> PolicyResult {
    PolicyResult {
        policy: policy.name.clone(),
        mode: policy.mode,
        failure_policy: policy.failure_policy,
        outcome: PolicyOutcome::Failed(EvalError::CircuitOpen(policy.breaker.misses())),
        mutated: false,
        duration: Duration::ZERO,
    }
}
