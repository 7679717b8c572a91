//! The component export behind [`export_policies!`](crate::export_policies).

use crate::Entry;

wit_bindgen::generate!({
    path: "wit",
    world: "policy",
    pub_export_macro: true,
    export_macro_name: "export_component",
    default_bindings_module: "::agyn_policy_sdk::wasm",
});

use agyn::policy::types::Verdict;

/// The policies one component carries.
pub trait Exports {
    const ENTRIES: &'static [Entry];
}

impl<T: Exports> Guest for T {
    fn policies() -> Vec<String> {
        T::ENTRIES.iter().map(|e| e.name.to_string()).collect()
    }

    fn validate_settings(policy: String, settings: String) -> Result<(), String> {
        T::ENTRIES
            .iter()
            .find(|e| e.name == policy)
            .ok_or_else(|| format!("this component has no policy named {policy:?}"))?
            .validate_settings(&settings)
    }

    fn evaluate(request: String, object: String, calls: Vec<Call>) -> Evaluation {
        let calls: Vec<crate::Call> = calls
            .into_iter()
            .map(|c| crate::Call {
                policy: c.policy,
                settings: c.settings,
                mutate: c.mutate,
            })
            .collect();
        let eval = crate::evaluate(T::ENTRIES, &request, &object, &calls);
        Evaluation {
            verdicts: eval
                .verdicts
                .into_iter()
                .map(|v| {
                    v.map(|v| Verdict {
                        violations: v.violations,
                        warnings: v.warnings,
                        mutated: v.mutated,
                    })
                })
                .collect(),
            mutated_object: eval.mutated_object,
        }
    }
}
