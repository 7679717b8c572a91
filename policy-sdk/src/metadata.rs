//! What a policy says about itself, embedded in its component as the custom
//! section [`SECTION`] so that the host reads it without running the
//! component: which requests the policy judges, whether it mutates, its
//! settings' JSON Schema, and its description, category and severity for
//! reports.
//!
//! The section is JSON, written at compile time by [`encode`] from the
//! policies' constants (the format is in docs/policy-authors.md):
//!
//! ```json
//! {"policies": [{"name": "no-latest-tag", "description": "…",
//!   "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
//!              "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}],
//!   "mutating": false, "settingsSchema": null,
//!   "category": "Supply chain", "severity": "medium"}]}
//! ```

use crate::Entry;
use serde::{Deserialize, Serialize};

/// The name of the custom section that carries a component's metadata.
pub const SECTION: &str = "agyn.policy.metadata";

/// An admission operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    #[default]
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`, as Kubernetes spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Requests a policy judges, in the terms of a webhook's `rules`: API groups
/// (`""` is the core group), versions, resources (`pods`, `services`,
/// `pods/ephemeralcontainers`; `*` for all) and operations.
///
/// A rule on `pods` also brings the pod templates of the workload kinds
/// (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
/// Job, CronJob) as Pods, and the `pods/ephemeralcontainers` subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: &'static [&'static str],
    pub api_versions: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub operations: &'static [Operation],
}

/// How much a violation matters, for reports (the levels of policy reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Severity {
    Info,
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One policy's metadata, from its [`Policy`](crate::Policy) constants.
#[derive(Clone, Copy, Debug)]
pub struct Metadata {
    pub name: &'static str,
    pub description: &'static str,
    pub rules: &'static [Rule],
    pub mutating: bool,
    /// A JSON Schema of the settings, as JSON text; `""` for none.
    pub settings_schema: &'static str,
    pub category: &'static str,
    pub severity: Severity,
}

/// The length of [`encode`]'s output for these policies.
pub const fn encoded_len(entries: &[Entry]) -> usize {
    let mut out = Writer::<0>::new();
    write(&mut out, entries);
    out.len
}

/// The section's JSON for these policies, at compile time. `N` must be
/// [`encoded_len`]; a policy's `SETTINGS_SCHEMA` is copied as it is (the
/// host refuses a section that is not JSON, naming the policy).
pub const fn encode<const N: usize>(entries: &[Entry]) -> [u8; N] {
    let mut out = Writer::<N>::new();
    write(&mut out, entries);
    assert!(out.len == N, "encode::<N> needs N == encoded_len()");
    out.buf
}

/// Writes into a fixed buffer; with `N == 0` it only counts, which gives
/// the length of the buffer to write into.
struct Writer<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Writer<N> {
    const fn new() -> Self {
        Writer {
            buf: [0; N],
            len: 0,
        }
    }

    const fn byte(&mut self, b: u8) {
        if self.len < N {
            self.buf[self.len] = b;
        }
        self.len += 1;
    }

    const fn raw(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            self.byte(bytes[i]);
            i += 1;
        }
    }

    /// A JSON string: quotes, backslashes and control characters escaped;
    /// the rest of UTF-8 is valid JSON as it is.
    const fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.byte(b'"');
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'"' || b == b'\\' {
                self.byte(b'\\');
                self.byte(b);
            } else if b < 0x20 {
                self.raw("\\u00");
                self.byte(HEX[(b >> 4) as usize]);
                self.byte(HEX[(b & 0xf) as usize]);
            } else {
                self.byte(b);
            }
            i += 1;
        }
        self.byte(b'"');
    }

    const fn strings(&mut self, list: &[&str]) {
        self.byte(b'[');
        let mut i = 0;
        while i < list.len() {
            if i > 0 {
                self.byte(b',');
            }
            self.string(list[i]);
            i += 1;
        }
        self.byte(b']');
    }
}

const fn write<const N: usize>(out: &mut Writer<N>, entries: &[Entry]) {
    out.raw("{\"policies\":[");
    let mut i = 0;
    while i < entries.len() {
        if i > 0 {
            out.byte(b',');
        }
        policy(out, &entries[i].metadata);
        i += 1;
    }
    out.raw("]}");
}

const fn policy<const N: usize>(out: &mut Writer<N>, m: &Metadata) {
    out.raw("{\"name\":");
    out.string(m.name);
    out.raw(",\"description\":");
    out.string(m.description);
    out.raw(",\"rules\":[");
    let mut i = 0;
    while i < m.rules.len() {
        if i > 0 {
            out.byte(b',');
        }
        let rule = &m.rules[i];
        out.raw("{\"apiGroups\":");
        out.strings(rule.api_groups);
        out.raw(",\"apiVersions\":");
        out.strings(rule.api_versions);
        out.raw(",\"resources\":");
        out.strings(rule.resources);
        out.raw(",\"operations\":[");
        let mut j = 0;
        while j < rule.operations.len() {
            if j > 0 {
                out.byte(b',');
            }
            out.string(rule.operations[j].as_str());
            j += 1;
        }
        out.raw("]}");
        i += 1;
    }
    out.raw("],\"mutating\":");
    out.raw(if m.mutating { "true" } else { "false" });
    out.raw(",\"settingsSchema\":");
    out.raw(if m.settings_schema.is_empty() {
        "null"
    } else {
        m.settings_schema
    });
    out.raw(",\"category\":");
    out.string(m.category);
    out.raw(",\"severity\":");
    out.string(m.severity.as_str());
    out.byte(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Outcome, Policy, Request, entry};
    use k8s_openapi::api::core::v1::Service;

    struct Quoted;
    impl Policy for Quoted {
        const NAME: &'static str = "quoted";
        const DESCRIPTION: &'static str = "Says \"no\" \\ to\ttabs";
        const SETTINGS_SCHEMA: &'static str = r#"{"type":"object"}"#;
        const SEVERITY: Severity = Severity::High;
        type Object = Service;
        type Settings = ();
        fn validate(_: &Request, _: &Service, _: &()) -> Outcome {
            Outcome::default()
        }
    }

    const ENTRIES: &[Entry] = &[entry::<Quoted>()];
    const LEN: usize = encoded_len(ENTRIES);
    static SECTION_BYTES: [u8; LEN] = encode::<LEN>(ENTRIES);

    #[test]
    fn the_section_is_json_with_the_object_types_rules() {
        let json: serde_json::Value = serde_json::from_slice(&SECTION_BYTES).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"policies": [{
                "name": "quoted",
                "description": "Says \"no\" \\ to\ttabs",
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["services"], "operations": ["CREATE", "UPDATE"]}],
                "mutating": false,
                "settingsSchema": {"type": "object"},
                "category": "",
                "severity": "high",
            }]})
        );
    }
}
