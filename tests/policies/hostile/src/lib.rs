//! A component that misbehaves on purpose, one policy per way of doing it.
//! It implements the `agyn:policy` world by hand (not through the SDK) so
//! that it can also return what the SDK never would.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../../policy-sdk/wit",
    world: "policy",
});

use agyn::policy::types::Verdict;
use std::hint::black_box;

struct Hostile;

const POLICIES: &[&str] = &[
    "loop",
    "memory-bomb",
    "trap",
    "wrong-count",
    "bad-json",
    "renames",
    "allow",
    "panic",
];

impl Guest for Hostile {
    fn policies() -> Vec<String> {
        POLICIES.iter().map(|p| p.to_string()).collect()
    }

    fn validate_settings(policy: String, settings: String) -> Result<(), String> {
        if settings.contains("reject") {
            return Err(format!("{policy} refuses these settings"));
        }
        Ok(())
    }

    fn evaluate(
        _request: String,
        object: String,
        _old_object: Option<String>,
        calls: Vec<Call>,
    ) -> Evaluation {
        let allow = || {
            Ok(Verdict {
                violations: vec![],
                warnings: vec![],
                mutated: false,
            })
        };
        let mut mutated_object = None;
        let mut verdicts = Vec::new();
        for call in &calls {
            match call.policy.as_str() {
                "loop" => {
                    let mut n = 0u64;
                    loop {
                        n = black_box(n.wrapping_add(1));
                    }
                }
                "memory-bomb" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        black_box(&hoard);
                    }
                }
                "trap" => core::arch::wasm32::unreachable(),
                // What the SDK's panic hook does before the abort.
                "panic" => {
                    agyn::policy::host::report_panic("panicked at src/lib.rs:1:1:\nno pods today");
                    core::arch::wasm32::unreachable()
                }
                "wrong-count" => {
                    return Evaluation {
                        verdicts: vec![],
                        mutated_object: None,
                    };
                }
                "bad-json" => mutated_object = Some("{\"spec\": not json".to_string()),
                "renames" => {
                    mutated_object =
                        Some(object.replacen("\"name\":", "\"name\":\"x\",\"was\":", 1))
                }
                _ => {}
            }
            verdicts.push(allow());
        }
        Evaluation {
            verdicts,
            mutated_object,
        }
    }
}

export!(Hostile);
