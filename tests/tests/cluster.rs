//! Cluster mode against a real local Fluvio cluster: `onramp setup`, `onramp produce` and
//! `onramp run --source fluvio`, compared profile by profile with an embedded run over the
//! same events — also with fetches far smaller than the backlog (the SPU cuts them and
//! feeds a batch again), after SIGKILLs of the consumer during that catch-up, through
//! stalled streams, and after a stop/restart of the SPU.
//!
//! Runs only with `FLUVIO_E2E=1` and the `fluvio` CLI (and `fluvio-run`) on PATH; otherwise
//! it prints that it was skipped (CI has no cluster). It starts a local cluster when none
//! is running (`fluvio cluster resume`, else `fluvio cluster start --local`) and shuts down
//! what it started; its topics are deleted at the end.
//!
//! ```text
//! FLUVIO_E2E=1 PATH=/path/to/fluvio/bin:$PATH cargo test -p onramp-tests --test cluster -- --nocapture
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use failing_enrich::FAILING_EVENT_ID;
use onramp_tests::cli::{command, export, json, ok, onramp, stats_comparable};
use onramp_tests::cluster::{checkpoints, fluvio, partition_lags, run_args, skipped, LocalCluster, Needs};
use onramp_tests::running::Running;

/// Events produced (plus a few hostile lines).
const EVENTS: u64 = 100_000;
const PARTITIONS: &str = "3";

/// The generated events plus hostile lines (keyless, so spread round-robin).
fn write_events(dir: &Path) -> PathBuf {
    let path = dir.join("events.jsonl");
    let out = ok(&[
        "generate",
        "--seed",
        "11",
        "--users",
        "8000",
        "--events",
        &EVENTS.to_string(),
        "--output",
        path.to_str().unwrap(),
    ]);
    assert!(out.is_empty());
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    for hostile in [
        "{".to_string(),
        "\u{1}\u{2}\u{3} not json".to_string(),
        format!(
            "{{\"event_id\":\"big\",\"type\":\"page_view\",\"user_id\":\"\",\"padding\":\"{}\"}}",
            "x".repeat(40_000)
        ),
        "[1,2,3]".to_string(),
        "{\"event_id\":\"t\",\"type\":\"sign_up\",\"timestamp\":\"1900-01-01T00:00:00Z\"}".to_string(),
    ] {
        writeln!(f, "{hostile}").unwrap();
    }
    path
}

fn assert_same_store(cluster: &Path, embedded: &Path, what: &str) {
    let (c, e) = (export(cluster), export(embedded));
    let (cn, en) = (c.lines().count(), e.lines().count());
    assert!(en > 1000, "the embedded run wrote only {en} profiles");
    if c != e {
        let first = c.lines().zip(e.lines()).position(|(a, b)| a != b);
        panic!("{what}: the cluster store differs from the embedded one ({cn} vs {en} profiles; first differing line {first:?})");
    }
    assert_eq!(
        stats_comparable(cluster),
        stats_comparable(embedded),
        "{what}: funnel and reject counts differ"
    );
    let (ca, ea) = (audience_state(cluster), audience_state(embedded));
    assert!(ea.lines().count() > 100, "the embedded run gave few transitions: {ea}");
    assert!(
        ca == ea,
        "{what}: the transitions or memberships differ from the embedded run's"
    );
    eprintln!(
        "{what}: {cn} profiles and {} transitions and memberships, equal to the embedded run",
        ea.lines().count()
    );
}

/// The outbox (ids and cursors included) and every audience's members.
fn audience_state(store: &Path) -> String {
    let s = store.to_str().unwrap();
    let mut out = ok(&["triggers", "--store", s]);
    for name in ["stalled", "activated"] {
        out += &ok(&["audience", "members", name, "--store", s, "--limit", "1000000"]);
    }
    out
}

/// Spawns `onramp run ARGS` with its read API on a free loopback port, its log at `log`.
fn spawn_run(args: &[&str], log: &Path) -> Running {
    let mut cmd = command();
    cmd.args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("ONRAMP_LOG", "warn,onramp=debug");
    Running::serving(cmd, log)
}

/// Polls every `every` until `f` gives `Ok`; after `limit`, panics with the last `Err`
/// (what has not happened yet) and the end of the run's log.
fn poll<T>(
    run: &mut Running,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut(&mut Running) -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match f(run) {
            Ok(v) => return v,
            Err(not_yet) if started.elapsed() > limit => {
                panic!("{not_yet} within {limit:?}; the run's log ends:\n{}", run.log_tail(30))
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Waits (up to 2 minutes) until the consumer committed past `after`; returns the checkpoint.
fn committed_checkpoint_or_wait(run: &mut Running, after: i64) -> i64 {
    poll(run, Duration::from_secs(120), Duration::from_millis(50), |run| {
        let c = committed_checkpoint(run.base());
        if c > after || run.try_wait().is_some() {
            Ok(c)
        } else {
            Err("no commit".into())
        }
    })
}

/// The highest checkpoint the running consumer reports on /metrics (-1: nothing committed).
fn committed_checkpoint(base: &str) -> i64 {
    checkpoints(base).into_values().max().unwrap_or(-1)
}

/// The SPU's process: pid and command line (`fluvio-run spu …`), and its `fluvio run spu` parent.
fn spu_processes() -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_spu = args
            .iter()
            .position(|a| a == "spu")
            .is_some_and(|i| i >= 1 && (args[i - 1].ends_with("fluvio-run") || (args[i - 1] == "run" && i >= 2)));
        if is_spu {
            found.push((pid, args));
        }
    }
    found
}

#[test]
fn cluster_mode_matches_the_embedded_run() {
    if skipped("cluster e2e tests", Needs::Cli) {
        return;
    }
    onramp_tests::modules(); // the .wasm files, built from the current sources
    let mut cluster = LocalCluster::ensure("onramp-e2e");
    let dir = tempfile::tempdir().unwrap();
    let topic = cluster.topic("events");
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // 1. setup twice: created, then unchanged; a different partition count is refused.
    //    (--replace the first time: the cluster may hold another build of this version.)
    let first = json(&[
        "setup",
        "--topic",
        &topic,
        "--partitions",
        PARTITIONS,
        "--replace",
        "--json",
    ]);
    assert_eq!(first["topic"][1], "created", "{first}");
    let second = json(&["setup", "--topic", &topic, "--partitions", PARTITIONS, "--json"]);
    assert_eq!(second["topic"][1], "unchanged", "{second}");
    for m in second["modules"].as_array().unwrap() {
        assert_eq!(m[1], "unchanged", "second setup changed a module: {second}");
    }
    let refused = onramp(&["setup", "--topic", &topic, "--partitions", "2"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already exists with 3 partitions"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    eprintln!("setup: created, then unchanged, and a partition-count mismatch refused");

    // 2. produce 100k generated events (+ hostile lines) over 3 partitions.
    let events = write_events(dir.path());
    let lines = std::fs::read_to_string(&events).unwrap().lines().count() as u64;
    let produced = json(&[
        "produce",
        "--topic",
        &topic,
        "--input",
        events.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(produced["sent"], lines, "{produced}");
    assert_eq!(produced["failed"], 0, "{produced}");
    assert!(produced["per_partition"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n.as_u64().unwrap() > 20_000));
    eprintln!("produce: {produced}");

    // The embedded run over the same lines is the reference.
    let embedded = d("embedded");
    ok(&[
        "run",
        "--input",
        events.to_str().unwrap(),
        "--partitions",
        PARTITIONS,
        "--store",
        &embedded,
    ]);

    // 3. run: the store equals the embedded run, profile by profile.
    //    The transitions are produced to a triggers topic, read back with the fluvio CLI.
    let plain = d("cluster-plain");
    let triggers_topic = cluster.topic("triggers");
    let summary = json(&run_args(&topic, &plain, &["--triggers-topic", &triggers_topic]));
    assert_eq!(summary["events_in"], lines, "{summary}");
    assert_eq!(summary["smartmodule_errors"], 0);
    assert_same_store(Path::new(&plain), Path::new(&embedded), "loaded modules");
    let consumed = fluvio(&["consume", &triggers_topic, "-B", "-d"]);
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let mut relayed: Vec<String> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    relayed.sort();
    relayed.dedup();
    let mut expected: Vec<String> = ok(&["triggers", "--store", &embedded])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    expected.sort();
    assert_eq!(
        relayed, expected,
        "the triggers topic holds every transition of the outbox (deduped by id)"
    );
    eprintln!(
        "triggers topic: {} transitions read back with `fluvio consume`",
        relayed.len()
    );

    // --adhoc sends the local .wasm instead of using the loaded modules: same store.
    let adhoc = d("cluster-adhoc");
    json(&run_args(&topic, &adhoc, &["--adhoc"]));
    assert_same_store(Path::new(&adhoc), Path::new(&embedded), "ad-hoc modules");

    // 4. Bounded catch-up with SIGKILLs: fetches of at most 256 KiB of updates (about 30
    //    per partition here, each cut inside a producer batch that the SPU feeds the
    //    aggregate again), the consumer SIGKILLed several times mid-catch-up, restarted:
    //    still equal. Each kill lands at a random moment after that run's first commit
    //    (seen on /metrics).
    let killed = d("cluster-killed");
    let bounded = ["--max-bytes", "262144"];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut mid_run_kills = 0;
    for round in 0..4 {
        let log = dir.path().join(format!("kill-{round}.log"));
        let mut run = spawn_run(&run_args(&topic, &killed, &bounded), &log);
        let before = committed_checkpoint_or_wait(&mut run, -1);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wait = Duration::from_millis(rng % 1_500);
        std::thread::sleep(wait);
        if run.try_wait().is_none() {
            mid_run_kills += 1;
        }
        run.kill(); // SIGKILL
        eprintln!("kill {round}: {wait:?} after a commit (checkpoint {before})");
    }
    assert!(mid_run_kills >= 3, "only {mid_run_kills} kills landed mid-run");
    let last = json(&run_args(&topic, &killed, &bounded));
    assert!(
        last["events_in"].as_u64().unwrap() < lines,
        "the killed runs committed nothing: {last}"
    );
    assert_same_store(Path::new(&killed), Path::new(&embedded), "after 4 SIGKILLs");

    // 4b. A max_bytes smaller than one producer batch's updates: the SPU sends nothing and
    //     marks the stream caught up (Fluvio 0.50). The consumer sees no progress while the
    //     leader holds more, reopens with twice the size, says so, and ends equal.
    let stalled = d("cluster-stalled");
    let log = dir.path().join("stalled.log");
    let mut run = spawn_run(&run_args(&topic, &stalled, &["--max-bytes", "32768"]), &log);
    assert!(run.wait().success(), "the stalled run failed: {}", run.log_tail(30));
    let regrown = run.logged("reopening from the checkpoint with max_bytes");
    assert!(regrown >= 1, "no stall was noticed: {}", run.log_tail(30));
    assert_same_store(Path::new(&stalled), Path::new(&embedded), "after stalls");
    eprintln!("stalls: {regrown} reopen(s) with a larger max_bytes, store equal");

    // 5. Stop the SPU mid-run and start it again: the consumer reconnects by itself.
    let spu = spu_processes();
    let worker = spu
        .iter()
        .find(|(_, a)| a[0].ends_with("fluvio-run"))
        .cloned()
        .expect("a `fluvio-run spu` process");
    let restarted = d("cluster-spu-restart");
    let mut run = spawn_run(&run_args(&topic, &restarted, &[]), &dir.path().join("spu-restart.log"));
    // The streams open after ~1.5 s; the SPU then works through the backlog for seconds.
    std::thread::sleep(Duration::from_millis(2_500));
    for (pid, _) in &spu {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    eprintln!(
        "spu: killed {:?}; restarting in 3 s",
        spu.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::File::create(dir.path().join("spu.log")).unwrap();
    // The SPU is part of the cluster and outlives this test: it is never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new(&worker.1[0])
        .args(&worker.1[1..])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the SPU restarts");
    assert!(run.wait().success(), "the run did not survive the SPU restart");
    let summary: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    eprintln!("spu restart: run summary reconnects = {}", summary["reconnects"]);
    assert!(
        summary["reconnects"].as_u64().unwrap() >= 1,
        "no reconnect was needed: {summary}"
    );
    assert_same_store(Path::new(&restarted), Path::new(&embedded), "after an SPU restart");

    // 6. A malformed event in the topic never stops the stream: garbage, then a good event.
    let more = dir.path().join("more.jsonl");
    std::fs::write(
        &more,
        "\u{0}\u{0}garbage\n{\"event_id\":\"after-1\",\"type\":\"sign_up\",\"user_id\":\"u_after_garbage\",\"timestamp\":\"2026-11-03T10:00:00Z\"}\n",
    )
    .unwrap();
    json(&[
        "produce",
        "--topic",
        &topic,
        "--input",
        more.to_str().unwrap(),
        "--json",
    ]);
    let tail = json(&run_args(&topic, &plain, &[]));
    assert_eq!(tail["events_in"], 2, "{tail}");
    assert_eq!(tail["applied"], 1, "{tail}");
    ok(&["profile", "get", "u_after_garbage", "--store", &plain]);
    eprintln!("malformed then valid: {tail}");

    // 6b. Lag from the leaders' end offsets. A run whose streams cannot open (its
    //     SmartModule.toml names versions that are not loaded) still reports every
    //     partition's lag — all the topic's records, since it committed nothing — and is not
    //     ready; a run on the caught-up store reports 0 and is ready. Both stop on SIGINT.
    let topic_records = lines + 2;
    let unloaded = unloaded_smartmodules_dir(dir.path());
    let lagging = d("cluster-lagging");
    let log = dir.path().join("lagging.log");
    let mut run = spawn_run(
        &follow_args(
            &topic,
            &lagging,
            &[
                "--smartmodules-dir",
                unloaded.to_str().unwrap(),
                "--ready-max-lag",
                "10",
            ],
        ),
        &log,
    );
    let lags = wait_for_lags(&mut run, 3, |l| l.values().sum::<u64>() == topic_records);
    assert_eq!(
        readyz_status(run.base()),
        503,
        "a run {topic_records} records behind must not be ready"
    );
    let summary = interrupt(run);
    assert_eq!(summary["events_in"], 0, "{summary}");
    eprintln!("lag: nothing consumable, lag {lags:?} = the topic's {topic_records} records, /readyz 503");
    // `onramp stats` asks the cluster too: the same lag per partition.
    let stats = json(&["stats", "--store", &lagging, "--json"]);
    let stats_lags: Vec<u64> = stats["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_u64().expect("a lag per partition"))
        .collect();
    assert_eq!(stats_lags, lags.values().copied().collect::<Vec<_>>(), "{stats}");

    let log = dir.path().join("caught-up.log");
    let mut run = spawn_run(&follow_args(&topic, &plain, &[]), &log);
    let lags = wait_for_lags(&mut run, 3, |l| l.values().all(|&n| n == 0));
    assert_eq!(readyz_status(run.base()), 200, "a caught-up run must be ready");
    let summary = interrupt(run);
    assert_eq!(summary["events_in"], 0, "{summary}");
    eprintln!("lag: caught up, lag {lags:?}, /readyz 200");

    // 7. A SmartModule runtime error (tests/failing-enrich sent with --adhoc in place of
    //    onramp-enrich): logged with its offset, counted, and the run stops with the reason
    //    instead of looping; with the real modules the next run goes on from the checkpoint.
    let wasm = failing_chain_dir(dir.path());
    let event = |id: &str| {
        format!("{{\"event_id\":\"{id}\",\"type\":\"sign_up\",\"user_id\":\"u_sm_error\",\"timestamp\":\"2026-11-03T10:00:00Z\"}}\n")
    };
    let lines = dir.path().join("sm.jsonl");
    std::fs::write(&lines, event("sm-a") + &event(FAILING_EVENT_ID)).unwrap();
    json(&[
        "produce",
        "--topic",
        &topic,
        "--input",
        lines.to_str().unwrap(),
        "--json",
    ]);
    let failing = onramp(&run_args(
        &topic,
        &plain,
        &["--adhoc", "--wasm-dir", wasm.to_str().unwrap()],
    ));
    let stderr = String::from_utf8_lossy(&failing.stderr);
    assert!(!failing.status.success(), "the run must stop at a SmartModule error");
    assert!(
        stderr.contains("a SmartModule failed on offset") && stderr.contains("refusing event"),
        "{stderr}"
    );
    let fixed = json(&run_args(&topic, &plain, &[]));
    assert_eq!(fixed["events_in"], 2, "{fixed}");
    assert_eq!(fixed["smartmodule_errors"], 0, "{fixed}");
    ok(&["profile", "get", "u_sm_error", "--store", &plain]);
    eprintln!("smartmodule error: the run stopped with the offset and the module's message; the real chain went on");
}

/// `onramp run --source fluvio` following the topic (no `--stop-at-end`).
fn follow_args<'a>(topic: &'a str, store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run", "--source", "fluvio", "--topic", topic, "--store", store, "--json",
    ];
    args.extend_from_slice(extra);
    args
}

/// A `--smartmodules-dir` whose modules name a version that is not loaded (99.0.0).
fn unloaded_smartmodules_dir(dir: &Path) -> PathBuf {
    let to = dir.join("unloaded-smartmodules");
    for m in onramp::wasm::Module::ALL.map(|m| m.short_name()) {
        let from = onramp::wasm::workspace_root()
            .join("smartmodules")
            .join(m)
            .join("SmartModule.toml");
        let toml = std::fs::read_to_string(&from).unwrap();
        let version = toml
            .lines()
            .find(|l| l.starts_with("version = "))
            .expect("SmartModule.toml has a version line");
        std::fs::create_dir_all(to.join(m)).unwrap();
        std::fs::write(
            to.join(m).join("SmartModule.toml"),
            toml.replacen(version, "version = \"99.0.0\"", 1),
        )
        .unwrap();
    }
    to
}

/// Waits (up to 60 s) until /metrics has the lag of `partitions` partitions and `done` holds.
fn wait_for_lags(
    run: &mut Running,
    partitions: usize,
    done: impl Fn(&std::collections::BTreeMap<u32, u64>) -> bool,
) -> std::collections::BTreeMap<u32, u64> {
    poll(run, Duration::from_secs(60), Duration::from_millis(200), |run| {
        let lags = partition_lags(run.base());
        if lags.len() == partitions && done(&lags) {
            Ok(lags)
        } else {
            Err(format!("the lag figures did not settle (last seen {lags:?})"))
        }
    })
}

fn readyz_status(base: &str) -> u16 {
    let agent = onramp_tests::http_agent(Some(Duration::from_secs(2)));
    let resp = agent.get(&format!("{base}/readyz")).call().expect("/readyz answers");
    resp.status().as_u16()
}

/// Sends SIGINT and waits (up to 30 s) for a successful exit; returns the JSON summary.
fn interrupt(mut run: Running) -> serde_json::Value {
    run.interrupt();
    let Some(status) = run.wait_timeout(Duration::from_secs(30)) else {
        panic!(
            "the run did not stop within 30 s of SIGINT; its log ends:\n{}",
            run.log_tail(30)
        );
    };
    assert!(status.success(), "the interrupted run failed: {}", run.log_text());
    serde_json::from_str(&run.stdout()).unwrap()
}

/// A wasm dir with validate and profile as built, and tests/failing-enrich as the enrich module.
fn failing_chain_dir(dir: &Path) -> PathBuf {
    let failing = onramp_tests::build_wasm("failing-enrich");
    let from = onramp::wasm::default_wasm_dir();
    let to = dir.join("failing-chain");
    std::fs::create_dir_all(&to).unwrap();
    for (src, dst) in [
        (from.join("onramp_validate.wasm"), "onramp_validate.wasm"),
        (failing, "onramp_enrich.wasm"),
        (from.join("onramp_profile.wasm"), "onramp_profile.wasm"),
    ] {
        std::fs::copy(src, to.join(dst)).unwrap();
    }
    to
}
