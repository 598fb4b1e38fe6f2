//! Audiences, black box: `stalled` entered exactly once when other persons' events move the
//! event-time frontier past a person's last activity + D, exited on their next event; the
//! same transitions with the same ids whatever the batches, partitioning or appends;
//! erasure takes memberships and transitions along; `/v1/triggers` resumes across a
//! restart from the durable outbox; a rules file with a mistake starts nothing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use onramp_tests::cli::{command, fails, json, ok};
use onramp_tests::http_agent as agent;
use onramp_tests::running::Running;
use onramp_tests::synthetic::{ts, T0};
use serde_json::{json, Value};

const MIN: i64 = 60_000;

/// Rules: `stalled` after 2h, `activated` after 2 feature uses, a surface with a 50/50
/// experiment.
const RULES: &str = r#"
audiences:
  - name: stalled
    version: 3
    when:
      all:
        - signed_up: true
        - completed: false
        - inactive_for: 2h
  - name: activated
    version: 1
    when: {counter: {name: features_used, at_least: 2}}
surfaces:
  - name: checklist
    experiment:
      name: copy_test
      variants: [{name: a, weight: 1}, {name: b, weight: 1}]
    actions:
      - action: finish_profile
        rule: stalled-after-profile
        when: {all: [{in_audience: stalled}, {current_step: profile}]}
      - action: explore
"#;

fn event(n: &mut u64, user: &str, kind: &str, at: i64, props: Value) -> String {
    *n += 1;
    json!({"event_id": format!("e{n}"), "type": kind, "user_id": user, "timestamp": ts(at), "properties": props})
        .to_string()
}

/// Phase 1: `u_stop` signs up, verifies and completes `profile` in the first minutes, then
/// goes quiet; ten other users keep the stream going for 110 minutes. Phase 2: the others
/// go on to 5 hours, `u_stop` comes back at 4 hours.
fn traffic() -> (Vec<String>, Vec<String>) {
    let mut n = 0;
    let mut one = vec![
        event(&mut n, "u_stop", "sign_up", T0, json!({"method": "email"})),
        event(&mut n, "u_stop", "email_verified", T0 + MIN, json!({})),
        event(
            &mut n,
            "u_stop",
            "step_completed",
            T0 + 2 * MIN,
            json!({"step": "profile"}),
        ),
    ];
    let mut two = Vec::new();
    for m in (0..300).step_by(5) {
        for u in 0..10 {
            let at = T0 + m * MIN + u * 1_000;
            let line = event(&mut n, &format!("u_{u}"), "page_view", at, json!({"path": "/home"}));
            if m < 110 {
                one.push(line);
            } else {
                two.push(line);
            }
        }
        if m == 240 {
            two.push(event(
                &mut n,
                "u_stop",
                "page_view",
                T0 + 240 * MIN + 500,
                json!({"path": "/setup"}),
            ));
        }
    }
    (one, two)
}

fn write(path: &Path, lines: &[String]) -> String {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

fn triggers(store: &Path) -> Vec<Value> {
    ok(&["triggers", "--store", store.to_str().unwrap()])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of(ts: &[Value], person: &str, audience: &str) -> Vec<(String, i64)> {
    ts.iter()
        .filter(|t| t["person_id"] == person && t["audience"] == audience)
        .map(|t| (t["kind"].as_str().unwrap().to_string(), t["at_ms"].as_i64().unwrap()))
        .collect()
}

fn run(input: &str, store: &Path, rules: &str, extra: &[&str]) {
    let mut args = vec![
        "run",
        "--input",
        input,
        "--store",
        store.to_str().unwrap(),
        "--rules",
        rules,
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

/// Proves a person who stops after the `profile` step enters `stalled` exactly once, only
/// once the other persons' events moved the frontier past their last activity + 2h, and
/// exits with their next event; that a replay in other batches, another partitioning or
/// one run instead of an append gives the same transitions with the same ids; and that
/// the decision uses the membership.
#[test]
fn stalled_is_entered_once_as_event_time_passes_and_left_on_return() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(&dir.path().join("rules.yaml"), &[RULES.to_string()]);
    let (one, two) = traffic();
    let one_in = write(&dir.path().join("one.jsonl"), &one);
    let two_in = write(&dir.path().join("two.jsonl"), &two);
    let all_in = write(&dir.path().join("all.jsonl"), &[one.clone(), two.clone()].concat());
    let stop_at = T0 + 2 * MIN;

    let store = dir.path().join("store");
    run(&one_in, &store, &rules, &["--partitions", "2"]);
    assert!(
        of(&triggers(&store), "u_stop", "stalled").is_empty(),
        "110 minutes after the last activity nobody is stalled yet"
    );
    let mid = json(&[
        "decide",
        "u_stop",
        "--surface",
        "checklist",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(mid["action"], "explore", "{mid}");

    run(&two_in, &store, &rules, &["--partitions", "2", "--append"]);
    let all = triggers(&store);
    assert_eq!(
        of(&all, "u_stop", "stalled"),
        vec![
            ("entered".to_string(), stop_at + 120 * MIN),
            ("exited".to_string(), T0 + 240 * MIN + 500)
        ],
        "entered once at last activity + 2h, exited on the next event"
    );
    let entered = all.iter().find(|t| t["person_id"] == "u_stop").unwrap();
    assert_eq!(entered["version"], 3);
    assert_eq!(entered["cause"]["type"], "timer");
    assert!(of(&all, "u_1", "stalled").is_empty(), "the others never signed up");

    // Same input, other batches, one run instead of an append: the same transitions, ids and
    // cursors included.
    let again = dir.path().join("again");
    run(&all_in, &again, &rules, &["--partitions", "2", "--batch-size", "3"]);
    assert_eq!(triggers(&again), all, "one run in batches of 3 equals the appended run");

    // Users spread over both partitions by event id: still deterministic.
    let (spread_a, spread_b) = (dir.path().join("spread_a"), dir.path().join("spread_b"));
    run(
        &all_in,
        &spread_a,
        &rules,
        &["--partitions", "2", "--key", "event-id", "--batch-size", "7"],
    );
    run(&all_in, &spread_b, &rules, &["--partitions", "2", "--key", "event-id"]);
    let spread = triggers(&spread_a);
    assert_eq!(
        spread,
        triggers(&spread_b),
        "batches of 7 and of 1000, users over both partitions"
    );
    assert_eq!(of(&spread, "u_stop", "stalled"), of(&all, "u_stop", "stalled"));

    // While stalled, the decision names the rule; the variant never moves.
    let cut = dir.path().join("cut");
    let upto: Vec<String> = [one.clone(), two[..150].to_vec()].concat();
    run(
        &write(&dir.path().join("upto.jsonl"), &upto),
        &cut,
        &rules,
        &["--partitions", "2"],
    );
    let s = cut.to_str().unwrap();
    let members = ok(&["audience", "members", "stalled", "--store", s]);
    assert!(members.contains("\"u_stop\""), "{members}");
    let d = json(&["decide", "u_stop", "--surface", "checklist", "--store", s]);
    assert_eq!(
        (d["action"].as_str(), d["rule"].as_str()),
        (Some("finish_profile"), Some("stalled-after-profile")),
        "{d}"
    );
    assert_eq!(d["experiment"]["variant"], mid["experiment"]["variant"]);
    let sizes = json(&["audiences", "--store", s, "--json"]);
    assert_eq!(sizes["audiences"][0]["name"], "stalled");
    assert_eq!(sizes["audiences"][0]["size"], 1, "{sizes}");

    // Erasure takes the person's memberships and transitions along.
    ok(&["erase", "u_stop", "--store", s]);
    assert!(triggers(&cut).iter().all(|t| t["person_id"] != "u_stop"));
    assert_eq!(json(&["audiences", "--store", s, "--json"])["audiences"][0]["size"], 0);
    ok(&["check", "--store", s]);
}

/// Reads a `/v1/triggers` stream's events as (id, data) into a channel.
fn transitions(url: String, last_event_id: Option<String>) -> mpsc::Receiver<(String, Value)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut req = agent(None).get(&url);
        if let Some(id) = &last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.call().unwrap();
        let mut id = String::new();
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if tx
                    .send((id.clone(), serde_json::from_str(data.trim()).unwrap()))
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

fn serve(store: &Path) -> Running {
    let mut cmd = command();
    cmd.args(["serve", "--store", store.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    cmd.env("ONRAMP_LOG", "info");
    Running::serving(cmd, store.with_extension("serve.log"))
}

/// Proves `/v1/triggers` streams the outbox and resumes after `Last-Event-ID` across a
/// restart of the server, with nothing lost or repeated; the audience endpoints page their
/// members and answer decisions.
#[test]
fn triggers_resume_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = dir.path().join("in.jsonl");
    ok(&[
        "generate",
        "--users",
        "300",
        "--seed",
        "3",
        "--output",
        input.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--partitions",
        "2",
    ]);
    let expected = triggers(&store);
    assert!(expected.len() > 20, "{} transitions", expected.len());

    let server = serve(&store);
    let rx = transitions(format!("{}/v1/triggers", server.base()), None);
    let first: Vec<(String, Value)> = (0..10)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    for (i, (id, t)) in first.iter().enumerate() {
        assert_eq!(t, &expected[i]);
        assert_eq!(id, t["cursor"].as_str().unwrap());
    }
    let (_, body) = get(server.base(), "/v1/audiences");
    let activated = body["audiences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "activated")
        .unwrap()
        .clone();
    let size = activated["size"].as_u64().unwrap();
    assert!(size > 2, "{body}");
    let (_, page) = get(server.base(), "/v1/audiences/activated/members?limit=2");
    assert_eq!(page["members"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = get(
        server.base(),
        &format!("/v1/audiences/activated/members?limit=1000&cursor={next}"),
    );
    assert_eq!(
        rest["members"].as_array().unwrap().len() as u64,
        size - 2,
        "pages cover the audience once"
    );
    let person = page["members"][0]["person_id"].as_str().unwrap().to_string();
    let (status, d) = get(
        server.base(),
        &format!("/v1/profiles/{person}/decision?surface=welcome_checklist"),
    );
    assert_eq!(status, 200, "{d}");
    assert!(d["audiences"].as_array().unwrap().contains(&json!("activated")), "{d}");
    assert_eq!(get(server.base(), "/v1/profiles/u_x/decision?surface=nope").0, 400);
    assert_eq!(get(server.base(), "/v1/audiences/nope/members").0, 404);
    drop(rx);
    drop(server);

    // Another process, resumed from the 10th transition's cursor: the 11th onwards.
    let server = serve(&store);
    let rx = transitions(format!("{}/v1/triggers", server.base()), Some(first[9].0.clone()));
    for want in &expected[10..] {
        let (_, got) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(&got, want);
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(1_500)).is_err(),
        "nothing more, nothing twice"
    );
}

fn get(base: &str, path: &str) -> (u16, Value) {
    let mut resp = agent(Some(Duration::from_secs(10)))
        .get(&format!("{base}{path}"))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Proves each kind of mistake in a rules file is a clear error naming the rule and the
/// field, and that nothing starts: no store is created.
#[test]
fn a_bad_rules_file_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let good = "audiences:\n  - name: ok\n    version: 1\n    when: {signed_up: true}\n";
    let cases: &[(&str, &str, &[&str])] = &[
        ("not yaml", "audiences: [", &["rules file"]),
        ("unknown field", "audiences:\n  - name: x\n    version: 1\n    when: {signed_up: true}\n    colour: red\n", &["audience `x`", "unknown field `colour`"]),
        ("unknown condition", "audiences:\n  - name: x\n    version: 1\n    when: {all: [{signed_up: true}, {sigend_up: true}]}\n", &["audience `x`", "when.all[1]", "sigend_up"]),
        ("bad duration", "audiences:\n  - name: x\n    version: 1\n    when: {inactive_for: 3 weeks}\n", &["audience `x`", "when.inactive_for", "duration"]),
        ("zero duration", "audiences:\n  - name: x\n    version: 1\n    when: {inactive_for: 0s}\n", &["when.inactive_for", "more than 0"]),
        ("duplicate name", &format!("{good}  - name: ok\n    version: 2\n    when: {{completed: true}}\n"), &["audiences[1]", "a second audience named `ok`"]),
        ("bad name", "audiences:\n  - name: Has Space\n    version: 1\n    when: {completed: true}\n", &["field name", "a-z"]),
        ("version 0", "audiences:\n  - name: x\n    version: 0\n    when: {completed: true}\n", &["field version", "1 or more"]),
        ("missing version", "audiences:\n  - name: x\n    when: {completed: true}\n", &["audience `x`", "version"]),
        ("not a funnel step", "audiences:\n  - name: x\n    version: 1\n    when: {current_step: profiel}\n", &["when.current_step", "`profiel` is not a funnel step"]),
        ("empty all", "audiences:\n  - name: x\n    version: 1\n    when: {all: []}\n", &["when.all", "empty list"]),
        ("unknown counter", "audiences:\n  - name: x\n    version: 1\n    when: {counter: {name: logins, at_least: 1}}\n", &["when.counter.name", "logins"]),
        ("bounds upside down", "audiences:\n  - name: x\n    version: 1\n    when: {counter: {name: clicks, at_least: 5, at_most: 1}}\n", &["when.counter", "above at_most"]),
        ("membership in an audience", "audiences:\n  - name: x\n    version: 1\n    when: {in_audience: x}\n", &["when.in_audience", "only decision actions"]),
        ("unknown audience in an action", &format!("{good}surfaces:\n  - name: s\n    actions:\n      - action: a\n        when: {{in_audience: nope}}\n"), &["surface `s`", "actions[0].when.in_audience", "no audience named `nope`"]),
        ("weight 0", &format!("{good}surfaces:\n  - name: s\n    experiment: {{name: e, variants: [{{name: a, weight: 0}}]}}\n    actions: [{{action: a}}]\n"), &["surface `s`", "experiment.variants[0].weight"]),
        ("unknown variant", &format!("{good}surfaces:\n  - name: s\n    experiment: {{name: e, variants: [{{name: a, weight: 1}}]}}\n    actions: [{{action: a, variants: [b]}}]\n"), &["actions[0].variants", "unknown variant `b`"]),
        ("no actions", &format!("{good}surfaces:\n  - name: s\n    actions: []\n"), &["surface `s`", "at least one action"]),
        ("empty file", "# nothing yet\n", &["it is empty", "audiences: []"]),
        ("two actions answering with one rule", &format!("{good}surfaces:\n  - name: s\n    actions:\n      - {{action: a, rule: r}}\n      - {{action: b, rule: r}}\n"), &["surface `s`", "actions[1].rule", "rule `r`"]),
        ("trait without a value", "audiences:\n  - name: x\n    version: 1\n    when: {trait: {name: plan}}\n", &["when.trait", "equals or in"]),
    ];
    for (what, text, expect) in cases {
        let rules = dir.path().join("rules.yaml");
        std::fs::write(&rules, text).unwrap();
        let err = fails(&[
            "run",
            "--generate",
            "--users",
            "5",
            "--store",
            store.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ]);
        for e in *expect {
            assert!(err.contains(e), "{what}: expected `{e}` in: {err}");
        }
        assert!(err.contains("rules.yaml"), "{what}: names the file: {err}");
        assert!(!store.exists(), "{what}: no store was created");
    }
    for (flag, expect) in [("5", "there is no partition 5"), ("0,1", "names every partition")] {
        let err = fails(&[
            "run",
            "--generate",
            "--users",
            "5",
            "--partitions",
            "2",
            "--store",
            store.to_str().unwrap(),
            "--watermark-ignore",
            flag,
        ]);
        assert!(err.contains(expect), "--watermark-ignore {flag}: {err}");
        assert!(!store.exists(), "--watermark-ignore {flag}: no store was created");
    }
    let missing = fails(&[
        "run",
        "--generate",
        "--store",
        store.to_str().unwrap(),
        "--rules",
        "/nonexistent/rules.yaml",
    ]);
    assert!(
        missing.contains("cannot read rules file /nonexistent/rules.yaml"),
        "{missing}"
    );
}
