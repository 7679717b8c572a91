//! The guest side of `evaluate` in `wit/policy.wit`, as plain Rust so that
//! it is tested natively and the WASM export is a thin shim.

use crate::{Outcome, Policy, Request};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// One policy to run, as the host asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub policy: String,
    pub settings: String,
    pub mutate: bool,
}

/// What one policy said about the final object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub warnings: Vec<String>,
    /// The policy changed the object in the mutation phase.
    pub mutated: bool,
}

/// The outcome of one `evaluate` call: a verdict or an error per call, and
/// the object after mutation when it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub verdicts: Vec<Result<Verdict, String>>,
    pub mutated_object: Option<String>,
}

type MutateFn = fn(&str, &Request, &mut Pod) -> Result<bool, String>;
type ValidateFn = fn(&str, &Request, &Pod) -> Result<Outcome, String>;

/// A policy with its type erased, so that one component can dispatch to
/// several policies by name. Made by [`entry`].
#[derive(Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    validate_settings: fn(&str) -> Result<(), String>,
    mutate: MutateFn,
    validate: ValidateFn,
}

/// The [`Entry`] of a policy type.
pub const fn entry<P: Policy>() -> Entry {
    Entry {
        name: P::NAME,
        validate_settings: validate_settings::<P>,
        mutate: mutate::<P>,
        validate: validate::<P>,
    }
}

impl Entry {
    /// Parses and checks settings JSON (`""` and `null` mean the defaults).
    pub fn validate_settings(&self, settings: &str) -> Result<(), String> {
        (self.validate_settings)(settings)
    }
}

pub(crate) fn settings<P: Policy>(json: &str) -> Result<P::Settings, String> {
    match json.trim() {
        "" | "null" => Ok(P::Settings::default()),
        json => serde_json::from_str(json).map_err(|e| format!("invalid settings: {e}")),
    }
}

fn validate_settings<P: Policy>(json: &str) -> Result<(), String> {
    P::check_settings(&settings::<P>(json)?).map_err(|e| format!("invalid settings: {e}"))
}

fn mutate<P: Policy>(json: &str, request: &Request, pod: &mut Pod) -> Result<bool, String> {
    Ok(P::mutate(request, pod, &settings::<P>(json)?))
}

fn validate<P: Policy>(json: &str, request: &Request, pod: &Pod) -> Result<Outcome, String> {
    Ok(P::validate(request, pod, &settings::<P>(json)?))
}

/// Runs `calls` against the policies in `entries`: the mutation phase (calls
/// with `mutate`, in order, each on the previous result), then every call
/// validates the final pod.
pub fn evaluate(entries: &[Entry], request: &str, object: &str, calls: &[Call]) -> Evaluation {
    let parsed = serde_json::from_str::<Request>(request)
        .map_err(|e| format!("cannot read the AdmissionRequest: {e}"))
        .and_then(|r| {
            let pod = serde_json::from_str::<Pod>(object)
                .map_err(|e| format!("cannot read the object as a Pod: {e}"))?;
            Ok((r, pod))
        });
    let (request, mut pod) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            return Evaluation {
                verdicts: calls.iter().map(|_| Err(e.clone())).collect(),
                mutated_object: None,
            };
        }
    };
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("this component has no policy named {name:?}"))
    };

    let mut mutated = vec![false; calls.len()];
    let mut failed: Vec<Option<String>> = vec![None; calls.len()];
    for (i, call) in calls.iter().enumerate().filter(|(_, c)| c.mutate) {
        match find(&call.policy).and_then(|e| (e.mutate)(&call.settings, &request, &mut pod)) {
            Ok(changed) => mutated[i] = changed,
            Err(e) => failed[i] = Some(e),
        }
    }

    let verdicts = calls
        .iter()
        .zip(mutated.iter().zip(failed))
        .map(|(call, (&mutated, failed))| {
            if let Some(e) = failed {
                return Err(e);
            }
            let outcome =
                find(&call.policy).and_then(|e| (e.validate)(&call.settings, &request, &pod))?;
            Ok(Verdict {
                violations: outcome.violations,
                warnings: outcome.warnings,
                mutated,
            })
        })
        .collect();

    let mutated_object = mutated
        .contains(&true)
        .then(|| merge_into_raw(object, &pod));
    // In a component the instance is thrown away after this call, memory
    // and all: walking the parsed pod to free it is work for nothing.
    #[cfg(target_arch = "wasm32")]
    {
        std::mem::forget(pod);
        std::mem::forget(request);
    }
    Evaluation {
        verdicts,
        mutated_object,
    }
}

/// The submitted object with the policies' changes applied.
///
/// Typed `Pod`s drop fields they do not know (a newer Kubernetes, an
/// extension); serialising the mutated `Pod` as it is would make the host's
/// diff remove them. So the change is taken between the two typed forms and
/// applied to the object exactly as it was submitted.
///
/// The typed original is parsed again here rather than cloned before the
/// mutations: a clone costs as much as a parse, and most calls mutate
/// nothing.
fn merge_into_raw(raw: &str, mutated: &Pod) -> String {
    let to_value = |pod| serde_json::to_value(pod).unwrap_or(Value::Null);
    let original: Pod = serde_json::from_str(raw).unwrap_or_default();
    let patch = json_patch::diff(&to_value(&original), &to_value(mutated));
    let mut object: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    // Applying a diff of two serialisations of the same object to a superset
    // of the first cannot fail; if it ever did, the typed result is the
    // faithful fallback.
    match json_patch::patch(&mut object, &patch) {
        Ok(()) => object.to_string(),
        Err(_) => to_value(mutated).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    struct Labelled;
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct LabelSettings {
        #[serde(default)]
        value: Option<String>,
    }
    impl Policy for Labelled {
        const NAME: &'static str = "labelled";
        type Settings = LabelSettings;
        fn validate(_: &Request, pod: &Pod, s: &LabelSettings) -> Outcome {
            let mut out = Outcome::default();
            let labels = pod.metadata.labels.as_ref();
            if labels.and_then(|l| l.get("team")) != s.value.as_ref().or(Some(&"x".into())) {
                out.deny("label team missing");
            }
            out
        }
        fn mutate(_: &Request, pod: &mut Pod, s: &LabelSettings) -> bool {
            let labels = pod.metadata.labels.get_or_insert_with(Default::default);
            if labels.contains_key("team") {
                return false;
            }
            labels.insert("team".into(), s.value.clone().unwrap_or("x".into()));
            true
        }
    }

    const ENTRIES: &[Entry] = &[entry::<Labelled>()];
    const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","futureField":{"k":1}}]}}"#;

    fn call(mutate: bool) -> Call {
        Call {
            policy: "labelled".into(),
            settings: r#"{"value":"blue"}"#.into(),
            mutate,
        }
    }

    #[test]
    fn mutation_keeps_fields_the_typed_pod_does_not_know() {
        let eval = evaluate(ENTRIES, "{}", POD, &[call(true)]);
        assert_eq!(
            eval.verdicts,
            [Ok(Verdict {
                mutated: true,
                ..Verdict::default()
            })]
        );
        let object: Value = serde_json::from_str(eval.mutated_object.as_deref().unwrap()).unwrap();
        assert_eq!(object["metadata"]["labels"]["team"], "blue");
        assert_eq!(object["spec"]["containers"][0]["futureField"]["k"], 1);
    }

    #[test]
    fn validation_without_mutation_reports_and_changes_nothing() {
        let eval = evaluate(ENTRIES, "{}", POD, &[call(false)]);
        assert_eq!(eval.mutated_object, None);
        assert_eq!(
            eval.verdicts[0].as_ref().unwrap().violations,
            ["label team missing"]
        );
    }

    #[test]
    fn errors_are_per_call() {
        let bad_settings = Call {
            settings: r#"{"colour":"red"}"#.into(),
            ..call(true)
        };
        let unknown = Call {
            policy: "nope".into(),
            ..call(false)
        };
        let eval = evaluate(ENTRIES, "{}", POD, &[bad_settings, unknown, call(false)]);
        assert!(
            eval.verdicts[0]
                .as_ref()
                .unwrap_err()
                .starts_with("invalid settings: unknown field `colour`")
        );
        assert_eq!(
            eval.verdicts[1],
            Err("this component has no policy named \"nope\"".into())
        );
        assert!(eval.verdicts[2].is_ok());
    }

    #[test]
    fn an_unreadable_object_fails_every_call() {
        let eval = evaluate(ENTRIES, "{}", r#"{"spec": 3}"#, &[call(false), call(true)]);
        assert_eq!(eval.verdicts.len(), 2);
        for v in eval.verdicts {
            assert!(
                v.unwrap_err()
                    .starts_with("cannot read the object as a Pod")
            );
        }
    }
}
