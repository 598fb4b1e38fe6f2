//! Fuzz target `validate`: see `check_validate` in `src/lib.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp_fuzz::check_validate(data));
