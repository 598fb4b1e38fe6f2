//! The built `.wasm` chain in `fluvio-smartengine`: hostile input, restart equivalence,
//! and the chain + `Profile::apply` against the plain reference fold.

use std::collections::BTreeMap;

use onramp::chain::{Chain, ChainParams, InputRecord};
use onramp::store::{Batch, Store, StoreSettings};
use onramp::wasm::Module;
use onramp_logic::validate::sha256_hex;
use onramp_schemas::{Outcome, Profile, ProfileUpdate, RejectReason, RejectedEvent, REJECT_PAYLOAD_HEAD};
use onramp_tests::reference::{reference_fold, ReferenceConfig};
use onramp_tests::synthetic::{self, ts, T0};
use onramp_tests::{as_protobuf, engine, modules, records, run};
use proptest::prelude::*;
use serde_json::json;

const STATE_TTL_MS: i64 = 6 * 3_600_000;

fn updates(out: &[onramp::chain::OutputRecord]) -> Vec<ProfileUpdate> {
    out.iter()
        .map(|r| serde_json::from_slice(&r.value).expect("a ProfileUpdate"))
        .collect()
}

fn fold_into(profiles: &mut BTreeMap<String, Profile>, updates: &[ProfileUpdate]) {
    for u in updates {
        if u.outcome == Outcome::Applied {
            profiles
                .entry(u.user_id.clone())
                .or_insert_with(|| Profile::new(&u.user_id))
                .apply(u);
        }
    }
}

/// Hostile records: (what it is, bytes, the reason validate must give).
fn hostile() -> Vec<(&'static str, Vec<u8>, RejectReason)> {
    let ok = |extra: serde_json::Value| {
        let mut ev = json!({"event_id":"h","type":"page_view","user_id":"u_h","timestamp":"2026-11-01T09:00:00Z","properties":{"path":"/"}});
        for (k, v) in extra.as_object().unwrap() {
            ev[k] = v.clone();
        }
        serde_json::to_vec(&ev).unwrap()
    };
    let mut deep_props = String::from(
        r#"{"event_id":"h","type":"page_view","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{"title":"#,
    );
    deep_props += &"[".repeat(100);
    deep_props += &"]".repeat(100);
    deep_props += "}}";
    vec![
        ("empty record", vec![], RejectReason::InvalidJson),
        ("bad UTF-8", vec![b'{', 0xc3, 0x28, b'}'], RejectReason::InvalidJson),
        ("raw NUL bytes", vec![0, 0, 0, 0], RejectReason::InvalidJson),
        ("NUL inside JSON text", b"{\"event_id\":\"a\0b\"}".to_vec(), RejectReason::InvalidJson),
        ("lone surrogate escape", br#"{"event_id":"\ud800","type":"click"}"#.to_vec(), RejectReason::InvalidJson),
        ("nesting 100k deep", "[".repeat(100_000).into_bytes(), RejectReason::TooLarge),
        ("nesting 20k deep, under the size limit", "[".repeat(20_000).into_bytes(), RejectReason::InvalidJson),
        ("deep nesting inside properties", deep_props.into_bytes(), RejectReason::SchemaViolation),
        ("huge exponent", b"1e999999".to_vec(), RejectReason::InvalidJson),
        ("huge integer as event_id", ok(json!({"event_id": 12_345_678_901_234_567_890u64})), RejectReason::SchemaViolation),
        ("integer beyond u64 as count", br#"{"event_id":"h","type":"invite_sent","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{"count":123456789012345678901234567890}}"#.to_vec(), RejectReason::SchemaViolation),
        ("1 MiB string", ok(json!({"properties": {"path": "x".repeat(1 << 20)}})), RejectReason::TooLarge),
        ("JSON string", br#""hello""#.to_vec(), RejectReason::SchemaViolation),
        ("JSON null", b"null".to_vec(), RejectReason::SchemaViolation),
        ("JSON number", b"42".to_vec(), RejectReason::SchemaViolation),
        ("array", b"[{}]".to_vec(), RejectReason::SchemaViolation),
        ("empty object", b"{}".to_vec(), RejectReason::SchemaViolation),
        ("type is a number", ok(json!({"type": 3})), RejectReason::SchemaViolation),
        ("unknown type", ok(json!({"type": "page_view\u{0}"})), RejectReason::UnknownType),
        ("wrong property type", ok(json!({"properties": {"path": {"a": 1}}})), RejectReason::SchemaViolation),
        ("properties is an array", ok(json!({"properties": [1]})), RejectReason::SchemaViolation),
        ("context is a string", ok(json!({"context": "web"})), RejectReason::SchemaViolation),
        ("empty user_id, no anonymous_id", ok(json!({"user_id": ""})), RejectReason::MissingIdentity),
        ("user_id is null", ok(json!({"user_id": null})), RejectReason::MissingIdentity),
        ("year 9999", ok(json!({"timestamp": "9999-12-31T23:59:59Z"})), RejectReason::TimestampOutOfRange),
        ("timestamp without zone", ok(json!({"timestamp": "2026-11-01T09:00:00"})), RejectReason::SchemaViolation),
        ("headless browser", ok(json!({"context": {"user_agent": "Mozilla/5.0 HeadlessChrome/120.0"}})), RejectReason::Bot),
        ("test user prefix", ok(json!({"user_id": "qa_robot"})), RejectReason::TestUser),
        ("event_id of 10k chars", ok(json!({"event_id": "e".repeat(10_000)})), RejectReason::SchemaViolation),
        ("100 traits", br#"{"event_id":"h","type":"identify","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{"traits":{"#.iter().copied().chain((0..100).map(|i| format!("\"t{i}\":1")).collect::<Vec<_>>().join(",").into_bytes()).chain(b"}}}".iter().copied()).collect(), RejectReason::SchemaViolation),
        ("user_id repeated", DUP_TOP.to_vec(), RejectReason::SchemaViolation),
        ("user_id repeated through an escape", br#"{"event_id":"h","type":"click","user_id":"u_a","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b"},"user\u005fid":"u_b"}"#.to_vec(), RejectReason::SchemaViolation),
        ("property repeated", br#"{"event_id":"h","type":"click","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"a","target":"b"}}"#.to_vec(), RejectReason::SchemaViolation),
        ("trait repeated", br#"{"event_id":"h","type":"identify","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{"traits":{"plan":"free","plan":"pro"}}}"#.to_vec(), RejectReason::SchemaViolation),
        ("context.page key repeated", br#"{"event_id":"h","type":"page_view","user_id":"u","timestamp":"2026-11-01T09:00:00Z","context":{"page":{"path":"/a","path":"/b"}}}"#.to_vec(), RejectReason::SchemaViolation),
        ("key repeated in an object in an array", br#"{"event_id":"h","type":"page_view","user_id":"u","timestamp":"2026-11-01T09:00:00Z","extra":[{"k":1},{"k":1,"k":2}]}"#.to_vec(), RejectReason::SchemaViolation),
        ("event_id of 300 bytes", ok(json!({"event_id": "e".repeat(300)})), RejectReason::SchemaViolation),
        ("user_id of 300 bytes", ok(json!({"user_id": "u".repeat(300)})), RejectReason::SchemaViolation),
        ("anonymous_id of 300 bytes", ok(json!({"user_id": null, "anonymous_id": "a".repeat(300)})), RejectReason::SchemaViolation),
        ("session_id of 300 bytes", ok(json!({"session_id": "s".repeat(300)})), RejectReason::SchemaViolation),
    ]
}

/// A record whose `user_id` appears twice: the attack that split one user over two
/// partitions.
const DUP_TOP: &[u8] = br#"{"user_id":"X","event_id":"h","type":"click","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b"},"user_id":"X"}"#;

fn rejects(out: &[onramp::chain::OutputRecord]) -> Vec<RejectedEvent> {
    out.iter()
        .map(|r| serde_json::from_slice(&r.value).expect("a RejectedEvent"))
        .collect()
}

fn rejected_mode() -> ChainParams {
    let mut params = ChainParams::default();
    params.set(Module::Validate, "mode", "rejected");
    params
}

/// Checks a reject describes `bytes`: its head (a prefix of the record decoded, within
/// the bound, the whole record when it fits), its size and its hash.
fn assert_describes(r: &RejectedEvent, bytes: &[u8], what: &str) {
    let whole = String::from_utf8_lossy(bytes);
    assert!(
        r.payload.len() <= REJECT_PAYLOAD_HEAD,
        "{what}: payload of {} bytes",
        r.payload.len()
    );
    assert!(
        whole.starts_with(&r.payload),
        "{what}: payload is not the record's start"
    );
    if whole.len() <= REJECT_PAYLOAD_HEAD {
        assert_eq!(r.payload, whole, "{what}: a short record is kept whole");
    } else {
        assert!(r.payload.len() + 4 > REJECT_PAYLOAD_HEAD, "{what}: payload cut short");
    }
    assert_eq!(r.payload_bytes, bytes.len() as u64, "{what}: payload_bytes");
    assert_eq!(r.payload_sha256, sha256_hex(bytes), "{what}: payload_sha256");
}

/// Runs `corpus` through the modules alone and chained: validate `mode=rejected` gives
/// every record its reason in a small reject that describes it, the full chain drops them
/// all, enrich turns each into a rejected-event record, profile alone skips each with a
/// reason, and nothing errors.
fn assert_all_rejected<N: AsRef<str>>(corpus: &[(N, Vec<u8>, RejectReason)]) {
    let values: Vec<Vec<u8>> = corpus.iter().map(|(_, v, _)| v.clone()).collect();
    let input = records(&values);
    let out = run(&[Module::Validate], &rejected_mode(), &input);
    assert_eq!(out.len(), corpus.len(), "every hostile record is rejected");
    for ((what, bytes, reason), rec) in corpus.iter().zip(&out) {
        let what = what.as_ref();
        let r: RejectedEvent = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(r.reason, *reason, "{what}: {}", r.detail);
        assert_describes(&r, bytes, what);
        assert!(
            rec.value.len() < 8 * 1024,
            "{what}: a reject of {} bytes",
            rec.value.len()
        );
    }
    assert!(run(&Module::ALL, &ChainParams::default(), &input).is_empty());
    let enriched = run(&[Module::Enrich], &ChainParams::default(), &input);
    assert_eq!(enriched.len(), corpus.len());
    let skipped = updates(&run(&[Module::Profile], &ChainParams::default(), &input));
    assert!(skipped
        .iter()
        .all(|u| u.outcome == Outcome::Skipped && u.skip_reason.is_some()));
}

/// Proves no module errors or traps on any hostile record, alone or chained, and that
/// `mode=rejected` gives each one the right reason.
#[test]
fn hostile_inputs_never_error_and_get_the_right_reason() {
    assert_all_rejected(&hostile());
    // A 1 MiB-scale event under a raised limit goes all the way through.
    let mut big = ChainParams::default();
    big.set(Module::Validate, "max_event_bytes", "1048576");
    let huge = serde_json::to_vec(&json!({"event_id":"big","type":"page_view","user_id":"u_big","timestamp":"2026-11-01T09:00:00Z","properties":{"title": "\u{0}é".repeat(100_000)}})).unwrap();
    let out = updates(&run(&Module::ALL, &big, &records(&[huge])));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].outcome, Outcome::Applied);
}

/// Proves repeated keys, at the top or nested, are `schema_violation`s whose detail
/// names the repeated key's path, through the built module.
#[test]
fn repeated_keys_are_rejected_with_their_path() {
    let cases: [(&[u8], &str); 4] = [
        (DUP_TOP, "user_id: duplicate key"),
        (
            br#"{"event_id":"h","type":"identify","user_id":"u","timestamp":"2026-11-01T09:00:00Z","properties":{"traits":{"plan":"free","plan":"pro"}}}"#,
            "properties.traits.plan: duplicate key",
        ),
        (
            br#"{"event_id":"h","type":"page_view","user_id":"u","timestamp":"2026-11-01T09:00:00Z","context":{"page":{"path":"/a","path":"/b"}}}"#,
            "context.page.path: duplicate key",
        ),
        (
            br#"{"event_id":"h","type":"page_view","user_id":"u","timestamp":"2026-11-01T09:00:00Z","extra":[{"k":1},{"k":1,"k":2}]}"#,
            "extra[1].k: duplicate key",
        ),
    ];
    let values: Vec<&[u8]> = cases.iter().map(|(v, _)| *v).collect();
    let out = rejects(&run(&[Module::Validate], &rejected_mode(), &records(&values)));
    assert_eq!(out.len(), cases.len());
    for ((record, want), r) in cases.iter().zip(&out) {
        assert_eq!(
            r.reason,
            RejectReason::SchemaViolation,
            "{}",
            String::from_utf8_lossy(record)
        );
        assert!(r.detail.starts_with(want), "expected `{want}…`, got `{}`", r.detail);
        assert_eq!(r.identity, None, "a record with a repeated key has no identity");
    }
    // Without the repeat the same event is accepted, and keyed by its user.
    let clean = br#"{"event_id":"h","type":"click","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b"},"user_id":"X"}"#;
    assert_eq!(
        run(&[Module::Validate], &ChainParams::default(), &records(&[clean])).len(),
        1
    );
    assert_eq!(onramp::partition::record_key(clean), Some(b"X".to_vec()));
    assert_eq!(onramp::partition::record_key(DUP_TOP), None);
}

/// Proves ids over their bound (300 bytes) are `schema_violation`s naming the field and
/// its size, through the built module, and ids at the bound pass.
#[test]
fn long_ids_are_rejected_with_their_field() {
    let event = |field: &str, len: usize| {
        let mut ev = json!({"event_id":"h","type":"page_view","user_id":"u_h","timestamp":"2026-11-01T09:00:00Z"});
        ev[field] = json!("x".repeat(len));
        serde_json::to_vec(&ev).unwrap()
    };
    let fields = [
        ("event_id", 128),
        ("user_id", 256),
        ("anonymous_id", 256),
        ("session_id", 256),
    ];
    let long: Vec<Vec<u8>> = fields.iter().map(|(f, _)| event(f, 300)).collect();
    let out = rejects(&run(&[Module::Validate], &rejected_mode(), &records(&long)));
    assert_eq!(out.len(), fields.len());
    for ((field, max), r) in fields.iter().zip(&out) {
        assert_eq!(r.reason, RejectReason::SchemaViolation);
        assert_eq!(r.detail, format!("{field}: 300 bytes; the limit is {max}"));
    }
    let at_bound: Vec<Vec<u8>> = fields.iter().map(|(f, max)| event(f, *max)).collect();
    assert_eq!(
        run(&[Module::Validate], &ChainParams::default(), &records(&at_bound)).len(),
        fields.len(),
        "ids at their bound are accepted"
    );
}

/// Proves a reject stays small whatever the record: 200 KB of NUL bytes (6 bytes each
/// once escaped in JSON), as `too_large` and, under the largest size limit, as
/// `invalid_json`, gives rejects under 8 KB, many of them in one batch, each still
/// describing the whole record.
#[test]
fn rejects_of_huge_records_stay_small() {
    let nul = vec![0u8; 200_000];
    let input = records(&vec![nul.clone(); 40]);
    for (limit, reason) in [
        (None, RejectReason::TooLarge),
        (Some("1048576"), RejectReason::InvalidJson),
    ] {
        let mut params = rejected_mode();
        if let Some(limit) = limit {
            params.set(Module::Validate, "max_event_bytes", limit);
        }
        let out = run(&[Module::Validate], &params, &input);
        assert_eq!(out.len(), input.len());
        for rec in &out {
            assert!(rec.value.len() < 8 * 1024, "a reject of {} bytes", rec.value.len());
            let r: RejectedEvent = serde_json::from_slice(&rec.value).unwrap();
            assert_eq!(r.reason, reason);
            assert_eq!(r.payload, "\u{0}".repeat(REJECT_PAYLOAD_HEAD));
            assert_describes(&r, &nul, "200 KB of NUL");
        }
    }
}

/// Proves a rejected payload with invalid UTF-8 keeps U+FFFD for each bad sequence, and
/// that the cut of a long payload never splits a character; and that a reject carries
/// the identity of a readable record.
#[test]
fn rejected_payloads_are_lossy_and_cut_at_a_char_boundary() {
    let mut bad_utf8 = br#"{"event_id":"h","type":"click","user_id":"u_h","note":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xc3, 0x28, 0xe2, 0x82]);
    bad_utf8.extend_from_slice(br#""}"#);
    // 107 ASCII bytes, then 2-byte characters: the 1024-byte cut falls inside one.
    let long = format!(r#"{{"event_id":"h","type":"click","user_id":"u_h","timestamp":"2026-11-01T09:00:00Z","properties":{{"target":"a{}"}},"context":{{"user_agent":"Googlebot/2.1"}}}}"#, "é".repeat(1_000)).into_bytes();
    let out = rejects(&run(
        &[Module::Validate],
        &rejected_mode(),
        &records(&[bad_utf8.clone(), long.clone()]),
    ));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].reason, RejectReason::InvalidJson);
    assert!(
        out[0].payload.ends_with("\"note\":\"\u{fffd}\u{fffd}(\u{fffd}\"}"),
        "{}",
        out[0].payload
    );
    assert_describes(&out[0], &bad_utf8, "invalid UTF-8");
    assert_eq!(out[0].identity, None, "an unreadable record has no identity");
    assert_eq!(out[1].reason, RejectReason::Bot);
    assert_describes(&out[1], &long, "2-byte characters");
    assert!(out[1].payload.ends_with('é'), "the cut keeps whole characters");
    assert_eq!(
        out[1].payload.len(),
        REJECT_PAYLOAD_HEAD - 1,
        "cut before the split character"
    );
    assert_eq!(out[1].identity.as_deref(), Some("u_h"));
}

fn stream(n: usize, users: u64, seed: u64) -> Vec<Vec<u8>> {
    synthetic::stream(n, users, n as i64 * 20_000, seed)
}

/// Proves no module keeps what it emitted beyond its bounds: with each module's memory
/// capped at 12 MiB plus the profile aggregate's replay cache (`REPLAY_BYTES`, the one
/// output kept on purpose), the full chain passes 100,000 events (tens of MB of output per
/// module) and the reject pass 100,000 rejects, batch after batch. The exports
/// `#[smartmodule]` generates leak every call's output, and the engine never frees it, so
/// modules built with them fail here once their output passes the cap; a long run would
/// stop at the engine's 1 GB.
#[test]
fn modules_do_not_keep_their_output() {
    const LIMIT: usize = 12 << 20;
    let events = synthetic::stream(100_000, 500, 100_000 * 20_000, 3);
    let junk: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("not json {i} {}", "x".repeat(200)).into_bytes())
        .collect();
    for (what, steps, params, values, limit) in [
        (
            "the full chain",
            &Module::ALL[..],
            ChainParams::default(),
            &events,
            LIMIT + onramp_logic::replay::REPLAY_BYTES,
        ),
        (
            "the reject pass",
            &[Module::Validate][..],
            rejected_mode(),
            &junk,
            LIMIT,
        ),
    ] {
        let mut chain = Chain::build_with_memory_limit(engine(), modules(), steps, &params, None, limit)
            .unwrap_or_else(|e| panic!("{e}"));
        let input = records(values);
        let mut out_bytes = 0;
        for (i, batch) in input.chunks(1_000).enumerate() {
            let out = chain
                .process(batch)
                .unwrap_or_else(|e| panic!("{what}, batch {i} ({out_bytes} bytes out so far): {e}"));
            assert_eq!(out.len(), batch.len(), "{what}: one output per record");
            out_bytes += out.iter().map(|r| r.value.len()).sum::<usize>();
        }
        // More than the cap plus 12 MiB: a module keeping its output would have failed.
        assert!(out_bytes > limit + LIMIT, "{what}: only {out_bytes} bytes went out");
    }
}

/// Proves a stream split in two, the second half started from the restart snapshot the
/// consumer's store builds at its checkpoint (clock and per-partition fold state), gives
/// exactly the updates of one unbroken stream.
#[test]
fn restart_from_snapshot_equals_an_unbroken_stream() {
    let values = stream(600, 25, 7);
    let input = records(&values);
    let unbroken = run(&Module::ALL, &ChainParams::default(), &input);
    for split in [1, 2, 137, 300, input.len() - 1] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            &StoreSettings {
                partitions: 1,
                chain_params: "defaults".into(),
            },
        )
        .unwrap();
        let mut first = Chain::full(engine(), modules(), &ChainParams::default(), None).unwrap();
        let mut out = first.process(&input[..split]).unwrap();
        store
            .commit(&Batch {
                partition: 0,
                last_offset: split as i64 - 1,
                events_in: split as u64,
                updates: updates(&out),
                rejects: Vec::new(),
                input: None,
            })
            .unwrap();
        let snapshot = store.snapshot(0, STATE_TTL_MS).unwrap();
        let mut second = Chain::full(engine(), modules(), &ChainParams::default(), Some(&snapshot)).unwrap();
        out.extend(second.process(&input[split..]).unwrap());
        assert_eq!(out, unbroken, "split at {split}");
    }
}

/// Proves the chain's updates folded with `Profile::apply` equal the reference fold on a
/// generated stream with late events and retries, batch boundaries anywhere.
#[test]
fn chain_plus_apply_equals_the_reference_fold() {
    let values = stream(2_000, 60, 11);
    let input = records(&values);
    let mut chain = Chain::full(engine(), modules(), &ChainParams::default(), None).unwrap();
    let mut profiles = BTreeMap::new();
    for batch in input.chunks(97) {
        fold_into(&mut profiles, &updates(&chain.process(batch).unwrap()));
    }
    let numbered: Vec<(i64, Vec<u8>)> = values.into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
    let expected = reference_fold(&numbered, ReferenceConfig::default());
    assert_eq!(profiles.len(), expected.len());
    for (user, want) in &expected {
        assert_eq!(profiles.get(user), Some(want), "profile of {user}");
    }
}

fn arb_event() -> impl Strategy<Value = (u8, u8, i64, u8, bool, bool)> {
    // (user, kind, minutes after T0, variant, has user agent, also anonymous id)
    (0u8..6, 0u8..9, 0i64..240, 0u8..4, any::<bool>(), any::<bool>())
}

fn event_json(i: usize, (user, kind, minutes, variant, ua, anon): (u8, u8, i64, u8, bool, bool)) -> Vec<u8> {
    let steps = ["profile", "workspace", "billing", "sign_up"];
    let mut ev = match kind {
        0 => json!({"type":"sign_up","properties":{"email": format!("p{variant}@acme.io"),"method":"email"}}),
        1 => json!({"type":"page_view","properties":{"path": format!("/p{variant}"),"title": format!("T{variant}"),
                    "url": if variant % 2 == 0 { format!("https://a.example/?utm_source=s{variant}&utm_medium=m") } else { "https://a.example/".to_string() }}}),
        2 => json!({"type":"click","properties":{"target": format!("b{variant}")}}),
        3 => json!({"type":"step_completed","properties":{"step": (steps[variant as usize])}}),
        4 => json!({"type":"email_verified"}),
        5 => {
            json!({"type":"identify","properties":{"traits":{"plan": format!("plan{variant}"), "n": variant, "email": format!("i{variant}@acme.io")}}})
        }
        6 => json!({"type":"feature_used","properties":{"feature": format!("f{variant}")}}),
        7 => json!({"type":"invite_sent","properties":{"count": variant + 1}}),
        _ => json!({"type":"onboarding_completed"}),
    };
    ev["event_id"] = json!(format!("e{i}"));
    if user == 5 {
        ev["anonymous_id"] = json!("anon_5");
    } else {
        ev["user_id"] = json!(format!("u{user}"));
        if anon {
            ev["anonymous_id"] = json!(format!("anon_{variant}"));
        }
    }
    ev["timestamp"] = json!(ts(T0 + minutes * 60_000 + i as i64));
    if ua {
        ev["context"] = json!({"user_agent": (["Mozilla/5.0 (iPhone) Mobile Safari/604.1", "Mozilla/5.0 (Windows NT 10.0) Firefox/120.0"][variant as usize % 2]),
                               "locale": (["en_us", "FR", "bogus-locale-x"][variant as usize % 3]),
                               "page": {"referrer": format!("https://r{variant}.example/")}});
    }
    serde_json::to_vec(&ev).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Proves, for arbitrary event mixes with shuffled event times (minutes drawn at
    /// random, so arrival order is not time order) and injected retries, that the Wasm
    /// chain folded by `Profile::apply` equals the plain reference fold.
    #[test]
    fn prop_chain_equals_reference(
        events in prop::collection::vec(arb_event(), 1..80),
        dups in prop::collection::vec((0usize..80, 1usize..6), 0..10),
    ) {
        let mut values: Vec<Vec<u8>> = events.iter().enumerate().map(|(i, e)| event_json(i, *e)).collect();
        for (at, later) in dups {
            if at < values.len() {
                let copy = values[at].clone();
                values.insert((at + later).min(values.len()), copy);
            }
        }
        let out = run(&Module::ALL, &ChainParams::default(), &records(&values));
        let mut profiles = BTreeMap::new();
        fold_into(&mut profiles, &updates(&out));
        let numbered: Vec<(i64, Vec<u8>)> = values.into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect();
        let expected = reference_fold(&numbered, ReferenceConfig::default());
        prop_assert_eq!(profiles, expected);
    }
}

/// Proves an input batch keeps offsets: every update names the offset of its record, in
/// a batch whose base offset is not zero and whose rejected records leave gaps.
#[test]
fn updates_carry_the_offsets_of_their_records() {
    let values = stream(50, 5, 3);
    let mut input: Vec<InputRecord> = records(&values);
    for r in input.iter_mut() {
        r.offset += 1_000;
    }
    input[10].value = b"garbage".to_vec();
    let out = run(&Module::ALL, &ChainParams::default(), &input);
    let offsets: Vec<i64> = updates(&out).iter().map(|u| u.offset).collect();
    let expected: Vec<i64> = (1_000..1_000 + input.len() as i64).filter(|o| *o != 1_010).collect();
    assert_eq!(offsets, expected);
    assert!(out.iter().zip(updates(&out)).all(|(r, u)| r.offset == u.offset));
}

/// Proves accepted records leave `onramp-validate` byte for byte, key included.
#[test]
fn validate_passes_accepted_records_unchanged() {
    let values = stream(30, 3, 5);
    let mut input = records(&values);
    input.iter_mut().for_each(|r| r.key = Some(b"k".to_vec()));
    let out = run(&[Module::Validate], &ChainParams::default(), &input);
    assert_eq!(out.len(), input.len());
    for (i, o) in input.iter().zip(&out) {
        assert_eq!((&i.key, &i.value, i.offset), (&o.key, &o.value, o.offset));
    }
}

/// Proves a producer batch the SPU feeds a second time (after it cut a fetch at
/// `max_bytes`, it resumes at that batch's first offset, with the same aggregate) gives
/// byte for byte the updates it gave the first time and folds nothing again: with a
/// re-feed after every third batch, the updates of the first feeds equal an unbroken run.
#[test]
fn refed_batches_give_the_same_updates() {
    let mut values = stream(3_000, 40, 13);
    for i in (5..values.len()).step_by(37) {
        values[i] = format!("junk {i}").into_bytes(); // rejected: no update, a gap in the offsets
    }
    let input = records(&values);
    let unbroken = run(&Module::ALL, &ChainParams::default(), &input);
    let mut chain = Chain::full(engine(), modules(), &ChainParams::default(), None).unwrap();
    let mut out = Vec::new();
    let (mut at, mut refeeds, mut size) = (0, 0, 1);
    while at < input.len() {
        let batch = &input[at..(at + size).min(input.len())];
        let first = chain.process(batch).unwrap();
        if (at / 7) % 3 == 0 {
            let again = chain.process(batch).unwrap();
            assert_eq!(again, first, "the re-fed batch at offset {at}");
            refeeds += 1;
        }
        out.extend(first);
        at += batch.len();
        size = size % 97 + 13;
    }
    assert!(refeeds > 10, "only {refeeds} re-feeds");
    assert_eq!(out, unbroken, "re-feeds changed the stream's updates");
}

/// Proves the replay cache's bound: one input batch whose updates exceed it (8 MiB) is
/// answered, when fed again, with its newest updates byte for byte and a `replay_evicted`
/// skip for the oldest (never a second fold), so the consumer reopens instead of
/// committing a wrong update.
#[test]
fn a_refed_batch_beyond_the_replay_bound_is_flagged_not_refolded() {
    use onramp_logic::replay::REPLAY_BYTES;
    use onramp_schemas::SkipKind;
    let values = stream(40_000, 2_000, 17);
    let input = records(&values);
    let mut chain = Chain::full(engine(), modules(), &ChainParams::default(), None).unwrap();
    let first = chain.process(&input).unwrap();
    let first_bytes: usize = first.iter().map(|r| r.value.len()).sum();
    assert!(
        first_bytes > REPLAY_BYTES,
        "the batch's updates ({first_bytes} bytes) fit the cache"
    );
    let again = chain.process(&input).unwrap();
    assert_eq!(again.len(), first.len());
    let held = again.iter().zip(&first).filter(|(a, f)| a == f).count();
    let held_bytes: usize = first[first.len() - held..].iter().map(|r| r.value.len()).sum();
    assert!(
        // The cache counts each buffer's capacity (up to twice its length) and a handle.
        held_bytes <= REPLAY_BYTES && held_bytes > REPLAY_BYTES / 4,
        "{held_bytes} bytes held"
    );
    for (a, f) in again.iter().zip(&first).take(first.len() - held) {
        let u: ProfileUpdate = serde_json::from_slice(&a.value).unwrap();
        assert_eq!(u.skip_kind, Some(SkipKind::ReplayEvicted), "offset {}", f.offset);
        assert_eq!(u.offset, f.offset);
    }
    assert_eq!(again[first.len() - held..], first[first.len() - held..]);
}

/// Records that probe the flat readers' edges: each is read by `parse_event` and by the
/// reference reading, which must agree (value or reason).
fn reader_edges() -> Vec<Vec<u8>> {
    let base = r#""event_id":"r","user_id":"u","timestamp":"2026-11-01T09:00:00Z""#;
    let mut out: Vec<Vec<u8>> = [
        format!(r#"{{{base},"type":"click","properties":null}}"#),
        format!(r#"{{{base},"type":"email_verified"}}"#),
        format!(r#"{{{base},"type":"click"}}"#),
        format!(r#"{{"properties":{{"target":"b"}},{base},"type":"click"}}"#),
        format!(r#"{{{base},"type":"click","properties":{{"target":"b"}},"extra":1e400}}"#),
        format!(r#"{{{base},"type":"click","properties":{{"target":"b","extra":-1e999}}}}"#),
        format!(
            r#"{{{base},"type":"click","properties":{{"target":"b"}},"extra":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
        format!(
            r#"{{{base},"type":"click","properties":{{"target":"b"}},"extra":{}{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        ),
        format!(r#"{{{base},"type":"click","type":"click","properties":{{"target":"b"}}}}"#),
        format!(r#"{{{base},"typ\u0065":"click","properties":{{"target":"b"}}}}"#),
        format!(r#"{{{base},"type":"cl\u0069ck","properties":{{"target":"b"}}}}"#),
        format!(r#"{{{base},"type":"click","properties":{{"target":"b"}},"properties":{{"target":"c"}}}}"#),
        format!(r#"{{{base},"type":"click","properties":{{"target":"b"}},"enrichment":{{"bogus":true}}}}"#),
        format!(r#"{{{base},"type":"click","properties":{{"target":"b"}},"enrichment":null}}"#),
        format!(
            r#"{{{base},"type":"identify","properties":{{"traits":{{"a":1,"b":1.5,"c":"x","d":true,"e":null}}}}}}"#
        ),
        format!(r#"{{{base},"type":"identify","properties":{{"traits":{{"a":18446744073709551616}}}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{"count":1.0}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{"count":4294967296}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{}}}}"#),
        format!(r#"{{{base},"type":"page_view","context":null}}"#),
        format!(r#"{{{base},"type":"page_view","context":{{"page":null,"user_agent":null}}}}"#),
        format!(r#"{{{base},"type":"page_view","session_id":null,"anonymous_id":null}}"#),
        format!(r#"{{{base},"type":"page_view"}} "#),
        format!(r#"{{{base},"type":"page_view"}} x"#),
        format!(r#"{{{base},"type":"page_view","timestamp":"2026-11-01T09:00:00Z"}}"#),
        format!(r#"{{{base},"type":null}}"#),
        r#"{"event_id":"r","type":"click","properties":{"target":"b"}}"#.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    // Invalid UTF-8 inside an ignored string, and inside a read one.
    let mut ignored = format!(r#"{{{base},"type":"click","properties":{{"target":"b"}},"extra":"x"#).into_bytes();
    ignored.extend_from_slice(&[0xff, b'"', b'}']);
    out.push(ignored);
    let mut read = format!(r#"{{{base},"type":"click","properties":{{"target":"b"#).into_bytes();
    read.extend_from_slice(&[0xc3, b'"', b'}', b'}']);
    out.push(read);
    out
}

/// Proves the fast readers change nothing: `parse_event` (strict reading, then the flat
/// reader) gives exactly what the reference reading (a `serde_json::Value`, then typed
/// parts) gives, event or reason, and the profile's flat reader of enriched events gives
/// exactly what the derived reader gives, on the hostile corpus, the readers' edge cases,
/// synthetic traffic and the generator's (malformed lines included).
#[test]
fn fast_readers_equal_the_reference_readers() {
    use onramp::generator::{Generator, GeneratorConfig};
    use onramp_logic::enrich::{enrich, EnrichConfig};
    use onramp_logic::validate::{parse_event, parse_event_reference};
    use onramp_logic::wire::read_enriched;
    use onramp_schemas::EnrichedEvent;

    let generated = Generator::new(GeneratorConfig {
        seed: 7,
        users: 300,
        ..GeneratorConfig::default()
    })
    .map(String::into_bytes);
    let records: Vec<Vec<u8>> = hostile()
        .into_iter()
        .map(|(_, bytes, _)| bytes)
        .chain(reader_edges())
        .chain(stream(2_000, 50, 11))
        .chain(generated)
        .collect();
    let (mut events, mut enriched) = (0, 0);
    for record in &records {
        let fast = parse_event(record);
        assert_eq!(
            fast,
            parse_event_reference(record),
            "{}",
            String::from_utf8_lossy(record)
        );
        let Ok(event) = fast else { continue };
        events += 1;
        let Ok(e) = enrich(event, &EnrichConfig::default()) else {
            continue;
        };
        let bytes = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            read_enriched(&bytes).as_ref(),
            Some(&e),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        enriched += 1;
        // What profile may be fed besides enrich's output: the same, cut or changed.
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for field in ["properties", "enrichment", "event_id", "type"] {
            let mut cut = value.clone();
            cut.as_object_mut().unwrap().remove(field);
            let cut = serde_json::to_vec(&cut).unwrap();
            if let Some(fast) = read_enriched(&cut) {
                assert_eq!(
                    Some(fast),
                    serde_json::from_slice::<EnrichedEvent>(&cut).ok(),
                    "without {field}"
                );
            }
        }
        value["enrichment"]["hour"] = json!(99.5);
        assert_eq!(read_enriched(&serde_json::to_vec(&value).unwrap()), None);
    }
    assert!(
        events > 1_000 && enriched > 1_000,
        "{events} events, {enriched} enriched"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Proves `parse_event` equals the reference reading on damaged records: valid events
    /// with bytes overwritten, inserted or cut at random.
    #[test]
    fn prop_fast_event_reader_equals_the_reference(
        event in arb_event(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        use onramp_logic::validate::{parse_event, parse_event_reference};
        let mut bytes = event_json(1, event);
        for (at, byte, how) in edits {
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => bytes.truncate(i),
            }
            if bytes.is_empty() {
                break;
            }
        }
        prop_assert_eq!(parse_event(&bytes), parse_event_reference(&bytes));
    }
}

/// Hostile Protobuf records: (what it is, bytes, the reason validate must give).
fn hostile_protobuf() -> Vec<(String, Vec<u8>, RejectReason)> {
    use onramp_schemas::proto::{v1, PROTOBUF_MAGIC};
    use prost::Message;
    let good = as_protobuf(
        br#"{"event_id":"h","type":"click","user_id":"u_h","timestamp":"2026-11-01T09:00:00Z","properties":{"target":"b"}}"#,
    );
    let message = v1::Event::decode(&good[2..]).unwrap();
    let encode = |m: &v1::Event| {
        let mut out = PROTOBUF_MAGIC.to_vec();
        m.encode(&mut out).unwrap();
        out
    };
    let mut no_type = message.clone();
    no_type.properties = None;
    let identify = |value: Option<v1::trait_value::Value>| {
        let mut m = message.clone();
        m.properties = Some(v1::event::Properties::Identify(v1::Identify {
            traits: [("plan".to_string(), v1::TraitValue { value })].into_iter().collect(),
        }));
        encode(&m)
    };
    // An unknown field (99) holding groups nested far beyond prost's recursion limit.
    let mut deep = good.clone();
    deep.extend([0x9b, 0x06].repeat(5_000));
    let mut cases: Vec<(String, Vec<u8>, RejectReason)> = vec![
        (
            "bare marker: an empty envelope, no event type".into(),
            vec![0x00, 0x01],
            RejectReason::SchemaViolation,
        ),
        (
            "version 2's marker: not Protobuf, so JSON".into(),
            [&[0x00, 0x02][..], &good[2..]].concat(),
            RejectReason::InvalidJson,
        ),
        ("a lone 0x00".into(), vec![0x00], RejectReason::InvalidJson),
        (
            "truncated".into(),
            good[..good.len() - 3].to_vec(),
            RejectReason::InvalidProtobuf,
        ),
        (
            "garbage after the marker".into(),
            vec![0x00, 0x01, 0xff, 0xff, 0xff, 0xff],
            RejectReason::InvalidProtobuf,
        ),
        (
            "length past the end".into(),
            vec![0x00, 0x01, 0x0a, 0xff, 0xff, 0x03],
            RejectReason::InvalidProtobuf,
        ),
        (
            "event_id not UTF-8".into(),
            vec![0x00, 0x01, 0x0a, 0x02, 0xc3, 0x28],
            RejectReason::InvalidProtobuf,
        ),
        ("groups nested 5,000 deep".into(), deep, RejectReason::InvalidProtobuf),
        (
            "huge record".into(),
            [&good[..], &vec![0u8; 40_000][..]].concat(),
            RejectReason::TooLarge,
        ),
        ("no event type".into(), encode(&no_type), RejectReason::SchemaViolation),
        (
            "trait without a value".into(),
            identify(None),
            RejectReason::SchemaViolation,
        ),
        (
            "NaN trait".into(),
            identify(Some(v1::trait_value::Value::Float(f64::NAN))),
            RejectReason::SchemaViolation,
        ),
    ];
    // Every JSON hostile record that reads as an event but is refused later keeps its
    // reason as Protobuf.
    for (what, bytes, reason) in hostile() {
        if onramp_logic::validate::parse_event(&bytes).is_ok() {
            cases.push((format!("{what} (as Protobuf)"), as_protobuf(&bytes), reason));
        }
    }
    cases
}

/// Proves every hostile Protobuf record is rejected with the right reason and a bounded
/// reject, that the modules never error on them alone or chained, and that an event
/// refused for what it says (a bot, a test user, an id too long, a time out of range) is
/// refused for the same reason and with the same detail as its JSON twin.
#[test]
fn hostile_protobuf_records_get_the_right_reason() {
    let corpus = hostile_protobuf();
    assert!(corpus.len() > 15, "{} cases", corpus.len());
    assert_all_rejected(&corpus);

    let json: Vec<Vec<u8>> = hostile()
        .into_iter()
        .map(|(_, bytes, _)| bytes)
        .filter(|bytes| onramp_logic::validate::parse_event(bytes).is_ok())
        .collect();
    let proto: Vec<Vec<u8>> = json.iter().map(|v| as_protobuf(v)).collect();
    // (`too_large` names the record's size, which differs between the two forms.)
    let reasons = |values: &[Vec<u8>]| -> Vec<(RejectReason, Option<String>, Option<String>)> {
        rejects(&run(&[Module::Validate], &rejected_mode(), &records(values)))
            .into_iter()
            .map(|r| {
                (
                    r.reason,
                    (r.reason != RejectReason::TooLarge).then_some(r.detail),
                    r.identity,
                )
            })
            .collect()
    };
    assert_eq!(reasons(&proto), reasons(&json));
}

/// Proves a topic mixing JSON and Protobuf events gives the profiles of the same events
/// all in JSON (and the reference fold's), with the same updates record for record; and
/// that a Protobuf record is the same event as its JSON twin after enrich.
#[test]
fn a_mixed_json_and_protobuf_stream_equals_the_json_stream() {
    let values = stream(2_000, 60, 13);
    let mixed: Vec<Vec<u8>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 3 == 0 { v.clone() } else { as_protobuf(v) })
        .collect();
    assert!(mixed.iter().filter(|v| v.first() == Some(&0)).count() > 1_000);
    let json_out = run(&Module::ALL, &ChainParams::default(), &records(&values));
    let mixed_out = run(&Module::ALL, &ChainParams::default(), &records(&mixed));
    assert_eq!(updates(&mixed_out), updates(&json_out));
    let mut profiles = BTreeMap::new();
    fold_into(&mut profiles, &updates(&mixed_out));
    let numbered: Vec<(i64, Vec<u8>)> = values.iter().cloned().enumerate().map(|(i, v)| (i as i64, v)).collect();
    assert_eq!(profiles, reference_fold(&numbered, ReferenceConfig::default()));
    let enrich = |v: &[Vec<u8>]| {
        run(
            &[Module::Validate, Module::Enrich],
            &ChainParams::default(),
            &records(v),
        )
    };
    assert_eq!(enrich(&mixed), enrich(&values));
}
