//! Producer batches larger than every default fetch, against a real local Fluvio cluster:
//! a topic written by `fluvio produce` with 20 MB batches is read to its end (`--stop-at-end`
//! sees the real end offset, not an empty partition), stalls are reopened, the store equals
//! the embedded run over the same lines, and a later run on the same store grows straight
//! to the fetch size that got it past the last stall (one reopen, not one per doubling).
//!
//! Runs only with `FLUVIO_E2E=1` and the `fluvio` CLI (and `fluvio-run`) on PATH; otherwise
//! it prints that it was skipped (CI has no cluster).
//!
//! ```text
//! FLUVIO_E2E=1 PATH=/path/to/fluvio/bin:$PATH cargo test -p onramp-tests --test cluster_batches -- --nocapture
//! ```

use std::path::Path;

use onramp_tests::cli::{command, export, ok};
use onramp_tests::cluster::{fluvio, skipped, LocalCluster, Needs};

/// `fluvio produce` of `file` in batches of up to 20 MB.
fn produce_big_batches(topic: &str, file: &Path) {
    let out = fluvio(&[
        "produce",
        topic,
        "-f",
        file.to_str().unwrap(),
        "--batch-size",
        "20000000",
        "--max-request-size",
        "20000000",
        "--linger",
        "2s",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `onramp run --source fluvio --stop-at-end` with the default fetch size: its summary and
/// how many stall reopens its log shows.
fn run(topic: &str, store: &str, log: &Path) -> (serde_json::Value, usize) {
    let out = command()
        .args(["run", "--source", "fluvio", "--topic", topic, "--store", store])
        .args(["--stop-at-end", "--json", "--listen", "off"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(log, &stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        summary,
        stderr.matches("reopening from the checkpoint with max_bytes").count(),
    )
}

#[test]
fn producer_batches_larger_than_a_fetch_are_read_to_the_end() {
    if skipped("cluster e2e tests", Needs::Cli) {
        return;
    }
    onramp_tests::modules();
    let mut cluster = LocalCluster::ensure("onramp-batches");
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let topic = cluster.topic("events");
    ok(&["setup", "--topic", &topic, "--partitions", "1", "--replace"]);
    let day = |name: &str, seed: &str| {
        let path = d(name);
        ok(&[
            "generate",
            "--seed",
            seed,
            "--users",
            "2000",
            "--events",
            "20000",
            "--output",
            path.to_str().unwrap(),
        ]);
        path
    };
    let (day1, day2) = (day("day1.jsonl", "3"), day("day2.jsonl", "4"));

    // Day 1: a few batches of several MB each, whose chain output is far above 4 MiB.
    produce_big_batches(&topic, &day1);
    let store = d("cluster");
    let store = store.to_str().unwrap();
    let (first, reopens) = run(&topic, store, &d("run1.log"));
    assert_eq!(first["events_in"], 20_000, "the whole partition was read: {first}");
    assert!(reopens >= 2, "the fetch size doubled through stalls: {reopens} reopens");

    // Day 2, same store: the first stall grows straight to the size that worked.
    produce_big_batches(&topic, &day2);
    let (second, reopens) = run(&topic, store, &d("run2.log"));
    assert_eq!(second["events_in"], 20_000, "{second}");
    assert_eq!(reopens, 1, "one reopen at the remembered size");

    // The same lines through the embedded run.
    let both = d("both.jsonl");
    let text = std::fs::read_to_string(&day1).unwrap() + &std::fs::read_to_string(&day2).unwrap();
    std::fs::write(&both, text).unwrap();
    let embedded = d("embedded");
    ok(&[
        "run",
        "--input",
        both.to_str().unwrap(),
        "--partitions",
        "1",
        "--store",
        embedded.to_str().unwrap(),
        "--listen",
        "off",
    ]);
    assert!(
        export(Path::new(store)) == export(&embedded),
        "the store differs from the embedded run's"
    );
    eprintln!("large producer batches: read to the end, one reopen on the second run, store equal");
}
