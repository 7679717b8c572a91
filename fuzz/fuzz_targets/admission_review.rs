//! `cargo +nightly fuzz run admission_review`: see agyn_admission::fuzz::admission_review.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agyn_admission::fuzz::admission_review(data));
