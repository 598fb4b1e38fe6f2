//! Catch-up benchmark: a consumer that was down while a large backlog piled up on one
//! partition, caught up with bounded fetches (`--max-bytes` at its default) and with one
//! unbounded fetch (`--max-bytes 2147483647`, the old default), one after the other on
//! the same topic, then the lag metric while the topic grows under a live produce.
//!
//! 1. `onramp generate` N events, `onramp produce` them into a fresh 1-partition topic.
//! 2. For each mode, `onramp run --source fluvio --stop-at-end` on an empty store, sampled
//!    every 100 ms: peak RSS of the consumer and of the SPU (`fluvio-run spu`, its RSS
//!    before the run subtracted as "baseline"), time to the first commit (the checkpoint
//!    on `/metrics`), wall time to the last commit and events/s.
//! 3. Lag: a consumer follows the topic from the bounded store (caught up); M more events
//!    are produced at full speed; every 500 ms, `onramp_partition_lag_records` next to the
//!    records the producer had sent and the consumer had committed.
//!
//! Needs `FLUVIO_E2E=1` and `fluvio` on PATH with a cluster running (`fluvio cluster start
//! --local`); otherwise it prints that it was skipped. Several GB of memory in unbounded
//! mode (that is the point).
//!
//! ```text
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench catchup                      # N = 2,000,000
//! FLUVIO_E2E=1 cargo bench -p onramp-tests --bench catchup -- --events 200000   # smaller
//! ```

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onramp_tests::cli::Onramp;
use onramp_tests::cluster::{checkpoints, partition_lags, skipped, LocalCluster, Needs};
use onramp_tests::running::Running;

const ONRAMP: Onramp = Onramp::Release;

/// Resident set size of a process, bytes (0 once it is gone).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The pids of the cluster's SPU processes (`fluvio-run spu …`).
fn spu_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("fluvio-run")) && args.iter().any(|a| a == "spu") {
            pids.push(pid);
        }
    }
    pids
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

struct CatchUp {
    first_commit: Option<Duration>,
    wall: Duration,
    consumer_peak: u64,
    spu_peak: u64,
    spu_baseline: u64,
}

/// One catch-up run on an empty store, sampled every 100 ms.
fn catch_up(topic: &str, store: &Path, log: &Path, max_bytes: Option<&str>) -> CatchUp {
    let spus = spu_pids();
    let spu_rss = || spus.iter().map(|&p| rss(p)).sum::<u64>();
    let spu_baseline = spu_rss();
    let mut cmd = ONRAMP.command();
    cmd.args(["run", "--source", "fluvio", "--topic", topic, "--stop-at-end", "--json"])
        .arg("--store")
        .arg(store)
        .args(["--listen", "127.0.0.1:0"])
        .env("ONRAMP_LOG", "warn,onramp=info");
    if let Some(max) = max_bytes {
        cmd.args(["--max-bytes", max]);
    }
    let started = Instant::now();
    let mut run = Running::serving(cmd, log);
    let pid = run.id();
    let (mut first_commit, mut consumer_peak, mut spu_peak) = (None, 0, spu_baseline);
    while run.try_wait().is_none() {
        consumer_peak = consumer_peak.max(rss(pid));
        spu_peak = spu_peak.max(spu_rss());
        if first_commit.is_none() && checkpoints(run.base()).values().any(|&c| c >= 0) {
            first_commit = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = started.elapsed();
    assert!(run.wait().success(), "the run failed: {}", run.log_tail(20));
    CatchUp {
        first_commit,
        wall,
        consumer_peak,
        spu_peak,
        spu_baseline,
    }
}

fn main() {
    if skipped("catch-up benchmark", Needs::RunningCluster) {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(2_000_000, |v| v.parse().expect("--events N"));
    let live_events = (events / 10).max(50_000);
    let mut cluster = LocalCluster::attach("onramp-catchup");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    let file = path("events.jsonl");
    ONRAMP.ok(&[
        "generate",
        "--seed",
        "21",
        "--users",
        &(events / 10).to_string(),
        "--events",
        &events.to_string(),
        "--output",
        file.to_str().unwrap(),
    ]);
    let bytes = std::fs::metadata(&file).unwrap().len();
    let topic = cluster.topic("backlog");
    ONRAMP.ok(&["setup", "--topic", &topic, "--partitions", "1"]);
    let produced = ONRAMP.json(&[
        "produce",
        "--topic",
        &topic,
        "--input",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(produced["failed"], 0, "{produced}");
    println!(
        "backlog: {} records ({}) on one partition, produced in {:.1} s",
        produced["sent"],
        mb(bytes),
        produced["elapsed_ms"].as_f64().unwrap() / 1000.0
    );
    println!("mode                         | first commit | wall    | events/s | consumer peak RSS | SPU peak RSS (baseline)");
    let mut bounded_store = None;
    for (mode, max_bytes) in [
        ("bounded (default 4 MiB)", None),
        ("unbounded (2147483647)", Some("2147483647")),
    ] {
        let store = path(&format!("store-{}", bounded_store.is_some()));
        let r = catch_up(&topic, &store, &path(&format!("{mode}.log")), max_bytes);
        println!(
            "{mode:<28} | {:>10.1} s | {:>5.1} s | {:>8.0} | {:>17} | {} ({})",
            r.first_commit.map_or(f64::NAN, |d| d.as_secs_f64()),
            r.wall.as_secs_f64(),
            events as f64 / r.wall.as_secs_f64(),
            mb(r.consumer_peak),
            mb(r.spu_peak),
            mb(r.spu_baseline),
        );
        bounded_store.get_or_insert(store);
    }

    // 3. Lag while the topic grows: follow from the caught-up bounded store.
    let live_file = path("live.jsonl");
    ONRAMP.ok(&[
        "generate",
        "--seed",
        "22",
        "--users",
        "20000",
        "--events",
        &live_events.to_string(),
        "--output",
        live_file.to_str().unwrap(),
    ]);
    let store = bounded_store.unwrap();
    let mut cmd = ONRAMP.command();
    cmd.args(["run", "--source", "fluvio", "--topic", &topic])
        .arg("--store")
        .arg(&store)
        .args(["--listen", "127.0.0.1:0"]);
    let mut follower = Running::serving(cmd, path("follow.log"));
    let base = follower.base().to_string();
    onramp_tests::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        "a lag figure",
        || !partition_lags(&base).is_empty(),
    );
    // The bounded run committed every record of the backlog: checkpoint events - 1.
    let start_checkpoint = events as i64 - 1;
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let producing = producing.clone();
        let (topic, file) = (topic.clone(), live_file.clone());
        std::thread::spawn(move || {
            let out = ONRAMP
                .command()
                .args([
                    "produce",
                    "--topic",
                    &topic,
                    "--input",
                    file.to_str().unwrap(),
                    "--json",
                ])
                .stdout(Stdio::piped())
                .output()
                .unwrap();
            producing.store(false, Ordering::SeqCst);
            out
        })
    };
    println!("\nlag while {live_events} more events are produced (sampled every 500 ms):");
    println!("t (s) | producing | committed since start | onramp_partition_lag_records");
    let started = Instant::now();
    let mut max_lag = 0;
    let mut caught_up_at = None;
    while started.elapsed() < Duration::from_secs(300) {
        let committed = checkpoints(&base).values().copied().max().unwrap_or(start_checkpoint) - start_checkpoint;
        let lag: u64 = partition_lags(&base).values().sum();
        max_lag = max_lag.max(lag);
        let live = producing.load(Ordering::SeqCst);
        println!(
            "{:>5.1} | {:>9} | {committed:>21} | {lag}",
            started.elapsed().as_secs_f64(),
            live
        );
        if !live && committed as u64 >= live_events && lag == 0 {
            caught_up_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = producer.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "max lag reported {max_lag}; lag back to 0 with every record committed after {}",
        caught_up_at.map_or("(not within 300 s)".into(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    follower.interrupt();
    let _ = follower.wait_timeout(Duration::from_secs(30));
    let log = follower.log_text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    println!("the follower's warnings ({}):", warnings.len());
    for w in warnings {
        println!("  {w}");
    }
}
