//! A local Fluvio cluster for the cluster test (`tests/tests/cluster.rs`) and benchmark
//! (`tests/benches/cluster.rs`): whether they can run at all, the cluster and the topics
//! they create, and what a consumer following a topic reports on `/metrics`.
//!
//! Both run only with `FLUVIO_E2E=1` and the `fluvio` CLI on PATH; otherwise they print
//! that they were skipped (CI has no cluster).

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

/// What a cluster test or benchmark needs besides `FLUVIO_E2E=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The `fluvio` CLI: [`LocalCluster::ensure`] starts a cluster when none answers.
    Cli,
    /// A cluster that answers already.
    RunningCluster,
}

/// Why a cluster test or benchmark needing `needs` cannot run here, if it cannot.
pub fn skip_reason(needs: Needs) -> Option<String> {
    if std::env::var("FLUVIO_E2E").ok().as_deref() != Some("1") {
        return Some("FLUVIO_E2E is not 1".into());
    }
    let cli = Command::new("fluvio").arg("version").output();
    if !cli.is_ok_and(|o| o.status.success()) {
        return Some("the `fluvio` CLI is not on PATH".into());
    }
    if needs == Needs::RunningCluster && !answers() {
        return Some("no Fluvio cluster answers (`fluvio cluster start --local`)".into());
    }
    None
}

/// Whether `what` (e.g. "cluster e2e tests") must be skipped here; if so, says why on
/// stdout and stderr.
pub fn skipped(what: &str, needs: Needs) -> bool {
    let Some(why) = skip_reason(needs) else {
        return false;
    };
    let how = match needs {
        Needs::Cli => "run with FLUVIO_E2E=1 and fluvio on PATH",
        Needs::RunningCluster => "run with FLUVIO_E2E=1, fluvio on PATH and a running cluster",
    };
    eprintln!("{what} skipped: {why} ({how})");
    println!("{what} skipped: {why}");
    true
}

/// Runs `fluvio ARGS` to completion.
pub fn fluvio(args: &[&str]) -> Output {
    Command::new("fluvio").args(args).output().expect("fluvio runs")
}

/// Whether a cluster answers.
fn answers() -> bool {
    fluvio(&["topic", "list"]).status.success()
}

/// The cluster a test or benchmark uses, and the topics it made there: deleted on drop,
/// with the cluster itself shut down if it was started here.
pub struct LocalCluster {
    started: bool,
    prefix: String,
    topics: Vec<String>,
}

impl LocalCluster {
    /// The cluster that answers, never starting one; topics are named `PREFIX-NAME-PID`.
    pub fn attach(prefix: &str) -> LocalCluster {
        LocalCluster {
            started: false,
            prefix: prefix.to_string(),
            topics: Vec::new(),
        }
    }

    /// The running cluster, else a local one started now (`fluvio cluster resume`, else
    /// `fluvio cluster start --local`).
    pub fn ensure(prefix: &str) -> LocalCluster {
        let mut cluster = LocalCluster::attach(prefix);
        if fluvio(&["cluster", "status"]).status.success() && answers() {
            eprintln!("cluster: using the running cluster");
            return cluster;
        }
        eprintln!("cluster: none running; starting a local one");
        if !fluvio(&["cluster", "resume"]).status.success() {
            let out = fluvio(&["cluster", "start", "--local"]);
            assert!(
                out.status.success(),
                "fluvio cluster start --local failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.started = true;
        crate::wait_until(
            Duration::from_secs(60),
            Duration::from_millis(250),
            "the cluster to answer",
            answers,
        );
        cluster
    }

    /// A topic name of this run (`PREFIX-NAME-PID`), deleted at the end; the caller
    /// creates the topic.
    pub fn topic(&mut self, name: &str) -> String {
        let topic = format!("{}-{name}-{}", self.prefix, std::process::id());
        self.topics.push(topic.clone());
        topic
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for t in &self.topics {
            let _ = fluvio(&["topic", "delete", t]);
        }
        if self.started {
            let _ = fluvio(&["cluster", "shutdown"]);
        }
    }
}

/// The `/metrics` text of the API at `base` (`http://ADDR`); empty when it does not answer.
pub fn metrics(base: &str) -> String {
    let agent = crate::http_agent(Some(Duration::from_secs(2)));
    match agent.get(&format!("{base}/metrics")).call() {
        Ok(mut resp) => resp.body_mut().read_to_string().unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The values of the series `name{partition="N",…}` by partition, from `/metrics` text.
fn by_partition<T: std::str::FromStr>(metrics: &str, name: &str) -> BTreeMap<u32, T> {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .filter_map(|l| {
            let partition = l.split("partition=\"").nth(1)?.split('"').next()?.parse().ok()?;
            Some((partition, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The committed offset of each partition (`onramp_checkpoint_offset`) the consumer at
/// `base` reports; empty when it does not answer or has committed nothing.
pub fn checkpoints(base: &str) -> BTreeMap<u32, i64> {
    by_partition(&metrics(base), "onramp_checkpoint_offset")
}

/// The lag of each partition in records (`onramp_partition_lag_records`) the consumer at
/// `base` reports; empty when it does not answer.
pub fn partition_lags(base: &str) -> BTreeMap<u32, u64> {
    by_partition(&metrics(base), "onramp_partition_lag_records")
}

/// `onramp run --source fluvio --topic TOPIC --store STORE --stop-at-end --json EXTRA…`:
/// a backfill run of the cluster e2e tests, its summary on stdout.
pub fn run_args<'a>(topic: &'a str, store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--source",
        "fluvio",
        "--topic",
        topic,
        "--store",
        store,
        "--stop-at-end",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}
