//! `onramp run`: the run core both sources share.
//!
//! A run has two halves. A **source** turns records into [`Batch`]es — one partition's
//! consecutive offsets with their profile updates and rejects:
//!
//! - [`embedded`]: lines (file, stdin, generator) → partitioner → one in-process chain per
//!   partition (`fluvio-smartengine`);
//! - [`crate::cluster::consume`]: a Fluvio topic, the chain running in the SPU, each
//!   partition's update and reject streams merged by offset.
//!
//! The **core** ([`Run`]) owns everything after that and is the same for both: it opens
//! the store (layout, partitions, chain params, which source it belongs to), commits each
//! batch in one transaction ([`Store::commit`]: updates, rejects, counters, checkpoint),
//! flushes it when [`Durability::Durable`], keeps the [`Summary`], shows progress, and
//! tells the [`Observer`] (read API, metrics) about every commit. A restart snapshot the
//! profile aggregate refuses ([`RefusedSnapshot`]) stops either source the same way.

mod committer;
pub mod embedded;
mod progress;
mod summary;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use onramp_logic::enrich::EnrichConfig;
use onramp_logic::fold::FoldConfig;
use onramp_schemas::{Outcome, ProfileUpdate};

pub use committer::Committer;
pub use progress::{Progress, PROGRESS_LOG_EVERY};
pub use summary::{SourceKind, Summary};

use crate::chain::ChainParams;
use crate::store::{Batch, Committed, Store, StoreSettings};
use crate::wasm::Module;

/// Default records per partition batch.
pub const DEFAULT_BATCH_SIZE: usize = 1_000;
/// The largest `--batch-size`.
pub const MAX_BATCH_SIZE: u64 = 1_000_000;

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

/// What every run needs, whatever its source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Store directory.
    pub store: PathBuf,
    /// Chain params (`--param module.key=value`).
    pub params: ChainParams,
    /// Most records per committed batch.
    pub batch_size: usize,
    /// Flush policy.
    pub durability: Durability,
    /// Show a progress bar (stderr is a terminal) instead of periodic log lines.
    pub progress_bar: bool,
    /// Suppressions to take before consuming anything (`--suppressions`): the erased ids
    /// of the store this one rebuilds.
    pub suppressions: Option<crate::store::SuppressionList>,
    /// The audience rules (`--rules`); `None` keeps the store's (or the built-in ones).
    pub rules: Option<crate::audience::Rules>,
    /// Partitions left out of the audience frontier (`--watermark-ignore`): idle ones.
    pub watermark_ignore: std::collections::BTreeSet<u32>,
}

impl Settings {
    /// The profile aggregate's settings, parsed as the module parses its params, so bad
    /// values are refused before the store is touched.
    pub fn fold_config(&self) -> anyhow::Result<FoldConfig> {
        FoldConfig::from_params(|k| self.params.of(Module::Profile).get(k).cloned())
            .map_err(|e| anyhow::anyhow!("SmartModule onramp-profile refused its params: {e}"))
    }

    /// The funnel steps the enrich module is given (its `steps` param, or its default).
    pub fn funnel_steps(&self) -> anyhow::Result<Vec<String>> {
        EnrichConfig::from_params(|k| self.params.of(Module::Enrich).get(k).cloned())
            .map(|c| c.steps)
            .map_err(|e| anyhow::anyhow!("SmartModule onramp-enrich refused its params: {e}"))
    }

    /// The params of the reject pass: validate with `mode=rejected`, which emits one
    /// reason per record the filter drops.
    pub fn rejected_params(&self) -> ChainParams {
        let mut params = self.params.clone();
        params.set(Module::Validate, "mode", "rejected");
        params
    }
}

/// The funnel a store was written with: the steps its runs recorded, else (a store written
/// before they were recorded) the `enrich.steps` in its recorded chain params, else the
/// enrich module's default funnel. What `onramp serve` and `onramp stats` use.
pub fn store_funnel_steps(store: &Store) -> anyhow::Result<Vec<String>> {
    if let Some(steps) = store.funnel_steps()? {
        return Ok(steps);
    }
    let recorded = store.chain_params()?.unwrap_or_default();
    let steps = enrich_steps_in(&recorded);
    Ok(EnrichConfig::from_params(|_| steps.clone())
        .map(|c| c.steps)
        .unwrap_or_else(|_| EnrichConfig::default().steps))
}

/// The value of `enrich.steps` in a [`params_fingerprint`]: up to the next `,<module>.`
/// (values may hold commas, module names cannot start a step name and a dot).
fn enrich_steps_in(fingerprint: &str) -> Option<String> {
    let key = format!("{}.steps=", Module::Enrich.short_name());
    let start = fingerprint
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || fingerprint[..*i].ends_with(','))
        .map(|(i, _)| i + key.len())?;
    let rest = &fingerprint[start..];
    let end = Module::ALL
        .iter()
        .filter_map(|m| rest.find(&format!(",{}.", m.short_name())))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
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

/// The profile aggregate refused the restart snapshot it was started with, so it folds
/// nothing: the run commits what came before the refused record and stops with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition {partition}: the profile aggregate refused its restart snapshot: {reason}")]
pub struct RefusedSnapshot {
    /// Partition.
    pub partition: u32,
    /// Offset of the first refused record.
    pub offset: i64,
    /// The aggregate's `skip_reason`.
    pub reason: String,
}

impl RefusedSnapshot {
    /// The refusal `update` reports, if it is one ([`ProfileUpdate::refused_snapshot`]):
    /// the one check both sources make.
    pub fn of(partition: u32, update: &ProfileUpdate) -> Option<Self> {
        update.refused_snapshot().then(|| RefusedSnapshot {
            partition,
            offset: update.offset,
            reason: update.skip_reason.clone().unwrap_or_default(),
        })
    }
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
    /// Cluster source: a SmartModule failed on the record at `offset` (the run stops).
    fn smartmodule_error(&self, _partition: u32, _offset: i64) {}
    /// Cluster source: a partition's streams were lost and are being reopened.
    fn reconnecting(&self, _partition: u32) {}
    /// Cluster source: records in `partition` after its committed checkpoint, from the end
    /// offset its leader last reported (polled every few seconds).
    fn lag(&self, _partition: u32, _records: u64) {}
}

/// No hooks.
impl Observer for () {}

/// What the source side of a run counts as it reads. Kept apart from the commit side's
/// figures so a source whose commits run on another thread ([`Committer`]) counts without
/// the [`Run`], and hands its tally over with each batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    lines_read: u64,
    already_committed: u64,
    chain: Duration,
    interrupted: bool,
}

impl Tally {
    /// `records` more were read from the source.
    pub fn read(&mut self, records: u64) {
        self.lines_read += records;
    }

    /// A record read was committed by an earlier run, and skipped.
    pub fn already_committed(&mut self) {
        self.already_committed += 1;
    }

    /// Time spent in the in-process chain.
    pub fn chain_time(&mut self, spent: Duration) {
        self.chain += spent;
    }

    /// A signal stopped the run before its source ended.
    pub fn interrupted(&mut self) {
        if !self.interrupted {
            tracing::warn!("signal received: committing the pending batches and stopping");
        }
        self.interrupted = true;
    }

    /// Writes the tally into the run's summary.
    fn fill(&self, s: &mut Summary) {
        s.lines_read = self.lines_read;
        s.already_committed = self.already_committed;
        s.chain_ms = self.chain.as_millis() as u64;
        s.interrupted = self.interrupted;
    }
}

/// The run core: the store a source's batches are committed to, and the run's accounting.
pub struct Run<'a> {
    store: Store,
    durability: Durability,
    observer: &'a dyn Observer,
    tally: Tally,
    summary: Summary,
    touched: HashSet<String>,
    progress: Progress,
    started: Instant,
}

impl<'a> Run<'a> {
    /// Opens (or creates) the store for `partitions` and the settings' chain params,
    /// claims it for `source` (a store fed by one source refuses another; see
    /// [`Store::claim_source`]) and tells the observer. `started` is when the run began.
    pub fn open(
        settings: &Settings,
        partitions: u32,
        source: &str,
        kind: SourceKind,
        observer: &'a dyn Observer,
        started: Instant,
    ) -> anyhow::Result<Self> {
        if let Some(p) = settings.watermark_ignore.iter().find(|p| **p >= partitions) {
            anyhow::bail!(
                "--watermark-ignore {p}: there is no partition {p} (partitions 0 to {})",
                partitions - 1
            );
        }
        if settings.watermark_ignore.len() as u32 >= partitions {
            anyhow::bail!("--watermark-ignore names every partition: the audiences would have no frontier and judge nothing; leave at least one out");
        }
        let store = Store::open(
            &settings.store,
            &StoreSettings {
                partitions,
                chain_params: params_fingerprint(&settings.params),
            },
        )?;
        store.claim_source(source)?;
        store.record_funnel_steps(&settings.funnel_steps()?)?;
        if let Some(list) = &settings.suppressions {
            let added = store.import_suppressions(list).map_err(anyhow::Error::msg)?;
            tracing::info!(
                suppressions = list.hashes.len(),
                new = added,
                "suppressions taken: records of those erased ids are dropped at commit"
            );
        }
        if let Some(rules) = &settings.rules {
            store.set_rules(rules.clone())?;
        }
        store.set_watermark_ignore(settings.watermark_ignore.clone())?;
        // A crash between a commit and its drain left entries below the frontier.
        let drained = store.drain_audiences()?;
        if !drained.is_empty() {
            tracing::info!(
                transitions = drained.len(),
                "audience entries left by the last run were judged"
            );
        }
        observer.store_opened(&store)?;
        Ok(Run {
            store,
            durability: settings.durability,
            observer,
            tally: Tally::default(),
            summary: Summary {
                source: kind,
                ..Summary::default()
            },
            touched: HashSet::new(),
            progress: Progress::new(settings.progress_bar),
            started,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The run's observer.
    pub fn observer(&self) -> &'a dyn Observer {
        self.observer
    }

    /// The source's tally, for a source that reads and commits on one thread.
    pub fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Takes the tally of a source that counts on another thread ([`Committer`]).
    fn set_tally(&mut self, tally: Tally) {
        self.tally = tally;
    }

    /// A SmartModule failed on the record at `offset` (cluster source; the run stops).
    pub fn smartmodule_error(&mut self, partition: u32, offset: i64, message: &str) {
        self.summary.smartmodule_errors += 1;
        self.observer.smartmodule_error(partition, offset);
        tracing::error!(partition, offset, "SmartModule runtime error; the run stops: {message}");
    }

    /// A partition's streams were lost, stalled or could not replay a record, and are being
    /// reopened (cluster source).
    pub fn reconnecting(&mut self, partition: u32) {
        self.summary.reconnects += 1;
        self.observer.reconnecting(partition);
    }

    /// Commits a finished batch (updates, rejects, counters and the new checkpoint in one
    /// transaction), flushes it when durable, accounts for it and shows progress.
    pub fn commit(&mut self, batch: &Batch) -> anyhow::Result<Committed> {
        let mut committed = self.commit_group(std::slice::from_ref(batch))?;
        Ok(committed.pop().expect("one batch, one result"))
    }

    /// Commits batches that arrived together: each in its own transaction, in order, then
    /// one flush when durable (a group commit: one fsync for all of them, so a burst of
    /// small batches costs one flush, not one each). Nothing is reported (updates to the
    /// stream, metrics) before that flush: a reported batch is durable. The witness is
    /// written after the report.
    pub fn commit_group(&mut self, batches: &[Batch]) -> anyhow::Result<Vec<Committed>> {
        let store_start = Instant::now();
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            let committed = self.store.commit(batch)?;
            self.account(batch, &committed);
            results.push(committed);
        }
        // Durable: every group is flushed and witnessed, so a store sled shortened is caught
        // to the last batch; the witness is written after the batches are reported (they
        // are durable after the flush; the witness only lets a later check tell a store
        // sled shortened). Relaxed: sled flushes on its own; a flush and witness at most
        // once a second bounds what a damaged log can lose unnoticed to about a second.
        let witness = match self.durability {
            Durability::Durable => Some(self.store.flush_durable()?),
            Durability::Relaxed => {
                self.store.witness_if_due()?;
                None
            }
        };
        let spent = store_start.elapsed();
        self.summary.store_ms += spent.as_millis() as u64;
        self.summary.commit_groups += 1;
        // Each batch's share of the group's time, for the per-batch apply histogram.
        let apply_seconds = spent.as_secs_f64() / batches.len().max(1) as f64;
        self.tally.fill(&mut self.summary);
        let backlog = {
            let s = &self.summary;
            s.lines_read.saturating_sub(s.already_committed + s.events_in)
        };
        for (batch, committed) in batches.iter().zip(&results) {
            self.observer.committed(batch, committed, apply_seconds, backlog);
            tracing::debug!(
                partition = batch.partition,
                last_offset = batch.last_offset,
                applied = committed.applied,
                "batch committed"
            );
        }
        if let Some(witness) = witness {
            let witness_start = Instant::now();
            self.store.write_witness(witness)?;
            self.summary.store_ms += witness_start.elapsed().as_millis() as u64;
        }
        let s = &self.summary;
        let rate = s.events_in as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        self.progress.tick(|| {
            format!(
                "{} events, {} accepted, {} rejected, {} duplicates ({rate:.0}/s)",
                s.events_in,
                s.accepted,
                s.rejected_total(),
                s.duplicates
            )
        });
        Ok(results)
    }

    /// Adds a committed batch to the run's summary.
    fn account(&mut self, batch: &Batch, committed: &Committed) {
        let s = &mut self.summary;
        s.batches += 1;
        s.events_in += batch.events_in;
        s.accepted += committed.accepted();
        s.applied += committed.applied;
        s.duplicates += committed.duplicates;
        s.skipped += committed.skipped;
        s.suppressed += committed.suppressed;
        for (reason, n) in &committed.rejected {
            *s.rejected.entry(reason.clone()).or_default() += n;
        }
        s.fold_evictions += committed.evicted;
        for u in &batch.updates {
            if u.outcome == Outcome::Applied && !self.touched.contains(&u.user_id) {
                self.touched.insert(u.user_id.clone());
            }
        }
    }

    /// Flushes the store and returns the run's summary.
    pub fn finish(mut self) -> anyhow::Result<Summary> {
        self.store.close()?;
        self.tally.fill(&mut self.summary);
        self.progress.finish();
        self.summary.profiles_touched = self.touched.len() as u64;
        self.summary.elapsed_ms = self.started.elapsed().as_millis() as u64;
        Ok(self.summary)
    }
}

#[cfg(test)]
mod funnel_tests {
    use super::*;

    /// Proves the funnel of a store written before the steps were recorded is read back
    /// from its chain params, commas in the value included.
    #[test]
    fn the_recorded_params_give_the_steps() {
        let mut params = ChainParams::default();
        params.set(Module::Enrich, "steps", "sign_up,trial,paid");
        params.set(Module::Profile, "state_ttl", "1h");
        params.set(Module::Validate, "max_event_bytes", "9000");
        let fp = params_fingerprint(&params);
        assert_eq!(enrich_steps_in(&fp).as_deref(), Some("sign_up,trial,paid"), "{fp}");
        assert_eq!(enrich_steps_in("defaults"), None);
        assert_eq!(enrich_steps_in("enrich.steps=a,b"), Some("a,b".into()));
    }
}
