//! Test fixture only (never loaded by `onramp setup`): `onramp-enrich` with default params,
//! except that an event whose `event_id` is [`FAILING_EVENT_ID`] makes the map return an
//! error — a SmartModule runtime error in the SPU. `tests/tests/cluster.rs` runs it with
//! `onramp run --source fluvio --adhoc` to prove the consumer counts and skips such a
//! record, or stops with a clear reason when the SPU cannot get past it.

use fluvio_smartmodule::{eyre, smartmodule, RecordData, Result, SmartModuleRecord};
use onramp_logic::enrich::{enrich, EnrichConfig};
use onramp_logic::validate::parse_event;

/// The `event_id` this module fails on.
pub const FAILING_EVENT_ID: &str = "smartmodule-error-test";

#[smartmodule(map)]
pub fn map(record: &SmartModuleRecord) -> Result<(Option<RecordData>, RecordData)> {
    let value = record.value.as_ref();
    let event = parse_event(value).map_err(|r| eyre!("not an event: {}", r.detail))?;
    if event.event_id == FAILING_EVENT_ID {
        return Err(eyre!("failing-enrich: refusing event {FAILING_EVENT_ID} on purpose"));
    }
    let enriched = enrich(event, &EnrichConfig::default()).map_err(|r| eyre!("{}", r.detail))?;
    let key = enriched
        .event
        .identity()
        .map(|id| RecordData::from(id.as_bytes().to_vec()));
    Ok((key, serde_json::to_vec(&enriched)?.into()))
}
