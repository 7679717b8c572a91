//! The entry points of the fuzz targets (`fuzz/`, run with `cargo fuzz`),
//! also run by the regression tests over the inputs fuzzing found
//! (`tests/fuzz_regressions.rs`). Each takes any bytes and must return
//! without panicking: a panic is the finding.

use crate::admission::{self, Options, Phase};
use crate::config::{NoRegistry, PolicySet, Source};
use crate::engine::{Engine, EngineOptions, EvalError};
use crate::server::admission_review::{self, AdmissionResponse};
use std::sync::OnceLock;

/// The built-in set, loaded once per process.
fn builtin() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let engine = Engine::new(&EngineOptions::default()).expect("an engine");
        PolicySet::load(&Source::Builtin, &engine).expect("the built-in set loads")
    })
}

/// The webhook's path for a request body: the AdmissionReview read, the
/// review in both phases with the built-in set (or the decision owed when
/// it cannot be completed), and the answers written.
pub fn admission_review(data: &[u8]) {
    let Ok(request) = admission_review::parse(data) else {
        return;
    };
    let set = builtin();
    for phase in [Phase::Mutate, Phase::Validate, Phase::Both] {
        let options = Options {
            phase,
            ..Options::default()
        };
        let decision = admission::review_with(set, &request, &options).unwrap_or_else(|e| {
            admission::unjudged(
                set,
                &request,
                &options,
                EvalError::Unreadable(e.to_string()),
            )
        });
        AdmissionResponse::mutation(request.uid.clone(), &decision).to_json();
        AdmissionResponse::validation(request.uid.clone(), &decision, false).to_json();
        AdmissionResponse::validation(request.uid.clone(), &decision, true).to_json();
    }
}

/// The policy set loader on any text, its modules being the built-in one.
pub fn policy_set(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| Engine::new(&EngineOptions::default()).expect("an engine"));
    let _ = PolicySet::from_text(text, &Source::Builtin, engine, &NoRegistry);
}

/// `check`'s manifest reader on any text, as YAML and as JSON.
pub fn manifests(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["fuzz.yaml", "fuzz.json"] {
        let _ = crate::cli::judge_text(builtin(), name, text);
    }
}
