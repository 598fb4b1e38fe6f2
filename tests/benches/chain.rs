//! Chain benchmark: prints figures, asserts nothing. Run with `cargo xtask bench` (or
//! `cargo bench -p onramp-tests --bench chain -- [--events N] [--quick]`).
//!
//! 1. events/s of the full chain (validate → enrich → profile) in fluvio-smartengine,
//!    with 1k and with 1M distinct users (same event count): the ratio should stay near 1;
//! 2. the same logic compiled natively (same JSON encode/decode between steps): the
//!    Wasm/native ratio;
//! 3. where the time goes: each stage's cost per event in Wasm (by timing the chains
//!    validate, validate → enrich and the full one, each stage the difference) next to the
//!    same stage natively, split into its parse, its logic and its encode;
//! 4. with `--baseline DIR` (a folder of `.wasm` files built from an earlier commit), the
//!    same Wasm chain with those modules, in the same run: the before/after of a change;
//! 5. the stock aggregate pattern (Fluvio's aggregate-json: a JSON map of all users as the
//!    accumulator) at 100 and 1k users, and the user count at which it stops working.

use std::time::Instant;

use fluvio_smartengine::SmartEngine;
use onramp::chain::{Chain, ChainParams, InputRecord};
use onramp::wasm::{Module, WasmModules};
use onramp_logic::enrich::{enrich, EnrichConfig};
use onramp_logic::fold::{FoldConfig, FoldState};
use onramp_logic::validate::{parse_event, validate, ValidateConfig};
use onramp_logic::wire::read_enriched;
use onramp_tests::synthetic::stream;

/// Records per chain call, like one SPU fetch of ~200 KB.
const BATCH: usize = 1_000;
/// Event-time span of a run: inside `state_ttl`, so every user stays live (worst case).
const SPAN_MS: i64 = 5 * 3_600_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let events: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let baseline = args
        .iter()
        .position(|a| a == "--baseline")
        .and_then(|i| args.get(i + 1))
        .map(|dir| {
            let modules = WasmModules::load(std::path::Path::new(dir)).unwrap_or_else(|e| panic!("--baseline: {e}"));
            (dir.clone(), modules)
        });
    let modules = onramp_tests::modules();
    let engine = SmartEngine::new();

    println!("onramp chain benchmark: {events} events per run, batches of {BATCH}, event time spread over 5h");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let few = stream(events, 1_000, SPAN_MS, 1);
    let many = stream(events, 1_000_000, SPAN_MS, 1);
    let wasm_few = wasm_chain(&engine, modules, &few);
    let wasm_many = wasm_chain(&engine, modules, &many);
    let native_few = native_chain(&few);
    let native_many = native_chain(&many);
    let before = baseline
        .as_ref()
        .map(|(dir, old)| (dir, wasm_chain(&engine, old, &few), wasm_chain(&engine, old, &many)));
    println!();
    println!("| run | users | events/s |");
    println!("|---|---:|---:|");
    if let Some((dir, few, many)) = &before {
        println!("| Wasm chain, baseline modules ({dir}) | 1k | {few:.0} |");
        println!("| Wasm chain, baseline modules ({dir}) | 1M | {many:.0} |");
    }
    println!("| Wasm chain (fluvio-smartengine) | 1k | {wasm_few:.0} |");
    println!("| Wasm chain (fluvio-smartengine) | 1M | {wasm_many:.0} |");
    println!("| same logic, native | 1k | {native_few:.0} |");
    println!("| same logic, native | 1M | {native_many:.0} |");
    println!();
    println!("1M-users / 1k-users throughput, Wasm: {:.2}", wasm_many / wasm_few);
    println!("Wasm / native throughput (1k users): {:.2}", wasm_few / native_few);
    println!("Wasm / native throughput (1M users): {:.2}", wasm_many / native_many);
    if let Some((_, few, many)) = before {
        println!(
            "this build / baseline, Wasm chain: {:.2} (1k users), {:.2} (1M users)",
            wasm_few / few,
            wasm_many / many
        );
    }

    println!();
    stage_breakdown(&engine, modules, &few);

    println!();
    json_vs_protobuf(&engine, modules, &few, events);

    println!();
    stock_pattern(&engine, modules, quick);
}

/// Microseconds per event of `f` over `values` (one call per record).
fn per_event(values: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e6 / values as f64
}

/// Microseconds per event of a Wasm chain of `steps`.
fn wasm_steps(engine: &SmartEngine, modules: &WasmModules, steps: &[Module], records: &[InputRecord]) -> f64 {
    let mut chain = Chain::build(engine, modules, steps, &ChainParams::default(), None).expect("chain");
    per_event(records.len(), || {
        for batch in records.chunks(BATCH) {
            chain.process(batch).expect("no chain error");
        }
    })
}

/// Each stage's cost per event: in Wasm from the prefix chains, natively split into parse,
/// logic and encode, as each module does it (validate parses the raw event and passes it on
/// unchanged; enrich parses it again and encodes the enriched event; profile parses that and
/// encodes the update).
fn stage_breakdown(engine: &SmartEngine, modules: &WasmModules, values: &[Vec<u8>]) {
    let records = input(values);
    let n = values.len();
    let v = wasm_steps(engine, modules, &[Module::Validate], &records);
    let ve = wasm_steps(engine, modules, &[Module::Validate, Module::Enrich], &records);
    let vep = wasm_steps(engine, modules, &Module::ALL, &records);

    let vcfg = ValidateConfig::default();
    let ecfg = EnrichConfig::default();
    let mut accepted: Vec<&[u8]> = Vec::with_capacity(n);
    let n_validate = per_event(n, || {
        for v in values {
            if validate(v, None, &vcfg).is_ok() {
                accepted.push(v);
            }
        }
    });
    // Enrich gets the raw event again (validate passes it on unchanged) and parses it.
    let mut parsed = Vec::with_capacity(n);
    let n_enrich_parse = per_event(n, || {
        for raw in &accepted {
            parsed.push(parse_event(raw).expect("accepted by validate"));
        }
    });
    let mut enriched = Vec::with_capacity(n);
    let n_enrich = per_event(n, || {
        for e in parsed {
            if let Ok(x) = enrich(e, &ecfg) {
                enriched.push(x);
            }
        }
    });
    let mut wire = Vec::with_capacity(n);
    let n_enrich_encode = per_event(n, || {
        for e in &enriched {
            wire.push(serde_json::to_vec(e).unwrap());
        }
    });
    let mut back = Vec::with_capacity(n);
    let n_fold_parse = per_event(n, || {
        for w in &wire {
            back.push(read_enriched(w).expect("an enriched event"));
        }
    });
    let mut fold = FoldState::new(FoldConfig::default());
    let mut updates = Vec::with_capacity(n);
    let n_fold = per_event(n, || {
        for (offset, e) in back.iter().enumerate() {
            updates.push(fold.fold_event(e, offset as i64, -1));
        }
    });
    let mut out = 0usize;
    let n_fold_encode = per_event(n, || {
        for u in &updates {
            out += serde_json::to_vec(u).unwrap().len();
        }
    });
    assert!(out > 0);
    let native = [
        n_validate,
        n_enrich_parse + n_enrich + n_enrich_encode,
        n_fold_parse + n_fold + n_fold_encode,
    ];
    println!("where the time goes, µs per event (1k users; Wasm stage = chain with it − chain without it):");
    println!("| stage | Wasm | native | native split |");
    println!("|---|---:|---:|---|");
    println!(
        "| validate | {v:.2} | {:.2} | parse + checks {:.2} |",
        native[0], n_validate
    );
    println!(
        "| enrich | {:.2} | {:.2} | parse {n_enrich_parse:.2}, logic {n_enrich:.2}, encode {n_enrich_encode:.2} |",
        ve - v,
        native[1]
    );
    println!(
        "| profile | {:.2} | {:.2} | parse {n_fold_parse:.2}, fold {n_fold:.2}, encode {n_fold_encode:.2} |",
        vep - ve,
        native[2]
    );
    println!(
        "| chain | {vep:.2} | {:.2} | Wasm / native time: {:.1}× |",
        native.iter().sum::<f64>(),
        vep / native.iter().sum::<f64>()
    );
}

fn input(values: &[Vec<u8>]) -> Vec<InputRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| InputRecord {
            key: None,
            value: v.clone(),
            offset: i as i64,
            timestamp_ms: -1,
        })
        .collect()
}

/// Events/s of the full Wasm chain.
fn wasm_chain(engine: &SmartEngine, modules: &WasmModules, values: &[Vec<u8>]) -> f64 {
    let records = input(values);
    let mut chain = Chain::full(engine, modules, &ChainParams::default(), None).expect("chain");
    let start = Instant::now();
    let mut out = 0usize;
    for batch in records.chunks(BATCH) {
        out += chain.process(batch).expect("no chain error").len();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(out > values.len() * 9 / 10, "updates came out");
    values.len() as f64 / secs
}

/// Events/s of the same logic compiled natively, doing what the modules do between steps:
/// enrich parses the raw record again, profile parses the enriched JSON.
fn native_chain(values: &[Vec<u8>]) -> f64 {
    let vcfg = ValidateConfig::default();
    let ecfg = EnrichConfig::default();
    let mut fold = FoldState::new(FoldConfig::default());
    let start = Instant::now();
    let mut bytes_out = 0usize;
    for (offset, v) in values.iter().enumerate() {
        if validate(v, None, &vcfg).is_err() {
            continue;
        }
        let Ok(enriched) = parse_event(v).and_then(|event| enrich(event, &ecfg)) else {
            continue;
        };
        let wire = serde_json::to_vec(&enriched).expect("JSON");
        let update = fold.fold_record(&wire, offset as i64, -1);
        bytes_out += serde_json::to_vec(&update).expect("JSON").len();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(bytes_out > 0);
    values.len() as f64 / secs
}

/// Bytes per event on the topic and the Wasm chain's events/s for the same events as JSON
/// and as Protobuf (`onramp produce --format protobuf`): the bench's synthetic stream, and
/// the generator's realistic lines (user agents, page context, UTMs, malformed lines).
fn json_vs_protobuf(engine: &SmartEngine, modules: &WasmModules, synthetic: &[Vec<u8>], events: usize) {
    use onramp::generator::{Generator, GeneratorConfig};
    let generated: Vec<Vec<u8>> = Generator::new(GeneratorConfig {
        users: (events as u64 / 16).max(100),
        ..GeneratorConfig::default()
    })
    .take(events)
    .map(String::into_bytes)
    .collect();
    println!("JSON vs Protobuf, the same events in each form, batches of {BATCH}:");
    println!("| events | format | bytes per event | Wasm chain events/s |");
    println!("|---|---|---:|---:|");
    for (what, json) in [("synthetic (1k users)", synthetic), ("generator", &generated[..])] {
        let proto: Vec<Vec<u8>> = json.iter().map(|v| onramp_tests::as_protobuf(v)).collect();
        let bytes = |values: &[Vec<u8>]| values.iter().map(Vec::len).sum::<usize>() as f64 / values.len() as f64;
        let json_rate = wasm_chain(engine, modules, json);
        let proto_rate = wasm_chain(engine, modules, &proto);
        println!("| {what} | JSON | {:.0} | {json_rate:.0} |", bytes(json));
        println!("| {what} | Protobuf | {:.0} | {proto_rate:.0} |", bytes(&proto));
    }
}

/// The stock pattern: validate → enrich → stock-aggregate.
fn stock_pattern(engine: &SmartEngine, modules: &WasmModules, quick: bool) {
    let stock = build_stock_aggregate();
    println!("stock aggregate pattern (accumulator = JSON map of all users), batches of {BATCH}:");
    println!("| users | events/s | accumulator bytes | result |");
    println!("|---:|---:|---:|---|");
    let sizes: &[u64] = if quick {
        &[100, 1_000, 5_000]
    } else {
        &[100, 1_000, 2_000, 5_000, 10_000]
    };
    for &users in sizes {
        // First every user once (builds the map), then timed events over the same users.
        let warm: Vec<Vec<u8>> = (0..users).map(|u| rename(&stream(1, 1, 1, u)[0], u)).collect();
        let timed = stream(2_000, users, 60_000, 9);
        let mut all = warm.clone();
        all.extend(timed.iter().cloned());
        let records = input(&all);
        let mut chain = match stock_chain(engine, modules, &stock) {
            Ok(c) => c,
            Err(e) => {
                println!("| {users} | - | - | chain failed to start: {e} |");
                continue;
            }
        };
        let mut result = "ok".to_string();
        let mut last_len = 0usize;
        let mut timed_secs = 0.0;
        let mut timed_events = 0usize;
        for batch in records.chunks(BATCH) {
            let is_timed = batch[0].offset >= warm.len() as i64;
            let start = Instant::now();
            match chain.process(batch) {
                Ok(out) => {
                    last_len = out.last().map_or(last_len, |r| r.value.len());
                    if is_timed {
                        timed_secs += start.elapsed().as_secs_f64();
                        timed_events += batch.len();
                    }
                }
                Err(e) => {
                    // The engine's message is a wasm backtrace; its last line says why.
                    let text = e.to_string();
                    let why = text
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or_default()
                        .trim();
                    result = format!("fails: {why}");
                    break;
                }
            }
        }
        let rate = if timed_events > 0 {
            format!("{:.0}", timed_events as f64 / timed_secs)
        } else {
            "-".into()
        };
        println!("| {users} | {rate} | {last_len} | {result} |");
    }
}

/// Gives a one-event stream the user `u_<u>`.
fn rename(line: &[u8], u: u64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(line).expect("JSON");
    v["user_id"] = serde_json::json!(format!("u_{u}"));
    v["event_id"] = serde_json::json!(format!("w{u}"));
    serde_json::to_vec(&v).expect("JSON")
}

fn stock_chain(engine: &SmartEngine, modules: &WasmModules, stock: &[u8]) -> Result<Chain, String> {
    // The stock module stands in for onramp-profile at the end of the chain.
    let mut with_stock = modules.clone();
    with_stock.profile = stock.to_vec();
    Chain::build(engine, &with_stock, &Module::ALL, &ChainParams::default(), None).map_err(|e| e.to_string())
}

fn build_stock_aggregate() -> Vec<u8> {
    std::fs::read(onramp_tests::build_wasm("stock-aggregate")).expect("stock_aggregate.wasm")
}
