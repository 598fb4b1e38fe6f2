//! `onramp-profile`: an aggregate SmartModule that folds enriched events into per-user
//! state and emits one `ProfileUpdate` per event (key = user id).
//!
//! Worked example (`tests/data/profile-session.input.jsonl` holds these records; the
//! golden case `profile-session.json` pins the output):
//!
//! ```text
//! input records (enriched events, as onramp-enrich emits them):
//!   page_view e1 by u_1 at 09:00:00, page_view e2 by u_1 at 09:02:00, e2 again
//!
//! $ smdk test --file ../../tests/data/profile-session.input.jsonl -e session_timeout=30m
//!   {"user_id":"u_1","offset":0,"outcome":"applied","event_id":"e1",…,
//!    "changes":{"state_reset":true,"counters":{"events":1,"page_views":1,"sessions":1,…},…}}
//!   {"user_id":"u_1","offset":1,"outcome":"applied","event_id":"e2",…,
//!    "changes":{"counters":{"events":1,"page_views":1,"time_spent_ms":120000,…},…}}
//!   {"user_id":"u_1","offset":2,"outcome":"duplicate","event_id":"e2",…}
//! ```
//!
//! Unlike the stock aggregate pattern, the accumulator is not a map of all users: the
//! per-user state lives in this module's memory for the life of the stream
//! (`onramp_logic::fold`), bounded by `state_ttl`, and each output is one small update.
//! The accumulator is read once, on the first record, as the restart snapshot
//! (`schemas/json/restart-snapshot.schema.json`); later accumulators (the previous update)
//! are ignored. A record the SPU feeds a second time (after it cut a fetch's output at the
//! consumer's `max_bytes`) is answered from the replay cache (`onramp_logic::replay`) with
//! the update it gave the first time, and folds nothing. A malformed snapshot cannot be reported by init (the accumulator is not
//! visible there), so every record of the stream is answered with a `skipped` update that
//! says why, and nothing is folded; the consumer treats that as an error and stops.

use std::cell::RefCell;
use std::sync::OnceLock;

use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
use fluvio_smartmodule::{eyre, RecordData, Result, SmartModuleRecord};
use onramp_logic::fold::{FoldConfig, FoldState};
use onramp_logic::replay::{Replay, ReplayCache, ENTRY_OVERHEAD, REPLAY_BYTES};
use onramp_schemas::{ProfileUpdate, SkipKind};

static CONFIG: OnceLock<FoldConfig> = OnceLock::new();

thread_local! {
    /// The fold state for this stream; `None` until the first record.
    static STATE: RefCell<Option<std::result::Result<FoldState, String>>> = const { RefCell::new(None) };
    /// The updates of the records folded last, for records the SPU feeds again.
    static REPLAY: RefCell<ReplayCache<RecordData>> = RefCell::new(ReplayCache::new(REPLAY_BYTES));
}

pub fn init(params: SmartModuleExtraParams) -> Result<()> {
    let cfg = FoldConfig::from_params(|k| params.get(k).cloned()).map_err(|e| eyre!("onramp-profile: {e}"))?;
    CONFIG.set(cfg).map_err(|_| eyre!("onramp-profile: init called twice"))
}

pub fn aggregate(accumulator: RecordData, current: &SmartModuleRecord) -> Result<RecordData> {
    let cfg = *CONFIG.get_or_init(FoldConfig::default);
    let offset = current.offset();
    REPLAY.with_borrow_mut(|replay| {
        let update = match replay.lookup(offset) {
            Replay::Held(update) => return Ok(update.clone()),
            Replay::Evicted => ProfileUpdate::skipped(
                offset,
                SkipKind::ReplayEvicted,
                format!(
                    "fed again after a cut fetch, but its update is no longer held (the replay cache keeps \
                     {} MiB); the consumer reopens the stream from its checkpoint",
                    REPLAY_BYTES >> 20
                ),
            ),
            Replay::New => STATE.with_borrow_mut(|state| {
                let fold = state.get_or_insert_with(|| FoldState::from_accumulator(cfg, accumulator.as_ref()));
                match fold {
                    Ok(fold) => fold.fold_record(current.value.as_ref(), offset, current.timestamp()),
                    // Nothing is folded without a valid snapshot: folding from an empty state
                    // would silently diverge from an unbroken run.
                    Err(e) => ProfileUpdate::skipped(
                        offset,
                        SkipKind::RefusedSnapshot,
                        format!("{e}; nothing is folded on this stream"),
                    ),
                }
            }),
        };
        let bytes = serde_json::to_vec(&update).unwrap_or_default();
        // What the entry really holds: the buffer's capacity and the shared handle.
        let held = bytes.capacity() + ENTRY_OVERHEAD;
        let value = RecordData::from(bytes);
        // (A re-feed's answer is not remembered: its offset is not above the highest.)
        replay.remember(offset, value.clone(), held);
        Ok(value)
    })
}

onramp_abi::exports!(init, aggregate);
