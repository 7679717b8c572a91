use crate::ContainerRef;
use std::fmt::Display;

/// What a policy found: every violation and every warning.
///
/// ```
/// # use agyn_policy_sdk::Outcome;
/// let mut out = Outcome::default();
/// out.deny("hostNetwork must be false (is true)");
/// assert!(!out.is_allowed());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    /// No violations: the policy admits the object.
    pub fn is_allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Records a violation.
    pub fn deny(&mut self, message: impl Into<String>) -> &mut Self {
        self.violations.push(message.into());
        self
    }

    /// Records a violation of one container's field, in the one shape every
    /// policy uses: `container "app": securityContext.runAsUser must be a
    /// non-zero UID (is 0)`.
    pub fn deny_field(
        &mut self,
        container: &ContainerRef<'_>,
        field: &str,
        required: impl Display,
        found: impl Display,
    ) -> &mut Self {
        self.deny(format!(
            "{container}: {field} must be {required} (is {found})"
        ))
    }

    /// Records a warning: shown to the user, never a denial.
    pub fn warn(&mut self, message: impl Into<String>) -> &mut Self {
        self.warnings.push(message.into());
        self
    }
}

/// Shows an optional value in a message: its value, or `unset`.
pub fn shown<T: std::fmt::Debug>(value: Option<T>) -> String {
    value.map_or_else(|| "unset".to_string(), |v| format!("{v:?}"))
}
