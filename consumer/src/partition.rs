//! Record keys and partition assignment, exactly as the Fluvio producer does it, so that
//! an embedded run and a cluster run over the same events put every user in the same
//! partition at the same offset (and so give identical profiles).
//!
//! - The key of an event line is its identity, by the one rule
//!   [`onramp_logic::identity::record_identity`] that `onramp-validate` and the fold also
//!   follow: its `user_id`, else its `anonymous_id` (non-empty). A line that is not one
//!   unambiguous JSON object (not JSON, or a key repeated in any object) has no key; so
//!   for every line validate accepts, the key is the identity the fold keys the user by,
//!   and one user is never folded on two partitions.
//! - Keyed records go to `siphash(key) % partitions`: `SipHasher::new()` (zero keys)
//!   over the key bytes hashed as a Rust `[u8]`, as in Fluvio's
//!   `SiphashRoundRobinPartitioner`.
//! - Keyless records go round-robin, counting keyless records only, from partition 0.

use std::hash::{Hash, Hasher};

use onramp_logic::identity::record_identity;
use serde::Deserialize;
use siphasher::sip::SipHasher;

/// The record key of an event line: its identity (user id, else anonymous id), `None`
/// when it has none.
pub fn record_key(line: &[u8]) -> Option<Vec<u8>> {
    record_identity(line).map(String::into_bytes)
}

/// What a producer keys records by. onramp's own producer keys by identity (a user's
/// records stay in one partition); another producer may key by event id, spreading each
/// user over every partition — onramp is correct either way, and an embedded run can
/// mimic either so that it equals the cluster run of the same topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyBy {
    /// The event's identity: `user_id`, else `anonymous_id`.
    #[default]
    Identity,
    /// The event's `event_id`.
    EventId,
}

impl KeyBy {
    /// The record key of an event line under this rule; `None` for a line without one.
    pub fn key(self, line: &[u8]) -> Option<Vec<u8>> {
        match self {
            KeyBy::Identity => record_key(line),
            KeyBy::EventId => {
                #[derive(Deserialize)]
                struct Id {
                    event_id: String,
                }
                let id: Id = serde_json::from_slice(line).ok()?;
                (!id.event_id.is_empty()).then(|| id.event_id.into_bytes())
            }
        }
    }

    /// The name used in flags and in the store's record of its source.
    pub fn name(self) -> &'static str {
        match self {
            KeyBy::Identity => "identity",
            KeyBy::EventId => "event-id",
        }
    }
}

/// Assigns partitions like the Fluvio producer.
#[derive(Debug, Clone)]
pub struct Partitioner {
    partitions: u32,
    round_robin: u32,
}

impl Partitioner {
    /// A partitioner over `partitions` (at least 1).
    pub fn new(partitions: u32) -> Self {
        Partitioner {
            partitions: partitions.max(1),
            round_robin: 0,
        }
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition of a record with this key.
    pub fn partition(&mut self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => {
                let mut hasher = SipHasher::new();
                k.hash(&mut hasher);
                (hasher.finish() % u64::from(self.partitions)) as u32
            }
            None => {
                let p = self.round_robin % self.partitions;
                self.round_robin = self.round_robin.wrapping_add(1);
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves keys come from user_id, then anonymous_id, and bad lines have none.
    #[test]
    fn keys() {
        assert_eq!(
            record_key(br#"{"user_id":"u1","anonymous_id":"a"}"#),
            Some(b"u1".to_vec())
        );
        assert_eq!(record_key(br#"{"user_id":"","anonymous_id":"a"}"#), Some(b"a".to_vec()));
        assert_eq!(record_key(br#"{"user_id":5}"#), None);
        assert_eq!(record_key(b"not json"), None);
    }

    /// Proves a line with a repeated key (the attack that split one user over two
    /// partitions) is keyless, and goes round-robin, while the same event without the
    /// repeat is keyed by its user and goes to the user's partition.
    #[test]
    fn a_repeated_key_makes_a_line_keyless() {
        let clean = br#"{"event_id":"e1","type":"click","user_id":"X","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b"}}"#;
        let top = br#"{"event_id":"e1","type":"click","user_id":"X","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b"},"user_id":"X"}"#;
        let nested = br#"{"event_id":"e1","type":"click","user_id":"X","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b","target":"b"}}"#;
        assert_eq!(record_key(clean), Some(b"X".to_vec()));
        assert_eq!(record_key(top), None);
        assert_eq!(record_key(nested), None);

        let mut p = Partitioner::new(7);
        let home = p.partition(record_key(clean).as_deref());
        assert_eq!(home, p.partition(Some(b"X")));
        let spread: Vec<u32> = (0..7).map(|_| p.partition(record_key(top).as_deref())).collect();
        assert_eq!(spread, (0..7).collect::<Vec<u32>>(), "keyless lines go round-robin");
    }

    /// Proves the hash matches Fluvio's partitioner (values computed with
    /// `fluvio::producer::partitioning::partition_siphash`'s algorithm) and keyless
    /// records go round-robin.
    #[test]
    fn partitions_like_fluvio() {
        let mut p = Partitioner::new(3);
        let mut hasher = SipHasher::new();
        b"u_1"[..].hash(&mut hasher);
        assert_eq!(p.partition(Some(b"u_1")), (hasher.finish() % 3) as u32);
        assert_eq!(
            [
                p.partition(None),
                p.partition(None),
                p.partition(None),
                p.partition(None)
            ],
            [0, 1, 2, 0]
        );
        let mut one = Partitioner::new(1);
        assert_eq!(one.partition(Some(b"x")), 0);
    }
}
