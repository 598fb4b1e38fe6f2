//! Suppressions: ids erased for good.
//!
//! Erasing a person records, for each of its ids, a *suppression*: the id's keyed hash
//! (HMAC-SHA-256 under a random key kept in the store's meta), never the id itself. Every
//! commit checks the ids of its updates and identified rejects against them inside its
//! transaction, and drops what belongs to an erased id, counted as `suppressed`: events
//! that arrive after the erasure, events replayed from the topic, and a batch that was
//! already in the chain when the erasure ran (which would otherwise write the person back).
//! An update for another user that carries an erased anonymous id is kept without it (no
//! link, no `anonymous_id` on the profile).
//!
//! The list exports (`onramp suppressions export`) with its key, and a fresh store built
//! from the same topic or file takes it first (`onramp run --suppressions FILE`), so a
//! rebuild stays clean. Rejects that carry no identity (a line that is not JSON, a repeated
//! key) cannot be matched by id and are not suppressed; erasure finds them by their text.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sled::transaction::ConflictableTransactionError;

use super::staged::Staged;
use super::{Store, StoreError};

/// Meta key of the suppression key (hex).
pub(super) const META_SUPPRESSION_KEY: &[u8] = b"suppression_key";
/// Version of the exported list.
pub const SUPPRESSIONS_VERSION: u32 = 1;

/// A store's suppressions as `onramp suppressions export` writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionList {
    /// Format version ([`SUPPRESSIONS_VERSION`]).
    pub version: u32,
    /// The HMAC key, hex.
    pub key: String,
    /// The suppressed ids' HMACs, hex, sorted.
    pub hashes: Vec<String>,
}

/// Present in the `suppressions` tree once any id is suppressed (hashes are 32 bytes, so it
/// cannot collide): a commit reads it in its transaction and checks ids only when it is set.
pub(super) const ANY_SUPPRESSED: &[u8] = b"!";

/// A commit's view of the suppressions: whether an id is erased, each id looked up once.
pub(super) struct Check<'t> {
    tree: &'t Staged<'t>,
    key: Option<&'t [u8]>,
    seen: HashMap<String, bool>,
}

impl<'t> Check<'t> {
    /// Reads the marker in the transaction: with no suppression, [`Check::holds`] costs nothing.
    pub(super) fn new(
        tree: &'t Staged<'t>,
        key: Option<&'t [u8]>,
    ) -> Result<Self, ConflictableTransactionError<String>> {
        let key = match key {
            Some(k) if tree.get(ANY_SUPPRESSED)?.is_some() => Some(k),
            _ => None,
        };
        Ok(Check {
            tree,
            key,
            seen: HashMap::new(),
        })
    }

    /// True when `id` is suppressed.
    pub(super) fn holds(&mut self, id: &str) -> Result<bool, ConflictableTransactionError<String>> {
        let Some(key) = self.key else {
            return Ok(false);
        };
        if let Some(&known) = self.seen.get(id) {
            return Ok(known);
        }
        let held = self.tree.get(keyed_hash(key, id))?.is_some();
        self.seen.insert(id.to_string(), held);
        Ok(held)
    }
}

/// The keyed hash of `id`.
pub(super) fn keyed_hash(key: &[u8], id: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Store {
    /// The suppression key, if the store has one.
    pub(super) fn suppression_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(META_SUPPRESSION_KEY)
            .map_err(|e| self.sled(e))?
            .map(|v| v.to_vec()))
    }

    /// What names a key where an id must not be kept for good (a `/metrics` label, which a
    /// scraper stores out of erasure's reach): `k_` and 12 hex digits of the id's keyed
    /// hash under this store's suppression key, so it cannot be reversed by hashing guesses
    /// without the store. `onramp stats --json` shows each hot key with its pseudonym.
    pub fn key_pseudonyms(&self) -> Result<impl Fn(&str) -> String, StoreError> {
        let key = self.suppression_key()?.unwrap_or_default();
        Ok(move |id: &str| format!("k_{}", hex(&keyed_hash(&key, id)[..6])))
    }

    /// The suppression key, made (32 random bytes) if the store has none yet.
    pub(super) fn suppression_key_or_new(&self) -> Result<Vec<u8>, StoreError> {
        if let Some(key) = self.suppression_key()? {
            return Ok(key);
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| self.io(std::io::Error::other(e.to_string())))?;
        // Another erasure may have made one meanwhile: keep whichever was first.
        let _ = self
            .meta
            .compare_and_swap(META_SUPPRESSION_KEY, None as Option<&[u8]>, Some(&key[..]))
            .map_err(|e| self.sled(e))?;
        Ok(self.suppression_key()?.unwrap_or_else(|| key.to_vec()))
    }

    /// True when `id` was erased (and is suppressed).
    pub fn is_suppressed(&self, id: &str) -> Result<bool, StoreError> {
        let Some(key) = self.suppression_key()? else {
            return Ok(false);
        };
        self.suppressions
            .contains_key(keyed_hash(&key, id))
            .map_err(|e| self.sled(e))
    }

    /// How many ids are suppressed.
    pub fn suppression_count(&self) -> usize {
        self.suppressions.len().saturating_sub(usize::from(
            self.suppressions.contains_key(ANY_SUPPRESSED).unwrap_or(false),
        ))
    }

    /// The store's suppressions, with their key, for a rebuilt store.
    pub fn export_suppressions(&self) -> Result<SuppressionList, StoreError> {
        let mut hashes = Vec::new();
        for item in self.suppressions.iter() {
            let (k, _) = item.map_err(|e| self.sled(e))?;
            if k.as_ref() != ANY_SUPPRESSED {
                hashes.push(hex(&k));
            }
        }
        Ok(SuppressionList {
            version: SUPPRESSIONS_VERSION,
            key: self.suppression_key()?.map(|k| hex(&k)).unwrap_or_default(),
            hashes,
        })
    }

    /// Takes another store's suppressions (before a rebuild consumes anything). The store
    /// adopts the list's key; one that already has another key with suppressions under it
    /// refuses, since its hashes and the list's could not be compared. Returns how many
    /// suppressions were new.
    pub fn import_suppressions(&self, list: &SuppressionList) -> Result<u64, String> {
        // It writes the suppressions a staged commit reads (see `staged`).
        let _writer = self.write_lock();
        if list.version != SUPPRESSIONS_VERSION {
            return Err(format!(
                "the suppression list has version {}, this onramp reads version {SUPPRESSIONS_VERSION}",
                list.version
            ));
        }
        if list.hashes.is_empty() {
            return Ok(0);
        }
        let key = unhex(&list.key)
            .filter(|k| !k.is_empty())
            .ok_or("the suppression list's key is not hex")?;
        let mut hashes = Vec::with_capacity(list.hashes.len());
        for h in &list.hashes {
            match unhex(h) {
                Some(b) if b.len() == 32 => hashes.push(b),
                _ => return Err(format!("`{h}` in the suppression list is not a 32-byte hex hash")),
            }
        }
        let text = |e: StoreError| e.to_string();
        // The list is for a store being rebuilt: one that already holds ids of it would keep
        // serving their profiles, only freezing them. Refused before anything is written.
        if !self.profiles.is_empty() {
            let listed: std::collections::HashSet<&[u8]> = hashes.iter().map(Vec::as_slice).collect();
            let mut held = 0u64;
            for item in self.profiles.iter().keys() {
                let id = item.map_err(|e| text(self.sled(e)))?;
                if listed.contains(&keyed_hash(&key, &String::from_utf8_lossy(&id))[..]) {
                    held += 1;
                }
            }
            if held > 0 {
                return Err(format!(
                    "store {} holds {held} of the ids the suppression list erases: it would keep their profiles. Import the list into a new store (a rebuild), or erase those ids here with `onramp erase`",
                    self.path.display()
                ));
            }
        }
        match self.suppression_key().map_err(text)? {
            Some(own) if own != key && !self.suppressions.is_empty() => {
                return Err(format!(
                    "store {} already has suppressions under another key; import the list into a new store",
                    self.path.display()
                ))
            }
            Some(own) if own == key => {}
            _ => {
                self.meta
                    .insert(META_SUPPRESSION_KEY, key.as_slice())
                    .map_err(|e| text(self.sled(e)))?;
            }
        }
        let mut added = 0;
        self.suppressions
            .insert(ANY_SUPPRESSED, &[])
            .map_err(|e| text(self.sled(e)))?;
        for h in hashes {
            if self
                .suppressions
                .insert(h, &[])
                .map_err(|e| text(self.sled(e)))?
                .is_none()
            {
                added += 1;
            }
        }
        self.flush().map_err(text)?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let bytes = keyed_hash(b"k", "u_1");
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_ne!(keyed_hash(b"k", "u_1"), keyed_hash(b"other", "u_1"), "keyed");
    }
}
