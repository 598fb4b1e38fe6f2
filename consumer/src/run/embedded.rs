//! The embedded source of `onramp run`: source → partitioner → one chain per
//! partition (in-process `fluvio-smartengine`) → one store transaction per batch.
//!
//! Per partition, records are gathered into batches of `batch_size`; each batch goes
//! through the chain, the records the validate filter dropped are run through the same
//! validate module in `mode=rejected` to learn their reasons, and the updates, rejects,
//! counters and the new checkpoint are committed together ([`Store::commit`]). Commits run
//! on their own thread ([`Committer`]) while the chain runs the next batch; with
//! [`Durability::Durable`] each commit is flushed (fsync) before it is reported.
//!
//! On start each partition resumes after its checkpoint: the source is read from the
//! beginning, records at or below the checkpoint are skipped, and the profile aggregate
//! gets the partition's restart snapshot, so a run that crashed and restarted ends with
//! the same store as one that never stopped.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fluvio_smartengine::SmartEngine;
use onramp_schemas::{Outcome, ProfileUpdate, RejectReason, RejectedEvent, SkipKind, REJECT_PAYLOAD_HEAD};

use super::{Committer, Observer, RefusedSnapshot, Run, Settings, SourceKind, Summary};
use crate::chain::{Chain, ChainParams, InputRecord};
use crate::partition::{KeyBy, Partitioner};
use crate::shutdown::Shutdown;
use crate::source::{Input, Line, Lines, Oversize};
use crate::store::{Batch, InputPosition, InputSegment, Store};
use crate::wasm::{Module, WasmModules};

/// Default partition count.
pub const DEFAULT_PARTITIONS: u32 = 1;

/// Everything an embedded run needs besides the shared [`Settings`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Store, params, batch size, durability, progress.
    pub settings: Settings,
    /// Where events come from.
    pub input: Input,
    /// Partition count.
    pub partitions: u32,
    /// Directory of the built `.wasm` modules.
    pub wasm_dir: PathBuf,
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
/// Default `--linger`: the longest a record waits in a partial batch before it is
/// committed (as the flag is written).
pub const DEFAULT_LINGER: &str = "200ms";

/// Which input this run consumes, and from where (see [`InputSegment`]).
fn start_input_segment(store: &Store, append: bool, partitions: u32) -> anyhow::Result<InputSegment> {
    let segment = match (store.input_segment()?, append) {
        (None, _) => InputSegment {
            id: 0,
            base: vec![0; partitions as usize],
            complete: false,
            first_line: None,
            earlier_first_lines: Vec::new(),
            legacy_previous_first_line: None,
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
            let earlier_first_lines = s
                .earlier_first_lines()
                .map(str::to_string)
                .chain(s.first_line.clone())
                .collect();
            InputSegment {
                id: s.id + 1,
                base,
                complete: false,
                first_line: None,
                earlier_first_lines,
                legacy_previous_first_line: None,
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
/// any input before it (the same file fed again would count every event twice).
fn check_first_line(store: &Store, segment: &mut InputSegment, fingerprint: u128) -> anyhow::Result<()> {
    let first = format!("{fingerprint:032x}");
    if segment.first_line.as_deref().is_some_and(|f| f != first) {
        bail!(
            "store {} consumed another input: this input's first line differs from the first line of the input it consumed. Nothing was written. Feed the same input to resume it, use a new --store, or pass --append to add this input after what the store holds",
            store.path().display()
        );
    }
    if segment.earlier_first_lines().any(|f| f == first) {
        bail!(
            "this input starts exactly like an input store {} consumed before: it looks like the same input fed again, which would count its events twice. Nothing was written. Append a different input, or use a new --store",
            store.path().display()
        );
    }
    if segment.first_line.is_none() {
        segment.first_line = Some(first);
        store.set_input_segment(segment)?;
    }
    Ok(())
}

/// Runs the embedded source until the input ends or `shutdown` is requested, telling
/// `observer` about the store and every commit.
pub fn run(cfg: &EmbeddedConfig, shutdown: &Shutdown, observer: &dyn Observer) -> anyhow::Result<Summary> {
    let path = &cfg.settings.store;
    let existed = path.exists();
    let was_empty = existed && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
    let result = run_source(cfg, shutdown, observer);
    // A pipe or stdin is checked when its first line arrives, after the store is opened;
    // nothing is committed before the check passes, so a store this run created for an
    // input the check refused holds nothing: it is removed, as a refused file leaves none.
    let refused = result.as_ref().err().is_some_and(|e| {
        matches!(
            e.downcast_ref::<crate::source::SourceError>(),
            Some(crate::source::SourceError::NotJsonLines { .. })
        )
    });
    if refused && (!existed || was_empty) {
        let removed = if existed {
            std::fs::read_dir(path).and_then(|entries| {
                entries.into_iter().try_for_each(|e| {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        std::fs::remove_dir_all(e.path())
                    } else {
                        std::fs::remove_file(e.path())
                    }
                })
            })
        } else {
            std::fs::remove_dir_all(path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(store = %path.display(), "the input was refused: the store this run created is removed")
            }
            Err(e) => {
                tracing::warn!(store = %path.display(), "the input was refused; removing the empty store this run created failed: {e}")
            }
        }
    }
    result
}

fn run_source(cfg: &EmbeddedConfig, shutdown: &Shutdown, observer: &dyn Observer) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let settings = &cfg.settings;
    // Everything that can be refused is checked before the store is touched.
    let modules = WasmModules::load(&cfg.wasm_dir)?;
    let fold_cfg = settings.fold_config()?;
    let engine = SmartEngine::new();
    // Build one chain first so bad params fail before the store is created.
    let reject_chain = Chain::build(
        &engine,
        &modules,
        &[Module::Validate],
        &settings.rejected_params(),
        None,
    )?;
    let lines = Lines::open(&cfg.input, cfg.max_line_bytes)?;

    let source = format!("embedded, keyed by {}", cfg.key_by.name());
    let run = Run::open(
        settings,
        cfg.partitions,
        &source,
        SourceKind::Embedded,
        observer,
        started,
    )?;
    let loaded = Loaded {
        fold_cfg,
        engine,
        modules,
        reject_chain,
        lines,
    };
    std::thread::scope(|scope| consume(cfg, shutdown, loaded, run, scope))
}

/// What a run loads and checks before it touches the store.
struct Loaded {
    fold_cfg: onramp_logic::fold::FoldConfig,
    engine: SmartEngine,
    modules: WasmModules,
    /// `onramp-validate` with `mode=rejected`.
    reject_chain: Chain,
    lines: Lines,
}

/// Consumes the input: reads, chains and queues batches on this thread, commits them on a
/// [`Committer`] thread of `scope`.
fn consume<'scope, 'run: 'scope>(
    cfg: &EmbeddedConfig,
    shutdown: &Shutdown,
    loaded: Loaded,
    run: Run<'run>,
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> anyhow::Result<Summary> {
    let Loaded {
        fold_cfg,
        engine,
        modules,
        reject_chain,
        lines,
    } = loaded;
    let (engine, modules) = (&engine, &modules);
    let settings = &cfg.settings;
    let store = run.store().clone();
    let mut segment = start_input_segment(&store, cfg.append, cfg.partitions)?;
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
        let chain = Chain::full(engine, modules, &settings.params, Some(&snapshot))
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
            pending: Vec::with_capacity(settings.batch_size),
            pending_rejects: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            last_input: None,
        });
    }
    let mut verification = Verification::new(&parts);
    let hold_limit = HoldLimit::new(cfg.max_line_bytes);
    let mut sink = Sink {
        reject_chain,
        restart: ChainRestart {
            engine,
            modules,
            params: &settings.params,
            state_ttl_ms: fold_cfg.state_ttl_ms,
        },
        segment: segment.id,
    };
    let mut run = Committer::spawn(scope, run)?;
    let reader = spawn_reader(lines, cfg.partitions, cfg.key_by);
    let tick = cfg.linger.clamp(Duration::from_millis(1), Duration::from_millis(100));
    let mut lines_seen: u64 = 0;
    let (mut ended, mut interrupted) = (false, false);
    loop {
        if shutdown.is_requested() {
            run.tally().interrupted();
            interrupted = true;
            break;
        }
        match reader.recv_timeout(tick) {
            Ok(read) => {
                let read = read?;
                if read.number == 0 {
                    check_first_line(&store, &mut segment, read.fingerprint)?;
                }
                verification.before_line(read.number, &parts, &store)?;
                lines_seen = read.number + 1;
                run.tally().read(1);
                let p = read.partition;
                let state = &mut parts[p as usize];
                let offset = state.next_offset;
                state.next_offset += 1;
                if offset <= state.checkpoint {
                    run.tally().already_committed();
                    if offset == state.checkpoint {
                        state.check_same_input(p, &read, &store)?;
                        verification.passed(read.number);
                    }
                    continue;
                }
                state.push(offset, read);
                if verification.holding() {
                    hold_limit.check(p, state, &verification, &store)?;
                    verification.announce_hold();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                ended = true;
                break;
            }
        }
        if verification.holding() {
            continue;
        }
        // Every partition whose batch is full or has waited `--linger` (right after a hold,
        // also the batches that filled while it lasted).
        let now = Instant::now();
        for (p, state) in parts.iter_mut().enumerate() {
            let full = state.pending_len() >= settings.batch_size || state.pending_bytes >= MAX_BATCH_BYTES;
            if full || state.pending_since.is_some_and(|t| now - t >= cfg.linger) {
                sink.commit(p as u32, state, &mut run)?;
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
    if verification.holding() {
        // Interrupted before the input was verified: what it read is not known to be the
        // store's input, so none of it is committed (the next run reads it again).
        tracing::warn!(
            lines = lines_seen,
            "stopped before this input reached every partition's checkpoint: nothing new was committed"
        );
        return run.finish();
    }
    for (p, state) in parts.iter_mut().enumerate() {
        sink.commit(p as u32, state, &mut run)?;
    }
    if ended && !interrupted {
        // Only once everything this input gave is committed.
        run.drain()?;
        store.set_input_segment(&InputSegment {
            complete: true,
            ..segment
        })?;
    }
    run.finish()
}

/// Holds every commit of a resumed run until the input has reached each partition's
/// checkpoint and matched it ([`PartitionState::check_same_input`]), so a different input
/// is refused before it writes anything.
///
/// The same input reaches partition `p`'s checkpoint at exactly the line it was committed
/// from, so the check is precise: once a line past that one arrives with `p` not yet
/// verified, the input differs. (Lifting the hold by line count alone let a different
/// input that sends more lines to one partition commit it before another had verified.)
struct Verification {
    /// `(line, partition)` of each verification point not passed yet, earliest first.
    waiting: std::collections::VecDeque<(u64, u32)>,
    /// The hold was logged.
    announced: bool,
}

impl Verification {
    fn new(parts: &[PartitionState]) -> Self {
        let mut waiting: Vec<(u64, u32)> = parts
            .iter()
            .enumerate()
            .filter_map(|(p, s)| s.verify.as_ref().map(|(_, at)| (at.line, p as u32)))
            .collect();
        waiting.sort_unstable();
        Verification {
            waiting: waiting.into(),
            announced: false,
        }
    }

    /// Logs, once, that new records wait for the verification.
    fn announce_hold(&mut self) {
        if !std::mem::replace(&mut self.announced, true) {
            if let Some(&(line, p)) = self.waiting.back() {
                tracing::info!(
                    partition = p,
                    line = line + 1,
                    "holding new records until this input reaches every partition's checkpoint (the last at this line)"
                );
            }
        }
    }

    /// New commits wait while a verification point is still ahead.
    fn holding(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Before line `number` is handled: every verification point before it has passed.
    fn before_line(&self, number: u64, parts: &[PartitionState], store: &Store) -> anyhow::Result<()> {
        let Some(&(line, p)) = self.waiting.front() else {
            return Ok(());
        };
        if line < number {
            let state = &parts[p as usize];
            bail!(
                "store {} consumed another input: partition {p} committed offset {} from line {} of its input, but this input gives partition {p} only offsets up to {} by line {}. Nothing was written. Feed the same input to resume it, use a new --store, or pass --append to add this input after what the store holds",
                store.path().display(),
                state.checkpoint,
                line + 1,
                state.next_offset - 1,
                number
            );
        }
        Ok(())
    }

    /// Line `number` matched its partition's checkpoint.
    fn passed(&mut self, number: u64) {
        while self.waiting.front().is_some_and(|&(line, _)| line == number) {
            self.waiting.pop_front();
        }
    }
}

/// The most a partition may buffer while a resumed run is held for verification: more
/// than the run that committed the store could have had read but not committed (a batch
/// filling, [`super::committer::PIPELINE_DEPTH`] queued, one committing), so an input that needs more is
/// not the store's input, and a hold never buffers without bound.
struct HoldLimit {
    bytes: usize,
}

impl HoldLimit {
    fn new(max_line_bytes: usize) -> Self {
        // Each record counts one byte more than its line, so empty lines count too; a
        // batch ends at MAX_BATCH_SIZE records or once it passes MAX_BATCH_BYTES (by at
        // most its last line), whatever the committing run's --batch-size was.
        let batch = MAX_BATCH_BYTES + max_line_bytes + super::MAX_BATCH_SIZE as usize;
        HoldLimit {
            bytes: (super::committer::PIPELINE_DEPTH + 2) * batch,
        }
    }

    fn check(&self, p: u32, state: &PartitionState, verification: &Verification, store: &Store) -> anyhow::Result<()> {
        let held = state.pending_bytes + state.pending_len();
        if held <= self.bytes {
            return Ok(());
        }
        let (line, waiting) = verification.waiting.front().copied().unwrap_or_default();
        bail!(
            "store {} consumed another input: partition {p} has {held} bytes read past its checkpoint while partition {waiting} has not reached its own (at line {}), more than the run that committed the store could have left uncommitted. Nothing was written. Feed the same input to resume it, use a new --store, or pass --append to add this input after what the store holds",
            store.path().display(),
            line + 1
        );
    }
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
    /// The input being consumed ([`InputSegment::id`]).
    segment: u32,
}

impl Sink<'_> {
    /// Runs a partition's pending records through its chain and commits the result.
    fn commit(&mut self, partition: u32, state: &mut PartitionState, run: &mut Committer) -> anyhow::Result<()> {
        if state.pending_len() == 0 {
            return Ok(());
        }
        if run.observer().take_erased(partition) {
            // Once every earlier batch is committed, the snapshot at the checkpoint is
            // exactly the aggregate's state, less the erased users.
            run.drain()?;
            let snapshot = run.store().snapshot(partition, self.restart.state_ttl_ms)?;
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
                if let Some(refused) = RefusedSnapshot::of(partition, &update) {
                    return Err(refused.into());
                }
                let reason = update.skip_reason.as_deref().unwrap_or_default();
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
        run.tally().chain_time(chain_start.elapsed());

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
        run.commit(batch)?;
        state.checkpoint = last_offset;
        Ok(())
    }
}
