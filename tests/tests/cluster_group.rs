//! Several consumers sharing a topic's partitions (`--members`/`--member`), against a real
//! local Fluvio cluster: two members over 4 partitions end with stores whose union equals
//! one consumer's store; going to 3 members moves only the reassigned partition (its old
//! owner refuses its store until told to hand it over, then rebuilds what it still owns,
//! the newcomer builds the moved partition from the topic), and the union is still equal,
//! including events produced after the change.
//!
//! Runs only with `FLUVIO_E2E=1` and the `fluvio` CLI (and `fluvio-run`) on PATH; otherwise
//! it prints that it was skipped (CI has no cluster).
//!
//! ```text
//! FLUVIO_E2E=1 PATH=/path/to/fluvio/bin:$PATH cargo test -p onramp-tests --test cluster_group -- --nocapture
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use onramp_tests::cli::{fails, json, ok, Onramp};
use onramp_tests::cluster::{skipped, LocalCluster, Needs};

/// Members' URLs: the read APIs are not asked by this test.
const TWO: &str = "n1=http://127.0.0.1:8081,n2=http://127.0.0.1:8082";
const THREE: &str = "n1=http://127.0.0.1:8081,n2=http://127.0.0.1:8082,n3=http://127.0.0.1:8083";

fn produce(topic: &str, dir: &Path, name: &str, seed: &str, events: &str) {
    let path = dir.join(name);
    ok(&[
        "generate",
        "--seed",
        seed,
        "--users",
        "3000",
        "--events",
        events,
        "--output",
        path.to_str().unwrap(),
    ]);
    let produced = json(&["produce", "--topic", topic, "--input", path.to_str().unwrap(), "--json"]);
    assert_eq!(produced["failed"], 0, "{produced}");
}

fn run<'a>(topic: &'a str, store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--source",
        "fluvio",
        "--topic",
        topic,
        "--store",
        store,
        "--stop-at-end",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs every member at once (each with `--members group --member NAME`); their summaries.
fn run_members(topic: &str, group: &str, members: &[(&str, &str, bool)]) -> Vec<serde_json::Value> {
    std::thread::scope(|s| {
        let runs: Vec<_> = members
            .iter()
            .map(|(name, store, rebalance)| {
                s.spawn(move || {
                    let mut extra = vec!["--members", group, "--member", name];
                    if *rebalance {
                        extra.push("--rebalance");
                    }
                    json(&run(topic, store, &extra))
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("a member's run")).collect()
    })
}

/// Every stored profile of these stores, one JSON line per id, in id order.
fn union(stores: &[&str]) -> String {
    let mut lines: Vec<String> = stores
        .iter()
        .flat_map(|s| {
            Onramp::Debug
                .export_by_id(Path::new(s))
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    let ids: BTreeSet<&str> = lines.iter().map(|l| &l[..l.find(',').unwrap_or(l.len())]).collect();
    assert_eq!(ids.len(), lines.len(), "an id is stored by two members");
    lines.join("\n")
}

/// The partitions a store has consumed (a checkpoint each).
fn consumed(store: &str) -> Vec<u64> {
    let stats = json(&["stats", "--json", "--no-lag", "--store", store]);
    stats["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["checkpoint"].as_i64().unwrap() >= 0)
        .map(|p| p["partition"].as_u64().unwrap())
        .collect()
}

fn events_in(summaries: &[serde_json::Value]) -> u64 {
    summaries.iter().map(|s| s["events_in"].as_u64().unwrap()).sum()
}

#[test]
fn members_share_the_partitions_and_hand_them_over() {
    if skipped("cluster e2e tests", Needs::Cli) {
        return;
    }
    onramp_tests::modules();
    let mut cluster = LocalCluster::ensure("onramp-group");
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let topic = cluster.topic("events");
    ok(&["setup", "--topic", &topic, "--partitions", "4", "--replace"]);
    produce(&topic, dir.path(), "day1.jsonl", "5", "40000");

    // One consumer: the reference.
    let single = d("single");
    let whole = json(&run(&topic, &single, &[]));

    // (b) Two members: n1 owns partition 0, n2 owns 1, 2 and 3 (the table is pinned by
    // the assignment's unit tests). Their union is the single store.
    let (n1, n2, n3) = (d("n1"), d("n2"), d("n3"));
    let two = run_members(&topic, TWO, &[("n1", &n1, false), ("n2", &n2, false)]);
    assert_eq!(events_in(&two), whole["events_in"].as_u64().unwrap(), "{two:?}");
    assert_eq!(consumed(&n1), [0]);
    assert_eq!(consumed(&n2), [1, 2, 3]);
    let reference = union(&[&single]);
    assert!(reference.lines().count() > 1000);
    assert!(
        union(&[&n1, &n2]) == reference,
        "two members: the union differs from one consumer's store"
    );
    eprintln!(
        "2 members: union of {} profiles equals the single consumer's",
        reference.lines().count()
    );

    // Events after the group changes: the single consumer catches up as the reference.
    produce(&topic, dir.path(), "day2.jsonl", "6", "10000");
    let more = json(&run(&topic, &single, &[]));
    let reference = union(&[&single]);

    // (b) Three members: n3 takes partition 2 from n2; n1 keeps partition 0 untouched.
    // n2's store holds partition 2, so it is refused without --rebalance.
    let refused = fails(&run(&topic, &n2, &["--members", THREE, "--member", "n2"]));
    assert!(
        refused.contains("partitions 2") && refused.contains("--rebalance"),
        "{refused}"
    );
    let three = run_members(
        &topic,
        THREE,
        &[("n1", &n1, false), ("n2", &n2, true), ("n3", &n3, false)],
    );
    // n1 read only day 2's records of partition 0; n2 rebuilt 1 and 3 from offset 0; n3
    // built 2 from offset 0.
    assert_eq!(consumed(&n1), [0]);
    assert_eq!(consumed(&n2), [1, 3]);
    assert_eq!(consumed(&n3), [2]);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".handed-over-"))
        .collect();
    assert!(
        aside.len() == 1 && aside[0].starts_with("n2.handed-over-"),
        "only n2's store was set aside: {aside:?}"
    );
    assert!(
        three[0]["events_in"].as_u64().unwrap() < more["events_in"].as_u64().unwrap(),
        "n1 read only what was new on its partition: {}",
        three[0]
    );
    assert!(
        union(&[&n1, &n2, &n3]) == reference,
        "three members: the union differs from one consumer's store"
    );
    eprintln!(
        "3 members: only partition 2 moved; union of {} profiles equal",
        reference.lines().count()
    );

    // A member that owns nothing, and a name that is not in the group, are refused.
    let stray = fails(&run(&topic, &d("stray"), &["--members", TWO, "--member", "n9"]));
    assert!(stray.contains("not one of --members"), "{stray}");
}
