//! Identity, black box and at the store: one person across anonymous and signed-up ids,
//! link conflicts decided by (event time, partition, offset) whatever the commit order,
//! and erasure of a person that stays erased (suppressions), also across a rebuild.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use onramp::store::{Batch, Store, StoreSettings};
use onramp_schemas::{Changes, Counters, ProfileUpdate};
use onramp_tests::cli::{command, json, ok, Onramp};
use onramp_tests::running::Running;
use onramp_tests::synthetic::{ts, T0};
use proptest::prelude::*;
use serde_json::{json, Value};

const TOKEN: &str = "identity-token";

/// One event line: `kind` at `T0 + i` seconds, with the ids given (`None`: absent).
fn event(i: i64, kind: &str, user: Option<&str>, anonymous: Option<&str>, extra: Value) -> String {
    let mut ev = json!({"event_id": format!("e{i}"), "type": kind, "timestamp": ts(T0 + i * 1_000)});
    if let Some(u) = user {
        ev["user_id"] = json!(u);
    }
    if let Some(a) = anonymous {
        ev["anonymous_id"] = json!(a);
    }
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        ev[k] = v;
    }
    ev.to_string()
}

fn page_view(i: i64, anonymous: &str, url: &str) -> String {
    event(
        i,
        "page_view",
        None,
        Some(anonymous),
        json!({"properties": {"path": "/", "url": url}, "context": {"page": {"referrer": "https://news.example.com/x"}}}),
    )
}

fn sign_up(i: i64, user: &str, anonymous: &str) -> String {
    event(
        i,
        "sign_up",
        Some(user),
        Some(anonymous),
        json!({"properties": {"method": "email", "email": format!("{user}@private-mail.net")}}),
    )
}

/// The traffic of the identity tests: u_1 visits as a_1 from a campaign, signs up, comes
/// back on a second device a_2; a_3 is claimed by u_2 first and u_3 later (a conflict);
/// a_4 never signs up.
fn identity_traffic() -> Vec<String> {
    vec![
        page_view(
            0,
            "a_1",
            "https://onramp.example/?utm_source=newsletter&utm_campaign=autumn",
        ),
        event(
            1,
            "click",
            None,
            Some("a_1"),
            json!({"properties": {"target": "pricing"}}),
        ),
        page_view(2, "a_3", "https://onramp.example/"),
        sign_up(3, "u_1", "a_1"),
        event(
            4,
            "step_completed",
            Some("u_1"),
            None,
            json!({"properties": {"step": "profile"}}),
        ),
        page_view(5, "a_4", "https://onramp.example/?utm_source=ads"),
        sign_up(6, "u_2", "a_3"),
        page_view(7, "a_2", "https://onramp.example/docs"),
        event(
            8,
            "identify",
            Some("u_1"),
            Some("a_2"),
            json!({"properties": {"traits": {"plan": "team"}}}),
        ),
        sign_up(9, "u_3", "a_3"),
        event(
            10,
            "click",
            Some("u_1"),
            None,
            json!({"properties": {"target": "next"}}),
        ),
    ]
}

fn write_input(dir: &Path, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `onramp run` of `input` over 3 partitions in batches of `batch_size` into `store`.
fn run_into(input: &Path, batch_size: &str, store: &Path) {
    let (input, store) = (input.to_str().unwrap(), store.to_str().unwrap());
    ok(&[
        "run",
        "--input",
        input,
        "--partitions",
        "3",
        "--batch-size",
        batch_size,
        "--store",
        store,
    ]);
}

fn persons(store: &Path) -> BTreeMap<String, Value> {
    Onramp::Debug
        .export(store)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["user_id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Proves a visitor who signs up is one person: the campaign, first touch and browsing of
/// the anonymous visit and of a second device are in the signed-up person's profile, read
/// by any of its ids; a contested anonymous id goes to the earliest claim and the conflict
/// shows on both persons and in the counters; stats, lists and export count persons; and
/// the persons do not depend on the batch size (commit interleaving).
#[test]
fn a_visitor_who_signs_up_is_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &identity_traffic());
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    run_into(&input, "1", &store);

    let all = persons(&store);
    let ids: Vec<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(ids, ["a_4", "u_1", "u_2", "u_3"], "one line per person");
    let u1 = &all["u_1"];
    assert_eq!(u1["anonymous_ids"], json!(["a_1", "a_2"]));
    assert_eq!(
        u1["acquisition"]["campaign"]["campaign"], "autumn",
        "first touch of the anonymous visit: {u1:#}"
    );
    assert_eq!(u1["first_seen_ms"], T0, "the visit before sign-up");
    assert_eq!(u1["counters"]["events"], 7, "a_1 2 + a_2 1 + u_1 4");
    assert_eq!(u1["traits"]["plan"]["value"], "team");
    assert_eq!(
        all["u_2"]["anonymous_ids"],
        json!(["a_3"]),
        "the earliest claim owns a_3"
    );
    assert_eq!(all["u_3"]["anonymous_ids"], json!([]));
    for who in ["u_2", "u_3"] {
        let conflicts = &all[who]["link_conflicts"];
        assert_eq!(conflicts[0]["anonymous_id"], "a_3", "{who}: {conflicts}");
        assert_eq!(conflicts[0]["owner"], "u_2");
        assert_eq!(conflicts[0]["also_claimed_by"], json!(["u_3"]));
    }
    assert!(all["a_4"]["anonymous_ids"] == json!([]) && all["a_4"].get("link_conflicts").is_none());

    // Any id reads the person, and says which was asked.
    for asked in ["a_1", "a_2", "u_1"] {
        let p = json(&["profile", "get", asked, "--store", s]);
        assert_eq!((p["user_id"].as_str(), p["asked"].as_str()), (Some("u_1"), Some(asked)));
        assert_eq!(p["counters"]["events"], 7);
        assert!(
            p["as_of_partitions"].as_object().is_some_and(|m| !m.is_empty()),
            "{p:#}"
        );
    }
    assert_eq!(
        listed(s),
        ["a_4", "u_1", "u_2", "u_3"],
        "a merged anonymous id is not listed on its own"
    );
    let stats = json(&["stats", "--json", "--store", s]);
    assert_eq!(stats["profiles"], 4, "stats count persons");
    assert_eq!(stats["counters"]["link_conflicts"], 1);
    let by_id = Onramp::Debug.export_by_id(&store);
    assert_eq!(by_id.lines().count(), 7, "every id is still stored on its own");
    let check = json(&["check", "--json", "--store", s]);
    assert_eq!(check["healthy"], true, "{check:#}");

    // Another batch size commits the partitions in another interleaving: same persons.
    let other = dir.path().join("other");
    run_into(&input, "1000", &other);
    assert_eq!(Onramp::Debug.export(&other), Onramp::Debug.export(&store));
}

/// The person ids `onramp profile list` prints (one JSON line each).
fn listed(store: &str) -> Vec<String> {
    ok(&["profile", "list", "--store", store, "--limit", "1000"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["user_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn update(user: &str, anonymous: Option<&str>, offset: i64, t: i64, id: String) -> ProfileUpdate {
    let changes = Changes {
        counters: Counters {
            events: 1,
            ..Counters::default()
        },
        anonymous_id: anonymous.map(str::to_string),
        traits: [("seen".to_string(), onramp_schemas::TraitValue::Text(id.clone()))].into(),
        ..Changes::default()
    };
    ProfileUpdate::applied(user, offset, &id, "identify", t, Some(changes))
}

/// Per partition, batches of updates: users u_0..u_4 claim anonymous ids a_0..a_5 (several
/// users per id) at event times that tie across partitions.
fn partition_batches(seed: u64) -> Vec<Vec<Batch>> {
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..3u32)
        .map(|partition| {
            let updates: Vec<ProfileUpdate> = (0..24)
                .map(|offset| {
                    let user = format!("u_{}", next(5));
                    let anonymous = (next(3) > 0).then(|| format!("a_{}", next(6)));
                    let t = T0 + next(4) as i64 * 1_000;
                    update(&user, anonymous.as_deref(), offset, t, format!("p{partition}-{offset}"))
                })
                .collect();
            updates
                .chunks(1 + next(5) as usize)
                .map(|chunk| Batch {
                    partition,
                    last_offset: chunk.last().unwrap().offset,
                    events_in: chunk.len() as u64,
                    updates: chunk.to_vec(),
                    rejects: Vec::new(),
                    input: None,
                })
                .collect()
        })
        .collect()
}

/// Commits the partitions' batches in the interleaving `order` picks (each partition's own
/// batches stay in order) and returns the persons' export.
fn commit_interleaved(batches: &[Vec<Batch>], mut order: Vec<u32>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("store"),
        &StoreSettings {
            partitions: 3,
            chain_params: "defaults".into(),
        },
    )
    .unwrap();
    let mut next = [0usize; 3];
    while next.iter().zip(batches).any(|(n, b)| *n < b.len()) {
        let pick = order.pop().unwrap_or(0) as usize % 3;
        let p = (0..3)
            .map(|i| (pick + i) % 3)
            .find(|p| next[*p] < batches[*p].len())
            .unwrap();
        store.commit(&batches[p][next[p]]).unwrap();
        next[p] += 1;
    }
    let mut out = Vec::new();
    onramp::query::export_lines(&store, &mut out).unwrap();
    let report = store.verify().unwrap();
    assert!(report.healthy, "{}", report.render());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Proves the persons (links, owners, conflicts, merged profiles) do not depend on the
    /// order the partitions' batches are committed in: any interleaving exports the same
    /// bytes as committing partition by partition.
    #[test]
    fn any_commit_interleaving_gives_the_same_persons(seed in 1u64..u64::MAX, order in proptest::collection::vec(0u32..3, 0..80)) {
        let batches = partition_batches(seed);
        let sequential: Vec<u32> = Vec::new();
        let reference = commit_interleaved(&batches, sequential);
        let interleaved = commit_interleaved(&batches, order);
        prop_assert_eq!(String::from_utf8_lossy(&interleaved), String::from_utf8_lossy(&reference));
    }
}

fn http(base: &str, method: &str, path: &str, last_event_id: Option<u64>) -> (u16, String) {
    let agent = onramp_tests::http_agent(Some(Duration::from_secs(10)));
    let url = format!("{base}{path}");
    let auth = format!("Bearer {TOKEN}");
    let result = match method {
        "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
        _ => {
            let mut req = agent.get(&url).header("Authorization", &auth);
            if let Some(id) = last_event_id {
                req = req.header("Last-Event-ID", &id.to_string());
            }
            req.call()
        }
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            // The update stream never ends: read what is there within a second.
            let body = if path.starts_with("/v1/updates") {
                let mut reader = resp.into_body().into_reader();
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                        if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                });
                let mut got = Vec::new();
                while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(1)) {
                    got.extend(chunk);
                }
                String::from_utf8_lossy(&got).into_owned()
            } else {
                resp.body_mut().read_to_string().unwrap_or_default()
            };
            (status, body)
        }
        Err(ureq::Error::StatusCode(code)) => (code, String::new()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// Proves erasing a person mid-run erases it for good: `DELETE` with its anonymous id
/// removes every id (profiles, links, rejects, replayable updates); events for any of its
/// ids that arrive afterwards are dropped and counted as suppressed; and a fresh store
/// rebuilt from the whole input with the exported suppressions ends identical, with the
/// same suppressed count.
#[test]
fn an_erased_person_stays_erased_mid_run_and_across_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut cmd = command();
    cmd.args([
        "run",
        "--input",
        "-",
        "--store",
        store.to_str().unwrap(),
        "--partitions",
        "3",
    ])
    .args([
        "--batch-size",
        "1",
        "--linger",
        "50ms",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ])
    .env("ONRAMP_LOG", "info");
    let mut run = Running::serving(cmd, dir.path().join("run.log"));
    let base = run.base().to_string();
    let before = identity_traffic();
    run.send(&before);
    // Every record is its own durable commit (three fsyncs): on a loaded CI disk that took
    // more than 30 s once, so the waits below allow two minutes.
    onramp_tests::wait_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        "u_1's last click",
        || {
            let (status, body) = http(&base, "GET", "/v1/profiles/u_1", None);
            status == 200 && body.contains("\"events\":7")
        },
    );
    let (status, body) = http(&base, "DELETE", "/v1/profiles/a_2", None);
    assert_eq!(status, 200, "{body}");
    let removed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(removed["removed"]["ids"], json!(["u_1", "a_1", "a_2"]), "{removed:#}");
    for id in ["u_1", "a_1", "a_2"] {
        assert_eq!(http(&base, "GET", &format!("/v1/profiles/{id}"), None).0, 404, "{id}");
    }
    // Afterwards: more of the erased person on every id (one of them a reject), then a
    // marker for someone else.
    let after = vec![
        page_view(20, "a_1", "https://onramp.example/again"),
        event(
            21,
            "click",
            Some("u_1"),
            None,
            json!({"properties": {"target": "next"}}),
        ),
        event(22, "no_such_type", Some("u_1"), None, json!({})),
        event(
            23,
            "identify",
            Some("u_5"),
            Some("a_2"),
            json!({"properties": {"traits": {"plan": "pro"}}}),
        ),
        page_view(24, "a_9", "https://onramp.example/marker"),
    ];
    run.send(&after);
    onramp_tests::wait_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        "the marker",
        || http(&base, "GET", "/v1/profiles/a_9", None).0 == 200,
    );
    for id in ["u_1", "a_1", "a_2"] {
        assert_eq!(
            http(&base, "GET", &format!("/v1/profiles/{id}"), None).0,
            404,
            "{id} came back"
        );
    }
    let u5 = http(&base, "GET", "/v1/profiles/u_5", None).1;
    assert!(
        !u5.contains("a_2"),
        "u_5 keeps its event but not the erased anonymous id: {u5}"
    );
    // /metrics counts the dropped records and the one link conflict (u_3 claimed a_3 after
    // u_2), once every partition committed them.
    onramp_tests::wait_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        "3 suppressed records and 1 link conflict on /metrics",
        || {
            let text = http(&base, "GET", "/metrics", None).1;
            let sum = |prefix: &str| -> u64 {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum()
            };
            sum("onramp_events_total{outcome=\"suppressed\"") == 3 && sum("onramp_link_conflicts_total ") == 1
        },
    );
    let (_, replay) = http(&base, "GET", "/v1/updates", Some(0));
    assert!(replay.contains("a_9"), "the replay works: {replay}");
    for id in ["\"u_1\"", "\"a_1\"", "\"a_2\"", "u_1@private-mail.net"] {
        assert!(!replay.contains(id), "the replay still has {id}");
    }
    run.close_stdin();
    assert!(run.wait().success());

    let s = store.to_str().unwrap();
    let stats = json(&["check", "--json", "--store", s]);
    assert_eq!(stats["healthy"], true, "{stats:#}");
    // a_1's page view, u_1's click and reject, and the anonymous id of u_5's event is not
    // a record of its own (u_5's event is kept).
    assert_eq!(stats["counters"]["suppressed"], 3, "{stats:#}");
    let by_id = Onramp::Debug.export_by_id(&store);
    for id in ["\"u_1\"", "\"a_1\"", "\"a_2\"", "u_1@private-mail.net"] {
        assert!(!by_id.contains(id), "the store still has {id}");
    }
    assert!(!listed(s).contains(&"u_1".to_string()));

    // A rebuild from the whole input, given the suppressions, ends identical.
    let list = dir.path().join("suppressions.json");
    ok(&[
        "suppressions",
        "export",
        "--store",
        s,
        "--output",
        list.to_str().unwrap(),
    ]);
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    let input = write_input(dir.path(), &all);
    let rebuilt = dir.path().join("rebuilt");
    let summary = json(&[
        "run",
        "--json",
        "--input",
        input.to_str().unwrap(),
        "--partitions",
        "3",
        "--store",
        rebuilt.to_str().unwrap(),
        "--suppressions",
        list.to_str().unwrap(),
    ]);
    assert!(summary["suppressed"].as_u64().unwrap() >= 3, "{summary:#}");
    assert_eq!(Onramp::Debug.export(&rebuilt), Onramp::Debug.export(&store));
    assert_eq!(
        json(&["check", "--json", "--store", rebuilt.to_str().unwrap()])["healthy"],
        true
    );
    // An id that never existed is not found, and nothing is suppressed for it.
    let out = Onramp::Debug.output(&["erase", "nobody", "--store", s]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nothing of `nobody`"));
}

/// Proves ids that name each other stay in exactly one person each, in person-id order:
/// two users that each give the other's id as their anonymous id (a cycle), and a chain
/// `a_1 → u_3 → u_4` (u_3 claims a_1, then u_4 names u_3 as its anonymous id). A user that
/// claimed an anonymous id is always its own person, so nothing drops out of export, list or
/// stats, and erasing u_4 leaves u_3 and its visit alone.
#[test]
fn ids_that_name_each_other_stay_in_exactly_one_person() {
    let lines = vec![
        sign_up(0, "u_1", "u_2"),
        sign_up(1, "u_2", "u_1"),
        page_view(2, "a_1", "https://onramp.example/?utm_source=ads&utm_campaign=chain"),
        sign_up(3, "u_3", "a_1"),
        event(
            4,
            "identify",
            Some("u_4"),
            Some("u_3"),
            json!({"properties": {"traits": {"plan": "pro"}}}),
        ),
        page_view(5, "b_1", "https://onramp.example/"),
        page_view(6, "z_1", "https://onramp.example/"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &lines);
    let store = dir.path().join("store");
    run_into(&input, "1", &store);
    let persons = persons(&store);
    let ids: Vec<&str> = persons.keys().map(String::as_str).collect();
    assert_eq!(ids, ["b_1", "u_1", "u_2", "u_3", "u_4", "z_1"], "{persons:#?}");
    assert_eq!(persons["u_3"]["anonymous_ids"], json!(["a_1"]));
    assert_eq!(persons["u_3"]["acquisition"]["campaign"]["campaign"], "chain");
    for id in ["u_1", "u_2", "u_4"] {
        assert_eq!(persons[id]["anonymous_ids"], json!([]), "{id} owns no claimant");
    }
    // Every stored id is in exactly one person.
    let mut covered: Vec<String> = persons
        .values()
        .flat_map(|p| {
            let anonymous: Vec<String> = serde_json::from_value(p["anonymous_ids"].clone()).unwrap();
            std::iter::once(p["user_id"].as_str().unwrap().to_string()).chain(anonymous)
        })
        .collect();
    covered.sort();
    let stored: Vec<String> = Onramp::Debug
        .export_by_id(&store)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["user_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(covered, stored);
    let s = store.to_str().unwrap();
    assert_eq!(listed(s), ids);
    for id in ["u_1", "u_2", "u_3", "a_1"] {
        let got = json(&["profile", "get", id, "--store", s]);
        let want = if id == "a_1" { "u_3" } else { id };
        assert_eq!(got["user_id"], want, "the person of {id}");
    }
    ok(&["erase", "u_4", "--store", s]);
    let after = Onramp::Debug.export(&store);
    assert!(after.contains("\"u_3\"") && after.contains("\"a_1\""), "{after}");
    assert!(!after.contains("\"u_4\""), "{after}");
    assert_eq!(json(&["check", "--json", "--store", s])["healthy"], true);
}
