//! Audience benchmark: prints figures, asserts nothing. Loopback only, bounded in time.
//! Run with `cargo bench -p onramp-tests --bench audiences -- [--seconds N] [--clients N]
//! [--probes N]`.
//!
//! 1. **Decisions under ingest.** Starts the release `onramp run --generate --users 200000
//!    --durability relaxed` with the API, lets it ingest for 5 s, then `clients` threads ask
//!    `GET /v1/profiles/u_<n>/decision?surface=welcome_checklist` (n < 5,000) for `seconds`
//!    while ingest goes on. Prints decisions/s and latency percentiles.
//! 2. **Trigger delivery.** Starts `onramp run --input -` (1 partition, `--linger 5ms`,
//!    durable, rules with one audience `clicked`: at least one click) with the API, and
//!    follows `/v1/updates` and `/v1/triggers`. Each probe writes one line: a new user's
//!    click, dated after everything before, followed by 8 page views of a filler user that
//!    move the partition's watermark (the frontier) past it. Measured from the write: the
//!    filler's last update on `/v1/updates` (its batch committed) and the user's `entered`
//!    on `/v1/triggers` (the same commit's drain). The difference is the delivery of a
//!    transition after its commit.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use onramp_tests::cli::Onramp;
use onramp_tests::running::Running;
use onramp_tests::synthetic::{ts, T0};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    decisions(arg("--seconds", 15), arg("--clients", 2));
    println!();
    delivery(arg("--probes", 200));
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn decisions(seconds: u64, clients: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Onramp::Release.command();
    cmd.args(["run", "--generate", "--users", "200000", "--durability", "relaxed"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--store",
            dir.path().join("store").to_str().unwrap(),
        ]);
    let running = Running::serving(cmd, dir.path().join("onramp.log"));
    let base = running.base().to_string();
    let agent = onramp_tests::http_agent(Some(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_secs(5));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (base, agent) = (base.clone(), agent.clone());
            std::thread::spawn(move || {
                let mut x = 0x9e3779b97f4a7c15u64 ^ c;
                let (mut lat, mut found) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let url = format!("{base}/v1/profiles/u_{}/decision?surface=welcome_checklist", x % 5_000);
                    let t = Instant::now();
                    let mut resp = agent.get(&url).call().unwrap();
                    let _ = resp.body_mut().read_to_string();
                    lat.push(t.elapsed());
                    found += u64::from(resp.status().as_u16() == 200);
                }
                (lat, found)
            })
        })
        .collect();
    let (mut lat, mut found) = (Vec::new(), 0);
    for h in handles {
        let (l, f) = h.join().unwrap();
        lat.extend(l);
        found += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(running);
    lat.sort();
    println!("decisions under ingest: {clients} client threads for {elapsed:.1}s, GET /v1/profiles/u_n/decision?surface=welcome_checklist (n < 5000), while `onramp run --generate --users 200000` ingests");
    println!("| decisions | decisions/s | found | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {found} | {:.2} | {:.2} | {:.2} |",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
}

/// Follows an SSE endpoint; sends each `data:` line with the time it arrived.
fn follow(url: String) -> mpsc::Receiver<(Instant, serde_json::Value)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let resp = onramp_tests::http_agent(None).get(&url).call().unwrap();
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(data) = line.strip_prefix("data:") {
                let v = serde_json::from_str(data.trim()).unwrap_or_default();
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn delivery(probes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "audiences:\n  - name: clicked\n    version: 1\n    when: {counter: {name: clicks, at_least: 1}}\n",
    )
    .unwrap();
    let mut cmd = Onramp::Release.command();
    cmd.args([
        "run",
        "--input",
        "-",
        "--linger",
        "5ms",
        "--rules",
        rules.to_str().unwrap(),
    ])
    .args([
        "--listen",
        "127.0.0.1:0",
        "--store",
        dir.path().join("store").to_str().unwrap(),
    ]);
    let mut running = Running::serving(cmd, dir.path().join("onramp.log"));
    let base = running.base().to_string();
    // The store opens with the first line read from stdin: a warm-up line, then subscribe.
    running.send(&[format!(
        r#"{{"event_id":"warm-up","type":"page_view","user_id":"filler","timestamp":"{}","properties":{{"path":"/"}}}}"#,
        ts(T0 - 60_000)
    )]);
    let agent = onramp_tests::http_agent(Some(Duration::from_secs(5)));
    onramp_tests::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        "the store open",
        || {
            agent
                .get(&format!("{base}/v1/audiences"))
                .call()
                .is_ok_and(|r| r.status().as_u16() == 200)
        },
    );
    let updates = follow(format!("{base}/v1/updates?user=filler"));
    let triggers = follow(format!("{base}/v1/triggers"));
    std::thread::sleep(Duration::from_millis(300));
    let line = |n: i64, user: &str, kind: &str, at: i64| {
        let props = if kind == "click" {
            r#"{"target":"next"}"#
        } else {
            r#"{"path":"/"}"#
        };
        format!(
            r#"{{"event_id":"e{n}","type":"{kind}","user_id":"{user}","timestamp":"{}","properties":{props}}}"#,
            ts(at)
        )
    };
    let (mut to_commit, mut to_trigger) = (Vec::new(), Vec::new());
    for i in 0..probes as i64 {
        let at = T0 + i * 60_000;
        let mut lines = vec![line(i * 9, &format!("u_{i}"), "click", at)];
        for f in 0..8 {
            lines.push(line(i * 9 + 1 + f, "filler", "page_view", at + 1_000 + f));
        }
        let last_id = format!("e{}", i * 9 + 8);
        // Drain what an earlier probe left.
        while updates.try_recv().is_ok() {}
        let sent = Instant::now();
        running.send(&lines);
        let want = format!("u_{i}");
        let mut committed = None;
        let mut entered = None;
        let limit = sent + Duration::from_secs(5);
        while (committed.is_none() || entered.is_none()) && Instant::now() < limit {
            if committed.is_none() {
                if let Ok((t, v)) = updates.recv_timeout(Duration::from_millis(1)) {
                    if v["update"]["event_id"] == last_id.as_str() {
                        committed = Some(t);
                    }
                }
            }
            if entered.is_none() {
                if let Ok((t, v)) = triggers.recv_timeout(Duration::from_millis(1)) {
                    if v["person_id"] == want.as_str() && v["kind"] == "entered" {
                        entered = Some(t);
                    }
                }
            }
        }
        if let (Some(c), Some(e)) = (committed, entered) {
            to_commit.push(c - sent);
            to_trigger.push(e - sent);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running.close_stdin();
    let mut after: Vec<Duration> = to_trigger
        .iter()
        .zip(&to_commit)
        .map(|(t, c)| t.saturating_sub(*c))
        .collect();
    to_commit.sort();
    to_trigger.sort();
    after.sort();
    println!(
        "trigger delivery: {} of {probes} probes seen (1 partition, --linger 5ms, durable); from the write to stdin",
        to_trigger.len()
    );
    println!("| measured | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (what, lat) in [
        ("commit seen on /v1/updates", &to_commit),
        ("`entered` seen on /v1/triggers", &to_trigger),
        ("triggers after the commit (difference per probe)", &after),
    ] {
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} |",
            pct(lat, 0.5),
            pct(lat, 0.99),
            pct(lat, 1.0)
        );
    }
}
