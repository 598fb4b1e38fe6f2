//! The pure logic of onramp's three SmartModules, as plain functions over the types in
//! `onramp-schemas`. The SmartModule crates (`smartmodules/validate`, `enrich`,
//! `profile`) are thin wrappers around it: decode, call, encode. Keeping it here, without
//! the macro, lets the same unit tests run natively and compiled to
//! `wasm32-unknown-unknown` under wasm-bindgen-test, and lets the benchmark run the very
//! same logic natively.
//!
//! - [`validate`]: reject reasons, checked in a fixed order.
//! - [`identity`]: a record's identity (its key), one rule for the partitioner, validate
//!   and the fold.
//! - [`enrich`]: category, funnel, campaign, device, locale, date.
//! - [`fold`]: the per-user fold behind the profile aggregate.
//! - [`replay`]: the same update for a record the SPU feeds twice.
//! - [`params`]: param parsing with errors that name the param.
//! - [`wire`]: fast typed readers for events and enriched events.

pub mod enrich;
pub mod fold;
pub mod identity;
pub mod params;
pub mod replay;
pub mod validate;
pub mod wire;
