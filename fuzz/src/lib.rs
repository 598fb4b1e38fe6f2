//! The properties the fuzz targets check, one function per logic entry point. Each runs
//! the logic as its SmartModule wrapper does and panics (which libFuzzer reports as a
//! crash, with the input saved under `artifacts/`) when a property breaks:
//!
//! - [`check_validate`]: validate never panics; an accepted event has an identity equal
//!   to [`record_identity`], is within every bound, and enriches; a rejection's detail is
//!   bounded and its rejected-event record is at most [`MAX_REJECT_RECORD_BYTES`],
//!   describes the whole record (size, SHA-256, identity) and keeps a prefix of it.
//! - [`check_enrich`]: enrich (parse + enrich, as `onramp-enrich` does) never panics; its
//!   output is an enriched event the fold reads back, or a bounded rejected-event record;
//!   whatever validate accepts, enrich enriches.
//! - [`check_fold`]: the fold never panics on any sequence of records, offsets and record
//!   timestamps, from any initial accumulator; it answers each record with one update for
//!   its offset, holds at most `max_users` users, and reads back its own snapshot.
//! - [`check_identity`]: the identity rule agrees with validate, and with a plain
//!   reading through `serde_json::Value` whenever no key repeats.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use onramp_logic::enrich::{enrich, EnrichConfig};
use onramp_logic::fold::{FoldConfig, FoldState};
use onramp_logic::identity::{duplicate_key, record_identity};
use onramp_logic::validate::{
    lossy_head, parse_event, sha256_hex, validate, Accepted, Mode, ValidateConfig, MAX_DETAIL_BYTES,
    MAX_REJECT_RECORD_BYTES,
};
use onramp_schemas::event::{MAX_EVENT_ID_BYTES, MAX_IDENTITY_BYTES, MAX_SESSION_ID_BYTES};
use onramp_schemas::{EnrichedEvent, RejectedEvent, RestartSnapshot, UserFoldState, REJECT_PAYLOAD_HEAD};
use serde_json::{json, Value};

/// 2026-11-01T08:00:00Z, ms: the time around which structured events are made.
const T0: i64 = 1_793_520_000_000;

/// Validate configs the targets pick from (first input byte): both modes, the smallest,
/// default and largest size limit, time limits on and off, policy lists emptied.
fn validate_configs() -> &'static [ValidateConfig] {
    static CONFIGS: OnceLock<Vec<ValidateConfig>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let sets: [&[(&str, &str)]; 8] = [
            &[],
            &[("mode", "rejected")],
            &[("mode", "rejected"), ("max_event_bytes", "64")],
            &[("mode", "rejected"), ("max_event_bytes", "1048576")],
            &[("max_past", "1h"), ("max_future", "0")],
            &[("mode", "rejected"), ("max_past", "7d"), ("max_future", "30m")],
            &[
                ("bot_user_agents", ""),
                ("test_email_domains", ""),
                ("test_id_prefixes", ""),
            ],
            &[
                ("mode", "rejected"),
                ("test_id_prefixes", ",u,"),
                ("bot_user_agents", "a"),
            ],
        ];
        sets.iter()
            .map(|set| {
                ValidateConfig::from_params(|k| set.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
                    .expect("the fuzz configs are valid")
            })
            .collect()
    })
}

fn enrich_configs() -> &'static [EnrichConfig] {
    static CONFIGS: OnceLock<Vec<EnrichConfig>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [None, Some("sign_up,profile,workspace,onboarding_completed"), Some("x")]
            .into_iter()
            .map(|steps| {
                EnrichConfig::from_params(|k| (k == "steps").then(|| steps.map(str::to_string)).flatten())
                    .expect("the fuzz configs are valid")
            })
            .collect()
    })
}

/// Splits the first byte off `data` as a selector.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

/// Checks an accepted event against the record it came from.
fn check_accepted(record: &[u8], ok: &Accepted, cfg: &ValidateConfig) {
    let event = &ok.event;
    assert!(
        record.len() <= cfg.max_event_bytes,
        "accepted a record over max_event_bytes"
    );
    assert_eq!(
        record_identity(record).as_deref(),
        event.identity(),
        "the partitioner's identity differs from the accepted event's"
    );
    assert!(event.identity().is_some(), "accepted an event without identity");
    assert!(event.event_id.len() <= MAX_EVENT_ID_BYTES);
    for id in [&event.user_id, &event.anonymous_id].into_iter().flatten() {
        assert!(id.len() <= MAX_IDENTITY_BYTES, "accepted an id of {} bytes", id.len());
    }
    assert!(event
        .session_id
        .as_ref()
        .is_none_or(|s| s.len() <= MAX_SESSION_ID_BYTES));
    assert!(duplicate_key(record).is_none(), "accepted a record with a repeated key");
    let enriched = enrich(event.clone(), &EnrichConfig::default()).expect("an accepted event enriches");
    assert_eq!(enriched.enrichment.event_time_ms, ok.event_time_ms);
}

/// Checks the rejected-event record of `record`.
fn check_reject_record(json: &[u8], record: &[u8], offset: i64) {
    assert!(
        json.len() <= MAX_REJECT_RECORD_BYTES,
        "a rejected record of {} bytes",
        json.len()
    );
    let rec: RejectedEvent = serde_json::from_slice(json).expect("the rejected record reads back");
    assert!(rec.payload.len() <= REJECT_PAYLOAD_HEAD);
    assert!(rec.detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8());
    assert_eq!(rec.payload_bytes, record.len() as u64);
    assert_eq!(rec.offset, Some(offset));
    assert_eq!(rec.identity, record_identity(record));
    // The payload is a prefix of the whole record decoded, and as long as the bound allows.
    let head = String::from_utf8_lossy(&record[..record.len().min(REJECT_PAYLOAD_HEAD + 4)]);
    assert!(head.starts_with(&rec.payload), "the payload is not the record's start");
    assert_eq!(rec.payload, lossy_head(record, REJECT_PAYLOAD_HEAD));
    if record.len() <= 64 {
        assert_eq!(rec.payload_sha256, sha256_hex(record));
    }
}

/// The validate target: first byte picks the config and the record's timestamp.
pub fn check_validate(data: &[u8]) {
    let (selector, record) = split(data);
    let configs = validate_configs();
    let cfg = &configs[usize::from(selector) % configs.len()];
    let record_time = match selector / 16 {
        0..=7 => None,
        8..=11 => Some(T0),
        12 | 13 => Some(i64::MAX),
        _ => Some(i64::MIN + i64::from(selector)),
    };
    match validate(record, record_time, cfg) {
        Ok(ok) => check_accepted(record, &ok, cfg),
        Err(rejection) => {
            assert!(rejection.detail.len() <= MAX_DETAIL_BYTES + '…'.len_utf8());
            if cfg.mode == Mode::Rejected {
                let offset = i64::from(selector) * 1_000;
                check_reject_record(&rejection.to_record(record, Some(offset)), record, offset);
            }
        }
    }
}

/// The enrich target: raw bytes, as `onramp-enrich` sees them without validate before
/// it, and the validated path.
pub fn check_enrich(data: &[u8]) {
    let (selector, record) = split(data);
    let configs = enrich_configs();
    let cfg = &configs[usize::from(selector) % configs.len()];
    match parse_event(record).and_then(|event| enrich(event, cfg)) {
        Ok(enriched) => {
            let out = serde_json::to_vec(&enriched).expect("an enriched event serialises");
            let back: EnrichedEvent = serde_json::from_slice(&out).expect("the fold reads enrich's output");
            assert_eq!(back.enrichment, enriched.enrichment);
        }
        Err(rejection) => check_reject_record(&rejection.to_record(record, Some(9)), record, 9),
    }
    if let Ok(ok) = validate(record, None, &ValidateConfig::default()) {
        let enriched = enrich(ok.event, cfg).expect("whatever validate accepts, enrich enriches");
        assert_eq!(enriched.enrichment.event_time_ms, ok.event_time_ms);
    }
}

/// The identity target.
pub fn check_identity(data: &[u8]) {
    let identity = record_identity(data);
    if let Ok(ok) = validate(data, None, &ValidateConfig::default()) {
        assert_eq!(
            identity.as_deref(),
            ok.event.identity(),
            "identity disagrees with validate"
        );
    }
    match serde_json::from_slice::<Value>(data) {
        Err(_) => assert_eq!(identity, None, "an identity for a record that is not JSON"),
        Ok(value) => {
            if duplicate_key(data).is_some() {
                assert_eq!(identity, None, "an identity despite a repeated key");
                return;
            }
            fn text(v: Option<&Value>) -> Option<&str> {
                v.and_then(Value::as_str).filter(|s| !s.is_empty())
            }
            let plain = value
                .as_object()
                .and_then(|o| text(o.get("user_id")).or_else(|| text(o.get("anonymous_id"))))
                .filter(|id| id.len() <= MAX_IDENTITY_BYTES);
            assert_eq!(identity.as_deref(), plain, "identity differs from a plain reading");
        }
    }
}

/// One record of the fold target's stream.
#[derive(Debug, Arbitrary)]
enum Record {
    /// A realistic event, made into JSON, validated and enriched as the chain does (a
    /// rejected one reaches the fold as its rejected-event record, as in `enrich` alone).
    Event(EventSpec),
    /// A realistic event whose enriched event time is then replaced by any value.
    Forged(EventSpec, i64),
    /// Any bytes at all.
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct EventSpec {
    user: u8,
    anonymous: bool,
    kind: u8,
    /// Seconds after `T0` (negative: before).
    seconds: i32,
    event_id: u8,
    variant: u8,
}

/// The initial accumulator.
#[derive(Debug, Arbitrary)]
enum Init {
    Empty,
    Raw(Vec<u8>),
    Snapshot {
        watermark_ms: Option<i64>,
        recent_ms: Vec<i64>,
        users: Vec<(u8, i64, Vec<u8>)>,
        resume_after: Option<i64>,
        version: u32,
    },
}

/// How the offset of the next record is found.
#[derive(Debug, Arbitrary)]
enum Step {
    Next,
    Skip(u16),
    Exactly(i64),
}

/// The fold target's input: params, initial accumulator, and records, each with how
/// its offset follows the previous one and its record timestamp (negative: none).
#[derive(Debug, Arbitrary)]
pub struct FoldInput {
    params: u8,
    init: Init,
    records: Vec<(Step, i64, Record)>,
}

fn event_json(spec: &EventSpec) -> Vec<u8> {
    let v = spec.variant;
    let mut ev = match spec.kind % 10 {
        0 => json!({"type":"sign_up","properties":{"email": format!("p{v}@acme.io"),"method":"email"}}),
        1 => json!({"type":"page_view","properties":{"path": format!("/p{}", v % 4),
                    "url": format!("https://a.example/?utm_source=s{}&utm_campaign=c", v % 3)}}),
        2 => json!({"type":"click","properties":{"target": format!("b{}", v % 3)}}),
        3 => {
            json!({"type":"step_completed","properties":{"step": (["profile","workspace","sign_up","other"][usize::from(v % 4)]), "duration_ms": u64::from(v) * 1_000}})
        }
        4 => json!({"type":"email_verified"}),
        5 => {
            json!({"type":"identify","properties":{"traits":{"plan": format!("plan{}", v % 3), "n": v, "email": format!("i{v}@acme.io"), "f": f64::from(v) / 3.0}}})
        }
        6 => json!({"type":"feature_used","properties":{"feature": format!("f{}", v % 3)}}),
        7 => json!({"type":"invite_sent","properties":{"count": u32::from(v) * 1_000_000}}),
        8 => json!({"type":"onboarding_completed","properties":{"flow":"main"}}),
        _ => json!({"type":"page_view"}),
    };
    ev["event_id"] = json!(format!("e{}", spec.event_id % 40));
    if spec.user % 8 == 7 || spec.anonymous {
        ev["anonymous_id"] = json!(format!("a_{}", spec.user % 4));
    }
    if spec.user % 8 != 7 {
        ev["user_id"] = json!(format!("u_{}", spec.user % 8));
    }
    let ms = T0 + i64::from(spec.seconds) * 1_000;
    ev["timestamp"] = match rfc3339(ms) {
        Some(ts) => json!(ts),
        None => json!("not a time"),
    };
    if v.is_multiple_of(2) {
        ev["context"] = json!({"user_agent": "Mozilla/5.0 (iPhone) Mobile Safari/604.1", "locale": "en_us",
                               "page": {"referrer": "https://r.example/", "url": "https://a.example/x?utm_source=q"}});
    }
    serde_json::to_vec(&ev).expect("JSON")
}

/// RFC 3339 for `ms` (UTC), by the civil-from-days algorithm; `None` outside years
/// 0..=9999.
fn rfc3339(ms: i64) -> Option<String> {
    let secs = ms.div_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (0..=9999).contains(&year).then(|| {
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3_600,
            rem % 3_600 / 60,
            rem % 60,
            ms.rem_euclid(1_000)
        )
    })
}

/// What the chain hands the fold for a realistic event: the enriched event, or the
/// rejected-event record when validate or enrich refuses it.
fn through_the_chain(spec: &EventSpec, forged_time: Option<i64>) -> Vec<u8> {
    let raw = event_json(spec);
    let enriched =
        validate(&raw, None, &ValidateConfig::default()).and_then(|ok| enrich(ok.event, &EnrichConfig::default()));
    match enriched {
        Ok(mut e) => {
            if let Some(t) = forged_time {
                e.enrichment.event_time_ms = t;
            }
            serde_json::to_vec(&e).expect("an enriched event serialises")
        }
        Err(rejection) => rejection.to_record(&raw, Some(0)),
    }
}

fn fold_config(params: u8) -> FoldConfig {
    let sets: [&[(&str, &str)]; 6] = [
        &[],
        &[
            ("session_timeout", "1ms"),
            ("max_page_time", "1ms"),
            ("state_ttl", "1ms"),
            ("max_ahead", "1ms"),
        ],
        &[
            ("session_timeout", "1m"),
            ("max_page_time", "30s"),
            ("state_ttl", "2m"),
            ("max_users", "3"),
        ],
        &[
            ("session_timeout", "100000000d"),
            ("max_page_time", "100000000d"),
            ("state_ttl", "100000000d"),
            ("max_ahead", "100000000d"),
        ],
        &[("max_ahead", "0"), ("max_users", "1")],
        &[("max_users", "10000000"), ("max_ahead", "1h")],
    ];
    let set = sets[usize::from(params) % sets.len()];
    FoldConfig::from_params(|k| set.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
        .expect("the fuzz configs are valid")
}

fn accumulator(init: &Init) -> Vec<u8> {
    match init {
        Init::Empty => Vec::new(),
        Init::Raw(bytes) => bytes.clone(),
        Init::Snapshot {
            watermark_ms,
            recent_ms,
            users,
            resume_after,
            version,
        } => {
            let snapshot = RestartSnapshot {
                version: if version.is_multiple_of(4) {
                    *version
                } else {
                    onramp_schemas::SNAPSHOT_VERSION
                },
                watermark_ms: *watermark_ms,
                recent_ms: recent_ms.clone(),
                users: users
                    .iter()
                    .map(|(user, last_active_ms, ids)| {
                        let fold = UserFoldState {
                            last_active_ms: *last_active_ms,
                            recent_ids: ids.iter().map(|i| format!("e{}", i % 40)).collect(),
                        };
                        (format!("u_{}", user % 8), fold)
                    })
                    .collect(),
                resume_after: *resume_after,
            };
            serde_json::to_vec(&snapshot).expect("a snapshot serialises")
        }
    }
}

/// The fold target: a stream of records with offsets and timestamps, from an initial
/// accumulator, folded as `onramp-profile` does.
pub fn check_fold(input: &FoldInput) {
    let cfg = fold_config(input.params);
    // As `onramp-profile` does: a snapshot it cannot read answers every record skipped.
    let Ok(mut state) = FoldState::from_accumulator(cfg, &accumulator(&input.init)) else {
        return;
    };
    let mut offset: i64 = 0;
    for (step, timestamp, record) in input.records.iter().take(512) {
        offset = match step {
            Step::Next => offset.saturating_add(1),
            Step::Skip(n) => offset.saturating_add(i64::from(*n)),
            Step::Exactly(o) => *o,
        };
        let value = match record {
            Record::Event(spec) => through_the_chain(spec, None),
            Record::Forged(spec, t) => through_the_chain(spec, Some(*t)),
            Record::Raw(bytes) => bytes.clone(),
        };
        let update = state.fold_record(&value, offset, *timestamp);
        assert_eq!(update.offset, offset, "an update names another offset");
        assert!(
            state.users_in_memory() <= cfg.max_users,
            "more users held than max_users"
        );
        serde_json::to_vec(&update).expect("an update serialises");
    }
    let snapshot = state.snapshot();
    let bytes = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
    FoldState::from_accumulator(cfg, &bytes).expect("the fold reads its own snapshot");
}
