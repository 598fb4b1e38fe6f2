//! The profile aggregate's restart snapshot (ARCHITECTURE.md, "The fold rules", deterministic restart).
//!
//! When the consumer (re)starts a partition it passes this, JSON-encoded, as the
//! aggregate's initial accumulator. It holds the partition's clock at the checkpoint (its
//! watermark and recent event times, see [`crate::clock`]) and the fold state of the users who were
//! still live at the checkpoint: those whose `last_active_ms` is within `state_ttl` of
//! the watermark. With it the aggregate continues exactly as if it had never stopped.
//!
//! ```json
//! {"version":1,"watermark_ms":1793523600000,
//!  "users":{"u_1":{"last_active_ms":1793523590000,"recent_ids":["e-1","e-2"]}}}
//! ```
//!
//! An empty accumulator (no bytes) means "start from nothing".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::PartitionClock;
use crate::profile::UserFoldState;

/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The aggregate's state at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RestartSnapshot {
    /// Format version; must be [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The partition's watermark at the checkpoint ([`crate::clock`]), ms; `None` until
    /// the partition has seen a few events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// The event times of the partition's last events, oldest first, ms: the rest of the
    /// partition's clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_ms: Vec<i64>,
    /// Fold state of the users live at the checkpoint, by user id.
    #[serde(default)]
    pub users: BTreeMap<String, UserFoldState>,
    /// The checkpoint itself, when the stream may re-deliver records at or below it: the
    /// aggregate then skips those (they are already in the store and in `users`). A Fluvio
    /// SPU resumes a stream at the start of the producer batch holding the requested offset,
    /// so `onramp run --source fluvio` sets it; the embedded run never re-delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<i64>,
}

impl RestartSnapshot {
    /// The snapshot a consumer passes when it restarts a partition: the partition's
    /// watermark at the checkpoint and the fold state of its users still live then
    /// (`watermark - last_active <= state_ttl`), taken from the stored profiles.
    pub fn at_checkpoint<'a>(
        clock: &PartitionClock,
        state_ttl_ms: i64,
        users: impl IntoIterator<Item = (&'a str, &'a UserFoldState)>,
    ) -> Self {
        let watermark_ms = clock.watermark_ms;
        let live = |s: &UserFoldState| watermark_ms.is_none_or(|w| w.saturating_sub(s.last_active_ms) <= state_ttl_ms);
        RestartSnapshot {
            version: SNAPSHOT_VERSION,
            watermark_ms,
            users: users
                .into_iter()
                .filter(|(_, s)| live(s))
                .map(|(u, s)| (u.to_string(), s.clone()))
                .collect(),
            recent_ms: clock.recent_ms.clone(),
            resume_after: None,
        }
    }
}
