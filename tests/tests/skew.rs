//! Skew, black box: events per partition and each partition's heaviest keys, as
//! `onramp stats` and `/metrics` show them, across batchings and an erasure.

use std::path::Path;

use onramp_tests::cli::{command, json, ok, stats_comparable};
use onramp_tests::running::Running;
use onramp_tests::synthetic::{stream, ts, T0};
use serde_json::{json, Value};

/// 2,500 ordinary events over 300 users, with a bot (`hot_bot`) on every 4th line, a big
/// account (`big_account`) on every 25th, and a reject naming one of 97 users (an unknown
/// event type) on every 3rd: rejects and updates interleave, and the sketch must take
/// them in offset order for its figures not to depend on the batching.
fn skewed_input(dir: &Path) -> (std::path::PathBuf, usize, u64, u64) {
    let mut lines = Vec::new();
    let (mut bot, mut big) = (0u64, 0u64);
    for (i, line) in stream(2_500, 300, 3_600_000, 7).into_iter().enumerate() {
        lines.push(String::from_utf8(line).unwrap());
        if i % 3 == 0 {
            lines.push(
                json!({"type": "teleported", "event_id": format!("r-{i}"), "user_id": format!("r_{}", i % 97),
                       "timestamp": ts(T0 + i as i64 * 600)})
                .to_string(),
            );
        }
        let who = if i % 4 == 0 {
            bot += 1;
            "hot_bot"
        } else if i % 25 == 1 {
            big += 1;
            "big_account"
        } else {
            continue;
        };
        let t = T0 + i as i64 * 600;
        lines.push(
            json!({"type": "click", "event_id": format!("{who}-{i}"), "user_id": who, "timestamp": ts(t),
                   "properties": {"target": "next"}})
            .to_string(),
        );
    }
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines.len(), bot, big)
}

fn run_into(input: &Path, batch_size: &str, store: &Path) {
    ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--partitions",
        "3",
        "--batch-size",
        batch_size,
        "--durability",
        "relaxed",
        "--store",
        store.to_str().unwrap(),
    ]);
}

fn partitions(store: &Path) -> Value {
    json(&["stats", "--json", "--store", store.to_str().unwrap()])["partitions"].clone()
}

/// The hot keys of every partition, as (partition, key).
fn hot_keys(partitions: &Value) -> Vec<(u64, String)> {
    partitions
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let n = p["partition"].as_u64().unwrap();
            p["hot_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |k| (n, k["key"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// Proves every record is counted on its partition; the bot and the big account are the
/// heaviest keys of their partitions, their estimates bracketing the truth; the figures
/// are the same for batches of 7 and of 1000 (the sketch follows offsets, not batches);
/// `/metrics` shows them; and an erasure takes the bot out of every sketch.
#[test]
fn hot_keys_are_reported_per_partition_the_same_for_any_batching_and_erased() {
    let dir = tempfile::tempdir().unwrap();
    let (input, records, bot, big) = skewed_input(dir.path());
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    // The two runs are independent: side by side, they take the time of one.
    std::thread::scope(|s| {
        s.spawn(|| run_into(&input, "7", &small));
        run_into(&input, "1000", &large);
    });
    let figures = partitions(&small);
    // Pseudonyms are keyed per store; everything else must match.
    assert_eq!(
        stats_comparable(&small)["partitions"],
        stats_comparable(&large)["partitions"],
        "the batching changed the skew figures"
    );

    let parts = figures.as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let events: u64 = parts.iter().map(|p| p["events"].as_u64().unwrap()).sum();
    assert_eq!(
        events, records as u64,
        "every record (updates and rejects) is counted once"
    );
    for (key, truth) in [("hot_bot", bot), ("big_account", big)] {
        let p = parts
            .iter()
            .find(|p| p["hot_keys"].as_array().unwrap().iter().any(|k| k["key"] == key))
            .unwrap_or_else(|| panic!("{key} is not among the heaviest keys: {figures:#}"));
        let k = &p["hot_keys"].as_array().unwrap()[0];
        assert_eq!(k["key"], key, "{key} is its partition's heaviest key: {p:#}");
        let (estimate, over) = (k["events"].as_u64().unwrap(), k["overcount"].as_u64().unwrap());
        assert!(
            estimate >= truth && estimate - over <= truth,
            "{key}: {k} for {truth} events"
        );
    }
    let text = ok(&["stats", "--store", small.to_str().unwrap()]);
    assert!(text.contains("heaviest keys") && text.contains("hot_bot"), "{text}");

    // /metrics of a server over the store.
    let mut cmd = command();
    cmd.args(["serve", "--store", small.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let server = Running::serving(cmd, dir.path().join("serve.log"));
    let agent = onramp_tests::http_agent(Some(std::time::Duration::from_secs(10)));
    let metrics = agent
        .get(format!("{}/metrics", server.base()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    drop(server);
    // By pseudonym: an id in a scraper's storage could never be erased.
    let bot = parts
        .iter()
        .find_map(|p| {
            let k = &p["hot_keys"][0];
            (k["key"] == "hot_bot").then(|| (p["partition"].clone(), k["pseudonym"].as_str().unwrap().to_string()))
        })
        .unwrap();
    assert!(bot.1.starts_with("k_") && bot.1.len() == 14, "{bot:?}");
    assert!(
        metrics.contains(&format!(
            "onramp_hot_key_events{{partition=\"{}\",rank=\"1\",key=\"{}\"}}",
            bot.0, bot.1
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("hot_bot"), "/metrics names an id: {metrics}");
    for p in parts {
        let line = format!(
            "onramp_partition_events_total{{partition=\"{}\"}} {}",
            p["partition"], p["events"]
        );
        assert!(metrics.contains(&line), "{line} missing from {metrics}");
    }

    // Erasure: the bot leaves every sketch; the partitions keep their event counts.
    ok(&["erase", "--store", small.to_str().unwrap(), "hot_bot"]);
    let after = partitions(&small);
    assert!(
        !hot_keys(&after).iter().any(|(_, k)| k == "hot_bot"),
        "an erased id is still reported as a hot key: {after:#}"
    );
    let events_after: u64 = after
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["events"].as_u64().unwrap())
        .sum();
    assert_eq!(events_after, events);
    assert!(hot_keys(&after).iter().any(|(_, k)| k == "big_account"));
}
