//! `cargo +nightly fuzz run policy_set`: see agyn_admission::fuzz::policy_set.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agyn_admission::fuzz::policy_set(data));
