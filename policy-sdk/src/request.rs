use crate::metadata::Operation;
use k8s_openapi::api::authentication::v1::UserInfo;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// What the admission request says about the object, apart from the object.
///
/// The fields of `admission.k8s.io/v1` AdmissionRequest that policies use;
/// the object itself is passed separately so mutation can change it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Identifies this admission call.
    #[serde(default)]
    pub uid: String,
    /// The kind of the object as submitted (a Deployment for a Deployment's
    /// pod template, which a pod policy sees as a Pod).
    #[serde(default)]
    pub kind: Kind,
    /// The resource requested (`apps/v1 deployments`).
    #[serde(default)]
    pub resource: Resource,
    /// The subresource, such as `ephemeralcontainers`, if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The namespace of the object; for a Pod on CREATE, the Pod's own
    /// `metadata.namespace` may still be empty, this is not. `None` for a
    /// cluster-scoped object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name; empty on CREATE with `generateName`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub operation: Operation,
    /// The user that made the request.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The request will not be persisted (`kubectl apply --dry-run=server`).
    #[serde(default)]
    pub dry_run: bool,
    /// The object before an UPDATE, as JSON; parsed on demand by
    /// [`Request::old_object`].
    #[serde(skip)]
    pub old_object: Option<String>,
}

/// Group, version and kind of the submitted object.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Kind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// Group, version and resource (plural) of the request.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Resource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

impl Request {
    /// The request's namespace, or `""`.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// The object before the change, on UPDATE (for a pod policy judging a
    /// workload, its old pod template as a Pod). Parsed on each call: most
    /// policies never look.
    pub fn old_object<T: DeserializeOwned>(&self) -> Option<Result<T, String>> {
        self.old_object.as_deref().map(|json| {
            serde_json::from_str(json).map_err(|e| format!("cannot read the old object: {e}"))
        })
    }
}
