//! Golden cases in `tests/data/*.json`, run through the built `.wasm` modules in
//! `fluvio-smartengine`. See `onramp_tests::golden` for the file format.

use onramp::chain::{Chain, ChainParams};
use onramp::wasm::Module;
use onramp_tests::golden::{cases, data_dir, GoldenCase, GoldenRecord};
use onramp_tests::{engine, modules, records};

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
        let chain = Chain::build(engine(), modules(), &steps, &params, None);
        match (&case.expected_init_error, chain) {
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
