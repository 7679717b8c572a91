use super::breaker::Ticket;
use super::decision::{Decision, PolicyOutcome, PolicyResult};
use super::kinds::WorkloadKind;
use super::request::{AdmissionRequest, GuestRequest, Resource};
use super::target::{Target, View};
use super::{ReviewError, pod, readable};
use crate::config::{Mode, Operation, Policy, PolicySet, Unavailable};
use crate::engine::{Call, EvalError, Limits};
use kube::core::admission::Operation as RequestOperation;
use serde::Deserialize;
use serde_json::Value;
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
/// sit next to each other in the set, share a component and see the object
/// in the same form run in one engine call, so the built-in set costs one
/// instance and one parse; when that call fails, its policies run again one
/// by one, so that each fails (or not) for its own reasons.
pub fn review_with(
    set: &PolicySet,
    request: &AdmissionRequest,
    options: &Options,
) -> Result<Decision, ReviewError> {
    let target = match scope(set, request) {
        Scope::Skip(decision) => return Ok(decision),
        Scope::Judge(target) => target,
    };
    let judging: Vec<(&Policy, View)> = set
        .policies
        .iter()
        .filter_map(|p| Some((p, target.view(&p.rules)?)))
        .collect();
    if judging.is_empty() && set.unavailable.is_empty() {
        return Ok(Decision::skipped(format!(
            "no policy judges a {}",
            target.kind
        )));
    }
    if target.namespace.is_none() && target.workload.is_some() {
        return Err(ReviewError::NoNamespace);
    }
    let raw = request
        .object
        .as_deref()
        .ok_or(ReviewError::NoObject)?
        .get();
    // Refuse now what the host could not parse later, should a policy
    // change the object: the same object must not be judged or not by
    // whether a mutation happened to touch it.
    readable::check(raw).map_err(ReviewError::Unreadable)?;
    if !raw.trim_start().starts_with('{') {
        return Err(ReviewError::NotAnObject);
    }
    let object = Object::new(raw, target.workload);
    // A template is cut out of the parsed workload: no template, no review.
    if judging.iter().any(|(_, view)| *view == View::PodTemplate) {
        object.template().map_err(|e| e.clone())?;
    }
    let matching: Vec<(&Policy, View)> = judging
        .into_iter()
        .filter(|(p, _)| takes_part(p, options))
        .filter(|(p, view)| {
            p.matching
                .matches(target.kind, target.operation, target.namespace, || {
                    object.labels(*view)
                })
        })
        .collect();
    // A policy without its module judges what its match lets through, as
    // the object (or, for a workload, its pod template) is labelled.
    let labels_view = match target.workload {
        Some(kind) if kind != WorkloadKind::Pod => View::PodTemplate,
        _ => View::Object,
    };
    let unavailable: Vec<PolicyResult> = set
        .unavailable
        .iter()
        .filter(|u| unavailable_takes_part(u, options))
        .filter(|u| {
            u.matching
                .matches(target.kind, target.operation, target.namespace, || {
                    object.labels(labels_view)
                })
        })
        .map(unavailable_result)
        .collect();
    if matching.is_empty() && unavailable.is_empty() {
        return Ok(Decision::skipped("no policy matches"));
    }

    let resource = request.resource.clone().unwrap_or_else(|| Resource {
        group: target.group.to_string(),
        version: target.version.to_string(),
        resource: target.resource.to_string(),
    });
    let guest_request =
        serde_json::to_string(&GuestRequest::new(request, resource, target.namespace))
            .expect("a request serialises");
    let mut run = Run {
        set,
        request: guest_request,
        object,
        old: request.old_object.as_deref().map(|o| OldObject {
            raw: o.get(),
            template: OnceCell::new(),
        }),
        deadline: options.deadline,
        results: Vec::with_capacity(matching.len()),
    };
    // Most of a Pod's spec is immutable once created: a patch on UPDATE
    // would only make the API server refuse the update.
    let mutate = options.phase != Phase::Validate
        && (target.operation == Operation::Create || target.workload != Some(WorkloadKind::Pod));
    // Verdicts before the last segment that changed the object were on an
    // older object: those policies are judged again on the final one.
    let mut stale = 0;
    for segment in matching.chunk_by(|a, b| a.0.component == b.0.component && a.1 == b.1) {
        let start = run.results.len();
        let policies: Vec<&Policy> = segment.iter().map(|(p, _)| *p).collect();
        if run.evaluate(&policies, segment[0].1, mutate) {
            stale = start;
        }
    }
    run.revalidate(&matching[..stale]);
    run.results.extend(unavailable);

    let patch = run.object.patch()?;
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
    let target = match scope(set, request) {
        Scope::Skip(decision) => return decision,
        Scope::Judge(target) => target,
    };
    let results: Vec<PolicyResult> = set
        .policies
        .iter()
        .filter(|p| target.view(&p.rules).is_some())
        .filter(|p| takes_part(p, options))
        .filter(|p| {
            p.matching
                .may_match(target.kind, target.operation, target.namespace)
        })
        .map(|p| PolicyResult {
            policy: p.name.clone(),
            mode: p.mode,
            failure_policy: p.failure_policy,
            outcome: PolicyOutcome::Failed(error.clone()),
            mutated: false,
            duration: Duration::ZERO,
        })
        .chain(
            set.unavailable
                .iter()
                .filter(|u| unavailable_takes_part(u, options))
                .filter(|u| {
                    u.matching
                        .may_match(target.kind, target.operation, target.namespace)
                })
                .map(unavailable_result),
        )
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

/// What a request is to the policies: not for them, or what it targets.
enum Scope<'r> {
    Skip(Decision),
    Judge(Target<'r>),
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
    let target = Target::new(request, operation);
    if let Some(namespace) = target.namespace
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
    Scope::Judge(target)
}

/// Whether a policy runs in this review at all, whatever the object.
fn takes_part(policy: &Policy, options: &Options) -> bool {
    options.policy.is_none_or(|only| policy.name == only)
        && (options.phase != Phase::Mutate || (policy.mutate && policy.mode == Mode::Enforce))
}

fn unavailable_takes_part(policy: &Unavailable, options: &Options) -> bool {
    options.policy.is_none_or(|only| policy.name == only)
        && (options.phase != Phase::Mutate || (policy.mutate && policy.mode == Mode::Enforce))
}

/// A policy without its module fails; its failure policy answers.
fn unavailable_result(policy: &Unavailable) -> PolicyResult {
    PolicyResult {
        policy: policy.name.clone(),
        mode: policy.mode,
        failure_policy: policy.failure_policy,
        outcome: PolicyOutcome::Failed(policy.error()),
        mutated: false,
        duration: Duration::ZERO,
    }
}

/// Parses JSON that serde_json has read once as a `RawValue`, which
/// accepts what a `Value` refuses: numbers out of range (`1e400`) and
/// nesting past serde_json's recursion limit.
fn parse(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// An object's labels, read without building the rest of it: only label
/// selectors need them.
fn labels_of(json: &str) -> Option<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct Labelled {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(Default, Deserialize)]
    struct Metadata {
        labels: Option<BTreeMap<String, String>>,
    }
    serde_json::from_str::<Labelled>(json).ok()?.metadata.labels
}

/// The object under review as the policies have left it so far, in the
/// forms they take it: the whole object as text (as it came, until a
/// policy changes it) and, for a workload, its pod template as a Pod.
struct Object<'a> {
    raw: &'a str,
    workload: Option<WorkloadKind>,
    /// `raw` parsed, the first time it is needed.
    original: OnceCell<Result<Value, String>>,
    /// The object once a policy changed it, and as text.
    changed: Option<(Value, String)>,
    /// The pod template of the current object, as a Pod and as text.
    template: OnceCell<Result<(Value, String), ReviewError>>,
    labels: [OnceCell<Option<BTreeMap<String, String>>>; 2],
}

impl<'a> Object<'a> {
    fn new(raw: &'a str, workload: Option<WorkloadKind>) -> Self {
        Object {
            raw,
            workload,
            original: OnceCell::new(),
            changed: None,
            template: OnceCell::new(),
            labels: Default::default(),
        }
    }

    fn original(&self) -> Result<&Value, String> {
        self.original
            .get_or_init(|| parse(self.raw))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn current(&self) -> Result<&Value, String> {
        match &self.changed {
            Some((value, _)) => Ok(value),
            None => self.original(),
        }
    }

    fn template(&self) -> Result<&(Value, String), &ReviewError> {
        self.template
            .get_or_init(|| {
                let kind = self.workload.unwrap_or(WorkloadKind::Pod);
                let object = self.current().map_err(ReviewError::Unreadable)?;
                let pod = pod::extract(kind, object)?;
                let json = serde_json::to_string(&pod).expect("a JSON value serialises");
                Ok((pod, json))
            })
            .as_ref()
    }

    /// The object as `view` presents it, as the engine takes it.
    fn text(&self, view: View) -> Result<&str, EvalError> {
        match view {
            View::Object => Ok(self.changed.as_ref().map_or(self.raw, |(_, json)| json)),
            View::PodTemplate => self
                .template()
                .map(|(_, json)| json.as_str())
                .map_err(|e| EvalError::Unreadable(e.to_string())),
        }
    }

    /// The labels of the object as `view` presents it, as the set's label
    /// selectors see them (the object's own on arrival).
    fn labels(&self, view: View) -> Option<&BTreeMap<String, String>> {
        let slot = &self.labels[view as usize];
        slot.get_or_init(|| self.text(view).ok().and_then(labels_of))
            .as_ref()
    }

    /// Takes a policy's changed object (in `view`'s form), refusing one that
    /// is not the same object or not valid.
    fn change(&mut self, view: View, json: String) -> Result<(), EvalError> {
        let malformed = |m: String| EvalError::Malformed(format!("invalid mutated object: {m}"));
        let before = match view {
            View::Object => self.current().map_err(EvalError::Unreadable)?,
            View::PodTemplate => {
                &self
                    .template()
                    .map_err(|e| EvalError::Unreadable(e.to_string()))?
                    .0
            }
        };
        let pod_form = view == View::PodTemplate || self.workload == Some(WorkloadKind::Pod);
        let after = pod::check_mutation(before, &json, pod_form).map_err(malformed)?;
        let (value, json) = match view {
            View::Object => (after, json),
            View::PodTemplate => {
                let kind = self.workload.unwrap_or(WorkloadKind::Pod);
                let object = self.current().map_err(EvalError::Unreadable)?;
                let value = pod::restore(kind, object, after)
                    .map_err(|e| EvalError::Unreadable(e.to_string()))?;
                let json = serde_json::to_string(&value).expect("a JSON value serialises");
                (value, json)
            }
        };
        self.changed = Some((value, json));
        self.template = OnceCell::new();
        Ok(())
    }

    /// The JSON Patch from the object as it came to the object now.
    fn patch(&self) -> Result<json_patch::Patch, ReviewError> {
        match &self.changed {
            None => Ok(json_patch::Patch::default()),
            Some((value, _)) => Ok(json_patch::diff(
                self.original().map_err(ReviewError::Unreadable)?,
                value,
            )),
        }
    }
}

/// The object before an UPDATE, and its pod template when a policy over
/// pods judges a workload.
struct OldObject<'a> {
    raw: &'a str,
    template: OnceCell<Option<String>>,
}

impl OldObject<'_> {
    fn text(&self, view: View, workload: Option<WorkloadKind>) -> Option<&str> {
        match (view, workload) {
            (View::PodTemplate, Some(kind)) => self
                .template
                .get_or_init(|| {
                    let old = parse(self.raw).ok()?;
                    let pod = pod::extract(kind, &old).ok()?;
                    serde_json::to_string(&pod).ok()
                })
                .as_deref(),
            _ => Some(self.raw),
        }
    }
}

/// The state of one review: the object as the policies have left it so far
/// and the results in the order of the matching policies.
struct Run<'a> {
    set: &'a PolicySet,
    request: String,
    object: Object<'a>,
    old: Option<OldObject<'a>>,
    deadline: Option<Instant>,
    results: Vec<PolicyResult>,
}

impl Run<'_> {
    /// Runs policies of one component, seeing the object in one form, and
    /// appends their results in order. A policy whose circuit is open and
    /// already being probed is not run (its failure policy answers for
    /// it). Returns whether the object changed.
    fn evaluate(&mut self, policies: &[&Policy], view: View, mutate: bool) -> bool {
        let tickets: Vec<Option<Ticket>> = policies.iter().map(|p| p.breaker.admit()).collect();
        if tickets.iter().all(Option::is_some) {
            return self.call(policies, view, mutate);
        }
        let runnable: Vec<&Policy> = policies
            .iter()
            .zip(&tickets)
            .filter(|(_, t)| t.is_some())
            .map(|(p, _)| *p)
            .collect();
        let start = self.results.len();
        let changed = !runnable.is_empty() && self.call(&runnable, view, mutate);
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
    fn call(&mut self, policies: &[&Policy], view: View, mutate: bool) -> bool {
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
        let old = self
            .old
            .as_ref()
            .and_then(|old| old.text(view, self.object.workload));
        let evaluation = self
            .object
            .text(view)
            .and_then(|object| component.evaluate(&self.request, object, old, &calls, limits));
        let evaluation = evaluation.and_then(|mut e| {
            if let Some(json) = e.mutated_object.take() {
                self.object.change(view, json)?;
                e.mutated_object = Some(String::new());
            }
            Ok(e)
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
            Err(_) if policies.len() > 1 => self.apart(policies, view, mutate),
            Err(e) => {
                policies[0]
                    .breaker
                    .record(matches!(e, EvalError::Deadline(_)));
                self.results
                    .push(result(policies[0], PolicyOutcome::Failed(e), false));
                false
            }
            Ok(evaluation) => {
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
                evaluation.mutated_object.is_some()
            }
        }
    }

    /// Runs the policies of a failed call one by one, as the call would
    /// have: each mutating in turn, then the ones before the last change
    /// judged again on the final object. One policy's trap, deadline or
    /// memory cap then costs only its own verdict, and each failure is
    /// reported with its own cause.
    fn apart(&mut self, policies: &[&Policy], view: View, mutate: bool) -> bool {
        let start = self.results.len();
        let mut last_change = None;
        for (i, policy) in policies.iter().enumerate() {
            if self.call(&[*policy], view, mutate) {
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
            self.call(&[*policy], view, false);
            let mut fresh = self.results.pop().expect("call appends one result");
            fresh.mutated = mutated;
            self.results[start + i] = fresh;
        }
        true
    }

    /// Judges again, without mutation, the first policies of the run, whose
    /// verdicts were on an object that a later policy changed: validation
    /// must see the final object.
    fn revalidate(&mut self, stale: &[(&Policy, View)]) {
        let mut groups: BTreeMap<(usize, bool), Vec<usize>> = BTreeMap::new();
        for (i, (policy, view)) in stale.iter().enumerate() {
            groups
                .entry((policy.component, *view == View::PodTemplate))
                .or_default()
                .push(i);
        }
        for indices in groups.into_values() {
            let policies: Vec<&Policy> = indices.iter().map(|&i| stale[i].0).collect();
            let view = stale[indices[0]].1;
            let before = self.results.len();
            self.evaluate(&policies, view, false);
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
