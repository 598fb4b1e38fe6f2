//! Fuzz target `identity`: see `check_identity` in `src/lib.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp_fuzz::check_identity(data));
