//! Printing `check` results: a table for people, JSON for scripts, JUnit
//! for CI test reports, SARIF for code scanning, or the manifests as the
//! mutating webhook would leave them.

use super::manifests::Origin;
use crate::admission::{Decision, PolicyOutcome, Violation};
use crate::config::{FailurePolicy, PolicySet};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{self, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per object, then its violations.
    Table,
    /// One JSON document: a list of results.
    Json,
    /// JUnit XML: one test case per object.
    Junit,
    /// SARIF 2.1.0: one result per violation, for code scanning.
    Sarif,
    /// The objects with every mutation applied, as a YAML stream.
    Manifests,
}

/// What `check` found about one object.
#[derive(Debug, Serialize)]
pub struct CheckResult {
    #[serde(serialize_with = "display")]
    pub source: Origin,
    /// The line of its file the object starts on.
    pub line: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub violations: Vec<Violation>,
    pub warnings: Vec<Violation>,
    pub audit: Vec<Violation>,
    pub patch: json_patch::Patch,
    /// The object after mutation.
    #[serde(skip)]
    pub object: Value,
}

fn display<S: serde::Serializer>(origin: &Origin, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(origin)
}

impl CheckResult {
    pub fn new(source: Origin, kind: String, namespace: String, name: String) -> Self {
        CheckResult {
            line: source.line,
            source,
            kind,
            namespace,
            name,
            allowed: true,
            skipped: None,
            violations: vec![],
            warnings: vec![],
            audit: vec![],
            patch: json_patch::Patch::default(),
            object: Value::Null,
        }
    }

    pub fn record(&mut self, decision: Decision, object: Value) {
        self.allowed = decision.allowed();
        self.violations = decision.violations();
        self.warnings = decision.warnings();
        // A policy that fails under `failurePolicy: Ignore` admits the
        // object as if it were not there, and the webhook says nothing of
        // it: a dry run is where to find out.
        self.warnings
            .extend(decision.results.iter().filter_map(|r| match &r.outcome {
                PolicyOutcome::Failed(e) if r.failure_policy == FailurePolicy::Ignore => {
                    Some(Violation {
                        policy: r.policy.clone(),
                        message: format!(
                            "the policy failed (failurePolicy: Ignore, so it was left out): it {e}"
                        ),
                    })
                }
                _ => None,
            }));
        self.audit = decision.audit();
        self.skipped = decision.skipped;
        self.patch = decision.patch;
        self.object = object;
    }

    fn title(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The messages that do not deny, marked as the table marks them.
    fn notes(&self) -> impl Iterator<Item = (&'static str, &Violation)> {
        let warnings = self.warnings.iter().map(|v| ("warn", v));
        warnings.chain(self.audit.iter().map(|v| ("audit", v)))
    }

    /// Where the table and JUnit point: the source, and in a file of
    /// several documents the line the object starts on.
    fn place(&self) -> String {
        if self.source.one_of_several {
            format!("{}, line {}", self.source, self.line)
        } else {
            self.source.to_string()
        }
    }
}

pub fn write(
    out: &mut impl Write,
    format: Format,
    show_patch: bool,
    results: &[CheckResult],
    set: &PolicySet,
) -> io::Result<()> {
    match format {
        Format::Table => table(out, show_patch, results),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, results)?;
            writeln!(out)
        }
        Format::Junit => junit(out, results),
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif(results, set))?;
            writeln!(out)
        }
        Format::Manifests => {
            for r in results {
                let yaml = serde_saphyr::to_string(&r.object).map_err(io::Error::other)?;
                write!(out, "---\n{yaml}")?;
            }
            Ok(())
        }
    }
}

fn table(out: &mut impl Write, show_patch: bool, results: &[CheckResult]) -> io::Result<()> {
    let (mut admitted, mut denied, mut skipped) = (0, 0, 0);
    for r in results {
        let verdict = match (&r.skipped, r.allowed) {
            (Some(_), _) => {
                skipped += 1;
                "SKIPPED"
            }
            (None, true) => {
                admitted += 1;
                "ADMITTED"
            }
            (None, false) => {
                denied += 1;
                "DENIED"
            }
        };
        let mut note = String::new();
        if let Some(reason) = &r.skipped {
            note = format!(" ({reason})");
        } else if !r.patch.0.is_empty() {
            note = format!(" (mutated: {} patch operations)", r.patch.0.len());
        }
        writeln!(out, "{verdict:<9}{}  {}{note}", r.title(), r.place())?;
        let denials = r.violations.iter().map(|v| ("deny", v));
        for (mark, v) in denials.chain(r.notes()) {
            writeln!(out, "  {mark:<6}{}: {}", v.policy, v.message)?;
        }
        if show_patch && !r.patch.0.is_empty() {
            writeln!(out, "  patch: {}", serde_json::to_string(&r.patch)?)?;
        }
    }
    writeln!(
        out,
        "{admitted} admitted, {denied} denied, {skipped} skipped"
    )
}

fn junit(out: &mut impl Write, results: &[CheckResult]) -> io::Result<()> {
    let failures = results.iter().filter(|r| !r.allowed).count();
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites><testsuite name="agyn-admission check" tests="{}" failures="{failures}" skipped="{skipped}">"#,
        results.len()
    )?;
    for r in results {
        // `file` and `line` are the attributes CI test reports link from.
        write!(
            out,
            r#"<testcase classname="{}" name="{}" file="{}" line="{}">"#,
            xml(&r.source.to_string()),
            xml(&r.title()),
            xml(&r.source.file),
            r.line
        )?;
        if let Some(reason) = &r.skipped {
            write!(out, r#"<skipped message="{}"/>"#, xml(reason))?;
        } else if !r.allowed {
            let text: Vec<String> = r
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.policy, v.message))
                .collect();
            write!(
                out,
                r#"<failure message="denied by {} violation(s)">{}</failure>"#,
                r.violations.len(),
                xml(&text.join("\n"))
            )?;
        }
        let notes: Vec<String> = r
            .notes()
            .map(|(mark, v)| format!("{mark} {}: {}", v.policy, v.message))
            .collect();
        if !notes.is_empty() {
            write!(out, "<system-out>{}</system-out>", xml(&notes.join("\n")))?;
        }
        writeln!(out, "</testcase>")?;
    }
    writeln!(out, "</testsuite></testsuites>")
}

pub(super) fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn sarif(results: &[CheckResult], set: &PolicySet) -> Value {
    let mut rules: Vec<&str> = results
        .iter()
        .flat_map(|r| r.violations.iter().chain(&r.warnings).chain(&r.audit))
        .map(|v| v.policy.as_str())
        .collect();
    rules.sort_unstable();
    rules.dedup();
    let findings: Vec<Value> = results
        .iter()
        .flat_map(|r| {
            let level = |list: &'static str| match list {
                "violations" => "error",
                "warnings" => "warning",
                _ => "note",
            };
            [
                ("violations", &r.violations),
                ("warnings", &r.warnings),
                ("audit", &r.audit),
            ]
            .into_iter()
            .flat_map(move |(list, items)| {
                items.iter().map(move |v| {
                    json!({
                        "ruleId": v.policy,
                        "level": level(list),
                        "message": {"text": format!("{}: {}", r.title(), v.message)},
                        "locations": [{"physicalLocation": {
                            "artifactLocation": {"uri": r.source.file},
                            "region": {"startLine": r.line},
                        }}],
                    })
                })
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "agyn-admission",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|id| rule(id, set)).collect::<Vec<_>>(),
            }},
            "results": findings,
        }],
    })
}

/// A SARIF rule: a policy of the set, by its name, with what its
/// component's metadata says of it.
fn rule(policy: &str, set: &PolicySet) -> Value {
    let metadata = set
        .policies
        .iter()
        .find(|p| p.name == policy)
        .and_then(|p| set.metadata(p));
    match metadata {
        Some(m) if !m.description.is_empty() => json!({
            "id": policy,
            "shortDescription": {"text": m.description},
            "properties": {"category": m.category, "severity": m.severity.as_str()},
        }),
        _ => json!({"id": policy}),
    }
}
