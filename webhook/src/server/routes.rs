//! The HTTP side: the webhook endpoints on the TLS port, metrics and probes
//! on the plain one. One handler serves every admission endpoint: it reads
//! and checks the AdmissionReview, runs [`review_with`] (inline, or on the
//! blocking pool when its budget is long), and answers, logs and counts the
//! decision.

use super::admission_review::{self, AdmissionResponse};
use super::duration;
use super::metrics::{Metrics, Outcome};
use crate::admission::{AdmissionRequest, Decision, Options, Phase, PolicyOutcome, review_with};
use crate::config::{MAX_TIMEOUT, PolicySet};
use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A review that must end within this runs on the async worker that read
/// the request. Handing it to the blocking pool cost more CPU than the
/// policies themselves (207 against 154 µs of server CPU per pod in the
/// load test); a policy that spins holds a worker only this long, as it
/// would hold any thread. Longer budgets go to the blocking pool, so that a
/// hung policy cannot keep the async workers from probes and other requests.
const INLINE_BUDGET: Duration = Duration::from_millis(100);

/// What every request shares.
pub struct Shared {
    /// `None` until the first policy set is loaded.
    pub set: ArcSwapOption<PolicySet>,
    pub metrics: Metrics,
    pub dry_run: bool,
    pub max_request_size: usize,
    pub default_timeout: Duration,
    /// Reviews in progress, bodies included: past the bound, requests
    /// wait instead of each holding its body and an instance.
    pub reviews: Semaphore,
    /// Set on SIGTERM: `/readyz` fails so that no new traffic comes.
    pub draining: AtomicBool,
}

impl Shared {
    pub fn install(&self, set: PolicySet) {
        self.metrics.policies_loaded(set.policies.len());
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
    } else {
        "ok".into_response()
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
        set.as_ref()
            .is_some_and(|s| s.policies.iter().any(|known| &known.name == p))
    });
    let name = match &policy {
        None => base.to_string(),
        Some(p) if known => format!("{base}/{p}"),
        Some(_) => format!("{base}/unknown"),
    };
    let refuse = |status: StatusCode, message: String| {
        tracing::warn!(endpoint = %name, status = status.as_u16(), %message, "refused a request");
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
    let Ok(_permit) = shared.reviews.acquire().await else {
        unreachable!("the semaphore is never closed")
    };
    let bytes = match axum::body::to_bytes(body, shared.max_request_size).await {
        Ok(bytes) => bytes,
        Err(e) if is_too_large(&e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the AdmissionReview is larger than the limit of {} bytes (--max-request-size)",
                    shared.max_request_size
                ),
            );
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let request = match admission_review::parse(&bytes) {
        Ok(request) => request,
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
    // How long the policies may run, at most.
    let longest = set
        .longest_deadline()
        .min(deadline.saturating_duration_since(Instant::now()));
    let review = move || {
        let options = Options {
            phase,
            policy: policy.as_deref(),
            deadline: Some(deadline),
        };
        let decision = review_with(&set, &request, &options);
        (request, decision)
    };
    let judged = if longest <= INLINE_BUDGET {
        Ok(review())
    } else {
        tokio::task::spawn_blocking(review).await
    };
    let (request, decision) = match judged {
        Ok(judged) => judged,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the review failed: {e}"),
            );
        }
    };
    let decision = match decision {
        Ok(decision) => decision,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("cannot review: {e}")),
    };
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
                format!("violated ({})", violations.join("; "))
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
    tracing::info!(
        target: "agyn_admission::audit",
        endpoint,
        uid = %request.uid,
        operation = ?request.operation,
        kind = %request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = request.name.as_deref().unwrap_or_default(),
        user = request.user_info.username.as_deref().unwrap_or_default(),
        dry_run_request = request.dry_run,
        allowed = response.allowed,
        patched = response.patch.is_some(),
        skipped = decision.skipped.as_deref().unwrap_or_default(),
        verdicts = %verdicts,
        took_us = took.as_micros() as u64,
        "decision"
    );
}
