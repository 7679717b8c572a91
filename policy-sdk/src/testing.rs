//! Native unit tests of policies, from YAML manifests.
//!
//! ```
//! use agyn_policy_sdk::testing::{pod, request, run};
//! # use agyn_policy_sdk::{Outcome, Policy, Request};
//! # use agyn_policy_sdk::k8s_openapi::api::core::v1::Pod;
//! # struct NoHostNetwork;
//! # impl Policy for NoHostNetwork {
//! #     const NAME: &'static str = "no-host-network";
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

use crate::{Outcome, Policy, Request};
use k8s_openapi::api::core::v1::Pod;

/// A Pod from a YAML manifest. Panics with the parse error: for tests only.
pub fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not a Pod manifest: {e}"))
}

/// A CREATE request for a Pod in `namespace`.
pub fn request(namespace: &str) -> Request {
    Request {
        uid: "test".into(),
        kind: crate::request::Kind {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
        },
        namespace: Some(namespace.into()),
        operation: "CREATE".into(),
        ..Request::default()
    }
}

/// What a policy made of a pod.
#[derive(Debug)]
pub struct Run {
    /// The verdict on the final pod.
    pub outcome: Outcome,
    /// The pod after mutation (unchanged when `mutate` was false).
    pub pod: Pod,
}

/// Runs a policy as the host does: `mutate` first (when asked), then
/// `validate` on the result.
pub fn run<P: Policy>(
    request: &Request,
    mut pod: Pod,
    settings: &P::Settings,
    mutate: bool,
) -> Run {
    if mutate {
        let before = pod.clone();
        let changed = P::mutate(request, &mut pod, settings);
        assert_eq!(
            changed,
            pod != before,
            "{}::mutate returned {changed} but {} the pod",
            P::NAME,
            if pod != before {
                "changed"
            } else {
                "did not change"
            }
        );
    }
    Run {
        outcome: P::validate(request, &pod, settings),
        pod,
    }
}

/// Parses and checks settings as a policy set would pass them (`""` and
/// `null` mean the defaults), panicking on error.
pub fn settings<P: Policy>(json: &str) -> P::Settings {
    crate::entry::<P>()
        .validate_settings(json)
        .unwrap_or_else(|e| panic!("{e}"));
    crate::evaluate::settings::<P>(json).expect("checked above")
}
