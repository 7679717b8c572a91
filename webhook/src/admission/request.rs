use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::GroupVersionKind;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An `admission.k8s.io/v1` AdmissionRequest.
///
/// Ours rather than kube's `AdmissionRequest<DynamicObject>`: the objects
/// stay raw JSON text. A Pod goes to the policies as the text it arrived
/// in, and is parsed on the host only when a policy changes it; the old
/// object of an UPDATE is never parsed at all.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    /// Absent from requests made up by `check`: then derived from the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Group, version and resource (plural) of a request.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Resource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

/// The request as policies receive it: everything but the objects, which
/// travel separately (the pod may be cut out of a template).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GuestRequest<'a> {
    uid: &'a str,
    kind: &'a GroupVersionKind,
    resource: Resource,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    operation: &'a Operation,
    user_info: &'a UserInfo,
    dry_run: bool,
}

impl<'a> GuestRequest<'a> {
    pub(super) fn new(
        request: &'a AdmissionRequest,
        resource: Resource,
        namespace: Option<&'a str>,
    ) -> Self {
        GuestRequest {
            uid: &request.uid,
            kind: &request.kind,
            resource,
            sub_resource: request.sub_resource.as_deref(),
            name: request.name.as_deref(),
            namespace,
            operation: &request.operation,
            user_info: &request.user_info,
            dry_run: request.dry_run,
        }
    }
}
