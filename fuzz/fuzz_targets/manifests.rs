//! `cargo +nightly fuzz run manifests`: see agyn_admission::fuzz::manifests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agyn_admission::fuzz::manifests(data));
