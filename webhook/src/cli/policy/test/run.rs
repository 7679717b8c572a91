//! One test through the engine, and how what came differs from what the
//! test expects.

use super::file::{Case, Expect};
use crate::admission::{self, Decision, PolicyOutcome};
use crate::config::PolicySet;
use serde_json::Value;

/// What a policy made of a test's request.
enum Observed {
    /// A verdict, and the object once patched.
    Verdict { decision: Decision, object: Value },
    /// No verdict, and why.
    Error(String),
}

/// Runs a test as the webhook would run its policy: a set of that one
/// policy, mutation then validation. Returns how the outcome differs from
/// the expected one, a paragraph per difference: none when the test passes.
pub fn run(case: &Case) -> Vec<String> {
    compare(&case.expect, &observe(case))
}

fn observe(case: &Case) -> Observed {
    let set = match PolicySet::single(
        case.component.clone(),
        &case.policy,
        case.settings.clone(),
        case.mutate,
    ) {
        Ok(set) => set,
        Err(refusal) => {
            return Observed::Error(match case.settings_line {
                Some(line) => format!("the policy refused its settings (line {line}): {refusal}"),
                None => format!("the policy refused to run without settings: {refusal}"),
            });
        }
    };
    let decision = match admission::review(&set, &case.request) {
        Ok(decision) => decision,
        Err(e) => return Observed::Error(format!("the request cannot be reviewed: {e}")),
    };
    // The set fails closed, so a failure would read as a denial; a test
    // tells the two apart.
    let failure = decision.results.iter().find_map(|r| match &r.outcome {
        PolicyOutcome::Failed(e) => Some(e),
        _ => None,
    });
    if let Some(e) = failure {
        return Observed::Error(format!("the policy failed: it {e}"));
    }
    let mut object = case.object.clone();
    if let Err(e) = json_patch::patch(&mut object, &decision.patch) {
        return Observed::Error(format!("the patch does not apply to the object: {e}"));
    }
    Observed::Verdict { decision, object }
}

fn compare(expect: &Expect, observed: &Observed) -> Vec<String> {
    let (decision, object) = match (observed, &expect.error) {
        (Observed::Error(error), Some(expected)) if error.contains(expected.as_str()) => {
            return vec![];
        }
        (Observed::Error(error), Some(expected)) => {
            return vec![format!(
                "error: expected one containing {expected:?}\n  got: {error}"
            )];
        }
        (Observed::Error(error), None) => return vec![format!("no verdict: {error}")],
        (Observed::Verdict { decision, .. }, Some(expected)) => {
            return vec![format!(
                "error: expected one containing {expected:?}\n  got a verdict: {}",
                summary(decision)
            )];
        }
        (Observed::Verdict { decision, object }, None) => (decision, object),
    };

    match (&decision.skipped, expect.skipped) {
        // Nothing else can be told of a review the policy was not part of.
        (Some(_), Some(true)) => return vec![],
        (Some(reason), _) => {
            return vec![format!("the policy did not judge the request: {reason}")];
        }
        (None, Some(true)) => {
            return vec![format!(
                "skipped: expected the policy not to judge the request\n  got a verdict: {}",
                summary(decision)
            )];
        }
        (None, _) => {}
    }

    let mut differences = Vec::new();
    let denials: Vec<String> = decision
        .violations()
        .into_iter()
        .map(|v| v.message)
        .collect();
    let warnings: Vec<String> = decision.warnings().into_iter().map(|v| v.message).collect();
    if let Some(allowed) = expect.allowed
        && allowed != decision.allowed()
    {
        let mut difference = format!("allowed: expected {allowed}, got {}", !allowed);
        if !denials.is_empty() && expect.messages.is_none() {
            difference += &format!("\n  the denial messages:{}", list(&denials));
        }
        differences.push(difference);
    }
    if let Some(expected) = &expect.messages {
        differences.extend(messages(
            "messages",
            "the denial messages",
            expected,
            expect.messages_exactly,
            &denials,
        ));
    }
    if let Some(expected) = &expect.warnings {
        differences.extend(messages(
            "warnings",
            "the warnings",
            expected,
            expect.warnings_exactly,
            &warnings,
        ));
    }
    if let Some(expected) = &expect.patch
        && *expected != decision.patch
    {
        differences.push(format!(
            "patch: not the expected one\n  expected:{}\n  got:{}",
            operations(expected),
            operations(&decision.patch)
        ));
    }
    if let Some(expected) = &expect.object
        && expected != object
    {
        differences.push(format!(
            "object: not the expected one; from the expected to the admitted object:{}",
            operations(&json_patch::diff(expected, object))
        ));
    }
    differences
}

/// `expected` against `got`: each must be among them, or they must be
/// exactly them.
fn messages(
    field: &str,
    what: &str,
    expected: &[String],
    exactly: bool,
    got: &[String],
) -> Option<String> {
    if exactly {
        return (expected != got).then(|| {
            format!(
                "{field}: not exactly the expected ones\n  expected:{}\n  {what}:{}",
                list(expected),
                list(got)
            )
        });
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|m| !got.contains(m))
        .cloned()
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{field}: not among {what}:{}\n  {what}:{}",
            list(&missing),
            list(got)
        )
    })
}

/// A verdict in a line: allowed or denied, and with what.
fn summary(decision: &Decision) -> String {
    if let Some(reason) = &decision.skipped {
        return format!("skipped ({reason})");
    }
    let denials: Vec<String> = decision
        .violations()
        .into_iter()
        .map(|v| format!("{:?}", v.message))
        .collect();
    let mut summary = match denials.is_empty() {
        true => "allowed".to_string(),
        false => format!("denied: {}", denials.join(", ")),
    };
    if !decision.patch.0.is_empty() {
        summary += &format!(
            "; patch: {}",
            serde_json::to_string(&decision.patch).expect("a patch serialises")
        );
    }
    summary
}

/// Messages one per line, indented, as they are.
fn list(messages: &[String]) -> String {
    match messages {
        [] => "\n    (none)".into(),
        messages => messages.iter().map(|m| format!("\n    {m}")).collect(),
    }
}

/// A patch's operations one per line, as JSON.
fn operations(patch: &json_patch::Patch) -> String {
    let lines: Vec<String> = patch
        .0
        .iter()
        .map(|op| serde_json::to_string(op).expect("a patch operation serialises"))
        .collect();
    list(&lines)
}
