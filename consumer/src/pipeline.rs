//! The embedded pipeline behind `onramp run`: source → partitioner → one chain per
//! partition (in-process `fluvio-smartengine`) → one store transaction per batch.
//!
//! Per partition, records are gathered into batches of `batch_size`; each batch goes
//! through the chain, the records the validate filter dropped are run through the same
//! validate module in `mode=rejected` to learn their reasons, and the updates, rejects,
//! counters and the new checkpoint are committed together ([`Store::commit`]). With
//! [`Durability::Durable`] each commit is flushed (fsync) before the next batch is read.
//!
//! On start each partition resumes after its checkpoint: the source is read from the
//! beginning, records at or below the checkpoint are skipped, and the profile aggregate
//! gets the partition's restart snapshot, so a run that crashed and restarted ends with
//! the same store as one that never stopped.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fluvio_smartengine::SmartEngine;
use onramp_logic::fold::FoldConfig;
use onramp_schemas::{Outcome, ProfileUpdate, RejectReason, RejectedEvent, SkipKind, REJECT_PAYLOAD_HEAD};

use crate::chain::{Chain, ChainParams, InputRecord};
use crate::partition::{KeyBy, Partitioner};
use crate::source::{Input, Line, Lines, Oversize};
use crate::store::{Batch, Committed, InputPosition, InputSegment, Store, StoreSettings};
use crate::wasm::{Module, WasmModules};

/// Default records per partition batch.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Default partition count.
pub const DEFAULT_PARTITIONS: u32 = 1;
/// How often progress is logged when stderr is not a terminal.
pub const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// What a commit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Each batch is flushed to disk (fsync) before the next is read: a crash loses
    /// nothing that was reported committed.
    Durable,
    /// Batches are committed atomically but flushed by sled in the background (every
    /// 500 ms): faster; a crash may lose the last commits, which the next run simply
    /// processes again from the checkpoint — still exactly once.
    Relaxed,
}

/// Everything `onramp run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Where events come from.
    pub input: Input,
    /// Store directory.
    pub store: PathBuf,
    /// Partition count.
    pub partitions: u32,
    /// Chain params.
    pub params: ChainParams,
    /// Directory of the built `.wasm` modules.
    pub wasm_dir: PathBuf,
    /// Records per partition batch.
    pub batch_size: usize,
    /// Flush policy.
    pub durability: Durability,
    /// Show a progress bar (stderr is a terminal) instead of periodic log lines.
    pub progress_bar: bool,
    /// Longest a record waits in a partial batch before it is committed.
    pub linger: Duration,
    /// Longest line read whole; longer ones are rejected `too_large` at the source.
    pub max_line_bytes: usize,
    /// The input comes after everything the store consumed (a new file for the same
    /// store), instead of being the store's input from its start.
    pub append: bool,
    /// What records are keyed (and so partitioned) by.
    pub key_by: KeyBy,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Where the records came from.
    pub source: SourceKind,
    /// Lines (records, for a cluster) read from the source.
    pub lines_read: u64,
    /// Lines skipped because an earlier run already committed them.
    pub already_committed: u64,
    /// Records processed by this run.
    pub events_in: u64,
    /// Records the validate filter accepted.
    pub accepted: u64,
    /// Rejected records by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Updates applied to profiles.
    pub applied: u64,
    /// Duplicates dropped by the fold.
    pub duplicates: u64,
    /// Updates skipped by the fold.
    pub skipped: u64,
    /// Distinct profiles written.
    pub profiles_touched: u64,
    /// Live users the profile aggregate evicted to stay within its `max_users`.
    pub fold_evictions: u64,
    /// Batches committed.
    pub batches: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
    /// Time inside the chain, ms.
    pub chain_ms: u64,
    /// Time committing to the store, ms.
    pub store_ms: u64,
    /// SmartModule runtime errors in the cluster (each logged with its offset; the run stops).
    pub smartmodule_errors: u64,
    /// Times a partition's cluster streams were reopened after being lost.
    pub reconnects: u64,
    /// True when stopped by a signal before the input ended.
    pub interrupted: bool,
}

impl Summary {
    /// Records per second of wall time.
    pub fn events_per_sec(&self) -> f64 {
        self.events_in as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }

    /// Total rejects.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        match self.source {
            SourceKind::Embedded => s += &format!("lines read          {}\n", self.lines_read),
            SourceKind::Fluvio => s += &format!("records read        {}\n", self.lines_read),
        }
        if self.already_committed > 0 {
            s += &format!(
                "already committed   {} (skipped: an earlier run applied them)\n",
                self.already_committed
            );
        }
        s += &format!("events in           {}\n", self.events_in);
        s += &format!("accepted            {}\n", self.accepted);
        s += &format!("rejected            {}\n", self.rejected_total());
        for (reason, n) in &self.rejected {
            s += &format!("  {reason:<24}{n}\n");
        }
        s += &format!("duplicates          {}\n", self.duplicates);
        if self.skipped > 0 {
            s += &format!("skipped by fold     {}\n", self.skipped);
        }
        s += &format!("profile updates     {}\n", self.applied);
        s += &format!("profiles touched    {}\n", self.profiles_touched);
        if self.fold_evictions > 0 {
            s += &format!(
                "fold evictions      {} (users over the aggregate's max_users; each loses its session and dedup window)\n",
                self.fold_evictions
            );
        }
        let chain = match self.source {
            SourceKind::Embedded => format!("chain {:.2}s", self.chain_ms as f64 / 1000.0),
            SourceKind::Fluvio => "chain in the SPU".to_string(),
        };
        s += &format!(
            "time                {:.2}s ({:.0} events/s; {chain}, store {:.2}s)\n",
            self.elapsed_ms as f64 / 1000.0,
            self.events_per_sec(),
            self.store_ms as f64 / 1000.0
        );
        if self.smartmodule_errors > 0 {
            s += &format!(
                "smartmodule errors  {} (each is logged with its offset)\n",
                self.smartmodule_errors
            );
        }
        if self.reconnects > 0 {
            s += &format!("reconnects          {}\n", self.reconnects);
        }
        if self.interrupted {
            s += "stopped early by a signal; the last batches were committed. Run again to continue.\n";
        }
        s
    }
}

/// Where a run's records came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A file, stdin or the generator, through the chain in-process.
    #[default]
    Embedded,
    /// A Fluvio topic, through the chain in the SPU.
    Fluvio,
}

/// The store fingerprint of a run's chain params (a store refuses other params).
pub fn params_fingerprint(params: &ChainParams) -> String {
    let mut parts = Vec::new();
    for m in Module::ALL {
        for (k, v) in params.of(m) {
            parts.push(format!("{}.{k}={v}", m.short_name()));
        }
    }
    if parts.is_empty() {
        "defaults".into()
    } else {
        parts.join(",")
    }
}

struct PartitionState {
    chain: Chain,
    checkpoint: i64,
    next_offset: i64,
    /// The checkpoint's offset and input position, when it was committed from this input.
    verify: Option<(i64, InputPosition)>,
    pending: Vec<InputRecord>,
    /// Records rejected before the chain (lines over the size limit).
    pending_rejects: Vec<(i64, RejectedEvent)>,
    pending_bytes: usize,
    /// When the oldest pending record arrived (for `--linger`).
    pending_since: Option<Instant>,
    /// Line number and input fingerprint of the last record queued.
    last_input: Option<(u64, u128)>,
}

/// Hooks into a run: the read API and metrics watch it through this.
pub trait Observer: Sync {
    /// The store is open (before the first record is read).
    fn store_opened(&self, _store: &Store) -> anyhow::Result<()> {
        Ok(())
    }
    /// A batch was committed; `backlog` is the number of records read but not yet committed.
    fn committed(&self, _batch: &Batch, _committed: &Committed, _apply_seconds: f64, _backlog: u64) {}
    /// True (once) when a user of `partition` was erased since the last call: the
    /// partition's chain is then restarted from the store's snapshot, so the profile
    /// aggregate forgets the erased user's in-memory state too.
    fn take_erased(&self, _partition: u32) -> bool {
        false
    }
    /// Cluster source: a SmartModule failed on the record at `offset` (it was skipped).
    fn smartmodule_error(&self, _partition: u32, _offset: i64) {}
    /// Cluster source: a partition's streams were lost and are being reopened.
    fn reconnecting(&self, _partition: u32) {}
    /// Cluster source: records in `partition` after its committed checkpoint, from the end
    /// offset its leader last reported (polled every few seconds).
    fn lag(&self, _partition: u32, _records: u64) {}
}

/// No hooks.
impl Observer for () {}

/// Runs the pipeline until the input ends or `shutdown` is set.
pub fn run(cfg: &RunConfig, shutdown: &AtomicBool) -> anyhow::Result<Summary> {
    run_observed(cfg, shutdown, &())
}

/// One line of the input, read, keyed and partitioned by the reader thread.
struct ReadLine {
    /// Line number in the input, from 0.
    number: u64,
    partition: u32,
    key: Option<Vec<u8>>,
    line: Line,
    /// Fingerprint of the input's lines up to and including this one.
    fingerprint: u128,
}

/// Chains a line into the input's fingerprint (SipHash-1-3, 128 bits, zero keys):
/// `f' = H(f ++ len ++ bytes)`; an oversize line counts by its size and SHA-256.
fn chain_fingerprint(previous: u128, line: &Line) -> u128 {
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new();
    h.write(&previous.to_le_bytes());
    match line {
        Line::Whole(bytes) => {
            h.write(&(bytes.len() as u64).to_le_bytes());
            h.write(bytes);
        }
        Line::Oversize(o) => {
            h.write(&o.bytes.to_le_bytes());
            h.write(o.sha256.as_bytes());
        }
    }
    siphasher::sip128::Hasher128::finish128(&h).as_u128()
}

/// Reads the input on its own thread, so the run loop can commit on linger and see
/// signals while a read blocks (stdin, a FIFO), and so reading and partitioning overlap
/// the chain. Memory: at most [`READ_AHEAD_LINES`] lines in flight.
fn spawn_reader(
    lines: Lines,
    partitions: u32,
    key_by: KeyBy,
) -> std::sync::mpsc::Receiver<Result<ReadLine, crate::source::SourceError>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_LINES);
    std::thread::Builder::new()
        .name("onramp-source".into())
        .spawn(move || {
            let mut partitioner = Partitioner::new(partitions);
            let mut fingerprint = 0u128;
            for (number, line) in lines.enumerate() {
                let item = line.map(|line| {
                    let key = match &line {
                        Line::Whole(bytes) => key_by.key(bytes),
                        Line::Oversize(_) => None,
                    };
                    fingerprint = chain_fingerprint(fingerprint, &line);
                    ReadLine {
                        number: number as u64,
                        partition: partitioner.partition(key.as_deref()),
                        key,
                        line,
                        fingerprint,
                    }
                });
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!("cannot start the source thread: {e}"));
    rx
}

/// Lines the reader thread may read ahead of the run loop.
pub const READ_AHEAD_LINES: usize = 256;
/// A partition's batch is committed once its records hold this many bytes, whatever its
/// record count, so no batch can approach the engine's memory limit.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Default longest a record waits in a partial batch before it is committed.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);

/// Which input this run consumes, and from where (see [`InputSegment`]).
fn start_input_segment(store: &Store, append: bool, partitions: u32) -> anyhow::Result<InputSegment> {
    let segment = match (store.input_segment()?, append) {
        (None, _) => InputSegment {
            id: 0,
            base: vec![0; partitions as usize],
            complete: false,
            first_line: None,
            previous_first_line: None,
        },
        (Some(s), false) if s.id == 0 => s,
        (Some(s), false) => bail!(
            "store {} went on with --append (it is on its input number {}): run that input again with --append to resume it, or pass --append with the next input",
            store.path().display(),
            s.id + 1
        ),
        (Some(s), true) if s.complete => {
            let mut base = Vec::with_capacity(partitions as usize);
            for p in 0..partitions {
                base.push(store.checkpoint(p)?.map_or(0, |c| c.offset + 1));
            }
            tracing::info!(input = s.id + 2, "appending a new input after everything the store consumed");
            InputSegment {
                id: s.id + 1,
                base,
                complete: false,
                first_line: None,
                previous_first_line: s.first_line,
            }
        }
        (Some(s), true) => {
            tracing::info!(
                input = s.id + 1,
                "the store's last input was not read to its end: resuming it (it must be the same input)"
            );
            s
        }
    };
    // Recorded with its first line ([`check_first_line`]), so a refused input leaves no trace.
    Ok(segment)
}

/// Records the input's first line, and refuses an appended input that starts exactly like
/// the one before it (the same file fed twice would count every event twice).
fn check_first_line(store: &Store, segment: &mut InputSegment, fingerprint: u128) -> anyhow::Result<()> {
    let first = format!("{fingerprint:032x}");
    if segment.first_line.as_deref().is_some_and(|f| f != first) {
        bail!(
            "store {} consumed another input: this input's first line differs from the first line of the input it consumed. Nothing was written. Feed the same input to resume it, use a new --store, or pass --append to add this input after what the store holds",
            store.path().display()
        );
    }
    if segment.previous_first_line.as_deref() == Some(first.as_str()) {
        bail!(
            "this input starts exactly like the input store {} consumed before it: it looks like the same input fed twice, which would count its events twice. Nothing was written. Append a different input, or use a new --store",
            store.path().display()
        );
    }
    if segment.first_line.is_none() {
        segment.first_line = Some(first);
        store.set_input_segment(segment)?;
    }
    Ok(())
}

/// [`run`], telling `observer` about the store and every commit.
pub fn run_observed(cfg: &RunConfig, shutdown: &AtomicBool, observer: &dyn Observer) -> anyhow::Result<Summary> {
    let started = Instant::now();
    // Everything that can be refused is checked before the store is touched.
    let modules = WasmModules::load(&cfg.wasm_dir)?;
    let fold_cfg = FoldConfig::from_params(|k| cfg.params.of(Module::Profile).get(k).cloned())
        .map_err(|e| anyhow::anyhow!("SmartModule onramp-profile refused its params: {e}"))?;
    let engine = SmartEngine::new();
    let mut rejected_params = cfg.params.clone();
    rejected_params.set(Module::Validate, "mode", "rejected");
    // Build one chain first so bad params fail before the store is created.
    let reject_chain = Chain::build(&engine, &modules, &[Module::Validate], &rejected_params, None)?;
    let lines = Lines::open(&cfg.input, cfg.max_line_bytes)?;

    let store = Store::open(
        &cfg.store,
        &StoreSettings {
            partitions: cfg.partitions,
            chain_params: params_fingerprint(&cfg.params),
        },
    )?;
    store.claim_source(&format!("embedded, keyed by {}", cfg.key_by.name()))?;
    let mut segment = start_input_segment(&store, cfg.append, cfg.partitions)?;
    observer.store_opened(&store)?;
    let mut parts = Vec::new();
    for p in 0..cfg.partitions {
        let checkpoint = store.checkpoint(p)?;
        let snapshot = store.snapshot(p, fold_cfg.state_ttl_ms)?;
        if let Some(c) = &checkpoint {
            tracing::info!(
                partition = p,
                checkpoint = c.offset,
                live_users = snapshot.users.len(),
                "resuming after checkpoint"
            );
        }
        let chain = Chain::full(&engine, &modules, &cfg.params, Some(&snapshot))
            .with_context(|| format!("starting the chain for partition {p}"))?;
        let base = segment.base.get(p as usize).copied().unwrap_or(0);
        // Where this input must match what the partition already committed from it.
        let verify = checkpoint
            .as_ref()
            .and_then(|c| c.input.clone().map(|i| (c.offset, i)))
            .filter(|(_, i)| i.segment == segment.id);
        parts.push(PartitionState {
            chain,
            checkpoint: checkpoint.map_or(-1, |c| c.offset),
            next_offset: base,
            verify,
            pending: Vec::with_capacity(cfg.batch_size),
            pending_rejects: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            last_input: None,
        });
    }
    // Until the input has passed every partition's verification point, nothing new is
    // committed: a different input is refused before it writes anything.
    let hold_through: Option<u64> = parts
        .iter()
        .filter_map(|s| s.verify.as_ref().map(|(_, i)| i.line))
        .max();

    let mut sink = Sink {
        reject_chain,
        restart: ChainRestart {
            engine: &engine,
            modules: &modules,
            params: &cfg.params,
            state_ttl_ms: fold_cfg.state_ttl_ms,
        },
        recorder: Recorder::new(&store, cfg.durability, observer),
        segment: segment.id,
    };
    let progress = Progress::new(cfg.progress_bar);
    let reader = spawn_reader(lines, cfg.partitions, cfg.key_by);
    let tick = cfg.linger.clamp(Duration::from_millis(1), Duration::from_millis(100));
    let mut lines_seen: u64 = 0;
    let mut ended = false;
    loop {
        if shutdown.load(Ordering::SeqCst) {
            sink.recorder.summary.interrupted = true;
            tracing::warn!("signal received: committing the pending batches and stopping");
            break;
        }
        let read = match reader.recv_timeout(tick) {
            Ok(item) => Some(item?),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                ended = true;
                break;
            }
        };
        let held = hold_through.is_some_and(|h| lines_seen <= h);
        if let Some(read) = read {
            if read.number == 0 {
                check_first_line(&store, &mut segment, read.fingerprint)?;
            }
            lines_seen = read.number + 1;
            sink.recorder.summary.lines_read += 1;
            let p = read.partition;
            let state = &mut parts[p as usize];
            let offset = state.next_offset;
            state.next_offset += 1;
            if offset <= state.checkpoint {
                sink.recorder.summary.already_committed += 1;
                if offset == state.checkpoint {
                    state.check_same_input(p, &read, &store)?;
                }
                continue;
            }
            state.push(offset, read);
            let held = hold_through.is_some_and(|h| lines_seen <= h);
            if !held && (state.pending_len() >= cfg.batch_size || state.pending_bytes >= MAX_BATCH_BYTES) {
                sink.commit(p, state)?;
                progress.tick(&sink.recorder.summary, started);
            }
        }
        if held && hold_through.is_some_and(|h| lines_seen > h) {
            // Every partition's committed prefix matched: commit what waited.
            for (p, state) in parts.iter_mut().enumerate() {
                if state.pending_len() >= cfg.batch_size || state.pending_bytes >= MAX_BATCH_BYTES {
                    sink.commit(p as u32, state)?;
                }
            }
        }
        if hold_through.is_none_or(|h| lines_seen > h) {
            for (p, state) in parts.iter_mut().enumerate() {
                if state.pending_since.is_some_and(|t| t.elapsed() >= cfg.linger) {
                    sink.commit(p as u32, state)?;
                    progress.tick(&sink.recorder.summary, started);
                }
            }
        }
    }
    if ended {
        for (p, state) in parts.iter().enumerate() {
            if state.next_offset <= state.checkpoint {
                bail!(
                    "the input ended after {lines_seen} lines, but the store already consumed partition {p} up to offset {} and this input gives it only offsets up to {}: this is not the input the store consumed (or a shorter copy of it). Nothing was written. Feed the same input to resume it, use a new --store, or pass --append to add this input after what the store holds",
                    state.checkpoint,
                    state.next_offset - 1
                );
            }
        }
    }
    for (p, state) in parts.iter_mut().enumerate() {
        sink.commit(p as u32, state)?;
    }
    store.flush()?;
    if ended && !sink.recorder.summary.interrupted {
        store.set_input_segment(&InputSegment {
            complete: true,
            ..segment
        })?;
    }
    progress.finish();
    Ok(sink.recorder.finish(started))
}

impl PartitionState {
    fn pending_len(&self) -> usize {
        self.pending.len() + self.pending_rejects.len()
    }

    /// Queues a record for the partition's next batch.
    fn push(&mut self, offset: i64, read: ReadLine) {
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending_bytes += read.line.held_bytes();
        self.last_input = Some((read.number, read.fingerprint));
        match read.line {
            Line::Whole(value) => self.pending.push(InputRecord {
                key: read.key,
                value,
                offset,
                timestamp_ms: -1,
            }),
            Line::Oversize(o) => self.pending_rejects.push((offset, oversize_reject(&o))),
        }
    }

    /// At the record the partition last committed: is this the same input?
    fn check_same_input(&self, partition: u32, read: &ReadLine, store: &Store) -> anyhow::Result<()> {
        let Some((offset, at)) = &self.verify else {
            return Ok(());
        };
        let fingerprint = format!("{:032x}", read.fingerprint);
        if at.line != read.number || at.fingerprint != fingerprint {
            bail!(
                "store {} consumed another input: partition {partition} committed offset {offset} from line {} of its input, but this input's lines up to {} differ (fingerprint {} vs {}). Nothing was written. Feed the same input to resume it, use a new --store, or pass --append to add this input after what the store holds",
                store.path().display(),
                at.line + 1,
                read.number + 1,
                at.fingerprint,
                fingerprint
            );
        }
        Ok(())
    }
}

/// The reject of a line over the source's size limit (it never reaches the chain).
fn oversize_reject(o: &Oversize) -> RejectedEvent {
    RejectedEvent {
        reason: RejectReason::TooLarge,
        detail: format!(
            "line of {} bytes is over the source's limit (--max-line-bytes); it was not read whole",
            o.bytes
        ),
        payload: onramp_logic::validate::lossy_head(&o.head, REJECT_PAYLOAD_HEAD),
        payload_bytes: o.bytes,
        payload_sha256: o.sha256.clone(),
        identity: None,
        offset: None,
    }
}

/// What it takes to restart a partition's chain from the store's snapshot.
struct ChainRestart<'a> {
    engine: &'a SmartEngine,
    modules: &'a WasmModules,
    params: &'a ChainParams,
    state_ttl_ms: i64,
}

/// Where batches go: the store, plus the run's accounting.
struct Sink<'a> {
    /// `onramp-validate` with `mode=rejected`, to learn why dropped records were dropped.
    reject_chain: Chain,
    restart: ChainRestart<'a>,
    recorder: Recorder<'a>,
    /// The input being consumed ([`InputSegment::id`]).
    segment: u32,
}

/// Commits finished batches to the store and keeps the run's accounting.
pub(crate) struct Recorder<'a> {
    pub(crate) store: &'a Store,
    pub(crate) durability: Durability,
    pub(crate) observer: &'a dyn Observer,
    pub(crate) summary: Summary,
    touched: HashSet<String>,
}

impl Sink<'_> {
    /// Runs a partition's pending records through its chain and commits the result.
    fn commit(&mut self, partition: u32, state: &mut PartitionState) -> anyhow::Result<()> {
        if state.pending_len() == 0 {
            return Ok(());
        }
        if self.recorder.observer.take_erased(partition) {
            // Every earlier batch is committed, so the snapshot at the checkpoint is exactly
            // the aggregate's state, less the erased users.
            let snapshot = self.recorder.store.snapshot(partition, self.restart.state_ttl_ms)?;
            let r = &self.restart;
            state.chain = Chain::full(r.engine, r.modules, r.params, Some(&snapshot))?;
            tracing::info!(partition, "chain restarted from the store's snapshot after an erasure");
        }
        let batch_records = std::mem::take(&mut state.pending);
        let mut rejects = std::mem::take(&mut state.pending_rejects);
        let events_in = (batch_records.len() + rejects.len()) as u64;
        let last_offset = batch_records
            .last()
            .map(|r| r.offset)
            .into_iter()
            .chain(rejects.last().map(|r| r.0))
            .max()
            .unwrap_or(-1);
        state.pending_bytes = 0;
        state.pending_since = None;
        let chain_start = Instant::now();
        let span = |records: &[InputRecord]| match (records.first(), records.last()) {
            (Some(a), Some(b)) => format!("offsets {}..={}", a.offset, b.offset),
            _ => "no records".to_string(),
        };
        let out = state.chain.process(&batch_records).with_context(|| {
            format!(
                "partition {partition}, {}: the SmartModule chain failed",
                span(&batch_records)
            )
        })?;
        let mut updates = Vec::with_capacity(out.len());
        for rec in &out {
            let update: ProfileUpdate = serde_json::from_slice(&rec.value).with_context(|| {
                format!(
                    "partition {partition} offset {}: the chain emitted a non-update",
                    rec.offset
                )
            })?;
            if update.outcome == Outcome::Skipped {
                let reason = update.skip_reason.as_deref().unwrap_or_default();
                if update.refused_snapshot() {
                    bail!("partition {partition}: the profile aggregate refused its restart snapshot: {reason}");
                }
                if update.skip_kind != Some(SkipKind::EventTimeAhead) {
                    tracing::warn!(partition, offset = update.offset, reason, "fold skipped a record");
                }
            }
            updates.push(update);
        }
        let kept: HashSet<i64> = out.iter().map(|r| r.offset).collect();
        let dropped: Vec<InputRecord> = batch_records
            .iter()
            .filter(|r| !kept.contains(&r.offset))
            .cloned()
            .collect();
        if !dropped.is_empty() {
            let explained = self.reject_chain.process(&dropped).with_context(|| {
                format!(
                    "partition {partition}, {}: validate (mode=rejected) failed on the dropped records",
                    span(&dropped)
                )
            })?;
            if explained.len() != dropped.len() {
                bail!(
                    "partition {partition}: the filter dropped {} records but validate (mode=rejected) explains {}",
                    dropped.len(),
                    explained.len()
                );
            }
            for rec in explained {
                let rejected: RejectedEvent = serde_json::from_slice(&rec.value)
                    .with_context(|| format!("partition {partition} offset {}: bad reject record", rec.offset))?;
                rejects.push((rec.offset, rejected));
            }
            rejects.sort_by_key(|(offset, _)| *offset);
        }
        self.recorder.summary.chain_ms += chain_start.elapsed().as_millis() as u64;

        let batch = Batch {
            partition,
            last_offset,
            events_in,
            updates,
            rejects,
            input: state.last_input.map(|(line, fingerprint)| InputPosition {
                segment: self.segment,
                line,
                fingerprint: format!("{fingerprint:032x}"),
            }),
        };
        self.recorder.record(&batch)?;
        state.checkpoint = last_offset;
        Ok(())
    }
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(store: &'a Store, durability: Durability, observer: &'a dyn Observer) -> Self {
        Recorder {
            store,
            durability,
            observer,
            summary: Summary::default(),
            touched: HashSet::new(),
        }
    }

    /// The run's summary, with the distinct profiles touched and the wall time.
    pub(crate) fn finish(self, started: Instant) -> Summary {
        let mut summary = self.summary;
        summary.profiles_touched = self.touched.len() as u64;
        summary.elapsed_ms = started.elapsed().as_millis() as u64;
        summary
    }

    /// Commits a finished batch (updates, rejects, counters and the new checkpoint in one
    /// transaction), flushes it when durable, and accounts for it in the summary. Both
    /// sources end here: the embedded chain above and the broker-side chain
    /// ([`crate::cluster::consume`]).
    pub(crate) fn record(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let partition = batch.partition;
        let last_offset = batch.last_offset;
        let store_start = Instant::now();
        let committed = self.store.commit(batch)?;
        if self.durability == Durability::Durable {
            self.store.flush()?;
        }
        let apply_seconds = store_start.elapsed().as_secs_f64();
        self.summary.store_ms += store_start.elapsed().as_millis() as u64;

        self.summary.batches += 1;
        self.summary.events_in += batch.events_in;
        self.summary.accepted += committed.applied + committed.duplicates + committed.skipped;
        self.summary.applied += committed.applied;
        self.summary.duplicates += committed.duplicates;
        self.summary.skipped += committed.skipped;
        for (_, r) in &batch.rejects {
            *self.summary.rejected.entry(r.reason.to_string()).or_default() += 1;
        }
        if committed.quarantined > 0 {
            *self
                .summary
                .rejected
                .entry(RejectReason::TimestampOutOfRange.to_string())
                .or_default() += committed.quarantined;
        }
        self.summary.fold_evictions += committed.evicted;
        for u in &batch.updates {
            if u.outcome == Outcome::Applied && !self.touched.contains(&u.user_id) {
                self.touched.insert(u.user_id.clone());
            }
        }
        let backlog = self
            .summary
            .lines_read
            .saturating_sub(self.summary.already_committed + self.summary.events_in);
        self.observer.committed(batch, &committed, apply_seconds, backlog);
        tracing::debug!(partition, last_offset, applied = committed.applied, "batch committed");
        Ok(())
    }
}

/// Progress: a bar on a terminal, a log line every few seconds otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: std::cell::Cell<Instant>,
}

impl Progress {
    pub(crate) fn new(bar: bool) -> Self {
        let bar = bar.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b
        });
        Progress {
            bar,
            last_log: std::cell::Cell::new(Instant::now()),
        }
    }

    pub(crate) fn tick(&self, s: &Summary, started: Instant) {
        let rate = s.events_in as f64 / started.elapsed().as_secs_f64().max(0.001);
        match &self.bar {
            Some(b) => b.set_message(format!(
                "{} events, {} accepted, {} rejected, {} duplicates ({rate:.0}/s)",
                s.events_in,
                s.accepted,
                s.rejected_total(),
                s.duplicates
            )),
            None if self.last_log.get().elapsed() >= PROGRESS_LOG_EVERY => {
                self.last_log.set(Instant::now());
                tracing::info!(
                    events = s.events_in,
                    accepted = s.accepted,
                    rejected = s.rejected_total(),
                    rate = rate as u64,
                    "progress"
                );
            }
            None => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
