//! Prometheus metrics of a run, rendered as text for `GET /metrics`.
//!
//! Names follow the Prometheus conventions: snake_case, counters end in `_total`, units in the name, labels
//! with few values (outcome, reason, partition — never a user id). Records dropped on
//! purpose (rejects, duplicates) are counted apart from failures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the `onramp_batch_apply_seconds` buckets.
pub const APPLY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Upper bounds of the `onramp_event_lag_seconds` buckets.
pub const LAG_BUCKETS: [f64; 10] = [1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 604800.0];
/// Upper bounds of the `onramp_decision_seconds` buckets.
pub const DECISION_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, bounds: &[f64]) {
        for (i, b) in bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    events: BTreeMap<(String, u32), u64>,
    rejects: BTreeMap<String, u64>,
    checkpoints: BTreeMap<u32, i64>,
    batch_apply: Histogram,
    event_lag: Histogram,
    partition_lag: BTreeMap<u32, u64>,
    refused: BTreeMap<&'static str, u64>,
    decision: Histogram,
}

/// The run's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    duplicates: AtomicU64,
    fold_evictions: AtomicU64,
    link_conflicts: AtomicU64,
    updates_applied: AtomicU64,
    stream_clients: AtomicU64,
    streams_dropped: AtomicU64,
    smartmodule_errors: AtomicU64,
    reconnects: AtomicU64,
    api_connections: AtomicU64,
    api_accept_errors: AtomicU64,
    api_connections_shed: AtomicU64,
    entered: AtomicU64,
    exited: AtomicU64,
}

/// One committed batch, as the metrics see it.
#[derive(Debug, Clone, Default)]
pub struct BatchFigures {
    /// Partition.
    pub partition: u32,
    /// New checkpoint.
    pub checkpoint: i64,
    /// Accepted records.
    pub accepted: u64,
    /// Rejects by reason.
    pub rejects: BTreeMap<String, u64>,
    /// Duplicates.
    pub duplicates: u64,
    /// Updates applied.
    pub applied: u64,
    /// Live users the profile aggregate evicted to stay within `max_users`.
    pub fold_evictions: u64,
    /// Records dropped because they belong to an erased id.
    pub suppressed: u64,
    /// Link conflicts the batch added.
    pub link_conflicts: u64,
    /// Seconds the store commit took.
    pub apply_seconds: f64,
    /// Apply time − event time of each applied update, seconds.
    pub event_lags: Vec<f64>,
}

impl Metrics {
    /// Audience transitions a commit wrote.
    pub fn transitions(&self, entered: u64, exited: u64) {
        self.entered.fetch_add(entered, Ordering::Relaxed);
        self.exited.fetch_add(exited, Ordering::Relaxed);
    }

    /// A decision was answered in `seconds`.
    pub fn decision(&self, seconds: f64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.decision.observe(&DECISION_BUCKETS, seconds);
    }

    /// Records a committed batch.
    pub fn batch(&self, b: &BatchFigures) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.events.entry(("accepted".into(), b.partition)).or_default() += b.accepted;
        let rejected: u64 = b.rejects.values().sum();
        *inner.events.entry(("rejected".into(), b.partition)).or_default() += rejected;
        *inner.events.entry(("suppressed".into(), b.partition)).or_default() += b.suppressed;
        for (reason, n) in &b.rejects {
            *inner.rejects.entry(reason.clone()).or_default() += n;
        }
        inner.checkpoints.insert(b.partition, b.checkpoint);
        inner.batch_apply.observe(&APPLY_BUCKETS, b.apply_seconds);
        for lag in &b.event_lags {
            inner.event_lag.observe(&LAG_BUCKETS, *lag);
        }
        self.duplicates.fetch_add(b.duplicates, Ordering::Relaxed);
        self.fold_evictions.fetch_add(b.fold_evictions, Ordering::Relaxed);
        self.link_conflicts.fetch_add(b.link_conflicts, Ordering::Relaxed);
        self.updates_applied.fetch_add(b.applied, Ordering::Relaxed);
    }

    /// An update-stream client connected (`+1`) or left (`-1`).
    pub fn stream_client(&self, connected: bool) {
        if connected {
            self.stream_clients.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stream_clients.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A SmartModule failed on a record in the cluster (the run stops).
    pub fn smartmodule_error(&self) {
        self.smartmodule_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A partition's cluster streams were lost and are being reopened.
    pub fn reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// An update-stream client was dropped for being too slow.
    pub fn stream_dropped(&self) {
        self.streams_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Records in `partition` after its committed checkpoint, as last reported.
    pub fn partition_lag(&self, partition: u32, records: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.partition_lag.insert(partition, records);
    }

    /// The read API refused a request (`reason`: a fixed word such as `busy`,
    /// `host_not_allowed`, `unauthorized`).
    pub fn request_refused(&self, reason: &'static str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.refused.entry(reason).or_default() += 1;
    }

    /// A read-API connection opened (`true`) or closed (`false`).
    pub fn api_connection(&self, opened: bool) {
        if opened {
            self.api_connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.api_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Accepting a read-API connection failed (e.g. out of file descriptors).
    pub fn accept_error(&self) {
        self.api_accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection that had sent no request was closed to make room for a new one.
    pub fn connection_shed(&self) {
        self.api_connections_shed.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store_size_bytes: Option<u64>) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        // A metric with one unlabelled value.
        let single = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
            head(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        };
        head(
            &mut out,
            "onramp_audience_transitions_total",
            "counter",
            "Audience transitions written to the outbox by this process, by kind (entered, exited).",
        );
        let _ = writeln!(
            out,
            "onramp_audience_transitions_total{{kind=\"entered\"}} {}",
            self.entered.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "onramp_audience_transitions_total{{kind=\"exited\"}} {}",
            self.exited.load(Ordering::Relaxed)
        );
        head(
            &mut out,
            "onramp_decision_seconds",
            "histogram",
            "Time to answer GET /v1/profiles/{id}/decision, seconds.",
        );
        inner
            .decision
            .render(&mut out, "onramp_decision_seconds", &DECISION_BUCKETS);
        head(
            &mut out,
            "onramp_events_total",
            "counter",
            "Records processed, by outcome (accepted, rejected, or suppressed: an erased id's) and partition.",
        );
        for ((outcome, p), n) in &inner.events {
            let _ = writeln!(
                out,
                "onramp_events_total{{outcome=\"{outcome}\",partition=\"{p}\"}} {n}"
            );
        }
        head(
            &mut out,
            "onramp_rejects_total",
            "counter",
            "Records rejected, by reason (by validate; too_large lines at the source; timestamp_out_of_range also for events the fold quarantined as too far ahead).",
        );
        for (reason, n) in &inner.rejects {
            let _ = writeln!(out, "onramp_rejects_total{{reason=\"{reason}\"}} {n}");
        }
        single(
            &mut out,
            "onramp_duplicates_total",
            "counter",
            "Events dropped by the fold as duplicates.",
            self.duplicates.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_fold_evictions_total",
            "counter",
            "Live users the profile aggregate evicted (least recently active first) to stay within its max_users; each loses its session and dedup window.",
            self.fold_evictions.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_link_conflicts_total",
            "counter",
            "Claims on an anonymous id that another user had already claimed (the earliest claim keeps owning it).",
            self.link_conflicts.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_updates_applied_total",
            "counter",
            "Profile updates applied to the store.",
            self.updates_applied.load(Ordering::Relaxed),
        );
        head(
            &mut out,
            "onramp_batch_apply_seconds",
            "histogram",
            "Time to commit one batch to the store.",
        );
        inner
            .batch_apply
            .render(&mut out, "onramp_batch_apply_seconds", &APPLY_BUCKETS);
        head(
            &mut out,
            "onramp_event_lag_seconds",
            "histogram",
            "Apply time minus event time of applied updates.",
        );
        inner
            .event_lag
            .render(&mut out, "onramp_event_lag_seconds", &LAG_BUCKETS);
        head(
            &mut out,
            "onramp_checkpoint_offset",
            "gauge",
            "Last committed offset, by partition.",
        );
        for (p, o) in &inner.checkpoints {
            let _ = writeln!(out, "onramp_checkpoint_offset{{partition=\"{p}\"}} {o}");
        }
        single(
            &mut out,
            "onramp_update_stream_clients",
            "gauge",
            "Connected /v1/updates clients.",
            self.stream_clients.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_update_stream_dropped_total",
            "counter",
            "Update-stream clients dropped for being slow.",
            self.streams_dropped.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_smartmodule_errors_total",
            "counter",
            "SmartModule runtime errors in the cluster (each logged with its offset; the run stops).",
            self.smartmodule_errors.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_stream_reconnects_total",
            "counter",
            "Times a partition's cluster streams were reopened: lost, stalled (reopened with a larger max_bytes) or unable to replay a re-fed record.",
            self.reconnects.load(Ordering::Relaxed),
        );
        head(
            &mut out,
            "onramp_partition_lag_records",
            "gauge",
            "Records in the topic after the committed checkpoint, by partition (cluster source).",
        );
        for (p, n) in &inner.partition_lag {
            let _ = writeln!(out, "onramp_partition_lag_records{{partition=\"{p}\"}} {n}");
        }
        head(
            &mut out,
            "onramp_api_requests_refused_total",
            "counter",
            "Read-API requests refused, by reason.",
        );
        for (reason, n) in &inner.refused {
            let _ = writeln!(out, "onramp_api_requests_refused_total{{reason=\"{reason}\"}} {n}");
        }
        single(
            &mut out,
            "onramp_api_connections",
            "gauge",
            "Open read-API connections.",
            self.api_connections.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_api_accept_errors_total",
            "counter",
            "Failures to accept a read-API connection (such as running out of file descriptors).",
            self.api_accept_errors.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "onramp_api_connections_shed_total",
            "counter",
            "Connections closed, oldest first, because the connection cap was reached while they had sent no request.",
            self.api_connections_shed.load(Ordering::Relaxed),
        );
        if let Some(bytes) = store_size_bytes {
            head(
                &mut out,
                "onramp_store_size_bytes",
                "gauge",
                "Bytes the sled store takes on disk.",
            );
            let _ = writeln!(out, "onramp_store_size_bytes {bytes}");
        }
        out
    }
}

/// Hot keys shown per partition on `/metrics` (`onramp stats` shows the same).
pub const HOT_KEYS_SHOWN: usize = 5;

/// The skew section of `/metrics`, read from the store ([`crate::store::Store::skew`]): events
/// per partition, and each partition's heaviest keys, named by `pseudonym`
/// ([`crate::store::Store::key_pseudonyms`]), with their estimated events.
pub fn render_skew(
    skew: &BTreeMap<u32, crate::store::skew::PartitionSkew>,
    pseudonym: impl Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP onramp_partition_events_total Records per partition that reached the aggregate or were rejected (committed; records of an id already erased when they arrived are not counted, those before its erasure stay).\n# TYPE onramp_partition_events_total counter"
    );
    for (p, s) in skew {
        let _ = writeln!(out, "onramp_partition_events_total{{partition=\"{p}\"}} {}", s.events);
    }
    let _ = writeln!(
        out,
        "# HELP onramp_hot_key_events Estimated events of each partition's heaviest keys, top {HOT_KEYS_SHOWN}, by pseudonym (onramp stats --json maps them to ids); a space-saving sketch of {} keys, at most the key's overcount too high.\n# TYPE onramp_hot_key_events gauge",
        crate::store::skew::HOT_KEYS_KEPT
    );
    for (p, s) in skew {
        for (rank, k) in s.top(HOT_KEYS_SHOWN).iter().enumerate() {
            let _ = writeln!(
                out,
                "onramp_hot_key_events{{partition=\"{p}\",rank=\"{}\",key=\"{}\"}} {}",
                rank + 1,
                label_value(&pseudonym(&k.key)),
                k.events
            );
        }
    }
    out
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
