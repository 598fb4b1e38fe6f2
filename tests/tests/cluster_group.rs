//! Several consumers sharing a topic's partitions (`--members`/`--member`), against a real
//! local Fluvio cluster: two members over 4 partitions end with stores whose union equals
//! one consumer's store; going to 3 members moves only the reassigned partition (its old
//! owner refuses its store until told to hand it over, then rebuilds what it still owns,
//! the newcomer builds the moved partition from the topic), and the union is still equal,
//! including events produced after the change. Any member answers a profile lookup with
//! the same person as the single store, also when the person's ids live on partitions of
//! different members; with a member down, the lookup fails instead of answering in part.
//!
//! Runs only with `FLUVIO_E2E=1` and the `fluvio` CLI (and `fluvio-run`) on PATH; otherwise
//! it prints that it was skipped (CI has no cluster).
//!
//! ```text
//! FLUVIO_E2E=1 PATH=/path/to/fluvio/bin:$PATH cargo test -p onramp-tests --test cluster_group -- --nocapture
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use onramp_tests::cli::{command, fails, json, ok, Onramp};
use onramp_tests::cluster::{run_args as run, skipped, LocalCluster, Needs};
use onramp_tests::running::Running;

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

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

    // An erasure on the member that holds the person (and on the single store): after
    // n2 hands partition 2 over and rebuilds 1 and 3 from the topic, the person must stay
    // erased there (its suppressions are carried over), or the union would differ.
    let erased = onramp_tests::cli::export(Path::new(&n2))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|p| {
            let partitions: Vec<&String> = p["as_of_partitions"].as_object().unwrap().keys().collect();
            p["anonymous_ids"].as_array().unwrap().is_empty() && (partitions == ["1"] || partitions == ["3"])
        })
        .expect("a person of n2 on partition 1 or 3 only")["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&["erase", "--store", &n2, &erased]);
    ok(&["erase", "--store", &single, &erased]);

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
        !onramp_tests::cli::onramp(&["profile", "get", &erased, "--store", &n2])
            .status
            .success(),
        "`{erased}`, erased on n2, came back with the rebuild"
    );
    assert!(
        union(&[&n1, &n2, &n3]) == reference,
        "three members: the union differs from one consumer's store"
    );
    eprintln!(
        "3 members: only partition 2 moved; union of {} profiles equal",
        reference.lines().count()
    );

    // (c) Any member answers a lookup with the same person as the single store, for
    // persons whose ids live on partitions of different members.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let group = format!(
        "n1=http://127.0.0.1:{},n2=http://127.0.0.1:{},n3=http://127.0.0.1:{}",
        ports[0], ports[1], ports[2]
    );
    let members: Vec<Running> = [("n1", &n1), ("n2", &n2), ("n3", &n3)]
        .iter()
        .zip(&ports)
        .map(|((name, store), port)| {
            let mut cmd = command();
            cmd.args(["run", "--source", "fluvio", "--topic", &topic, "--store", store])
                .args(["--members", &group, "--member", name])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("ONRAMP_LOG", "warn,onramp=info");
            Running::serving(cmd, dir.path().join(format!("{name}.log")))
        })
        .collect();
    let persons: Vec<serde_json::Value> = onramp_tests::cli::export(Path::new(&single))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|p| !p["anonymous_ids"].as_array().unwrap().is_empty())
        .collect();
    let partitions = |p: &serde_json::Value| -> BTreeSet<String> {
        p["as_of_partitions"].as_object().unwrap().keys().cloned().collect()
    };
    let spanning: Vec<&serde_json::Value> = persons.iter().filter(|p| partitions(p).len() > 1).take(40).collect();
    assert!(spanning.len() >= 20, "few persons span partitions: {}", spanning.len());
    let agent = onramp_tests::http_agent(Some(std::time::Duration::from_secs(30)));
    for person in &spanning {
        let ids = std::iter::once(person["user_id"].as_str().unwrap()).chain(
            person["anonymous_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap()),
        );
        for id in ids {
            let expected: serde_json::Value =
                serde_json::from_str(&ok(&["profile", "get", id, "--store", &single])).unwrap();
            for (m, member) in members.iter().enumerate() {
                let url = format!("{}/v1/profiles/{id}", member.base());
                let mut resp = agent.get(&url).call().unwrap();
                let body = resp.body_mut().read_to_string().unwrap();
                let got: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                assert_eq!(got, expected, "member n{} answered `{id}` differently", m + 1);
            }
        }
    }
    eprintln!(
        "group reads: {} persons spanning partitions, every id asked of every member, equal to the single store",
        spanning.len()
    );
    // A member that cannot be reached makes the lookup fail, not answer with part of the person.
    let mut members = members;
    let n3_run = members.pop().unwrap();
    drop(n3_run);
    let id = spanning[0]["user_id"].as_str().unwrap();
    let mut resp = agent
        .get(&format!("{}/v1/profiles/{id}", members[0].base()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(body.contains("member_unavailable") && body.contains("n3"), "{body}");
    drop(members);
    // A URL that reaches the wrong member would count its profiles twice: refused.
    let port = free_port();
    let wrong = format!("n1=http://127.0.0.1:{port},n2=http://localhost:{port}");
    let mut cmd = command();
    cmd.args(["run", "--source", "fluvio", "--topic", &topic, "--store", &n1])
        .args(["--members", &wrong, "--member", "n1"])
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let lone = Running::serving(cmd, dir.path().join("wrong.log"));
    let lookup = || {
        let mut resp = agent.get(&format!("{}/v1/profiles/{id}", lone.base())).call().unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    };
    onramp_tests::wait_until(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(200),
        "the store to open",
        || !lookup().1.contains("\"starting\""),
    );
    let (status, body) = lookup();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("group_misconfigured") && body.contains("reaches member `n1`"),
        "{body}"
    );
    drop(lone);

    // A member that owns nothing, and a name that is not in the group, are refused.
    let stray = fails(&run(&topic, &d("stray"), &["--members", TWO, "--member", "n9"]));
    assert!(stray.contains("not one of --members"), "{stray}");
}
