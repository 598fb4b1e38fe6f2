//! The JSON Schema files in `schemas/json/` against the Rust types and the examples.

use std::path::{Path, PathBuf};

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Proves the committed schema files are exactly what the Rust types generate; when this
/// fails, run `cargo run -p onramp-schemas --features schema --bin generate-schemas`.
#[test]
fn committed_schemas_match_the_types() {
    let generated = onramp_schemas::json_schemas();
    for (name, schema) in &generated {
        let path = schemas_dir().join("json").join(name);
        assert_eq!(
            &read_json(&path),
            schema,
            "{name} is stale: run `cargo run -p onramp-schemas --features schema --bin generate-schemas`"
        );
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name} is draft 2020-12"
        );
    }
    let files = std::fs::read_dir(schemas_dir().join("json")).unwrap().count();
    assert_eq!(files, generated.len(), "schemas/json holds a file no type generates");
}

fn examples(kind: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(schemas_dir().join("examples").join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    out
}

/// Proves every valid example passes the event schema and every invalid one fails it,
/// and that the validate logic agrees with the schema on each.
#[test]
fn examples_against_the_event_schema() {
    let schema = read_json(&schemas_dir().join("json/event.schema.json"));
    let validator = jsonschema::validator_for(&schema).expect("the event schema compiles");
    let valid = examples("valid");
    assert!(
        valid.len() >= onramp_schemas::EVENT_TYPES.len(),
        "one valid example per event type"
    );
    for t in onramp_schemas::EVENT_TYPES {
        assert!(
            valid.iter().any(|p| p.file_stem().unwrap() == t),
            "no valid example of {t}"
        );
    }
    for path in valid {
        let v = read_json(&path);
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{} fails the schema: {errors:?}", path.display());
        let bytes = serde_json::to_vec(&v).unwrap();
        let gate = onramp_logic::validate::ValidateConfig::default();
        assert!(
            onramp_logic::validate::validate(&bytes, None, &gate).is_ok(),
            "{} rejected",
            path.display()
        );
    }
    let invalid = examples("invalid");
    assert!(invalid.len() >= 8);
    for path in invalid {
        let v = read_json(&path);
        assert!(!validator.is_valid(&v), "{} passes the schema", path.display());
        let bytes = serde_json::to_vec(&v).unwrap();
        let gate = onramp_logic::validate::ValidateConfig::default();
        assert!(
            onramp_logic::validate::validate(&bytes, None, &gate).is_err(),
            "{} accepted",
            path.display()
        );
    }
}

/// Proves an event with no `properties` (allowed on the wire) passes the schema.
#[test]
fn properties_may_be_left_out_in_the_schema_too() {
    let schema = read_json(&schemas_dir().join("json/event.schema.json"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let ev =
        serde_json::json!({"event_id":"e","type":"email_verified","user_id":"u","timestamp":"2026-11-01T09:00:00Z"});
    assert!(validator.is_valid(&ev));
}
