//! A [`Run`] on its own thread, so a source prepares its next batch while the last one is
//! committed: the wall time of a run becomes about the larger of its chain and store
//! times, not their sum.
//!
//! The source hands batches over in order through a bounded queue ([`PIPELINE_DEPTH`]);
//! the committer commits them in that order, each exactly as [`Run::commit`] would on the
//! source's thread. Nothing about exactly once changes: a batch's updates, rejects and
//! checkpoint are still one transaction, and a crash with batches still queued loses only
//! batches whose checkpoint was never written, which the next run reads again.
//!
//! What a source must do differently:
//! - count what it reads in its own [`Tally`] ([`Committer::tally`]), handed over with
//!   each batch;
//! - before reading the store's view of what it committed (a partition's restart snapshot
//!   after an erasure), wait for the queue to drain ([`Committer::drain`]);
//! - end with [`Committer::finish`]. A source that stops on an error just returns it: the
//!   batches it queued before the error are still committed (as they were when commits
//!   ran inline) when the committer is dropped.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use super::{Observer, Run, Summary, Tally};
use crate::store::{Batch, Store};

/// Batches queued for the committer at most, beyond the one it is committing. Two keep
/// the committer busy while the source finishes a batch, and bound memory to a few
/// batches (each at most [`super::embedded::MAX_BATCH_BYTES`] of input).
pub const PIPELINE_DEPTH: usize = 2;

enum Job {
    /// Commit this batch; the tally is the source's as of when it was queued.
    Commit(Box<Batch>, Tally),
    /// Answer once every batch queued before is committed.
    Drain(SyncSender<()>),
    /// No more batches: flush and return the summary.
    Finish(Tally),
}

/// The commit side of a run, on its own thread.
pub struct Committer<'scope, 'run> {
    jobs: Option<SyncSender<Job>>,
    thread: Option<ScopedJoinHandle<'scope, anyhow::Result<Summary>>>,
    tally: Tally,
    store: Store,
    observer: &'run dyn Observer,
}

impl<'scope, 'run: 'scope> Committer<'scope, 'run> {
    /// Moves `run` to a thread of `scope` that commits the batches [`Committer::commit`]
    /// queues.
    pub fn spawn<'env>(scope: &'scope Scope<'scope, 'env>, run: Run<'run>) -> anyhow::Result<Self> {
        let (tx, rx) = sync_channel(PIPELINE_DEPTH);
        let store = run.store().clone();
        let observer = run.observer();
        let thread = std::thread::Builder::new()
            .name("onramp-commit".into())
            .spawn_scoped(scope, move || commit_all(run, rx))?;
        Ok(Committer {
            jobs: Some(tx),
            thread: Some(thread),
            tally: Tally::default(),
            store,
            observer,
        })
    }
}

impl<'run> Committer<'_, 'run> {
    /// The store (read it for what is committed only after [`Committer::drain`]).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The run's observer.
    pub fn observer(&self) -> &'run dyn Observer {
        self.observer
    }

    /// The source's tally of what it read.
    pub fn tally(&mut self) -> &mut Tally {
        &mut self.tally
    }

    /// Queues a batch; waits only while [`PIPELINE_DEPTH`] batches are already queued.
    /// Fails with the committer's error once a commit failed.
    pub fn commit(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.send(Job::Commit(Box::new(batch), self.tally))
    }

    /// Waits until every batch queued so far is committed.
    pub fn drain(&mut self) -> anyhow::Result<()> {
        let (tx, rx) = sync_channel(1);
        self.send(Job::Drain(tx))?;
        match rx.recv() {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Commits what is queued, flushes the store and returns the run's summary.
    pub fn finish(mut self) -> anyhow::Result<Summary> {
        self.send(Job::Finish(self.tally))?;
        self.jobs = None;
        match self.thread.take().map(ScopedJoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(anyhow::anyhow!("the committer already stopped")),
        }
    }

    fn send(&mut self, job: Job) -> anyhow::Result<()> {
        match &self.jobs {
            Some(jobs) if jobs.send(job).is_ok() => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    /// The error the committer thread stopped with (it stops only on one).
    fn stopped(&mut self) -> anyhow::Error {
        self.jobs = None;
        match self.thread.take().map(ScopedJoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Ok(Ok(_))) => anyhow::anyhow!("the committer stopped before the run finished"),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => anyhow::anyhow!("the committer stopped on an error, reported before"),
        }
    }
}

/// A source that stopped on an error drops its committer without finishing: the batches
/// it queued are committed, then the thread is joined here, so they are in the store before
/// the source's error is returned.
impl Drop for Committer<'_, '_> {
    fn drop(&mut self) {
        self.jobs = None;
        match self.thread.take().map(ScopedJoinHandle::join) {
            Some(Ok(Err(e))) => {
                tracing::error!("committing the batches queued before the run stopped failed: {e:#}")
            }
            Some(Err(_)) => tracing::error!("the committer thread panicked"),
            _ => {}
        }
    }
}

/// The committer thread: commits each queued batch in order until told to finish. When
/// the source goes away without finishing (it stopped on an error), what it queued is
/// still committed and flushed.
fn commit_all(mut run: Run<'_>, jobs: Receiver<Job>) -> anyhow::Result<Summary> {
    for job in jobs {
        match job {
            Job::Commit(batch, tally) => {
                run.set_tally(tally);
                run.commit(&batch)?;
            }
            Job::Drain(done) => {
                let _ = done.send(());
            }
            Job::Finish(tally) => {
                run.set_tally(tally);
                return run.finish();
            }
        }
    }
    run.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::chain::ChainParams;
    use crate::run::{Durability, Settings, SourceKind};

    /// A run over a new store of `partitions` partitions in `dir`.
    fn open(dir: &std::path::Path, partitions: u32) -> Run<'static> {
        let settings = Settings {
            store: dir.to_path_buf(),
            params: ChainParams::default(),
            batch_size: 10,
            durability: Durability::Durable,
            progress_bar: false,
            suppressions: None,
            rules: None,
            watermark_ignore: Default::default(),
        };
        Run::open(&settings, partitions, "test", SourceKind::Embedded, &(), Instant::now()).unwrap()
    }

    /// A batch of `events` records ending at `last_offset`, all rejected upstream (a batch
    /// needs no updates to move the checkpoint and the counters).
    fn batch(partition: u32, last_offset: i64, events: u64) -> Batch {
        Batch {
            partition,
            last_offset,
            events_in: events,
            updates: Vec::new(),
            rejects: Vec::new(),
            input: None,
        }
    }

    fn checkpoint(store: &Store, partition: u32) -> i64 {
        store.checkpoint(partition).unwrap().map_or(-1, |c| c.offset)
    }

    /// Proves queued batches are committed in order, that after `drain` the store shows
    /// every one of them, and that the summary holds the source's tally and every batch.
    #[test]
    fn queued_batches_are_committed_in_order_and_drain_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = open(dir.path(), 2);
        let summary = std::thread::scope(|scope| {
            let mut c = Committer::spawn(scope, run).unwrap();
            for i in 0..20i64 {
                c.tally().read(5);
                c.commit(batch((i % 2) as u32, 5 * i + 4, 5)).unwrap();
            }
            c.drain().unwrap();
            assert_eq!(checkpoint(c.store(), 0), 94, "partition 0's last batch");
            assert_eq!(checkpoint(c.store(), 1), 99, "partition 1's last batch");
            c.tally().already_committed();
            c.finish().unwrap()
        });
        assert_eq!(summary.batches, 20);
        assert_eq!(summary.events_in, 100);
        assert_eq!(summary.lines_read, 100, "the source's tally reaches the summary");
        assert_eq!(summary.already_committed, 1, "the tally handed over at finish");
    }

    /// Proves a source that stops on an error (it drops the committer without finishing)
    /// still gets every batch it queued before the error committed, by the time the
    /// committer is dropped — as when commits ran on the source's thread.
    #[test]
    fn batches_queued_before_a_source_error_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let run = open(dir.path(), 1);
        let store = run.store().clone();
        std::thread::scope(|scope| {
            let mut c = Committer::spawn(scope, run).unwrap();
            for i in 0..6i64 {
                c.commit(batch(0, i, 1)).unwrap();
            }
            drop(c);
            assert_eq!(checkpoint(&store, 0), 5, "every queued batch, once dropped");
        });
    }
}
