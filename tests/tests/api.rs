//! The read API, black box: `onramp run` / `onramp serve` on `127.0.0.1:0`, fed through
//! stdin, talked to with a real HTTP client (and raw TCP where a client would normalise
//! what is under test: the `Host` header, idle connections).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use onramp_tests::cli::{command, ok, stats, Onramp};
use onramp_tests::http_agent as agent;
use onramp_tests::running::Running;
use onramp_tests::synthetic::{ts, T0};

const TOKEN: &str = "s3cret-token";

/// Spawns `cmd` (an onramp command serving the API, logging at `info`) with its log at
/// `log`, and waits for its API address.
fn spawn(mut cmd: Command, log: PathBuf) -> Running {
    cmd.env("ONRAMP_LOG", "info");
    Running::serving(cmd, log)
}

/// Starts `onramp run --input -` with the API on an ephemeral loopback port, the token,
/// batches of 5 and `extra` flags.
fn start_with(store: &Path, extra: &[&str]) -> Running {
    let mut cmd = command();
    cmd.args(["run", "--input", "-", "--store", store.to_str().unwrap()])
        .args(["--batch-size", "5", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .args(extra);
    spawn(cmd, store.with_extension("run.log"))
}

fn start(store: &Path) -> Running {
    start_with(store, &[])
}

/// `onramp serve` over a finished store, with `extra` flags.
fn serve(store: &Path, extra: &[&str]) -> Running {
    let mut cmd = command();
    cmd.args(["serve", "--store", store.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(extra);
    spawn(cmd, store.with_extension("serve.log"))
}

/// Folds `lines` into a new store at `store` with `onramp run` (no API).
fn build_store(store: &Path, lines: &[String]) {
    let input = store.with_extension("jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let (input, store) = (input.to_str().unwrap(), store.to_str().unwrap());
    ok(&[
        "run",
        "--input",
        input,
        "--store",
        store,
        "--batch-size",
        "5000",
        "--durability",
        "relaxed",
    ]);
}

fn event(i: usize, user: &str, kind: &str) -> String {
    let props = match kind {
        "step_completed" => r#","properties":{"step":"profile"}"#.to_string(),
        "page_view" => r#","properties":{"path":"/home"}"#.to_string(),
        "sign_up" => format!(r#","properties":{{"method":"email","email":"{user}@private-mail.net"}}"#),
        _ => String::new(),
    };
    format!(
        r#"{{"event_id":"e{i}","type":"{kind}","user_id":"{user}","timestamp":"{}"{props}}}"#,
        ts(T0 + i as i64 * 1_000)
    )
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// GET with the token (a server without one ignores it).
fn get(base: &str, path: &str) -> (u16, serde_json::Value) {
    get_with_patience(base, path, Duration::from_secs(10))
}

/// A raw HTTP/1.1 GET with exactly these `Host` and `Authorization` headers (none when
/// `None`): status, headers and body.
fn raw_get(addr: &str, path: &str, host: Option<&str>, token: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(h) = host {
        req += &format!("Host: {h}\r\n");
    }
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Reads an SSE stream's `data:` lines into a channel, from a background thread.
fn sse_lines(url: String, last_event_id: Option<u64>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut req = agent(None).get(&url).header("Authorization", &bearer());
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", &id.to_string());
        }
        let resp = req.call().unwrap();
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(data) = line.strip_prefix("data:") {
                if tx.send(data.trim().to_string()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Polls every 50 ms until `f` holds; panics after 30 s.
fn wait_for(what: &str, f: impl FnMut() -> bool) {
    onramp_tests::wait_until(Duration::from_secs(30), Duration::from_millis(50), what, f);
}

/// A metric's value; `name` may include labels, e.g. `x_total{reason="busy"}`.
fn metric(base: &str, name: &str) -> f64 {
    let (_, body) = get(base, "/metrics");
    body.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Proves, against a running pipeline: an update reaches `/v1/updates` after its batch
/// commits, `Last-Event-ID` replays what followed it, and the hint filter passes only
/// activated users; lookups, 404/400 error bodies; pages with no duplicates or gaps while writes
/// continue; the funnel equals `onramp stats`; DELETE needs the token and erases;
/// metrics are present and increase.
#[test]
fn read_api_against_a_running_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut r = start(&store);
    let base = r.base().to_string();

    // Subscribe to u_1's updates before anything is written, and to activated users'.
    let rx = sse_lines(format!("{base}/v1/updates?user=u_1"), None);
    let arx = sse_lines(format!("{base}/v1/updates?hint=activated"), None);
    wait_for("the stream clients to connect", || {
        metric(&base, "onramp_update_stream_clients") >= 2.0
    });

    // 30 users, one sign-up each, then a step for u_1: batches of 5 commit as they fill.
    let mut lines: Vec<String> = (0..30).map(|i| event(i, &format!("u_{i}"), "sign_up")).collect();
    lines.push(event(30, "u_1", "step_completed"));
    lines.extend((31..35).map(|i| event(i, "u_2", "page_view")));
    r.send(&lines);
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("u_1's update is streamed after its commit");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["update"]["user_id"], "u_1");
    assert_eq!(first["update"]["event_id"], "e1");
    wait_for("the 35 records to commit", || {
        metric(&base, "onramp_updates_applied_total") >= 35.0
    });
    let second = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(second.contains(r#""event_id":"e30""#), "{second}");

    // Last-Event-ID resumes: from the first update's id, u_1's next one is replayed.
    let first_seq = first["seq"].as_u64().unwrap();
    let replayed = sse_lines(format!("{base}/v1/updates?user=u_1"), Some(first_seq))
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert!(replayed.contains(r#""event_id":"e30""#), "{replayed}");

    // Lookups and error bodies.
    let (status, p) = get(&base, "/v1/profiles/u_1");
    assert_eq!(status, 200);
    assert_eq!(p["as_of"]["offset"], 30);
    assert_eq!(p["steps"]["profile"]["index"], 2);
    assert!(p["hints"]["stalled"].is_boolean());
    let (status, e) = get(&base, "/v1/profiles/nobody");
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("profile_not_found")));
    let (status, e) = get(&base, "/v1/profiles?limit=abc");
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("bad_query")));
    let (status, e) = get(&base, "/v1/profiles?hint=sleepy");
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("bad_hint")));
    let (status, _) = get(&base, &format!("/v1/profiles?step={}", "x".repeat(3_000)));
    assert_eq!(status, 414);
    // A parameter an endpoint does not take is refused, not ignored.
    let (status, e) = get(&base, "/v1/funnel?steps=a,b");
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("bad_query")));
    let resp = agent(Some(Duration::from_secs(10)))
        .get(&format!("{base}/v1/updates"))
        .header("Authorization", &bearer())
        .header("Last-Event-ID", "garbage")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "an unreadable Last-Event-ID");

    // Pages of 7 while new users and more events keep arriving: the 30 users that
    // existed before the listing appear exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut i = 100;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/profiles?limit=7&cursor={c}"),
            None => "/v1/profiles?limit=7".to_string(),
        };
        let (status, page) = get(&base, &path);
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["profiles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["user_id"].as_str().unwrap().to_string()),
        );
        let writes: Vec<String> = (0..5)
            .map(|k| event(i + k, &format!("w_{}", i + k), "sign_up"))
            .collect();
        r.send(&writes);
        i += 5;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no user twice across pages");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages are in user-id order");
    for u in 0..30 {
        assert!(seen.contains(&format!("u_{u}")), "u_{u} is on a page");
    }

    // Metrics increase with more writes.
    let before = metric(&base, "onramp_updates_applied_total");
    r.send(&(200..210).map(|k| event(k, "u_3", "page_view")).collect::<Vec<_>>());
    wait_for("more updates", || {
        metric(&base, "onramp_updates_applied_total") >= before + 10.0
    });
    assert!(metric(&base, "onramp_batch_apply_seconds_count") > 0.0);

    // The hint filter: only the user who completed onboarding shows on the activated stream.
    let mut done = vec![event(300, "u_5", "onboarding_completed")];
    done.extend((301..305).map(|k| event(k, "u_6", "page_view")));
    r.send(&done);
    let activated = arx
        .recv_timeout(Duration::from_secs(30))
        .expect("an activated user's update");
    assert!(
        activated.contains(r#""event_id":"e300""#) && activated.contains(r#""activated":true"#),
        "{activated}"
    );

    // DELETE needs the token, then erases.
    let url = format!("{base}/v1/profiles/u_2");
    let mut resp = agent(Some(Duration::from_secs(10))).delete(&url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.body_mut().read_to_string().unwrap().contains("unauthorized"));
    let mut resp = agent(Some(Duration::from_secs(10)))
        .delete(&url)
        .header("Authorization", "Bearer wrong-token!")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let _ = resp.body_mut().read_to_string();
    let mut resp = agent(Some(Duration::from_secs(10)))
        .delete(&url)
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["removed"]["profiles"], 1);
    assert_eq!(body["removed"]["ids"], serde_json::json!(["u_2"]));
    assert_eq!(get(&base, "/v1/profiles/u_2").0, 404);
    // Later events for u_2 are suppressed: the erasure stays. A marker user's event after
    // them says they were committed.
    let mut later: Vec<String> = (400..405).map(|k| event(k, "u_2", "page_view")).collect();
    later.push(event(405, "u_marker", "page_view"));
    r.send(&later);
    wait_for("the marker", || get(&base, "/v1/profiles/u_marker").0 == 200);
    assert_eq!(get(&base, "/v1/profiles/u_2").0, 404, "an erased user came back");

    // The funnel now equals `onramp stats` over the same store once the run has ended.
    wait_for("all writes to commit", || get(&base, "/readyz").0 == 200);
    let (_, funnel) = get(&base, "/v1/funnel");
    assert!(r.wait().success());
    let stats = stats(&store);
    assert_eq!(funnel["steps"], stats["steps"]);
    assert_eq!(funnel["profiles"], stats["profiles"]);
}

/// Proves a non-loopback bind without a token is refused before anything starts.
#[test]
fn non_loopback_bind_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .args(["run", "--generate", "--events", "10", "--listen", "0.0.0.0:0"])
        .args(["--store", dir.path().join("s").to_str().unwrap()])
        .env_remove("ONRAMP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address: give --token"));
    assert!(!dir.path().join("s").exists(), "nothing was written");
}

/// Proves `onramp serve` serves a finished store read-only: lookups work, DELETE is
/// refused even with the token, and the store is unchanged.
#[test]
fn serve_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut r = start(&store);
    r.send(&(0..5).map(|i| event(i, "u_1", "page_view")).collect::<Vec<_>>());
    assert!(r.wait().success());

    let served = serve(&store, &["--token", TOKEN]);
    let base = served.base().to_string();
    let (status, p) = get(&base, "/v1/profiles/u_1");
    assert_eq!((status, p["counters"]["page_views"].as_u64()), (200, Some(5)));
    assert_eq!(get(&base, "/readyz").0, 200);
    let resp = agent(Some(Duration::from_secs(10)))
        .delete(&format!("{base}/v1/profiles/u_1"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(get(&base, "/v1/profiles/u_1").0, 200);
}

/// Proves a client that stops reading the update stream is dropped with a reason once
/// its buffer overflows, while the pipeline goes on committing.
#[test]
fn slow_update_stream_client_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let mut cmd = command();
    cmd.args(["run", "--input", "-", "--store", store.to_str().unwrap()])
        .args([
            "--batch-size",
            "1000",
            "--durability",
            "relaxed",
            "--listen",
            "127.0.0.1:0",
        ]);
    let mut r = spawn(cmd, store.with_extension("run.log"));
    let base = r.base().to_string();
    // Connect, then read nothing while 60k updates are committed.
    let slow = agent(None).get(&format!("{base}/v1/updates")).call().unwrap();
    wait_for("the client to connect", || {
        metric(&base, "onramp_update_stream_clients") >= 1.0
    });
    let lines: Vec<String> = (0..60_000)
        .map(|i| event(i, &format!("u_{}", i % 100), "page_view"))
        .collect();
    r.send(&lines); // stdin kept open: the server must outlive the reading below
                    // The drop comes once the pipeline has published more than the client's buffers hold:
                    // how long that takes depends on the machine (a debug build, the other tests running
                    // beside it), so this waits longer than `wait_for`.
    onramp_tests::wait_until(
        Duration::from_secs(180),
        Duration::from_millis(100),
        "the slow client to be dropped",
        || metric(&base, "onramp_update_stream_dropped_total") >= 1.0,
    );
    // Reading now, the client finds the reason at the end of what was buffered.
    let reason = BufReader::new(slow.into_body().into_reader())
        .lines()
        .map_while(Result::ok)
        .skip_while(|l| l != "event: dropped")
        .nth(1)
        .unwrap_or_default();
    assert!(reason.contains("client too slow"), "{reason}");
    wait_for("all 60k updates to commit", || {
        metric(&base, "onramp_updates_applied_total") >= 60_000.0
    });
    assert!(r.wait().success(), "the pipeline finished regardless");
}

/// Proves that with a token every endpoint but `/healthz` needs it — GETs on loopback
/// included — and that `Host` must name the server: loopback names with its port or
/// none, `--allow-host` names; anything else (what a DNS-rebinding page sends), another
/// port or no `Host` at all is refused with 421 `host_not_allowed`, `/healthz` included.
/// Refusals are counted by reason.
#[test]
fn token_and_host_are_checked_on_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut r = start_with(&store, &["--allow-host", "onramp.internal"]);
    r.send(&(0..5).map(|i| event(i, "u_1", "page_view")).collect::<Vec<_>>());
    let addr = r.addr().to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    let host = Some(addr.as_str());
    wait_for("the profile", || {
        raw_get(&addr, "/v1/profiles/u_1", host, Some(TOKEN)).0 == 200
    });

    for path in [
        "/v1/profiles/u_1",
        "/v1/profiles?limit=1",
        "/v1/funnel",
        "/v1/updates",
        "/metrics",
        "/readyz",
    ] {
        let (status, _, body) = raw_get(&addr, path, host, None);
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(body.contains("unauthorized"), "{body}");
        let (status, _, body) = raw_get(&addr, path, host, Some("wrong-token"));
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
    }
    let (status, head, _) = raw_get(&addr, "/v1/funnel", host, None);
    assert_eq!(status, 401);
    assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert_eq!(raw_get(&addr, "/healthz", host, None).0, 200, "/healthz needs no token");
    assert_eq!(raw_get(&addr, "/v1/funnel", host, Some(TOKEN)).0, 200);

    for ok in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
        "onramp.internal".to_string(),
        "ONRAMP.internal:8443".to_string(),
    ] {
        let (status, _, body) = raw_get(&addr, "/v1/profiles/u_1", Some(&ok), Some(TOKEN));
        assert_eq!(status, 200, "Host: {ok}: {body}");
    }
    for bad in [
        format!("attacker.example:{port}"),
        "attacker.example".to_string(),
        format!("localhost:{}", port.parse::<u16>().unwrap().wrapping_add(1)),
        format!("onramp.internal.attacker.example:{port}"),
    ] {
        for path in ["/v1/profiles/u_1", "/healthz"] {
            let (status, _, body) = raw_get(&addr, path, Some(&bad), Some(TOKEN));
            assert_eq!(status, 421, "Host: {bad} on {path}: {body}");
            let e: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(e["error"]["code"], "host_not_allowed");
            assert!(e["error"]["message"].as_str().unwrap().contains("--allow-host"), "{e}");
        }
    }
    let (status, _, _) = raw_get(&addr, "/v1/profiles/u_1", None, Some(TOKEN));
    assert_eq!(status, 421, "no Host header");

    let base = r.base().to_string();
    assert!(metric(&base, "onramp_api_requests_refused_total{reason=\"host_not_allowed\"}") >= 9.0);
    assert!(metric(&base, "onramp_api_requests_refused_total{reason=\"unauthorized\"}") >= 13.0);
}

/// Proves profile scans never stall the API: 40 concurrent full scans
/// (`GET /v1/profiles?completed_step=nope` over 25,000 profiles, which matches none) each get the
/// (empty) page or 503 `busy` with `Retry-After`, while `/healthz` keeps answering in
/// well under a second (it took 16 s when scans ran on the API's only worker).
#[test]
fn profile_scans_never_stall_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let lines: Vec<String> = (0..25_000).map(|i| event(i, &format!("u_{i:05}"), "sign_up")).collect();
    build_store(&store, &lines);
    let served = serve(&store, &[]);
    let base = served.base().to_string();
    let (status, funnel) = get(&base, "/v1/funnel");
    assert_eq!((status, funnel["profiles"].as_u64()), (200, Some(25_000)));

    let started = Instant::now();
    let scans: Vec<_> = (0..40)
        .map(|_| {
            let url = format!("{base}/v1/profiles?completed_step=nope&limit=10");
            std::thread::spawn(move || {
                let mut resp = agent(Some(Duration::from_secs(120))).get(&url).call().unwrap();
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
                (status, retry_after, body, Instant::now())
            })
        })
        .collect();
    // /healthz, repeatedly, while the scans run.
    let mut healthz = Vec::new();
    while !scans.iter().all(|s| s.is_finished()) {
        let t = Instant::now();
        let (status, _) = get(&base, "/healthz");
        assert_eq!(status, 200);
        healthz.push((t, t.elapsed()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let results: Vec<_> = scans.into_iter().map(|s| s.join().unwrap()).collect();
    let last_scan = results.iter().map(|r| r.3).max().unwrap();
    let during: Vec<Duration> = healthz
        .iter()
        .filter(|(t, _)| *t < last_scan)
        .map(|(_, d)| *d)
        .collect();
    assert!(
        during.len() >= 3,
        "/healthz was measured while scans ran ({} times in {:?})",
        during.len(),
        started.elapsed()
    );
    let worst = during.iter().max().unwrap();
    assert!(
        *worst < Duration::from_secs(1),
        "/healthz took {worst:?} while 40 scans ran"
    );
    let mut ok = 0;
    for (status, retry_after, body, _) in &results {
        match status {
            200 => {
                assert_eq!(body["profiles"].as_array().map(Vec::len), Some(0), "{body}");
                ok += 1;
            }
            503 => {
                assert_eq!(body["error"]["code"], "busy", "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"));
            }
            other => panic!("scan answered {other}: {body}"),
        }
    }
    assert!(ok >= 4, "at least the first scans complete ({ok} did)");
    let busy = results.len() - ok;
    assert_eq!(
        metric(&base, "onramp_api_requests_refused_total{reason=\"busy\"}") as usize,
        busy
    );
    eprintln!(
        "40 scans of 25k profiles: {ok} answered, {busy} busy, in {:?}; /healthz worst {worst:?} over {} probes",
        last_scan - started,
        during.len()
    );
}

/// Proves idle connections cannot take the server down or keep anyone out: with
/// `--max-connections 8` and `--header-timeout 5s`, 40 connections that send nothing do not
/// delay a real request behind them (at the cap the oldest silent connection is closed to
/// make room, long before any header timeout), a keep-alive connection that went quiet
/// after a request is closed by the header timeout, and nothing is logged as an accept error.
#[test]
fn idle_connections_are_capped_and_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_store(
        &store,
        &(0..5).map(|i| event(i, "u_1", "page_view")).collect::<Vec<_>>(),
    );
    let served = serve(&store, &["--max-connections", "8", "--header-timeout", "5s"]);
    let addr = served.addr().to_string();
    let base = served.base().to_string();
    assert_eq!(get(&base, "/healthz").0, 200);

    // A keep-alive connection that sent a request, then went quiet: not shed, timed out.
    let mut quiet = TcpStream::connect(&addr).unwrap();
    quiet
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(&addr).unwrap()).collect();

    // A real request behind them all is served at once: silent ones make room.
    let (status, _) = get_with_patience(&base, "/v1/profiles/u_1", Duration::from_secs(60));
    assert_eq!(status, 200);
    let served_after = started.elapsed();
    assert!(
        served_after < Duration::from_secs(3),
        "served after {served_after:?}; the header timeout is 5 s, so nothing made room"
    );
    assert_eq!(get(&base, "/healthz").0, 200);
    assert!(
        metric(&base, "onramp_api_connections_shed_total") >= 33.0,
        "the silent connections beyond the cap were shed"
    );

    // Every idle connection was closed by the server: shed, or timed out.
    for (i, mut c) in idle.into_iter().chain([quiet]).enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("idle connection {i} was not closed: {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(40));
    wait_for("the connections to be counted out", || {
        metric(&base, "onramp_api_connections") <= 1.0
    });
    assert_eq!(served.logged("accepting API connections failed"), 0);
}

/// Proves the read API and `onramp stats` use the funnel the store was written with: after
/// a run with `--param enrich.steps=sign_up,profile,paid`, `serve` filters by `step=profile`,
/// refuses `step=workspace` (a default step, not this funnel's) as 400 `unknown_step` naming
/// the funnel, and `/v1/funnel` and `onramp stats` report exactly those three steps.
#[test]
fn the_api_uses_the_funnel_the_store_was_written_with() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = dir.path().join("events.jsonl");
    let lines = [event(0, "u_1", "sign_up"), event(1, "u_1", "step_completed")];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let funnel = "enrich.steps=sign_up,profile,paid";
    ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--param",
        funnel,
    ]);

    let served = serve(&store, &[]);
    let base = served.base().to_string();
    let (status, page) = get(&base, "/v1/profiles?step=profile");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["profiles"].as_array().map(Vec::len), Some(1), "{page}");
    let (status, e) = get(&base, "/v1/profiles?step=workspace");
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("unknown_step")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sign_up, profile, paid"),
        "{e}"
    );
    let step_names = |report: &serde_json::Value| -> Vec<String> {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, f) = get(&base, "/v1/funnel");
    assert_eq!(status, 200);
    assert_eq!(step_names(&f), ["sign_up", "profile", "paid"]);
    drop(served);
    assert_eq!(
        step_names(&onramp_tests::cli::stats(&store)),
        ["sign_up", "profile", "paid"]
    );
}

/// GET that waits up to `patience` for the response (a connection queued behind others).
fn get_with_patience(base: &str, path: &str, patience: Duration) -> (u16, serde_json::Value) {
    let mut resp = agent(Some(patience))
        .get(&format!("{base}{path}"))
        .header("Authorization", &bearer())
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Proves running out of file descriptors (a descriptor limit of 64 and 150 idle
/// connections, more than `--max-connections` allows for) is survived: accept errors
/// back off and are logged at most once per 10 s with a count, not every second, and
/// the server answers again once the idle connections are timed out.
#[test]
fn running_out_of_descriptors_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    build_store(
        &store,
        &(0..5).map(|i| event(i, "u_1", "page_view")).collect::<Vec<_>>(),
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(Onramp::Debug.bin())
        .args(["serve", "--store", store.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--max-connections", "1000", "--header-timeout", "1s"]);
    let served = spawn(cmd, store.with_extension("serve.log"));
    let addr = served.addr().to_string();
    let base = served.base().to_string();
    assert_eq!(get(&base, "/healthz").0, 200);

    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(4));
    let (status, _) = get_with_patience(&base, "/v1/profiles/u_1", Duration::from_secs(60));
    assert_eq!(status, 200, "the server answers again");
    let elapsed = started.elapsed();
    let reports = served.logged("accepting API connections failed");
    assert!(reports >= 1, "the descriptor shortage is reported");
    assert!(
        reports as u64 <= 1 + elapsed.as_secs() / 10,
        "{reports} reports in {elapsed:?}: at most one per 10 s"
    );
    assert!(metric(&base, "onramp_api_accept_errors_total") >= 1.0);
    drop(idle);
}

/// Proves erasure reaches the update stream: after `DELETE /v1/profiles/u_1`, a client
/// resuming with `Last-Event-ID: 0` replays everyone's updates but none of u_1's (their
/// email included). Also that a DELETE finding nothing is a 404 that restarts no chain,
/// while a real one restarts the user's partition's chain before its next batch.
#[test]
fn erasure_removes_the_user_from_the_update_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut r = start(&store);
    let base = r.base().to_string();
    // u_1 and u_2 interleaved; u_2's last update is the marker.
    let lines = vec![
        event(0, "u_1", "sign_up"),
        event(1, "u_2", "sign_up"),
        event(2, "u_1", "page_view"),
        event(3, "u_2", "page_view"),
        event(4, "u_1", "page_view"),
        event(5, "u_2", "page_view"),
        event(6, "u_1", "page_view"),
        event(7, "u_2", "page_view"),
        event(8, "u_1", "page_view"),
        event(9, "u_2", "page_view"),
    ];
    r.send(&lines);
    wait_for("the 10 updates", || {
        metric(&base, "onramp_updates_applied_total") >= 10.0
    });
    let replay = |from: u64| -> Vec<String> {
        let rx = sse_lines(format!("{base}/v1/updates"), Some(from));
        let mut seen = Vec::new();
        loop {
            let data = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the replay reaches u_2's last update");
            let done = data.contains(r#""event_id":"e9""#);
            seen.push(data);
            if done {
                return seen;
            }
        }
    };
    let before = replay(0);
    assert_eq!(before.len(), 10);
    assert!(before.iter().any(|d| d.contains("u_1@private-mail.net")));

    // Nothing to erase: 404, and the next batch restarts no chain.
    let resp = agent(Some(Duration::from_secs(10)))
        .delete(&format!("{base}/v1/profiles/nobody"))
        .header("Authorization", &bearer())
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    r.send(&(10..15).map(|i| event(i, "u_3", "page_view")).collect::<Vec<_>>());
    wait_for("u_3's batch", || metric(&base, "onramp_updates_applied_total") >= 15.0);
    assert_eq!(
        r.logged("chain restarted"),
        0,
        "a DELETE that found nothing restarts no chain"
    );

    // Erase u_1: the resume window no longer has any of their updates.
    let mut resp = agent(Some(Duration::from_secs(10)))
        .delete(&format!("{base}/v1/profiles/u_1"))
        .header("Authorization", &bearer())
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let _ = resp.body_mut().read_to_string();
    let after = replay(0);
    assert_eq!(after.len(), 5, "u_2's five updates: {after:?}");
    for d in &after {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["update"]["user_id"], "u_2", "{d}");
    }
    assert!(!after.iter().any(|d| d.contains("u_1")), "nothing of u_1 is replayed");
    let filtered = sse_lines(format!("{base}/v1/updates?user=u_1"), Some(0));
    r.send(&(15..20).map(|i| event(i, "u_3", "page_view")).collect::<Vec<_>>());
    wait_for("the next batch", || {
        metric(&base, "onramp_updates_applied_total") >= 20.0
    });
    assert!(
        filtered.recv_timeout(Duration::from_secs(1)).is_err(),
        "a client asking for u_1 from id 0 gets nothing"
    );
    assert_eq!(r.logged("chain restarted"), 1, "the erasure restarted u_1's chain once");
}
