//! Hostile input and unlucky operations against the real `onramp` binary (embedded
//! source): each test is one attack or accident, and asserts no double count, no loss,
//! no crash, and a clear reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onramp::generator::{Generator, GeneratorConfig};
use onramp_tests::cli::{command, export, fails, json, ok, stats, store_profiles};
use onramp_tests::running::Running;

fn traffic(seed: u64, users: u64) -> Vec<String> {
    Generator::new(GeneratorConfig {
        seed,
        users,
        ..GeneratorConfig::default()
    })
    .collect()
}

fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["run", "--json"];
    all.extend_from_slice(args);
    json(&all)
}

fn rejected(summary: &serde_json::Value, reason: &str) -> u64 {
    summary["rejected"][reason].as_u64().unwrap_or(0)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn page_view(id: &str, user: &str, ts: &str, extra_context: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"page_view","user_id":"{user}","timestamp":"{ts}","properties":{{"path":"/x"}},"context":{{"locale":"en-US"{extra_context}}}}}"#
    )
}

/// Proves one event dated 2099, anywhere in a partition (even first), changes no other
/// user's profile: the stream with it equals, profile by profile, the same stream with
/// that line replaced by a bot event of the same user (rejected, same offset); mid-stream
/// it is quarantined as `timestamp_out_of_range`.
#[test]
fn a_far_future_event_poisons_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lines = traffic(3, 150);
    let poison = page_view("poison-1", "u_poison", "2099-01-01T00:00:00Z", "");
    let control = page_view(
        "poison-1",
        "u_poison",
        "2026-11-01T09:00:00Z",
        r#","user_agent":"Googlebot/2.1 (+http://www.google.com/bot.html)""#,
    );
    for at in [0, lines.len() / 3] {
        let with = |line: &str| {
            let mut l = lines.clone();
            l.insert(at, line.to_string());
            l
        };
        let (a, b) = (dir.path().join(format!("p{at}")), dir.path().join(format!("c{at}")));
        let poisoned = run_json(&[
            "--input",
            s(&write(dir.path(), "poisoned.jsonl", &with(&poison))),
            "--partitions",
            "3",
            "--store",
            s(&a),
        ]);
        let clean = run_json(&[
            "--input",
            s(&write(dir.path(), "control.jsonl", &with(&control))),
            "--partitions",
            "3",
            "--store",
            s(&b),
        ]);
        let mut got = store_profiles(&a);
        got.remove("u_poison");
        let want = store_profiles(&b);
        assert_eq!(got.len(), want.len(), "poison at line {at}");
        for (user, p) in &want {
            assert_eq!(got.get(user), Some(p), "profile of {user}, poison at line {at}");
        }
        assert_eq!(poisoned["duplicates"], clean["duplicates"], "no retry applied twice");
        if at > 0 {
            assert_eq!(
                rejected(&poisoned, "timestamp_out_of_range"),
                rejected(&clean, "timestamp_out_of_range") + 1,
                "the 2099 event is quarantined with a reason"
            );
            assert!(!store_profiles(&a).contains_key("u_poison"));
        }
    }
}

/// Proves a named pipe (what `--input <(cat file)` gives) loses no line: the JSON-lines
/// check and the run read the same open stream once.
#[test]
fn a_fifo_input_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lines = traffic(5, 120);
    let file = write(dir.path(), "events.jsonl", &lines);
    let fifo = dir.path().join("events.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let (from, to) = (file.clone(), fifo.clone());
    let writer = std::thread::spawn(move || {
        let data = std::fs::read(from).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(to)
            .unwrap()
            .write_all(&data)
            .unwrap();
    });
    let via_fifo = run_json(&[
        "--input",
        s(&fifo),
        "--partitions",
        "2",
        "--store",
        s(&dir.path().join("a")),
    ]);
    writer.join().unwrap();
    let via_file = run_json(&[
        "--input",
        s(&file),
        "--partitions",
        "2",
        "--store",
        s(&dir.path().join("b")),
    ]);
    assert_eq!(via_fifo["lines_read"].as_u64(), Some(lines.len() as u64));
    assert_eq!(via_fifo["events_in"], via_file["events_in"]);
    assert_eq!(export(&dir.path().join("a")), export(&dir.path().join("b")));
}

/// Runs `onramp run --json` on `data` fed through stdin into `store`: (success, stdout, stderr).
fn run_stdin(data: &[u8], store: &Path) -> (bool, String, String) {
    let mut child = command()
        .args(["run", "--json", "--input", "-", "--store", s(store)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    // A writer thread: the run may refuse the input before reading all of it.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Proves the JSON-lines check does not depend on how the bytes arrive: an input whose
/// first 100 non-empty lines are not JSON objects is refused from a file and from stdin
/// alike, with nothing committed and no store left behind; one with 99 such lines and then
/// events is accepted by both, with the same counts and the same store.
#[test]
fn the_json_lines_check_is_the_same_for_a_file_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let events = traffic(8, 40);
    for (junk, refused) in [(100, true), (99, false)] {
        let mut lines: Vec<String> = (0..junk).map(|i| format!("user,event,{i}")).collect();
        lines.extend(events.iter().cloned());
        let file = write(dir.path(), &format!("junk{junk}.csv"), &lines);
        let data = std::fs::read(&file).unwrap();
        let (a, b) = (
            dir.path().join(format!("file{junk}")),
            dir.path().join(format!("stdin{junk}")),
        );
        let by_file = command()
            .args(["run", "--json", "--input", s(&file), "--store", s(&a)])
            .output()
            .unwrap();
        let (stdin_ok, stdin_out, stdin_err) = run_stdin(&data, &b);
        assert_eq!(
            by_file.status.success(),
            stdin_ok,
            "{junk} junk lines: file and stdin disagree: {stdin_err}"
        );
        if refused {
            let file_err = String::from_utf8_lossy(&by_file.stderr);
            for err in [file_err.as_ref(), stdin_err.as_str()] {
                assert!(
                    err.contains("does not look like JSON lines") && err.contains("first 100"),
                    "{err}"
                );
            }
            assert!(stdin_err.contains("input stdin"), "{stdin_err}");
            for store in [&a, &b] {
                assert!(!store.exists(), "a refused input leaves no store: {}", store.display());
            }
        } else {
            let from_file: serde_json::Value = serde_json::from_slice(&by_file.stdout).unwrap();
            let from_stdin: serde_json::Value = serde_json::from_str(&stdin_out).unwrap();
            assert_eq!(rejected(&from_file, "invalid_json"), 99);
            assert_eq!(from_file["events_in"], from_stdin["events_in"]);
            assert_eq!(from_file["rejected"], from_stdin["rejected"]);
            assert_eq!(export(&a), export(&b));
        }
    }
}

/// Proves a line far over `--max-line-bytes` is rejected `too_large` without being held or
/// stored whole, and lines of NUL bytes under it leave bounded rejects: the store stays
/// small and every other record is processed.
#[test]
fn huge_and_binary_lines_cost_bounded_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = traffic(7, 40);
    let normal = lines.len();
    lines.insert(10, "x".repeat(20 << 20));
    for _ in 0..150 {
        lines.push("\0".repeat(200_000));
    }
    let store = dir.path().join("store");
    let summary = run_json(&[
        "--input",
        s(&write(dir.path(), "big.jsonl", &lines)),
        "--store",
        s(&store),
    ]);
    assert_eq!(summary["events_in"].as_u64(), Some((normal + 151) as u64));
    assert!(rejected(&summary, "too_large") >= 1, "{summary}");
    let size: u64 = walk_size(&store);
    assert!(
        size < 24 << 20,
        "the store holds {size} bytes after 20 MB + 30 MB of junk: rejects are not bounded"
    );
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

/// Proves a flood of distinct ids (a bot, a load test) costs bounded fold state: past
/// `max_users` the least recently active users are evicted and counted, the run
/// finishes, and a retry of a live user's event is still a duplicate.
#[test]
fn a_flood_of_distinct_ids_is_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                r#"{{"event_id":"f{i}","type":"page_view","anonymous_id":"a_flood_{i}","timestamp":"2026-11-01T09:{:02}:{:02}Z","properties":{{"path":"/"}}}}"#,
                (i / 60) % 60,
                i % 60
            )
        })
        .collect();
    lines.push(page_view("late-1", "u_live", "2026-11-01T09:59:58Z", ""));
    lines.push(page_view("late-1", "u_live", "2026-11-01T09:59:58Z", ""));
    let summary = run_json(&[
        "--input",
        s(&write(dir.path(), "flood.jsonl", &lines)),
        "--param",
        "profile.max_users=500",
        "--store",
        s(&dir.path().join("store")),
    ]);
    let evicted = summary["fold_evictions"].as_u64().unwrap();
    assert!(evicted >= 19_000, "evictions counted: {summary}");
    assert_eq!(summary["duplicates"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["applied"].as_u64(), Some(20_001));
}

/// Proves a store knows its input: a different file is refused before anything is
/// written, `--append` adds it after what the store holds, the same file appended twice
/// is refused, and a prefix run followed by the whole file equals one run of the file.
#[test]
fn a_store_knows_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let day1 = traffic(11, 80);
    let day2 = traffic(12, 80);
    let (f1, f2) = (
        write(dir.path(), "day1.jsonl", &day1),
        write(dir.path(), "day2.jsonl", &day2),
    );
    let store = dir.path().join("store");
    let st = s(&store);
    ok(&["run", "--input", s(&f1), "--partitions", "3", "--store", st]);
    let before = export(&store);
    let err = fails(&["run", "--input", s(&f2), "--partitions", "3", "--store", st]);
    assert!(err.contains("--append") && err.contains("Nothing was written"), "{err}");
    assert_eq!(export(&store), before, "the refused run wrote nothing");
    ok(&["run", "--input", s(&f2), "--partitions", "3", "--store", st, "--append"]);
    let counters = &stats(&store)["counters"];
    assert_eq!(counters["events_in"].as_u64(), Some((day1.len() + day2.len()) as u64));
    let err = fails(&["run", "--input", s(&f2), "--partitions", "3", "--store", st, "--append"]);
    assert!(err.contains("same input fed again"), "{err}");
    // Not only the input just before: every input the store consumed.
    let err = fails(&["run", "--input", s(&f1), "--partitions", "3", "--store", st, "--append"]);
    assert!(err.contains("same input fed again"), "{err}");
    assert_eq!(
        stats(&store)["counters"]["events_in"].as_u64(),
        Some((day1.len() + day2.len()) as u64)
    );
    let err = fails(&["run", "--input", s(&f1), "--partitions", "3", "--store", st]);
    assert!(err.contains("--append"), "{err}");

    // A prefix, then the whole file, is one run of the whole file.
    let prefix = write(dir.path(), "prefix.jsonl", &day1[..day1.len() / 2]);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for input in [&prefix, &f1] {
        ok(&[
            "run",
            "--input",
            s(input),
            "--partitions",
            "3",
            "--batch-size",
            "7",
            "--store",
            s(&a),
        ]);
    }
    ok(&["run", "--input", s(&f1), "--partitions", "3", "--store", s(&b)]);
    assert_eq!(export(&a), export(&b));
}

/// Proves a resume on an input that shares the store's prefix but then differs is refused
/// before it commits anything, even when the new input sends more lines to one partition
/// than the store's input did (so the input's line count passes every checkpoint before
/// another partition reached its own), and even when the run is interrupted while it
/// holds those records; the store still resumes from its own input afterwards.
#[test]
fn a_different_input_is_refused_even_when_one_partition_runs_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let base = traffic(21, 80);
    // Two users in different partitions (of 4): X ends the store's input; the new input
    // sends Y's lines before X's.
    let partition_of = |user: &str| {
        let line = page_view("probe", user, "2026-11-01T09:00:00Z", "");
        onramp::partition::Partitioner::new(4).partition(onramp::partition::record_key(line.as_bytes()).as_deref())
    };
    let x = "u_hold_x";
    let y = (0..)
        .map(|i| format!("u_hold_y{i}"))
        .find(|u| partition_of(u) != partition_of(x))
        .unwrap();
    let lines_of = |user: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| page_view(&format!("{user}-{i}"), user, "2026-11-01T09:00:00Z", ""))
            .collect()
    };
    let theirs = [base.clone(), lines_of(x, 30)].concat();
    let other = [base.clone(), lines_of(&y, 60), lines_of(x, 30)].concat();
    let (a, b) = (
        write(dir.path(), "a.jsonl", &theirs),
        write(dir.path(), "b.jsonl", &other),
    );
    let store = dir.path().join("store");
    let st = s(&store);
    let args = |input: &str| {
        [
            "run",
            "--input",
            input,
            "--store",
            st,
            "--partitions",
            "4",
            "--batch-size",
            "10",
            "--listen",
            "off",
        ]
        .map(str::to_string)
    };
    ok(&args(s(&a)).each_ref().map(String::as_str));
    let before = export(&store);
    let events_in = stats(&store)["counters"]["events_in"].as_u64();

    let err = fails(&args(s(&b)).each_ref().map(String::as_str));
    assert!(
        err.contains("consumed another input") && err.contains("Nothing was written"),
        "{err}"
    );
    assert!(export(&store) == before, "the refused run committed part of its input");
    assert_eq!(stats(&store)["counters"]["events_in"].as_u64(), events_in);

    // The same input on stdin, stopped while Y's records wait for X's checkpoint.
    let mut cmd = command();
    cmd.args(args("-")).env("ONRAMP_LOG", "info");
    let mut r = Running::spawn(cmd, dir.path().join("held.log"));
    r.send(&other[..base.len() + 20]);
    assert!(
        r.wait_for_line("holding new records", Duration::from_secs(60))
            .is_some(),
        "the run never held a record: {}",
        r.log_tail(20)
    );
    r.interrupt();
    let status = r.wait_timeout(Duration::from_secs(30)).expect("SIGINT honoured");
    r.close_stdin();
    assert!(status.success(), "{status}: {}", r.log_tail(20));
    assert!(
        export(&store) == before,
        "an interrupted, unverified run committed records"
    );

    ok(&args(s(&a)).each_ref().map(String::as_str));
    assert!(
        export(&store) == before,
        "the store no longer resumes from its own input"
    );
    assert_eq!(stats(&store)["counters"]["events_in"].as_u64(), events_in);
}

/// Proves stdin that stays open still commits within the linger, and SIGINT stops the run
/// promptly while a read blocks, committing what was read.
#[test]
fn open_stdin_commits_on_linger_and_stops_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command();
    cmd.args([
        "run",
        "--input",
        "-",
        "--store",
        s(&dir.path().join("store")),
        "--linger",
        "100ms",
    ])
    .args(["--listen", "127.0.0.1:0"])
    .env("ONRAMP_LOG", "info");
    let mut r = Running::serving(cmd, dir.path().join("onramp.log"));
    let lines: Vec<String> = (0..30)
        .map(|i| page_view(&format!("e{i}"), "u_open", "2026-11-01T09:00:00Z", ""))
        .collect();
    r.send(&lines);
    let base = r.base().to_string();
    let agent = onramp_tests::http_agent(Some(Duration::from_secs(5)));
    let started = Instant::now();
    loop {
        let status = agent
            .get(format!("{base}/v1/profiles/u_open"))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing committed while stdin stays open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r.interrupt();
    let status = r
        .wait_timeout(Duration::from_secs(20))
        .expect("SIGINT not honoured while stdin blocks");
    r.close_stdin();
    assert!(status.success(), "{status}");
    let out = r.stdout();
    assert!(out.contains("stopped early by a signal"), "{out}");
}
