//! The read API, black box: `onramp run` on `127.0.0.1:0` fed through stdin, talked to
//! with a real HTTP client.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use onramp_tests::onramp_bin;
use onramp_tests::synthetic::{ts, T0};

const TOKEN: &str = "s3cret-token";

use onramp_tests::http_agent as agent;

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    base: String,
}

/// Starts `onramp run --input -` with the API on an ephemeral loopback port.
fn start(store: &std::path::Path) -> Running {
    onramp_tests::modules();
    let mut child = Command::new(onramp_bin())
        .args([
            "run",
            "--input",
            "-",
            "--store",
            store.to_str().unwrap(),
            "--batch-size",
            "5",
        ])
        .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
        .env("ONRAMP_WASM_DIR", onramp::wasm::default_wasm_dir())
        .env("ONRAMP_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let _ = tx.send(line[i..].trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("onramp run announces its API address");
    let stdin = child.stdin.take();
    Running { child, stdin, base }
}

fn event(i: usize, user: &str, kind: &str) -> String {
    let props = match kind {
        "step_completed" => r#","properties":{"step":"profile"}"#,
        "page_view" => r#","properties":{"path":"/home"}"#,
        _ => "",
    };
    format!(
        r#"{{"event_id":"e{i}","type":"{kind}","user_id":"{user}","timestamp":"{}"{props}}}"#,
        ts(T0 + i as i64 * 1_000)
    )
}

fn send(r: &mut Running, lines: &[String]) {
    let stdin = r.stdin.as_mut().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
}

fn get(base: &str, path: &str) -> (u16, serde_json::Value) {
    let mut resp = agent(Some(Duration::from_secs(10)))
        .get(&format!("{base}{path}"))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
    let base = r.base.clone();

    // Subscribe to u_1's updates before anything is written.
    let (tx, rx) = mpsc::channel::<String>();
    let sse_url = format!("{base}/v1/updates?user=u_1");
    std::thread::spawn(move || {
        let resp = agent(None).get(&sse_url).call().unwrap();
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(data) = line.strip_prefix("data:") {
                let _ = tx.send(data.trim().to_string());
            }
        }
    });
    // And to updates of activated users only.
    let (atx, arx) = mpsc::channel::<String>();
    let activated_url = format!("{base}/v1/updates?hint=activated");
    std::thread::spawn(move || {
        let resp = agent(None).get(&activated_url).call().unwrap();
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(data) = line.strip_prefix("data:") {
                let _ = atx.send(data.trim().to_string());
            }
        }
    });
    wait_for("the stream clients to connect", || {
        metric(&base, "onramp_update_stream_clients") >= 2.0
    });

    // 30 users, one sign-up each, then a step for u_1: batches of 5 commit as they fill.
    let mut lines: Vec<String> = (0..30).map(|i| event(i, &format!("u_{i}"), "sign_up")).collect();
    lines.push(event(30, "u_1", "step_completed"));
    lines.extend((31..35).map(|i| event(i, "u_2", "page_view")));
    send(&mut r, &lines);
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
    let resumed = agent(None)
        .get(&format!("{base}/v1/updates?user=u_1"))
        .header("Last-Event-ID", &first_seq.to_string())
        .call()
        .unwrap();
    let replayed = BufReader::new(resumed.into_body().into_reader())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))
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
        send(&mut r, &writes);
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
    send(
        &mut r,
        &(200..210).map(|k| event(k, "u_3", "page_view")).collect::<Vec<_>>(),
    );
    wait_for("more updates", || {
        metric(&base, "onramp_updates_applied_total") >= before + 10.0
    });
    assert!(metric(&base, "onramp_batch_apply_seconds_count") > 0.0);

    // The hint filter: only the user who completed onboarding shows on the activated stream.
    let mut done = vec![event(300, "u_5", "onboarding_completed")];
    done.extend((301..305).map(|k| event(k, "u_6", "page_view")));
    send(&mut r, &done);
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
    assert_eq!(body["removed"]["profile"], true);
    assert_eq!(get(&base, "/v1/profiles/u_2").0, 404);
    // Later events for u_2 start a new profile, fold state included: a new session.
    let before = metric(&base, "onramp_updates_applied_total");
    send(
        &mut r,
        &(400..405).map(|k| event(k, "u_2", "page_view")).collect::<Vec<_>>(),
    );
    wait_for("u_2's new events", || {
        metric(&base, "onramp_updates_applied_total") >= before + 5.0
    });
    let (status, p) = get(&base, "/v1/profiles/u_2");
    assert_eq!(status, 200);
    assert_eq!(p["counters"]["events"], 5);
    assert_eq!(
        p["counters"]["sessions"], 1,
        "the aggregate forgot the erased user too: {p}"
    );
    assert_eq!(p["fold"]["recent_ids"].as_array().unwrap().len(), 5);

    // The funnel now equals `onramp stats` over the same store once the run has ended.
    wait_for("all writes to commit", || get(&base, "/readyz").0 == 200);
    let (_, funnel) = get(&base, "/v1/funnel");
    drop(r.stdin.take());
    assert!(r.child.wait().unwrap().success());
    let out = Command::new(onramp_bin())
        .args(["stats", "--json", "--store", store.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(funnel["steps"], stats["steps"]);
    assert_eq!(funnel["profiles"], stats["profiles"]);
}

/// Proves a non-loopback bind without a token is refused before anything starts.
#[test]
fn non_loopback_bind_needs_a_token() {
    onramp_tests::modules();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(onramp_bin())
        .args(["run", "--generate", "--events", "10", "--listen", "0.0.0.0:0"])
        .args(["--store", dir.path().join("s").to_str().unwrap()])
        .env("ONRAMP_WASM_DIR", onramp::wasm::default_wasm_dir())
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
    send(
        &mut r,
        &(0..5).map(|i| event(i, "u_1", "page_view")).collect::<Vec<_>>(),
    );
    drop(r.stdin.take());
    assert!(r.child.wait().unwrap().success());

    let mut child = Command::new(onramp_bin())
        .args([
            "serve",
            "--store",
            store.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
        ])
        .env("ONRAMP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let _ = tx.send(line[i..].trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("onramp serve announces its address");
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
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Proves a client that stops reading the update stream is dropped with a reason once
/// its buffer overflows, while the pipeline goes on committing.
#[test]
fn slow_update_stream_client_is_dropped() {
    onramp_tests::modules();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(onramp_bin())
        .args(["run", "--input", "-", "--store", dir.path().join("s").to_str().unwrap()])
        .args([
            "--batch-size",
            "1000",
            "--durability",
            "relaxed",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("ONRAMP_WASM_DIR", onramp::wasm::default_wasm_dir())
        .env("ONRAMP_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let _ = tx.send(line[i..].trim().to_string());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    // Connect, then read nothing while 60k updates are committed.
    let slow = agent(None).get(&format!("{base}/v1/updates")).call().unwrap();
    wait_for("the client to connect", || {
        metric(&base, "onramp_update_stream_clients") >= 1.0
    });
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..60_000 {
        writeln!(stdin, "{}", event(i, &format!("u_{}", i % 100), "page_view")).unwrap();
    }
    stdin.flush().unwrap(); // kept open: the server must outlive the reading below
    wait_for("the slow client to be dropped", || {
        metric(&base, "onramp_update_stream_dropped_total") >= 1.0
    });
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
    drop(stdin);
    assert!(child.wait().unwrap().success(), "the pipeline finished regardless");
}
