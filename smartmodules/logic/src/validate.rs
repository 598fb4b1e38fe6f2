//! Validation: decides whether a raw record is an acceptable onboarding event, and if not,
//! why. Never panics, whatever the bytes.
//!
//! Checks, in order (the first that fails is the reason):
//! 1. `too_large`: more than `max_event_bytes` bytes;
//! 2. `invalid_json`: not UTF-8 JSON (also: nesting deeper than 128, numbers out of range);
//!    `invalid_protobuf`: a record marked Protobuf (it starts with 0x00 0x01,
//!    `onramp_schemas::proto`) that is not an encoded envelope v1;
//! 3. `schema_violation` / `unknown_type`: not an event envelope v1 (detail = field path):
//!    not an object, a key repeated in any object (`user_id: duplicate key`), a field of
//!    the wrong type, an id longer than its bound ([`MAX_EVENT_ID_BYTES`],
//!    [`MAX_IDENTITY_BYTES`], [`MAX_SESSION_ID_BYTES`]), …;
//! 4. `missing_identity`: neither `user_id` nor `anonymous_id`;
//! 5. `timestamp_out_of_range`: before 2000 or from 2100 on, or more than `max_future`
//!    after / `max_past` before the record's own timestamp (when the record has one);
//! 6. `test_user`: an id with a test prefix, or an email at a test domain;
//! 7. `bot`: a user agent that matches a bot pattern.
//!
//! A rejected record ([`Rejection::to_record`]) costs bounded space whatever the input:
//! the first [`REJECT_PAYLOAD_HEAD`] bytes of the payload, its size and SHA-256, and its
//! identity ([`crate::identity::record_identity`]).

use onramp_schemas::event::{
    Context, EventKind, MAX_EVENT_ID_BYTES, MAX_IDENTITY_BYTES, MAX_SESSION_ID_BYTES, MAX_TRAITS,
};
use onramp_schemas::proto::{decode_record, is_protobuf, ProtoError};
use onramp_schemas::{Event, RejectReason, RejectedEvent, TraitValue, EVENT_TYPES, REJECT_PAYLOAD_HEAD};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::identity::{duplicate_key, record_identity, strict_reading, StrictReading};
use crate::params::{parse_bounded, parse_duration_ms, parse_list, ParamError};
use crate::wire::{event_kind, read_event, Properties};

/// Param: `accepted` (default) passes good events; `rejected` emits only the rejects.
pub const PARAM_MODE: &str = "mode";
/// Param: largest accepted record, bytes.
pub const PARAM_MAX_EVENT_BYTES: &str = "max_event_bytes";
/// Param: how far before the record's timestamp an event time may be (`0` = no limit).
pub const PARAM_MAX_PAST: &str = "max_past";
/// Param: how far after the record's timestamp an event time may be.
pub const PARAM_MAX_FUTURE: &str = "max_future";
/// Param: comma-separated, case-insensitive substrings of bot user agents.
pub const PARAM_BOT_USER_AGENTS: &str = "bot_user_agents";
/// Param: comma-separated email domains of test accounts.
pub const PARAM_TEST_EMAIL_DOMAINS: &str = "test_email_domains";
/// Param: comma-separated id prefixes of test accounts.
pub const PARAM_TEST_ID_PREFIXES: &str = "test_id_prefixes";

/// Default `max_event_bytes` (32 KiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest `max_event_bytes` that may be configured (1 MiB).
pub const MAX_MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Default `max_past`: no limit (backfills of old events are legitimate).
pub const DEFAULT_MAX_PAST: &str = "0";
/// Default `max_future`: one day of clock skew.
pub const DEFAULT_MAX_FUTURE: &str = "1d";
/// Default bot patterns.
pub const DEFAULT_BOT_USER_AGENTS: &str =
    "bot/,bot;,bot),+http,crawler,spider,slurp,headlesschrome,phantomjs,curl/,wget/,python-requests,go-http-client";
/// Default test email domains.
pub const DEFAULT_TEST_EMAIL_DOMAINS: &str = "test.invalid,onramp-test.invalid";
/// Default test id prefixes.
pub const DEFAULT_TEST_ID_PREFIXES: &str = "test_,qa_";
/// Event times before this (2000-01-01T00:00:00Z) are always out of range.
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// Event times from this on (2100-01-01T00:00:00Z) are always out of range.
pub const MAX_EVENT_TIME_MS: i64 = 4_102_444_800_000;
/// Longest `detail` text in a rejection, bytes.
pub const MAX_DETAIL_BYTES: usize = 240;

/// Which records come out of the validate module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Good events, unchanged.
    Accepted,
    /// Rejected events, as [`RejectedEvent`] JSON.
    Rejected,
}

/// The validate module's configuration, parsed once from its params.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateConfig {
    /// See [`PARAM_MODE`].
    pub mode: Mode,
    /// See [`PARAM_MAX_EVENT_BYTES`].
    pub max_event_bytes: usize,
    /// See [`PARAM_MAX_PAST`]; `None` = no limit.
    pub max_past_ms: Option<i64>,
    /// See [`PARAM_MAX_FUTURE`].
    pub max_future_ms: i64,
    /// Lower-case bot patterns.
    pub bot_user_agents: Vec<String>,
    /// Lower-case test email domains.
    pub test_email_domains: Vec<String>,
    /// Test id prefixes.
    pub test_id_prefixes: Vec<String>,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig::from_params(|_| None).expect("the defaults are valid")
    }
}

impl ValidateConfig {
    /// Builds the config from params looked up by `get`; absent params take defaults.
    pub fn from_params(get: impl Fn(&str) -> Option<String>) -> Result<Self, ParamError> {
        let mode = match get(PARAM_MODE).as_deref().map(str::trim) {
            None | Some("accepted") => Mode::Accepted,
            Some("rejected") => Mode::Rejected,
            Some(other) => {
                return Err(ParamError {
                    param: PARAM_MODE,
                    value: other.to_string(),
                    expected: "`accepted` or `rejected`".to_string(),
                })
            }
        };
        let max_event_bytes = match get(PARAM_MAX_EVENT_BYTES) {
            None => DEFAULT_MAX_EVENT_BYTES,
            Some(v) => parse_bounded(PARAM_MAX_EVENT_BYTES, &v, 1, MAX_MAX_EVENT_BYTES as u64)? as usize,
        };
        let max_past = get(PARAM_MAX_PAST).unwrap_or_else(|| DEFAULT_MAX_PAST.to_string());
        let max_past_ms = Some(parse_duration_ms(PARAM_MAX_PAST, &max_past)?).filter(|ms| *ms > 0);
        let max_future = get(PARAM_MAX_FUTURE).unwrap_or_else(|| DEFAULT_MAX_FUTURE.to_string());
        let max_future_ms = parse_duration_ms(PARAM_MAX_FUTURE, &max_future)?;
        let lower_list = |name: &str, default: &str| {
            parse_list(&get(name).unwrap_or_else(|| default.to_string()))
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        Ok(ValidateConfig {
            mode,
            max_event_bytes,
            max_past_ms,
            max_future_ms,
            bot_user_agents: lower_list(PARAM_BOT_USER_AGENTS, DEFAULT_BOT_USER_AGENTS),
            test_email_domains: lower_list(PARAM_TEST_EMAIL_DOMAINS, DEFAULT_TEST_EMAIL_DOMAINS),
            test_id_prefixes: parse_list(
                &get(PARAM_TEST_ID_PREFIXES).unwrap_or_else(|| DEFAULT_TEST_ID_PREFIXES.to_string()),
            ),
        })
    }
}

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason code.
    pub reason: RejectReason,
    /// Human-readable detail (at most [`MAX_DETAIL_BYTES`]).
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: truncate(detail.into(), MAX_DETAIL_BYTES),
        }
    }

    /// The rejected-event record for this rejection of `payload` (the rejected record's
    /// bytes); `offset` is the rejected record's own offset, when known.
    ///
    /// Its size is bounded whatever `payload` is: `payload` keeps at most
    /// [`REJECT_PAYLOAD_HEAD`] bytes of text ([`lossy_head`]), `detail` at most
    /// [`MAX_DETAIL_BYTES`], `identity` at most [`MAX_IDENTITY_BYTES`]; with JSON escaping
    /// (6 bytes for a control character) the whole record stays under [`MAX_REJECT_RECORD_BYTES`].
    pub fn to_event(&self, payload: &[u8], offset: Option<i64>) -> RejectedEvent {
        RejectedEvent {
            reason: self.reason,
            detail: self.detail.clone(),
            payload: lossy_head(payload, REJECT_PAYLOAD_HEAD),
            payload_bytes: payload.len() as u64,
            payload_sha256: sha256_hex(payload),
            identity: record_identity(payload),
            offset,
        }
    }

    /// [`Rejection::to_event`] as JSON: the record `mode=rejected` emits.
    pub fn to_record(&self, payload: &[u8], offset: Option<i64>) -> Vec<u8> {
        serde_json::to_vec(&self.to_event(payload, offset)).unwrap_or_default()
    }
}

/// Largest JSON rejected-event record [`Rejection::to_record`] can produce, bytes: every
/// text field at its bound and made only of characters JSON escapes as `\u00XX`, plus
/// the field names, the hash and two 20-digit numbers.
pub const MAX_REJECT_RECORD_BYTES: usize =
    6 * (REJECT_PAYLOAD_HEAD + MAX_DETAIL_BYTES + '…'.len_utf8() + MAX_IDENTITY_BYTES) + 512;

/// The start of `bytes` decoded as UTF-8, at most `max` bytes of text: each invalid
/// sequence becomes U+FFFD (as in `String::from_utf8_lossy`) and the cut never splits a
/// character. Reads at most `max + 4` bytes of the input, whatever its size.
pub fn lossy_head(bytes: &[u8], max: usize) -> String {
    // Decoding never shortens the text (a valid char keeps its length, an invalid
    // sequence of 1–3 bytes becomes 3), so `max + 4` input bytes cover `max` of output,
    // and a char cut off at the end of that slice lies beyond `max` in the output.
    let input = &bytes[..bytes.len().min(max.saturating_add(4))];
    let mut out = String::with_capacity(input.len().min(max));
    for chunk in input.utf8_chunks() {
        for c in chunk
            .valid()
            .chars()
            .chain((!chunk.invalid().is_empty()).then_some('\u{fffd}'))
        {
            if out.len() + c.len_utf8() > max {
                return out;
            }
            out.push(c);
        }
    }
    out
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(2 * digest.len());
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// An accepted event with its event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The parsed event.
    pub event: Event,
    /// Its event time, ms since the epoch.
    pub event_time_ms: i64,
}

/// Validates one record. `record_time_ms` is the timestamp stored with the record (the
/// producer's); pass `None` when the record has none, and only the fixed bounds apply.
pub fn validate(bytes: &[u8], record_time_ms: Option<i64>, cfg: &ValidateConfig) -> Result<Accepted, Rejection> {
    if bytes.len() > cfg.max_event_bytes {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "{} bytes; the limit is {} (param max_event_bytes)",
                bytes.len(),
                cfg.max_event_bytes
            ),
        ));
    }
    let event = parse_event(bytes)?;
    check_fields(&event)?;
    if event.identity().is_none() {
        return Err(Rejection::new(
            RejectReason::MissingIdentity,
            "neither user_id nor anonymous_id is set",
        ));
    }
    let event_time_ms = parse_timestamp(&event.timestamp)?;
    check_time(event_time_ms, record_time_ms, cfg)?;
    check_test_user(&event, cfg)?;
    check_bot(&event.context, cfg)?;
    Ok(Accepted { event, event_time_ms })
}

/// Parses a JSON event envelope v1. `properties` may be missing (taken as `{}`).
/// Errors are `invalid_json`, `unknown_type` or `schema_violation` with the field path
/// (a key repeated in any object is a `schema_violation` too).
///
/// The result is [`parse_event_reference`]'s, reached faster: a record that reads
/// strictly ([`strict_reading`]: what `serde_json::Value` reads, no key repeated) is read
/// by the flat reader [`crate::wire::read_event`]; any record either refuses is read by
/// the reference, which says why.
pub fn parse_event(bytes: &[u8]) -> Result<Event, Rejection> {
    if is_protobuf(bytes) {
        return parse_protobuf(bytes);
    }
    if strict_reading(bytes) == StrictReading::Clean {
        if let Some(event) = read_event(bytes) {
            return Ok(event);
        }
    }
    parse_event_reference(bytes)
}

/// The reference reading of an event envelope: the whole record as a `serde_json::Value`,
/// then each part typed with its exact field path in any error. [`parse_event`] gives the
/// same result; this is what defines it, and what explains a refusal.
pub fn parse_event_reference(bytes: &[u8]) -> Result<Event, Rejection> {
    if is_protobuf(bytes) {
        return parse_protobuf(bytes);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Rejection::new(RejectReason::InvalidJson, e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection::new(
            RejectReason::SchemaViolation,
            format!(".: expected an event object, found {}", json_kind(&value)),
        ));
    };
    // serde_json keeps the last of repeated keys; other readers (and the partitioner) the
    // first or none. A record that means different things to different readers is refused.
    if let Some(path) = duplicate_key(bytes) {
        return Err(Rejection::new(
            RejectReason::SchemaViolation,
            format!("{path}: duplicate key; each key may appear only once in an object"),
        ));
    }
    let event_type = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::SchemaViolation,
                format!("type: expected a string, found {}", json_kind(other)),
            ))
        }
        None => {
            return Err(Rejection::new(
                RejectReason::SchemaViolation,
                "type: missing field `type`",
            ))
        }
    };
    let properties = obj
        .remove("properties")
        .unwrap_or_else(|| Value::Object(Default::default()));
    let kind = kind_from_parts(&event_type, &properties)?;
    let envelope: Envelope = serde_path_to_error::deserialize(&Value::Object(obj)).map_err(schema_violation(""))?;
    Ok(Event {
        event_id: envelope.event_id,
        kind,
        user_id: envelope.user_id,
        anonymous_id: envelope.anonymous_id,
        timestamp: envelope.timestamp,
        session_id: envelope.session_id,
        context: envelope.context,
    })
}

/// Reads a Protobuf record (marked 0x00 0x01; `onramp_schemas::proto`): `invalid_protobuf`
/// when it does not decode, `schema_violation` for what JSON could not say (no event type,
/// a trait without a value or not finite). The checks after parsing are the JSON event's.
fn parse_protobuf(bytes: &[u8]) -> Result<Event, Rejection> {
    decode_record(bytes).map_err(|e| match e {
        ProtoError::Undecodable(why) => Rejection::new(RejectReason::InvalidProtobuf, why),
        ProtoError::NotAnEvent(path, what) => Rejection::new(RejectReason::SchemaViolation, format!("{path}: {what}")),
    })
}

/// The envelope's fields other than `type` and `properties`, read on their own so that
/// errors carry exact field paths (serde loses them across `#[serde(flatten)]`).
#[derive(Deserialize)]
struct Envelope {
    event_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    anonymous_id: Option<String>,
    timestamp: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    context: Context,
}

/// Reads `properties` as the struct of `event_type` (one of [`EVENT_TYPES`]).
fn kind_from_parts(event_type: &str, properties: &Value) -> Result<EventKind, Rejection> {
    event_kind(event_type, &ValueProperties(properties)).unwrap_or_else(|| {
        Err(Rejection::new(
            RejectReason::UnknownType,
            format!("`{event_type}` is not one of: {}", EVENT_TYPES.join(", ")),
        ))
    })
}

/// Properties as a JSON value; errors name the field path.
struct ValueProperties<'a>(&'a Value);

impl Properties for ValueProperties<'_> {
    type Error = Rejection;
    fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, Rejection> {
        serde_path_to_error::deserialize(self.0).map_err(schema_violation("properties"))
    }
}

/// Maps a serde error to a `schema_violation` whose detail starts with the field path
/// (`prefix` joined with serde's path; `.` for the root).
fn schema_violation(prefix: &'static str) -> impl Fn(serde_path_to_error::Error<serde_json::Error>) -> Rejection {
    move |e| {
        let mut inner = e.path().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let message = e.inner().to_string();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            inner = if inner == "." {
                field.to_string()
            } else {
                format!("{inner}.{field}")
            };
        }
        let path = match (prefix, inner.as_str()) {
            ("", ".") => ".".to_string(),
            (p, ".") => p.to_string(),
            ("", i) => i.to_string(),
            (p, i) => format!("{p}.{i}"),
        };
        Rejection::new(RejectReason::SchemaViolation, format!("{path}: {message}"))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_fields(event: &Event) -> Result<(), Rejection> {
    let violation =
        |path: &str, what: String| Err(Rejection::new(RejectReason::SchemaViolation, format!("{path}: {what}")));
    if event.event_id.trim().is_empty() {
        return violation("event_id", "must not be empty".into());
    }
    if event.event_id.len() > MAX_EVENT_ID_BYTES {
        return violation(
            "event_id",
            format!("{} bytes; the limit is {MAX_EVENT_ID_BYTES}", event.event_id.len()),
        );
    }
    for (path, id, max) in [
        ("user_id", &event.user_id, MAX_IDENTITY_BYTES),
        ("anonymous_id", &event.anonymous_id, MAX_IDENTITY_BYTES),
        ("session_id", &event.session_id, MAX_SESSION_ID_BYTES),
    ] {
        if let Some(len) = id.as_ref().map(String::len).filter(|len| *len > max) {
            return violation(path, format!("{len} bytes; the limit is {max}"));
        }
    }
    match &event.kind {
        EventKind::Identify(identify) if identify.traits.len() > MAX_TRAITS => {
            violation("properties.traits", format!("more than {MAX_TRAITS} traits"))
        }
        EventKind::StepCompleted(step) if step.step.trim().is_empty() => {
            violation("properties.step", "must not be empty".into())
        }
        EventKind::Click(click) if click.target.trim().is_empty() => {
            violation("properties.target", "must not be empty".into())
        }
        EventKind::FeatureUsed(f) if f.feature.trim().is_empty() => {
            violation("properties.feature", "must not be empty".into())
        }
        _ => Ok(()),
    }
}

/// Parses an RFC 3339 timestamp to ms since the epoch (a `schema_violation` if it is not
/// one, `timestamp_out_of_range` outside 2000–2099).
pub fn parse_timestamp(ts: &str) -> Result<i64, Rejection> {
    let parsed = chrono::DateTime::parse_from_rfc3339(ts).map_err(|e| {
        Rejection::new(
            RejectReason::SchemaViolation,
            format!("timestamp: `{ts}` is not RFC 3339 ({e})"),
        )
    })?;
    let ms = parsed.timestamp_millis();
    if !(MIN_EVENT_TIME_MS..MAX_EVENT_TIME_MS).contains(&ms) {
        return Err(Rejection::new(
            RejectReason::TimestampOutOfRange,
            format!("`{ts}` is outside 2000-01-01..2100-01-01"),
        ));
    }
    Ok(ms)
}

fn check_time(event_ms: i64, record_ms: Option<i64>, cfg: &ValidateConfig) -> Result<(), Rejection> {
    let Some(record_ms) = record_ms.filter(|t| *t > 0) else {
        return Ok(());
    };
    if event_ms > record_ms.saturating_add(cfg.max_future_ms) {
        return Err(Rejection::new(
            RejectReason::TimestampOutOfRange,
            format!(
                "event time is {} ms after the record's timestamp; the limit is {} ms (param max_future)",
                event_ms - record_ms,
                cfg.max_future_ms
            ),
        ));
    }
    if let Some(max_past) = cfg.max_past_ms {
        if event_ms < record_ms.saturating_sub(max_past) {
            return Err(Rejection::new(
                RejectReason::TimestampOutOfRange,
                format!(
                    "event time is {} ms before the record's timestamp; the limit is {max_past} ms (param max_past)",
                    record_ms - event_ms
                ),
            ));
        }
    }
    Ok(())
}

fn check_test_user(event: &Event, cfg: &ValidateConfig) -> Result<(), Rejection> {
    for id in [&event.user_id, &event.anonymous_id].into_iter().flatten() {
        if let Some(prefix) = cfg.test_id_prefixes.iter().find(|p| id.starts_with(p.as_str())) {
            return Err(Rejection::new(
                RejectReason::TestUser,
                format!("id starts with `{prefix}`"),
            ));
        }
    }
    if let Some(email) = event_email(event) {
        let domain = email.rsplit('@').next().unwrap_or_default().to_ascii_lowercase();
        let is_test = cfg
            .test_email_domains
            .iter()
            .any(|d| domain == *d || domain.ends_with(&format!(".{d}")));
        if is_test {
            return Err(Rejection::new(
                RejectReason::TestUser,
                format!("email domain `{domain}`"),
            ));
        }
    }
    Ok(())
}

/// The email address an event carries, if any (sign-up, verification, `email` trait).
pub fn event_email(event: &Event) -> Option<&str> {
    match &event.kind {
        EventKind::SignUp(s) => s.email.as_deref(),
        EventKind::EmailVerified(v) => v.email.as_deref(),
        EventKind::Identify(i) => match i.traits.get("email") {
            Some(TraitValue::Text(e)) => Some(e.as_str()),
            _ => None,
        },
        _ => None,
    }
}

fn check_bot(context: &Context, cfg: &ValidateConfig) -> Result<(), Rejection> {
    let Some(ua) = context.user_agent.as_deref() else {
        return Ok(());
    };
    let lower = ua.to_ascii_lowercase();
    match cfg.bot_user_agents.iter().find(|p| lower.contains(p.as_str())) {
        Some(p) => Err(Rejection::new(RejectReason::Bot, format!("user agent matches `{p}`"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const GOOD: &str = r#"{"event_id":"e1","type":"page_view","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z","properties":{"path":"/welcome"},"context":{"user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Firefox/120.0"}}"#;

    fn reason(bytes: &[u8]) -> RejectReason {
        validate(bytes, None, &ValidateConfig::default()).unwrap_err().reason
    }

    /// Proves a well-formed event is accepted with its identity and event time.
    #[test]
    fn accepts_a_good_event() {
        let ok = validate(GOOD.as_bytes(), None, &ValidateConfig::default()).unwrap();
        assert_eq!(ok.event.identity(), Some("u_1"));
        assert_eq!(ok.event_time_ms, 1_793_523_600_000);
    }

    /// Proves `properties` may be left out when every property of the type is optional.
    #[test]
    fn properties_may_be_left_out() {
        let ev = r#"{"event_id":"e1","type":"email_verified","anonymous_id":"a1","timestamp":"2026-11-01T09:00:00Z"}"#;
        assert!(validate(ev.as_bytes(), None, &ValidateConfig::default()).is_ok());
    }

    /// Proves each reject reason is given for a record that breaks exactly that check.
    #[test]
    fn each_reason_is_reported() {
        assert_eq!(reason(b"{not json"), RejectReason::InvalidJson);
        assert_eq!(reason(&[0xff, 0xfe]), RejectReason::InvalidJson);
        assert_eq!(reason(b""), RejectReason::InvalidJson);
        assert_eq!(reason(b"[1,2]"), RejectReason::SchemaViolation);
        assert_eq!(
            reason(br#"{"type":"teleport","event_id":"e","user_id":"u","timestamp":"2026-11-01T09:00:00Z"}"#),
            RejectReason::UnknownType
        );
        assert_eq!(
            reason(&GOOD.replace(r#""user_id":"u_1","#, "").into_bytes()),
            RejectReason::MissingIdentity
        );
        assert_eq!(
            reason(&GOOD.replace("2026-11-01", "1970-01-01").into_bytes()),
            RejectReason::TimestampOutOfRange
        );
        assert_eq!(
            reason(&GOOD.replace("Firefox/120.0", "Googlebot/2.1").into_bytes()),
            RejectReason::Bot
        );
        assert_eq!(
            reason(&GOOD.replace("u_1", "test_7").into_bytes()),
            RejectReason::TestUser
        );
        let big = GOOD.replace("/welcome", &"x".repeat(40_000));
        assert_eq!(reason(big.as_bytes()), RejectReason::TooLarge);
    }

    /// Proves a schema violation's detail starts with the offending field's path.
    #[test]
    fn schema_violations_name_the_field_path() {
        let bad = GOOD.replace(r#""path":"/welcome""#, r#""path":5"#);
        let r = validate(bad.as_bytes(), None, &ValidateConfig::default()).unwrap_err();
        assert_eq!(r.reason, RejectReason::SchemaViolation);
        assert!(r.detail.starts_with("properties.path:"), "{}", r.detail);

        let bad = GOOD.replace(
            r#""user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Firefox/120.0""#,
            r#""user_agent":7"#,
        );
        let r = validate(bad.as_bytes(), None, &ValidateConfig::default()).unwrap_err();
        assert!(r.detail.starts_with("context.user_agent:"), "{}", r.detail);

        let bad = GOOD.replace(r#""timestamp":"2026-11-01T09:00:00Z""#, r#""timestamp":"yesterday""#);
        let r = validate(bad.as_bytes(), None, &ValidateConfig::default()).unwrap_err();
        assert!(r.detail.starts_with("timestamp:"), "{}", r.detail);

        let click =
            r#"{"event_id":"e","type":"click","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{}}"#;
        let r = validate(click.as_bytes(), None, &ValidateConfig::default()).unwrap_err();
        assert!(r.detail.starts_with("properties.target: missing field"), "{}", r.detail);
        let r = validate(br#"{"type":"click","user_id":"u"}"#, None, &ValidateConfig::default()).unwrap_err();
        assert!(r.detail.starts_with("properties.target: missing field"), "{}", r.detail);
        let r = validate(br#"{"type":"sign_up","user_id":"u"}"#, None, &ValidateConfig::default()).unwrap_err();
        assert!(r.detail.starts_with("event_id: missing field"), "{}", r.detail);
    }

    /// Proves `max_past` and `max_future` are judged against the record's own timestamp.
    #[test]
    fn time_limits_follow_the_record_timestamp() {
        let cfg = ValidateConfig::from_params(|k| (k == PARAM_MAX_PAST).then(|| "1h".to_string())).unwrap();
        let event_ms = 1_793_523_600_000;
        assert!(validate(GOOD.as_bytes(), Some(event_ms + 30 * 60_000), &cfg).is_ok());
        let r = validate(GOOD.as_bytes(), Some(event_ms + 2 * 3_600_000), &cfg).unwrap_err();
        assert_eq!(r.reason, RejectReason::TimestampOutOfRange);
        let r = validate(GOOD.as_bytes(), Some(event_ms - 2 * 86_400_000), &cfg).unwrap_err();
        assert_eq!(r.reason, RejectReason::TimestampOutOfRange);
    }

    /// Proves nesting past serde_json's limit and out-of-range numbers are `invalid_json`.
    #[test]
    fn deep_nesting_and_huge_numbers_are_invalid_json() {
        let deep = "[".repeat(10_000);
        assert_eq!(reason(deep.as_bytes()), RejectReason::InvalidJson);
        assert_eq!(reason(b"1e999"), RejectReason::InvalidJson);
    }

    /// Proves a malformed param is refused with an error that names it.
    #[test]
    fn malformed_params_name_the_param() {
        let e = ValidateConfig::from_params(|k| (k == PARAM_MAX_EVENT_BYTES).then(|| "lots".to_string())).unwrap_err();
        assert_eq!(e.param, PARAM_MAX_EVENT_BYTES);
        let e = ValidateConfig::from_params(|k| (k == PARAM_MODE).then(|| "both".to_string())).unwrap_err();
        assert_eq!(e.param, PARAM_MODE);
    }

    /// Proves a rejected record keeps a short payload whole (lossily decoded), with its
    /// size, SHA-256 and identity.
    #[test]
    fn rejected_record_keeps_the_payload_lossily() {
        let r = Rejection::new(RejectReason::InvalidJson, "x");
        let rec: RejectedEvent = serde_json::from_slice(&r.to_record(&[b'a', 0xff, 0], Some(7))).unwrap();
        assert_eq!(rec.payload, "a\u{fffd}\u{0}");
        assert_eq!(rec.payload_bytes, 3);
        assert_eq!(rec.offset, Some(7));
        assert_eq!(rec.identity, None);

        let r = Rejection::new(RejectReason::Bot, "x");
        let rec = r.to_event(b"abc", None);
        assert_eq!(
            rec.payload_sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "the FIPS 180-2 test vector for `abc`"
        );
        let bot = GOOD.replace("Firefox/120.0", "Googlebot/2.1");
        let rec = validate(bot.as_bytes(), None, &ValidateConfig::default())
            .unwrap_err()
            .to_event(bot.as_bytes(), None);
        assert_eq!(rec.identity.as_deref(), Some("u_1"));
        assert_eq!(rec.payload, bot);
        assert_eq!(rec.payload_sha256, sha256_hex(bot.as_bytes()));
    }

    /// Proves a huge hostile record (200 KB of NUL bytes, each escaped as 6 bytes in JSON)
    /// gives a rejected record of a few KB, which still describes the whole record.
    #[test]
    fn rejected_records_are_bounded() {
        let nul = vec![0u8; 200_000];
        let r = validate(&nul, None, &ValidateConfig::default()).unwrap_err();
        assert_eq!(r.reason, RejectReason::TooLarge);
        let json = r.to_record(&nul, Some(1));
        assert!(json.len() < 8 * 1024, "{} bytes", json.len());
        let rec: RejectedEvent = serde_json::from_slice(&json).unwrap();
        assert_eq!(rec.payload, "\u{0}".repeat(REJECT_PAYLOAD_HEAD));
        assert_eq!(rec.payload_bytes, 200_000);
        assert_eq!(rec.payload_sha256, sha256_hex(&nul));

        // Every field at its bound, made of the characters JSON escapes longest.
        let control = |n: usize| "\u{1}".repeat(n);
        let worst = RejectedEvent {
            reason: RejectReason::TimestampOutOfRange,
            detail: Rejection::new(RejectReason::UnknownType, control(1_000)).detail,
            payload: control(REJECT_PAYLOAD_HEAD),
            payload_bytes: u64::MAX,
            payload_sha256: sha256_hex(b""),
            identity: Some(control(MAX_IDENTITY_BYTES)),
            offset: Some(i64::MIN),
        };
        let json = serde_json::to_vec(&worst).unwrap();
        assert!(json.len() <= MAX_REJECT_RECORD_BYTES, "{} bytes", json.len());
    }

    /// Proves the payload head never exceeds its bound and never splits a character,
    /// and that invalid bytes count as the U+FFFD they become.
    #[test]
    fn payload_head_cuts_at_a_char_boundary() {
        let e_acute = "é".repeat(600);
        assert_eq!(lossy_head(e_acute.as_bytes(), 1024), "é".repeat(512));
        let odd = format!("a{e_acute}");
        let head = lossy_head(odd.as_bytes(), 1024);
        assert_eq!(head.len(), 1023);
        assert!(head.ends_with('é'));
        assert_eq!(lossy_head(&[0xff; 2000], 1024), "\u{fffd}".repeat(341));
        assert_eq!(
            lossy_head(&[b'a', 0xe2, 0x82], 1024),
            "a\u{fffd}",
            "a truncated char at the very end"
        );
        let emoji = "😀".repeat(300);
        for max in 0..12 {
            let head = lossy_head(emoji.as_bytes(), max);
            assert_eq!(head, "😀".repeat(max / 4), "max {max}");
        }
    }

    /// Proves a key repeated anywhere is a schema_violation naming its path, before any
    /// other field check, while the same key in two different objects is fine.
    #[test]
    fn duplicate_keys_are_schema_violations() {
        let cases = [
            (GOOD.replacen(r#""user_id":"u_1","#, r#""user_id":"u_1","user_id":"u_1","#, 1), "user_id"),
            (GOOD.replacen(r#""user_id":"u_1","#, r#""user_id":"u_1","user\u005fid":"u_2","#, 1), "user_id"),
            (GOOD.replacen(r#""path":"/welcome""#, r#""path":"/welcome","path":"/x""#, 1), "properties.path"),
            (GOOD.replacen(r#""context":{"#, r#""context":{"locale":"en","locale":"fr","#, 1), "context.locale"),
            (
                r#"{"event_id":"e1","type":"identify","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z","properties":{"traits":{"plan":"a","plan":"b"}}}"#.to_string(),
                "properties.traits.plan",
            ),
            (GOOD.replacen(r#""properties":{"#, r#""extra":[{"a":1},{"a":1,"a":2}],"properties":{"#, 1), "extra[1].a"),
            (GOOD.replacen(r#""event_id":"e1","#, r#""event_id":"e1","event_id":5,"#, 1), "event_id"),
        ];
        for (record, path) in cases {
            let r = validate(record.as_bytes(), None, &ValidateConfig::default()).unwrap_err();
            assert_eq!(r.reason, RejectReason::SchemaViolation, "{record}");
            assert!(
                r.detail.starts_with(&format!("{path}: duplicate key")),
                "{record}: {}",
                r.detail
            );
        }
        let twice = GOOD.replacen(r#""context":{"#, r#""x":{"a":1},"y":{"a":1},"context":{"#, 1);
        assert!(validate(twice.as_bytes(), None, &ValidateConfig::default()).is_ok());
        let not_json = GOOD.replacen(r#""user_id":"u_1","#, r#""user_id":"u_1","user_id":"#, 1);
        assert_eq!(
            reason(not_json.as_bytes()),
            RejectReason::InvalidJson,
            "invalid JSON is reported first"
        );
    }

    /// Proves each id is bounded: at the bound it is accepted, one byte over it is a
    /// schema_violation naming the field.
    #[test]
    fn ids_are_bounded() {
        let base = r#"{"event_id":"e1","type":"page_view","user_id":"u_1","anonymous_id":"a_1","session_id":"s_1","timestamp":"2026-11-01T09:00:00Z"}"#;
        for (field, value, max) in [
            ("event_id", "e1", MAX_EVENT_ID_BYTES),
            ("user_id", "u_1", MAX_IDENTITY_BYTES),
            ("anonymous_id", "a_1", MAX_IDENTITY_BYTES),
            ("session_id", "s_1", MAX_SESSION_ID_BYTES),
        ] {
            let with = |len: usize| {
                base.replace(
                    &format!(r#""{field}":"{value}""#),
                    &format!(r#""{field}":"{}""#, "é".repeat(len / 2)),
                )
            };
            assert!(
                validate(with(max).as_bytes(), None, &ValidateConfig::default()).is_ok(),
                "{field} at the bound"
            );
            let r = validate(with(max + 2).as_bytes(), None, &ValidateConfig::default()).unwrap_err();
            assert_eq!(r.reason, RejectReason::SchemaViolation, "{field}");
            assert_eq!(r.detail, format!("{field}: {} bytes; the limit is {max}", max + 2));
        }
        const { assert!(MAX_EVENT_ID_BYTES <= 256 && MAX_IDENTITY_BYTES == 256 && MAX_SESSION_ID_BYTES == 256) };
    }
}
