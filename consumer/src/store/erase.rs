//! Erasure: every trace of a user the store holds, removed in one transaction.

use onramp_schemas::{Profile, RejectedEvent};
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::identity::claim_key;
use super::staged::{self, Staged};
use super::suppress::{keyed_hash, ANY_SUPPRESSED};
use super::{abort, add, fold_key, identity_prefix, Store, StoreError};

/// What [`Store::erase`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// The person erased (the id asked for resolved through its links).
    pub person: String,
    /// Every id of the person: the person id and the anonymous ids it owned. Each is now
    /// suppressed: later records for it are dropped at commit.
    pub ids: Vec<String>,
    /// Stored profiles removed (one per id that had one).
    pub profiles: u64,
    /// The partitions where an id had fold state, now removed: their chains must be
    /// restarted from the store's snapshot so the aggregate forgets the person too.
    pub fold_state_partitions: Vec<u32>,
    /// Stored rejects of the person's records removed.
    pub rejects: u64,
    /// Links removed: the anonymous ids it owned, and its claims on ids others own.
    pub links: u64,
    /// Its ids removed from the partitions' heaviest keys (see `skew`).
    pub hot_keys: u64,
}

impl Erased {
    /// True when anything of the person was found (and removed).
    pub fn found_anything(&self) -> bool {
        self.profiles > 0
            || !self.fold_state_partitions.is_empty()
            || self.rejects > 0
            || self.links > 0
            || self.hot_keys > 0
    }

    /// Adds what a later pass over the same person removed.
    fn absorb(&mut self, more: Erased) {
        for id in more.ids {
            if !self.ids.contains(&id) {
                self.ids.push(id);
            }
        }
        self.profiles += more.profiles;
        for p in more.fold_state_partitions {
            if !self.fold_state_partitions.contains(&p) {
                self.fold_state_partitions.push(p);
            }
        }
        self.fold_state_partitions.sort_unstable();
        self.rejects += more.rejects;
        self.links += more.links;
        self.hot_keys += more.hot_keys;
    }
}

/// Most passes one erasure makes (see [`Store::erase`]). Under the writer lock the second
/// pass finds nothing; more would mean a write got past the lock.
const MAX_ERASE_PASSES: usize = 4;

impl Store {
    /// Erases the person `id` belongs to (any of its ids): every id's profile, fold state on
    /// every partition and stored rejects, the person's links, in one transaction; and, when
    /// anything was found, suppresses every id of it so later records are dropped at commit
    /// (see `suppress`). Returns what was removed; the chains of
    /// [`Erased::fold_state_partitions`] must be restarted from the store's snapshot.
    ///
    /// The whole erasure holds the store's writer lock, so no batch commits while it reads
    /// the person's ids and claims and removes them. A second pass checks that nothing was
    /// left (it finds nothing unless a bug let a write in); passes repeat until one finds
    /// nothing.
    pub fn erase(&self, id: &str) -> Result<Erased, StoreError> {
        let writer = self.write_lock();
        let person = self.person_id(id)?;
        let mut erased = self.erase_pass(&writer, &person)?;
        if erased.found_anything() {
            for _ in 1..MAX_ERASE_PASSES {
                let more = self.erase_pass(&writer, &person)?;
                if !more.found_anything() {
                    break;
                }
                tracing::warn!(person = %person, ids = ?more.ids, "erasure: a second pass found more of the person, which the writer lock should make impossible; removed");
                erased.absorb(more);
            }
            let transitions = self.erase_audiences(&writer, &erased.ids)?;
            tracing::info!(person = %person, transitions, "erasure: the person's memberships, timers and transitions removed");
        }
        Ok(erased)
    }

    /// One erasure pass over `person` (a person id): see [`Store::erase`].
    fn erase_pass(&self, writer: &std::sync::MutexGuard<'_, ()>, person: &str) -> Result<Erased, StoreError> {
        let partitions = self.partitions()?.unwrap_or(0);
        let person = person.to_string();
        // Owned anonymous ids go with the person; a claimant it "owns" (a user some event
        // named as an anonymous id) is a person of its own and only loses this claim.
        let mut owned = Vec::new();
        let mut others = Vec::new();
        for (anonymous_id, link) in self.claims_of(&person)? {
            if link.owner() == Some(person.as_str()) && !self.is_claimant(&anonymous_id)? {
                owned.push((anonymous_id, link));
            } else {
                others.push((anonymous_id, link));
            }
        }
        let ids: Vec<String> = std::iter::once(person.clone())
            .chain(owned.iter().map(|(a, _)| a.clone()))
            .collect();
        let mut reject_index = Vec::new();
        let mut terms: Vec<String> = Vec::new();
        for id in &ids {
            let prefix_len = identity_prefix(id).len();
            for item in self.rejects_by_identity.scan_prefix(identity_prefix(id)) {
                let (k, _) = item.map_err(|e| self.sled(e))?;
                reject_index.push((k, prefix_len));
            }
            // What else names the person in a reject that has no identity: its ids, the
            // emails and the anonymous ids its profiles recorded.
            terms.push(id.clone());
            if let Some(p) = self.profile(id)? {
                terms.extend(p.email.map(|e| e.value));
                terms.extend(p.anonymous_id.map(|a| a.value));
            }
        }
        let unidentified = self.unidentified_rejects_naming(&terms)?;
        let key = self.suppression_key_or_new()?;
        let (profiles, fold_state, rejects, rejects_by_identity) = (
            &Staged::new(&self.profiles),
            &Staged::new(&self.fold_state),
            &Staged::new(&self.rejects),
            &Staged::new(&self.rejects_by_identity),
        );
        let (counters, links, link_claims, suppressions, skew) = (
            &Staged::new(&self.counters),
            &Staged::new(&self.links),
            &Staged::new(&self.link_claims),
            &Staged::new(&self.suppressions),
            &Staged::new(&self.skew),
        );
        let result = staged::run(
            writer,
            &[
                profiles,
                fold_state,
                rejects,
                rejects_by_identity,
                counters,
                links,
                link_claims,
                suppressions,
                skew,
            ],
            || {
                let mut erased = Erased {
                    person: person.clone(),
                    ids: ids.clone(),
                    ..Erased::default()
                };
                for id in &ids {
                    if let Some(v) = profiles.remove(id.as_bytes())? {
                        let profile: Profile = serde_json::from_slice(&v).map_err(abort)?;
                        erased.profiles += 1;
                        // Counters stay consistent with what remains: `onramp check` compares
                        // the profiles' events with `applied - erased.events`.
                        add(counters, "erased.profiles", 1)?;
                        add(counters, "erased.events", profile.counters.events)?;
                    }
                    for p in 0..partitions {
                        if fold_state.remove(fold_key(p, id))?.is_some() && !erased.fold_state_partitions.contains(&p) {
                            erased.fold_state_partitions.push(p);
                        }
                    }
                }
                erased.fold_state_partitions.sort_unstable();
                // The person's ids leave the partitions' heaviest keys (their events stay counted).
                for p in 0..partitions {
                    if let Some(v) = skew.get(p.to_be_bytes())? {
                        let mut sketch: super::skew::PartitionSkew = serde_json::from_slice(&v).map_err(abort)?;
                        let forgotten = sketch.forget(&ids);
                        if forgotten > 0 {
                            erased.hot_keys += forgotten;
                            skew.insert(p.to_be_bytes(), serde_json::to_vec(&sketch).map_err(abort)?)?;
                        }
                    }
                }
                for (index, prefix_len) in &reject_index {
                    rejects_by_identity.remove(index.as_ref())?;
                    if rejects.remove(&index[*prefix_len..])?.is_some() {
                        erased.rejects += 1;
                    }
                }
                for key in &unidentified {
                    if rejects.remove(key.as_ref())?.is_some() {
                        erased.rejects += 1;
                    }
                }
                add(counters, "erased.rejects", erased.rejects)?;
                // Links: the ids it owned go with every claim on them; its claims on ids
                // others own are withdrawn.
                let mut conflicts_removed = 0;
                for (anonymous_id, link) in &owned {
                    if links.remove(anonymous_id.as_bytes())?.is_some() {
                        erased.links += 1;
                    }
                    conflicts_removed += link.conflicts();
                    for c in &link.claims {
                        link_claims.remove(claim_key(&c.user, anonymous_id))?;
                        // The users that lost this id to the person keep no trace of it.
                        if c.user == person {
                            continue;
                        }
                        if let Some(v) = profiles.get(c.user.as_bytes())? {
                            let mut profile: Profile = serde_json::from_slice(&v).map_err(abort)?;
                            if profile.anonymous_id.as_ref().is_some_and(|a| a.value == *anonymous_id) {
                                profile.anonymous_id = None;
                                profiles.insert(c.user.as_bytes(), serde_json::to_vec(&profile).map_err(abort)?)?;
                            }
                        }
                    }
                }
                for (anonymous_id, link) in &others {
                    let mut link = link.clone();
                    let conflicts_before = link.conflicts();
                    if link.drop_user(&person) {
                        erased.links += 1;
                        conflicts_removed += conflicts_before - link.conflicts();
                        if link.claims.is_empty() {
                            links.remove(anonymous_id.as_bytes())?;
                        } else {
                            links.insert(anonymous_id.as_bytes(), serde_json::to_vec(&link).map_err(abort)?)?;
                        }
                    }
                    link_claims.remove(claim_key(&person, anonymous_id))?;
                }
                add(counters, "erased.link_conflicts", conflicts_removed)?;
                if erased.found_anything() {
                    suppressions.insert(ANY_SUPPRESSED, &[])?;
                    for id in &ids {
                        suppressions.insert(&keyed_hash(&key, id)[..], &[])?;
                    }
                }
                Ok::<_, ConflictableTransactionError<String>>(erased)
            },
        );
        let erased = match result {
            Ok(e) => e,
            Err(TransactionError::Abort(reason)) => {
                return Err(StoreError::Decode {
                    path: self.path.clone(),
                    tree: "profiles",
                    key: person.clone(),
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
    // `"term"` followed by `:` is an object key (`"user_id":`), which names nobody.
    let is_key = |end: usize| text[end..].trim_start().starts_with(':');
    let quoted = serde_json::to_string(term).expect("a string serialises");
    if text.match_indices(&quoted).any(|(i, q)| !is_key(i + q.len())) {
        return true;
    }
    let part_of_id = |c: char| c.is_alphanumeric() || "_-.@+:".contains(c);
    text.match_indices(term).any(|(i, _)| {
        let end = i + term.len();
        let before = text[..i].chars().next_back();
        let after = text[end..].chars().next();
        let key = before == Some('"') && after == Some('"') && is_key(end + 1);
        !before.is_some_and(part_of_id) && !after.is_some_and(part_of_id) && !key
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
        assert_eq!(erased.profiles, 1);
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
        assert!(
            !names(r#"{"user_id":"x", "type" : "click"}"#, "user_id"),
            "a key names nobody"
        );
        assert!(!names(r#"{"type" : "click"}"#, "type"), "a key names nobody");
        assert!(names(r#"{"a":"user_id"}"#, "user_id"), "a value does");
        assert!(!names("u_1@mail.example", "u_1"));
        assert!(!names("menu", "u"));
        assert!(names(r#"{"id":"a\"b"}"#, "a\"b"));
    }
}
