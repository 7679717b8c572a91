//! Write agyn-admission policies in Rust.
//!
//! A policy is a type implementing [`Policy`]: a name, the [`Object`] type
//! it judges (a typed k8s-openapi object such as
//! [`Pod`](k8s_openapi::api::core::v1::Pod),
//! [`Service`](k8s_openapi::api::core::v1::Service) or
//! [`ClusterRole`](k8s_openapi::api::rbac::v1::ClusterRole), or a
//! [`DynamicObject`] for custom resources), typed [`Policy::Settings`], a
//! [`Policy::validate`] that reports every violation, and optionally a
//! [`Policy::mutate`] that fixes what it can. A policy over Pods also judges
//! the pod templates of Deployments, Jobs and the other workload kinds,
//! presented as Pods; the host maps the changes back to the template.
//!
//! One crate exports one or more policies as a WebAssembly component with
//! [`export_policies!`], which also embeds each policy's [`metadata`] (the
//! requests it judges, whether it mutates, its description); build it with
//! `agyn-admission policy build`. The same code runs natively, so a policy
//! is unit-tested with `cargo test` through [`testing`] (feature `testing`).
//!
//! - [`containers`] and [`containers_mut`] walk containers, init containers
//!   and ephemeral containers, with image, ports, resources, environment and
//!   the effective security context;
//! - [`Outcome`] collects violations and warnings with messages that name the
//!   container and the field;
//! - [`Request`] says who asks for what: operation, user, namespace, the old
//!   object of an UPDATE.

mod containers;
mod evaluate;
mod labels;
pub mod metadata;
mod object;
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
#[doc(hidden)]
pub use evaluate::{Call, Entry, Evaluation, Verdict, entry, evaluate};
pub use k8s_openapi;
pub use labels::selector_matches;
pub use metadata::{Operation, Rule, Severity};
pub use object::{DynamicObject, Object};
pub use outcome::{Outcome, shown};
pub use request::{Kind, Request, Resource};

use metadata::Metadata;
use serde::de::DeserializeOwned;

/// One admission rule.
///
/// `validate` must judge the object as it is; `mutate` may change it so that
/// `validate` passes. The host runs every enabled `mutate` first, in the
/// policy set's order, then every `validate` on the final object, so a
/// mutation by one policy is always checked by all.
pub trait Policy {
    /// The name used in policy sets and in every message, e.g. `run-as-non-root`.
    const NAME: &'static str;

    /// One sentence for reports, SARIF and `policy inspect`.
    const DESCRIPTION: &'static str = "";

    /// A category for reports, e.g. `Pod Security`.
    const CATEGORY: &'static str = "";

    /// How much a violation matters, for reports.
    const SEVERITY: Severity = Severity::Medium;

    /// A JSON Schema of the settings, as JSON text (`""`: none given).
    const SETTINGS_SCHEMA: &'static str = "";

    /// Which requests reach the policy: by default the object type's own
    /// resource on CREATE and UPDATE. A policy over a [`DynamicObject`]
    /// must name its own.
    const RULES: &'static [Rule] = <Self::Object as Object>::RULES;

    /// Whether `mutate` may change objects. The host warns when a policy
    /// set enables mutation for a policy that never mutates, or loads a
    /// mutating one with mutation off; [`testing::run`] checks it.
    const MUTATING: bool = false;

    /// The type of the objects judged.
    type Object: Object;

    /// Typed settings. `Default` gives the settings used when a policy set
    /// names none; reject unknown fields with `#[serde(deny_unknown_fields)]`
    /// so a typo in a policy set fails at load.
    type Settings: DeserializeOwned + Default;

    /// Checks settings beyond their shape (values that parse but make no
    /// sense). Called once when the policy set loads.
    fn check_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Reports every violation of the object.
    fn validate(request: &Request, object: &Self::Object, settings: &Self::Settings) -> Outcome;

    /// Changes the object so that it complies, where that is safe, and
    /// returns whether it changed anything. The default changes nothing.
    /// Never override an explicit value: deny it in `validate` instead.
    ///
    /// The flag only says which policy changed the object (the host diffs
    /// the objects for the patch); it saves cloning the object around every
    /// mutation. [`testing::run`] checks that it tells the truth.
    fn mutate(_request: &Request, _object: &mut Self::Object, _settings: &Self::Settings) -> bool {
        false
    }
}

/// A policy's [`Metadata`], from its constants.
pub const fn metadata<P: Policy>() -> Metadata {
    Metadata {
        name: P::NAME,
        description: P::DESCRIPTION,
        rules: P::RULES,
        mutating: P::MUTATING,
        settings_schema: P::SETTINGS_SCHEMA,
        category: P::CATEGORY,
        severity: P::SEVERITY,
    }
}

/// Exports policies as a WebAssembly component implementing the
/// `agyn:policy` world, with their [`metadata`] in a custom section. A
/// no-op when not compiling for `wasm32`, so the same crate builds natively
/// for its unit tests.
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

            const LEN: usize = $crate::metadata::encoded_len(
                <Component as $crate::wasm::Exports>::ENTRIES,
            );
            #[unsafe(link_section = "agyn.policy.metadata")]
            #[used]
            static METADATA: [u8; LEN] =
                $crate::metadata::encode::<LEN>(<Component as $crate::wasm::Exports>::ENTRIES);
        };
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static ALLOCATOR: $crate::wasm::BumpAllocator = $crate::wasm::BumpAllocator::new();
    };
}
