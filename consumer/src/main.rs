//! The `onramp` command: parse flags, set up logging, call the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use onramp::api::{ApiConfig, Hub};
use onramp::chain::ChainParams;
use onramp::cluster;
use onramp::generator::{self, GeneratorConfig};
use onramp::partition::KeyBy;
use onramp::pipeline::{self, Durability, RunConfig};
use onramp::query::{self, Hint, ProfileFilter};
use onramp::source::Input;
use onramp::store::Store;
use onramp::wasm;
use onramp_logic::enrich::EnrichConfig;

/// Default store directory (relative to the current directory).
const DEFAULT_STORE: &str = "onramp-data";
/// Default store of `onramp demo`.
const DEFAULT_DEMO_STORE: &str = "onramp-demo";

#[derive(Parser)]
#[command(
    name = "onramp",
    version,
    about = "Real-time personalisation of customer onboarding: SmartModules fold onboarding events into per-user profiles.",
    long_about = "onramp runs three Fluvio SmartModules (validate → enrich → profile) over onboarding events and \
folds their profile updates, exactly once, into a sled store that apps read to personalise onboarding.\n\n\
Without a cluster, `onramp run` executes the same .wasm in-process through fluvio-smartengine, \
the engine the Fluvio SPU embeds.",
    after_help = "Examples:\n  \
onramp demo                                     # a day of generated traffic, end to end\n  \
onramp run --input events.jsonl --partitions 3  # fold a JSON-lines file into ./onramp-data\n  \
onramp setup && onramp produce --input events.jsonl && onramp run --source fluvio  # on a Fluvio cluster\n  \
onramp generate --users 500 > events.jsonl      # realistic traffic as JSON lines\n  \
onramp profile get u_0000042                    # one profile\n  \
onramp stats                                    # the funnel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: events → SmartModule chain → store.
    #[command(after_help = "Examples:\n  \
onramp run --input events.jsonl\n  \
cat events.jsonl | onramp run --input - --partitions 3\n  \
onramp run --generate --users 10000 --durability relaxed\n  \
onramp run --input events.jsonl --param validate.max_event_bytes=65536 --param profile.session_timeout=45m\n\n\
Running again on the same store resumes each partition after its checkpoint: records already \
committed are skipped, so a crashed run can simply be started again.")]
    Run(Box<RunArgs>),
    /// Create the events topic and load the three SmartModules into a Fluvio cluster (idempotent).
    #[command(after_help = "Examples:\n  \
onramp setup                                   # active Fluvio profile, topic onboarding-events, 3 partitions\n  \
onramp setup --endpoint 127.0.0.1:9003 --partitions 6 --replication 2 --retention 7d\n\n\
The modules are registered from the built .wasm files (--wasm-dir) and their SmartModule.toml \
(--smartmodules-dir) exactly as `smdk load` registers them, under `group/name@version`. Running \
setup again changes nothing and says so.")]
    Setup(SetupArgs),
    /// Send events to the cluster's events topic, keyed by user id.
    #[command(after_help = "Examples:\n  \
onramp produce --input events.jsonl\n  \
onramp generate --users 1000 | onramp produce --input -\n  \
onramp produce --generate --users 20000 --events 100000 --linger 5ms --batch-bytes 262144\n\n\
Records are partitioned exactly like an embedded `onramp run --partitions N` over the same lines. \
Failed sends are retried with backoff; records that still fail are logged with their line number, \
counted, and make the command exit non-zero.")]
    Produce(ProduceArgs),
    /// Write generated onboarding traffic as JSON lines.
    #[command(after_help = "Example:\n  onramp generate --seed 7 --users 1000 --output events.jsonl")]
    Generate {
        #[command(flatten)]
        gen: GeneratorArgs,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Look up profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// The funnel: users per step, step-to-step conversion, median time between steps, reject reasons.
    Stats {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The funnel steps, in order (as given to the enrich module).
        #[arg(long, default_value = onramp_logic::enrich::DEFAULT_STEPS)]
        steps: String,
    },
    /// Every profile as one JSON line, sorted by user id (backups, warehouses, `diff` of two stores).
    Export {
        #[command(flatten)]
        store: StoreArg,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Serve a store's read API while nothing else writes it (DELETE is refused: read-only).
    #[command(
        after_help = "Example:\n  onramp serve --store onramp-demo --listen 127.0.0.1:7878\n  curl http://127.0.0.1:7878/v1/funnel"
    )]
    Serve {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Verify a store: every entry decodes and every invariant holds; exit 0 healthy, 1 damaged.
    #[command(
        long_about = "Verify a store: walk every tree, decode every entry and check every invariant the \
commits maintain — keys of the right shape, meta (layout version, partitions, chain params), checkpoints \
only for existing partitions, the counter equations (events in = accepted + rejected = Σ (checkpoint + 1), \
accepted = applied + duplicates + skipped, rejected = Σ by reason), one stored reject per rejected record \
not erased, the erasure index, Σ profile events = applied − erased, fold state only for users with a \
profile.\n\n\
Prints what it checked (entries per tree, partitions, checkpoints, counters) and every problem found \
(up to 10 examples per kind, all counted). Exits 0 when the store is healthy, 1 when it is damaged or \
cannot be read. Run it while nothing else has the store open (sled allows one process at a time).\n\n\
Every command that opens a store (run, serve, stats, export, profile) first runs a quick form of this \
check (meta, checkpoints, counters and their equations, first and last entries) and refuses a store it \
finds damaged.",
        after_help = check_after_help()
    )]
    Check {
        #[command(flatten)]
        store: StoreArg,
        /// Print the report as JSON (still exits 1 when the store is damaged).
        #[arg(long)]
        json: bool,
    },
    /// Generate a realistic day of onboarding traffic, run it end to end, print the summary and the funnel.
    Demo {
        /// Store directory (replaced on each demo run).
        #[arg(long, default_value = DEFAULT_DEMO_STORE)]
        store: PathBuf,
        /// Distinct users in the generated day.
        #[arg(long, default_value_t = generator::DEFAULT_USERS)]
        users: u64,
        /// Generator seed.
        #[arg(long, default_value_t = generator::DEFAULT_SEED)]
        seed: u64,
        /// Partitions.
        #[arg(long, default_value_t = 3)]
        partitions: u32,
    },
}

#[derive(Args)]
struct StoreArg {
    /// Store directory.
    #[arg(long, env = "ONRAMP_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// One profile as pretty JSON, with its derived hints.
    Get {
        /// User id (or anonymous id).
        user: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Profiles matching filters, in user-id order, a page at a time.
    #[command(after_help = "Examples:\n  \
onramp profile list --step email_verified --limit 20\n  \
onramp profile list --hint stalled\n  \
onramp profile list --active-since 2026-11-02T12:00:00Z --cursor u_0000120")]
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Only users whose furthest funnel step is this.
        #[arg(long)]
        step: Option<String>,
        /// Only users who completed this step.
        #[arg(long)]
        completed_step: Option<String>,
        /// Only users with this hint: stalled or activated.
        #[arg(long)]
        hint: Option<Hint>,
        /// Only users who completed onboarding (true) or not (false).
        #[arg(long)]
        completed: Option<bool>,
        /// Only users seen at or after this RFC 3339 time.
        #[arg(long)]
        active_since: Option<String>,
        /// Page size (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this cursor (printed at the end of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// Where `onramp run` reads events from.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// --input or --generate, through the chain in-process.
    Embedded,
    /// The cluster's events topic, through the chain in the SPU.
    Fluvio,
}

#[derive(Args, Clone)]
struct ClusterArgs {
    /// SC address `host:port` (no TLS); default: the active Fluvio profile.
    #[arg(long, env = "ONRAMP_FLUVIO_ENDPOINT")]
    endpoint: Option<String>,
    /// Fluvio profile to use instead of the active one.
    #[arg(long, conflicts_with = "endpoint")]
    profile: Option<String>,
    /// Events topic.
    #[arg(long, env = "ONRAMP_TOPIC", default_value = cluster::DEFAULT_TOPIC)]
    topic: String,
}

impl ClusterArgs {
    fn target(&self) -> cluster::ClusterTarget {
        cluster::ClusterTarget {
            endpoint: self.endpoint.clone(),
            profile: self.profile.clone(),
        }
    }
}

#[derive(Args)]
struct SetupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Partitions of the topic (an existing topic must have this many).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: u32,
    /// Replication factor of a new topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    replication: u32,
    /// Retention of a new topic: a number with unit s, m, h or d (e.g. 7d); default: the cluster's.
    #[arg(long, value_parser = parse_duration)]
    retention: Option<std::time::Duration>,
    /// Directory of the built .wasm SmartModules.
    #[arg(long, env = "ONRAMP_WASM_DIR", default_value_os_t = wasm::default_wasm_dir())]
    wasm_dir: PathBuf,
    /// Directory holding <module>/SmartModule.toml.
    #[arg(long, default_value_os_t = cluster::default_smartmodules_dir())]
    smartmodules_dir: PathBuf,
    /// Replace a module already loaded under the same name with different bytes.
    #[arg(long)]
    replace: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// JSON-lines input file; `-` for standard input.
    #[arg(long, short, conflicts_with = "generate", required_unless_present = "generate")]
    input: Option<String>,
    /// Use the built-in traffic generator as input.
    #[arg(long)]
    generate: bool,
    #[command(flatten)]
    gen: GeneratorArgs,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = cluster::produce::DEFAULT_BATCH_BYTES)]
    batch_bytes: usize,
    /// How long a batch may wait to fill up (e.g. 10ms, 1s).
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    /// embedded: --input/--generate through the chain in-process; fluvio: the cluster's topic, chain in the SPU.
    #[arg(long, value_enum, default_value_t = Source::Embedded)]
    source: Source,
    /// JSON-lines input file; `-` for standard input (embedded source).
    #[arg(long, short, conflicts_with = "generate")]
    input: Option<String>,
    /// Use the built-in traffic generator as input (embedded source).
    #[arg(long)]
    generate: bool,
    #[command(flatten)]
    gen: GeneratorArgs,
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
    /// With --source fluvio: most bytes of chain output one fetch returns. The default (the
    /// maximum) is deliberate: the SPU cuts the chain's output at this size after the profile
    /// aggregate has folded the cut records, which then come back as duplicates.
    #[arg(long, default_value_t = cluster::consume::DEFAULT_MAX_BYTES)]
    max_bytes: i32,
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
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,
    /// durable: flush each batch before reading on; relaxed: background flush (faster, still exactly once).
    #[arg(long, value_enum, default_value_t = Durability::Durable)]
    durability: Durability,
    /// Embedded source: longest a record waits in a partial batch before it is committed
    /// (a slow stdin or FIFO still commits promptly), e.g. 200ms, 1s.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
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

#[derive(Args, Clone)]
struct ApiArgs {
    /// Address of the read API (profiles, funnel, update stream, metrics); `off` for none.
    /// Anything but loopback requires --token.
    #[arg(long, env = "ONRAMP_LISTEN", default_value = onramp::api::DEFAULT_LISTEN)]
    listen: String,
    /// Bearer token for the read API: required for any non-loopback --listen and for DELETE;
    /// when set, every endpoint but /healthz needs `Authorization: Bearer <token>`.
    #[arg(long, env = "ONRAMP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// /readyz answers 200 while no more than this many records are read but not yet
    /// committed, nor (with --source fluvio) waiting in the topic after the committed checkpoints.
    #[arg(long, default_value_t = onramp::api::DEFAULT_READY_MAX_LAG)]
    ready_max_lag: u64,
    /// Most read-API connections open at once; more wait in the kernel's accept backlog.
    /// Keep it well under the file-descriptor limit (ulimit -n).
    #[arg(long, default_value_t = onramp::api::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// A connection must send its request head within this time of opening and of its
    /// previous response (the idle keep-alive limit), or it is closed (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = onramp::api::DEFAULT_HEADER_TIMEOUT)]
    header_timeout: std::time::Duration,
    /// Another `Host` name the read API answers to, e.g. the DNS name of a proxy in front of
    /// it (`NAME` any port, `NAME:PORT` that port only); repeatable. Loopback names (on
    /// loopback) and the address a connection arrived on are always accepted; any other
    /// name is refused, which stops DNS-rebinding pages.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
}

impl ApiArgs {
    /// Starts the API when --listen is not `off`.
    fn start(&self, hub: &Arc<Hub>, partitions: u32) -> anyhow::Result<()> {
        if self.listen == "off" {
            return Ok(());
        }
        let listen = self.listen.parse().with_context(|| {
            format!(
                "--listen `{}` is not an address such as 127.0.0.1:7878 (or `off`)",
                self.listen
            )
        })?;
        let cfg = ApiConfig {
            listen,
            token: self.token.clone(),
            steps: EnrichConfig::default().steps,
            partitions,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            allow_hosts: self.allow_hosts.clone(),
        };
        let addr = onramp::api::start(cfg, hub.clone())?;
        tracing::info!("read API listening on http://{addr}");
        Ok(())
    }
}

#[derive(Args, Clone)]
struct GeneratorArgs {
    /// Generator seed (same seed, same traffic).
    #[arg(long, default_value_t = generator::DEFAULT_SEED)]
    seed: u64,
    /// Distinct users who arrive.
    #[arg(long, default_value_t = generator::DEFAULT_USERS)]
    users: u64,
    /// Stop after this many lines.
    #[arg(long)]
    events: Option<u64>,
    /// Share of visitors that are bots.
    #[arg(long, default_value_t = generator::DEFAULT_BOT_SHARE)]
    bot_share: f64,
    /// Share of users that are test accounts.
    #[arg(long, default_value_t = generator::DEFAULT_TEST_USER_SHARE)]
    test_user_share: f64,
    /// Share of very hot users (hundreds of events each).
    #[arg(long, default_value_t = generator::DEFAULT_HOT_USER_SHARE)]
    hot_user_share: f64,
    /// Share of events delivered late (out of event-time order).
    #[arg(long, default_value_t = generator::DEFAULT_LATE_SHARE)]
    late_share: f64,
    /// Share of events sent twice (client retries).
    #[arg(long, default_value_t = generator::DEFAULT_DUPLICATE_SHARE)]
    duplicate_share: f64,
    /// Share of extra malformed lines.
    #[arg(long, default_value_t = generator::DEFAULT_MALFORMED_SHARE)]
    malformed_share: f64,
}

impl GeneratorArgs {
    fn config(&self) -> anyhow::Result<GeneratorConfig> {
        for (name, v) in [
            ("--bot-share", self.bot_share),
            ("--test-user-share", self.test_user_share),
            ("--hot-user-share", self.hot_user_share),
            ("--late-share", self.late_share),
            ("--duplicate-share", self.duplicate_share),
            ("--malformed-share", self.malformed_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be between 0 and 1, got {v}");
            }
        }
        Ok(GeneratorConfig {
            seed: self.seed,
            users: self.users,
            max_events: self.events,
            bot_share: self.bot_share,
            test_user_share: self.test_user_share,
            hot_user_share: self.hot_user_share,
            late_share: self.late_share,
            duplicate_share: self.duplicate_share,
            malformed_share: self.malformed_share,
            ..GeneratorConfig::default()
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ONRAMP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,onramp=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run(*args),
        Command::Setup(args) => setup(args),
        Command::Produce(args) => produce(args),
        Command::Generate { gen, output } => {
            let cfg = gen.config()?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            for line in generator::Generator::new(cfg) {
                writeln!(out, "{line}")?;
                n += 1;
            }
            out.flush()?;
            tracing::info!(lines = n, "generated");
            Ok(())
        }
        Command::Profile(ProfileCommand::Get { user, store }) => {
            let store = Store::open_existing(&store.store)?;
            let Some(profile) = store.profile(&user)? else {
                bail!("no profile for `{user}` in {}", store.path().display());
            };
            let reference = query::reference_time_ms(&store)?.unwrap_or(profile.last_seen_ms);
            let mut value = serde_json::to_value(&profile)?;
            value["hints"] = serde_json::to_value(profile.hints(reference))?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        Command::Profile(ProfileCommand::List {
            store,
            step,
            completed_step,
            hint,
            completed,
            active_since,
            limit,
            cursor,
        }) => {
            let store = Store::open_existing(&store.store)?;
            let active_since_ms = match active_since {
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .with_context(|| format!("--active-since `{t}` is not an RFC 3339 time"))?
                        .timestamp_millis(),
                ),
                None => None,
            };
            let filter = ProfileFilter {
                step,
                completed_step,
                hint,
                completed,
                active_since_ms,
            };
            let page = query::list_profiles(&store, &filter, cursor.as_deref(), limit)?;
            let mut out = std::io::stdout().lock();
            for p in &page.profiles {
                writeln!(out, "{}", serde_json::to_string(p)?)?;
            }
            match page.next_cursor {
                Some(c) => eprintln!("{} profiles; next page: --cursor {c}", page.profiles.len()),
                None => eprintln!("{} profiles; end of list", page.profiles.len()),
            }
            Ok(())
        }
        Command::Stats { store, json, steps } => {
            let store = Store::open_existing(&store.store)?;
            let steps = EnrichConfig::from_params(|_| Some(steps.clone()))?.steps;
            let stats = query::funnel_stats(&store, &steps)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", query::render_funnel(&stats));
            }
            Ok(())
        }
        Command::Export { store, output } => {
            let store = Store::open_existing(&store.store)?;
            let n = match &output {
                Some(path) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                    );
                    query::export_lines(&store, &mut f)?
                }
                None => query::export_lines(&store, &mut std::io::BufWriter::new(std::io::stdout().lock()))?,
            };
            tracing::info!(profiles = n, "exported");
            Ok(())
        }
        Command::Demo {
            store,
            users,
            seed,
            partitions,
        } => demo(store, users, seed, partitions),
        Command::Check { store, json } => check(&store.store, json),
        Command::Serve { store, api } => {
            if api.listen == "off" {
                bail!("onramp serve needs --listen");
            }
            let store = Store::open_existing(&store.store)?;
            let hub = Hub::new(api.ready_max_lag, true);
            let partitions = store.partitions()?.unwrap_or(1);
            hub.set_store(store);
            api.start(&hub, partitions)?;
            let stop = shutdown_flag();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            tracing::info!("stopping");
            Ok(())
        }
    }
}

/// `onramp check --help`: examples and how to rebuild a damaged store.
fn check_after_help() -> String {
    format!(
        "Examples:\n  onramp check --store onramp-data\n  onramp check --store onramp-data --json | jq .problems_by_kind\n\n\
Rebuilding a damaged store:\n{}",
        onramp::store::REBUILD_HELP
    )
}

/// `onramp check`: the full verify; prints the report, and fails (exit 1) when the store is damaged.
fn check(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let report = Store::check_path(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if report.healthy {
        return Ok(());
    }
    if !json {
        println!("\nhow to rebuild it:\n{}", onramp::store::REBUILD_HELP);
        if let Some(n) = report.partitions {
            println!(
                "this store was written with --partitions {n} and chain params `{}` (`defaults`: no --param)",
                report.chain_params.as_deref().unwrap_or("(not recorded)")
            );
        }
    }
    bail!(
        "store {} is damaged ({} problem{}); rebuild it from its input (`onramp check --help` says how)",
        path.display(),
        report.problem_count,
        if report.problem_count == 1 { "" } else { "s" }
    )
}

fn shutdown_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    if let Err(e) = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst)) {
        tracing::warn!("cannot install the ctrl-c handler: {e}");
    }
    flag
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut params = ChainParams::default();
    for p in &args.params {
        params.set_from_arg(p).map_err(anyhow::Error::msg)?;
    }
    let hub = Hub::new(args.api.ready_max_lag, false);
    let summary = match args.source {
        Source::Fluvio => {
            if args.input.is_some() || args.generate {
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
                target: args.cluster.target(),
                topic: args.cluster.topic.clone(),
                store: args.store.store,
                params,
                chain,
                batch_size: args.batch_size as usize,
                max_bytes: args.max_bytes,
                durability: args.durability,
                stop_at_end: args.stop_at_end,
                progress_bar: std::io::stderr().is_terminal(),
            };
            tracing::info!(store = %cfg.store.display(), topic = %cfg.topic, "starting run (source: fluvio)");
            // The API takes the partition count from the store, which records the topic's.
            args.api.start(&hub, 1)?;
            cluster::consume::run(&cfg, &shutdown_flag(), hub.as_ref())?
        }
        Source::Embedded => {
            let input = match (args.generate, args.input.as_deref()) {
                (true, _) => Input::Generate(args.gen.config()?),
                (false, Some("-")) => Input::Stdin,
                (false, Some(path)) => Input::File(PathBuf::from(path)),
                (false, None) => bail!("give --input FILE (or - for stdin) or --generate (or --source fluvio)"),
            };
            if args.stop_at_end || args.adhoc {
                bail!("--stop-at-end and --adhoc apply to --source fluvio");
            }
            let cfg = RunConfig {
                input,
                store: args.store.store,
                partitions: args.partitions.unwrap_or(pipeline::DEFAULT_PARTITIONS),
                params,
                wasm_dir: args.wasm_dir,
                batch_size: args.batch_size as usize,
                durability: args.durability,
                progress_bar: std::io::stderr().is_terminal(),
                linger: args.linger,
                max_line_bytes: args.max_line_bytes as usize,
                append: args.append,
                key_by: args.key,
            };
            tracing::info!(store = %cfg.store.display(), partitions = cfg.partitions, "starting run");
            args.api.start(&hub, cfg.partitions)?;
            pipeline::run_observed(&cfg, &shutdown_flag(), hub.as_ref())?
        }
    };
    print_report(args.json, &summary, || summary.render())
}

fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let cfg = cluster::setup::SetupConfig {
        target: args.cluster.target(),
        topic: args.cluster.topic.clone(),
        partitions: args.partitions,
        replication: args.replication,
        retention: args.retention,
        wasm_dir: args.wasm_dir,
        smartmodules_dir: args.smartmodules_dir,
        replace: args.replace,
    };
    let report = cluster::runtime()?.block_on(cluster::setup::setup(&cfg))?;
    print_report(args.json, &report, || report.render())?;
    Ok(())
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let input = match (args.generate, args.input.as_deref()) {
        (true, _) => Input::Generate(args.gen.config()?),
        (false, Some("-")) => Input::Stdin,
        (false, Some(path)) => Input::File(PathBuf::from(path)),
        (false, None) => bail!("give --input FILE (or - for stdin) or --generate"),
    };
    let cfg = cluster::produce::ProduceConfig {
        target: args.cluster.target(),
        topic: args.cluster.topic.clone(),
        input,
        batch_bytes: args.batch_bytes,
        linger: args.linger,
        retries: args.retries,
        progress_bar: std::io::stderr().is_terminal(),
        max_line_bytes: args.max_line_bytes as usize,
        key_by: args.key,
    };
    let report = cluster::runtime()?.block_on(cluster::produce::produce(&cfg, &shutdown_flag()))?;
    print_report(args.json, &report, || report.render())?;
    cluster::produce::check(&report)
}

/// Prints a command's report: pretty JSON with --json, else its text rendering.
fn print_report<T: serde::Serialize>(json: bool, report: &T, render: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render());
    }
    Ok(())
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `7d`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 250ms, 30s, 5m, 2h or 7d"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("`{s}`: the unit must be ms, s, m, h or d")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

fn demo(store: PathBuf, users: u64, seed: u64, partitions: u32) -> anyhow::Result<()> {
    eprintln!("onramp demo: building the SmartModules (wasm32-wasip1, release-lto) if needed…");
    let wasm_dir = wasm::build_modules()?;
    if store.exists() {
        std::fs::remove_dir_all(&store)
            .with_context(|| format!("cannot replace the demo store {}", store.display()))?;
    }
    let gen = GeneratorConfig {
        seed,
        users,
        ..GeneratorConfig::default()
    };
    eprintln!("onramp demo: a day of onboarding traffic from {users} users through validate → enrich → profile…");
    let cfg = RunConfig {
        input: Input::Generate(gen),
        store: store.clone(),
        partitions,
        params: ChainParams::default(),
        wasm_dir,
        batch_size: pipeline::DEFAULT_BATCH_SIZE,
        durability: Durability::Durable,
        progress_bar: std::io::stderr().is_terminal(),
        linger: pipeline::DEFAULT_LINGER,
        max_line_bytes: onramp::source::DEFAULT_MAX_LINE_BYTES,
        append: false,
        key_by: KeyBy::Identity,
    };
    let summary = pipeline::run(&cfg, &shutdown_flag())?;
    println!("== run summary\n{}", summary.render());
    let db = Store::open_existing(&store)?;
    let steps = EnrichConfig::default().steps;
    let stats = query::funnel_stats(&db, &steps)?;
    println!("== funnel\n{}", query::render_funnel(&stats));
    let example = db
        .profiles_after(None)
        .filter_map(Result::ok)
        .find(|p| p.completed_ms.is_some());
    let shown = example.map(|p| p.user_id).unwrap_or_else(|| "<user id>".into());
    println!("== next");
    println!(
        "look up a profile:   onramp profile get {shown} --store {}",
        store.display()
    );
    println!(
        "stalled users:       onramp profile list --hint stalled --store {}",
        store.display()
    );
    println!("the funnel again:    onramp stats --store {}", store.display());
    println!("every profile:       onramp export --store {}", store.display());
    Ok(())
}
