//! Prometheus metrics, served as OpenMetrics text on the metrics port.

use crate::admission::{Decision, PolicyOutcome};
use crate::engine::EvalError;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied,
    /// Refused before judging: malformed, too large, not ready.
    Error,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyErrorLabels {
    policy: String,
    cause: &'static str,
}

/// The two listening ports.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Port {
    Webhook,
    Metrics,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Webhook => "webhook",
            Port::Metrics => "metrics",
        }
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit a client ran into: each closes its connection or request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Limit {
    /// The port already had its most connections: the new one was closed.
    MaxConnections,
    /// The TLS handshake did not end in time.
    HandshakeTimeout,
    /// A request's body did not arrive in time.
    BodyTimeout,
    /// No request in progress for the idle timeout (an idle connection,
    /// or headers that never ended): the connection was closed.
    IdleTimeout,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::BodyTimeout => "body_timeout",
            Limit::IdleTimeout => "idle_timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    port: &'static str,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    policy: String,
    module: String,
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullLabels {
    module: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 25 µs to about 13 s: a policy call, a whole review, and a request that
/// waited for its deadline all land inside the buckets.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(25e-6, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<EndpointLabels>,
    policy_seconds: Histograms<PolicyLabels>,
    policy_errors: Family<PolicyErrorLabels, Counter>,
    policies_loaded: Gauge,
    policies_unavailable: Gauge,
    modules: Family<ModuleLabels, Gauge>,
    pulls: Family<PullLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    connections: Family<PortLabels, Gauge>,
    limits: Family<LimitLabels, Counter>,
    /// When each port's each limit was last logged, in seconds since
    /// `started` (0: never).
    limit_logged: [[AtomicU64; LIMITS]; 2],
    started: Instant,
}

/// How often a limit being hit is logged, at most, per port and limit.
const LIMIT_LOG_PERIOD: Duration = Duration::from_secs(10);
const LIMITS: usize = 4;

/// An open connection, counted until dropped.
pub struct OpenConnection {
    gauge: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agyn_admission");
        let requests = Family::default();
        let request_seconds = Histograms::new_with_constructor(latency as fn() -> Histogram);
        let policy_seconds = Histograms::new_with_constructor(latency as fn() -> Histogram);
        let policy_errors = Family::default();
        let policies_loaded = Gauge::default();
        let policies_unavailable = Gauge::default();
        let modules = Family::default();
        let pulls = Family::default();
        let reloads = Family::default();
        let connections = Family::default();
        let limits = Family::default();
        registry.register(
            "requests",
            "AdmissionReviews answered, by endpoint and outcome (error: refused as malformed or unanswerable)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from reading an AdmissionReview to answering it, by endpoint",
            request_seconds.clone(),
        );
        registry.register(
            "policy_duration_seconds",
            "Time of the engine call that judged an object, by policy (policies sharing a module share a call)",
            policy_seconds.clone(),
        );
        registry.register(
            "policy_errors",
            "Policies that gave no verdict, by policy and cause (deadline, memory, trap, malformed, instantiate, policy, unreadable, overloaded, circuit_open, internal)",
            policy_errors.clone(),
        );
        registry.register(
            "policies_loaded",
            "Policies in the policy set being served",
            policies_loaded.clone(),
        );
        registry.register(
            "policies_unavailable",
            "Policies of the set whose module could not be pulled, verified or loaded: their failure policy answers for them",
            policies_unavailable.clone(),
        );
        registry.register(
            "policy_module",
            "1 for each policy whose module came from a registry, with the module as the set names it and the manifest digest loaded",
            modules.clone(),
        );
        registry.register(
            "policy_module_pulls",
            "Pulls of registry modules, by module and result (pulled, failed)",
            pulls.clone(),
        );
        registry.register(
            "policy_set_reloads",
            "Policy set reloads after its file changed, by result (loaded, refused)",
            reloads.clone(),
        );
        registry.register(
            "connections",
            "Connections open, by port (webhook, metrics)",
            connections.clone(),
        );
        registry.register(
            "connection_limits",
            "Connections and requests closed by a limit, by port and limit (max_connections, handshake_timeout, body_timeout, idle_timeout)",
            limits.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            policy_seconds,
            policy_errors,
            policies_loaded,
            policies_unavailable,
            modules,
            pulls,
            reloads,
            connections,
            limits,
            limit_logged: Default::default(),
            started: Instant::now(),
        }
    }

    pub fn connection_opened(&self, port: Port) -> OpenConnection {
        let gauge = self
            .connections
            .get_or_create(&PortLabels { port: port.name() })
            .clone();
        gauge.inc();
        OpenConnection { gauge }
    }

    /// Counts a limit hit, and logs it at most once per
    /// [`LIMIT_LOG_PERIOD`] for each port and limit: a flood must not
    /// become a flood of log lines.
    pub fn limit(&self, port: Port, limit: Limit) {
        let total = self
            .limits
            .get_or_create(&LimitLabels {
                port: port.name(),
                limit: limit.name(),
            })
            .inc()
            + 1;
        let now = self.started.elapsed().as_secs();
        let last = &self.limit_logged[port as usize][limit as usize];
        let previous = last.load(Ordering::Relaxed);
        if (previous == 0 || now >= previous + LIMIT_LOG_PERIOD.as_secs())
            && last
                .compare_exchange(previous, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                port = port.name(),
                limit = limit.name(),
                total,
                "a client ran into a limit: its connection or request was closed"
            );
        }
    }

    pub fn request(&self, endpoint: &str, outcome: Outcome, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                outcome,
            })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn decision(&self, decision: &Decision) {
        for result in &decision.results {
            self.policy_seconds
                .get_or_create(&PolicyLabels {
                    policy: result.policy.clone(),
                })
                .observe(result.duration.as_secs_f64());
            if let PolicyOutcome::Failed(error) = &result.outcome {
                self.policy_errors
                    .get_or_create(&PolicyErrorLabels {
                        policy: result.policy.clone(),
                        cause: cause(error),
                    })
                    .inc();
            }
        }
    }

    /// What the set now served has: its policies, those without their
    /// module, and the registry modules loaded.
    pub fn policy_set(&self, set: &crate::config::PolicySet) {
        self.policies_loaded.set(set.policies.len() as i64);
        self.policies_unavailable.set(set.unavailable.len() as i64);
        self.modules.clear();
        for module in &set.registry_modules {
            self.modules
                .get_or_create(&ModuleLabels {
                    policy: module.policy.clone(),
                    module: module.module.clone(),
                    digest: module.digest.clone(),
                })
                .set(1);
        }
    }

    pub fn pull(&self, module: &str, pulled: bool) {
        let result = if pulled { "pulled" } else { "failed" };
        self.pulls
            .get_or_create(&PullLabels {
                module: module.to_string(),
                result,
            })
            .inc();
    }

    pub fn reload(&self, loaded: bool) {
        let result = if loaded { "loaded" } else { "refused" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn cause(error: &EvalError) -> &'static str {
    match error {
        EvalError::Deadline(_) => "deadline",
        EvalError::Memory(_) => "memory",
        EvalError::Trap(_) => "trap",
        EvalError::Malformed(_) => "malformed",
        EvalError::Instantiate(_) => "instantiate",
        EvalError::Policy(_) => "policy",
        EvalError::Unreadable(_) => "unreadable",
        EvalError::Overloaded => "overloaded",
        EvalError::CircuitOpen(_) => "circuit_open",
        EvalError::Unavailable(_) => "unavailable",
        EvalError::Internal(_) => "internal",
    }
}
