//! Fast typed readers for the chain's records: an event (what validate and enrich read)
//! and an enriched event (what profile reads), read from the bytes straight into the
//! typed structs of `onramp-schemas`.
//!
//! # Why not the derived readers
//! `Event` and `EnrichedEvent` derive `Deserialize` through `#[serde(flatten)]` and an
//! adjacently tagged `EventKind` (`type` + `properties`). serde implements both by first
//! buffering every field into its own intermediate tree, then reading that tree again; and
//! [`crate::validate::parse_event_reference`] builds a whole `serde_json::Value` first, to
//! name exact field paths in its errors. Those allocations were most of the chain's cost
//! (BENCHMARKS.md, "Where the time goes"). These readers use one flat struct whose
//! fields are the envelope's, keep `properties` (and `enrichment`) as raw JSON text until
//! `type` is known, and read that text once into the right struct.
//!
//! # What they promise
//! They answer `None` whenever they cannot read a record, and the caller then uses the
//! reference reading, which gives the reason. When they answer `Some`, the value is the
//! one the reference reading gives: the fields and their types are the same structs' (an
//! unknown field is ignored by both, a known field repeated is refused by the flat struct
//! and left to the reference), `properties` that is missing reads as `{}` as it does there,
//! and `properties: null` is refused (it is not taken for a missing field). What a flat
//! struct does not check by itself (UTF-8 inside ignored strings, numbers out of range or
//! nesting beyond 128 inside ignored fields, a key repeated inside a map) the caller checks
//! first where the reference would refuse it: [`crate::validate::parse_event`] runs the
//! strict reading ([`crate::identity::strict_reading`]) before [`read_event`]. Tests pin
//! the equivalence on the hostile corpus and on generated records.

use std::borrow::Cow;

use onramp_schemas::event::{Context, EventKind};
use onramp_schemas::{EnrichedEvent, Event};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The envelope as one flat struct (see the module docs).
#[derive(Deserialize)]
struct Flat<'a> {
    event_id: String,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "raw")]
    properties: Option<&'a RawValue>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    anonymous_id: Option<String>,
    timestamp: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    context: Context,
    /// Read only by [`read_enriched`]; an event carrying one is read as if it did not.
    #[serde(default, borrow, deserialize_with = "raw")]
    enrichment: Option<&'a RawValue>,
}

/// A present field's raw text, `null` included (`Option`'s own reader takes `null` for
/// absent).
fn raw<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl Flat<'_> {
    fn into_event(self) -> Option<Event> {
        let properties = self.properties.map_or("{}", RawValue::get);
        Some(Event {
            event_id: self.event_id,
            kind: event_kind(&self.event_type, &RawText(properties))?.ok()?,
            user_id: self.user_id,
            anonymous_id: self.anonymous_id,
            timestamp: self.timestamp,
            session_id: self.session_id,
            context: self.context,
        })
    }
}

/// Where an event's `properties` are read from: raw JSON text here, a `serde_json::Value`
/// in the reference reading.
pub(crate) trait Properties {
    type Error;
    /// The properties as the struct `T`.
    fn read<T: DeserializeOwned>(&self) -> Result<T, Self::Error>;
}

/// `properties` read as the struct of `event_type`; `None` when the type is not one of
/// `EVENT_TYPES`. One dispatch for both readings.
pub(crate) fn event_kind<P: Properties>(event_type: &str, properties: &P) -> Option<Result<EventKind, P::Error>> {
    Some(match event_type {
        "sign_up" => properties.read().map(EventKind::SignUp),
        "page_view" => properties.read().map(EventKind::PageView),
        "click" => properties.read().map(EventKind::Click),
        "step_completed" => properties.read().map(EventKind::StepCompleted),
        "email_verified" => properties.read().map(EventKind::EmailVerified),
        "identify" => properties.read().map(EventKind::Identify),
        "feature_used" => properties.read().map(EventKind::FeatureUsed),
        "invite_sent" => properties.read().map(EventKind::InviteSent),
        "onboarding_completed" => properties.read().map(EventKind::OnboardingCompleted),
        _ => return None,
    })
}

/// Properties as raw JSON text.
struct RawText<'a>(&'a str);

impl Properties for RawText<'_> {
    type Error = serde_json::Error;
    fn read<T: DeserializeOwned>(&self) -> Result<T, Self::Error> {
        serde_json::from_str(self.0)
    }
}

/// A raw event envelope v1, or `None` (see the module docs: the caller must have read the
/// record strictly first, and falls back to the reference reading on `None`).
pub fn read_event(bytes: &[u8]) -> Option<Event> {
    serde_json::from_slice::<Flat>(bytes).ok()?.into_event()
}

/// An enriched event as `onramp-enrich` writes it (the event's fields, `properties`
/// always present, and `enrichment`), or `None`; on `None` the caller reads the record
/// with the derived reader for its error.
pub fn read_enriched(bytes: &[u8]) -> Option<EnrichedEvent> {
    let flat = serde_json::from_slice::<Flat>(bytes).ok()?;
    // The derived reader's adjacently tagged enum needs `properties`: refuse what it might.
    flat.properties?;
    let enrichment = serde_json::from_str(flat.enrichment?.get()).ok()?;
    Some(EnrichedEvent {
        event: flat.into_event()?,
        enrichment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::{enrich, EnrichConfig};
    use crate::validate::{parse_event, parse_event_reference};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Proves, on wasm32 as natively, that the flat readers give the reference's events:
    /// every event type, `properties` before `type` or left out, traits of each kind, an
    /// unknown field; and that `properties: null` is refused, not taken for `{}`.
    #[test]
    fn flat_readers_give_the_reference_events() {
        let base = r#""event_id":"e","user_id":"u","timestamp":"2026-11-01T09:00:00Z""#;
        let events = [
            format!(r#"{{"properties":{{"email":"a@b.c"}},{base},"type":"sign_up"}}"#),
            format!(r#"{{{base},"type":"page_view","context":{{"page":{{"path":"/"}}}},"extra":[1,{{"x":null}}]}}"#),
            format!(r#"{{{base},"type":"click","properties":{{"target":"b"}}}}"#),
            format!(r#"{{{base},"type":"step_completed","properties":{{"step":"s","duration_ms":5}}}}"#),
            format!(r#"{{{base},"type":"email_verified"}}"#),
            format!(r#"{{{base},"type":"identify","properties":{{"traits":{{"a":1,"b":1.5,"c":"x","d":true}}}}}}"#),
            format!(r#"{{{base},"type":"feature_used","properties":{{"feature":"f"}}}}"#),
            format!(r#"{{{base},"type":"invite_sent"}}"#),
            format!(r#"{{{base},"type":"onboarding_completed","properties":{{"flow":"x"}}}}"#),
        ];
        for raw in &events {
            let reference = parse_event_reference(raw.as_bytes()).unwrap();
            assert_eq!(read_event(raw.as_bytes()).as_ref(), Some(&reference), "{raw}");
            assert_eq!(parse_event(raw.as_bytes()).as_ref(), Ok(&reference));
            let enriched = enrich(reference, &EnrichConfig::default()).unwrap();
            let bytes = serde_json::to_vec(&enriched).unwrap();
            assert_eq!(read_enriched(&bytes), Some(enriched));
        }
        let null = format!(r#"{{{base},"type":"click","properties":null}}"#);
        assert_eq!(read_event(null.as_bytes()), None);
        assert!(parse_event(null.as_bytes()).is_err());
    }
}
