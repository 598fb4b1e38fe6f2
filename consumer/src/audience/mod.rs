//! The personalisation surface: audiences over persons, their transitions, and decisions.
//!
//! - [`rules`]: the rules file (`--rules rules.yaml`), parsed and checked before anything
//!   starts; the built-in rules (`stalled`, `activated`) when none is given.
//! - [`eval`]: judging a condition on a person's profile at an event time, and when a time
//!   condition will next change its answer (the timer to set).
//! - [`decide`]: a surface's next action for a person, and experiment variants by a stable
//!   hash.
//!
//! Memberships, timers and the transitions outbox live in the store
//! ([`crate::store::audience`]), written exactly once and deterministically: see there for
//! how evaluation is ordered by the store's event-time frontier, never by commit order or
//! the wall clock.

pub mod decide;
pub mod eval;
pub mod rules;

pub use decide::{assign, decide, Assigned, Decision};
pub use rules::{Audience, Condition, Rules, RulesError, Surface, DEFAULT_RULES};
