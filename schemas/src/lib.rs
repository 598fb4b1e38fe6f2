//! onramp's wire types, one source of truth for the SmartModules, the consumer and the
//! JSON Schemas in `schemas/json/`.
//!
//! - [`event`]: the event envelope v1 that apps produce.
//! - [`enriched`]: what `onramp-enrich` adds.
//! - [`update`]: the `ProfileUpdate` that `onramp-profile` emits per event.
//! - [`profile`]: the stored `Profile`, [`Profile::apply`] and [`Profile::merge`].
//! - [`snapshot`]: the aggregate's restart snapshot (its initial accumulator).
//! - [`clock`]: a partition's event-time clock (the robust watermark).
//! - [`reject`]: reject reasons and the rejected-event record.
//! - [`proto`]: the event envelope as Protobuf (`schemas/proto/`), and its conversions.
//!
//! `cargo run -p onramp-schemas --features schema --bin generate-schemas` rewrites the
//! JSON Schema files from these types; a test in `tests/` fails when they drift.

pub mod clock;
pub mod enriched;
pub mod event;
pub mod profile;
pub mod proto;
pub mod reject;
pub mod snapshot;
pub mod update;

pub use clock::PartitionClock;
pub use enriched::{Campaign, Category, Device, DeviceClass, EnrichedEvent, Enrichment, FunnelStep};
pub use event::{Context, Event, EventKind, PageContext, TraitValue, EVENT_TYPES};
pub use profile::{AsOf, Hints, Lww, Profile, UserFoldState};
pub use reject::{RejectReason, RejectedEvent, REJECT_PAYLOAD_HEAD};
pub use snapshot::{RestartSnapshot, SNAPSHOT_VERSION};
pub use update::{Acquisition, Changes, Counters, Outcome, Page, ProfileUpdate, SkipKind, StepChange};

/// The JSON Schema files this crate describes: (file name under `schemas/json/`, schema).
#[cfg(feature = "schema")]
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn gen<T: schemars::JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
    }
    vec![
        ("event.schema.json", properties_optional(gen::<Event>())),
        (
            "enriched-event.schema.json",
            properties_optional(gen::<EnrichedEvent>()),
        ),
        ("profile-update.schema.json", gen::<ProfileUpdate>()),
        ("profile.schema.json", gen::<Profile>()),
        ("restart-snapshot.schema.json", gen::<RestartSnapshot>()),
        ("rejected-event.schema.json", gen::<RejectedEvent>()),
    ]
}

/// `properties` may be left out of an event on the wire (the validate module reads it as
/// `{}`), but serde's adjacently tagged enum, and so the derived schema, requires it.
/// This drops `properties` from the `required` lists of the event-type variants.
#[cfg(feature = "schema")]
fn properties_optional(mut schema: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let is_variant = map
                    .get("required")
                    .and_then(|r| r.as_array())
                    .is_some_and(|r| r.iter().any(|x| x == "type") && r.iter().any(|x| x == "properties"));
                if is_variant {
                    if let Some(serde_json::Value::Array(r)) = map.get_mut("required") {
                        r.retain(|x| x != "properties");
                    }
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}
