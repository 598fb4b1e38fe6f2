//! `onramp-validate`: a filter-map SmartModule that drops bad onboarding events, and
//! with `mode=rejected` shows only the rejects, each with its reason.
//!
//! Worked example (`tests/data/validate-mixed.input.jsonl` holds these records; the golden
//! cases `validate-mixed.json` and `validate-mixed-rejected.json` pin the outputs):
//!
//! ```text
//! input records:
//!   {"event_id":"e1","type":"sign_up","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z"}
//!   {"event_id":"e2","type":"teleport","user_id":"u_1","timestamp":"2026-11-01T09:00:01Z"}
//!   not json
//!
//! $ smdk test --file ../../tests/data/validate-mixed.input.jsonl
//!   {"event_id":"e1","type":"sign_up","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z"}
//!
//! $ smdk test --file ../../tests/data/validate-mixed.input.jsonl -e mode=rejected
//!   {"reason":"unknown_type","detail":"`teleport` is not one of: sign_up, …","payload":"{…}",
//!    "payload_bytes":86,"payload_sha256":"023b3bd8…","identity":"u_1","offset":0}
//!   {"reason":"invalid_json","detail":"expected ident at line 1 column 2","payload":"not json",
//!    "payload_bytes":8,"payload_sha256":"7ccfa1fb…","offset":0}
//! ```
//!
//! `smdk test` hands the module each line as a record of its own, at offset 0, so every
//! reject it prints says `"offset":0`; from a topic (or `onramp run`) it is the record's
//! own offset, 1 and 2 above.
//!
//! Each reject carries the offset of the record it rejects: in a Fluvio cluster the
//! consumer cannot learn it from the output record (see `onramp_schemas::RejectedEvent`).
//! It keeps only the first 1024 bytes of the record (`REJECT_PAYLOAD_HEAD`), with the
//! record's size, SHA-256 and identity, so a reject is a few KB whatever the record: a
//! batch of huge hostile records cannot exhaust the engine's memory in `mode=rejected`.
//! A key repeated in any object is a `schema_violation`, and such a record has no
//! identity (`onramp_logic::identity`, the rule the partitioner shares).
//! Accepted records pass through byte for byte, with their key. The module never
//! returns an error for a record: in Fluvio an error would stop the consumer's stream.
//! The checks and their order are documented in `onramp_logic::validate`.

use std::sync::OnceLock;

use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
use fluvio_smartmodule::{eyre, RecordData, Result, SmartModuleRecord};
use onramp_logic::validate::{validate, Mode, ValidateConfig};

static CONFIG: OnceLock<ValidateConfig> = OnceLock::new();

pub fn init(params: SmartModuleExtraParams) -> Result<()> {
    let cfg = ValidateConfig::from_params(|k| params.get(k).cloned()).map_err(|e| eyre!("onramp-validate: {e}"))?;
    CONFIG.set(cfg).map_err(|_| eyre!("onramp-validate: init called twice"))
}

pub fn filter_map(record: &SmartModuleRecord) -> Result<Option<(Option<RecordData>, RecordData)>> {
    let cfg = CONFIG.get_or_init(ValidateConfig::default);
    let value = record.value.as_ref();
    let result = validate(value, Some(record.timestamp()), cfg);
    Ok(match (result, cfg.mode) {
        (Ok(_), Mode::Accepted) => Some((record.key.clone(), record.value.clone())),
        (Err(rejection), Mode::Rejected) => Some((
            record.key.clone(),
            rejection.to_record(value, Some(record.offset())).into(),
        )),
        _ => None,
    })
}

onramp_abi::exports!(init, filter_map);
