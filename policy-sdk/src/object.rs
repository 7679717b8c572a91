//! The objects a policy judges: any typed k8s-openapi object, or a
//! [`DynamicObject`] for kinds it does not type (custom resources).

use crate::metadata::{Operation, Rule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A type a policy can judge: parsed from the object's JSON, serialised
/// back when a mutation changed it.
pub trait Object: Serialize + DeserializeOwned + 'static {
    /// The requests a policy over this type judges unless it names its own
    /// [`Policy::RULES`](crate::Policy::RULES): for a typed object, its
    /// group, version and resource on CREATE and UPDATE.
    const RULES: &'static [Rule];
}

impl<T> Object for T
where
    T: k8s_openapi::Resource + Serialize + DeserializeOwned + 'static,
{
    const RULES: &'static [Rule] = &[Rule {
        api_groups: &[T::GROUP],
        api_versions: &[T::VERSION],
        resources: &[T::URL_PATH_SEGMENT],
        operations: &[Operation::Create, Operation::Update],
    }];
}

/// Any object as JSON, with its type and metadata read: for custom
/// resources and kinds k8s-openapi does not know. A policy over it must
/// name its [`Policy::RULES`](crate::Policy::RULES): it has none of its own.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DynamicObject {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Every other field (`spec`, `status`, `data`, …).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Object for DynamicObject {
    const RULES: &'static [Rule] = &[];
}

impl DynamicObject {
    /// A field by JSON pointer from the object's root, e.g. `/spec/replicas`.
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, rest) = rest.split_once('/').map_or((rest, ""), |(f, r)| (f, r));
        let value = self.fields.get(first)?;
        if rest.is_empty() {
            Some(value)
        } else {
            value.pointer(&format!("/{rest}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::Ingress;
    use k8s_openapi::api::rbac::v1::ClusterRole;

    #[test]
    fn typed_objects_bring_their_resource() {
        let rule = Ingress::RULES[0];
        assert_eq!(rule.api_groups, ["networking.k8s.io"]);
        assert_eq!(rule.api_versions, ["v1"]);
        assert_eq!(rule.resources, ["ingresses"]);
        assert_eq!(ClusterRole::RULES[0].resources, ["clusterroles"]);
    }

    #[test]
    fn a_dynamic_object_keeps_every_field() {
        let json = r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"size":3}}"#;
        let widget: DynamicObject = serde_json::from_str(json).unwrap();
        assert_eq!(widget.kind, "Widget");
        assert_eq!(widget.metadata.name.as_deref(), Some("w"));
        assert_eq!(widget.pointer("/spec/size"), Some(&serde_json::json!(3)));
        assert_eq!(
            serde_json::to_value(&widget).unwrap(),
            serde_json::from_str::<Value>(json).unwrap()
        );
    }
}
