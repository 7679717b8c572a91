use k8s_openapi::api::authentication::v1::UserInfo;
use serde::Deserialize;

/// What the admission request says about the object, apart from the object.
///
/// The fields of `admission.k8s.io/v1` AdmissionRequest that policies use;
/// the Pod itself is passed separately so mutation can change it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Identifies this admission call.
    #[serde(default)]
    pub uid: String,
    /// The kind of the object as submitted (a Deployment for a Deployment's
    /// pod template, which policies see as a Pod).
    #[serde(default)]
    pub kind: Kind,
    /// The namespace of the object; for a Pod on CREATE, the Pod's own
    /// `metadata.namespace` may still be empty, this is not.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name; empty on CREATE with `generateName`.
    #[serde(default)]
    pub name: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    #[serde(default)]
    pub operation: String,
    /// The user that made the request.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The subresource, such as `ephemeralcontainers`, if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
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

impl Request {
    /// The request's namespace, or `""`.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }
}
