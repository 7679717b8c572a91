use crate::config::{FailurePolicy, Mode};
use crate::engine::EvalError;
use serde::Serialize;
use std::time::Duration;

/// What agyn-admission decided about one object.
#[derive(Debug, Default)]
pub struct Decision {
    /// Why no policy ran (exempt namespace, unjudged kind, ...), if none did.
    pub skipped: Option<String>,
    /// Every policy that ran, in the set's order.
    pub results: Vec<PolicyResult>,
    /// From the submitted object to the final one; empty when unchanged.
    pub patch: json_patch::Patch,
}

/// One policy's part in a decision.
#[derive(Debug, Clone)]
pub struct PolicyResult {
    pub policy: String,
    pub mode: Mode,
    pub failure_policy: FailurePolicy,
    pub outcome: PolicyOutcome,
    /// The policy changed the object.
    pub mutated: bool,
    /// The engine call that produced the verdict. Policies that share a
    /// component share one call, and so one duration.
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    Allowed {
        warnings: Vec<String>,
    },
    Denied {
        violations: Vec<String>,
        warnings: Vec<String>,
    },
    Failed(EvalError),
}

/// A message attributed to its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub policy: String,
    pub message: String,
}

impl Decision {
    pub(super) fn skipped(reason: impl Into<String>) -> Self {
        Decision {
            skipped: Some(reason.into()),
            ..Decision::default()
        }
    }

    /// No violation or failure that denies.
    pub fn allowed(&self) -> bool {
        self.violations().is_empty()
    }

    /// What denies the object: violations of enforcing policies, and
    /// failures of enforcing policies whose failure policy is `Fail`.
    pub fn violations(&self) -> Vec<Violation> {
        self.messages(|r| r.mode == Mode::Enforce)
    }

    /// Whether a denial comes from policies that failed alone, none having
    /// found a violation: an error of the webhook's, not of the object.
    pub fn denied_for_failures_only(&self) -> bool {
        !self.allowed()
            && !self.results.iter().any(|r| {
                r.mode == Mode::Enforce && matches!(r.outcome, PolicyOutcome::Denied { .. })
            })
    }

    /// What the user is told without a denial: violations of policies in
    /// `warn` mode, and every policy's own warnings.
    pub fn warnings(&self) -> Vec<Violation> {
        let mut warnings = self.messages(|r| r.mode == Mode::Warn);
        for r in &self.results {
            if let PolicyOutcome::Allowed { warnings: w }
            | PolicyOutcome::Denied { warnings: w, .. } = &r.outcome
            {
                warnings.extend(w.iter().map(|m| r.violation(m.clone())));
            }
        }
        warnings
    }

    /// What is only recorded: violations of policies in `audit` mode.
    pub fn audit(&self) -> Vec<Violation> {
        self.messages(|r| r.mode == Mode::Audit)
    }

    fn messages(&self, mode: impl Fn(&PolicyResult) -> bool) -> Vec<Violation> {
        self.results
            .iter()
            .filter(|r| mode(r))
            .flat_map(|r| match &r.outcome {
                PolicyOutcome::Allowed { .. } => vec![],
                PolicyOutcome::Denied { violations, .. } => {
                    violations.iter().map(|m| r.violation(m.clone())).collect()
                }
                PolicyOutcome::Failed(_) if r.failure_policy == FailurePolicy::Ignore => vec![],
                PolicyOutcome::Failed(e) => {
                    vec![r.violation(format!("the policy failed: it {e}"))]
                }
            })
            .collect()
    }
}

impl PolicyResult {
    fn violation(&self, message: String) -> Violation {
        Violation {
            policy: self.policy.clone(),
            message,
        }
    }
}
