//! `onramp run --source fluvio`: the chain runs in the SPU; onramp reads what it emits and
//! commits it to the same store, with the same checkpoints and summary, as the embedded run.
//!
//! Per partition, two broker-side streams start at `Offset::absolute(checkpoint + 1)`:
//!
//! - the **update stream**: validate → enrich → profile, the profile aggregate seeded with
//!   the partition's restart snapshot (the store's fold state at the checkpoint) as its
//!   initial accumulator; it emits one `ProfileUpdate` per accepted record;
//! - the **reject stream**: validate with `mode=rejected`; it emits one `RejectedEvent`
//!   (reason, detail, payload) per rejected record.
//!
//! Every offset appears in exactly one of them, so merging the two by offset accounts for
//! every record of the partition: a batch is the next contiguous run of offsets, committed
//! (updates + rejects + counters + checkpoint) in one transaction — the same [`Batch`] the
//! embedded pipeline commits, so both sources give identical stores. The merging itself
//! (gaps, re-sent and duplicate offsets, the end offset, a refused restart snapshot) is
//! [`OffsetMerger`]; this module only does the I/O around it.
//!
//! If the profile aggregate refuses its restart snapshot, it folds nothing on the stream:
//! the run commits the records before the first refused one and stops with the embedded
//! pipeline's message, like it does.
//!
//! Every [`LAG_POLL_INTERVAL`], each partition's end offset is asked of its leader, and the
//! records after the committed checkpoint are reported as the partition's lag
//! ([`Observer::lag`]), so `/readyz` reflects the topic, not only what was read.
//!
//! The client's own retry is disabled: it would resume every partition from one offset
//! and hide SmartModule errors. Instead each partition reconnects by itself with
//! exponential backoff, always from its committed checkpoint with a fresh snapshot (the
//! aggregate's state must match the offset it resumes at). A SmartModule runtime error is
//! logged with its offset and counted, what was merged is committed, and the run stops with
//! the reason rather than looping: Fluvio 0.50 re-runs the whole producer batch on every
//! resume, so the record cannot be skipped (see [`PartitionTask::stream_error`]). An erasure through the read API restarts the
//! partition's streams the same way, so the aggregate forgets the erased user.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use fluvio::consumer::{ConsumerConfigExt, RetryMode};
use fluvio::dataplane::link::ErrorCode;
use fluvio::ConsumerConfig;
use fluvio::{
    Offset, SmartModuleContextData, SmartModuleExtraParams, SmartModuleInvocation, SmartModuleInvocationWasm,
    SmartModuleKind,
};
use futures_util::StreamExt;
use onramp_schemas::{ProfileUpdate, RejectedEvent};
use tokio::sync::{mpsc, oneshot, watch};

use super::assignment::Members;
use super::merge::{LagBook, OffsetMerger};
use super::{existing_topic_partitions, loaded_name, ClusterTarget};
use crate::run::{Observer, RefusedSnapshot, Run, Settings, SourceKind, Summary};
use crate::shutdown::Shutdown;
use crate::store::{Batch, Store};
use crate::wasm::{Module, WasmModules};
use onramp_logic::fold::FoldConfig;

/// Default `max_bytes` of a fetch: the most chain output one fetch returns.
///
/// With a SmartModule chain the SPU runs the chain one producer batch at a time from the
/// fetch offset and stops once the output passes `max_bytes`; the batch that crossed the
/// limit is dropped from the response and fed again on the next fetch (the profile
/// aggregate answers it from its replay cache, `onramp_logic::replay`). So a backlog
/// arrives as a series of fetches of about this size, and the SPU's and the consumer's
/// memory stay bounded by it instead of growing with the backlog.
pub const DEFAULT_MAX_BYTES: i32 = 4 << 20;
/// A partition whose merged offsets do not move for this long, plus a second per MiB of
/// `max_bytes` and a second per [`SCAN_RATE`] records of backlog (the time the SPU may
/// take to fill a fetch), while its leader holds records after them, is stalled: see
/// [`PartitionTask::stalled`].
pub const STALL_AFTER: Duration = Duration::from_secs(5);
/// Records per second the SPU is assumed to scan at least when a fetch's output is sparse
/// (the reject stream runs validate over every record until it has `max_bytes` of rejects
/// or reaches the end).
pub const SCAN_RATE: u64 = 20_000;
/// Most offsets the merger holds past a gap before it stops reading the stream that is
/// ahead (see [`OffsetMerger::may_read`]): about 50 MB of parsed updates.
pub const MAX_WAITING: usize = 50_000;
/// Smallest `--max-bytes`.
pub const MIN_MAX_BYTES: i64 = 1024;
/// How a store fed by a topic names its source (then the topic's name).
pub const FLUVIO_SOURCE: &str = "fluvio topic ";
/// Most batches committed under one flush (the channel from the partition tasks holds 64).
pub const MAX_COMMIT_GROUP: usize = 64;
/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a loaded module may be reported missing before that is an error.
pub const MISSING_MODULE_GRACE: Duration = Duration::from_secs(60);
/// How often each partition's end offset is asked of its leader, for the lag figures.
pub const LAG_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Where the broker gets the modules from.
#[derive(Debug, Clone)]
pub enum ChainSource {
    /// The modules loaded by `onramp setup` / `smdk load`, by the names in their
    /// `SmartModule.toml` (`group/name@version`).
    Loaded {
        /// Directory holding `<module>/SmartModule.toml`.
        smartmodules_dir: PathBuf,
    },
    /// The local `.wasm` bytes, sent with the request (nothing needs to be loaded).
    Adhoc {
        /// Directory of the built `.wasm` files.
        wasm_dir: PathBuf,
    },
}

/// Everything `onramp run --source fluvio` needs.
#[derive(Debug, Clone)]
pub struct ClusterRunConfig {
    /// Store, params, batch size, durability, progress.
    pub settings: Settings,
    /// The cluster.
    pub target: ClusterTarget,
    /// Events topic.
    pub topic: String,
    /// Loaded modules or ad-hoc wasm.
    pub chain: ChainSource,
    /// `max_bytes` of each fetch.
    pub max_bytes: i32,
    /// Stop once every partition reached the end offset it had at start.
    pub stop_at_end: bool,
    /// Produce the audience transitions to this topic (see [`super::relay`]).
    pub triggers_topic: Option<String>,
    /// One member of a group of consumers: consume only the partitions it owns.
    pub group: Option<Group>,
}

/// This consumer's place in a group (see [`super::assignment`]).
#[derive(Debug, Clone)]
pub struct Group {
    /// Every member.
    pub members: Members,
    /// This one's name.
    pub member: String,
    /// Hand over partitions the store holds that this member no longer owns: set the
    /// store aside and rebuild the owned partitions from the topic.
    pub rebalance: bool,
}

/// The invocations of both streams, without the aggregate's accumulator.
#[derive(Clone)]
struct Invocations {
    updates: Vec<SmartModuleInvocation>,
    rejects: Vec<SmartModuleInvocation>,
}

impl Invocations {
    fn new(cfg: &ClusterRunConfig) -> anyhow::Result<Self> {
        let mut wasm = BTreeMap::new();
        match &cfg.chain {
            ChainSource::Loaded { smartmodules_dir } => {
                for m in Module::ALL {
                    wasm.insert(
                        m,
                        SmartModuleInvocationWasm::Predefined(loaded_name(smartmodules_dir, m)?),
                    );
                }
            }
            ChainSource::Adhoc { wasm_dir } => {
                let modules = WasmModules::load(wasm_dir)?;
                for m in Module::ALL {
                    wasm.insert(
                        m,
                        SmartModuleInvocationWasm::adhoc_from_bytes(modules.bytes(m))
                            .context("compressing the .wasm")?,
                    );
                }
            }
        }
        let invocation = |m: Module, params: BTreeMap<String, String>| invocation(wasm[&m].clone(), params);
        let params = &cfg.settings.params;
        let updates = Module::ALL.iter().map(|&m| invocation(m, params.of(m))).collect();
        let rejects = vec![invocation(
            Module::Validate,
            cfg.settings.rejected_params().of(Module::Validate),
        )];
        Ok(Invocations { updates, rejects })
    }

    fn updates_from(&self, accumulator: Vec<u8>) -> Vec<SmartModuleInvocation> {
        with_accumulator(self.updates.clone(), accumulator)
    }
}

/// One module of a chain the SPU runs.
fn invocation(wasm: SmartModuleInvocationWasm, params: BTreeMap<String, String>) -> SmartModuleInvocation {
    SmartModuleInvocation {
        wasm,
        kind: SmartModuleKind::Generic(SmartModuleContextData::None),
        params: SmartModuleExtraParams::new(params, None),
        name: None,
    }
}

/// `chain` with its last module (the profile aggregate) started from `accumulator`.
fn with_accumulator(mut chain: Vec<SmartModuleInvocation>, accumulator: Vec<u8>) -> Vec<SmartModuleInvocation> {
    if let Some(profile) = chain.last_mut() {
        profile.kind = SmartModuleKind::Generic(SmartModuleContextData::Aggregate { accumulator });
    }
    chain
}

/// The update chain as `onramp run --source fluvio` asks the SPU for it: the modules
/// `onramp setup` loaded (named by their `SmartModule.toml` under `smartmodules_dir`),
/// default params, and an empty accumulator (a fresh fold). For tools that follow a topic
/// through onramp's chain without a store, such as the latency benchmark, which compares it
/// with a plain stream of the same topic.
pub fn loaded_update_chain(smartmodules_dir: &Path) -> anyhow::Result<Vec<SmartModuleInvocation>> {
    let params = crate::chain::ChainParams::default();
    let chain = Module::ALL
        .iter()
        .map(|&m| {
            let wasm = SmartModuleInvocationWasm::Predefined(loaded_name(smartmodules_dir, m)?);
            Ok(invocation(wasm, params.of(m)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(with_accumulator(chain, Vec::new()))
}

/// Partition tasks → the committing loop.
enum ToSink {
    /// A contiguous run of offsets, ready to commit.
    Batch(Batch),
    /// Everything sent before is committed: answer with the checkpoint and the restart
    /// snapshot (JSON) to resume from.
    Resync {
        partition: u32,
        reply: oneshot::Sender<anyhow::Result<(i64, Vec<u8>)>>,
    },
    /// A SmartModule failed on one record (the run then stops).
    SmartModuleError {
        partition: u32,
        offset: i64,
        message: String,
    },
    /// A partition's streams were lost, stalled or could not replay a record, and are
    /// being reopened.
    Reconnect { partition: u32 },
    /// Fetches of `bytes` got a partition past a stall: remembered in the store.
    FetchSize { partition: u32, bytes: i32 },
    /// A partition task cannot go on.
    Fatal(anyhow::Error),
}

/// What partition tasks share.
struct Shared {
    target: ClusterTarget,
    topic: String,
    invocations: Invocations,
    /// `--max-bytes`.
    max_bytes: i32,
    /// Per partition: restart the streams from the store (set after an erasure).
    resync: Vec<AtomicBool>,
    /// Per partition: the end offset last polled from its leader (-1: not known yet).
    ends: Vec<AtomicI64>,
}

/// How long the end of a run waits for the triggers relay to send what the outbox holds.
const RELAY_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs until `shutdown` is requested, or with `stop_at_end` until every partition reached
/// its start-time end.
pub async fn run(cfg: &ClusterRunConfig, shutdown: &Shutdown, observer: &dyn Observer) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let fold_cfg = cfg.settings.fold_config()?;
    let invocations = Invocations::new(cfg)?;
    let fluvio = cfg.target.connect().await?;
    let admin = fluvio.admin().await;
    let partition_count = existing_topic_partitions(&admin, &cfg.topic).await?;
    let owned = owned_partitions(cfg.group.as_ref(), partition_count)?;
    let mut ends: Vec<Option<i64>> = vec![None; partition_count as usize];
    if cfg.stop_at_end {
        for &p in &owned {
            let end = end_offset(&fluvio, &cfg.topic, p).await?;
            tracing::info!(partition = p, end, "stopping at the end offset seen now");
            ends[p as usize] = Some(end);
        }
    }
    drop(admin);

    // A member's store holds only its partitions: the others never advance here, so they
    // are left out of the audience frontier.
    let mut settings = cfg.settings.clone();
    settings
        .watermark_ignore
        .extend((0..partition_count).filter(|p| !owned.contains(p)));
    let source = format!("{FLUVIO_SOURCE}{}", cfg.topic);
    let open = || {
        Run::open(
            &settings,
            partition_count,
            &source,
            SourceKind::Fluvio,
            observer,
            started,
        )
    };
    let mut run = open()?;
    if let Some(group) = &cfg.group {
        let foreign = foreign_partitions(run.store(), partition_count, &owned)?;
        if !foreign.is_empty() {
            if !group.rebalance {
                bail!(
                    "this store holds partitions {} that member `{}` does not own in the group {} (it owns {}); \
                     run with --rebalance to hand them over (the store is set aside and the owned partitions are \
                     rebuilt from the topic), or point --store at this member's own store",
                    list(&foreign),
                    group.member,
                    group.members,
                    list(&owned)
                );
            }
            drop(run);
            let aside = set_aside(&settings.store)?;
            run = open()?;
            // What the topic cannot give back comes from the store set aside: without its
            // suppressions the rebuild would bring erased persons back.
            let old = Store::open_existing(&aside)?;
            let suppressions = run.store().carry_over_from(&old).map_err(|e| {
                anyhow!(
                    "taking the suppressions and rules of {} into the rebuilt store: {e}",
                    aside.display()
                )
            })?;
            drop(old);
            tracing::warn!(
                partitions = %list(&foreign),
                set_aside = %aside.display(),
                suppressions,
                "--rebalance: handing over the partitions this member no longer owns; the store was set aside \
                 and the owned partitions are rebuilt from the topic, keeping its suppressions and rules \
                 (keep the old store until this run has caught up)"
            );
        }
    }
    // A partition this store has never consumed is read from offset 0: the topic must
    // still hold it, or the profiles would silently miss the records retention dropped.
    for &p in &owned {
        if run.store().checkpoint(p)?.is_none() {
            let start = start_offset(&fluvio, &cfg.topic, p).await?;
            if start > 0 {
                bail!(
                    "partition {p} must be rebuilt from the topic, but its retention no longer holds offset 0 \
                     (the first record is at {start}); keep the partition with a member whose store holds it, \
                     or rebuild from an archive of the events"
                );
            }
        }
    }
    drop(fluvio);
    tracing::info!(topic = %cfg.topic, partitions = partition_count, owned = %list(&owned), stop_at_end = cfg.stop_at_end, "consuming from the cluster");

    let shared = Arc::new(Shared {
        target: cfg.target.clone(),
        topic: cfg.topic.clone(),
        invocations,
        max_bytes: cfg.max_bytes,
        resync: (0..partition_count).map(|_| AtomicBool::new(false)).collect(),
        ends: ends.iter().map(|e| AtomicI64::new(e.unwrap_or(-1))).collect(),
    });
    let mut checkpoints = Vec::with_capacity(partition_count as usize);
    for p in 0..partition_count {
        checkpoints.push(run.store().checkpoint(p)?.map_or(-1, |c| c.offset));
    }
    let fetch_sizes = run.store().fetch_sizes()?;
    let (tx, mut rx) = mpsc::channel::<ToSink>(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for &p in &owned {
        let task = PartitionTask {
            partition: p,
            shared: shared.clone(),
            tx: tx.clone(),
            stop: stop_rx.clone(),
            merger: OffsetMerger::new(p, checkpoints[p as usize], cfg.settings.batch_size, ends[p as usize]),
            missing_since: None,
            max_bytes: cfg.max_bytes,
            past_stall: fetch_sizes.get(&p).copied().unwrap_or(0),
            stalled_at: None,
            last_sent: Instant::now(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    drop(tx);
    // The poller has its own channel: the loop below ends when the partition tasks do.
    let mut lag = LagBook::new(checkpoints);
    let (ends_tx, mut ends_rx) = mpsc::channel::<(u32, i64)>(partition_count as usize);
    let poller = tokio::spawn(poll_end_offsets(
        cfg.target.clone(),
        cfg.topic.clone(),
        owned.clone(),
        ends_tx,
    ));

    let woken = Arc::new(tokio::sync::Notify::new());
    let relay = cfg.triggers_topic.as_ref().map(|topic| {
        let relay = super::relay::Relay {
            target: cfg.target.clone(),
            topic: topic.clone(),
            store: run.store().clone(),
            woken: woken.clone(),
        };
        tracing::info!(topic = %topic, "relaying audience transitions to the triggers topic");
        tokio::spawn(relay.run(stop_rx.clone()))
    });

    // Erasures are noticed between messages; this bounds how long one waits when idle.
    let mut erasure_check = tokio::time::interval(Duration::from_millis(100));
    let stop_requested = shutdown.requested();
    tokio::pin!(stop_requested);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                None => break,
                Some(ToSink::Batch(first)) => {
                    // Group commit: the batches already waiting go in with this one, under
                    // one flush (they queue while a flush runs, so a burst costs one).
                    let mut group = vec![first];
                    let mut after = None;
                    while group.len() < MAX_COMMIT_GROUP {
                        match rx.try_recv() {
                            Ok(ToSink::Batch(batch)) => group.push(batch),
                            Ok(other) => {
                                after = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    for batch in &group {
                        run.tally().read(batch.events_in);
                    }
                    if run.commit_group(&group)?.iter().any(|c| !c.transitions.is_empty()) {
                        woken.notify_one();
                    }
                    for batch in &group {
                        if let Some(records) = lag.committed(batch.partition, batch.last_offset) {
                            observer.lag(batch.partition, records);
                        }
                    }
                    if let Some(msg) = after {
                        other_message(msg, &mut run, &fold_cfg)?;
                    }
                }
                Some(msg) => other_message(msg, &mut run, &fold_cfg)?,
            },
            Some((partition, end)) = ends_rx.recv() => {
                if let Some(known) = shared.ends.get(partition as usize) {
                    known.fetch_max(end, Ordering::SeqCst);
                }
                if let Some(records) = lag.end_polled(partition, end) {
                    observer.lag(partition, records);
                }
            }
            _ = &mut stop_requested, if !*stop_tx.borrow() => {
                run.tally().interrupted();
                let _ = stop_tx.send(true);
            }
            _ = erasure_check.tick() => {
                for p in 0..partition_count {
                    if observer.take_erased(p) {
                        shared.resync[p as usize].store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }
    poller.abort();
    for t in tasks {
        t.await.map_err(|e| anyhow!("a partition task panicked: {e}"))?;
    }
    if let Some(relay) = relay {
        // The relay sends what the outbox holds, then stops.
        let _ = stop_tx.send(true);
        if tokio::time::timeout(RELAY_DRAIN_TIMEOUT, relay).await.is_err() {
            tracing::warn!(
                "the triggers relay did not finish within {RELAY_DRAIN_TIMEOUT:?}; the next run sends the rest"
            );
        }
    }
    run.finish()
}

/// Each partition's end offset, asked of its leader, for `onramp stats`.
pub async fn end_offsets(target: &ClusterTarget, topic: &str) -> anyhow::Result<Vec<i64>> {
    let fluvio = target.connect().await?;
    let partitions = existing_topic_partitions(&fluvio.admin().await, topic).await?;
    let mut ends = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        ends.push(end_offset(&fluvio, topic, p).await?);
    }
    Ok(ends)
}

/// A partition's end offset (the offset its next record will get), asked of its leader:
/// the last record read with no SmartModule (the SC's partition status can lag behind).
async fn end_offset(fluvio: &fluvio::Fluvio, topic: &str, partition: u32) -> anyhow::Result<i64> {
    let offsets = read_offsets(fluvio, topic, partition, Offset::from_end(1), usize::MAX, "end").await?;
    Ok(offsets.into_iter().max().map_or(0, |last| last + 1))
}

/// The offset of a partition's first record (0 for an empty one): above 0 once
/// retention deleted the oldest segments.
async fn start_offset(fluvio: &fluvio::Fluvio, topic: &str, partition: u32) -> anyhow::Result<i64> {
    let offsets = read_offsets(fluvio, topic, partition, Offset::beginning(), 1, "start").await?;
    Ok(offsets.first().copied().unwrap_or(0))
}

/// `max_bytes` of the first fetch [`read_offsets`] tries.
const EDGE_FETCH_BYTES: i32 = 1 << 20;
/// The largest it grows to.
const MAX_EDGE_FETCH_BYTES: i32 = 256 << 20;

/// The offsets of the records read from `start` to the end of `partition` (no
/// SmartModule, at most `take`). A fetch whose first producer batch is larger than its
/// `max_bytes` returns nothing — a topic written with large batches would look empty —
/// so an empty read is tried again with four times the size, from [`EDGE_FETCH_BYTES`]
/// up to [`MAX_EDGE_FETCH_BYTES`].
async fn read_offsets(
    fluvio: &fluvio::Fluvio,
    topic: &str,
    partition: u32,
    start: Offset,
    take: usize,
    what: &str,
) -> anyhow::Result<Vec<i64>> {
    let mut max_bytes = EDGE_FETCH_BYTES;
    loop {
        let config = ConsumerConfigExt::builder()
            .topic(topic.to_string())
            .partition(partition)
            .offset_start(start.clone())
            .disable_continuous(true)
            .max_bytes(max_bytes)
            .retry_mode(RetryMode::Disabled)
            .build()?;
        let mut stream = fluvio
            .consumer_with_config(config)
            .await
            .map_err(|e| anyhow!("reading the {what} of partition {partition}: {e:#}"))?;
        let mut offsets = Vec::new();
        while offsets.len() < take {
            let Some(item) = stream.next().await else { break };
            let record = item.map_err(|e| anyhow!("reading the {what} of partition {partition}: {e}"))?;
            offsets.push(record.offset);
        }
        if !offsets.is_empty() || max_bytes >= MAX_EDGE_FETCH_BYTES {
            return Ok(offsets);
        }
        max_bytes = max_bytes.saturating_mul(4).min(MAX_EDGE_FETCH_BYTES);
    }
}

/// The partitions `group`'s member owns (all of them without a group).
fn owned_partitions(group: Option<&Group>, partitions: u32) -> anyhow::Result<Vec<u32>> {
    let Some(group) = group else {
        return Ok((0..partitions).collect());
    };
    if group.members.get(&group.member).is_none() {
        bail!("--member {}: not one of --members ({})", group.member, group.members);
    }
    let owned = group.members.owned(&group.member, partitions);
    if owned.is_empty() {
        bail!(
            "member `{}` owns none of the topic's {partitions} partitions in the group {}: it would consume nothing \
             (a group needs no more members than partitions)",
            group.member,
            group.members
        );
    }
    Ok(owned)
}

/// Partitions outside `owned` that the store has consumed.
fn foreign_partitions(store: &Store, partitions: u32, owned: &[u32]) -> anyhow::Result<Vec<u32>> {
    let mut foreign = Vec::new();
    for p in (0..partitions).filter(|p| !owned.contains(p)) {
        if store.checkpoint(p)?.is_some() {
            foreign.push(p);
        }
    }
    Ok(foreign)
}

/// Renames the store directory to `<store>.handed-over-<unix seconds>`; returns the new path.
fn set_aside(store: &Path) -> anyhow::Result<PathBuf> {
    // `dir/` names `dir`: the suffix goes on the name, not inside it.
    let store = store.components().as_path();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = store.as_os_str().to_owned();
    aside.push(format!(".handed-over-{secs}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(store, &aside)
        .with_context(|| format!("setting the store {} aside as {}", store.display(), aside.display()))?;
    Ok(aside)
}

fn list(partitions: &[u32]) -> String {
    let names: Vec<String> = partitions.iter().map(u32::to_string).collect();
    names.join(",")
}

/// Asks every partition's leader for its end offset each [`LAG_POLL_INTERVAL`] and sends
/// the figures to `ends`, until that channel closes. A failed round is logged and tried
/// again at the next tick (the partition tasks report lost streams themselves).
async fn poll_end_offsets(target: ClusterTarget, topic: String, partitions: Vec<u32>, ends: mpsc::Sender<(u32, i64)>) {
    let mut tick = tokio::time::interval(LAG_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client: Option<fluvio::Fluvio> = None;
    loop {
        tick.tick().await;
        let fluvio = match client.take() {
            Some(fluvio) => fluvio,
            None => match target.connect().await {
                Ok(fluvio) => fluvio,
                Err(e) => {
                    tracing::debug!("lag: cannot reach the cluster, trying again in {LAG_POLL_INTERVAL:?}: {e:#}");
                    continue;
                }
            },
        };
        let mut healthy = true;
        for &p in &partitions {
            match tokio::time::timeout(LAG_POLL_INTERVAL, end_offset(&fluvio, &topic, p)).await {
                Ok(Ok(end)) => {
                    if ends.send((p, end)).await.is_err() {
                        return;
                    }
                }
                // The other partitions are still asked: their figures also drive the stall check.
                Ok(Err(e)) => {
                    tracing::debug!(partition = p, "lag: {e:#}; trying again in {LAG_POLL_INTERVAL:?}");
                    healthy = false;
                }
                Err(_) => {
                    tracing::debug!(
                        partition = p,
                        "lag: the leader did not answer within {LAG_POLL_INTERVAL:?}; trying again"
                    );
                    healthy = false;
                }
            }
        }
        // After a failure, connect afresh next time (the SPU or the SC may have moved).
        if healthy {
            client = Some(fluvio);
        }
    }
}

/// The `max_bytes` to reopen a stalled partition with: twice `current`, or at once the
/// size that got the partition past its last stall (`past_stall`) when that is larger —
/// a topic whose producer batches each give more output than `--max-bytes` would
/// otherwise climb through every doubling, waiting out a stall at each, after every
/// restart and every replay miss.
pub fn grown_fetch_size(current: i32, past_stall: i32) -> i32 {
    current.saturating_mul(2).max(past_stall)
}

/// Why the streams are stalled, if they are: the merged offsets stopped at `next` for
/// `silent` — more than [`STALL_AFTER`], plus a second per MiB of `max_bytes` and per
/// [`SCAN_RATE`] records of backlog — while the partition's leader ends at `end`, past
/// them. (Time spent handing batches to a busy committing loop is not silence.)
///
/// This is how Fluvio 0.50's SPU fails when a fetch's first producer batch that has any
/// output gives more than `max_bytes` on its own (always the case when such a batch was
/// cut and is fetched again): it sends nothing, yet marks the stream caught up to the
/// high watermark, so the stream stays silent and later records come from there,
/// skipping the range. Reopening from the checkpoint with a larger `max_bytes` (see
/// `Closed::Stalled`) gets past it; nothing past the gap was committed. A slow SPU
/// looks the same from here, hence the patience; a false alarm costs a reopen and a
/// larger fetch until the checkpoint passes `next`, never a record.
pub fn stall_reason(silent: Duration, next: i64, end: i64, max_bytes: i32) -> Option<String> {
    if end <= next || max_bytes == i32::MAX {
        return None;
    }
    let backlog = (end - next) as u64;
    let patience =
        STALL_AFTER + Duration::from_secs((max_bytes.max(0) as u64) >> 20) + Duration::from_secs(backlog / SCAN_RATE);
    (silent > patience).then(|| {
        format!(
            "offset {next} did not come in {}s while the partition ends at {end}: the SPU sent nothing \
             (a producer batch whose chain output alone is larger than max_bytes {})",
            silent.as_secs(),
            max_bytes
        )
    })
}

/// Handles a partition task's message other than a batch (the committing loop's).
fn other_message(msg: ToSink, run: &mut Run<'_>, fold_cfg: &FoldConfig) -> anyhow::Result<()> {
    match msg {
        ToSink::Batch(batch) => bail!(
            "internal: batch of partition {} reached the message handler uncommitted",
            batch.partition
        ),
        ToSink::Resync { partition, reply } => {
            let answer = resume_point(run.store(), partition, fold_cfg.state_ttl_ms);
            let _ = reply.send(answer);
        }
        ToSink::SmartModuleError {
            partition,
            offset,
            message,
        } => run.smartmodule_error(partition, offset, &message),
        ToSink::Reconnect { partition } => run.reconnecting(partition),
        ToSink::FetchSize { partition, bytes } => {
            // A hint for the next stall: losing it costs time, never a record.
            if let Err(e) = run.store().record_fetch_size(partition, bytes) {
                tracing::warn!(partition, "cannot remember the fetch size that got past a stall: {e}");
            }
        }
        ToSink::Fatal(e) => return Err(e),
    }
    Ok(())
}

/// The checkpoint and restart snapshot a partition resumes from.
fn resume_point(store: &Store, partition: u32, state_ttl_ms: i64) -> anyhow::Result<(i64, Vec<u8>)> {
    let checkpoint = store.checkpoint(partition)?.map_or(-1, |c| c.offset);
    let mut snapshot = store.snapshot(partition, state_ttl_ms)?;
    // The SPU resumes at the start of the producer batch holding checkpoint + 1.
    snapshot.resume_after = (checkpoint >= 0).then_some(checkpoint);
    Ok((checkpoint, serde_json::to_vec(&snapshot)?))
}

/// Why a partition's streams were closed.
enum Closed {
    /// ctrl-c, or the end offset of `--stop-at-end` was reached.
    Done,
    /// Reopen from the checkpoint at once (after an erasure, a replay the aggregate could
    /// not answer).
    Reopen(&'static str),
    /// The SPU sent nothing while records wait (from offset `at`): reopen at once with a
    /// larger `max_bytes`.
    Stalled { why: String, at: i64 },
    /// Reopen after a backoff (connection lost, SPU gone…).
    Lost(String),
}

struct PartitionTask {
    partition: u32,
    shared: Arc<Shared>,
    tx: mpsc::Sender<ToSink>,
    stop: watch::Receiver<bool>,
    /// Merges the two streams; knows the end offset of `--stop-at-end`.
    merger: OffsetMerger,
    /// Since when the loaded modules are reported missing (a module just loaded takes a
    /// moment to reach the SPU); fatal after [`MISSING_MODULE_GRACE`].
    missing_since: Option<Instant>,
    /// `max_bytes` of this partition's fetches: `--max-bytes`, doubled after each stall.
    max_bytes: i32,
    /// The `max_bytes` that last got this partition past a stall (0: none), remembered in
    /// the store across runs: a stall grows straight to it.
    past_stall: i32,
    /// The offset a stall was noticed at; once the checkpoint is past it, the next open
    /// goes back to `--max-bytes`.
    stalled_at: Option<i64>,
    /// When the last batch was handed to the committing loop (time spent waiting for it
    /// is not time the streams were silent).
    last_sent: Instant,
}

/// A stream of the chain's output batches. Batches, not the client's record stream: the
/// client numbers records `base offset + position in the output batch` (fluvio 0.50), which
/// is not their offset once a filter dropped records, and drops records "before" the start
/// offset by that number. Offsets come from the updates' and rejects' own JSON instead.
type BatchStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<fluvio::dataplane::record::Batch, ErrorCode>> + Send + 'static>,
>;

impl PartitionTask {
    async fn run(mut self) {
        if let Err(e) = self.follow_partition().await {
            // A refused snapshot names its partition already, in the embedded run's words.
            let e = if e.is::<RefusedSnapshot>() {
                e
            } else {
                e.context(format!("partition {}", self.partition))
            };
            let _ = self.tx.send(ToSink::Fatal(e)).await;
        }
    }

    async fn follow_partition(&mut self) -> anyhow::Result<()> {
        let p = self.partition;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (reply, answer) = oneshot::channel();
            if self.tx.send(ToSink::Resync { partition: p, reply }).await.is_err() {
                return Ok(());
            }
            let (checkpoint, accumulator) = answer.await.map_err(|_| anyhow!("the committing loop stopped"))??;
            self.merger.reopen(checkpoint);
            if self.stalled_at.is_some_and(|at| checkpoint > at) {
                tracing::info!(
                    partition = p,
                    max_bytes = self.shared.max_bytes,
                    "past the stalled offset; back to --max-bytes"
                );
                self.max_bytes = self.shared.max_bytes;
                self.stalled_at = None;
            }
            if *self.stop.borrow() || self.merger.at_end() {
                tracing::info!(partition = p, checkpoint, "partition done");
                return Ok(());
            }
            let opened = self.open(checkpoint + 1, accumulator).await;
            let closed = match opened {
                Ok((_client, updates, rejects)) => {
                    tracing::info!(partition = p, from = checkpoint + 1, "streams open");
                    let closed = self.merge(updates, rejects, &mut backoff).await?;
                    let stats = self.merger.stats();
                    tracing::debug!(
                        partition = p,
                        resent = stats.resent,
                        duplicates = stats.duplicates,
                        past_end = stats.past_end,
                        "streams closed; offsets ignored so far"
                    );
                    closed
                }
                Err(e) => Closed::Lost(format!("{e:#}")),
            };
            match closed {
                Closed::Done => {
                    tracing::info!(partition = p, "partition done");
                    return Ok(());
                }
                Closed::Reopen(why) => {
                    tracing::info!(partition = p, "reopening the streams: {why}");
                }
                Closed::Stalled { why, at } => {
                    let _ = self.tx.send(ToSink::Reconnect { partition: p }).await;
                    let grown = grown_fetch_size(self.max_bytes, self.past_stall);
                    self.stalled_at = Some(at);
                    tracing::warn!(
                        partition = p,
                        "{why}; reopening from the checkpoint with max_bytes {grown} (was {})",
                        self.max_bytes
                    );
                    self.max_bytes = grown;
                }
                Closed::Lost(why) => {
                    tracing::warn!(partition = p, "streams lost ({why}); reconnecting in {backoff:?}");
                    let _ = self.tx.send(ToSink::Reconnect { partition: p }).await;
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Connects and opens both streams at `from`.
    async fn open(
        &self,
        from: i64,
        accumulator: Vec<u8>,
    ) -> anyhow::Result<(fluvio::Fluvio, BatchStream, BatchStream)> {
        let fluvio = self.shared.target.connect().await?;
        // Deprecated in favour of `consumer_with_config`, whose record stream misnumbers
        // a chain's output (see `BatchStream`); the batch stream below is the raw protocol.
        #[allow(deprecated)]
        let consumer = fluvio
            .partition_consumer(self.shared.topic.clone(), self.partition)
            .await
            .map_err(|e| anyhow!("{e:#}"))?;
        let offset = Offset::absolute(from).map_err(|e| anyhow!("offset {from}: {e}"))?;
        let config = |chain: Vec<SmartModuleInvocation>| {
            ConsumerConfig::builder()
                .smartmodule(chain)
                .max_bytes(self.max_bytes)
                .build()
        };
        let updates = consumer
            .stream_batches_with_config(
                offset.clone(),
                config(self.shared.invocations.updates_from(accumulator))?,
            )
            .await
            .map_err(|e| anyhow!("opening the update stream: {e:#}"))?;
        let rejects = consumer
            .stream_batches_with_config(offset, config(self.shared.invocations.rejects.clone())?)
            .await
            .map_err(|e| anyhow!("opening the reject stream: {e:#}"))?;
        // The client must outlive its streams (they share its connections).
        Ok((fluvio, Box::pin(updates), Box::pin(rejects)))
    }

    /// Merges both streams by offset ([`OffsetMerger`]) and sends the batches to the
    /// committing loop until the streams must be closed.
    async fn merge(
        &mut self,
        mut updates: BatchStream,
        mut rejects: BatchStream,
        backoff: &mut Duration,
    ) -> anyhow::Result<Closed> {
        let p = self.partition;
        let (mut updates_open, mut rejects_open) = (true, true);
        // A record of the update stream that is not an update: the partial output of a stage
        // before a failing SmartModule (an error item follows), or a foreign module.
        let mut not_an_update: Option<String> = None;
        let mut stop = self.stop.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        // The highest offset each stream sent so far (a stream past the gap is held back
        // once too much waits behind it).
        let (mut updates_hi, mut rejects_hi) = (i64::MIN, i64::MIN);
        // When the merged offsets last moved (or the partition was caught up).
        let mut progress_at = Instant::now();
        let mut merged_to = self.merger.next_offset();
        loop {
            let mut lost: Option<String> = None;
            // Biased: the streams are polled before the idle branch, so a partial batch is
            // committed as soon as neither stream has a record ready (no fixed linger).
            let idle = self.merger.has_partial();
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    self.flush().await;
                    return Ok(Closed::Done);
                }
                item = updates.next(), if updates_open && self.merger.may_read(updates_hi, MAX_WAITING) => match item {
                    Some(Ok(out)) => {
                        if let Some(e) = not_an_update.take() {
                            bail!(
                                "the update stream emitted a non-update near offset {} ({e}); is the loaded onramp-profile the same version?",
                                self.merger.next_offset()
                            );
                        }
                        for record in out.records() {
                            match serde_json::from_slice::<ProfileUpdate>(record.value().as_ref()) {
                                Ok(update) => {
                                    updates_hi = updates_hi.max(update.offset);
                                    if let Err(refused) = self.merger.push_update(update) {
                                        // What precedes the refused record is committed; nothing after.
                                        self.flush().await;
                                        return Err(refused.into());
                                    }
                                }
                                Err(e) => not_an_update = Some(e.to_string()),
                            }
                        }
                        *backoff = FIRST_BACKOFF;
                        self.missing_since = None;
                    }
                    Some(Err(e)) => {
                        updates_open = false;
                        lost = self.stream_error("update", e).await?;
                    }
                    None => {
                        updates_open = false;
                        lost = Some("the update stream ended".into());
                    }
                },
                item = rejects.next(), if rejects_open && self.merger.may_read(rejects_hi, MAX_WAITING) => match item {
                    Some(Ok(out)) => {
                        for record in out.records() {
                            let reject: RejectedEvent = serde_json::from_slice(record.value().as_ref()).with_context(|| {
                                format!(
                                    "the reject stream emitted a non-reject near offset {}; is the loaded onramp-validate the same version?",
                                    self.merger.next_offset()
                                )
                            })?;
                            let Some(offset) = reject.offset else {
                                bail!("the loaded onramp-validate emits rejects without their offset (an older build); load this one with `onramp setup --replace`");
                            };
                            rejects_hi = rejects_hi.max(offset);
                            self.merger.push_reject(offset, reject);
                        }
                        *backoff = FIRST_BACKOFF;
                        self.missing_since = None;
                    }
                    Some(Err(e)) => {
                        rejects_open = false;
                        lost = self.stream_error("reject", e).await?;
                    }
                    None => {
                        rejects_open = false;
                        lost = Some("the reject stream ended".into());
                    }
                },
                _ = tick.tick() => {}
                _ = std::future::ready(()), if idle => self.flush().await,
            }
            let next = self.merger.next_offset();
            let end = self.shared.ends[p as usize].load(Ordering::SeqCst);
            if next != merged_to || end <= next {
                merged_to = next;
                progress_at = Instant::now();
            }
            if let Some(why) = self.stalled(progress_at.max(self.last_sent).elapsed(), next, end) {
                self.flush().await;
                return Ok(Closed::Stalled { why, at: next });
            }
            if self.merger.replay_evicted_next() {
                tracing::warn!(
                    partition = p,
                    offset = next,
                    "the profile aggregate no longer held the update of a record the SPU fed it again"
                );
                self.flush().await;
                let _ = self.tx.send(ToSink::Reconnect { partition: p }).await;
                return Ok(Closed::Reopen("a re-fed record could not be replayed"));
            }

            while let Some(batch) = self.merger.take_ready() {
                self.send(batch).await;
            }

            let closing = if self.merger.at_end() {
                Some(Closed::Done)
            } else if self.shared.resync[p as usize].swap(false, Ordering::SeqCst) {
                Some(Closed::Reopen("a user of this partition was erased"))
            } else {
                lost.map(Closed::Lost)
            };
            if let Some(reason) = closing {
                self.flush().await;
                return Ok(reason);
            }
        }
    }

    /// Why the streams are stalled, if they are: see [`stall_reason`].
    fn stalled(&self, silent: Duration, next: i64, end: i64) -> Option<String> {
        stall_reason(silent, next, end, self.max_bytes)
    }

    /// Handles an error item. A SmartModule runtime error is logged with its offset,
    /// counted, what is merged is committed, and the run stops with the reason: with Fluvio
    /// 0.50 it cannot be skipped, because the SPU re-runs the whole producer batch holding
    /// the resume offset (so it fails again), and a failing stage's partial output bypasses
    /// the modules after it (so the records before it in the batch never become updates).
    /// Our modules never fail on any input; this is for a broken or foreign module. Any other
    /// error means reconnecting (returns the reason).
    async fn stream_error(&mut self, stream: &str, error: ErrorCode) -> anyhow::Result<Option<String>> {
        match error {
            ErrorCode::SmartModuleRuntimeError(e) => {
                let hint = e.hint.lines().next().unwrap_or_default().to_string();
                let _ = self
                    .tx
                    .send(ToSink::SmartModuleError {
                        partition: self.partition,
                        offset: e.offset,
                        message: format!("{stream} stream: {hint}"),
                    })
                    .await;
                self.flush().await;
                bail!(
                    "a SmartModule failed on offset {} of partition {} ({stream} stream: {hint}). Everything \
                     before that record's producer batch is committed; fix or replace the module and run \
                     again (Fluvio re-runs the whole batch, so the record cannot be skipped)",
                    e.offset,
                    self.partition
                )
            }
            e @ ErrorCode::SmartModuleNotFound { .. } => {
                let since = *self.missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > MISSING_MODULE_GRACE {
                    bail!("the {stream} stream's SmartModule chain cannot start: {e} (for {}s). Load the modules with `onramp setup`, or run with --adhoc", MISSING_MODULE_GRACE.as_secs());
                }
                Ok(Some(format!("{stream} stream: {e}; waiting for it to reach the SPU")))
            }
            e @ (ErrorCode::SmartModuleInvalid { .. }
            | ErrorCode::SmartModuleInvalidExports { .. }
            | ErrorCode::SmartModuleChainInitError(_)
            | ErrorCode::SmartModuleInitError(_)) => {
                bail!("the {stream} stream's SmartModule chain cannot start: {e}. Load the modules with `onramp setup` (or run with --adhoc), and check --param")
            }
            e => Ok(Some(format!("{stream} stream: {e}"))),
        }
    }

    /// Sends every consecutive offset the merger holds (before closing the streams, or a
    /// partial batch once both streams are idle).
    async fn flush(&mut self) {
        while let Some(batch) = self.merger.flush() {
            self.send(batch).await;
        }
    }

    async fn send(&mut self, batch: Batch) {
        if batch.events_in == 0 {
            return;
        }
        // The first batch through the offset a stall was noticed at: this size got past it.
        let past = self.stalled_at.is_some_and(|at| batch.last_offset >= at) && self.max_bytes > self.past_stall;
        let _ = self.tx.send(ToSink::Batch(batch)).await;
        self.last_sent = Instant::now();
        if past {
            self.past_stall = self.max_bytes;
            let _ = self
                .tx
                .send(ToSink::FetchSize {
                    partition: self.partition,
                    bytes: self.max_bytes,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i32 = 1 << 20;

    #[test]
    fn a_stall_needs_records_past_the_merged_offsets_and_silence_beyond_patience() {
        let s = Duration::from_secs;
        // Caught up (nothing after `next`): never, however long the silence.
        assert!(stall_reason(s(3_600), 500, 500, 4 * MIB).is_none());
        // 5 s + 4 s for 4 MiB + 0 s for 1,000 records of backlog.
        assert!(stall_reason(s(9), 0, 1_000, 4 * MIB).is_none());
        let why = stall_reason(s(10), 0, 1_000, 4 * MIB).expect("a stall");
        assert!(
            why.contains("offset 0") && why.contains("ends at 1000") && why.contains("4194304"),
            "{why}"
        );
        // A backlog of 2M records adds 100 s: the SPU may be scanning it.
        assert!(stall_reason(s(100), 0, 2_000_000, 4 * MIB).is_none());
        assert!(stall_reason(s(110), 0, 2_000_000, 4 * MIB).is_some());
        // At the largest max_bytes there is nothing to grow to.
        assert!(stall_reason(s(100_000), 0, 1_000, i32::MAX).is_none());
    }

    /// A stall doubles the fetch size, or jumps straight to the size that got the
    /// partition past its last stall; it never shrinks and saturates at `i32::MAX`.
    #[test]
    fn a_stall_grows_to_the_size_that_worked_last_time() {
        assert_eq!(grown_fetch_size(MIB, 0), 2 * MIB);
        assert_eq!(grown_fetch_size(MIB, 64 * MIB), 64 * MIB, "one reopen instead of six");
        assert_eq!(grown_fetch_size(32 * MIB, 8 * MIB), 64 * MIB);
        assert_eq!(grown_fetch_size(i32::MAX / 2 + 1, 0), i32::MAX);
    }
}
