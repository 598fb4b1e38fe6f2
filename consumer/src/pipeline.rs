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
use onramp_schemas::{Outcome, ProfileUpdate, RejectedEvent};

use crate::chain::{Chain, ChainParams, InputRecord};
use crate::partition::{record_key, Partitioner};
use crate::source::{precheck, Input, Lines};
use crate::store::{Batch, Committed, Store, StoreSettings};
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
    pending: Vec<InputRecord>,
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

/// [`run`], telling `observer` about the store and every commit.
pub fn run_observed(cfg: &RunConfig, shutdown: &AtomicBool, observer: &dyn Observer) -> anyhow::Result<Summary> {
    let started = Instant::now();
    // Everything that can be refused is checked before the store is touched.
    let modules = WasmModules::load(&cfg.wasm_dir)?;
    precheck(&cfg.input)?;
    let fold_cfg = FoldConfig::from_params(|k| cfg.params.of(Module::Profile).get(k).cloned())
        .map_err(|e| anyhow::anyhow!("SmartModule onramp-profile refused its params: {e}"))?;
    let engine = SmartEngine::new();
    let mut rejected_params = cfg.params.clone();
    rejected_params.set(Module::Validate, "mode", "rejected");
    // Build one chain first so bad params fail before the store is created.
    let reject_chain = Chain::build(&engine, &modules, &[Module::Validate], &rejected_params, None)?;
    let mut lines = Lines::open(&cfg.input)?;

    let store = Store::open(
        &cfg.store,
        &StoreSettings {
            partitions: cfg.partitions,
            chain_params: params_fingerprint(&cfg.params),
        },
    )?;
    observer.store_opened(&store)?;
    let mut parts = Vec::new();
    for p in 0..cfg.partitions {
        let checkpoint = store.checkpoint(p)?;
        let snapshot = store.snapshot(p, fold_cfg.state_ttl_ms)?;
        if let Some(c) = checkpoint {
            tracing::info!(
                partition = p,
                checkpoint = c.offset,
                live_users = snapshot.users.len(),
                "resuming after checkpoint"
            );
        }
        let chain = Chain::full(&engine, &modules, &cfg.params, Some(&snapshot))
            .with_context(|| format!("starting the chain for partition {p}"))?;
        parts.push(PartitionState {
            chain,
            checkpoint: checkpoint.map_or(-1, |c| c.offset),
            next_offset: 0,
            pending: Vec::with_capacity(cfg.batch_size),
        });
    }

    let mut sink = Sink {
        reject_chain,
        restart: ChainRestart {
            engine: &engine,
            modules: &modules,
            params: &cfg.params,
            state_ttl_ms: fold_cfg.state_ttl_ms,
        },
        recorder: Recorder::new(&store, cfg.durability, observer),
    };
    let mut partitioner = Partitioner::new(cfg.partitions);
    let progress = Progress::new(cfg.progress_bar);
    for line in &mut lines {
        if shutdown.load(Ordering::SeqCst) {
            sink.recorder.summary.interrupted = true;
            tracing::warn!("signal received: committing the pending batches and stopping");
            break;
        }
        let line = line?;
        sink.recorder.summary.lines_read += 1;
        let key = record_key(&line);
        let p = partitioner.partition(key.as_deref());
        let state = &mut parts[p as usize];
        let offset = state.next_offset;
        state.next_offset += 1;
        if offset <= state.checkpoint {
            sink.recorder.summary.already_committed += 1;
            continue;
        }
        state.pending.push(InputRecord {
            key,
            value: line,
            offset,
            timestamp_ms: -1,
        });
        if state.pending.len() >= cfg.batch_size {
            sink.commit(p, state)?;
            progress.tick(&sink.recorder.summary, started);
        }
    }
    for (p, state) in parts.iter_mut().enumerate() {
        sink.commit(p as u32, state)?;
    }
    store.flush()?;
    progress.finish();
    Ok(sink.recorder.finish(started))
}

/// Where batches go: the store, plus the run's accounting.
/// What it takes to restart a partition's chain from the store's snapshot.
struct ChainRestart<'a> {
    engine: &'a SmartEngine,
    modules: &'a WasmModules,
    params: &'a ChainParams,
    state_ttl_ms: i64,
}

struct Sink<'a> {
    /// `onramp-validate` with `mode=rejected`, to learn why dropped records were dropped.
    reject_chain: Chain,
    restart: ChainRestart<'a>,
    recorder: Recorder<'a>,
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
        if state.pending.is_empty() {
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
        let chain_start = Instant::now();
        let out = state
            .chain
            .process(&batch_records)
            .with_context(|| format!("partition {partition}: the chain failed"))?;
        let mut updates = Vec::with_capacity(out.len());
        let summary = &mut self.recorder.summary;
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
                tracing::warn!(partition, offset = update.offset, reason, "fold skipped a record");
            }
            updates.push(update);
        }
        let kept: HashSet<i64> = out.iter().map(|r| r.offset).collect();
        let dropped: Vec<InputRecord> = batch_records
            .iter()
            .filter(|r| !kept.contains(&r.offset))
            .cloned()
            .collect();
        let mut rejects = Vec::with_capacity(dropped.len());
        if !dropped.is_empty() {
            for rec in self.reject_chain.process(&dropped)? {
                let rejected: RejectedEvent = serde_json::from_slice(&rec.value)
                    .with_context(|| format!("partition {partition} offset {}: bad reject record", rec.offset))?;
                rejects.push((rec.offset, rejected));
            }
            if rejects.len() != dropped.len() {
                bail!(
                    "partition {partition}: the filter dropped {} records but validate (mode=rejected) explains {}",
                    dropped.len(),
                    rejects.len()
                );
            }
        }
        summary.chain_ms += chain_start.elapsed().as_millis() as u64;

        let last_offset = batch_records.last().map_or(-1, |r| r.offset);
        let batch = Batch {
            partition,
            last_offset,
            events_in: batch_records.len() as u64,
            updates,
            rejects,
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
        self.summary.accepted += batch.updates.len() as u64;
        self.summary.applied += committed.applied;
        self.summary.duplicates += committed.duplicates;
        self.summary.skipped += committed.skipped;
        for (_, r) in &batch.rejects {
            *self.summary.rejected.entry(r.reason.to_string()).or_default() += 1;
        }
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
