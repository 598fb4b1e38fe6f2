//! Cluster benchmark: onramp against a running local Fluvio cluster (release binary).
//!
//! 1. **Backfill**: produce N generated events into a fresh 3-partition topic
//!    (`onramp produce`: records/s), then `onramp run --source fluvio --stop-at-end` over
//!    them (events/s, wall time from start to the last commit).
//! 2. **Live end to end**: a consumer follows a second topic; N events are produced; time
//!    from the first send to the consumer's checkpoints covering every record (/metrics).
//! 3. **Latency** at 1,000 and 10,000 events/s: events written at R/s into `onramp produce
//!    --input -`, each with a unique `event_id`, observed three ways at once: a plain Fluvio
//!    client stream of the topic (no SmartModule), a client stream through onramp's chain
//!    in the SPU, and onramp end to end — the update on the consumer's `/v1/updates`
//!    stream, sent only after its batch is durable. Latency = arrival − line written;
//!    p50/p99/max over the window.
//!
//! Needs `FLUVIO_E2E=1` and `fluvio` on PATH with a cluster running
//! (`fluvio cluster start --local`); otherwise it prints that it was skipped.
//!
//! ```text
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench cluster            # N = 200,000, latency windows of 30 s
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench cluster -- --quick # N = 50,000, 10 s
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench cluster -- --latency-only --keep /tmp/lat
//! ```
//!
//! `--latency-only` runs part 3 alone, on a fresh follower. `--keep DIR` writes the
//! follower's log there (set `ONRAMP_LOG=debug,fluvio=info` for its per-batch commit lines).
//! Under each latency table, the slowest percent of events is grouped by when they were
//! sent, so a tail shows as one stall or as spread-out delays.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluvio::consumer::SmartModuleInvocation;
use fluvio::{ConsumerConfig, Offset};
use futures_util::StreamExt;
use onramp_tests::cli::Onramp;
use onramp_tests::cluster::{checkpoints, skipped, LocalCluster, Needs};
use onramp_tests::http_agent as agent;
use onramp_tests::running::Running;

/// The benchmark runs the release build.
const ONRAMP: Onramp = Onramp::Release;

/// A 3-partition topic of this run, deleted at the end.
fn topic(cluster: &mut LocalCluster, name: &str) -> String {
    let t = cluster.topic(name);
    ONRAMP.ok(&["setup", "--topic", &t, "--partitions", "3"]);
    t
}

/// Records committed by the consumer at `base`: Σ (checkpoint + 1) over partitions.
fn committed(base: &str) -> i64 {
    checkpoints(base).values().map(|c| c + 1).sum()
}

/// Polls every 20 ms until `f` holds; panics after `limit`.
fn wait_until(limit: Duration, what: &str, f: impl FnMut() -> bool) {
    onramp_tests::wait_until(limit, Duration::from_millis(20), what, f);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    if skipped("cluster benchmark", Needs::RunningCluster) {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let latency_only = args.iter().any(|a| a == "--latency-only");
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let (events, window) = if quick {
        (50_000u64, Duration::from_secs(10))
    } else {
        (200_000u64, Duration::from_secs(30))
    };
    let rates = [1_000u64, 10_000];
    let mut cluster = LocalCluster::attach("onramp-bench");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    let file = path("events.jsonl");
    if !latency_only {
        // 1. Backfill.
        ONRAMP.ok(&[
            "generate",
            "--seed",
            "5",
            "--users",
            "20000",
            "--events",
            &events.to_string(),
            "--output",
            &file,
        ]);
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let backfill = topic(&mut cluster, "backfill");
        let produced = ONRAMP.json(&["produce", "--topic", &backfill, "--input", &file, "--json"]);
        let produce_rate = produced["sent"].as_f64().unwrap() / (produced["elapsed_ms"].as_f64().unwrap() / 1000.0);
        let store = path("backfill-store");
        let started = Instant::now();
        let summary = ONRAMP.json(&[
            "run",
            "--source",
            "fluvio",
            "--topic",
            &backfill,
            "--store",
            &store,
            "--stop-at-end",
            "--json",
        ]);
        let backfill_secs = started.elapsed().as_secs_f64();
        println!("backfill: {lines} lines over 3 partitions");
        println!(
            "  produce            {produce_rate:>9.0} records/s ({} ms)",
            produced["elapsed_ms"]
        );
        println!(
            "  consume (stop-at-end) {:>6.0} events/s ({:.2} s wall incl. connect and SPU module load; store {:.2} s)",
            lines as f64 / backfill_secs,
            backfill_secs,
            summary["store_ms"].as_f64().unwrap() / 1000.0
        );
    }

    // 2. Live end to end: a following consumer, then N events produced.
    let live = topic(&mut cluster, "live");
    let live_store = path("live-store");
    let mut follower = ONRAMP.command();
    follower
        .args(["run", "--source", "fluvio", "--topic", &live, "--store", &live_store])
        .args(["--listen", "127.0.0.1:0"]);
    let log = match &keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).unwrap();
            dir.join("follower.log")
        }
        None => path("follower.log").into(),
    };
    let follower = Running::serving(follower, log); // its API answers
    let base = follower.base().to_string();
    std::thread::sleep(Duration::from_secs(3)); // streams open, modules compiled in the SPU
    if !latency_only {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let started = Instant::now();
        let produced = ONRAMP.json(&["produce", "--topic", &live, "--input", &file, "--json"]);
        let produce_done = started.elapsed().as_secs_f64();
        wait_until(Duration::from_secs(600), "the consumer to commit every record", || {
            committed(&base) >= lines as i64
        });
        let live_secs = started.elapsed().as_secs_f64();
        println!("live: {} records produced while a consumer follows", produced["sent"]);
        println!(
            "  end to end         {:>9.0} events/s (first send → last commit {live_secs:.2} s; produce alone {produce_done:.2} s)",
            lines as f64 / live_secs
        );
    }

    // 3. Latency at steady rates, on the same following consumer, three ways at once.
    for rate in rates {
        latency(&live, &base, rate, window);
    }
    drop(follower);
}

/// Arrival time of each event id an observer saw.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Follows every partition of `topic` from its end with the Fluvio client, through
/// `chain` (none: the plain records), noting when each record whose `event_id` starts
/// with `prefix` arrives. Runs on its own thread until the process ends.
fn follow_with_client(topic: &str, chain: Vec<SmartModuleInvocation>, prefix: &str, arrivals: Arrivals) {
    let (topic, prefix) = (topic.to_string(), prefix.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let fluvio = fluvio::Fluvio::connect().await.expect("connect to the local cluster");
            let mut streams = Vec::new();
            for p in 0..3 {
                let mut config = ConsumerConfig::builder();
                if !chain.is_empty() {
                    config.smartmodule(chain.clone());
                }
                // The batch stream, as onramp's consumer reads: the record stream of the
                // 0.50 client renumbers records and dropped some at 10,000 events/s.
                #[allow(deprecated)]
                let stream = fluvio
                    .partition_consumer(topic.clone(), p)
                    .await
                    .unwrap()
                    .stream_batches_with_config(Offset::end(), config.build().unwrap())
                    .await
                    .unwrap();
                streams.push(Box::pin(stream));
            }
            ready_tx.send(()).unwrap();
            let mut all = futures_util::stream::select_all(streams);
            while let Some(item) = all.next().await {
                let now = Instant::now();
                let batch = match item {
                    Ok(batch) => batch,
                    Err(e) => {
                        eprintln!("latency follower of {topic}: stream error {e}");
                        continue;
                    }
                };
                let mut seen = arrivals.lock().unwrap();
                for record in batch.records() {
                    if let Some(id) = event_id(record.value().as_ref()) {
                        if id.starts_with(&prefix) {
                            seen.insert(id, now);
                        }
                    }
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the streams open");
}

/// The `event_id` of an event or an update.
fn event_id(value: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: String,
    }
    serde_json::from_slice::<Id>(value).ok().map(|id| id.event_id)
}

/// Follows the consumer's `/v1/updates` stream, noting when each update of an event whose
/// id starts with `prefix` arrives (an update is sent once its batch is durable).
fn follow_updates(base: &str, prefix: &str, arrivals: Arrivals) {
    let url = format!("{base}/v1/updates");
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let resp = agent(None).get(&url).call().expect("update stream");
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            if let Some(id) = v["update"]["event_id"].as_str() {
                if id.starts_with(&prefix) {
                    arrivals.lock().unwrap().insert(id.to_string(), Instant::now());
                }
            }
        }
    });
}

/// Latency at `rate` events/s for `window`, measured three ways on the same events in the
/// same run: a plain client stream of the topic, a client stream through onramp's chain in
/// the SPU, and onramp end to end (produce → durable commit → `/v1/updates`). Events are
/// written one line at a time into `onramp produce --input - --linger 1ms`; latency is
/// arrival − the moment the line was written.
fn latency(topic: &str, base: &str, rate: u64, window: Duration) {
    let prefix = format!("lat{rate}-");
    let plain: Arrivals = Arc::default();
    let chained: Arrivals = Arc::default();
    let end_to_end: Arrivals = Arc::default();
    follow_with_client(topic, Vec::new(), &prefix, plain.clone());
    let chain = onramp::cluster::consume::loaded_update_chain(&onramp::cluster::default_smartmodules_dir())
        .expect("the modules onramp setup loaded");
    follow_with_client(topic, chain, &prefix, chained.clone());
    follow_updates(base, &prefix, end_to_end.clone());
    std::thread::sleep(Duration::from_secs(2)); // the SPU has compiled the chain
    let mut producer = ONRAMP
        .command()
        .args(["produce", "--topic", topic, "--input", "-", "--linger", "1ms", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let line = |id: &str, user: u64| {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        format!(
            "{{\"event_id\":\"{id}\",\"type\":\"page_view\",\"properties\":{{\"path\":\"/app\",\"url\":\"https://onramp.example/app\",\"title\":\"Home\"}},\"user_id\":\"bench_u_{user}\",\"timestamp\":\"{ts}\"}}\n"
        )
    };
    // The window starts once the producer is connected: a first event must reach every
    // observer (otherwise the producer's start-up counts as the first events' latency).
    let warmup = format!("{prefix}warmup");
    stdin.write_all(line(&warmup, 0).as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_until(
        Duration::from_secs(60),
        "the warm-up event to reach every observer",
        || {
            [&plain, &chained, &end_to_end]
                .iter()
                .all(|a| a.lock().unwrap().contains_key(&warmup))
        },
    );
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        let due = start + interval * n as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let id = format!("{prefix}{n}");
        stdin.write_all(line(&id, n % 500).as_bytes()).unwrap();
        stdin.flush().unwrap();
        sent.push((id, Instant::now()));
        n += 1;
    }
    let sending = start.elapsed();
    drop(stdin);
    producer.wait().unwrap();
    // Whatever has not arrived 120 s after the last send shows as missing in `seen`.
    let deadline = Instant::now() + Duration::from_secs(120);
    for arrivals in [&plain, &chained, &end_to_end] {
        // (+ 1: the warm-up event)
        while arrivals.lock().unwrap().len() < sent.len() + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!(
        "latency: {} events at {rate}/s for {window:?} (achieved {:.0}/s)",
        sent.len(),
        sent.len() as f64 / sending.as_secs_f64()
    );
    let mut tails = Vec::new();
    println!("| observer | p50 ms | p99 ms | max ms | seen |");
    println!("|---|---:|---:|---:|---:|");
    for (what, arrivals) in [
        ("plain client stream (no SmartModule)", &plain),
        ("client stream through onramp's chain", &chained),
        ("onramp end to end (durable commit → /v1/updates)", &end_to_end),
    ] {
        let got = arrivals.lock().unwrap();
        let mut lat: Vec<f64> = sent
            .iter()
            .filter_map(|(id, at)| {
                got.get(id)
                    .map(|r| r.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        tails.push((what, slowest_percent(&sent, &got, start)));
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} | {} of {} |",
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len(),
            sent.len()
        );
    }
    for (what, tail) in tails {
        println!("slowest 1% of `{what}`, by send time: {tail}");
    }
}

/// The slowest percent of the sent events that arrived, grouped into runs of events sent
/// within 100 ms of each other: `t=3.20-3.85 s: 64 events, up to 702 ms`, at most five runs.
fn slowest_percent(sent: &[(String, Instant)], got: &HashMap<String, Instant>, start: Instant) -> String {
    let mut lat: Vec<(f64, f64)> = sent
        .iter()
        .filter_map(|(id, at)| {
            let arrived = got.get(id)?;
            Some((
                at.duration_since(start).as_secs_f64(),
                arrived.saturating_duration_since(*at).as_secs_f64() * 1000.0,
            ))
        })
        .collect();
    lat.sort_by(|a, b| b.1.total_cmp(&a.1));
    lat.truncate(lat.len().div_ceil(100));
    lat.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut runs: Vec<(f64, f64, usize, f64)> = Vec::new();
    for (t, ms) in lat {
        match runs.last_mut() {
            Some(run) if t - run.1 <= 0.1 => {
                run.1 = t;
                run.2 += 1;
                run.3 = run.3.max(ms);
            }
            _ => runs.push((t, t, 1, ms)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(5)
        .map(|(from, to, n, max)| format!("t={from:.2}-{to:.2} s: {n} events, up to {max:.0} ms"))
        .collect();
    let more = runs.len().saturating_sub(5);
    if more > 0 {
        format!("{}; {more} more runs", shown.join("; "))
    } else {
        shown.join("; ")
    }
}
