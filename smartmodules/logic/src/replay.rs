//! The profile aggregate's replay cache: the same update for a record the SPU feeds twice.
//!
//! # Why records come twice
//! With a SmartModule chain, Fluvio's SPU (0.50) answers a fetch by running the chain one
//! producer batch at a time and checks the consumer's `max_bytes` only after a batch has
//! run. The batch whose output crosses the limit is dropped from the response, and the
//! consumer is told to resume at that batch's first offset, so the next fetch feeds the
//! same batch to the *same* aggregate instance again. Folding it again would be wrong: its
//! events would come out as duplicates of themselves and their changes would be lost.
//!
//! # What the cache does
//! It keeps the most recent updates, by offset, and the highest offset folded. A record at
//! or below that offset is a re-feed: its update is answered from the cache, byte for byte
//! what the first fold emitted, and the fold state is not touched. The re-fed batch is
//! always the last one folded, so its updates are the newest in the cache.
//!
//! # Bound
//! At most [`REPLAY_BYTES`], counting each entry's buffer by its capacity plus
//! [`ENTRY_OVERHEAD`]; the oldest are dropped first. That holds the whole output of any producer batch up to a few MB of
//! events (an update is one to two times the size of its event; Fluvio's producers send
//! batches of 16 KB by default, `onramp produce` 64 KB). A re-fed record whose update was
//! dropped cannot be answered truthfully: [`ReplayCache::lookup`] says
//! [`Replay::Evicted`], the aggregate answers with a `replay_evicted` skip, and the
//! consumer reopens the stream from its checkpoint with a fresh restart snapshot (slower,
//! never wrong).
//!
//! The embedded run never feeds a record twice, yet its chains carry the cache too (the
//! same `.wasm` runs in both places): up to 8 MiB of Wasm memory per partition.

use std::collections::VecDeque;

/// Most bytes the cache holds: its entries' buffers (capacity, not length) plus
/// [`ENTRY_OVERHEAD`] each.
pub const REPLAY_BYTES: usize = 8 << 20;
/// What an entry costs beyond its buffer: its slot, and the shared handle of the buffer.
pub const ENTRY_OVERHEAD: usize = 64;

/// What the cache knows about a record's offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<'a, T> {
    /// Above every offset folded so far: fold it.
    New,
    /// Folded before; this is what it gave.
    Held(&'a T),
    /// Folded before, but its update was dropped to stay within the bound.
    Evicted,
}

/// Recent updates by offset (see the module docs). `T` is the encoded update.
#[derive(Debug, Clone)]
pub struct ReplayCache<T> {
    /// Ascending offsets, each with its update and its size in bytes.
    entries: VecDeque<(i64, T, usize)>,
    bytes: usize,
    limit: usize,
    highest: Option<i64>,
}

impl<T> Default for ReplayCache<T> {
    fn default() -> Self {
        ReplayCache::new(REPLAY_BYTES)
    }
}

impl<T> ReplayCache<T> {
    /// An empty cache holding at most `limit` bytes of updates.
    pub fn new(limit: usize) -> Self {
        ReplayCache {
            entries: VecDeque::new(),
            bytes: 0,
            limit,
            highest: None,
        }
    }

    /// Whether `offset` was folded before, and if so what it gave.
    pub fn lookup(&self, offset: i64) -> Replay<'_, T> {
        if self.highest.is_none_or(|h| offset > h) {
            return Replay::New;
        }
        match self.entries.binary_search_by_key(&offset, |(o, _, _)| *o) {
            Ok(i) => Replay::Held(&self.entries[i].1),
            Err(_) => Replay::Evicted,
        }
    }

    /// Keeps the update of a record just folded at `offset` (above every offset before;
    /// anything else is ignored), `bytes` long, dropping the oldest beyond the bound.
    pub fn remember(&mut self, offset: i64, update: T, bytes: usize) {
        if self.highest.is_some_and(|h| offset <= h) {
            return;
        }
        self.highest = Some(offset);
        self.entries.push_back((offset, update, bytes));
        self.bytes += bytes;
        while self.bytes > self.limit {
            let Some((_, _, dropped)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= dropped;
        }
    }

    /// Bytes of updates held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Updates held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refed_offset_gets_what_it_gave_and_new_offsets_are_new() {
        let mut cache = ReplayCache::new(1 << 20);
        assert_eq!(cache.lookup(0), Replay::New);
        for o in [3, 4, 7, 8] {
            cache.remember(o, format!("u{o}"), 10);
        }
        assert_eq!(cache.lookup(7), Replay::Held(&"u7".to_string()));
        assert_eq!(cache.lookup(3), Replay::Held(&"u3".to_string()));
        assert_eq!(cache.lookup(9), Replay::New);
        // Never folded but below the highest (a record validate dropped): not held.
        assert_eq!(cache.lookup(5), Replay::Evicted);
        // A re-feed is not remembered twice.
        cache.remember(4, "other".into(), 10);
        assert_eq!(cache.lookup(4), Replay::Held(&"u4".to_string()));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn the_bound_holds_and_the_oldest_go_first() {
        let limit = 10_000;
        let mut cache = ReplayCache::new(limit);
        for o in 0..100_000i64 {
            let size = 1 + (o as usize * 7919) % 700;
            cache.remember(o, o, size);
            assert!(cache.bytes() <= limit, "{} bytes held at offset {o}", cache.bytes());
        }
        // The newest are held, contiguous, up to the bound.
        assert_eq!(cache.lookup(99_999), Replay::Held(&99_999));
        let oldest = (0..100_000).find(|&o| cache.lookup(o) != Replay::Evicted).unwrap();
        assert!((oldest..100_000).all(|o| cache.lookup(o) == Replay::Held(&o)));
        assert!(cache.len() > 10, "{} held", cache.len());
        assert_eq!(cache.lookup(oldest - 1), Replay::Evicted);
    }

    #[test]
    fn one_update_larger_than_the_bound_is_not_held() {
        let mut cache = ReplayCache::new(100);
        cache.remember(1, "small", 10);
        cache.remember(2, "huge", 101);
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        assert_eq!(cache.lookup(2), Replay::Evicted);
        assert_eq!(cache.lookup(1), Replay::Evicted);
        assert_eq!(cache.lookup(3), Replay::New);
    }
}
