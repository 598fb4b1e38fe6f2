//! The offset merger of `onramp run --source fluvio`: one partition's update stream and
//! reject stream in, the store's [`Batch`]es out — synchronous and free of I/O, so every
//! case is tested without a cluster.
//!
//! Every offset of the partition appears in exactly one of the two streams: the updates
//! (validate → enrich → profile) carry theirs in the `ProfileUpdate`, the rejects
//! (validate `mode=rejected`) in the `RejectedEvent`. The two streams arrive at their own
//! pace, so the merger holds each offset until every offset before it is accounted for,
//! and hands out batches of consecutive offsets starting right after the checkpoint, each
//! at most `batch_size` long — exactly the batches the embedded pipeline commits.
//!
//! What it tolerates, and why:
//! - an offset at or below the checkpoint the streams were opened at: the SPU resumes a
//!   stream at the start of the producer batch holding `checkpoint + 1`, so those come
//!   again; ignored and counted ([`MergeStats::resent`]);
//! - an offset seen a second time above the checkpoint (either stream): the first is kept,
//!   the second ignored and counted ([`MergeStats::duplicates`]);
//! - a gap: everything after it waits until the other stream fills it;
//! - the end offset of `--stop-at-end`: offsets at or past it are ignored
//!   ([`MergeStats::past_end`]) and [`OffsetMerger::at_end`] says when all before it are in;
//! - a reopen (after an erasure, a reconnect): [`OffsetMerger::reopen`] forgets what was
//!   not handed out and starts again after the new checkpoint.
//!
//! What it does not merge: an update saying the aggregate no longer held the update of a
//! record the SPU fed it again ([`SkipKind::ReplayEvicted`]) for an offset not accounted
//! for yet. The offset stays missing, so nothing from it on is handed out; once every
//! offset before it is in, [`OffsetMerger::replay_evicted_next`] says so, and the caller
//! commits what precedes and reopens the streams from the checkpoint (a fresh aggregate
//! folds the record). Anywhere else it is an ignored re-send.
//!
//! What it refuses: an update saying the profile aggregate refused its restart snapshot
//! ([`ProfileUpdate::refused_snapshot`]) for an offset past the checkpoint. Nothing was
//! folded on that stream, so [`OffsetMerger::push_update`] returns
//! [`RefusedSnapshot`], and no batch ever holds that offset or any later one
//! (not even one the reject stream claimed too): the run stops like the embedded pipeline
//! does. Refused updates re-sent at or below the checkpoint are ignored like any re-sent
//! offset; the aggregate refuses every record, so the first one past the checkpoint stops it.

use std::collections::{BTreeMap, VecDeque};

use onramp_schemas::{ProfileUpdate, RejectedEvent, SkipKind};

use crate::run::RefusedSnapshot;
use crate::store::Batch;

/// What the merger ignored so far (over every reopen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Offsets at or below the checkpoint the streams were opened at (re-sent by the SPU
    /// after a resume; expected).
    pub resent: u64,
    /// Offsets above it that came a second time; the first was kept.
    pub duplicates: u64,
    /// Offsets at or past the end offset (`--stop-at-end`).
    pub past_end: u64,
}

/// What one stream produced at an offset.
#[derive(Debug)]
enum Item {
    Update(Box<ProfileUpdate>),
    Reject(RejectedEvent),
}

/// Merges one partition's update and reject streams by offset into store batches.
#[derive(Debug)]
pub struct OffsetMerger {
    partition: u32,
    batch_size: usize,
    end: Option<i64>,
    /// The checkpoint the streams were (re)opened at.
    opened_at: i64,
    /// The last offset handed out in a batch (`opened_at` before the first).
    handed_out: i64,
    /// Consecutive offsets after `handed_out`, not handed out yet.
    ready: VecDeque<(i64, Item)>,
    /// Offsets past a gap, waiting for it to fill.
    waiting: BTreeMap<i64, Item>,
    refused: Option<RefusedSnapshot>,
    /// The lowest offset the aggregate could not replay (see the module docs).
    replay_evicted: Option<i64>,
    stats: MergeStats,
}

impl OffsetMerger {
    /// A merger for `partition` whose streams open at `checkpoint + 1` (`-1`: nothing
    /// committed yet). Batches hold at most `batch_size` records (at least 1). With `end`
    /// (`--stop-at-end`), offsets from `end` on are ignored.
    pub fn new(partition: u32, checkpoint: i64, batch_size: usize, end: Option<i64>) -> Self {
        OffsetMerger {
            partition,
            batch_size: batch_size.max(1),
            end,
            opened_at: checkpoint,
            handed_out: checkpoint,
            ready: VecDeque::new(),
            waiting: BTreeMap::new(),
            refused: None,
            replay_evicted: None,
            stats: MergeStats::default(),
        }
    }

    /// Starts again after `checkpoint` (the streams are reopened there): whatever was not
    /// handed out is dropped (the streams send it again), and a refusal is forgotten (the
    /// aggregate gets a new snapshot). The counters are kept.
    pub fn reopen(&mut self, checkpoint: i64) {
        self.opened_at = checkpoint;
        self.handed_out = checkpoint;
        self.ready.clear();
        self.waiting.clear();
        self.refused = None;
        self.replay_evicted = None;
    }

    /// An update of the update stream. Errors when the aggregate refused its restart
    /// snapshot (and from then on): nothing at or after that offset is ever handed out.
    pub fn push_update(&mut self, update: ProfileUpdate) -> Result<(), RefusedSnapshot> {
        if let Some(refused) = &self.refused {
            return Err(refused.clone());
        }
        let offset = update.offset;
        let refusal = (offset > self.opened_at && self.before_end(offset))
            .then(|| RefusedSnapshot::of(self.partition, &update))
            .flatten();
        if let Some(refused) = refusal {
            self.refused = Some(refused.clone());
            // Only the consecutive run before the refused offset may still be handed out.
            self.waiting.clear();
            self.ready.retain(|(o, _)| *o < offset);
            return Err(refused);
        }
        if update.skip_kind == Some(SkipKind::ReplayEvicted) {
            let open = offset > self.opened_at
                && self.before_end(offset)
                && offset >= self.next_offset()
                && !self.waiting.contains_key(&offset);
            if open {
                self.replay_evicted = Some(self.replay_evicted.map_or(offset, |o| o.min(offset)));
            } else {
                self.stats.duplicates += 1;
            }
            return Ok(());
        }
        self.push(offset, Item::Update(Box::new(update)));
        Ok(())
    }

    /// True when every offset before one the aggregate could not replay is in: what is
    /// ready can be handed out, and the streams must then be reopened.
    pub fn replay_evicted_next(&self) -> bool {
        self.replay_evicted == Some(self.next_offset())
    }

    /// A reject of the reject stream, at `offset`. Ignored after a refusal.
    pub fn push_reject(&mut self, offset: i64, reject: RejectedEvent) {
        if self.refused.is_none() {
            self.push(offset, Item::Reject(reject));
        }
    }

    fn before_end(&self, offset: i64) -> bool {
        self.end.is_none_or(|end| offset < end)
    }

    fn push(&mut self, offset: i64, item: Item) {
        if offset <= self.opened_at {
            self.stats.resent += 1;
            return;
        }
        if !self.before_end(offset) {
            self.stats.past_end += 1;
            return;
        }
        let next = self.next_offset();
        if offset < next || self.waiting.contains_key(&offset) {
            self.stats.duplicates += 1;
            return;
        }
        if offset > next {
            self.waiting.insert(offset, item);
            return;
        }
        self.ready.push_back((offset, item));
        let mut next = offset + 1;
        while let Some(item) = self.waiting.remove(&next) {
            self.ready.push_back((next, item));
            next += 1;
        }
    }

    /// Offsets held past a gap.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether to read on from a stream whose highest offset so far is `highest`: always,
    /// unless more than `most_waiting` offsets wait past a gap that this stream cannot fill
    /// (it is already past it; a stream's offsets ascend). Not reading a stream holds the
    /// SPU back (it sends the next fetch once the client has read this one), so a stream
    /// running ahead of the other costs bounded memory here.
    pub fn may_read(&self, highest: i64, most_waiting: usize) -> bool {
        self.waiting.len() <= most_waiting || highest < self.next_offset()
    }

    /// The first offset not accounted for yet (the one a gap waits for).
    pub fn next_offset(&self) -> i64 {
        self.handed_out + self.ready.len() as i64 + 1
    }

    /// The last offset handed out in a batch (the checkpoint once every batch is committed).
    pub fn handed_out(&self) -> i64 {
        self.handed_out
    }

    /// The next full batch (`batch_size` consecutive offsets), or with an end offset the
    /// last one once every offset before the end is in. Call until `None`.
    pub fn take_ready(&mut self) -> Option<Batch> {
        if self.ready.len() >= self.batch_size || (self.at_end() && !self.ready.is_empty()) {
            self.take(self.batch_size)
        } else {
            None
        }
    }

    /// The consecutive offsets not handed out yet, as a batch of at most `batch_size`
    /// (a partial batch that waited long enough, or before the streams close). Call until
    /// `None`. Offsets past a gap stay.
    pub fn flush(&mut self) -> Option<Batch> {
        self.take(self.batch_size)
    }

    /// True when consecutive offsets wait to be handed out (a partial batch).
    pub fn has_partial(&self) -> bool {
        !self.ready.is_empty()
    }

    /// True when there is an end offset and every offset before it is accounted for (the
    /// last batch may still be to take).
    pub fn at_end(&self) -> bool {
        self.end.is_some_and(|end| self.next_offset() >= end)
    }

    /// What was ignored so far.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    fn take(&mut self, most: usize) -> Option<Batch> {
        if self.ready.is_empty() {
            return None;
        }
        let mut batch = Batch {
            partition: self.partition,
            last_offset: self.handed_out,
            ..Batch::default()
        };
        for (offset, item) in self.ready.drain(..most.min(self.ready.len())) {
            match item {
                Item::Update(u) => batch.updates.push(*u),
                Item::Reject(r) => batch.rejects.push((offset, r)),
            }
            batch.events_in += 1;
            batch.last_offset = offset;
        }
        self.handed_out = batch.last_offset;
        Some(batch)
    }
}

/// Per partition, how many records of the topic are not committed yet: from the end
/// offset last polled from the partition's leader and the committed checkpoint.
#[derive(Debug, Clone)]
pub struct LagBook {
    ends: Vec<Option<i64>>,
    checkpoints: Vec<i64>,
}

impl LagBook {
    /// Every partition's committed checkpoint (`-1`: nothing committed); no end known yet.
    pub fn new(checkpoints: Vec<i64>) -> Self {
        LagBook {
            ends: vec![None; checkpoints.len()],
            checkpoints,
        }
    }

    /// A polled end offset (the offset the partition's next record will get); returns the
    /// partition's lag. Unknown partitions are ignored (`None`).
    pub fn end_polled(&mut self, partition: u32, end: i64) -> Option<u64> {
        *self.ends.get_mut(partition as usize)? = Some(end);
        self.lag(partition)
    }

    /// A committed checkpoint; returns the partition's lag once an end offset is known.
    pub fn committed(&mut self, partition: u32, checkpoint: i64) -> Option<u64> {
        *self.checkpoints.get_mut(partition as usize)? = checkpoint;
        self.lag(partition)
    }

    /// `end - (checkpoint + 1)`, never below 0 (records committed since the last poll may
    /// be past the polled end); `None` before the first poll.
    pub fn lag(&self, partition: u32) -> Option<u64> {
        let end = (*self.ends.get(partition as usize)?)?;
        let checkpoint = *self.checkpoints.get(partition as usize)?;
        Some(end.saturating_sub(checkpoint.saturating_add(1)).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use onramp_schemas::{Outcome, RejectReason, SkipKind};

    use super::*;

    fn update(offset: i64) -> ProfileUpdate {
        ProfileUpdate::applied(
            format!("u_{}", offset % 7),
            offset,
            format!("e{offset}"),
            "page_view",
            1_790_000_000_000 + offset,
            None,
        )
    }

    fn reject(offset: i64) -> RejectedEvent {
        RejectedEvent {
            reason: RejectReason::InvalidJson,
            detail: format!("line {offset} is not JSON"),
            payload: "{".into(),
            payload_bytes: 1,
            payload_sha256: String::new(),
            identity: None,
            offset: Some(offset),
        }
    }

    fn refused(offset: i64) -> ProfileUpdate {
        ProfileUpdate::skipped(
            offset,
            SkipKind::RefusedSnapshot,
            "restart snapshot version 9 is not supported (expected 1); nothing is folded on this stream",
        )
    }

    /// The offsets of a batch, in order, updates and rejects together.
    fn offsets(batch: &Batch) -> Vec<i64> {
        let mut all: Vec<i64> = batch.updates.iter().map(|u| u.offset).collect();
        all.extend(batch.rejects.iter().map(|(o, _)| *o));
        all.sort_unstable();
        all
    }

    /// Every batch `take_ready` gives now.
    fn ready(m: &mut OffsetMerger) -> Vec<Batch> {
        std::iter::from_fn(|| m.take_ready()).collect()
    }

    /// Checks a batch is consecutive, ends at its `last_offset` and counts its records.
    fn assert_well_formed(batch: &Batch, partition: u32) {
        let o = offsets(batch);
        assert_eq!(batch.partition, partition);
        assert_eq!(batch.events_in as usize, o.len());
        assert_eq!(o.last().copied(), Some(batch.last_offset), "{o:?}");
        assert!(o.windows(2).all(|w| w[1] == w[0] + 1), "not consecutive: {o:?}");
        assert!(batch.rejects.iter().all(|(o, r)| r.offset == Some(*o)));
    }

    /// Both streams interleaved batch by batch give full batches of consecutive offsets,
    /// each record in exactly one batch and as the stream sent it.
    #[test]
    fn interleaved_streams_give_consecutive_full_batches() {
        let mut m = OffsetMerger::new(2, 9, 4, None);
        // Offsets 10..22: multiples of 3 are rejects.
        let is_reject = |o: i64| o % 3 == 0;
        let (rej, upd): (Vec<i64>, Vec<i64>) = (10..22).partition(|&o| is_reject(o));
        // The reject stream runs ahead; then the update stream in two chunks.
        for &o in &rej {
            m.push_reject(o, reject(o));
        }
        assert!(ready(&mut m).is_empty(), "10 and 11 (updates) are not in yet");
        for &o in &upd[..4] {
            m.push_update(update(o)).unwrap();
        }
        let first = ready(&mut m);
        assert_eq!(first.len(), 1);
        assert_eq!(offsets(&first[0]), vec![10, 11, 12, 13]);
        assert_eq!(first[0].rejects.len(), 1);
        assert_eq!(first[0].updates[0], update(10));
        for &o in &upd[4..] {
            m.push_update(update(o)).unwrap();
        }
        let rest = ready(&mut m);
        assert_eq!(
            rest.iter().map(offsets).collect::<Vec<_>>(),
            vec![vec![14, 15, 16, 17], vec![18, 19, 20, 21]]
        );
        for b in first.iter().chain(&rest) {
            assert_well_formed(b, 2);
        }
        assert_eq!(m.handed_out(), 21);
        assert!(m.flush().is_none());
        assert_eq!(m.stats(), MergeStats::default());
    }

    /// A partial batch stays until flushed, and `flush` gives exactly the consecutive run.
    #[test]
    fn a_partial_batch_waits_for_flush() {
        let mut m = OffsetMerger::new(0, -1, 10, None);
        for o in 0..3 {
            m.push_update(update(o)).unwrap();
        }
        assert!(m.has_partial());
        assert!(m.take_ready().is_none(), "3 of 10 is not a full batch");
        let b = m.flush().unwrap();
        assert_eq!(offsets(&b), vec![0, 1, 2]);
        assert_eq!(b.last_offset, 2);
        assert!(!m.has_partial());
        assert!(m.flush().is_none());
        assert_eq!(m.next_offset(), 3);
    }

    /// A gap holds back everything after it, even a full batch's worth, until the other
    /// stream fills it; a flush meanwhile gives only what precedes the gap.
    #[test]
    fn a_gap_holds_the_batch_back_until_filled() {
        let mut m = OffsetMerger::new(0, 99, 3, None);
        m.push_update(update(100)).unwrap();
        for o in 102..110 {
            m.push_update(update(o)).unwrap();
        }
        assert!(m.take_ready().is_none(), "101 is missing");
        assert_eq!(m.next_offset(), 101);
        let before_gap = m.flush().unwrap();
        assert_eq!(offsets(&before_gap), vec![100]);
        assert!(m.flush().is_none(), "nothing after the gap may be flushed");
        m.push_reject(101, reject(101));
        let batches = ready(&mut m);
        assert_eq!(
            batches.iter().map(offsets).collect::<Vec<_>>(),
            vec![vec![101, 102, 103], vec![104, 105, 106], vec![107, 108, 109]]
        );
        assert_eq!(batches[0].rejects[0].0, 101);
    }

    /// A `replay_evicted` update for an offset not accounted for asks for a reopen and is
    /// never merged; what precedes it is still handed out. For an offset already merged,
    /// waiting past a gap, or at or below the checkpoint, it is an ignored re-send.
    #[test]
    fn a_replay_the_aggregate_could_not_answer_asks_for_a_reopen() {
        let evicted = |o: i64| ProfileUpdate::skipped(o, SkipKind::ReplayEvicted, "no longer held");
        let mut m = OffsetMerger::new(0, 9, 100, None);
        for o in [10, 11, 13] {
            m.push_update(update(o)).unwrap();
        }
        // Behind a gap (12, a reject still to come): not yet.
        m.push_update(evicted(14)).unwrap();
        assert!(!m.replay_evicted_next());
        for o in [5, 11, 13] {
            m.push_update(evicted(o)).unwrap(); // re-sends: ignored
        }
        m.push_reject(12, reject(12));
        assert!(m.replay_evicted_next(), "every offset before 14 is in");
        let before = m.flush().unwrap();
        assert_eq!(offsets(&before), vec![10, 11, 12, 13]);
        assert!(before.updates.iter().all(|u| u.skip_kind.is_none()));
        assert!(m.flush().is_none(), "nothing from the evicted offset on");
        // After the reopen, the fresh aggregate's update is merged as usual.
        m.reopen(13);
        assert!(!m.replay_evicted_next());
        m.push_update(update(14)).unwrap();
        assert_eq!(offsets(&m.flush().unwrap()), vec![14]);
    }

    /// A stream already past the gap stops being read once too much waits behind the gap;
    /// the stream that can fill it is always read.
    #[test]
    fn a_stream_past_the_gap_is_held_back_when_too_much_waits() {
        let mut m = OffsetMerger::new(0, -1, 1_000, None);
        for o in 1..=5 {
            m.push_update(update(o)).unwrap(); // 0 (a reject) is missing
        }
        assert_eq!(m.waiting(), 5);
        assert!(m.may_read(5, 10), "within the limit");
        assert!(!m.may_read(5, 4), "the update stream is past the gap");
        assert!(m.may_read(-1, 4), "the reject stream can fill it");
        m.push_reject(0, reject(0));
        assert_eq!(m.waiting(), 0);
        assert!(m.may_read(5, 4));
    }

    /// An offset that comes twice (same stream or the other one) is kept once, the first
    /// time, and counted.
    #[test]
    fn an_offset_seen_twice_is_ignored_and_counted() {
        let mut m = OffsetMerger::new(1, -1, 2, None);
        m.push_update(update(0)).unwrap();
        let mut again = update(0);
        again.event_id = "second".into();
        m.push_update(again.clone()).unwrap(); // already consecutive, not handed out
        m.push_update(update(3)).unwrap();
        again.offset = 3;
        m.push_update(again).unwrap(); // waiting past a gap
        m.push_reject(3, reject(3)); // the other stream
        m.push_update(update(1)).unwrap();
        let first = m.take_ready().unwrap();
        assert_eq!(first.updates, vec![update(0), update(1)]);
        m.push_update(update(1)).unwrap(); // already handed out
        m.push_update(update(2)).unwrap();
        let second = m.take_ready().unwrap();
        assert_eq!(second.updates, vec![update(2), update(3)]);
        assert!(second.rejects.is_empty());
        assert_eq!(m.stats().duplicates, 4);
        assert_eq!(m.stats().resent, 0);
    }

    /// Offsets at or below the checkpoint (the SPU re-sends the producer batch holding
    /// checkpoint + 1) are ignored, counted as re-sent, and never reach a batch.
    #[test]
    fn offsets_at_or_below_the_checkpoint_are_ignored() {
        let mut m = OffsetMerger::new(0, 49, 100, None);
        for o in 45..53 {
            if o == 47 {
                m.push_reject(o, reject(o));
            } else {
                let mut u = update(o);
                if o <= 49 {
                    u.outcome = Outcome::Skipped;
                    u.skip_kind = Some(SkipKind::AlreadyApplied);
                }
                m.push_update(u).unwrap();
            }
        }
        let b = m.flush().unwrap();
        assert_eq!(offsets(&b), vec![50, 51, 52]);
        assert!(b.rejects.is_empty());
        assert!(b.updates.iter().all(|u| u.outcome == Outcome::Applied));
        assert_eq!(m.stats().resent, 5);
        assert_eq!(m.stats().duplicates, 0);
    }

    /// With an end offset, the last batch comes out as soon as every offset before the end
    /// is in (no flush needed), nothing at or past the end is taken, and `at_end` says so.
    #[test]
    fn reaching_the_end_offset_finishes_the_partition() {
        let mut m = OffsetMerger::new(0, 4, 4, Some(11));
        assert!(!m.at_end());
        for o in 5..13 {
            m.push_update(update(o)).unwrap();
        }
        assert!(m.at_end());
        let batches = ready(&mut m);
        assert_eq!(
            batches.iter().map(offsets).collect::<Vec<_>>(),
            vec![vec![5, 6, 7, 8], vec![9, 10]]
        );
        assert_eq!(m.handed_out(), 10);
        assert_eq!(m.stats().past_end, 2);
        assert!(m.flush().is_none());

        // A partition already committed up to its end is at its end from the start.
        assert!(OffsetMerger::new(0, 10, 4, Some(11)).at_end());
        assert!(!OffsetMerger::new(0, 10, 4, None).at_end());
    }

    /// A reopen drops what was not handed out and starts after the new checkpoint; what
    /// the reopened streams send again is merged as if the first streams never existed.
    #[test]
    fn a_reopen_resets_to_the_new_checkpoint() {
        let mut m = OffsetMerger::new(3, -1, 3, None);
        for o in 0..5 {
            m.push_update(update(o)).unwrap();
        }
        m.push_update(update(7)).unwrap();
        let first = m.take_ready().unwrap();
        assert_eq!(offsets(&first), vec![0, 1, 2]);
        // Offsets 3, 4 (partial) and 7 (past a gap) were not handed out; reopen at 2.
        m.reopen(2);
        assert!(!m.has_partial());
        assert_eq!(m.next_offset(), 3);
        // The SPU re-sends from the start of the producer batch (offset 1).
        for o in 1..6 {
            if o == 5 {
                m.push_reject(o, reject(o));
            } else {
                m.push_update(update(o)).unwrap();
            }
        }
        let b = m.take_ready().unwrap();
        assert_eq!(offsets(&b), vec![3, 4, 5]);
        assert_well_formed(&b, 3);
        assert_eq!(m.stats().resent, 2);
        assert_eq!(
            m.stats().duplicates,
            0,
            "3 and 4 again after a reopen are not duplicates"
        );
        assert!(m.flush().is_none(), "7 of the first streams must be gone");
    }

    /// A refused snapshot stops the merge with the embedded pipeline's message, and no
    /// batch ever holds the refused offset or a later one; the run before it is intact.
    #[test]
    fn a_refused_snapshot_stops_before_the_refused_record() {
        let mut m = OffsetMerger::new(4, 19, 100, None);
        // The aggregate refuses every record, also those re-sent at or below the checkpoint:
        // those are not the first refused record past the checkpoint.
        m.push_update(refused(18)).unwrap();
        m.push_reject(20, reject(20));
        m.push_reject(21, reject(21));
        m.push_reject(23, reject(23));
        let err = m.push_update(refused(22)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "partition 4: the profile aggregate refused its restart snapshot: restart snapshot version 9 is not \
             supported (expected 1); nothing is folded on this stream"
        );
        assert!(matches!(
            err,
            RefusedSnapshot {
                offset: 22,
                partition: 4,
                ..
            }
        ));
        // Later records of either stream change nothing, and the error stays.
        assert_eq!(m.push_update(update(24)), Err(err.clone()));
        m.push_reject(22, reject(22));
        assert!(m.take_ready().is_none());
        let before = m.flush().unwrap();
        assert_eq!(offsets(&before), vec![20, 21]);
        assert!(m.flush().is_none(), "nothing at or past offset 22 may be handed out");
        assert_eq!(m.handed_out(), 21);
    }

    /// A refusal takes back every offset from its own on that was not handed out, even one
    /// the reject stream already filled (contradictory streams: the conservative side wins),
    /// and a reopen with a new snapshot merges again.
    #[test]
    fn a_refusal_takes_back_the_unhanded_run_from_its_offset_and_a_reopen_clears_it() {
        let mut m = OffsetMerger::new(0, -1, 2, None);
        m.push_reject(0, reject(0));
        m.push_reject(1, reject(1));
        assert_eq!(offsets(&m.take_ready().unwrap()), vec![0, 1]);
        // 2 and 3 are consecutive rejects, 5 waits past a gap; the update stream then
        // says the aggregate refused at 3: 2 may go, 3 and after never.
        m.push_reject(2, reject(2));
        m.push_reject(3, reject(3));
        m.push_reject(5, reject(5));
        assert!(m.push_update(refused(3)).is_err());
        assert_eq!(offsets(&m.flush().unwrap()), vec![2]);
        assert!(m.flush().is_none());
        m.push_update(update(4)).unwrap_err();
        assert!(m.flush().is_none(), "nothing is taken after a refusal");
        m.reopen(2);
        m.push_update(update(3)).unwrap();
        m.push_update(update(4)).unwrap();
        assert_eq!(offsets(&m.take_ready().unwrap()), vec![3, 4]);
    }

    /// Two streams cut into random chunks and interleaved at random, with re-sent offsets
    /// below the checkpoint and duplicates, always give the same batches as merging the
    /// records in offset order: every offset once, in order, in full batches.
    #[test]
    fn random_interleavings_give_the_same_batches() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next_rand = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..200 {
            let checkpoint = next_rand(20) as i64 - 1;
            let end = checkpoint + 1 + next_rand(60) as i64;
            let batch_size = 1 + next_rand(8) as usize;
            // Each stream re-sends from somewhere at or below the checkpoint.
            let is_reject: Vec<bool> = (0..end + 10).map(|_| next_rand(3) == 0).collect();
            let from = (checkpoint + 1 - next_rand(5) as i64).max(0);
            let mut updates: VecDeque<i64> = (from..end).filter(|&o| !is_reject[o as usize]).collect();
            let mut rejects: VecDeque<i64> = (from..end).filter(|&o| is_reject[o as usize]).collect();
            let mut m = OffsetMerger::new(1, checkpoint, batch_size, None);
            let mut got: Vec<Batch> = Vec::new();
            while !updates.is_empty() || !rejects.is_empty() {
                let use_updates = rejects.is_empty() || (!updates.is_empty() && next_rand(2) == 0);
                let stream = if use_updates { &mut updates } else { &mut rejects };
                for _ in 0..1 + next_rand(5) {
                    let Some(o) = stream.pop_front() else { break };
                    if use_updates {
                        m.push_update(update(o)).unwrap();
                    } else {
                        m.push_reject(o, reject(o));
                    }
                    // Now and then an offset comes twice.
                    if next_rand(10) == 0 {
                        if use_updates {
                            m.push_update(update(o)).unwrap();
                        } else {
                            m.push_reject(o, reject(o));
                        }
                    }
                }
                got.extend(ready(&mut m));
            }
            got.extend(std::iter::from_fn(|| m.flush()));
            let all: Vec<i64> = got.iter().flat_map(offsets).collect();
            let want: Vec<i64> = (checkpoint + 1..end).collect();
            assert_eq!(
                all, want,
                "round {round}: checkpoint {checkpoint}, end {end}, batch {batch_size}"
            );
            for (i, b) in got.iter().enumerate() {
                assert_well_formed(b, 1);
                if i + 1 < got.len() {
                    assert_eq!(
                        b.events_in as usize, batch_size,
                        "round {round}: only the last may be partial"
                    );
                }
                assert!(b.events_in as usize <= batch_size);
            }
            for b in &got {
                for u in &b.updates {
                    assert!(!is_reject[u.offset as usize]);
                    assert_eq!(*u, update(u.offset));
                }
            }
        }
    }

    /// The lag is the polled end offset minus the next offset to commit, known only once
    /// an end was polled, falling as commits move past it, and never below 0.
    #[test]
    fn lag_follows_polled_ends_and_commits() {
        let mut lag = LagBook::new(vec![-1, 99]);
        assert_eq!(lag.lag(0), None);
        assert_eq!(lag.committed(0, 9), None, "no end polled yet");
        assert_eq!(lag.end_polled(0, 100), Some(90));
        assert_eq!(lag.end_polled(1, 100), Some(0));
        assert_eq!(lag.committed(0, 59), Some(40));
        assert_eq!(lag.committed(0, 120), Some(0), "committed past the last polled end");
        assert_eq!(lag.end_polled(0, 1000), Some(879));
        assert_eq!(lag.end_polled(7, 10), None, "no partition 7");
        assert_eq!(lag.committed(7, 10), None);
        assert_eq!(LagBook::new(vec![-1]).end_polled(0, 0), Some(0), "an empty partition");
    }
}
