//! Cutting the Pod out of a workload for the policies over pods, putting
//! their Pod back, so that a Deployment's patch lands on its template, and
//! checking what a policy hands back.

use super::ReviewError;
use super::kinds::WorkloadKind;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

/// The Pod a workload's policies judge: its template's metadata and spec.
/// (A Pod itself goes to the policies as it came, uncut.)
pub(super) fn extract(kind: WorkloadKind, object: &Value) -> Result<Value, ReviewError> {
    if !object.is_object() {
        return Err(ReviewError::NotAnObject);
    }
    let pointer = kind.template_pointer();
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
    Ok(Value::Object(pod))
}

/// The workload with the policies' final Pod put back in its template.
pub(super) fn restore(
    kind: WorkloadKind,
    original: &Value,
    pod: Value,
) -> Result<Value, ReviewError> {
    let pointer = kind.template_pointer();
    let mut object = original.clone();
    // `extract` found an object template, and `check_mutation` an object
    // pod: neither error can happen, but neither may panic if it did.
    let (Some(template), Value::Object(mut pod)) = (
        object.pointer_mut(pointer).and_then(Value::as_object_mut),
        pod,
    ) else {
        return Err(ReviewError::NoTemplate { kind, pointer });
    };
    for field in ["metadata", "spec"] {
        match pod.remove(field) {
            Some(value) => template.insert(field.into(), value),
            None => template.remove(field),
        };
    }
    Ok(object)
}

/// Refuses a mutated object that renames or moves it, or, when it is a Pod
/// (`pod`), one that is not a valid Pod.
pub(super) fn check_mutation(before: &Value, after: &str, pod: bool) -> Result<Value, String> {
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
    if !after.is_object() {
        return Err("not a JSON object".into());
    }
    if pod {
        <Pod as serde::Deserialize>::deserialize(&after)
            .map_err(|e| format!("not a valid Pod: {e}"))?;
    }
    Ok(after)
}
