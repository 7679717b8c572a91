//! The guest side of `evaluate` in `wit/policy.wit`, as plain Rust so that
//! it is tested natively and the WASM export is a thin shim.

use crate::metadata::Metadata;
use crate::{Object, Outcome, Policy, Request};
use serde_json::Value;
use std::any::{Any, TypeId};

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

/// A policy with its types erased, so that one component can dispatch to
/// several policies, over several object types, by name. Made by [`entry`].
#[derive(Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub metadata: Metadata,
    object: ObjectType,
    validate_settings: fn(&str) -> Result<(), String>,
    mutate: fn(&str, &Request, &mut dyn Any) -> Result<bool, String>,
    validate: fn(&str, &Request, &dyn Any) -> Result<Outcome, String>,
}

/// The object type of a policy, erased: how to parse it and how to put a
/// changed one back into the submitted JSON.
#[derive(Clone, Copy)]
struct ObjectType {
    id: fn() -> TypeId,
    parse: fn(&str) -> Result<Box<dyn Any>, String>,
    merge: fn(&str, &dyn Any) -> String,
}

impl ObjectType {
    const fn of<T: Object>() -> Self {
        ObjectType {
            id: TypeId::of::<T>,
            parse: |json| {
                serde_json::from_str::<T>(json)
                    .map(|o| Box::new(o) as Box<dyn Any>)
                    .map_err(|e| format!("cannot read the object as a {}: {e}", type_name::<T>()))
            },
            merge: |raw, object| merge_into_raw::<T>(raw, downcast(object)),
        }
    }
}

/// `Pod` for `k8s_openapi::api::core::v1::Pod`: how messages name a type.
fn type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

/// The entry's own object type: [`Evaluation`] parses for each entry the
/// type it asks for, so this cannot fail.
fn downcast<T: 'static>(object: &dyn Any) -> &T {
    object.downcast_ref().expect("parsed as the entry's type")
}

/// The [`Entry`] of a policy type.
pub const fn entry<P: Policy>() -> Entry {
    Entry {
        name: P::NAME,
        metadata: crate::metadata::<P>(),
        object: ObjectType::of::<P::Object>(),
        validate_settings: validate_settings::<P>,
        mutate: |settings, request, object| {
            let object = object.downcast_mut().expect("parsed as the entry's type");
            Ok(P::mutate(request, object, &settings_of::<P>(settings)?))
        },
        validate: |settings, request, object| {
            Ok(P::validate(
                request,
                downcast(object),
                &settings_of::<P>(settings)?,
            ))
        },
    }
}

impl Entry {
    /// Parses and checks settings JSON (`""` and `null` mean the defaults).
    pub fn validate_settings(&self, settings: &str) -> Result<(), String> {
        (self.validate_settings)(settings)
    }
}

pub(crate) fn settings_of<P: Policy>(json: &str) -> Result<P::Settings, String> {
    match json.trim() {
        "" | "null" => Ok(P::Settings::default()),
        json => serde_json::from_str(json).map_err(|e| format!("invalid settings: {e}")),
    }
}

fn validate_settings<P: Policy>(json: &str) -> Result<(), String> {
    P::check_settings(&settings_of::<P>(json)?).map_err(|e| format!("invalid settings: {e}"))
}

/// The object as the policies have left it so far: its JSON, and the typed
/// form the last policy used, which later policies of the same type share
/// (one parse for a whole bundle of pod policies).
struct Current<'a> {
    json: std::borrow::Cow<'a, str>,
    typed: Option<Typed>,
    changed: bool,
}

struct Typed {
    object: Box<dyn Any>,
    kind: ObjectType,
    /// The typed form differs from `json`.
    dirty: bool,
}

impl Current<'_> {
    /// The object as `kind`, parsed from the JSON unless the last policy
    /// used the same type; a changed object of another type is written
    /// back to the JSON first.
    fn get(&mut self, kind: ObjectType) -> Result<&mut Typed, String> {
        let same = self
            .typed
            .as_ref()
            .is_some_and(|t| (t.kind.id)() == (kind.id)());
        if !same {
            self.flush();
            let object = (kind.parse)(&self.json)?;
            self.typed = Some(Typed {
                object,
                kind,
                dirty: false,
            });
        }
        Ok(self.typed.as_mut().expect("set above"))
    }

    fn flush(&mut self) {
        if let Some(typed) = self.typed.as_mut().filter(|t| t.dirty) {
            self.json = (typed.kind.merge)(&self.json, typed.object.as_ref()).into();
            typed.dirty = false;
        }
    }
}

/// Runs `calls` against the policies in `entries`: the mutation phase (calls
/// with `mutate`, in order, each on the previous result), then every call
/// validates the final object. `old_object` is the object before an UPDATE.
pub fn evaluate(
    entries: &[Entry],
    request: &str,
    object: &str,
    old_object: Option<&str>,
    calls: &[Call],
) -> Evaluation {
    let mut request = match serde_json::from_str::<Request>(request) {
        Ok(request) => request,
        Err(e) => {
            let e = format!("cannot read the AdmissionRequest: {e}");
            return Evaluation {
                verdicts: calls.iter().map(|_| Err(e.clone())).collect(),
                mutated_object: None,
            };
        }
    };
    request.old_object = old_object.map(str::to_string);
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("this component has no policy named {name:?}"))
    };
    let mut current = Current {
        json: object.into(),
        typed: None,
        changed: false,
    };

    let mut mutated = vec![false; calls.len()];
    let mut failed: Vec<Option<String>> = vec![None; calls.len()];
    for (i, call) in calls.iter().enumerate().filter(|(_, c)| c.mutate) {
        let result = find(&call.policy).and_then(|entry| {
            let typed = current.get(entry.object)?;
            let changed = (entry.mutate)(&call.settings, &request, typed.object.as_mut())?;
            typed.dirty |= changed;
            Ok(changed)
        });
        match result {
            Ok(changed) => {
                mutated[i] = changed;
                current.changed |= changed;
            }
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
            let entry = find(&call.policy)?;
            let typed = current.get(entry.object)?;
            let outcome = (entry.validate)(&call.settings, &request, typed.object.as_ref())?;
            Ok(Verdict {
                violations: outcome.violations,
                warnings: outcome.warnings,
                mutated,
            })
        })
        .collect();

    current.flush();
    let mutated_object = current.changed.then(|| current.json.into_owned());
    // In a component the instance is thrown away after this call, memory
    // and all: walking the parsed object to free it is work for nothing.
    #[cfg(target_arch = "wasm32")]
    {
        std::mem::forget(current.typed);
        std::mem::forget(request);
    }
    Evaluation {
        verdicts,
        mutated_object,
    }
}

/// The submitted object with the policies' changes applied.
///
/// Typed objects drop fields they do not know (a newer Kubernetes, an
/// extension); serialising the mutated object as it is would make the
/// host's diff remove them. So the change is taken between the two typed
/// forms and applied to the object exactly as it was submitted.
///
/// The typed original is parsed again here rather than cloned before the
/// mutations: a clone costs as much as a parse, and most calls mutate
/// nothing.
fn merge_into_raw<T: Object>(raw: &str, mutated: &T) -> String {
    let to_value = |object: &T| serde_json::to_value(object).unwrap_or(Value::Null);
    let original = serde_json::from_str::<T>(raw).map(|o| to_value(&o));
    let patch = json_patch::diff(&original.unwrap_or(Value::Null), &to_value(mutated));
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
    use k8s_openapi::api::core::v1::Pod;

    struct Labelled;
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct LabelSettings {
        #[serde(default)]
        value: Option<String>,
    }
    impl Policy for Labelled {
        const NAME: &'static str = "labelled";
        const MUTATING: bool = true;
        type Object = Pod;
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
        let eval = evaluate(ENTRIES, "{}", POD, None, &[call(true)]);
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
        let eval = evaluate(ENTRIES, "{}", POD, None, &[call(false)]);
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
        let eval = evaluate(
            ENTRIES,
            "{}",
            POD,
            None,
            &[bad_settings, unknown, call(false)],
        );
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
        let eval = evaluate(
            ENTRIES,
            "{}",
            r#"{"spec": 3}"#,
            None,
            &[call(false), call(true)],
        );
        assert_eq!(eval.verdicts.len(), 2);
        for v in eval.verdicts {
            assert!(
                v.unwrap_err()
                    .starts_with("cannot read the object as a Pod")
            );
        }
    }
}
