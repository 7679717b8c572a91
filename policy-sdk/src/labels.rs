use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Whether `labels` match `selector`, with the semantics of Kubernetes'
/// `metav1.LabelSelector`: every `matchLabels` pair and every
/// `matchExpressions` requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`)
/// must hold; an empty selector matches everything.
///
/// An unknown operator matches nothing, so a typo never widens a selection.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    let pairs = selector.match_labels.iter().flatten();
    let exprs = selector.match_expressions.iter().flatten();
    pairs.into_iter().all(|(k, v)| get(k) == Some(v))
        && exprs.into_iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            match (e.operator.as_str(), get(&e.key)) {
                ("In", Some(v)) => values.contains(v),
                ("In", None) => false,
                ("NotIn", v) => v.is_none_or(|v| !values.contains(v)),
                ("Exists", v) => v.is_some(),
                ("DoesNotExist", v) => v.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions_all_must_hold() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("agyn.io/role", "agent")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["a", "b"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("env", "NotIn", &["prod"]),
            ]),
        };
        let agent = labels(&[("agyn.io/role", "agent"), ("tier", "a")]);
        assert!(selector_matches(&selector, Some(&agent)));
        let prod = labels(&[("agyn.io/role", "agent"), ("tier", "a"), ("env", "prod")]);
        assert!(!selector_matches(&selector, Some(&prod)));
        let legacy = labels(&[("agyn.io/role", "agent"), ("tier", "b"), ("legacy", "")]);
        assert!(!selector_matches(&selector, Some(&legacy)));
        assert!(!selector_matches(&selector, None));
    }

    #[test]
    fn empty_selector_matches_all_and_unknown_operator_none() {
        assert!(selector_matches(&LabelSelector::default(), None));
        let typo = LabelSelector {
            match_expressions: Some(vec![expr("a", "in", &["x"])]),
            ..LabelSelector::default()
        };
        assert!(!selector_matches(&typo, Some(&labels(&[("a", "x")]))));
    }
}
