//! Settings as CEL: literals for values, conditions for label selectors.
//! The generated policies carry their settings in the expressions (no
//! `paramKind`), so these are the only way a setting reaches the API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// `value` as a CEL literal: `'text'`, `65532`, `['A', 'B']`, `{'k': 1}`.
/// The API server refuses a list or map literal whose elements differ in
/// type, so those elements are wrapped in `dyn()`.
pub fn literal(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(items) => {
            let mixed = mixed(items.iter());
            let items: Vec<String> = items.iter().map(|v| element(v, mixed)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let mixed = mixed(map.values());
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", string(k), element(v, mixed)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

fn element(value: &Value, mixed: bool) -> String {
    match mixed {
        true => format!("dyn({})", literal(value)),
        false => literal(value),
    }
}

/// Whether CEL would type `values` differently: by JSON type, with
/// integers apart from doubles, and nested lists and maps always apart
/// (their element types may differ).
fn mixed<'a>(mut values: impl Iterator<Item = &'a Value>) -> bool {
    fn kind(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(n) if n.is_i64() || n.is_u64() => 2,
            Value::Number(_) => 3,
            Value::String(_) => 4,
            Value::Array(_) | Value::Object(_) => 5,
        }
    }
    let Some(first) = values.next() else {
        return false;
    };
    let first = kind(first);
    first == 5 || values.any(|v| kind(v) != first)
}

/// A CEL string literal. Everything but printable characters is escaped,
/// so a setting can never end the literal or the expression.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL condition, true when the map of labels `labels` (an expression)
/// matches `selector`, with Kubernetes' semantics as the webhook applies
/// them: every pair and requirement must hold, `NotIn` holds for an absent
/// key, an empty selector matches everything, an unknown operator nothing.
pub fn selector(selector: &LabelSelector, labels: &str) -> String {
    let has = |key: &str| format!("{} in {labels}", string(key));
    let get = |key: &str| format!("{labels}[{}]", string(key));
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("({} && {} == {})", has(k), get(k), string(v)))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = literal(&Value::from(e.values.clone().unwrap_or_default()));
        terms.push(match e.operator.as_str() {
            "In" => format!("({} && {} in {values})", has(&e.key), get(&e.key)),
            "NotIn" => format!("(!({}) || !({} in {values}))", has(&e.key), get(&e.key)),
            "Exists" => format!("({})", has(&e.key)),
            "DoesNotExist" => format!("!({})", has(&e.key)),
            _ => "false".into(),
        });
    }
    if terms.is_empty() {
        "true".into()
    } else {
        format!("({})", terms.join(" && "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literals_of_every_json_type() {
        let value = json!({"a": [1, "x", true, null], "b": {"c": 2.5}});
        assert_eq!(
            literal(&value),
            "{'a': dyn([dyn(1), dyn('x'), dyn(true), dyn(null)]), 'b': dyn({'c': 2.5})}"
        );
        assert_eq!(literal(&json!(["A", "B"])), "['A', 'B']");
        assert_eq!(literal(&json!({"x": ["A"]})), "{'x': dyn(['A'])}");
    }

    #[test]
    fn strings_cannot_escape_their_literal() {
        assert_eq!(string(r"it's \ a"), r"'it\'s \\ a'");
        assert_eq!(string("a\nb\"c"), r#"'a\u000ab\"c'"#);
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"role": "agent"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["prod"]},
                {"key": "x", "operator": "Bogus"},
            ],
        }))
        .unwrap();
        assert_eq!(
            super::selector(&selector, "l"),
            "(('role' in l && l['role'] == 'agent') && (!('tier' in l) || !(l['tier'] in ['prod'])) && false)"
        );
        assert_eq!(super::selector(&LabelSelector::default(), "l"), "true");
    }
}
