//! The Protobuf envelope: the committed Rust types are what prost-build generates from
//! `schemas/proto/onramp/v1/event.proto`, and every kind of event survives Protobuf and
//! back unchanged.

use std::path::Path;

use onramp_schemas::proto::{decode_record, encode_record, is_protobuf, ProtoError, PROTOBUF_MAGIC};
use onramp_schemas::Event;

/// Proves `src/proto/onramp.v1.rs` is what prost-build makes of the `.proto` today (so
/// the `.proto` and the Rust types cannot drift). `ONRAMP_UPDATE_PROTO=1` rewrites it.
#[test]
fn generated_types_match_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(["onramp/v1/event.proto"], [root.join("proto")]).expect("the .proto compiles");
    let out = std::env::temp_dir().join(format!("onramp-proto-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    // Maps as BTreeMap: an event's encoding is the same bytes in every run.
    prost_build::Config::new()
        .btree_map(["."])
        .out_dir(&out)
        .compile_fds(fds)
        .expect("prost-build generates the types");
    let generated = std::fs::read_to_string(out.join("onramp.v1.rs")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let committed_path = root.join("src/proto/onramp.v1.rs");
    if std::env::var("ONRAMP_UPDATE_PROTO").as_deref() == Ok("1") {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from what prost-build generates from the .proto; run \
         `ONRAMP_UPDATE_PROTO=1 cargo test -p onramp-schemas --test proto`",
        committed_path.display()
    );
}

fn event(json: &str) -> Event {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// Proves every event type, every trait value kind, absent and present optional fields,
/// an empty page context and the `invite_sent` count default come back from Protobuf as
/// they went in.
#[test]
fn every_kind_of_event_round_trips() {
    let base = r#""event_id":"e","user_id":"u","timestamp":"2026-11-01T09:00:00Z""#;
    let cases = [
        format!(r#"{{{base},"type":"sign_up","properties":{{"method":"email","email":"a@b.c","plan":"pro"}}}}"#),
        format!(r#"{{{base},"type":"sign_up","properties":{{}}}}"#),
        format!(r#"{{{base},"type":"page_view","properties":{{"path":"/","url":"https://x/?a=1","title":"T"}},"context":{{"user_agent":"UA","locale":"en","ip":"10.0.0.1","page":{{"url":"u","path":"p","referrer":"r","title":"t"}}}}}}"#),
        format!(r#"{{{base},"type":"page_view","properties":{{}},"context":{{"page":{{}}}}}}"#),
        format!(r#"{{{base},"type":"click","properties":{{"target":""}}}}"#),
        format!(r#"{{{base},"type":"step_completed","properties":{{"step":"s","form":"f","duration_ms":18446744073709551615}}}}"#),
        format!(r#"{{{base},"type":"email_verified","properties":{{}}}}"#),
        format!(r#"{{{base},"type":"identify","properties":{{"traits":{{"b":true,"i":-9223372036854775808,"f":1.5,"g":1e300,"t":"x","u":18446744073709551615}}}}}}"#),
        format!(r#"{{{base},"type":"identify","properties":{{"traits":{{}}}}}}"#),
        format!(r#"{{{base},"type":"feature_used","properties":{{"feature":"export"}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{"count":1,"role":"admin"}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{"count":0}}}}"#),
        format!(r#"{{{base},"type":"invite_sent","properties":{{"count":4294967295}}}}"#),
        format!(r#"{{{base},"type":"onboarding_completed","properties":{{"flow":"default"}}}}"#),
        r#"{"event_id":"","anonymous_id":"a","session_id":"s","timestamp":"","type":"onboarding_completed","properties":{}}"#.to_string(),
    ];
    for json in &cases {
        let e = event(json);
        let record = encode_record(&e);
        assert!(record.starts_with(&PROTOBUF_MAGIC) && is_protobuf(&record));
        assert_eq!(decode_record(&record).as_ref(), Ok(&e), "{json}");
    }
}

/// Proves what is not an envelope v1 is refused with a reason, never read as something
/// else: another version, a bare marker, garbage, a truncated record, invalid UTF-8 in a
/// string, no event type, a trait without a value or not finite.
#[test]
fn broken_records_are_refused() {
    use onramp_schemas::proto::v1;
    use prost::Message;
    let good = encode_record(&event(
        r#"{"event_id":"e","user_id":"u","timestamp":"2026-11-01T09:00:00Z","type":"click","properties":{"target":"b"}}"#,
    ));
    let undecodable = |record: &[u8]| matches!(decode_record(record), Err(ProtoError::Undecodable(_)));
    assert!(undecodable(&[0x00]), "no marker");
    assert!(undecodable(&[0x00, 0x02, 0x0a, 0x00]), "another version's marker");
    assert!(undecodable(&good[..good.len() - 1]), "truncated");
    assert!(undecodable(&[0x00, 0x01, 0xff, 0xff, 0xff]));
    assert!(undecodable(&[0x00, 0x01, 0x0a, 0x7f]), "length beyond the end");
    // event_id (field 1) holding 0xff: not UTF-8.
    assert!(undecodable(&[0x00, 0x01, 0x0a, 0x01, 0xff]));

    let mut message = v1::Event::decode(&good[2..]).unwrap();
    message.properties = None;
    let mut record = PROTOBUF_MAGIC.to_vec();
    message.encode(&mut record).unwrap();
    assert!(matches!(decode_record(&record), Err(ProtoError::NotAnEvent(path, _)) if path == "type"));

    for (value, what) in [
        (None, "no value set"),
        (Some(v1::trait_value::Value::Float(f64::NAN)), "not a finite number"),
        (
            Some(v1::trait_value::Value::Float(f64::INFINITY)),
            "not a finite number",
        ),
    ] {
        let mut identify = message.clone();
        identify.properties = Some(v1::event::Properties::Identify(v1::Identify {
            traits: [("plan".to_string(), v1::TraitValue { value })].into_iter().collect(),
        }));
        let mut record = PROTOBUF_MAGIC.to_vec();
        identify.encode(&mut record).unwrap();
        assert_eq!(
            decode_record(&record),
            Err(ProtoError::NotAnEvent("properties.traits.plan".into(), what.into()))
        );
    }
}
