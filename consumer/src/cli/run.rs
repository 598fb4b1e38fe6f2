//! `onramp run`: the pipeline, from the embedded source (file, stdin, generator) or a
//! Fluvio topic, into the store; the read API alongside.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use onramp::api::Hub;
use onramp::chain::ChainParams;
use onramp::cluster;
use onramp::partition::KeyBy;
use onramp::run::embedded::{self, EmbeddedConfig};
use onramp::run::{Durability, Settings, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use onramp::wasm;

use super::{ApiArgs, ClusterArgs, InputArgs, StoreArg};

/// Where `onramp run` reads events from.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// --input or --generate, through the chain in-process.
    Embedded,
    /// The cluster's events topic, through the chain in the SPU.
    Fluvio,
}

#[derive(Args)]
pub struct RunArgs {
    /// embedded: --input/--generate through the chain in-process; fluvio: the cluster's topic, chain in the SPU.
    #[arg(long, value_enum, default_value_t = Source::Embedded)]
    source: Source,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    store: StoreArg,
    /// Partitions (embedded source; default 1): users are hashed to partitions exactly as the
    /// Fluvio producer hashes record keys. With --source fluvio, the topic's partitions.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: Option<u32>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --source fluvio: send the local .wasm with each stream instead of using the loaded modules.
    #[arg(long)]
    adhoc: bool,
    /// With --source fluvio: directory holding <module>/SmartModule.toml (names of the loaded modules).
    #[arg(long, default_value_os_t = cluster::default_smartmodules_dir())]
    smartmodules_dir: PathBuf,
    /// With --source fluvio: most bytes of chain output one fetch returns, so a backlog
    /// arrives in fetches of about this size and memory in the SPU and here stays bounded.
    /// The SPU feeds the producer batch it cut again; the profile aggregate answers it from
    /// its replay cache. A partition whose stream stalls (one producer batch's output alone
    /// is larger) is reopened with twice the size, and the log says so.
    #[arg(long, default_value_t = cluster::consume::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(i32).range(cluster::consume::MIN_MAX_BYTES..))]
    max_bytes: i32,
    /// With --source fluvio: produce the audience transitions to this topic, keyed by person
    /// id (created with one partition if missing). At least once: consumers dedupe by the
    /// transition's `id`.
    #[arg(long, value_name = "TOPIC")]
    triggers_topic: Option<String>,
    /// With --source fluvio: the group of consumers that share the topic's partitions, as
    /// NAME=URL pairs (the URL of each member's read API), e.g.
    /// `a=http://10.0.0.1:8080,b=http://10.0.0.2:8080`. Every member is started with the same
    /// list; each consumes only the partitions it owns by rendezvous hashing, so adding or
    /// removing a member moves only the partitions whose owner changed. A profile lookup on
    /// any member reads the parts of the person every member holds (members call each other
    /// with this --token). Needs --member.
    #[arg(long, value_name = "NAME=URL,…", value_parser = parse_members, requires = "member")]
    members: Option<cluster::assignment::Members>,
    /// With --members: which member this consumer is.
    #[arg(long, value_name = "NAME", requires = "members")]
    member: Option<String>,
    /// With --members: if the store holds partitions this member no longer owns (the group
    /// changed), set the store aside as `<store>.handed-over-<time>` and rebuild the owned
    /// partitions from the topic. Without it such a store is refused.
    #[arg(long, requires = "members")]
    rebalance: bool,
    /// With --source fluvio: exit once every partition reached the end offset it had at start
    /// (backfills, scripts, tests); without it, follow the topic until ctrl-c.
    #[arg(long)]
    stop_at_end: bool,
    /// A chain param, `<module>.<param>=<value>` (module: validate, enrich, profile); repeatable.
    #[arg(long = "param", value_name = "MODULE.KEY=VALUE")]
    params: Vec<String>,
    /// Directory of the built .wasm SmartModules.
    #[arg(long, env = "ONRAMP_WASM_DIR", default_value_os_t = wasm::default_wasm_dir())]
    wasm_dir: PathBuf,
    /// Records per partition batch (one store transaction each).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_SIZE))]
    batch_size: u64,
    /// durable: flush each batch before reading on; relaxed: background flush (faster, still exactly once).
    #[arg(long, value_enum, default_value_t = Durability::Durable)]
    durability: Durability,
    /// Embedded source: longest a record waits in a partial batch before it is committed
    /// (a slow stdin or FIFO still commits promptly), e.g. 200ms, 1s.
    #[arg(long, value_parser = super::parse_duration, default_value = embedded::DEFAULT_LINGER)]
    linger: std::time::Duration,
    /// Embedded source: longest line read whole, bytes; a longer line is rejected
    /// `too_large` (its size, first KiB and SHA-256 kept) without being held in memory.
    #[arg(long, default_value_t = onramp::source::DEFAULT_MAX_LINE_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    max_line_bytes: u64,
    /// Embedded source: this input comes after everything the store already consumed (e.g.
    /// day2.jsonl after day1.jsonl). Without it the input must be the store's own input
    /// from its start (a different one is refused); a run that stopped midway resumes with
    /// the same flags and the same input.
    #[arg(long)]
    append: bool,
    /// A suppression list (`onramp suppressions export` of the store this run rebuilds):
    /// records of those erased ids are dropped at commit and counted as suppressed.
    #[arg(long, value_name = "FILE")]
    suppressions: Option<std::path::PathBuf>,
    /// Audience and decision rules (YAML; see rules.example.yaml and the README). Recorded
    /// in the store: later runs and `onramp serve` use them until another --rules is given.
    /// Without it, the store's rules, else the built-in `stalled` and `activated`.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Partitions left out of the audience frontier (comma-separated), for partitions that
    /// receive no events: the frontier is the smallest watermark over partitions, so an idle
    /// one holds every audience transition back. Records of an ignored partition are judged
    /// when the others' frontier passes them, possibly late (ARCHITECTURE.md).
    #[arg(long, value_name = "P,P", value_delimiter = ',')]
    watermark_ignore: Vec<u32>,
    /// Embedded source: what records are keyed, and so partitioned, by — as the producer
    /// of a topic would key them (`onramp produce` keys by identity; another producer may
    /// key by event id, spreading each user over the partitions).
    #[arg(long, value_enum, default_value_t = KeyBy::Identity)]
    key: KeyBy,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut params = ChainParams::default();
    for p in &args.params {
        params.set_from_arg(p).map_err(anyhow::Error::msg)?;
    }
    let mut settings = Settings {
        store: args.store.store.clone(),
        params,
        batch_size: args.batch_size as usize,
        durability: args.durability,
        progress_bar: std::io::stderr().is_terminal(),
        suppressions: args
            .suppressions
            .as_deref()
            .map(super::erase::read_suppressions)
            .transpose()?,
        rules: None,
        watermark_ignore: args.watermark_ignore.iter().copied().collect(),
    };
    let steps = settings.funnel_steps()?;
    settings.rules = args
        .rules
        .as_deref()
        .map(|f| super::read_rules(f, &steps))
        .transpose()?;
    let hub = Hub::new(args.api.ready_max_lag, false);
    let runtime = onramp::runtime()?;
    let shutdown = super::shutdown();
    let summary = match args.source {
        Source::Fluvio => {
            if args.input.given() {
                bail!("--source fluvio reads the cluster's topic; send events with `onramp produce --input …` instead");
            }
            if args.partitions.is_some() {
                bail!("--source fluvio uses the topic's partitions (set by `onramp setup --partitions`); drop --partitions");
            }
            let chain = if args.adhoc {
                cluster::consume::ChainSource::Adhoc {
                    wasm_dir: args.wasm_dir,
                }
            } else {
                cluster::consume::ChainSource::Loaded {
                    smartmodules_dir: args.smartmodules_dir,
                }
            };
            let cfg = cluster::consume::ClusterRunConfig {
                settings,
                target: args.cluster.target(),
                topic: args.cluster.topic.clone(),
                chain,
                max_bytes: args.max_bytes,
                stop_at_end: args.stop_at_end,
                triggers_topic: args.triggers_topic.clone(),
                group: args.members.map(|members| cluster::consume::Group {
                    members,
                    member: args.member.unwrap_or_default(),
                    rebalance: args.rebalance,
                }),
            };
            tracing::info!(store = %cfg.settings.store.display(), topic = %cfg.topic, "starting run (source: fluvio)");
            // The API takes the partition count from the store, which records the topic's.
            let group = cfg.group.as_ref().map(|g| onramp::api::group::GroupReads {
                members: g.members.clone(),
                me: g.member.clone(),
            });
            args.api.start(&hub, 1, steps, runtime.handle(), group)?;
            runtime.block_on(cluster::consume::run(&cfg, &shutdown, hub.as_ref()))?
        }
        Source::Embedded => {
            let input = args
                .input
                .input("give --input FILE (or - for stdin) or --generate (or --source fluvio)")?;
            if args.stop_at_end || args.adhoc || args.triggers_topic.is_some() || args.members.is_some() {
                bail!("--stop-at-end, --adhoc, --triggers-topic and --members apply to --source fluvio (embedded runs serve transitions on /v1/triggers and `onramp triggers`)");
            }
            let cfg = EmbeddedConfig {
                settings,
                input,
                partitions: args.partitions.unwrap_or(embedded::DEFAULT_PARTITIONS),
                wasm_dir: args.wasm_dir,
                linger: args.linger,
                max_line_bytes: args.max_line_bytes as usize,
                append: args.append,
                key_by: args.key,
            };
            tracing::info!(store = %cfg.settings.store.display(), partitions = cfg.partitions, "starting run");
            args.api.start(&hub, cfg.partitions, steps, runtime.handle(), None)?;
            embedded::run(&cfg, &shutdown, hub.as_ref())?
        }
    };
    super::print_report(args.json, &summary, || summary.render())
}

fn parse_members(spec: &str) -> Result<cluster::assignment::Members, String> {
    cluster::assignment::Members::parse(spec)
}
