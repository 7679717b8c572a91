//! Native unit tests of policies, from YAML manifests.
//!
//! ```
//! use agyn_policy_sdk::testing::{pod, request, run};
//! # use agyn_policy_sdk::{Outcome, Policy, Request};
//! # use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
//! # struct NoHostNetwork;
//! # impl Policy for NoHostNetwork {
//! #     const NAME: &'static str = "no-host-network";
//! #     type Object = Pod;
//! #     type Settings = ();
//! #     fn validate(_: &Request, pod: &Pod, _: &()) -> Outcome {
//! #         let mut out = Outcome::default();
//! #         if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
//! #             out.deny("hostNetwork must be false (is true)");
//! #         }
//! #         out
//! #     }
//! # }
//! let p = pod("
//! kind: Pod
//! spec:
//!   hostNetwork: true
//!   containers: [{name: app, image: nginx}]
//! ");
//! let result = run::<NoHostNetwork>(&request("agyn"), p, &(), false);
//! assert_eq!(result.outcome.violations, ["hostNetwork must be false (is true)"]);
//! ```

use crate::{Operation, Outcome, Policy, Request};
use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;

/// A Pod from a YAML manifest. Panics with the parse error: for tests only.
pub fn pod(yaml: &str) -> Pod {
    object(yaml)
}

/// Any object from a YAML manifest. Panics with the parse error.
pub fn object<T: DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| {
        panic!(
            "not a {} manifest: {e}",
            std::any::type_name::<T>().rsplit("::").next().unwrap_or("")
        )
    })
}

/// A CREATE request for a Pod in `namespace`.
pub fn request(namespace: &str) -> Request {
    create::<Pod>(namespace)
}

/// A CREATE request for an object of type `T` in `namespace` (`""` for a
/// cluster-scoped one).
pub fn create<T: k8s_openapi::Resource>(namespace: &str) -> Request {
    Request {
        uid: "test".into(),
        kind: crate::Kind {
            group: T::GROUP.into(),
            version: T::VERSION.into(),
            kind: T::KIND.into(),
        },
        resource: crate::Resource {
            group: T::GROUP.into(),
            version: T::VERSION.into(),
            resource: T::URL_PATH_SEGMENT.into(),
        },
        namespace: (!namespace.is_empty()).then(|| namespace.into()),
        operation: Operation::Create,
        ..Request::default()
    }
}

/// An UPDATE request for an object of type `T` in `namespace`, from `old`.
pub fn update<T: k8s_openapi::Resource + serde::Serialize>(namespace: &str, old: &T) -> Request {
    Request {
        operation: Operation::Update,
        old_object: Some(serde_json::to_string(old).expect("a typed object serialises")),
        ..create::<T>(namespace)
    }
}

/// What a policy made of an object.
#[derive(Debug)]
pub struct Run<T> {
    /// The verdict on the final object.
    pub outcome: Outcome,
    /// The object after mutation (unchanged when `mutate` was false).
    pub object: T,
}

/// Runs a policy as the host does: `mutate` first (when asked), then
/// `validate` on the result. Panics when `mutate` misreports whether it
/// changed the object, or changes it while `MUTATING` says it never does.
pub fn run<P: Policy>(
    request: &Request,
    mut object: P::Object,
    settings: &P::Settings,
    mutate: bool,
) -> Run<P::Object> {
    if mutate {
        let before = serde_json::to_value(&object).expect("a typed object serialises");
        let changed = P::mutate(request, &mut object, settings);
        let after = serde_json::to_value(&object).expect("a typed object serialises");
        assert_eq!(
            changed,
            after != before,
            "{}::mutate returned {changed} but {} the object",
            P::NAME,
            if after != before {
                "changed"
            } else {
                "did not change"
            }
        );
        assert!(
            P::MUTATING || !changed,
            "{}::mutate changed the object, but its MUTATING is false",
            P::NAME
        );
    }
    Run {
        outcome: P::validate(request, &object, settings),
        object,
    }
}

/// Parses and checks settings as a policy set would pass them (`""` and
/// `null` mean the defaults), panicking on error.
pub fn settings<P: Policy>(json: &str) -> P::Settings {
    crate::entry::<P>()
        .validate_settings(json)
        .unwrap_or_else(|e| panic!("{e}"));
    crate::evaluate::settings_of::<P>(json).expect("checked above")
}
