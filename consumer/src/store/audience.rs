//! Audiences in the store: memberships, transitions (the outbox) and event-time timers,
//! computed so that the same input gives the same transitions with the same ids after any
//! crash, replay or interleaving of partitions (ARCHITECTURE.md, "Audiences and triggers").
//!
//! # How evaluation stays deterministic
//! Partitions commit in whatever order they arrive, so judging a person right after the
//! batch that touched it would depend on how far the *other* partitions (holding the
//! person's other ids, or its other events) had got. Instead:
//!
//! 1. **Queue.** Each applied update is written, in its batch's transaction, to the
//!    `audience_queue` under the key `(k, partition, offset)` with
//!    `k = max(event time, the partition's watermark just before the update)`.
//! 2. **Frontier.** The watermark of the whole store is the minimum over partitions of
//!    their committed watermark (partitions left out by `--watermark-ignore` excepted).
//!    A partition's watermark never goes down, so every update committed later has
//!    `k ≥` the frontier at the time: every queue entry below the frontier is final.
//! 3. **Drain.** With each commit, entries below the frontier are processed in key order,
//!    one chunk per transaction, the first in the batch's own ([`DrainTrees`]): each
//!    update is folded into a *settled* copy of its id's profile, claims move *settled*
//!    links (same rule as `identity`: the smallest claim owns the id; a claimant is its
//!    own person), and each person it touches is judged
//!    against every audience at event time `k`. Timers (`inactive_for`,
//!    `signed_up_within`) are queue entries too, keyed by their due time. So the sequence
//!    of evaluations is a function of the input alone, whatever the batches and the
//!    interleaving were; what a crash leaves below the frontier after a batch's own
//!    chunk is drained by the next commit (or the next run's first drain) with the same
//!    result.
//!
//! A change of membership writes an `entered` or `exited` [`Transition`] to the `outbox`
//! under a key made of the cause's queue key, the person and the audience: its `cursor`
//! (hex of that key) orders the outbox and resumes `/v1/triggers`; its `id` (a hash of
//! the key) is what consumers dedupe by.
//!
//! # Trees
//! | tree | key | value |
//! |---|---|---|
//! | `audience_queue` | time (8) ++ 0 ++ partition (4) ++ offset (8) / time ++ 1 ++ person | `ProfileUpdate` JSON / empty (a timer) |
//! | `settled_profiles` | id | `Profile` JSON: the id's updates below the frontier |
//! | `settled_links` | anonymous id | [`SettledLink`] JSON: the smallest claim drained |
//! | `settled_ids` | claimant user id | JSON list of the anonymous ids it owns |
//! | `person_audiences` | person id | [`PersonState`] JSON: memberships and the timer |
//! | `audience_members` | audience ++ 0 ++ person | [`Member`] JSON (the index `members` lists) |
//! | `outbox` | cause key ++ person length (4) ++ person ++ audience | [`Transition`] JSON |
//! | `outbox_by_person` | person length (4) ++ person ++ outbox key | empty (for erasure) |

use std::collections::{BTreeMap, BTreeSet, HashMap};

use onramp_schemas::{Profile, ProfileUpdate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::staged::{self, Staged};

use super::{abort, identity_prefix, suppress, Store, StoreError};
use crate::audience::Rules;

/// Queue entries processed per drain transaction (bounds a transaction's size).
pub(super) const DRAIN_CHUNK: usize = 2_000;

/// Most anonymous ids one claimant's settled person holds (a producer that names a new
/// anonymous id on every event would otherwise grow one value without bound).
pub const MAX_SETTLED_IDS: usize = 64;

const KIND_UPDATE: u8 = 0;
const KIND_TIMER: u8 = 1;

/// A membership change, as written to the outbox and streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Deterministic id (32 hex): the same input gives the same ids; dedupe by it.
    pub id: String,
    /// Position in the outbox (hex): `/v1/triggers` resumes after it (`Last-Event-ID`).
    pub cursor: String,
    /// `entered` or `exited`.
    pub kind: TransitionKind,
    /// Audience name.
    pub audience: String,
    /// Audience version.
    pub version: u32,
    /// The person.
    pub person_id: String,
    /// The event time it happened at, ms (the update's, or the timer's due time).
    pub at_ms: i64,
    /// What caused it.
    pub cause: Cause,
}

/// `entered` / `exited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// The person became a member.
    Entered,
    /// The person stopped being a member.
    Exited,
}

/// What made a person's membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Cause {
    /// An event (its partition and offset).
    Event {
        /// Partition.
        partition: u32,
        /// Offset.
        offset: i64,
    },
    /// Event time passed a timer (`inactive_for`, `signed_up_within`).
    Timer,
}

/// A person's memberships and pending timer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonState {
    /// Audiences the person is in.
    #[serde(default)]
    pub audiences: BTreeMap<String, Member>,
    /// When the next timer is due, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_ms: Option<i64>,
}

/// One membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The audience's version when the person entered.
    pub version: u32,
    /// Event time the person entered, ms.
    pub since_ms: i64,
}

/// The smallest claim on an anonymous id drained so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledLink {
    /// The owner.
    pub user: String,
    /// (event time, partition, offset) of the claim.
    pub at_ms: i64,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
}

/// Order-preserving bytes of an event time.
pub(super) fn time_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_of(key: &[u8]) -> i64 {
    (u64::from_be_bytes(key[..8].try_into().unwrap_or_default()) ^ (1 << 63)) as i64
}

/// The queue key of an applied update.
pub(super) fn update_key(k_ms: i64, partition: u32, offset: i64) -> Vec<u8> {
    let mut key = time_key(k_ms).to_vec();
    key.push(KIND_UPDATE);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(&time_key(offset));
    key
}

fn timer_key(due_ms: i64, person: &str) -> Vec<u8> {
    let mut key = time_key(due_ms).to_vec();
    key.push(KIND_TIMER);
    key.extend_from_slice(person.as_bytes());
    key
}

fn member_key(audience: &str, person: &str) -> Vec<u8> {
    let mut key = audience.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(person.as_bytes());
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a transition cursor (hex); `None` when it is not one.
pub fn parse_cursor(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) || text.len() > 2048 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

fn get_json<T: serde::de::DeserializeOwned>(tree: &Staged<'_>, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(abort)?)),
        None => Ok(None),
    }
}

fn put_json<T: Serialize>(tree: &Staged<'_>, key: &[u8], value: &T) -> TxResult<()> {
    tree.insert(key, serde_json::to_vec(value).map_err(abort)?)?;
    Ok(())
}

/// The trees of one drain transaction.
struct Drain<'a> {
    queue: &'a Staged<'a>,
    profiles: &'a Staged<'a>,
    links: &'a Staged<'a>,
    ids: &'a Staged<'a>,
    persons: &'a Staged<'a>,
    members: &'a Staged<'a>,
    outbox: &'a Staged<'a>,
    outbox_by_person: &'a Staged<'a>,
    rules: &'a Rules,
    out: Vec<Transition>,
    /// The frontier's key: entries below it are processed.
    frontier: Vec<u8>,
    /// Timers this transaction set below the frontier, not yet fired: they are fired in key
    /// order between the entries read before the transaction.
    fresh: BTreeSet<Vec<u8>>,
    /// Settled profiles read or written in this transaction (`None`: none stored); the
    /// changed ones are written once, at its end.
    profile_cache: HashMap<String, Option<Profile>>,
    dirty_profiles: BTreeSet<String>,
    /// Persons' states read or written in this transaction; the changed ones are written
    /// (or removed, when empty) at its end.
    state_cache: HashMap<String, PersonState>,
    dirty_states: BTreeSet<String>,
    /// `settled_ids` read or written in this transaction (`None`: not a claimant). Every
    /// write goes through [`Drain::set_owned`], so the cache is always the staged value.
    ids_cache: HashMap<String, Option<Vec<String>>>,
    /// `settled_links` likewise ([`Drain::set_link`]).
    links_cache: HashMap<String, Option<SettledLink>>,
}

/// The store's partition count, ignored partitions and committed watermarks: the
/// frontier's inputs.
pub(super) struct FrontierInputs {
    partitions: Option<u32>,
    ignore: BTreeSet<u32>,
    watermarks: BTreeMap<u32, Option<i64>>,
}

impl FrontierInputs {
    /// The frontier, with `changed = (partition, watermark)` in place of what that
    /// partition committed (a batch's transaction, before it is applied).
    pub(super) fn frontier(&self, changed: Option<(u32, Option<i64>)>) -> Option<i64> {
        let mut frontier: Option<i64> = None;
        for p in (0..self.partitions?).filter(|p| !self.ignore.contains(p)) {
            let w = match changed {
                Some((q, w)) if q == p => w,
                _ => self.watermarks.get(&p).copied().flatten(),
            }?;
            frontier = Some(frontier.map_or(w, |f| f.min(w)));
        }
        frontier
    }
}

/// The staged trees a drain reads and writes. The queue and the suppressions are the
/// caller's: a batch's commit drains in its own transaction ([`super::Store::commit`]),
/// through the same staged queue its updates were just written to.
pub(super) struct DrainTrees<'a> {
    queue: &'a Staged<'a>,
    suppressions: &'a Staged<'a>,
    profiles: Staged<'a>,
    links: Staged<'a>,
    ids: Staged<'a>,
    persons: Staged<'a>,
    members: Staged<'a>,
    outbox: Staged<'a>,
    outbox_by_person: Staged<'a>,
}

impl<'a> DrainTrees<'a> {
    pub(super) fn new(store: &'a Store, queue: &'a Staged<'a>, suppressions: &'a Staged<'a>) -> Self {
        DrainTrees {
            queue,
            suppressions,
            profiles: Staged::new(&store.settled_profiles),
            links: Staged::new(&store.settled_links),
            ids: Staged::new(&store.settled_ids),
            persons: Staged::new(&store.person_audiences),
            members: Staged::new(&store.audience_members),
            outbox: Staged::new(&store.outbox),
            outbox_by_person: Staged::new(&store.outbox_by_person),
        }
    }

    /// Every tree, the caller's two included, for [`staged::run`].
    pub(super) fn all(&self) -> Vec<&Staged<'a>> {
        let mut all = self.own();
        all.extend([self.queue, self.suppressions]);
        all
    }

    /// The trees only the drain writes (the caller stages the queue and suppressions).
    pub(super) fn own(&self) -> Vec<&Staged<'a>> {
        vec![
            &self.profiles,
            &self.links,
            &self.ids,
            &self.persons,
            &self.members,
            &self.outbox,
            &self.outbox_by_person,
        ]
    }

    /// Processes the queue entries `keys` (the first below the frontier, in key order, as
    /// [`Staged::keys_before`] gives them, at most [`DRAIN_CHUNK`]); a chunk shorter than
    /// that read everything below the frontier, so the timers it set below it fire too.
    pub(super) fn drain_chunk(
        &self,
        keys: &[sled::IVec],
        frontier: i64,
        rules: &Rules,
        erased: &mut suppress::Check<'_>,
    ) -> TxResult<Vec<Transition>> {
        let mut d = Drain {
            queue: self.queue,
            profiles: &self.profiles,
            links: &self.links,
            ids: &self.ids,
            persons: &self.persons,
            members: &self.members,
            outbox: &self.outbox,
            outbox_by_person: &self.outbox_by_person,
            rules,
            out: Vec::new(),
            frontier: time_key(frontier).to_vec(),
            fresh: BTreeSet::new(),
            profile_cache: HashMap::new(),
            dirty_profiles: BTreeSet::new(),
            state_cache: HashMap::new(),
            dirty_states: BTreeSet::new(),
            ids_cache: HashMap::new(),
            links_cache: HashMap::new(),
        };
        for key in keys {
            d.fire_fresh(Some(key), erased)?;
            d.process(key, erased)?;
        }
        if keys.len() < DRAIN_CHUNK {
            // Everything below the frontier was read: the timers set since are due.
            d.fire_fresh(None, erased)?;
        }
        d.write_back()?;
        Ok(d.out)
    }
}

impl Drain<'_> {
    fn load_profile(&mut self, id: &str) -> TxResult<()> {
        if !self.profile_cache.contains_key(id) {
            let p: Option<Profile> = get_json(self.profiles, id.as_bytes())?;
            self.profile_cache.insert(id.to_string(), p);
        }
        Ok(())
    }

    /// The settled profile of `id`, if any.
    fn profile(&mut self, id: &str) -> TxResult<Option<&Profile>> {
        self.load_profile(id)?;
        Ok(self.profile_cache.get(id).and_then(Option::as_ref))
    }

    fn state(&mut self, person: &str) -> TxResult<PersonState> {
        if let Some(s) = self.state_cache.get(person) {
            return Ok(s.clone());
        }
        let s: PersonState = get_json(self.persons, person.as_bytes())?.unwrap_or_default();
        self.state_cache.insert(person.to_string(), s.clone());
        Ok(s)
    }

    fn set_state(&mut self, person: &str, state: PersonState) {
        self.state_cache.insert(person.to_string(), state);
        self.dirty_states.insert(person.to_string());
    }

    /// Writes what the transaction changed in the caches.
    fn write_back(&mut self) -> TxResult<()> {
        for id in std::mem::take(&mut self.dirty_profiles) {
            if let Some(Some(p)) = self.profile_cache.get(&id) {
                put_json(self.profiles, id.as_bytes(), p)?;
            }
        }
        for person in std::mem::take(&mut self.dirty_states) {
            match self.state_cache.get(&person) {
                Some(s) if *s != PersonState::default() => put_json(self.persons, person.as_bytes(), s)?,
                _ => {
                    self.persons.remove(person.as_bytes())?;
                }
            }
        }
        Ok(())
    }

    /// The settled person of `id`: a claimant is its own person; another id belongs to the
    /// owner of its settled link when the owner has a settled profile; else to itself.
    fn person_of(&mut self, id: &str) -> TxResult<String> {
        if self.owned_ref(id)?.is_some() {
            return Ok(id.to_string());
        }
        if let Some(owner) = self.link(id)?.map(|l| l.user.clone()) {
            if self.profile(&owner)?.is_some() {
                return Ok(owner);
            }
        }
        Ok(id.to_string())
    }

    /// The anonymous ids claimant `user` owns; `None` when it is not a claimant.
    fn owned_ref(&mut self, user: &str) -> TxResult<Option<&Vec<String>>> {
        if !self.ids_cache.contains_key(user) {
            let list: Option<Vec<String>> = get_json(self.ids, user.as_bytes())?;
            self.ids_cache.insert(user.to_string(), list);
        }
        Ok(self.ids_cache.get(user).and_then(Option::as_ref))
    }

    fn owned(&mut self, user: &str) -> TxResult<Vec<String>> {
        Ok(self.owned_ref(user)?.cloned().unwrap_or_default())
    }

    fn set_owned(&mut self, user: &str, list: Vec<String>) -> TxResult<()> {
        put_json(self.ids, user.as_bytes(), &list)?;
        self.ids_cache.insert(user.to_string(), Some(list));
        Ok(())
    }

    /// The settled link of anonymous id `id`.
    fn link(&mut self, id: &str) -> TxResult<Option<&SettledLink>> {
        if !self.links_cache.contains_key(id) {
            let link: Option<SettledLink> = get_json(self.links, id.as_bytes())?;
            self.links_cache.insert(id.to_string(), link);
        }
        Ok(self.links_cache.get(id).and_then(Option::as_ref))
    }

    fn set_link(&mut self, id: &str, link: SettledLink) -> TxResult<()> {
        put_json(self.links, id.as_bytes(), &link)?;
        self.links_cache.insert(id.to_string(), Some(link));
        Ok(())
    }

    /// Processes one queued update.
    fn update(&mut self, key: &[u8], u: &ProfileUpdate) -> TxResult<()> {
        let user = u.user_id.as_str();
        let mut judge: Vec<String> = vec![self.person_of(user)?];
        let claim = u
            .changes
            .as_ref()
            .and_then(|c| c.anonymous_id.as_deref())
            .filter(|a| *a != user);
        if let Some(a) = claim {
            judge.push(self.person_of(a)?);
        }
        self.load_profile(user)?;
        if let Some(slot) = self.profile_cache.get_mut(user) {
            slot.get_or_insert_with(|| Profile::new(user)).apply(u);
        }
        self.dirty_profiles.insert(user.to_string());
        if let Some(a) = claim {
            if self.owned_ref(user)?.is_none() {
                self.set_owned(user, Vec::new())?;
            }
            let mine = SettledLink {
                user: user.to_string(),
                at_ms: u.event_time_ms,
                partition: partition_of(key),
                offset: u.offset,
            };
            let cur: Option<SettledLink> = self.link(a)?.cloned();
            let wins = cur.as_ref().is_none_or(|c| {
                (mine.at_ms, mine.partition, mine.offset, &mine.user) < (c.at_ms, c.partition, c.offset, &c.user)
            });
            if wins {
                if let Some(old) = cur.as_ref().filter(|c| c.user != user) {
                    let mut list = self.owned(&old.user)?;
                    list.retain(|x| x != a);
                    self.set_owned(&old.user, list)?;
                    judge.push(old.user.clone());
                }
                let mut list = self.owned(user)?;
                if !list.iter().any(|x| x == a) && list.len() < MAX_SETTLED_IDS {
                    list.push(a.to_string());
                    list.sort();
                    self.set_owned(user, list)?;
                }
                self.set_link(a, mine)?;
            }
        }
        judge.push(self.person_of(user)?);
        let mut seen = BTreeSet::new();
        for person in judge {
            if seen.insert(person.clone()) {
                self.judge(&person, time_of(key), key)?;
            }
        }
        Ok(())
    }

    /// Judges `person` against every audience at event time `now`; `cause` is the queue key
    /// of what made it happen.
    fn judge(&mut self, person: &str, now: i64, cause: &[u8]) -> TxResult<()> {
        let state = self.state(person)?;
        let mut wanted: BTreeMap<String, Member> = BTreeMap::new();
        let mut timer = None;
        if self.person_of(person)? == person {
            // The person's other ids with a settled profile, in the order they merge.
            let mut others = Vec::new();
            for a in self.owned(person)? {
                if self.person_of(&a)? == person && self.profile(&a)?.is_some() {
                    others.push(a);
                }
            }
            self.load_profile(person)?;
            let cached = |id: &str| self.profile_cache.get(id).and_then(Option::as_ref);
            // A person of one id (most) is judged on its settled profile as it is.
            let merged: Option<Profile>;
            let profile = if others.is_empty() {
                cached(person)
            } else {
                let mut m: Option<Profile> = cached(person).cloned();
                for p in others.iter().filter_map(|a| cached(a)) {
                    match m.as_mut() {
                        Some(m) => m.merge(p),
                        None => m = Some(p.clone()),
                    }
                }
                merged = m;
                merged.as_ref()
            };
            if let Some(profile) = profile {
                let never = |_: &str| false;
                for audience in &self.rules.audiences {
                    if audience.when.holds(profile, now, &never) {
                        let since = match state.audiences.get(&audience.name) {
                            Some(m) if m.version == audience.version => m.since_ms,
                            _ => now,
                        };
                        wanted.insert(
                            audience.name.clone(),
                            Member {
                                version: audience.version,
                                since_ms: since,
                            },
                        );
                    }
                    timer = match (timer, audience.when.next_change(profile, now)) {
                        (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        for (name, m) in &state.audiences {
            if wanted.get(name).is_none_or(|w| w.version != m.version) {
                self.members.remove(member_key(name, person))?;
                self.transition(TransitionKind::Exited, name, m.version, person, now, cause)?;
            }
        }
        for (name, m) in &wanted {
            if state.audiences.get(name).is_none_or(|old| old.version != m.version) {
                put_json(self.members, &member_key(name, person), m)?;
                self.transition(TransitionKind::Entered, name, m.version, person, now, cause)?;
            }
        }
        // A pending timer no later than the one wanted is kept: when it fires, the person is
        // judged again (with no change, as nothing flips before the wanted time) and the
        // timer moves on. So an active person's timer is not moved on every event.
        let timer = match (state.timer_ms, timer) {
            (Some(pending), Some(wanted)) if pending > now && pending <= wanted => Some(pending),
            (Some(pending), None) if pending > now => Some(pending),
            (_, wanted) => wanted,
        };
        if state.timer_ms != timer {
            if let Some(old) = state.timer_ms {
                let key = timer_key(old, person);
                self.fresh.remove(&key);
                self.queue.remove(key)?;
            }
            if let Some(due) = timer {
                let key = timer_key(due, person);
                self.queue.insert(key.as_slice(), &[])?;
                if key < self.frontier {
                    self.fresh.insert(key);
                }
            }
        }
        let next = PersonState {
            audiences: wanted,
            timer_ms: timer,
        };
        if next != state {
            self.set_state(person, next);
        }
        Ok(())
    }

    /// Processes the queue entry `key` (an update or a timer), if it is still there.
    fn process(&mut self, key: &[u8], erased: &mut suppress::Check<'_>) -> TxResult<()> {
        let Some(value) = self.queue.remove(key)? else {
            return Ok(()); // an erasure took it, or a timer was moved
        };
        match key.get(8) {
            Some(&KIND_UPDATE) => {
                let mut u: ProfileUpdate = serde_json::from_slice(&value).map_err(abort)?;
                if erased.holds(&u.user_id)? {
                    return Ok(());
                }
                let anonymous = u.changes.as_ref().and_then(|c| c.anonymous_id.clone());
                if let Some(a) = anonymous {
                    if erased.holds(&a)? {
                        if let Some(c) = u.changes.as_mut() {
                            c.anonymous_id = None;
                        }
                    }
                }
                self.update(key, &u)
            }
            Some(&KIND_TIMER) => {
                let person = String::from_utf8_lossy(&key[9..]).into_owned();
                let due = time_of(key);
                let mut state = self.state(&person)?;
                // A timer the person's state no longer names is stale; `judge` sets the next.
                if state.timer_ms == Some(due) {
                    state.timer_ms = None;
                    self.set_state(&person, state);
                    self.judge(&person, due, key)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Fires the timers this transaction set below `before` (all, without one), in key order.
    fn fire_fresh(&mut self, before: Option<&[u8]>, erased: &mut suppress::Check<'_>) -> TxResult<()> {
        while let Some(first) = self.fresh.first().cloned() {
            if before.is_some_and(|b| first.as_slice() >= b) {
                break;
            }
            self.fresh.remove(&first);
            self.process(&first, erased)?;
        }
        Ok(())
    }

    fn transition(
        &mut self,
        kind: TransitionKind,
        audience: &str,
        version: u32,
        person: &str,
        at_ms: i64,
        cause: &[u8],
    ) -> TxResult<()> {
        let mut key = cause.to_vec();
        key.extend_from_slice(&identity_prefix(person));
        key.extend_from_slice(audience.as_bytes());
        let id = hex(&Sha256::digest(&key)[..16]);
        let t = Transition {
            id,
            cursor: hex(&key),
            kind,
            audience: audience.to_string(),
            version,
            person_id: person.to_string(),
            at_ms,
            cause: if cause.get(8) == Some(&KIND_TIMER) {
                Cause::Timer
            } else {
                Cause::Event {
                    partition: partition_of(cause),
                    offset: offset_of(cause),
                }
            },
        };
        put_json(self.outbox, &key, &t)?;
        let mut index = identity_prefix(person);
        index.extend_from_slice(&key);
        self.outbox_by_person.insert(index, &[])?;
        self.out.push(t);
        Ok(())
    }
}

fn partition_of(key: &[u8]) -> u32 {
    key.get(9..13)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn offset_of(key: &[u8]) -> i64 {
    key.get(13..21).map_or(0, time_of)
}

impl Store {
    /// The rules the store evaluates.
    pub fn rules(&self) -> std::sync::Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the rules (`onramp run --rules`), recording their text in the store's meta so
    /// `onramp serve` and later runs use the same. A change is logged: persons are judged by
    /// the new rules from their next evaluation on.
    pub fn set_rules(&self, rules: Rules) -> Result<(), StoreError> {
        let stored = self.meta.get(super::META_RULES).map_err(|e| self.sled(e))?;
        if stored.as_deref() != Some(rules.text.as_bytes()) {
            if stored.is_some() {
                tracing::warn!("the rules differ from the ones this store was evaluated with: persons are judged by the new rules from their next event or timer on");
            }
            self.meta
                .insert(super::META_RULES, rules.text.as_bytes())
                .map_err(|e| self.sled(e))?;
        }
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(rules);
        Ok(())
    }

    /// How far the `--triggers-topic` relay to `topic` has produced: the cursor of the last
    /// transition it sent and flushed.
    pub fn relay_position(&self, topic: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("triggers_relay.{topic}");
        Ok(self.meta.get(key).map_err(|e| self.sled(e))?.map(|v| v.to_vec()))
    }

    /// Records that the relay to `topic` has produced everything up to `cursor`.
    pub fn set_relay_position(&self, topic: &str, cursor: &[u8]) -> Result<(), StoreError> {
        let key = format!("triggers_relay.{topic}");
        self.meta.insert(key, cursor).map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// Partitions left out of the audience frontier (`--watermark-ignore`).
    /// Recorded in the store's meta (each run records its own, none when the flag is not
    /// given), so read-only commands judge the frontier as the last run did.
    pub fn set_watermark_ignore(&self, partitions: BTreeSet<u32>) -> Result<(), StoreError> {
        let value = serde_json::to_vec(&partitions).unwrap_or_default();
        self.meta
            .insert(super::META_WATERMARK_IGNORE, value)
            .map_err(|e| self.sled(e))?;
        *self.watermark_ignore.write().unwrap_or_else(|e| e.into_inner()) = partitions;
        Ok(())
    }

    /// The partitions left out of the audience frontier.
    pub fn watermark_ignored(&self) -> BTreeSet<u32> {
        self.watermark_ignore.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The audience frontier: the smallest committed watermark over the store's partitions
    /// (but ignored ones); `None` while a partition has none.
    pub fn audience_frontier(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.frontier_inputs()?.frontier(None))
    }

    /// What the frontier is computed from, as committed.
    pub(super) fn frontier_inputs(&self) -> Result<FrontierInputs, StoreError> {
        Ok(FrontierInputs {
            partitions: self.partitions()?,
            ignore: self.watermark_ignore.read().unwrap_or_else(|e| e.into_inner()).clone(),
            watermarks: self
                .checkpoints()?
                .into_iter()
                .map(|(p, c)| (p, c.max_event_time_ms))
                .collect(),
        })
    }

    /// Processes every queue entry below the frontier (see the module docs); returns the
    /// transitions written.
    pub fn drain_audiences(&self) -> Result<Vec<Transition>, StoreError> {
        let rules = self.rules();
        let Some(frontier) = self.audience_frontier()? else {
            return Ok(Vec::new());
        };
        let writer = self.write_lock();
        let suppression_key = self.suppression_key()?;
        let mut all = Vec::new();
        loop {
            let queue = &Staged::new(&self.audience_queue);
            let suppressions = &Staged::new(&self.suppressions);
            let trees = DrainTrees::new(self, queue, suppressions);
            let result = staged::run(&writer, &trees.all(), || {
                let keys = queue.keys_before(&time_key(frontier), DRAIN_CHUNK)?;
                let mut erased = suppress::Check::new(suppressions, suppression_key.as_deref())?;
                let transitions = trees.drain_chunk(&keys, frontier, &rules, &mut erased)?;
                Ok((transitions, keys.len() == DRAIN_CHUNK))
            });
            let (chunk, truncated) = match result {
                Ok(t) => t,
                Err(TransactionError::Abort(reason)) => {
                    return Err(StoreError::Decode {
                        path: self.path.clone(),
                        tree: "audience_queue",
                        key: String::new(),
                        reason,
                    })
                }
                Err(TransactionError::Storage(e)) => return Err(self.sled(e)),
            };
            all.extend(chunk);
            if !truncated {
                break;
            }
        }
        Ok(all)
    }

    /// Each audience of the rules with its version and member count.
    pub fn audience_sizes(&self) -> Result<Vec<(String, u32, u64)>, StoreError> {
        let rules = self.rules();
        let mut out = Vec::new();
        for a in &rules.audiences {
            let n = self.audience_members.scan_prefix(member_key(&a.name, "")).count() as u64;
            out.push((a.name.clone(), a.version, n));
        }
        Ok(out)
    }

    /// Members of `audience` in person-id order after `after`, at most `limit`.
    pub fn audience_members(
        &self,
        audience: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Member)>, StoreError> {
        let prefix = member_key(audience, "");
        let start = match after {
            Some(a) => {
                let mut k = member_key(audience, a);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.audience_members.range(start..) {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let person = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((person, self.decode("audience_members", &k, &v)?));
        }
        Ok(out)
    }

    /// The audiences `person` is in (as of the frontier).
    pub fn memberships(&self, person: &str) -> Result<Vec<String>, StoreError> {
        match self.person_audiences.get(person.as_bytes()).map_err(|e| self.sled(e))? {
            Some(v) => {
                let s: PersonState = self.decode("person_audiences", person.as_bytes(), &v)?;
                Ok(s.audiences.into_keys().collect())
            }
            None => Ok(Vec::new()),
        }
    }

    /// Transitions after `cursor` (exclusive), oldest first, at most `limit`.
    pub fn transitions_after(&self, cursor: Option<&[u8]>, limit: usize) -> Result<Vec<Transition>, StoreError> {
        let iter = match cursor {
            Some(c) => {
                let mut start = c.to_vec();
                start.push(0);
                self.outbox.range(start..)
            }
            None => self.outbox.iter(),
        };
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            out.push(self.decode("outbox", &k, &v)?);
        }
        Ok(out)
    }

    /// Removes everything the audiences hold of `ids` (an erased person): settled profiles
    /// and links, memberships, the timer and the person's transitions in the outbox, under
    /// the erasure's writer lock.
    pub(super) fn erase_audiences(
        &self,
        writer: &std::sync::MutexGuard<'_, ()>,
        ids: &[String],
    ) -> Result<u64, StoreError> {
        let mut outbox_keys = Vec::new();
        for id in ids {
            for item in self.outbox_by_person.scan_prefix(identity_prefix(id)) {
                let (k, _) = item.map_err(|e| self.sled(e))?;
                let plen = identity_prefix(id).len();
                outbox_keys.push((k.clone(), sled::IVec::from(&k[plen..])));
            }
        }
        let (queue, profiles, links, settled_ids) = (
            &Staged::new(&self.audience_queue),
            &Staged::new(&self.settled_profiles),
            &Staged::new(&self.settled_links),
            &Staged::new(&self.settled_ids),
        );
        let (persons, members, outbox, by_person) = (
            &Staged::new(&self.person_audiences),
            &Staged::new(&self.audience_members),
            &Staged::new(&self.outbox),
            &Staged::new(&self.outbox_by_person),
        );
        let result = staged::run(
            writer,
            &[queue, profiles, links, settled_ids, persons, members, outbox, by_person],
            || {
                let mut removed = 0u64;
                for (index, key) in &outbox_keys {
                    by_person.remove(index.as_ref())?;
                    removed += u64::from(outbox.remove(key.as_ref())?.is_some());
                }
                for id in ids {
                    if let Some(state) = get_json::<PersonState>(persons, id.as_bytes())? {
                        for name in state.audiences.keys() {
                            members.remove(member_key(name, id))?;
                        }
                        if let Some(due) = state.timer_ms {
                            queue.remove(timer_key(due, id))?;
                        }
                        persons.remove(id.as_bytes())?;
                    }
                    profiles.remove(id.as_bytes())?;
                    if let Some(link) = get_json::<SettledLink>(links, id.as_bytes())? {
                        let mut list: Vec<String> = get_json(settled_ids, link.user.as_bytes())?.unwrap_or_default();
                        if list.iter().any(|x| x == id) {
                            list.retain(|x| x != id);
                            put_json(settled_ids, link.user.as_bytes(), &list)?;
                        }
                        links.remove(id.as_bytes())?;
                    }
                    if let Some(list) = get_json::<Vec<String>>(settled_ids, id.as_bytes())? {
                        for a in list {
                            if get_json::<SettledLink>(links, a.as_bytes())?.is_some_and(|l| &l.user == id) {
                                links.remove(a.as_bytes())?;
                            }
                        }
                        settled_ids.remove(id.as_bytes())?;
                    }
                }
                Ok(removed)
            },
        );
        match result {
            Ok(n) => Ok(n),
            Err(TransactionError::Abort(reason)) => Err(StoreError::Decode {
                path: self.path.clone(),
                tree: "person_audiences",
                key: String::new(),
                reason,
            }),
            Err(TransactionError::Storage(e)) => Err(self.sled(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves time keys sort like the times, negative ones included, and cursors round-trip.
    #[test]
    fn keys_sort_by_time() {
        let times = [i64::MIN, -5, 0, 7, 1_700_000_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_key(w[0]) < time_key(w[1]));
            assert_eq!(time_of(&time_key(w[0])), w[0]);
        }
        let k = update_key(1_000, 3, 42);
        assert_eq!((time_of(&k), partition_of(&k), offset_of(&k)), (1_000, 3, 42));
        assert_eq!(parse_cursor(&hex(&k)), Some(k));
        assert_eq!(parse_cursor("zz"), None);
        assert_eq!(parse_cursor("abc"), None);
    }
}
