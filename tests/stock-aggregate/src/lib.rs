//! Benchmark baseline, not part of onramp: the stock aggregate pattern of Fluvio's
//! `smartmodule/examples/aggregate-json`, applied to onboarding events. The accumulator is
//! a JSON map of every user seen; each record parses the whole map, updates one entry,
//! re-encodes the whole map, and emits it as its output record. Cost per record grows
//! with the number of users, and so does every output record (ARCHITECTURE.md, "The fold
//! rules", explains why onramp's `onramp-profile` does not do this).

use std::collections::HashMap;

use fluvio_smartmodule::{smartmodule, RecordData, Result, SmartModuleRecord};
use serde::{Deserialize, Serialize};

/// Per-user totals kept in the accumulator.
#[derive(Default, Serialize, Deserialize)]
struct UserTotals {
    events: u64,
    last_type: String,
    last_timestamp: String,
}

/// The accumulator: every user seen so far.
#[derive(Default, Serialize, Deserialize)]
struct AllUsers(HashMap<String, UserTotals>);

/// The fields of an (enriched) event this baseline reads.
#[derive(Deserialize)]
struct EventHead {
    #[serde(rename = "type")]
    event_type: String,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    timestamp: String,
}

#[smartmodule(aggregate)]
pub fn aggregate(accumulator: RecordData, current: &SmartModuleRecord) -> Result<RecordData> {
    let mut all: AllUsers = serde_json::from_slice(accumulator.as_ref()).unwrap_or_default();
    let event: EventHead = serde_json::from_slice(current.value.as_ref())?;
    let user = event.user_id.or(event.anonymous_id).unwrap_or_default();
    let totals = all.0.entry(user).or_default();
    totals.events += 1;
    totals.last_type = event.event_type;
    totals.last_timestamp = event.timestamp;
    Ok(serde_json::to_vec(&all)?.into())
}
