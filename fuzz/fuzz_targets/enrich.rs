//! Fuzz target `enrich`: see `check_enrich` in `src/lib.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp_fuzz::check_enrich(data));
