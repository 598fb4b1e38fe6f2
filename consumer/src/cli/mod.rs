//! The `onramp` command line: one module per command, each with its flags (clap) and
//! its handler; this module holds the command table and the flags several commands share.

mod audience;
mod check;
mod demo;
mod erase;
mod export;
mod generate;
mod produce;
mod profile;
mod run;
mod serve;
mod setup;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use onramp::api::{ApiConfig, Hub};
use onramp::cluster;
use onramp::generator::{self, GeneratorConfig};
use onramp::shutdown::Shutdown;
use onramp::source::Input;

/// Default store directory (relative to the current directory).
const DEFAULT_STORE: &str = "onramp-data";

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the pipeline: events → SmartModule chain → store.
    #[command(after_help = "Examples:\n  \
onramp run --input events.jsonl\n  \
cat events.jsonl | onramp run --input - --partitions 3\n  \
onramp run --generate --users 10000 --durability relaxed\n  \
onramp run --input events.jsonl --param validate.max_event_bytes=65536 --param profile.session_timeout=45m\n\n\
Running again on the same store resumes each partition after its checkpoint: records already \
committed are skipped, so a crashed run can simply be started again.")]
    Run(Box<run::RunArgs>),
    /// Create the events topic and load the three SmartModules into a Fluvio cluster (idempotent).
    #[command(after_help = "Examples:\n  \
onramp setup                                   # active Fluvio profile, topic onboarding-events, 3 partitions\n  \
onramp setup --endpoint 127.0.0.1:9003 --partitions 6 --replication 2 --retention 7d\n\n\
The modules are registered from the built .wasm files (--wasm-dir) and their SmartModule.toml \
(--smartmodules-dir) exactly as `smdk load` registers them, under `group/name@version`. Running \
setup again changes nothing and says so.")]
    Setup(setup::SetupArgs),
    /// Send events to the cluster's events topic, keyed by user id.
    #[command(after_help = "Examples:\n  \
onramp produce --input events.jsonl\n  \
onramp generate --users 1000 | onramp produce --input -\n  \
onramp produce --generate --users 20000 --events 100000 --linger 5ms --batch-bytes 262144\n\n\
Records are partitioned exactly like an embedded `onramp run --partitions N` over the same lines. \
Failed sends are retried with backoff; records that still fail are logged with their line number, \
counted, and make the command exit non-zero.")]
    Produce(produce::ProduceArgs),
    /// Write generated onboarding traffic as JSON lines.
    #[command(after_help = "Example:\n  onramp generate --seed 7 --users 1000 --output events.jsonl")]
    Generate(generate::GenerateArgs),
    /// Look up profiles.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// The funnel: users per step, step-to-step conversion, median time between steps, reject reasons.
    Stats(stats::StatsArgs),
    /// Every person (or, with --by-id, every stored id) as one JSON line, sorted by id (backups, warehouses, `diff` of two stores).
    Export(export::ExportArgs),
    /// Serve a store's read API while nothing else writes it (DELETE is refused: read-only).
    #[command(
        after_help = "Example:\n  onramp serve --store onramp-demo --listen 127.0.0.1:7878\n  curl http://127.0.0.1:7878/v1/funnel"
    )]
    Serve(serve::ServeArgs),
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
        after_help = check::after_help()
    )]
    Check(check::CheckArgs),
    /// Generate a realistic day of onboarding traffic, run it end to end, print the summary and the funnel.
    Demo(demo::DemoArgs),
    /// Erase a person (any of its ids) from a store nothing else has open, and suppress its ids.
    #[command(after_help = "Example:\n  onramp erase u_42 --store onramp-data\n\n\
Removes every id of the person (the user id and the anonymous ids linked to it): profiles, fold \
state, stored rejects, links. Each id is then suppressed (a keyed hash is stored, not the id): records \
for it that arrive later, or are replayed, are dropped at commit and counted as `suppressed`. While \
`onramp run` is serving, use `DELETE /v1/profiles/{id}` instead (sled allows one process per store).")]
    Erase(erase::EraseArgs),
    /// Audiences of the store's rules with their sizes (as of the event-time frontier).
    #[command(
        after_help = "Examples:\n  onramp audiences\n  onramp audience members stalled --limit 20\n  onramp decide u_42 --surface welcome_checklist\n  onramp triggers --after <cursor>"
    )]
    Audiences(audience::AudiencesArgs),
    /// One audience: `onramp audience members NAME`.
    #[command(subcommand)]
    Audience(audience::AudienceCommand),
    /// The next action for a person on a surface of the rules, with the rule that matched and the experiment variant.
    Decide(audience::DecideArgs),
    /// The audience transitions (entered / exited) in the store's outbox, as JSON lines, oldest first.
    Triggers(audience::TriggersArgs),
    /// Export a store's suppressions (erased ids, hashed) for a rebuilt store: `onramp run --suppressions FILE`.
    #[command(subcommand)]
    Suppressions(erase::SuppressionsCommand),
}

/// Runs a parsed command.
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(*args),
        Command::Setup(args) => setup::setup(args),
        Command::Produce(args) => produce::produce(args),
        Command::Generate(args) => generate::generate(args),
        Command::Profile(command) => profile::profile(command),
        Command::Stats(args) => stats::stats(args),
        Command::Export(args) => export::export(args),
        Command::Serve(args) => serve::serve(args),
        Command::Check(args) => check::check(args),
        Command::Demo(args) => demo::demo(args),
        Command::Erase(args) => erase::erase(args),
        Command::Suppressions(command) => erase::suppressions(command),
        Command::Audiences(args) => audience::audiences(args),
        Command::Audience(command) => audience::audience(command),
        Command::Decide(args) => audience::decide(args),
        Command::Triggers(args) => audience::triggers(args),
    }
}

#[derive(Args)]
pub struct StoreArg {
    /// Store directory.
    #[arg(long, env = "ONRAMP_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
}

#[derive(Args, Clone)]
struct ClusterArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Events topic.
    #[arg(long, env = "ONRAMP_TOPIC", default_value = cluster::DEFAULT_TOPIC)]
    topic: String,
}

/// Which Fluvio cluster to talk to.
#[derive(Args, Clone)]
struct ConnectionArgs {
    /// SC address `host:port` (no TLS); default: the active Fluvio profile.
    #[arg(long, env = "ONRAMP_FLUVIO_ENDPOINT")]
    endpoint: Option<String>,
    /// Fluvio profile to use instead of the active one.
    #[arg(long, conflicts_with = "endpoint")]
    profile: Option<String>,
}

impl ConnectionArgs {
    fn target(&self) -> cluster::ClusterTarget {
        cluster::ClusterTarget {
            endpoint: self.endpoint.clone(),
            profile: self.profile.clone(),
        }
    }
}

impl ClusterArgs {
    fn target(&self) -> cluster::ClusterTarget {
        self.connection.target()
    }
}

/// Where `run` and `produce` read events: a file, stdin or the generator.
#[derive(Args, Clone)]
struct InputArgs {
    /// JSON-lines input file; `-` for standard input.
    #[arg(long, short, conflicts_with = "generate")]
    input: Option<String>,
    /// Use the built-in traffic generator as input.
    #[arg(long)]
    generate: bool,
    #[command(flatten)]
    gen: GeneratorArgs,
}

impl InputArgs {
    /// The input the flags name; `missing` says what to give when they name none.
    fn input(&self, missing: &str) -> anyhow::Result<Input> {
        Ok(match (self.generate, self.input.as_deref()) {
            (true, _) => Input::Generate(self.gen.config()?),
            (false, Some("-")) => Input::Stdin,
            (false, Some(path)) => Input::File(PathBuf::from(path)),
            (false, None) => bail!("{missing}"),
        })
    }

    fn given(&self) -> bool {
        self.generate || self.input.is_some()
    }
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
    /// Most read-API connections open at once. At the cap, a new client takes the place of
    /// the oldest connection that has not sent a request yet; when every connection is
    /// serving, new clients wait in the kernel's accept backlog. Keep it well under the
    /// file-descriptor limit (ulimit -n).
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
    /// Starts the API on `runtime` when --listen is not `off`; `steps` is the store's funnel.
    /// `group`: this consumer's place in a group, whose stores profile lookups read.
    fn start(
        &self,
        hub: &Arc<Hub>,
        partitions: u32,
        steps: Vec<String>,
        runtime: &tokio::runtime::Handle,
        group: Option<onramp::api::group::GroupReads>,
    ) -> anyhow::Result<()> {
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
            steps,
            partitions,
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            allow_hosts: self.allow_hosts.clone(),
            group,
        };
        let addr = onramp::api::start(cfg, hub.clone(), runtime)?;
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

/// Parses a duration flag (`250ms`, `30s`, `5m`, `2h`, `7d`) as SmartModule params are parsed.
/// Reads and checks a rules file (`--rules`) against the run's funnel steps.
fn read_rules(path: &std::path::Path, steps: &[String]) -> anyhow::Result<onramp::audience::Rules> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read rules file {}", path.display()))?
        .len();
    if size > onramp::audience::rules::MAX_RULES_BYTES {
        bail!(
            "rules file {} is {size} bytes; at most {} are read (a rules file is a few hundred lines)",
            path.display(),
            onramp::audience::rules::MAX_RULES_BYTES
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read rules file {}", path.display()))?;
    Ok(onramp::audience::Rules::parse(
        &text,
        &path.display().to_string(),
        Some(steps),
    )?)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    onramp_logic::params::parse_duration_ms("duration", s)
        .map(|ms| std::time::Duration::from_millis(ms as u64))
        .map_err(|e| format!("`{s}` is not {}", e.expected))
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

/// Opens a file for writing, or standard output when none is given.
fn output(path: Option<&std::path::Path>) -> anyhow::Result<Box<dyn std::io::Write>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// The stop request of a command that runs until ctrl-c or SIGTERM.
fn shutdown() -> Shutdown {
    Shutdown::on_signals()
}
