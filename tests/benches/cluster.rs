//! Cluster benchmark: onramp against a running local Fluvio cluster (release binary).
//!
//! 1. **Backfill**: produce N generated events into a fresh 3-partition topic
//!    (`onramp produce`: records/s), then `onramp run --source fluvio --stop-at-end` over
//!    them (events/s, wall time from start to the last commit).
//! 2. **Live end to end**: a consumer follows a second topic; N events are produced; time
//!    from the first send to the consumer's checkpoints covering every record (/metrics).
//! 3. **Latency** at a steady moderate rate: events written at R/s into `onramp produce
//!    --input -`, each with a unique `event_id`; the update of each is awaited on the
//!    consumer's `/v1/updates` stream (sent only after its batch is committed to the store).
//!    Latency = update received − line written; p50/p99/max over the window.
//!
//! Needs `FLUVIO_E2E=1` and `fluvio` on PATH with a cluster running
//! (`fluvio cluster start --local`); otherwise it prints that it was skipped.
//!
//! ```text
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench cluster            # N = 200,000, R = 1,000/s for 30 s
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench cluster -- --quick # N = 50,000, 10 s
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let quick = std::env::args().any(|a| a == "--quick");
    let (events, rate, window) = if quick {
        (50_000u64, 1_000u64, Duration::from_secs(10))
    } else {
        (200_000u64, 1_000u64, Duration::from_secs(30))
    };
    let mut cluster = LocalCluster::attach("onramp-bench");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // 1. Backfill.
    let file = path("events.jsonl");
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

    // 2. Live end to end: a following consumer, then N events produced.
    let live = topic(&mut cluster, "live");
    let live_store = path("live-store");
    let mut follower = ONRAMP.command();
    follower
        .args(["run", "--source", "fluvio", "--topic", &live, "--store", &live_store])
        .args(["--listen", "127.0.0.1:0"]);
    let follower = Running::serving(follower, path("follower.log")); // its API answers
    let base = follower.base().to_string();
    std::thread::sleep(Duration::from_secs(3)); // streams open, modules compiled in the SPU
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

    // 3. Latency at a steady rate, on the same following consumer.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let arrivals = arrivals.clone();
        let url = format!("{base}/v1/updates");
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
                    if id.starts_with("lat-") {
                        arrivals.lock().unwrap().insert(id.to_string(), Instant::now());
                    }
                }
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut producer = ONRAMP
        .command()
        .args(["produce", "--topic", &live, "--input", "-", "--linger", "1ms", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        let due = start + interval * n as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let id = format!("lat-{n}");
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = format!(
            "{{\"event_id\":\"{id}\",\"type\":\"page_view\",\"properties\":{{\"path\":\"/app\",\"url\":\"https://onramp.example/app\",\"title\":\"Home\"}},\"user_id\":\"bench_u_{}\",\"timestamp\":\"{ts}\"}}\n",
            n % 500
        );
        stdin.write_all(line.as_bytes()).unwrap();
        sent.push((id, Instant::now()));
        n += 1;
    }
    drop(stdin);
    producer.wait().unwrap();
    wait_until(Duration::from_secs(60), "the last latency update", || {
        arrivals.lock().unwrap().len() >= sent.len()
    });
    let got = arrivals.lock().unwrap();
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| got.get(id).map(|r| r.duration_since(*at).as_secs_f64() * 1000.0))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "latency: {} events at {rate}/s for {:?}, produce → update committed and streamed",
        sent.len(),
        window
    );
    println!(
        "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} of {} updates seen)",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len(),
        sent.len()
    );
    drop(follower);
}
