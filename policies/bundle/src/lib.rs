//! The built-in policy set as one component.
//!
//! Instantiating a component and parsing the pod are most of the cost of an
//! evaluation; carrying all the built-in policies in one component lets a request
//! pay for both once instead of once per policy. Each policy crate still builds
//! as a component of its own (feature `export`).

agyn_policy_sdk::export_policies!(
    run_as_non_root::RunAsNonRoot,
    readonly_root_filesystem::ReadonlyRootFilesystem,
    drop_capabilities::DropCapabilities,
    service_account_token::ServiceAccountToken,
    workload_isolation::WorkloadIsolation,
    pod_security::PodSecurity,
);
