//! The `onramp` binary end to end: generated traffic through `onramp run` against the
//! reference fold, SIGKILL crash recovery, and refused bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onramp::generator::{Generator, GeneratorConfig};
use onramp::partition::{record_key, Partitioner};
use onramp_schemas::Profile;
use onramp_tests::cli::{command, export, json, ok, onramp, store_profiles};
use onramp_tests::reference::{reference_fold, reference_persons, ReferenceConfig};
use onramp_tests::running::Running;

/// Writes the generator's traffic for `seed` and `users` (other settings default).
fn write_traffic(dir: &Path, seed: u64, users: u64) -> (PathBuf, Vec<String>) {
    let lines: Vec<String> = Generator::new(GeneratorConfig {
        seed,
        users,
        ..GeneratorConfig::default()
    })
    .collect();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines)
}

/// `lines` split into partitions as the Fluvio producer would: `(offset, value)` each.
fn partitioned(lines: &[String], partitions: u32) -> Vec<Vec<(i64, Vec<u8>)>> {
    let mut partitioner = Partitioner::new(partitions);
    let mut per_partition: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(); partitions as usize];
    for line in lines {
        let p = partitioner.partition(record_key(line.as_bytes()).as_deref()) as usize;
        let offset = per_partition[p].len() as i64;
        per_partition[p].push((offset, line.clone().into_bytes()));
    }
    per_partition
}

/// The reference fold of `lines`, per id.
fn reference(lines: &[String], partitions: u32) -> BTreeMap<String, Profile> {
    partitioned(lines, partitions)
        .iter()
        .flat_map(|records| reference_fold(records, ReferenceConfig::default()))
        .collect()
}

/// Checks the store's persons (`onramp export`) against the reference's, person by
/// person: profile, anonymous ids and which ids had link conflicts. Returns how many
/// persons got their first touch from an anonymous id (the visit before sign-up), have two
/// or more anonymous ids (devices), and have link conflicts.
fn assert_persons_equal_the_reference(store: &Path, lines: &[String], partitions: u32) -> [usize; 3] {
    let want = reference_persons(&partitioned(lines, partitions), ReferenceConfig::default());
    let by_id = reference(lines, partitions);
    let exported = export(store);
    assert_eq!(exported.lines().count(), want.len(), "person count");
    let mut first_touch_from_a_visit = 0;
    let mut devices = 0;
    let mut conflicts = 0;
    for line in exported.lines() {
        let got: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = got["user_id"].as_str().unwrap().to_string();
        let want = want
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is not a person of the reference"));
        let profile: Profile = serde_json::from_value(got.clone()).unwrap();
        assert_eq!(profile, want.profile, "profile of person {id}");
        let anonymous_ids: Vec<String> = serde_json::from_value(got["anonymous_ids"].clone()).unwrap();
        assert_eq!(anonymous_ids, want.anonymous_ids, "anonymous ids of person {id}");
        let conflicted: BTreeSet<String> = got["link_conflicts"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| c["anonymous_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(conflicted, want.conflicted_ids, "link conflicts of person {id}");
        devices += usize::from(want.anonymous_ids.len() >= 2);
        conflicts += usize::from(!conflicted.is_empty());
        let touch = want.profile.acquisition.as_ref();
        if touch.is_some_and(|t| t.acquisition.campaign.is_some()) && !want.anonymous_ids.is_empty() {
            let own = by_id.get(&id).and_then(|p| p.acquisition.as_ref());
            if own != touch {
                first_touch_from_a_visit += 1;
            }
        }
    }
    [first_touch_from_a_visit, devices, conflicts]
}

/// Proves generated traffic — late events, retries, bots, test users, malformed lines —
/// run through `onramp run` over 3 partitions gives a store equal, profile by profile,
/// to the plain reference fold, and the summary counts add up.
#[test]
fn run_equals_the_reference_fold() {
    let dir = tempfile::tempdir().unwrap();
    let (input, lines) = write_traffic(dir.path(), 3, 400);
    let store = dir.path().join("store");
    let summary = ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--partitions",
        "3",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["events_in"], lines.len() as u64);
    let rejected: u64 = summary["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(summary["accepted"].as_u64().unwrap() + rejected, lines.len() as u64);
    assert!(
        summary["duplicates"].as_u64().unwrap() > 0,
        "the generator retries some events"
    );
    for reason in ["bot", "test_user", "invalid_json"] {
        assert!(
            summary["rejected"][reason].as_u64().unwrap_or(0) > 0,
            "some {reason} rejects"
        );
    }

    let got = store_profiles(&store);
    let want = reference(&lines, 3);
    assert_eq!(got.len(), want.len(), "profile count");
    for (user, p) in &want {
        assert_eq!(got.get(user), Some(p), "profile of {user}");
    }
    let [carried, devices, conflicts] = assert_persons_equal_the_reference(&store, &lines, 3);
    assert!(
        carried > 10,
        "only {carried} persons got their campaign from the visit before sign-up"
    );
    assert!(devices > 5, "only {devices} persons with two anonymous ids");
    assert!(conflicts > 0, "no link conflicts in the traffic");

    // Running again over the same input changes nothing.
    let before = export(&store);
    let again: serde_json::Value = serde_json::from_str(&ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--partitions",
        "3",
        "--json",
    ]))
    .unwrap();
    assert_eq!(again["events_in"], 0);
    assert_eq!(again["already_committed"], lines.len() as u64);
    assert_eq!(export(&store), before);
}

/// `onramp run` of `input` into `store` as every run of the SIGKILL test: 2 partitions,
/// batches of 50, records keyed by event id.
fn kill_test_run<'a>(input: &'a str, store: &'a Path) -> Vec<&'a str> {
    let store = store.to_str().unwrap();
    vec![
        "run",
        "--input",
        input,
        "--store",
        store,
        "--partitions",
        "2",
        "--batch-size",
        "50",
        "--key",
        "event-id",
    ]
}

/// Proves SIGKILL at ≥20 random points of a run, each followed by a restart, ends with a
/// store byte-for-byte equal to an uninterrupted run: nothing lost, nothing counted twice.
/// Records are keyed by event id, as some producers do, so every user is spread over both
/// partitions; the crashed store first consumes a prefix of the file to its end, then the
/// whole file; restarts alternate durable and relaxed flushing.
#[test]
fn sigkill_and_restart_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (input, lines) = write_traffic(dir.path(), 11, 3_000);
    let input = input.to_str().unwrap().to_string();
    let clean = dir.path().join("clean");
    ok(&kill_test_run(&input, &clean));
    let expected = export(&clean);

    let crashed = dir.path().join("crashed");
    let prefix = dir.path().join("prefix.jsonl");
    std::fs::write(&prefix, lines[..lines.len() / 3].join("\n") + "\n").unwrap();
    ok(&kill_test_run(prefix.to_str().unwrap(), &crashed));
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 20 {
        assert!(
            Instant::now() < deadline,
            "only {kills} kills landed before the time bound"
        );
        attempts += 1;
        let durability = if attempts % 2 == 0 { "relaxed" } else { "durable" };
        let mut cmd = command();
        cmd.args(kill_test_run(&input, &crashed))
            .args(["--durability", durability])
            .env("ONRAMP_LOG", "onramp=debug");
        let mut run = Running::spawn(cmd, dir.path().join(format!("run-{attempts}.log")));
        // Kill at a random point after the run's first commit (so every kill lands
        // mid-run, not during start-up), up to 400 ms later.
        if run.wait_for_line("batch committed", Duration::from_secs(60)).is_none() {
            run.wait();
            continue; // ended without committing anything new
        }
        std::thread::sleep(Duration::from_millis(rand(400)));
        if run.try_wait().is_none() {
            run.kill(); // SIGKILL
            kills += 1;
        }
    }
    let last = json(&[kill_test_run(&input, &crashed), vec!["--json"]].concat());
    assert!(
        last["already_committed"].as_u64().unwrap() > 0,
        "the killed runs committed something before the final run: {last}"
    );
    let got = export(&crashed);
    assert_eq!(
        got.lines().count(),
        expected.lines().count(),
        "profile count after {kills} kills"
    );
    assert!(
        got == expected,
        "the crashed-and-restarted store differs from the clean one after {kills} kills"
    );
    // Audiences too: the outbox (ids and cursors included) and the memberships.
    let audience_state = |store: &Path| {
        let s = store.to_str().unwrap();
        let mut out = ok(&["triggers", "--store", s]);
        for name in ["stalled", "activated"] {
            out += &ok(&["audience", "members", name, "--store", s, "--limit", "1000000"]);
        }
        out
    };
    let clean_audiences = audience_state(&clean);
    assert!(
        clean_audiences.lines().count() > 20,
        "the traffic gives transitions: {clean_audiences}"
    );
    assert!(
        audience_state(&crashed) == clean_audiences,
        "the crashed store's transitions or memberships differ from the clean one's after {kills} kills"
    );
}

/// Proves each kind of bad input is a clear error with a non-zero exit, and leaves no
/// store behind (or the existing one untouched).
#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let fail = |args: &[&str], expect: &str| {
        let out = onramp(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: expected `{expect}` in:\n{err}");
    };

    fail(
        &["run", "--input", "/nonexistent/events.jsonl", "--store", s],
        "cannot read input /nonexistent/events.jsonl",
    );
    // The I/O error is said once (it is in the message, not repeated as its cause).
    let err = String::from_utf8_lossy(&onramp(&["run", "--input", "/nonexistent/events.jsonl", "--store", s]).stderr)
        .into_owned();
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    let csv = dir.path().join("events.csv");
    std::fs::write(&csv, "user,event\nu1,click\nu2,view\n").unwrap();
    fail(
        &["run", "--input", csv.to_str().unwrap(), "--store", s],
        "does not look like JSON lines",
    );
    fail(
        &[
            "run",
            "--input",
            csv.to_str().unwrap(),
            "--store",
            s,
            "--wasm-dir",
            "/nonexistent",
        ],
        "cannot read SmartModule onramp-validate",
    );
    fail(
        &[
            "run",
            "--generate",
            "--store",
            s,
            "--param",
            "validate.max_event_bytes=lots",
        ],
        "max_event_bytes",
    );
    fail(
        &["run", "--generate", "--store", s, "--param", "nonsense"],
        "<module>.<param>=<value>",
    );
    // Cluster flags are checked before any cluster is asked.
    fail(
        &["produce", "--generate", "--batch-bytes", "100"],
        "outside 1024 to 16777216 bytes",
    );
    fail(
        &[
            "run",
            "--source",
            "fluvio",
            "--store",
            s,
            "--members",
            "a=http://x:1,a=http://y:2",
            "--member",
            "a",
        ],
        "listed twice",
    );
    fail(
        &[
            "run",
            "--source",
            "fluvio",
            "--store",
            s,
            "--members",
            "a=https://x:1",
            "--member",
            "a",
        ],
        "without TLS",
    );
    fail(
        &["run", "--source", "fluvio", "--store", s, "--member", "a"],
        "--members",
    );
    fail(
        &[
            "run",
            "--generate",
            "--store",
            s,
            "--members",
            "a=http://x:1",
            "--member",
            "a",
        ],
        "apply to --source fluvio",
    );
    assert!(!store.exists(), "nothing was written");

    // A store of another layout version is refused, and left as it was.
    let good = dir.path().join("good.jsonl");
    std::fs::write(
        &good,
        r#"{"event_id":"e1","type":"sign_up","user_id":"u_1","timestamp":"2026-11-01T09:00:00Z"}"#,
    )
    .unwrap();
    ok(&["run", "--input", good.to_str().unwrap(), "--store", s]);
    {
        let db = sled::open(&store).unwrap();
        db.open_tree("meta").unwrap().insert("store_version", "99").unwrap();
        db.flush().unwrap();
    }
    fail(
        &["run", "--input", good.to_str().unwrap(), "--store", s],
        "layout version 99",
    );
    fail(&["export", "--store", s], "layout version 99");
    // Other partition counts or params than the store was written with are refused.
    let db = sled::open(&store).unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert("store_version", onramp::store::STORE_VERSION.to_string().as_bytes())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    fail(
        &[
            "run",
            "--input",
            good.to_str().unwrap(),
            "--store",
            s,
            "--partitions",
            "4",
        ],
        "partition count",
    );
    fail(
        &[
            "run",
            "--input",
            good.to_str().unwrap(),
            "--store",
            s,
            "--param",
            "profile.state_ttl=8h",
        ],
        "chain params",
    );
    // A damaged store is an error, not a panic or a silent reset.
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(junk.join("db"), vec![0xAB; 4096]).unwrap();
    let out = onramp(&["export", "--store", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store") && !err.contains("panicked at"), "{err}");
    // Looking up a missing profile or store.
    fail(&["profile", "get", "nobody", "--store", s], "no profile for `nobody`");
    fail(
        &["stats", "--store", dir.path().join("none").to_str().unwrap()],
        "no onramp store at",
    );
}
