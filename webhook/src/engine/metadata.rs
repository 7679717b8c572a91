//! A component's metadata: the custom section `agyn.policy.metadata` (JSON,
//! written by the SDK at compile time or appended to any component), read
//! from the bytes without running anything.
//!
//! A component without the section is taken to carry pod policies that
//! judge pods on CREATE and UPDATE, as every component of
//! `agyn:policy@0.1.0` did.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmparser::{Parser, Payload};

/// The section's name.
pub const SECTION: &str = "agyn.policy.metadata";

/// What the section says about each policy of the component.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentMetadata {
    pub policies: Vec<PolicyMetadata>,
}

/// One policy's metadata.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMetadata {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub mutating: bool,
    #[serde(default)]
    pub settings_schema: Option<Value>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub severity: Severity,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Requests a policy judges, as a webhook's rules say them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
}

impl Rule {
    /// The rule a policy without metadata is taken to have.
    pub fn pods() -> Rule {
        Rule {
            api_groups: vec![String::new()],
            api_versions: vec!["v1".into()],
            resources: vec!["pods".into()],
            operations: vec!["CREATE".into(), "UPDATE".into()],
        }
    }

    /// Whether the rule covers a request for `resource` (with its
    /// subresource, if any) by `operation`, as the API server matches a
    /// webhook's rules: `*` for any group, version, resource or operation;
    /// `pods/*` for every subresource of pods; `*/*` for everything.
    pub fn covers(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        subresource: Option<&str>,
        operation: &str,
    ) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        any(&self.api_groups, group)
            && any(&self.api_versions, version)
            && any(&self.operations, operation)
            && self.resources.iter().any(|r| {
                let (name, sub) = r
                    .split_once('/')
                    .map_or((r.as_str(), None), |(n, s)| (n, Some(s)));
                let name_matches = name == "*" || name == resource;
                match (sub, subresource) {
                    (None, None) => name_matches,
                    (Some("*"), _) => name_matches,
                    (Some(s), Some(requested)) => name_matches && s == requested,
                    _ => false,
                }
            })
    }

    /// Whether the rule names core-group pods: the pod convenience (pod
    /// templates of workloads, ephemeral containers) applies to it.
    pub fn names_pods(&self) -> bool {
        self.api_groups.iter().any(|g| g.is_empty()) && self.resources.iter().any(|r| r == "pods")
    }

    pub fn covers_operation(&self, operation: &str) -> bool {
        self.operations.iter().any(|o| o == "*" || o == operation)
    }
}

impl ComponentMetadata {
    /// The metadata in a component's bytes, or `None` when it has none. A
    /// section appended at the top level of the component (to annotate a
    /// component built by another toolchain) wins over one inside its
    /// core modules (where the SDK's compile-time section lands).
    pub fn read(bytes: &[u8]) -> Result<Option<ComponentMetadata>, String> {
        let mut top = None;
        let mut nested = None;
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| format!("cannot parse the component: {e}"))?;
            match payload {
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::CustomSection(section) if section.name() == SECTION => {
                    let slot = if depth == 0 { &mut top } else { &mut nested };
                    slot.get_or_insert(section.data().to_vec());
                }
                _ => {}
            }
        }
        let Some(data) = top.or(nested) else {
            return Ok(None);
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| format!("its {SECTION} section is not valid metadata: {e}"))
    }
}
