//! `onramp produce`: events into the cluster's topic, keyed and partitioned like an
//! embedded run.

use std::io::IsTerminal;

use clap::Args;
use onramp::cluster;
use onramp::cluster::produce::EventFormat;
use onramp::partition::KeyBy;

use super::{ClusterArgs, InputArgs};

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    input: InputArgs,
    /// Producer batch size in bytes (1 KiB to 16 MiB); each request to the SPU holds one
    /// batch. Larger batches mean fewer requests and larger fetches for the consumer.
    #[arg(long, default_value_t = cluster::produce::DEFAULT_BATCH_BYTES,
          value_parser = parse_batch_bytes)]
    batch_bytes: usize,
    /// How long a batch may wait to fill up (e.g. 10ms, 1s).
    #[arg(long, value_parser = super::parse_duration, default_value = cluster::produce::DEFAULT_LINGER)]
    linger: std::time::Duration,
    /// Retries of a failed record, with exponential backoff (100 ms doubling to 5 s).
    #[arg(long, default_value_t = cluster::produce::DEFAULT_RETRIES)]
    retries: u32,
    /// Longest line sent, bytes; a longer line is not sent (logged with its line number and
    /// counted as failed), as an embedded run rejects it `too_large`.
    #[arg(long, default_value_t = onramp::source::DEFAULT_MAX_LINE_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    max_line_bytes: u64,
    /// What records are keyed (and so partitioned) by: a user's identity (default), or the
    /// event id as some other producers do (each user spread over the partitions).
    #[arg(long, value_enum, default_value_t = KeyBy::Identity)]
    key: KeyBy,
    /// How events are written: JSON lines as they are, or Protobuf records (the envelope in
    /// schemas/proto/onramp/v1/event.proto, after the bytes 0x00 0x01). Lines that do not
    /// read as events are sent as they are in either case. Both forms may share a topic.
    #[arg(long, value_enum, default_value_t = EventFormat::Json)]
    format: EventFormat,
    /// With --format protobuf: the `max_event_bytes` the consumer's validate applies (its
    /// `--param validate.max_event_bytes`). A line whose JSON or Protobuf form is larger is
    /// sent as JSON, so it is accepted or rejected `too_large` as the JSON line would be.
    #[arg(long, default_value_t = onramp_logic::validate::DEFAULT_MAX_EVENT_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=onramp_logic::validate::MAX_MAX_EVENT_BYTES as u64))]
    max_event_bytes: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let cfg = cluster::produce::ProduceConfig {
        target: args.cluster.target(),
        topic: args.cluster.topic.clone(),
        input: args.input.input("give --input FILE (or - for stdin) or --generate")?,
        batch_bytes: args.batch_bytes,
        linger: args.linger,
        retries: args.retries,
        progress_bar: std::io::stderr().is_terminal(),
        max_line_bytes: args.max_line_bytes as usize,
        key_by: args.key,
        format: args.format,
        max_event_bytes: args.max_event_bytes as usize,
    };
    let shutdown = super::shutdown();
    let report = onramp::runtime()?.block_on(cluster::produce::produce(&cfg, &shutdown))?;
    super::print_report(args.json, &report, || report.render())?;
    cluster::produce::check(&report)
}

fn parse_batch_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("`{s}` is not a whole number of bytes: {e}"))?;
    let max = cluster::produce::MAX_BATCH_BYTES;
    if !(1024..=max).contains(&n) {
        return Err(format!("{n} is outside 1024 to {max} bytes"));
    }
    Ok(n)
}
