//! `onramp-enrich`: a map SmartModule that adds an `enrichment` object to each event and
//! sets the record key to the user id (the anonymous id when there is none).
//!
//! Worked example (`tests/data/enrich-page-view.input.jsonl` holds this record; the golden
//! case `enrich-page-view.json` pins the output):
//!
//! ```text
//! input record:
//!   {"event_id":"e1","type":"page_view","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z",
//!    "properties":{"url":"https://app.example/welcome?utm_source=newsletter&utm_campaign=fall%20launch"},
//!    "context":{"user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) … Safari/604.1",
//!               "locale":"en_gb","page":{"referrer":"https://www.google.com/search?q=onramp"}}}
//!
//! $ smdk test --file ../../tests/data/enrich-page-view.input.jsonl -k
//!   [u_1] {…the event…, "enrichment":{"category":"engagement","event_time_ms":1793523600000,
//!    "date":"2026-11-01","hour":9,"campaign":{"source":"newsletter","campaign":"fall launch"},
//!    "referrer_host":"google.com","device":{"class":"mobile","os":"iOS","browser":"Safari"},
//!    "locale":"en-GB","page_path":"/welcome"}}
//! ```
//!
//! With `-e steps=sign_up,profile,onboarding_completed`, events that complete a step get
//! `enrichment.funnel` (`{"step":"profile","index":1,"total":3,"next":"onboarding_completed"}`;
//! golden case `enrich-funnel-steps.json`).
//!
//! A record that is not a valid event (only possible when the module runs without
//! `onramp-validate` before it) becomes a rejected-event record, which `onramp-profile`
//! skips with its reason: a map must emit something, and it must never fail.

use std::sync::OnceLock;

use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
use fluvio_smartmodule::{eyre, RecordData, Result, SmartModuleRecord};
use onramp_logic::enrich::{enrich, EnrichConfig};
use onramp_logic::validate::parse_event;

static CONFIG: OnceLock<EnrichConfig> = OnceLock::new();

pub fn init(params: SmartModuleExtraParams) -> Result<()> {
    let cfg = EnrichConfig::from_params(|k| params.get(k).cloned()).map_err(|e| eyre!("onramp-enrich: {e}"))?;
    CONFIG.set(cfg).map_err(|_| eyre!("onramp-enrich: init called twice"))
}

pub fn map(record: &SmartModuleRecord) -> Result<(Option<RecordData>, RecordData)> {
    let cfg = CONFIG.get_or_init(EnrichConfig::default);
    let value = record.value.as_ref();
    let enriched = parse_event(value).and_then(|event| enrich(event, cfg));
    Ok(match enriched {
        Ok(e) => {
            let key = e.event.identity().map(|id| RecordData::from(id.as_bytes().to_vec()));
            let bytes = serde_json::to_vec(&e).unwrap_or_default();
            (key.or_else(|| record.key.clone()), bytes.into())
        }
        Err(rejection) => (
            record.key.clone(),
            rejection.to_record(value, Some(record.offset())).into(),
        ),
    })
}

onramp_abi::exports!(init, map);
