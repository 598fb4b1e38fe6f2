//! The store's witness: a small file next to sled's own (`onramp-witness.json` in the store
//! directory) that records how much the store had committed the last time it was flushed.
//!
//! # Why
//! sled recovers from a damaged log by keeping what it can read *before* the damage and
//! dropping the rest, silently: one flipped byte in `db` of a store left by a SIGKILL (no
//! `snap.*` yet) and sled opens an empty or shortened store that is internally consistent.
//! Every check inside sled then passes. The witness is the outside reference that makes the
//! loss visible: it is only ever written *after* a flush returned, so everything it counts
//! was durable, and a store that holds less than its witness lost committed records.
//!
//! # What it records and how it is compared
//! `events_in` (the counter, which only grows: erasure does not lower it) and each
//! partition's checkpoint offset (which only move forward, `--append` included). A store is
//! damaged when its `events_in` is below the witness's, or a partition's checkpoint is
//! missing or behind. The witness may lag the store, never lead it, so a crash between a
//! commit and the next witness costs nothing. A durable run witnesses every batch it
//! flushes (loss of any flushed batch is caught); a relaxed run flushes and witnesses at
//! most once a second (a loss in the last second before a crash can go unnoticed, as the
//! batches themselves were never promised durable); erasures and the end of a run witness
//! too. A store with no witness is one written before witnesses existed, or a new
//! one: it is trusted, and gets a witness at its next flush.
//!
//! The file is replaced atomically (written to a temporary file, synced, renamed, directory
//! synced), so a crash leaves the old witness or the new one, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the witness, in the store directory.
pub const WITNESS_FILE: &str = "onramp-witness.json";

/// What the store had durably committed when the witness was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    /// The `events_in` counter.
    pub events_in: u64,
    /// Each partition's checkpoint offset.
    pub checkpoints: BTreeMap<u32, i64>,
    /// When it was written (RFC 3339, wall clock; for messages only).
    pub written_at: String,
}

impl Witness {
    /// Where the witness of the store at `store` lives.
    pub fn path(store: &Path) -> PathBuf {
        store.join(WITNESS_FILE)
    }

    /// Reads the store's witness: `Ok(None)` when there is none, `Err` (with the reason) when
    /// the file exists but cannot be read or decoded.
    pub fn read(store: &Path) -> Result<Option<Witness>, String> {
        let path = Witness::path(store);
        let remedy = "the witness is outside sled: if every other check passes, the store itself may be intact; delete the witness file and run `onramp check` again";
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} does not decode ({e}); {remedy}", path.display())),
            // A dangling symlink reads as "not found" but is not an absent witness.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(&path).is_err() => Ok(None),
            Err(e) => Err(format!("{} cannot be read ({e}); {remedy}", path.display())),
        }
    }

    /// Replaces the store's witness atomically and durably.
    pub fn write(&self, store: &Path) -> std::io::Result<()> {
        let path = Witness::path(store);
        let tmp = store.join(format!("{WITNESS_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // The rename is durable once the directory is synced (a no-op where directories
        // cannot be opened for it).
        if let Ok(dir) = std::fs::File::open(store) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// What the store lost against this witness, one line per finding; empty when the store
    /// holds at least everything the witness counts.
    pub fn shortfalls(&self, events_in: u64, checkpoints: &BTreeMap<u32, i64>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if events_in < self.events_in {
            out.push((
                "events_in".to_string(),
                format!(
                    "the store counts {events_in} events in, but {} were committed and flushed by {} (its witness, {WITNESS_FILE}): sled lost committed records",
                    self.events_in, self.written_at
                ),
            ));
        }
        for (p, offset) in &self.checkpoints {
            let found = checkpoints.get(p);
            if found.is_none_or(|f| f < offset) {
                out.push((
                    format!("p{p}"),
                    format!(
                        "partition {p}'s checkpoint is {}, but offset {offset} was committed and flushed by {} (its witness, {WITNESS_FILE}): sled lost committed records",
                        found.map_or("missing".to_string(), |f| f.to_string()),
                        self.written_at
                    ),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn witness(events_in: u64, checkpoints: &[(u32, i64)]) -> Witness {
        Witness {
            events_in,
            checkpoints: checkpoints.iter().copied().collect(),
            written_at: "2026-11-27T05:00:00Z".into(),
        }
    }

    #[test]
    fn a_store_at_or_past_its_witness_has_no_shortfall() {
        let w = witness(10, &[(0, 4), (1, 5)]);
        assert!(w.shortfalls(10, &[(0, 4), (1, 5)].into_iter().collect()).is_empty());
        assert!(w
            .shortfalls(12, &[(0, 6), (1, 5), (2, 0)].into_iter().collect())
            .is_empty());
    }

    #[test]
    fn a_store_behind_its_witness_is_short_on_each_count() {
        let w = witness(10, &[(0, 4), (1, 5)]);
        let found = w.shortfalls(3, &[(0, 4)].into_iter().collect());
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["events_in", "p1"]);
        assert!(found[1].1.contains("checkpoint is missing"), "{}", found[1].1);
        let empty = w.shortfalls(0, &BTreeMap::new());
        assert_eq!(empty.len(), 3, "an empty store lost everything: {empty:?}");
    }

    #[test]
    fn the_witness_round_trips_and_a_torn_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Witness::read(dir.path()), Ok(None));
        let w = witness(7, &[(0, 6)]);
        w.write(dir.path()).unwrap();
        assert_eq!(Witness::read(dir.path()), Ok(Some(w)));
        std::fs::write(Witness::path(dir.path()), b"{\"events_in\": 7, \"chec").unwrap();
        let err = Witness::read(dir.path()).unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
    }
}
