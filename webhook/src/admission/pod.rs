//! Cutting the Pod out of an object for the policies, and putting the
//! policies' Pod back, so that a Deployment's patch lands on its template.

use super::ReviewError;
use super::kinds::WorkloadKind;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};
use std::borrow::Cow;

/// The Pod policies judge: the object itself, or a Pod made of the
/// template's metadata and spec.
pub(super) fn extract(kind: WorkloadKind, object: &Value) -> Result<Cow<'_, Value>, ReviewError> {
    if !object.is_object() {
        return Err(ReviewError::NotAnObject);
    }
    let pointer = kind.template_pointer();
    if pointer.is_empty() {
        return Ok(Cow::Borrowed(object));
    }
    let template = object
        .pointer(pointer)
        .and_then(Value::as_object)
        .ok_or(ReviewError::NoTemplate { kind, pointer })?;
    let mut pod = Map::new();
    pod.insert("apiVersion".into(), json!("v1"));
    pod.insert("kind".into(), json!("Pod"));
    for field in ["metadata", "spec"] {
        if let Some(value) = template.get(field) {
            pod.insert(field.into(), value.clone());
        }
    }
    Ok(Cow::Owned(Value::Object(pod)))
}

/// The object with the policies' final Pod put back where it came from.
pub(super) fn restore(kind: WorkloadKind, original: &Value, pod: Value) -> Value {
    let pointer = kind.template_pointer();
    if pointer.is_empty() {
        return pod;
    }
    let mut object = original.clone();
    let (Some(template), Value::Object(mut pod)) = (
        object.pointer_mut(pointer).and_then(Value::as_object_mut),
        pod,
    ) else {
        unreachable!("extract found an object template and check_mutation an object pod")
    };
    for field in ["metadata", "spec"] {
        match pod.remove(field) {
            Some(value) => template.insert(field.into(), value),
            None => template.remove(field),
        };
    }
    object
}

/// Refuses a mutated Pod that is not a Pod, or that renames or moves it.
pub(super) fn check_mutation(before: &Value, after: &str) -> Result<Value, String> {
    let after: Value = serde_json::from_str(after).map_err(|e| format!("not JSON: {e}"))?;
    for pointer in [
        "/apiVersion",
        "/kind",
        "/metadata/name",
        "/metadata/generateName",
        "/metadata/namespace",
    ] {
        if before.pointer(pointer) != after.pointer(pointer) {
            return Err(format!("it changed {pointer}, which a policy may not"));
        }
    }
    <Pod as serde::Deserialize>::deserialize(&after)
        .map_err(|e| format!("not a valid Pod: {e}"))?;
    Ok(after)
}
