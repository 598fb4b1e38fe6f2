//! Erasure: every trace of a user the store holds, removed in one transaction.

use onramp_schemas::{Profile, RejectedEvent};
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{abort, add, fold_key, identity_prefix, Store, StoreError};

/// What [`Store::erase`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// The profile existed and was removed.
    pub profile: bool,
    /// The partitions where the user had fold state, now removed: their chains must be
    /// restarted from the store's snapshot so the aggregate forgets the user too.
    pub fold_state_partitions: Vec<u32>,
    /// Stored rejects of the user's records removed.
    pub rejects: u64,
}

impl Erased {
    /// True when anything of the user was found (and removed).
    pub fn found_anything(&self) -> bool {
        self.profile || !self.fold_state_partitions.is_empty() || self.rejects > 0
    }
}

impl Store {
    /// Erases a user: their profile, their fold state on every partition and the stored
    /// rejects of their records, in one transaction. Returns what was removed; the chains
    /// of [`Erased::fold_state_partitions`] must be restarted from the store's snapshot.
    /// Later events for the user start a new profile.
    pub fn erase(&self, user: &str) -> Result<Erased, StoreError> {
        let partitions = self.partitions()?.unwrap_or(0);
        let mut reject_index = Vec::new();
        for item in self.rejects_by_identity.scan_prefix(identity_prefix(user)) {
            let (k, _) = item.map_err(|e| self.sled(e))?;
            reject_index.push(k);
        }
        let prefix_len = identity_prefix(user).len();
        // What else names the user in a reject that has no identity: their email and the
        // anonymous id their profile recorded.
        let mut terms = vec![user.to_string()];
        if let Some(p) = self.profile(user)? {
            terms.extend(p.email.map(|e| e.value));
            terms.extend(p.anonymous_id.map(|a| a.value));
        }
        let unidentified = self.unidentified_rejects_naming(&terms)?;
        let trees = (
            &self.profiles,
            &self.fold_state,
            &self.rejects,
            &self.rejects_by_identity,
            &self.counters,
        );
        let result = trees.transaction(|(profiles, fold_state, rejects, rejects_by_identity, counters)| {
            let mut erased = Erased::default();
            if let Some(v) = profiles.remove(user.as_bytes())? {
                let profile: Profile = serde_json::from_slice(&v).map_err(abort)?;
                erased.profile = true;
                // Counters stay consistent with what remains: `onramp check` compares the
                // profiles' events with `applied - erased.events`.
                add(counters, "erased.profiles", 1)?;
                add(counters, "erased.events", profile.counters.events)?;
            }
            for p in 0..partitions {
                if fold_state.remove(fold_key(p, user))?.is_some() {
                    erased.fold_state_partitions.push(p);
                }
            }
            for index in &reject_index {
                rejects_by_identity.remove(index.as_ref())?;
                if rejects.remove(&index[prefix_len..])?.is_some() {
                    erased.rejects += 1;
                }
            }
            for key in &unidentified {
                if rejects.remove(key.as_ref())?.is_some() {
                    erased.rejects += 1;
                }
            }
            add(counters, "erased.rejects", erased.rejects)?;
            Ok::<_, ConflictableTransactionError<String>>(erased)
        });
        let erased = match result {
            Ok(e) => e,
            Err(TransactionError::Abort(reason)) => {
                return Err(StoreError::Decode {
                    path: self.path.clone(),
                    tree: "profiles",
                    key: user.into(),
                    reason,
                })
            }
            Err(TransactionError::Storage(e)) => return Err(self.sled(e)),
        };
        if erased.found_anything() {
            self.flush()?;
        }
        Ok(erased)
    }

    /// The keys of stored rejects that carry no identity (a repeated key, an overlong id,
    /// a line over the source's size limit, a line that is not JSON) but whose kept text
    /// names one of `terms` ([`names`]). They are not indexed by identity, so erasure finds
    /// them by this scan: its cost is one pass over the rejects, paid only by an erasure.
    fn unidentified_rejects_naming(&self, terms: &[String]) -> Result<Vec<sled::IVec>, StoreError> {
        let terms: Vec<&String> = terms.iter().filter(|t| !t.is_empty()).collect();
        // The stored value is JSON holding the payload as a string, so a term's text appears
        // in it escaped once more; for a term that needs no escaping a raw search of the
        // stored bytes is a cheap prefilter.
        let plain = |t: &str| !t.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        let mut keys = Vec::new();
        for item in self.rejects.iter() {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            if terms
                .iter()
                .all(|t| plain(t) && memchr::memmem::find(&v, t.as_bytes()).is_none())
            {
                continue;
            }
            let reject: RejectedEvent = self.decode("rejects", &k, &v)?;
            if reject.identity.is_none() && terms.iter().any(|t| names(&reject.payload, t)) {
                keys.push(k);
            }
        }
        Ok(keys)
    }
}

/// True when `text` names `term`: as a JSON string (`"term"`, escaped as JSON escapes it),
/// or as a whole word — not part of a longer id, email or word (the characters either side
/// are not letters, digits or any of `_-.@+:`). A record cut at the reject's head limit
/// right after the term still names it: erasure errs towards removing.
pub(crate) fn names(text: &str, term: &str) -> bool {
    let quoted = serde_json::to_string(term).expect("a string serialises");
    if text.contains(&quoted) {
        return true;
    }
    let part_of_id = |c: char| c.is_alphanumeric() || "_-.@+:".contains(c);
    text.match_indices(term).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + term.len()..].chars().next();
        !before.is_some_and(part_of_id) && !after.is_some_and(part_of_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::*;
    use crate::store::Batch;

    /// Proves erasure removes the profile, the fold state on every partition and the
    /// user's rejects, counts them, touches no one else, and finds nothing the second time.
    #[test]
    fn erasure_reaches_every_partition_and_the_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for b in batches() {
            store.commit(&b).unwrap();
        }
        let erased = store.erase("u").unwrap();
        assert!(erased.profile);
        assert_eq!(erased.fold_state_partitions, [0, 1]);
        assert_eq!(erased.rejects, 1);
        assert_eq!(store.profile("u").unwrap(), None);
        assert!(store.snapshot(0, i64::MAX).unwrap().users.is_empty());
        assert!(!store.snapshot(1, i64::MAX).unwrap().users.contains_key("u"));
        assert_eq!(store.rejects(0).count(), 0);
        assert!(store.profile("v").unwrap().is_some());
        let counters = store.counters().unwrap();
        assert_eq!((counters["erased.events"], counters["erased.rejects"]), (3, 1));
        assert!(!store.erase("u").unwrap().found_anything());
    }

    /// Proves erasure also finds the rejects that carry no identity (a repeated key, an
    /// overlong id, an oversize or non-JSON line) when their kept text names the user —
    /// their id, or the email their profile holds — and leaves those naming someone else.
    #[test]
    fn erasure_finds_rejects_without_identity_by_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let unidentified = |payload: &str| RejectedEvent {
            identity: None,
            payload: payload.into(),
            ..reject("")
        };
        let mut with_email = applied("u", "e9", 5, 1_000);
        if let Some(c) = with_email.changes.as_mut() {
            c.email = Some("u.private@mail.example".into());
        }
        store
            .commit(&Batch {
                partition: 0,
                last_offset: 6,
                events_in: 7,
                updates: vec![with_email],
                rejects: vec![
                    (0, unidentified(r#"{"user_id":"u","user_id":"u","email":"x@y.io"}"#)),
                    (1, unidentified(r#"{"user_id":"u2","note":"menu"}"#)),
                    (2, unidentified(r#"{"anonymous_id":"a\"b","user_id":"v"}"#)),
                    (3, reject("other")),
                    (4, unidentified("not json u trailing")),
                    (
                        6,
                        unidentified(r#"{"type":"identify","traits":{"email":"u.private@mail.example"}}"#),
                    ),
                ],
                input: None,
            })
            .unwrap();
        let erased = store.erase("u").unwrap();
        assert_eq!(erased.rejects, 3, "{erased:?}");
        assert_eq!(store.rejects(0).count(), 3);
        assert_eq!(store.erase("a\"b").unwrap().rejects, 1, "an id that needs escaping");
        assert_eq!(store.counters().unwrap()["erased.rejects"], 4);
        assert!(!store.erase("u").unwrap().found_anything());
    }

    /// Proves the word rule: an id names itself as a JSON string or a whole word, never as
    /// part of a longer id, email or word.
    #[test]
    fn names_matches_whole_ids_only() {
        assert!(names(r#"{"user_id":"u_1"}"#, "u_1"));
        assert!(names("not json u_1 x", "u_1"));
        assert!(names(r#"{"user_id":"u_1"#, "u_1"), "cut right after the id");
        assert!(!names(r#"{"user_id":"u_12"}"#, "u_1"));
        assert!(!names("u_1@mail.example", "u_1"));
        assert!(!names("menu", "u"));
        assert!(names(r#"{"id":"a\"b"}"#, "a\"b"));
    }
}
