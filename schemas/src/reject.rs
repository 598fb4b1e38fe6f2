//! Why an event was rejected, and the record `onramp-validate` emits for it in
//! `mode=rejected`.

use serde::{Deserialize, Serialize};

/// Most bytes of a rejected record kept in [`RejectedEvent::payload`].
pub const REJECT_PAYLOAD_HEAD: usize = 1024;

/// Machine-readable reject reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not JSON (or not UTF-8, or nested too deep, or a number out of range).
    InvalidJson,
    /// Marked Protobuf (starts with 0x00 0x01) but not an encoded envelope v1.
    InvalidProtobuf,
    /// JSON, but not an event envelope v1; the detail names the field path.
    SchemaViolation,
    /// `type` is not one of the known event types.
    UnknownType,
    /// Neither `user_id` nor `anonymous_id` is set.
    MissingIdentity,
    /// Larger than `max_event_bytes`.
    TooLarge,
    /// The timestamp is outside the accepted range.
    TimestampOutOfRange,
    /// The user agent matches a bot pattern.
    Bot,
    /// A test account (email domain or id prefix).
    TestUser,
}

impl RejectReason {
    /// Every reason, for tables and metrics.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::InvalidJson,
        RejectReason::InvalidProtobuf,
        RejectReason::SchemaViolation,
        RejectReason::UnknownType,
        RejectReason::MissingIdentity,
        RejectReason::TooLarge,
        RejectReason::TimestampOutOfRange,
        RejectReason::Bot,
        RejectReason::TestUser,
    ];

    /// The snake_case code, as in JSON and metric labels.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::InvalidProtobuf => "invalid_protobuf",
            RejectReason::SchemaViolation => "schema_violation",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::MissingIdentity => "missing_identity",
            RejectReason::TooLarge => "too_large",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
            RejectReason::Bot => "bot",
            RejectReason::TestUser => "test_user",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejected event, as `onramp-validate` emits it with `mode=rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RejectedEvent {
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail; for `schema_violation` it starts with the field path.
    pub detail: String,
    /// The start of the original record (at most [`REJECT_PAYLOAD_HEAD`] bytes), lossily
    /// decoded as UTF-8 (invalid bytes become U+FFFD); `payload_bytes` and
    /// `payload_sha256` describe the whole record, so a reject costs bounded space
    /// however large or strange the record was. The cut never splits a character.
    #[cfg_attr(feature = "schema", schemars(length(max = REJECT_PAYLOAD_HEAD)))]
    pub payload: String,
    /// Size of the original record, bytes.
    #[serde(default)]
    pub payload_bytes: u64,
    /// SHA-256 of the original record, lowercase hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = "^[0-9a-f]{64}$")))]
    pub payload_sha256: String,
    /// The record's identity (`user_id`, else `anonymous_id`) when it could be read, by
    /// the same rule the partitioner and the fold use; lets an erasure find the user's
    /// rejects without a scan. Absent when the record is not one JSON object, repeats a
    /// key, or has no id of at most `MAX_IDENTITY_BYTES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = crate::event::MAX_IDENTITY_BYTES)))]
    pub identity: Option<String>,
    /// Offset of the rejected record in its partition. In a Fluvio cluster the records a
    /// SmartModule chain emits reach the consumer renumbered (0, 1, 2… within the
    /// output), so this is how `onramp run --source fluvio` learns which record it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}
