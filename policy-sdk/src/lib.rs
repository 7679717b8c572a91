//! Write agyn-admission policies in Rust.
//!
//! A policy is a type implementing [`Policy`]: a name, typed [`Policy::Settings`],
//! a [`Policy::validate`] that reports every violation on a typed
//! [`Pod`](k8s_openapi::api::core::v1::Pod), and optionally a
//! [`Policy::mutate`] that fixes what it can. The host (the agyn-admission
//! webhook and its `check` dry run) hands every policy a Pod: the pod
//! templates of Deployments, Jobs and the other workload controllers are
//! presented as Pods, and the changes are mapped back to the template.
//!
//! One crate exports one or more policies as a WebAssembly component with
//! [`export_policies!`]; build it with `cargo build --target wasm32-wasip2`.
//! The same code runs natively, so a policy is unit-tested with
//! `cargo test` through [`testing`] (feature `testing`).
//!
//! - [`containers`] and [`containers_mut`] walk containers, init containers
//!   and ephemeral containers, with the effective security context;
//! - [`Outcome`] collects violations and warnings with messages that name the
//!   container and the field;
//! - [`evaluate`] is the whole guest side of the ABI (`wit/policy.wit`), as
//!   plain Rust.

// The README's example policy is compiled as a doctest, so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod containers;
mod evaluate;
mod labels;
mod outcome;
mod request;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use containers::{
    ContainerKind, ContainerMut, ContainerRef, EffectiveSecurityContext, containers, containers_mut,
};
pub use evaluate::{Call, Entry, Evaluation, Verdict, entry, evaluate};
pub use k8s_openapi;
pub use labels::selector_matches;
pub use outcome::{Outcome, shown};
pub use request::Request;

use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;

/// One admission rule over Pods.
///
/// `validate` must judge the object as it is; `mutate` may change it so that
/// `validate` passes. The host runs every enabled `mutate` first, in the
/// policy set's order, then every `validate` on the final object, so a
/// mutation by one policy is always checked by all.
pub trait Policy {
    /// The name used in policy sets and in every message, e.g. `run-as-non-root`.
    const NAME: &'static str;

    /// Typed settings. `Default` gives the settings used when a policy set
    /// names none; reject unknown fields with `#[serde(deny_unknown_fields)]`
    /// so a typo in a policy set fails at load.
    type Settings: DeserializeOwned + Default;

    /// Checks settings beyond their shape (values that parse but make no
    /// sense). Called once when the policy set loads.
    fn check_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Reports every violation of the pod.
    fn validate(request: &Request, pod: &Pod, settings: &Self::Settings) -> Outcome;

    /// Changes the pod so that it complies, where that is safe, and returns
    /// whether it changed anything. The default changes nothing. Never
    /// override an explicit value: deny it in `validate` instead.
    ///
    /// The flag only says which policy changed the object (the host diffs
    /// the objects for the patch); it saves cloning the pod around every
    /// mutation. [`testing::run`] checks that it tells the truth.
    fn mutate(_request: &Request, _pod: &mut Pod, _settings: &Self::Settings) -> bool {
        false
    }
}

/// Exports policies as a WebAssembly component implementing the
/// `agyn:policy` world. A no-op when not compiling for `wasm32`, so the same
/// crate builds natively for its unit tests.
///
/// ```ignore
/// agyn_policy_sdk::export_policies!(run_as_non_root::RunAsNonRoot);
/// ```
#[macro_export]
macro_rules! export_policies {
    ($($policy:ty),+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Component;
            impl $crate::wasm::Exports for Component {
                const ENTRIES: &'static [$crate::Entry] = &[$($crate::entry::<$policy>()),+];
            }
            $crate::wasm::export_component!(Component);
        };
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static ALLOCATOR: $crate::wasm::BumpAllocator = $crate::wasm::BumpAllocator::new();
    };
}
