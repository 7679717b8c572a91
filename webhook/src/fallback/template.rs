//! The CEL of the built-in policies, kept as data in `cel/`: one file per
//! policy (and per Pod Security Standards level), written and tested against
//! the API server as YAML; the format is described in `cel/common.yaml`.
//! Here they are read and their placeholders filled with a set's settings.

use super::cel;
use k8s_openapi::api::admissionregistration::v1::{MatchCondition, Mutation, Validation, Variable};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The variables every policy starts with: the pod and its containers,
/// whatever kind carries them.
const COMMON: &str = include_str!("cel/common.yaml");

/// What every mutation adds to them: JSON Patch paths by kind.
const MUTATION_COMMON: &str = include_str!("cel/mutations/common.yaml");

/// A policy's validation and mutation files, by its name.
macro_rules! cel {
    ($name:literal) => {
        (
            &[include_str!(concat!("cel/", $name, ".yaml"))] as &[&str],
            include_str!(concat!("cel/mutations/", $name, ".yaml")),
        )
    };
}

/// The CEL files of one built-in policy, by its name in the component.
/// `pod-security` is chosen by level: restricted adds to baseline.
fn files(policy: &str, settings: &Map<String, Value>) -> Option<Files> {
    let (validations, mutations) = match policy {
        "run-as-non-root" => cel!("run-as-non-root"),
        "readonly-root-filesystem" => cel!("readonly-root-filesystem"),
        "drop-capabilities" => cel!("drop-capabilities"),
        "service-account-token" => cel!("service-account-token"),
        "workload-isolation" => cel!("workload-isolation"),
        "pod-security" => {
            const BASELINE: &str = include_str!("cel/pod-security-baseline.yaml");
            const RESTRICTED: &str = include_str!("cel/pod-security-restricted.yaml");
            let levels: &[&str] = match settings.get("level").and_then(Value::as_str) {
                Some("baseline") => &[BASELINE],
                _ => &[BASELINE, RESTRICTED],
            };
            (levels, include_str!("cel/mutations/pod-security.yaml"))
        }
        _ => return None,
    };
    Some(Files {
        validations,
        mutations,
    })
}

struct Files {
    validations: &'static [&'static str],
    mutations: &'static str,
}

/// One file of `cel/`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    /// The policy's settings when the set names none (its `Default`).
    #[serde(default)]
    defaults: Map<String, Value>,
    #[serde(default)]
    variables: Vec<Variable>,
    #[serde(default)]
    match_conditions: Vec<MatchCondition>,
    #[serde(default)]
    validations: Vec<Validation>,
    #[serde(default)]
    mutations: Vec<Mutation>,
}

/// A built-in policy in CEL, with a set's settings filled in.
#[derive(Debug, Default)]
pub struct Translation {
    pub variables: Vec<Variable>,
    pub match_conditions: Vec<MatchCondition>,
    pub validations: Vec<Validation>,
    /// The variables the mutations use (the common ones and their own).
    pub mutation_variables: Vec<Variable>,
    pub mutations: Vec<Mutation>,
}

/// The CEL of built-in policy `policy` with `settings` (JSON, as the set
/// gives them; empty for the defaults). `None` for a policy the built-in
/// component does not have.
pub fn translate(policy: &str, settings: &str) -> Option<Result<Translation, String>> {
    let given = match settings.trim() {
        "" | "null" => Map::new(),
        json => match serde_json::from_str(json) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Some(Err("the settings are not a mapping".into())),
            Err(e) => return Some(Err(format!("the settings are not JSON: {e}"))),
        },
    };
    let files = files(policy, &given)?;
    Some(render(&files, given))
}

fn render(files: &Files, given: Map<String, Value>) -> Result<Translation, String> {
    let common = parse(COMMON)?;
    let validations = files
        .validations
        .iter()
        .map(|text| parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let mutations = parse(files.mutations)?;
    let mut settings = Map::new();
    for file in validations.iter().chain([&mutations]) {
        settings.extend(file.defaults.clone());
    }
    settings.extend(given);
    let fill = |text: &str| fill(text, &settings);

    let mut out = Translation::default();
    for variable in &common.variables {
        let variable = variable_with(variable, fill)?;
        out.variables.push(variable.clone());
        out.mutation_variables.push(variable);
    }
    for file in &validations {
        for variable in &file.variables {
            out.variables.push(variable_with(variable, fill)?);
        }
        for condition in &file.match_conditions {
            out.match_conditions.push(MatchCondition {
                name: condition.name.clone(),
                expression: fill(&condition.expression)?,
            });
        }
        for validation in &file.validations {
            out.validations.push(Validation {
                expression: fill(&validation.expression)?,
                message_expression: validation
                    .message_expression
                    .as_deref()
                    .map(fill)
                    .transpose()?,
                ..validation.clone()
            });
        }
    }
    for variable in parse(MUTATION_COMMON)?
        .variables
        .iter()
        .chain(&mutations.variables)
    {
        out.mutation_variables.push(variable_with(variable, fill)?);
    }
    for mutation in &mutations.mutations {
        let mut mutation = mutation.clone();
        if let Some(patch) = mutation.json_patch.as_mut() {
            patch.expression = patch.expression.as_deref().map(fill).transpose()?;
        }
        if let Some(apply) = mutation.apply_configuration.as_mut() {
            apply.expression = apply.expression.as_deref().map(fill).transpose()?;
        }
        out.mutations.push(mutation);
    }
    Ok(out)
}

fn parse(text: &str) -> Result<File, String> {
    serde_saphyr::from_str(text).map_err(|e| format!("a built-in CEL file is invalid: {e}"))
}

fn variable_with(
    variable: &Variable,
    fill: impl Fn(&str) -> Result<String, String>,
) -> Result<Variable, String> {
    Ok(Variable {
        name: variable.name.clone(),
        expression: fill(&variable.expression)?,
    })
}

/// `text` with each `{{name}}` replaced by the setting's CEL literal and
/// each `{{selector name}}` by the condition that `variables.labels`
/// match the selector in setting `name`.
fn fill(text: &str, settings: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("an unclosed placeholder in {text:?}"))?;
        let placeholder = after[..end].trim();
        let setting = |name: &str| {
            settings
                .get(name)
                .ok_or_else(|| format!("no setting {name:?} for the placeholder in {text:?}"))
        };
        match placeholder.strip_prefix("selector ") {
            Some(name) => {
                let selector: LabelSelector = serde_json::from_value(setting(name.trim())?.clone())
                    .map_err(|e| format!("setting {name:?} is not a label selector: {e}"))?;
                out.push_str(&cel::selector(&selector, "variables.labels"));
            }
            None => out.push_str(&cel::literal(setting(placeholder)?)),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_take_the_sets_settings_over_the_defaults() {
        let settings = json!({"user": 7, "sel": {"matchLabels": {"a": "b"}}});
        let filled = fill(
            "x == {{user}} && {{ selector sel }}",
            settings.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(
            filled,
            "x == 7 && (('a' in variables.labels && variables.labels['a'] == 'b'))"
        );
        let unknown = fill("{{nope}}", settings.as_object().unwrap()).unwrap_err();
        assert!(unknown.contains("no setting \"nope\""), "{unknown}");
    }

    /// Every built-in policy renders with its defaults and with the
    /// built-in set's settings: no file is malformed, no placeholder
    /// names a setting the defaults lack.
    #[test]
    fn every_built_in_policy_renders() {
        for policy in [
            "run-as-non-root",
            "readonly-root-filesystem",
            "drop-capabilities",
            "service-account-token",
            "workload-isolation",
            "pod-security",
        ] {
            let t = translate(policy, "").unwrap().unwrap();
            assert!(!t.validations.is_empty(), "{policy}");
            assert!(!t.mutations.is_empty(), "{policy}");
        }
        assert!(translate("no-such-policy", "").is_none());
        let baseline = translate("pod-security", r#"{"level":"baseline"}"#)
            .unwrap()
            .unwrap();
        let restricted = translate("pod-security", "").unwrap().unwrap();
        assert!(baseline.validations.len() < restricted.validations.len());
    }
}
