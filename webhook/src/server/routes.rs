//! The HTTP side: the webhook endpoints on the TLS port, metrics and probes
//! on the plain one. One handler serves every admission endpoint: it reads
//! and checks the AdmissionReview, runs [`review_with`] (inline, or on the
//! blocking pool when its budget is long or a policy keeps missing its
//! deadline), and answers, logs and counts the decision. Once the request
//! is read, it is answered with a verdict whatever happens: what cannot be
//! judged is decided by the failure policies of the policies it concerns.

use super::Escaped;
use super::admission_review::{self, AdmissionResponse, clip};
use super::metrics::{Limit, Metrics, Outcome, Port};
use crate::admission::{
    AdmissionRequest, Decision, Options, Phase, PolicyOutcome, review_with, unjudged,
};
use crate::config::{MAX_TIMEOUT, PolicySet, duration};
use crate::engine::EvalError;
use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A review that must end within this runs on the async worker that read
/// the request. Handing it to the blocking pool cost more CPU than the
/// policies themselves (207 against 154 µs of server CPU per pod in the
/// load test). Probes and accept loops run elsewhere (see `connections`),
/// so a worker held this long delays only other reviews; longer budgets,
/// and every review while a policy keeps missing its deadline, go to the
/// blocking pool.
const INLINE_BUDGET: Duration = Duration::from_millis(100);

/// What every request shares.
pub struct Shared {
    /// `None` until the first policy set is loaded.
    pub set: ArcSwapOption<PolicySet>,
    pub metrics: Arc<Metrics>,
    pub dry_run: bool,
    pub max_request_size: usize,
    pub default_timeout: Duration,
    /// A request's body must arrive within this (and within its budget).
    pub read_timeout: Duration,
    /// Reviews in progress: past the bound, requests wait (within their
    /// budget) instead of each holding an instance. Taken once the body
    /// is in.
    pub reviews: Arc<Semaphore>,
    /// Set on SIGTERM: `/readyz` fails so that no new traffic comes.
    pub draining: AtomicBool,
    /// Registry modules, once the first set is loaded: `/readyz` waits
    /// for their first pull.
    pub modules: std::sync::OnceLock<Arc<super::modules::Modules>>,
}

impl Shared {
    pub fn install(&self, set: PolicySet) {
        self.metrics.policy_set(&set);
        self.set.store(Some(Arc::new(set)));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Validate,
    Mutate,
}

pub fn webhook(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/validate/{policy}", post(validate_one))
        .route("/mutate/{policy}", post(mutate_one))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

pub fn metrics(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else if shared.set.load().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "policies are loading").into_response()
    } else if shared.modules.get().is_some_and(|m| !m.tried()) {
        (StatusCode::SERVICE_UNAVAILABLE, "pulling policy modules").into_response()
    } else {
        // Ready even with modules missing (see `modules`), saying which.
        let set = shared.set.load();
        let missing: Vec<String> = set
            .iter()
            .flat_map(|set| &set.unavailable)
            .map(|u| format!("{} ({}): {}", u.name, u.module, u.reason()))
            .collect();
        match missing.is_empty() {
            true => "ok".into_response(),
            false => format!(
                "ok; {} policies without their module, failing by their failure policy:\n{}\n",
                missing.len(),
                missing.join("\n")
            )
            .into_response(),
        }
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

/// The API server's query: `?timeout=10s`, its own deadline for the call.
#[derive(Deserialize)]
struct Params {
    timeout: Option<String>,
}

async fn validate(s: State<Arc<Shared>>, q: Query<Params>, body: Body) -> Response {
    admit(s, q, Endpoint::Validate, None, body).await
}

async fn mutate(s: State<Arc<Shared>>, q: Query<Params>, body: Body) -> Response {
    admit(s, q, Endpoint::Mutate, None, body).await
}

async fn validate_one(
    s: State<Arc<Shared>>,
    Path(policy): Path<String>,
    q: Query<Params>,
    body: Body,
) -> Response {
    admit(s, q, Endpoint::Validate, Some(policy), body).await
}

async fn mutate_one(
    s: State<Arc<Shared>>,
    Path(policy): Path<String>,
    q: Query<Params>,
    body: Body,
) -> Response {
    admit(s, q, Endpoint::Mutate, Some(policy), body).await
}

async fn admit(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Params>,
    endpoint: Endpoint,
    policy: Option<String>,
    body: Body,
) -> Response {
    let start = Instant::now();
    let set = shared.set.load_full();
    let base = match endpoint {
        Endpoint::Validate => "validate",
        Endpoint::Mutate => "mutate",
    };
    // Metrics are labelled by endpoint: a policy name from the URL becomes
    // a label only once the set is known to have it.
    let known = policy.as_ref().is_none_or(|p| {
        set.as_ref().is_some_and(|s| {
            s.policies.iter().any(|known| &known.name == p)
                || s.unavailable.iter().any(|known| &known.name == p)
        })
    });
    let name = match &policy {
        None => base.to_string(),
        Some(p) if known => format!("{base}/{p}"),
        Some(_) => format!("{base}/unknown"),
    };
    let refuse = |status: StatusCode, message: String| {
        tracing::warn!(
            endpoint = %name,
            status = status.as_u16(),
            message = %Escaped(&message),
            "refused a request"
        );
        shared
            .metrics
            .request(&name, Outcome::Error, start.elapsed());
        (status, message + "\n").into_response()
    };
    let budget = match params.timeout.as_deref().map(duration::parse) {
        None => shared.default_timeout,
        Some(Ok(timeout)) => timeout,
        Some(Err(e)) => return refuse(StatusCode::BAD_REQUEST, format!("?timeout: {e}")),
    };
    // The API server waits 30 s at most; a larger budget means nothing and
    // must not overflow the clock. A tenth of the budget is kept for the
    // answer to travel back: the API server must hear the failure policy's
    // verdict, not its own timeout.
    let budget = budget.min(MAX_TIMEOUT);
    let deadline = start + budget - budget / 10;
    // Half of that tenth: when the review has not returned by then (its
    // thread starved of CPU), the failure policies answer without it.
    let answer_by = start + budget - budget / 20;
    let Some(set) = set else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy set is still loading".into(),
        );
    };
    if let Some(p) = &policy
        && !known
    {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("the policy set has no policy {p:?}"),
        );
    }
    // The body is read before a review slot is taken, and by a deadline:
    // a client that sends it slowly, or never, holds only its own request.
    let read_by = deadline.min(start + shared.read_timeout);
    let read = axum::body::to_bytes(body, shared.max_request_size);
    let bytes = match tokio::time::timeout_at(read_by.into(), read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_too_large(&e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the AdmissionReview is larger than the limit of {} bytes (--max-request-size)",
                    shared.max_request_size
                ),
            );
        }
        Ok(Err(e)) => return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        Err(_) => {
            shared.metrics.limit(Port::Webhook, Limit::BodyTimeout);
            let mut response = refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {:?}",
                    read_by.saturating_duration_since(start)
                ),
            );
            // HTTP/1.1 cannot carry another request after a body cut
            // short; HTTP/2 resets the stream and ignores the header.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let request = match admission_review::parse(&bytes) {
        Ok(request) => Arc::new(request),
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    drop(bytes);

    // The dry-run mutating webhook changes nothing, so it need not look.
    if endpoint == Endpoint::Mutate && shared.dry_run {
        let response = AdmissionResponse::allow(request.uid.clone());
        shared
            .metrics
            .request(&name, Outcome::Allowed, start.elapsed());
        return json(response.to_json());
    }
    let phase = match endpoint {
        Endpoint::Mutate => Phase::Mutate,
        // The real validating webhook sees the object after mutation; a dry
        // run has no mutation before it, so it mutates in its own review to
        // warn of what enforcement would deny.
        Endpoint::Validate if shared.dry_run => Phase::Both,
        Endpoint::Validate => Phase::Validate,
    };
    let judge = Judge {
        set,
        request: request.clone(),
        phase,
        policy,
        deadline,
        answer_by,
    };
    let decision = judge.run(&shared).await;
    let uid = request.uid.clone();
    let response = match endpoint {
        Endpoint::Mutate => AdmissionResponse::mutation(uid, &decision),
        Endpoint::Validate => AdmissionResponse::validation(uid, &decision, shared.dry_run),
    };
    let took = start.elapsed();
    let outcome = if response.allowed {
        Outcome::Allowed
    } else {
        Outcome::Denied
    };
    shared.metrics.decision(&decision);
    shared.metrics.request(&name, outcome, took);
    audit(&name, &request, &decision, &response, took);
    json(response.to_json())
}

/// One review to run: everything it needs, owned, so that it can move to
/// the blocking pool and its request still be answered if it panics there.
struct Judge {
    set: Arc<PolicySet>,
    request: Arc<AdmissionRequest>,
    phase: Phase,
    policy: Option<String>,
    /// When the policies must have stopped (their epoch deadline).
    deadline: Instant,
    /// When the answer must leave, whether the review returned or not.
    answer_by: Instant,
}

impl Judge {
    fn options(&self) -> Options<'_> {
        Options {
            phase: self.phase,
            policy: self.policy.as_deref(),
            deadline: Some(self.deadline),
        }
    }

    /// The decision, always: when the review cannot be completed (no slot
    /// in time, an object the host cannot read, a panic), every matching
    /// policy's failure policy answers, never the registration's.
    async fn run(self, shared: &Shared) -> Decision {
        let Ok(Ok(slot)) =
            tokio::time::timeout_at(self.deadline.into(), shared.reviews.clone().acquire_owned())
                .await
        else {
            return unjudged(
                &self.set,
                &self.request,
                &self.options(),
                EvalError::Overloaded,
            );
        };
        // How long the policies may run, at most.
        let longest = self
            .set
            .longest_deadline()
            .min(self.deadline.saturating_duration_since(Instant::now()));
        let judge = Arc::new(self);
        // The review holds its slot until it returns, even when the answer
        // has left without it: the bound on concurrent reviews stays true.
        let review = {
            let judge = judge.clone();
            move || {
                let _slot = slot;
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    review_with(&judge.set, &judge.request, &judge.options())
                }))
                .map_err(|panic| super::panic_message(&*panic))
            }
        };
        // Short reviews run here: the blocking pool's handoff costs more
        // than the policies. While some policy keeps missing its deadline,
        // every review goes to the pool, so that the looping one holds a
        // thread of its own and not a worker that other reviews wait for.
        let judged = if longest <= INLINE_BUDGET && !judge.set.any_circuit_open() {
            review()
        } else {
            // The policies stop at the deadline, but the thread running
            // them may get no CPU to return: the API server must still hear
            // the failure policies before its own timeout, not its timeout.
            match tokio::time::timeout_at(
                judge.answer_by.into(),
                tokio::task::spawn_blocking(review),
            )
            .await
            {
                Ok(joined) => joined.unwrap_or_else(|e| Err(e.to_string())),
                Err(_) => {
                    let error = EvalError::Deadline(longest);
                    return unjudged(&judge.set, &judge.request, &judge.options(), error);
                }
            }
        };
        let error = match judged {
            Ok(Ok(decision)) => return decision,
            Ok(Err(e)) => EvalError::Unreadable(e.to_string()),
            Err(panic) => {
                tracing::error!(
                    uid = %Escaped(&judge.request.uid),
                    panic = %Escaped(&panic),
                    "a review panicked; its policies' failure policies answer"
                );
                EvalError::Internal(panic)
            }
        };
        unjudged(&judge.set, &judge.request, &judge.options(), error)
    }
}

fn json(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn is_too_large(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Violations written per policy in an audit event, and their length: a
/// pod with thousands of containers must not write megabytes of log.
const MAX_LOGGED_VIOLATIONS: usize = 20;
const MAX_LOGGED_VIOLATION_BYTES: usize = 512;

/// One event per decision: who asked what, which policies ran, what each
/// said and how long it took. Never the object: it may hold secrets.
fn audit(
    endpoint: &str,
    request: &AdmissionRequest,
    decision: &Decision,
    response: &AdmissionResponse,
    took: Duration,
) {
    let mut verdicts = String::new();
    for r in &decision.results {
        let verdict = match &r.outcome {
            PolicyOutcome::Allowed { .. } => "allowed".to_string(),
            PolicyOutcome::Denied { violations, .. } => {
                let listed: Vec<String> = violations
                    .iter()
                    .take(MAX_LOGGED_VIOLATIONS)
                    .map(|v| clip(v, MAX_LOGGED_VIOLATION_BYTES).into_owned())
                    .collect();
                let more = violations.len().saturating_sub(MAX_LOGGED_VIOLATIONS);
                if more > 0 {
                    format!("violated ({}; ... and {more} more)", listed.join("; "))
                } else {
                    format!("violated ({})", listed.join("; "))
                }
            }
            PolicyOutcome::Failed(e) => format!("failed ({e})"),
        };
        let _ = write!(
            verdicts,
            "{}{}={}{} {}us",
            if verdicts.is_empty() { "" } else { ", " },
            r.policy,
            verdict,
            if r.mutated { " mutated" } else { "" },
            r.duration.as_micros()
        );
    }
    let text = |s: Option<&str>| Escaped(s.unwrap_or_default()).to_string();
    tracing::info!(
        target: "agyn_admission::audit",
        endpoint,
        uid = %Escaped(&request.uid),
        operation = ?request.operation,
        kind = %Escaped(&request.kind.kind),
        namespace = text(request.namespace.as_deref()),
        name = text(request.name.as_deref()),
        user = text(request.user_info.username.as_deref()),
        dry_run_request = request.dry_run,
        allowed = response.allowed,
        patched = response.patch.is_some(),
        skipped = text(decision.skipped.as_deref()),
        verdicts = %Escaped(&verdicts),
        took_us = took.as_micros() as u64,
        "decision"
    );
}
