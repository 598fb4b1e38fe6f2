//! onramp's native half: runs the SmartModule chain and folds its profile updates into
//! a store.
//!
//! # Layout
//! - [`wasm`]: finds, builds and loads the three `.wasm` SmartModules.
//! - [`chain`]: runs them in-process through `fluvio-smartengine`, one chain per
//!   partition, exactly as the SPU does.
//! - [`generator`]: the deterministic onboarding traffic generator — realistic journeys
//!   through the funnel plus bots, test accounts, late, duplicate and malformed lines, one
//!   JSON line at a time, for the embedded source, the tests and the benchmarks.

pub mod chain;
pub mod generator;
pub mod wasm;
