//! Fuzz target `fold`: see `check_fold` in `src/lib.rs` for what it asserts. The input
//! is structured (`FoldInput`, through `arbitrary`), so `cargo fuzz fmt fold <file>`
//! prints a crash as records and offsets.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: onramp_fuzz::FoldInput| onramp_fuzz::check_fold(&input));
