//! Golden cases in `tests/data/*.json`, run through the built `.wasm` modules in
//! `fluvio-smartengine`. See `onramp_tests::golden` for the file format.

use onramp::chain::{Chain, ChainParams};
use onramp::wasm::Module;
use onramp_tests::golden::{cases, data_dir, GoldenCase, GoldenRecord};
use onramp_tests::{as_protobuf, engine, modules, records};

fn to_golden(key: Option<Vec<u8>>, value: Vec<u8>) -> GoldenRecord {
    GoldenRecord {
        key: key.map(|k| String::from_utf8_lossy(&k).into_owned()),
        value: serde_json::from_slice(&value)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&value).into_owned())),
    }
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Proves every golden case gives exactly its expected records (or init error), and that
/// its `.input.jsonl` twin used by the READMEs' `smdk test --file` holds the same inputs.
#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let all = cases();
    assert!(!all.is_empty(), "no golden cases in {}", data_dir().display());
    let mut failures = Vec::new();
    for (name, path) in all {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut case: GoldenCase = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let jsonl = data_dir().join(format!("{name}.input.jsonl"));
        if let Ok(lines) = std::fs::read_to_string(&jsonl) {
            let lines: Vec<String> = lines.lines().map(str::to_string).collect();
            assert_eq!(
                lines,
                case.input,
                "{name}: {} differs from the case's input",
                jsonl.display()
            );
        }
        match (&case.expected_init_error, chain_of(&name, &case)) {
            (Some(want), Err(e)) => {
                let got = e.to_string();
                if !got.contains(want.as_str()) {
                    failures.push(format!(
                        "{name}: init error\n  expected to contain: {want}\n  got: {got}"
                    ));
                }
            }
            (Some(want), Ok(_)) => failures.push(format!("{name}: expected init error `{want}`, chain started")),
            (None, Err(e)) => failures.push(format!("{name}: chain failed to start: {e}")),
            (None, Ok(mut chain)) => {
                let out = chain
                    .process(&records(&case.input))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let got: Vec<GoldenRecord> = out.into_iter().map(|r| to_golden(r.key, r.value)).collect();
                if update {
                    case.expected = Some(got);
                    std::fs::write(&path, pretty(&case) + "\n").unwrap();
                    continue;
                }
                let expected = case.expected.clone().unwrap_or_default();
                if got != expected {
                    let mut msg = format!("{name}: {} records expected, {} produced\n", expected.len(), got.len());
                    for i in 0..expected.len().max(got.len()) {
                        if expected.get(i) != got.get(i) {
                            msg += &format!(
                                "  record {i}:\n    expected: {}\n    got:      {}\n",
                                serde_json::to_string(&expected.get(i)).unwrap(),
                                serde_json::to_string(&got.get(i)).unwrap()
                            );
                        }
                    }
                    failures.push(msg);
                }
            }
        }
    }
    assert!(failures.is_empty(), "golden cases failed:\n{}", failures.join("\n"));
}

/// The chain a golden case describes, with its params (or its init error).
fn chain_of(name: &str, case: &GoldenCase) -> Result<Chain, onramp::chain::ChainError> {
    let steps: Vec<Module> = case
        .modules
        .iter()
        .map(|m| Module::from_short_name(m).unwrap_or_else(|| panic!("{name}: unknown module {m}")))
        .collect();
    let mut params = ChainParams::default();
    for (module, kv) in &case.params {
        for (k, v) in kv {
            params.set(Module::from_short_name(module).unwrap(), k, v);
        }
    }
    Chain::build(engine(), modules(), &steps, &params, None)
}

/// Proves every golden case holds with its events written as Protobuf (each input that
/// reads as an event, as `onramp produce --format protobuf` sends it): enriched events and
/// updates are the very same records, a reject has the same reason, detail, identity and
/// offset (its payload is the Protobuf record), and an accepted record passes through as
/// the Protobuf record of the same event.
#[test]
fn golden_cases_hold_for_protobuf_events() {
    use onramp_logic::validate::parse_event;
    use onramp_schemas::proto::decode_record;
    use onramp_schemas::{RejectReason, RejectedEvent};
    let mut checked = 0;
    for (name, path) in cases() {
        let case: GoldenCase = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if case.expected_init_error.is_some() {
            continue;
        }
        let proto: Vec<Vec<u8>> = case.input.iter().map(|l| as_protobuf(l.as_bytes())).collect();
        if proto.iter().all(|p| p.first() != Some(&0)) {
            continue;
        }
        let run = |input: &[Vec<u8>]| {
            let mut chain = chain_of(&name, &case).unwrap_or_else(|e| panic!("{name}: {e}"));
            chain.process(&records(input)).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let json: Vec<Vec<u8>> = case.input.iter().map(|l| l.clone().into_bytes()).collect();
        let (json_out, proto_out) = (run(&json), run(&proto));
        assert_eq!(proto_out.len(), json_out.len(), "{name}: output records");
        for (i, (j, p)) in json_out.iter().zip(&proto_out).enumerate() {
            assert_eq!(p.key, j.key, "{name}: key of record {i}");
            if p.value == j.value {
                continue;
            }
            match (
                serde_json::from_slice::<RejectedEvent>(&j.value),
                serde_json::from_slice::<RejectedEvent>(&p.value),
            ) {
                // (`too_large` names the record's size, which differs between the forms.)
                (Ok(jr), Ok(pr)) => assert_eq!(
                    (
                        pr.reason,
                        (pr.reason != RejectReason::TooLarge).then_some(pr.detail),
                        pr.identity,
                        pr.offset
                    ),
                    (
                        jr.reason,
                        (jr.reason != RejectReason::TooLarge).then_some(jr.detail),
                        jr.identity,
                        jr.offset
                    ),
                    "{name}: reject {i}"
                ),
                _ => assert_eq!(
                    decode_record(&p.value).ok(),
                    parse_event(&j.value).ok(),
                    "{name}: record {i} is neither the same bytes nor the same event"
                ),
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} golden cases had events");
}
