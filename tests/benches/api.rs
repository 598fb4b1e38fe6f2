//! Read-API load benchmark: prints figures, asserts nothing. Loopback only, bounded in
//! time. Run with `cargo bench -p onramp-tests --bench api -- [--seconds N] [--clients N]
//! [--scanners N] [--scan-seconds N]`.
//!
//! Starts the release `onramp run --generate` with the API on 127.0.0.1:0, lets it ingest,
//! then for a fixed time `clients` threads look up random early users
//! (`GET /v1/profiles/u_<n>` or `a_<n>`, n < `--lookup-range`: a person lookup, which resolves the id and merges the profiles of its ids), while the pipeline keeps ingesting. Prints lookups/s,
//! latency percentiles, and the ingest rate held during the load and before it.
//!
//! Then, for `--scan-seconds`, `--scanners` threads request full scans back to back
//! (`GET /v1/profiles?completed_step=nope`, which matches no profile) while one thread probes
//! `/healthz` every 50 ms. Prints scans answered and refused as `busy` per second and the
//! `/healthz` latency percentiles: the scan bound keeps the latter in milliseconds.

use std::time::{Duration, Instant};

use onramp_tests::cli::Onramp;
use onramp_tests::running::Running;

const USERS: u64 = 200_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = arg("--seconds", 15);
    let clients = arg("--clients", 2);
    // Looked-up ids: the earliest-arriving users, who exist after the warm-up (the
    // generator's users arrive in id order over a day of event time).
    let lookup_range = arg("--lookup-range", 5_000);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Onramp::Release.command();
    cmd.args([
        "run",
        "--generate",
        "--users",
        &USERS.to_string(),
        "--durability",
        "relaxed",
    ])
    .args([
        "--listen",
        "127.0.0.1:0",
        "--store",
        dir.path().join("store").to_str().unwrap(),
    ]);
    let running = Running::serving(cmd, dir.path().join("onramp.log"));
    let base = running.base().to_string();
    let agent = onramp_tests::http_agent(Some(Duration::from_secs(5)));
    let applied = |agent: &ureq::Agent| -> f64 {
        let text = agent
            .get(&format!("{base}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("onramp_updates_applied_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    // Warm-up: let some profiles exist, and measure the ingest rate with no readers.
    std::thread::sleep(Duration::from_secs(5));
    let a0 = applied(&agent);
    std::thread::sleep(Duration::from_secs(5));
    let idle_rate = (applied(&agent) - a0) / 5.0;

    let start_applied = applied(&agent);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let base = base.clone();
            let agent = agent.clone();
            let range = lookup_range;
            std::thread::spawn(move || {
                let mut x = 0x9e3779b97f4a7c15u64 ^ c;
                let (mut lat, mut found, mut missing) = (Vec::new(), 0u64, 0u64);
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Half by user id, half by the anonymous id of the visit before sign-up:
                    // both resolve to the person and merge its ids' profiles.
                    let kind = if x & 1 == 0 { "u" } else { "a" };
                    let url = format!("{base}/v1/profiles/{kind}_{}", (x >> 1) % range);
                    let t = Instant::now();
                    let mut resp = agent.get(&url).call().unwrap();
                    let _ = resp.body_mut().read_to_string();
                    lat.push(t.elapsed());
                    if resp.status().as_u16() == 200 {
                        found += 1;
                    } else {
                        missing += 1;
                    }
                }
                (lat, found, missing)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let (mut found, mut missing) = (0, 0);
    for h in handles {
        let (l, f, m) = h.join().unwrap();
        lat.extend(l);
        found += f;
        missing += m;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let load_rate = (applied(&agent) - start_applied) / elapsed;
    let scans = scan_phase(&base, &agent, arg("--scanners", 40), arg("--scan-seconds", 10));
    drop(running); // killed
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!("read API load: {clients} client threads for {elapsed:.1}s on loopback, person lookups by u_n or a_n (n < {lookup_range}), while ingesting generated traffic ({USERS} users)");
    println!("| lookups | lookups/s | p50 ms | p99 ms | max ms | found / not yet | ingest updates/s during | ingest updates/s before |");
    println!("|---:|---:|---:|---:|---:|---|---:|---:|");
    println!(
        "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {found} / {missing} | {load_rate:.0} | {idle_rate:.0} |",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    let h = &scans.healthz;
    let hp = |p: f64| {
        h.get(((h.len() as f64 * p) as usize).min(h.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!();
    println!(
        "full scans: {} threads for {:.1}s, `GET /v1/profiles?completed_step=nope` over about {} profiles, while ingesting",
        scans.scanners, scans.seconds, scans.profiles
    );
    println!("| scans answered/s | busy (503)/s | /healthz probes | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} |",
        scans.answered as f64 / scans.seconds,
        scans.busy as f64 / scans.seconds,
        h.len(),
        hp(0.50),
        hp(0.99),
        h.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
}

/// What the scan phase measured.
struct ScanFigures {
    scanners: u64,
    seconds: f64,
    profiles: u64,
    answered: u64,
    busy: u64,
    healthz: Vec<Duration>,
}

/// `scanners` threads doing full scans back to back for `seconds`, `/healthz` probed meanwhile.
fn scan_phase(base: &str, agent: &ureq::Agent, scanners: u64, seconds: u64) -> ScanFigures {
    let profiles = agent
        .get(&format!("{base}/v1/funnel"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["profiles"].as_u64())
        .unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let slow = onramp_tests::http_agent(Some(Duration::from_secs(120)));
    let handles: Vec<_> = (0..scanners)
        .map(|_| {
            let url = format!("{base}/v1/profiles?completed_step=nope&limit=10");
            let agent = slow.clone();
            std::thread::spawn(move || {
                let (mut answered, mut busy) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let Ok(mut resp) = agent.get(&url).call() else { continue };
                    let _ = resp.body_mut().read_to_string();
                    match resp.status().as_u16() {
                        200 => answered += 1,
                        503 => busy += 1,
                        _ => {}
                    }
                }
                (answered, busy)
            })
        })
        .collect();
    let mut healthz = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        if let Ok(mut r) = agent.get(&format!("{base}/healthz")).call() {
            let _ = r.body_mut().read_to_string();
            healthz.push(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut answered, mut busy) = (0, 0);
    for h in handles {
        let (a, b) = h.join().unwrap();
        answered += a;
        busy += b;
    }
    healthz.sort();
    ScanFigures {
        scanners,
        seconds: started.elapsed().as_secs_f64(),
        profiles,
        answered,
        busy,
        healthz,
    }
}
