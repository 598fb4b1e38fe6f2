//! Writes worked out before sled's transaction lock is taken, then applied under it.
//!
//! sled 0.34 serialises transactions with one process-wide lock: a transaction holds it
//! exclusively from before its closure runs until its writes are applied, and every plain
//! read (`get`, an iterator step) waits for it. A commit's closure decodes, folds and
//! encodes a whole batch, and a drain judges thousands of queue entries: done inside
//! `Transactional::transaction`, every API read waited for that work (decisions under
//! ingest: p99 7.3 ms, p99.9 over 50 ms, each stalled read inside a single `get`).
//!
//! So the store's writers work on [`Staged`] trees instead: a read sees the staged writes
//! first, then the tree; writes are kept in memory. [`apply`] then hands them to one
//! transaction as a `sled::Batch` per tree, which holds the lock only to copy them in.
//! The writes are still atomic and durable together, exactly as before.
//!
//! What makes reading outside the transaction safe is that the store has one writer: every
//! function that stages writes holds [`super::Store::writer`] from its first read to its
//! apply, and nothing else writes these trees (readers never write, and sled lets one
//! process open a store).

use std::cell::RefCell;
use std::collections::BTreeMap;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

/// What a staged read or write returns: an abort carries the reason (a value that does not
/// decode), a storage error sled's.
pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

/// One tree's writes, staged: `None` removes the key.
pub(super) struct Staged<'t> {
    tree: &'t sled::Tree,
    writes: RefCell<BTreeMap<IVec, Option<IVec>>>,
}

impl<'t> Staged<'t> {
    /// Stages writes to `tree`; nothing is written until [`apply`].
    pub(super) fn new(tree: &'t sled::Tree) -> Self {
        Staged {
            tree,
            writes: RefCell::new(BTreeMap::new()),
        }
    }

    /// The value of `key` with the staged writes applied.
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> TxResult<Option<IVec>> {
        if let Some(staged) = self.writes.borrow().get(key.as_ref()) {
            return Ok(staged.clone());
        }
        self.tree.get(key).map_err(ConflictableTransactionError::Storage)
    }

    /// Stages `key = value`.
    pub(super) fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<IVec>) -> TxResult<()> {
        self.writes
            .borrow_mut()
            .insert(IVec::from(key.as_ref()), Some(value.into()));
        Ok(())
    }

    /// Stages the removal of `key`; returns the value it had (staged writes applied). A key
    /// only this staging wrote (not in the tree) is just forgotten, so a queue entry written
    /// and consumed in one transaction costs the tree nothing.
    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> TxResult<Option<IVec>> {
        let key = key.as_ref();
        let staged = self.writes.borrow().get(key).cloned();
        match staged {
            Some(Some(value)) => {
                let in_tree = self
                    .tree
                    .contains_key(key)
                    .map_err(ConflictableTransactionError::Storage)?;
                let mut writes = self.writes.borrow_mut();
                if in_tree {
                    writes.insert(IVec::from(key), None);
                } else {
                    writes.remove(key);
                }
                Ok(Some(value))
            }
            Some(None) => Ok(None),
            None => {
                let old = self.tree.get(key).map_err(ConflictableTransactionError::Storage)?;
                if old.is_some() {
                    self.writes.borrow_mut().insert(IVec::from(key), None);
                }
                Ok(old)
            }
        }
    }

    /// The first `limit` keys below `end`, in order, with the staged writes applied.
    pub(super) fn keys_before(&self, end: &[u8], limit: usize) -> TxResult<Vec<IVec>> {
        use std::ops::Bound;
        let writes = self.writes.borrow();
        let mut staged = writes
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(end)))
            .peekable();
        let mut tree = self.tree.range(..end).keys().peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let from_tree = match tree.peek() {
                Some(Ok(k)) => Some(k.clone()),
                Some(Err(_)) => match tree.next() {
                    Some(Err(e)) => return Err(ConflictableTransactionError::Storage(e)),
                    _ => unreachable!("peeked an error"),
                },
                None => None,
            };
            let next_staged = staged.peek().map(|(k, v)| ((*k).clone(), v.is_some()));
            match (from_tree, next_staged) {
                (None, None) => break,
                (Some(t), Some((k, live))) if k <= t => {
                    staged.next();
                    if k == t {
                        tree.next();
                    }
                    if live {
                        out.push(k);
                    }
                }
                (Some(t), _) => {
                    tree.next();
                    out.push(t);
                }
                (None, Some((k, live))) => {
                    staged.next();
                    if live {
                        out.push(k);
                    }
                }
            }
        }
        Ok(out)
    }

    fn batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes.borrow().iter() {
            match v {
                Some(v) => batch.insert(k.clone(), v.clone()),
                None => batch.remove(k.clone()),
            }
        }
        batch
    }
}

/// Runs `work`, which reads and writes through `staged` (each a different tree), then
/// applies its writes in one transaction: all of them or none. `_writer` is the store's
/// writer lock, held since before `work`'s first read. An abort in `work` writes nothing.
pub(super) fn run<T>(
    _writer: &std::sync::MutexGuard<'_, ()>,
    staged: &[&Staged<'_>],
    work: impl FnOnce() -> TxResult<T>,
) -> Result<T, TransactionError<String>> {
    let out = work().map_err(|e| match e {
        ConflictableTransactionError::Abort(reason) => TransactionError::Abort(reason),
        ConflictableTransactionError::Storage(e) => TransactionError::Storage(e),
        // Only sled's own transactions report conflicts; a staged tree never does.
        ConflictableTransactionError::Conflict => {
            TransactionError::Storage(sled::Error::ReportableBug("a staged write reported a conflict".into()))
        }
    })?;
    apply(staged)?;
    Ok(out)
}

/// Applies the staged writes of `staged` (each a different tree) in one transaction: all
/// of them or none.
fn apply(staged: &[&Staged<'_>]) -> Result<(), TransactionError<String>> {
    let batches: Vec<sled::Batch> = staged.iter().map(|s| s.batch()).collect();
    let trees: Vec<&sled::Tree> = staged.iter().map(|s| s.tree).collect();
    trees.as_slice().transaction(|views| {
        for (view, batch) in views.iter().zip(&batches) {
            view.apply_batch(batch)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves reads see staged writes before the tree, nothing reaches the tree before
    /// `apply`, and `apply` writes every tree's writes, removals included.
    #[test]
    fn staged_writes_are_read_back_and_applied_together() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (a, b) = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        a.insert("gone", "1").unwrap();
        a.insert("kept", "1").unwrap();
        let (sa, sb) = (Staged::new(&a), Staged::new(&b));
        sa.insert("new", "2").unwrap();
        assert_eq!(sa.remove("gone").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(sa.get("gone").unwrap(), None);
        assert_eq!(sa.get("new").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(sa.get("kept").unwrap().as_deref(), Some(&b"1"[..]));
        sb.insert("x", "3").unwrap();
        assert_eq!(a.get("new").unwrap(), None, "nothing written before apply");
        assert!(a.get("gone").unwrap().is_some());
        apply(&[&sa, &sb]).unwrap();
        assert_eq!(a.get("new").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(a.get("gone").unwrap(), None);
        assert_eq!(b.get("x").unwrap().as_deref(), Some(&b"3"[..]));
    }

    /// Proves the key range merges the tree with the staged writes in order (staged
    /// removals hidden, staged inserts shown, the limit kept), and that removing a key only
    /// the staging wrote leaves no write at all.
    #[test]
    fn keys_before_merges_staged_writes_and_a_key_written_then_removed_costs_nothing() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let t = db.open_tree("t").unwrap();
        for k in ["a", "c", "e", "g"] {
            t.insert(k, "1").unwrap();
        }
        let st = Staged::new(&t);
        st.insert("b", "2").unwrap();
        st.insert("d", "2").unwrap();
        st.insert("e", "2").unwrap();
        st.remove("c").unwrap();
        st.insert("h", "2").unwrap();
        let keys = |end: &str, limit| -> Vec<String> {
            st.keys_before(end.as_bytes(), limit)
                .unwrap()
                .iter()
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(keys("f", 10), ["a", "b", "d", "e"]);
        assert_eq!(keys("f", 2), ["a", "b"]);
        assert_eq!(keys("z", 10), ["a", "b", "d", "e", "g", "h"]);
        assert_eq!(keys("a", 10), Vec::<String>::new());

        assert_eq!(st.remove("d").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(
            !st.writes.borrow().contains_key(&b"d"[..]),
            "a staged-only key leaves no write"
        );
        assert_eq!(st.remove("e").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(st.get("e").unwrap(), None, "a key in the tree is removed from it");
        assert_eq!(st.remove("nothing").unwrap(), None);
        assert!(!st.writes.borrow().contains_key(&b"nothing"[..]));
        assert_eq!(keys("z", 10), ["a", "b", "g", "h"]);
        apply(&[&st]).unwrap();
        let stored: Vec<_> = t.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(stored, [b"a".to_vec(), b"b".to_vec(), b"g".to_vec(), b"h".to_vec()]);
    }
}
