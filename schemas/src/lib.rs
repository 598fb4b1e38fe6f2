//! onramp's wire types, one source of truth for the SmartModules, the consumer and the
//! JSON Schemas in `schemas/json/`.
//!
//! - [`event`]: the event envelope v1 that apps produce.
//! - [`enriched`]: what `onramp-enrich` adds.
//! - [`update`]: the `ProfileUpdate` that `onramp-profile` emits per event.
//! - [`profile`]: the stored `Profile` and [`Profile::apply`].
//! - [`snapshot`]: the aggregate's restart snapshot (its initial accumulator).
//! - [`reject`]: reject reasons and the rejected-event record.
//!
//! `cargo run -p onramp-schemas --features schema --bin generate-schemas` rewrites the
//! JSON Schema files from these types; a test in `tests/` fails when they drift.

pub mod enriched;
pub mod event;
pub mod profile;
pub mod reject;
pub mod snapshot;
pub mod update;

pub use enriched::{
    Campaign, Category, Device, DeviceClass, EnrichedEvent, Enrichment, FunnelStep,
};
pub use event::{Context, Event, EventKind, PageContext, TraitValue, EVENT_TYPES};
pub use profile::{Hints, Lww, Profile, UserFoldState};
pub use reject::{RejectReason, RejectedEvent};
pub use snapshot::{RestartSnapshot, SNAPSHOT_VERSION};
pub use update::{
    Acquisition, Changes, Counters, Outcome, Page, ProfileUpdate, SessionChange, StepChange,
};

/// The JSON Schema files this crate describes: (file name under `schemas/json/`, schema).
#[cfg(feature = "schema")]
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn gen<T: schemars::JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
    }
    vec![
        ("event.schema.json", gen::<Event>()),
        ("enriched-event.schema.json", gen::<EnrichedEvent>()),
        ("profile-update.schema.json", gen::<ProfileUpdate>()),
        ("profile.schema.json", gen::<Profile>()),
        ("restart-snapshot.schema.json", gen::<RestartSnapshot>()),
        ("rejected-event.schema.json", gen::<RejectedEvent>()),
    ]
}
