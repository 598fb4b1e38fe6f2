//! `onramp produce`: event lines (file, stdin or the generator) into the events topic.
//!
//! The record key is the user id, else the anonymous id ([`crate::partition::record_key`]; `--key event-id` keys by event id instead); records go to
//! partitions through [`crate::partition::Partitioner`] — the Fluvio producer's own
//! siphash/round-robin rule, pinned here so a cluster run and an embedded run over the same
//! lines put every record in the same partition at the same offset.
//!
//! Errors are never dropped silently: the producer retries a failed batch with exponential
//! backoff (`--retries`); a `send` that fails is retried by onramp with backoff too; a
//! record that still fails is logged with its line number and reason, counted as failed,
//! and makes the command exit non-zero.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use fluvio::{
    DeliverySemantic, Partitioner as FluvioPartitioner, PartitionerConfig, ProduceOutput, RetryPolicy, RetryStrategy,
    TopicProducerConfigBuilder,
};

use super::{existing_topic_partitions, ClusterTarget};
use crate::partition::Partitioner;
use crate::run::Progress;
use crate::shutdown::Shutdown;
use crate::source::{Input, Line, Lines};

/// Default producer batch size, bytes.
pub const DEFAULT_BATCH_BYTES: usize = 64 * 1024;
/// Largest `--batch-bytes`.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Room for one record above a full batch in a produce request (see `produce`).
const RECORD_HEADROOM_BYTES: usize = 1 << 20;
/// Default `--linger`: how long a batch may wait to fill up (as the flag is written).
pub const DEFAULT_LINGER: &str = "10ms";
/// Default retries of a failed record.
pub const DEFAULT_RETRIES: u32 = 8;
/// Records in flight before onramp waits for the oldest acknowledgement.
const MAX_IN_FLIGHT: usize = 20_000;

/// What `onramp produce` sends where.
#[derive(Debug, Clone)]
pub struct ProduceConfig {
    /// The cluster.
    pub target: ClusterTarget,
    /// Topic.
    pub topic: String,
    /// Event lines.
    pub input: Input,
    /// Producer batch size, bytes.
    pub batch_bytes: usize,
    /// How long a batch waits to fill up.
    pub linger: Duration,
    /// Retries per record (producer retries of its batch, then onramp's own resends).
    pub retries: u32,
    /// Show a progress bar.
    pub progress_bar: bool,
    /// Longest line sent; longer lines are not sent (counted as failed and too large).
    pub max_line_bytes: usize,
    /// What records are keyed by.
    pub key_by: crate::partition::KeyBy,
    /// How events are written to the topic.
    pub format: EventFormat,
    /// The `max_event_bytes` validate applies: with `--format protobuf`, a line whose JSON
    /// or Protobuf form is larger is sent as JSON (see [`EventFormat::record`]).
    pub max_event_bytes: usize,
}

/// How `onramp produce` writes events to the topic. Both forms can share a topic; the
/// modules tell them apart by the first byte (`onramp_schemas::proto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// Each line as it is.
    #[default]
    Json,
    /// Each line that reads as an event, as a Protobuf record (the 0x00 0x01 marker and the
    /// encoded envelope, `schemas/proto/onramp/v1/event.proto`); a line that does not read
    /// as an event (malformed JSON, a schema violation) is sent as it is, so it is still
    /// rejected with its reason. So is a line whose JSON or Protobuf form is over the size
    /// limit: validate's `too_large` counts the record's bytes, and the two forms differ in
    /// size (a large unknown field is dropped by the conversion; a number trait costs more
    /// as Protobuf), so converting it could change whether it is accepted.
    Protobuf,
}

impl EventFormat {
    /// The record for one input line; `true` when it was converted to Protobuf. A line
    /// is converted only when both its forms are within `max_event_bytes`, so the record
    /// gets the verdict the JSON line would.
    pub fn record(self, line: Vec<u8>, max_event_bytes: usize) -> (Vec<u8>, bool) {
        if self == EventFormat::Json || line.len() > max_event_bytes {
            return (line, false);
        }
        match onramp_logic::validate::parse_event(&line) {
            Ok(event) => {
                let record = onramp_schemas::proto::encode_record(&event);
                if record.len() > max_event_bytes {
                    (line, false)
                } else {
                    (record, true)
                }
            }
            Err(_) => (line, false),
        }
    }
}

/// What `onramp produce` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProduceReport {
    /// Lines read from the input.
    pub read: u64,
    /// Records acknowledged by the cluster.
    pub sent: u64,
    /// Records that failed after every retry.
    pub failed: u64,
    /// Sends retried by onramp.
    pub retried: u64,
    /// Lines over `max_line_bytes`, not sent (also counted in `failed`).
    pub too_large: u64,
    /// Lines sent as Protobuf records (`--format protobuf`).
    pub protobuf: u64,
    /// With `--format protobuf`, lines sent as they are: they do not read as events, or
    /// one of their forms is over `max_event_bytes`.
    pub left_as_json: u64,
    /// Records per partition.
    pub per_partition: Vec<u64>,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

impl ProduceReport {
    /// A human-readable report.
    pub fn render(&self) -> String {
        let secs = self.elapsed_ms as f64 / 1000.0;
        let mut s = format!("lines read          {}\n", self.read);
        s += &format!("records sent        {}\n", self.sent);
        s += &format!("records failed      {}\n", self.failed);
        if self.retried > 0 {
            s += &format!("sends retried       {}\n", self.retried);
        }
        if self.too_large > 0 {
            s += &format!(
                "  too large         {} (over --max-line-bytes, not sent)\n",
                self.too_large
            );
        }
        if self.protobuf > 0 || self.left_as_json > 0 {
            s += &format!("  as Protobuf       {}\n", self.protobuf);
            s += &format!(
                "  left as JSON      {} (not an event, or over --max-event-bytes in one of its forms: sent as it is)\n",
                self.left_as_json
            );
        }
        for (p, n) in self.per_partition.iter().enumerate() {
            s += &format!("  partition {p:<8}{n}\n");
        }
        s += &format!(
            "time                {secs:.2}s ({:.0} records/s)\n",
            self.sent as f64 / secs.max(0.001)
        );
        s
    }
}

/// The Fluvio producer's partitioner interface over onramp's pinned partitioner.
struct PinnedPartitioner(Mutex<Partitioner>);

impl FluvioPartitioner for PinnedPartitioner {
    fn partition(&self, config: &PartitionerConfig, key: Option<&[u8]>, _value: &[u8]) -> u32 {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if p.partitions() != config.partition_count() {
            *p = Partitioner::new(config.partition_count());
        }
        p.partition(key)
    }
}

/// Sends every line; see the module docs.
pub async fn produce(cfg: &ProduceConfig, shutdown: &Shutdown) -> anyhow::Result<ProduceReport> {
    // Opening checks a file is JSON lines, from the same open file (a pipe loses nothing).
    let mut lines = Lines::open(&cfg.input, cfg.max_line_bytes)?;
    let started = Instant::now();
    let fluvio = cfg.target.connect().await?;
    let admin = fluvio.admin().await;
    let partitions = existing_topic_partitions(&admin, &cfg.topic).await?;

    let retry = RetryPolicy {
        max_retries: cfg.retries as usize,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        timeout: Duration::from_secs(120),
        strategy: RetryStrategy::ExponentialBackoff,
    };
    let producer_config = TopicProducerConfigBuilder::default()
        .batch_size(cfg.batch_bytes)
        // The client refuses a record that would take the batch it joins past the max
        // request size (RecordTooLarge, not "start a new batch"), so a request must hold a
        // full batch plus the largest record: 1 MiB, the client's own default request size.
        .max_request_size(cfg.batch_bytes + RECORD_HEADROOM_BYTES)
        .linger(cfg.linger)
        .partitioner(Arc::new(PinnedPartitioner(Mutex::new(Partitioner::new(partitions)))))
        .delivery_semantic(DeliverySemantic::AtLeastOnce(retry))
        .build()
        .map_err(|e| anyhow!("producer config: {e}"))?;
    let producer = fluvio
        .topic_producer_with_config(cfg.topic.clone(), producer_config)
        .await
        .map_err(|e| anyhow!("opening a producer for `{}`: {e:#}", cfg.topic))?;

    let mut report = ProduceReport {
        per_partition: vec![0; partitions as usize],
        ..ProduceReport::default()
    };
    let progress = Progress::new(cfg.progress_bar);
    let mut in_flight: VecDeque<(u64, ProduceOutput)> = VecDeque::new();
    for line in &mut lines {
        if shutdown.is_requested() {
            tracing::warn!(
                read = report.read,
                "signal received: flushing what was sent and stopping"
            );
            break;
        }
        report.read += 1;
        let line_no = report.read;
        let line = match line? {
            Line::Whole(line) => line,
            Line::Oversize(o) => {
                report.failed += 1;
                report.too_large += 1;
                tracing::error!(
                    line = line_no,
                    bytes = o.bytes,
                    sha256 = %o.sha256,
                    "line over --max-line-bytes not sent (an embedded run rejects it as too_large)"
                );
                continue;
            }
        };
        let key = cfg.key_by.key(&line);
        let (line, converted) = cfg.format.record(line, cfg.max_event_bytes);
        match (cfg.format, converted) {
            (EventFormat::Json, _) => {}
            (EventFormat::Protobuf, true) => report.protobuf += 1,
            (EventFormat::Protobuf, false) => report.left_as_json += 1,
        }
        let output = send_with_retry(&producer, key, line, line_no, cfg.retries, &mut report).await;
        if let Some(output) = output {
            in_flight.push_back((line_no, output));
        }
        while in_flight.len() > MAX_IN_FLIGHT {
            if let Some((n, out)) = in_flight.pop_front() {
                settle(n, out, &mut report).await;
            }
        }
        if report.read.is_multiple_of(1000) {
            progress.tick(|| {
                format!(
                    "{} read, {} acknowledged, {} failed",
                    report.read, report.sent, report.failed
                )
            });
        }
    }
    producer
        .flush()
        .await
        .map_err(|e| anyhow!("flushing the producer: {e:#}"))?;
    while let Some((n, out)) = in_flight.pop_front() {
        settle(n, out, &mut report).await;
    }
    progress.finish();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Queues one record, retrying a failed `send` with exponential backoff.
async fn send_with_retry(
    producer: &fluvio::TopicProducerPool,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    line_no: u64,
    retries: u32,
    report: &mut ProduceReport,
) -> Option<ProduceOutput> {
    let mut delay = Duration::from_millis(100);
    for attempt in 0..=retries {
        let sent = match &key {
            Some(k) => producer.send(k.clone(), value.clone()).await,
            None => producer.send(fluvio::RecordKey::NULL, value.clone()).await,
        };
        match sent {
            Ok(output) => return Some(output),
            Err(e) if attempt < retries => {
                report.retried += 1;
                tracing::warn!(
                    line = line_no,
                    attempt = attempt + 1,
                    "send failed, retrying in {delay:?}: {e:#}"
                );
                producer.clear_errors().await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                report.failed += 1;
                tracing::error!(line = line_no, "record not sent after {retries} retries: {e:#}");
                producer.clear_errors().await;
            }
        }
    }
    None
}

/// Waits for one record's acknowledgement and counts it.
async fn settle(line_no: u64, output: ProduceOutput, report: &mut ProduceReport) {
    match output.wait().await {
        Ok(meta) => {
            report.sent += 1;
            if let Some(n) = report.per_partition.get_mut(meta.partition_id() as usize) {
                *n += 1;
            }
        }
        Err(e) => {
            report.failed += 1;
            tracing::error!(line = line_no, "record failed after the producer's retries: {e:#}");
        }
    }
}

/// Fails when any record failed (the report says how many).
pub fn check(report: &ProduceReport) -> anyhow::Result<()> {
    if report.failed > 0 {
        bail!(
            "{} of {} records were not acknowledged (see the errors above, each with its line number)",
            report.failed,
            report.read
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EventFormat;
    use onramp_logic::validate::{validate, ValidateConfig, DEFAULT_MAX_EVENT_BYTES};

    /// Accepted, or the reject reason.
    fn verdict(record: &[u8]) -> String {
        match validate(record, None, &ValidateConfig::default()) {
            Ok(_) => "accepted".into(),
            Err(r) => format!("{:?}", r.reason),
        }
    }

    /// An `identify` of 64 small number traits, padded to `len` bytes of JSON: each trait
    /// costs more as Protobuf than as JSON, so near the limit only the Protobuf form is over.
    fn identify_of_len(len: usize) -> Vec<u8> {
        let traits: Vec<String> = (0..64).map(|i| format!("\"k{i:02}\":1")).collect();
        let head = format!(
            "{{\"event_id\":\"e_traits\",\"type\":\"identify\",\"user_id\":\"u_t\",\"timestamp\":\"2026-11-02T10:00:00Z\",\"properties\":{{\"traits\":{{{}}}}},\"context\":{{\"user_agent\":\"",
            traits.join(",")
        );
        let tail = "\"}}";
        let pad = "y".repeat(len - head.len() - tail.len());
        format!("{head}{pad}{tail}").into_bytes()
    }

    #[test]
    fn protobuf_conversion_never_changes_the_verdict_on_size() {
        let max = DEFAULT_MAX_EVENT_BYTES;
        let ordinary = br#"{"event_id":"e1","type":"click","user_id":"u1","timestamp":"2026-11-02T10:00:00Z","properties":{"target":"b"}}"#.to_vec();
        // Over the limit as JSON only: the conversion drops the unknown field.
        let unknown_big = format!(
            r#"{{"event_id":"e2","type":"click","user_id":"u1","timestamp":"2026-11-02T10:00:00Z","properties":{{"target":"b"}},"extra":"{}"}}"#,
            "x".repeat(40_000)
        )
        .into_bytes();
        // Within the limit as JSON, over it as Protobuf.
        let traits = identify_of_len(max - 3);
        let (as_proto, converted) = EventFormat::Protobuf.record(traits.clone(), usize::MAX);
        assert!(
            converted && as_proto.len() > max,
            "the case must be over as Protobuf only: {}",
            as_proto.len()
        );

        let cases = [
            (ordinary, true, "accepted"),
            (unknown_big, false, "TooLarge"),
            (traits, false, "accepted"),
        ];
        for (line, converts, expected) in cases {
            let json = verdict(&line);
            assert_eq!(json, expected);
            let (record, converted) = EventFormat::Protobuf.record(line.clone(), max);
            assert_eq!(converted, converts, "{json}");
            assert_eq!(verdict(&record), json, "the Protobuf record's verdict differs");
            assert_eq!(EventFormat::Json.record(line.clone(), max), (line, false));
        }
    }
}
