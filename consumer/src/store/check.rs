//! Store integrity: [`Store::verify`] walks every tree and checks every invariant the commit
//! and erase code maintain; [`Store::quick_check`] checks the cheap ones (O(partitions) plus
//! a few reads) and runs on every open, so `onramp run` and `onramp serve` refuse a damaged
//! store instead of serving or extending part of it.
//!
//! # Invariants of a healthy store
//! - every key has its tree's shape and every value decodes; a profile's key is its `user_id`;
//! - `meta` holds `store_version` (= [`STORE_VERSION`]), `partitions` (N ≥ 1) and
//!   `chain_params` (a store with no commit and no witness may lack all three);
//! - checkpoints exist only for partitions < N, with offsets ≥ -1;
//! - `events_in = accepted + rejected + suppressed`, `accepted = applied + duplicates + skipped`,
//!   `rejected = Σ rejected.<reason>`, and `events_in = Σ (checkpoint + 1)`: every offset
//!   from 0 to a partition's checkpoint was committed by this store;
//! - (full) `rejects` holds `rejected − erased.rejects` entries, each at an offset from 0 to its
//!   partition's checkpoint; `rejects_by_identity` indexes exactly the rejects that carry an
//!   identity, each entry naming that identity;
//! - (full) `Σ profile.counters.events = applied − erased.events`;
//! - every `fold_state` key is for a partition < N and a user that has a profile;
//! - the store holds at least what its [`super::Witness`] (a file outside sled, written after
//!   flushes) says it had committed: sled silently drops the tail of a damaged log, which
//!   leaves a consistent but shorter (or empty) store that only this comparison catches. A
//!   store with a witness is never taken for a new one, so its meta must be complete.
//!
//! A problem is reported with its tree, key and what is wrong; [`CheckReport`] keeps at most
//! [`EXAMPLES_PER_KIND`] examples of each kind and counts them all. A sled read that fails
//! with corruption (or panics) is a problem; any other I/O error is returned as an error,
//! since it says nothing about the store's contents. The report types are in [`super::report`].

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use onramp_schemas::{Profile, RejectedEvent, UserFoldState};

use super::report::{CheckReport, Problem, ProblemKind};
use super::{
    identity_prefix, Checkpoint, Store, StoreError, Witness, META_PARAMS, META_PARTITIONS, META_VERSION, STORE_VERSION,
};

/// Examples kept per kind of problem (all are counted).
pub const EXAMPLES_PER_KIND: usize = 10;

/// How to rebuild a damaged store (printed by `onramp check` and its `--help`).
pub const REBUILD_HELP: &str = "A store is a function of its input, so a damaged one is rebuilt, not repaired:
run the same input into a new --store, check it, then swap the directories.
  embedded input:  onramp run --input events.jsonl --partitions N --param … --store DIR.new
                   (the same --input/--generate flags, --partitions and --param as before)
  Fluvio topic:    onramp run --source fluvio --stop-at-end --store DIR.new
                   (only while the topic's retention still holds offset 0 of every partition)
  then:            onramp check --store DIR.new && mv DIR DIR.damaged && mv DIR.new DIR";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Quick,
    Full,
}

/// Problems found so far.
#[derive(Default)]
pub(super) struct Findings {
    total: u64,
    by_kind: BTreeMap<ProblemKind, u64>,
    examples: Vec<Problem>,
}

impl Findings {
    pub(super) fn add(&mut self, kind: ProblemKind, tree: &'static str, key: String, what: String) {
        self.total += 1;
        let n = self.by_kind.entry(kind).or_default();
        *n += 1;
        if *n as usize <= EXAMPLES_PER_KIND {
            self.examples.push(Problem { kind, tree, key, what });
        }
    }
}

/// How a walk of a tree ended.
struct Walked {
    entries: u64,
    /// False when a read failed part-way: sums over the tree are then not comparable.
    complete: bool,
}

/// Renders a key of `tree` for a report.
pub(super) fn show_key(tree: &str, key: &[u8]) -> String {
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => format!("0x{}", hex(b)),
    };
    let partition = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match tree {
        "checkpoints" if key.len() == 4 => format!("p{}", partition(key)),
        "fold_state" if key.len() >= 4 => format!("p{}/{}", partition(key), text(&key[4..])),
        "rejects" if key.len() == 12 => format!("p{}@{}", partition(key), reject_offset(key)),
        "rejects_by_identity" => match split_index_key(key) {
            Some((identity, reject)) => format!("{}→p{}@{}", text(identity), partition(reject), reject_offset(reject)),
            None => format!("0x{}", hex(key)),
        },
        _ => text(key),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().take(64).map(|x| format!("{x:02x}")).collect()
}

/// The offset of a 12-byte `rejects` key.
fn reject_offset(key: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[4..12]);
    i64::from_be_bytes(b)
}

/// Splits a `rejects_by_identity` key into identity and `rejects` key, if it has the shape.
fn split_index_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let identity = key.get(4..4usize.checked_add(len)?)?;
    let reject = &key[4 + len..];
    (reject.len() == 12).then_some((identity, reject))
}

/// The counters the equations use, 0 when absent.
fn counter(counters: &BTreeMap<String, u64>, name: &str) -> u128 {
    counters.get(name).copied().unwrap_or(0) as u128
}

impl Store {
    /// Walks every tree and checks every invariant (see the module docs). `Err` only when
    /// the store cannot be read for another reason than damage (I/O, disk), never for
    /// damage: that is in the report.
    pub fn verify(&self) -> Result<CheckReport, StoreError> {
        self.inspect(Depth::Full)
    }

    /// The cheap checks: meta, every checkpoint and counter and the counter equations, and
    /// the first and last entry of each large tree. `Err(StoreError::Damaged)` when they find
    /// a problem; run on every open.
    pub fn quick_check(&self) -> Result<(), StoreError> {
        let report = self.inspect(Depth::Quick)?;
        if report.healthy {
            Ok(())
        } else {
            Err(StoreError::Damaged {
                path: self.path.clone(),
                found: report.summary(),
            })
        }
    }

    /// Opens the store at `path` without refusing damage and runs [`Store::verify`]; a store
    /// sled cannot open (or whose meta refuses it) is reported as damaged. `Err` for a
    /// missing store and for I/O errors.
    pub fn check_path(path: &Path) -> Result<CheckReport, StoreError> {
        if !path.join("conf").exists() && !path.join("db").exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        match Store::open_any(path) {
            Ok(store) => store.verify(),
            Err(e @ (StoreError::Corrupt { .. } | StoreError::Sled { .. })) => {
                let what = match e {
                    StoreError::Corrupt { message, .. } => format!("sled cannot open the store: {message}"),
                    other => other.to_string(),
                };
                let mut findings = Findings::default();
                findings.add(ProblemKind::Unreadable, "(store)", String::new(), what);
                Ok(CheckReport {
                    store: path.to_path_buf(),
                    depth: "full",
                    healthy: false,
                    store_version: None,
                    partitions: None,
                    chain_params: None,
                    entries: BTreeMap::new(),
                    checkpoints: BTreeMap::new(),
                    counters: BTreeMap::new(),
                    checked: vec!["sled opens the store"],
                    problem_count: findings.total,
                    problems_by_kind: findings.by_kind,
                    problems: findings.examples,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn inspect(&self, depth: Depth) -> Result<CheckReport, StoreError> {
        let mut f = Findings::default();
        let mut entries: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut checked: Vec<&'static str> = Vec::new();

        // meta
        let meta_text = |key: &[u8]| -> Result<Option<Result<String, String>>, StoreError> {
            Ok(self
                .meta
                .get(key)
                .map_err(|e| self.sled(e))?
                .map(|v| String::from_utf8(v.to_vec()).map_err(|_| format!("0x{}", hex(&v)))))
        };
        let (version, partitions_text, params) = match catch_unwind(AssertUnwindSafe(|| {
            Ok::<_, StoreError>((
                meta_text(META_VERSION)?,
                meta_text(META_PARTITIONS)?,
                meta_text(META_PARAMS)?,
            ))
        })) {
            Ok(Ok(meta)) => meta,
            Ok(Err(StoreError::Corrupt { message, .. })) => {
                f.add(ProblemKind::Unreadable, "meta", String::new(), message);
                (None, None, None)
            }
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                f.add(
                    ProblemKind::Unreadable,
                    "meta",
                    String::new(),
                    format!("sled panicked: {}", panic_text(panic)),
                );
                (None, None, None)
            }
        };
        let store_version = version.as_ref().map(|v| v.clone().unwrap_or_else(|bad| bad));
        match &version {
            Some(Ok(v)) if *v == STORE_VERSION.to_string() => {}
            Some(found) => f.add(
                ProblemKind::Meta,
                "meta",
                "store_version".into(),
                format!(
                    "expected layout version {STORE_VERSION}, found `{}`",
                    found.clone().unwrap_or_else(|b| b)
                ),
            ),
            // Missing is a problem only in a store that holds something (below).
            None => {}
        }
        let partitions: Option<u32> = match &partitions_text {
            Some(Ok(t)) => match t.parse::<u32>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    f.add(
                        ProblemKind::Meta,
                        "meta",
                        "partitions".into(),
                        format!("expected a partition count ≥ 1, found `{t}`"),
                    );
                    None
                }
            },
            Some(Err(bad)) => {
                f.add(
                    ProblemKind::Meta,
                    "meta",
                    "partitions".into(),
                    format!("expected a partition count ≥ 1, found {bad}"),
                );
                None
            }
            None => None,
        };
        let chain_params = match &params {
            Some(Ok(p)) => Some(p.clone()),
            Some(Err(bad)) => {
                f.add(
                    ProblemKind::Meta,
                    "meta",
                    "chain_params".into(),
                    format!("expected the chain params as text, found {bad}"),
                );
                None
            }
            None => None,
        };
        checked.push("meta: store_version, partitions and chain_params present and valid");

        // checkpoints (every entry, both depths: O(partitions))
        let mut checkpoints: BTreeMap<u32, Checkpoint> = BTreeMap::new();
        let cp_walk = self.walk(&self.checkpoints, "checkpoints", None, &mut f, |f, k, v| {
            if k.len() != 4 {
                f.add(
                    ProblemKind::BadKey,
                    "checkpoints",
                    show_key("checkpoints", k),
                    format!("expected a 4-byte partition number, found {} bytes", k.len()),
                );
                return Ok(());
            }
            let p = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
            let key = show_key("checkpoints", k);
            let cp: Checkpoint = match serde_json::from_slice(v) {
                Ok(c) => c,
                Err(e) => {
                    f.add(
                        ProblemKind::BadValue,
                        "checkpoints",
                        key,
                        format!("not a checkpoint: {e}"),
                    );
                    return Ok(());
                }
            };
            if let Some(n) = partitions.filter(|n| p >= *n) {
                f.add(
                    ProblemKind::CheckpointOutOfRange,
                    "checkpoints",
                    key.clone(),
                    format!("partition {p} is not below the store's partition count {n}"),
                );
            }
            if cp.offset < -1 {
                f.add(
                    ProblemKind::CheckpointOutOfRange,
                    "checkpoints",
                    key,
                    format!("offset {} is below -1", cp.offset),
                );
            }
            checkpoints.insert(p, cp);
            Ok(())
        })?;
        entries.insert("checkpoints", cp_walk.entries);
        checked.push("checkpoints: partition < partitions, offset ≥ -1, every value decodes");

        // counters (every entry, both depths: a handful)
        let mut counters: BTreeMap<String, u64> = BTreeMap::new();
        let counter_walk = self.walk(&self.counters, "counters", None, &mut f, |f, k, v| {
            let key = show_key("counters", k);
            let Ok(name) = std::str::from_utf8(k) else {
                f.add(
                    ProblemKind::BadKey,
                    "counters",
                    key,
                    "expected a counter name (text)".into(),
                );
                return Ok(());
            };
            match <[u8; 8]>::try_from(v) {
                Ok(b) => {
                    counters.insert(name.to_string(), u64::from_be_bytes(b));
                }
                Err(_) => f.add(
                    ProblemKind::BadValue,
                    "counters",
                    key,
                    format!("expected an 8-byte big-endian count, found {} bytes", v.len()),
                ),
            }
            Ok(())
        })?;
        entries.insert("counters", counter_walk.entries);

        // The witness: what the store had committed at its last flush, kept outside sled.
        let witness = match Witness::read(&self.path) {
            Ok(w) => w,
            Err(reason) => {
                f.add(ProblemKind::Unreadable, "(witness)", String::new(), reason);
                None
            }
        };
        if let Some(w) = &witness {
            let offsets = checkpoints.iter().map(|(p, c)| (*p, c.offset)).collect();
            let events_in = counters.get("events_in").copied().unwrap_or(0);
            for (key, what) in w.shortfalls(events_in, &offsets) {
                f.add(ProblemKind::LostCommits, "(witness)", key, what);
            }
        }
        checked.push("witness: the store holds at least the events_in and checkpoints it had at its last flush");

        let empty = witness.is_none() && checkpoints.is_empty() && counters.is_empty() && self.profiles.is_empty();
        if !empty {
            if version.is_none() {
                f.add(
                    ProblemKind::Meta,
                    "meta",
                    "store_version".into(),
                    format!("missing (expected {STORE_VERSION}), though the store has commits"),
                );
            }
            if partitions_text.is_none() {
                f.add(
                    ProblemKind::Meta,
                    "meta",
                    "partitions".into(),
                    "missing, though the store has commits".into(),
                );
            }
            if params.is_none() {
                f.add(
                    ProblemKind::Meta,
                    "meta",
                    "chain_params".into(),
                    "missing, though the store has commits".into(),
                );
            }
        }

        if counter_walk.complete {
            let c = |name: &str| counter(&counters, name);
            let mut equation = |ok: bool, key: &str, what: String| {
                if !ok {
                    f.add(ProblemKind::CounterMismatch, "counters", key.to_string(), what);
                }
            };
            let (events_in, accepted, rejected) = (c("events_in"), c("accepted"), c("rejected"));
            let (applied, duplicates, skipped) = (c("applied"), c("duplicates"), c("skipped"));
            let suppressed = c("suppressed");
            equation(
                events_in == accepted + rejected + suppressed,
                "events_in",
                format!("events_in {events_in} ≠ accepted {accepted} + rejected {rejected} + suppressed {suppressed}"),
            );
            equation(
                accepted == applied + duplicates + skipped,
                "accepted",
                format!("accepted {accepted} ≠ applied {applied} + duplicates {duplicates} + skipped {skipped}"),
            );
            let by_reason: u128 = counters
                .iter()
                .filter(|(k, _)| k.starts_with("rejected."))
                .map(|(_, v)| *v as u128)
                .sum();
            equation(
                rejected == by_reason,
                "rejected",
                format!("rejected {rejected} ≠ Σ rejected.<reason> {by_reason}"),
            );
            let erased_rejects = c("erased.rejects");
            equation(
                erased_rejects <= rejected,
                "erased.rejects",
                format!("erased.rejects {erased_rejects} > rejected {rejected}"),
            );
            let erased_events = c("erased.events");
            equation(
                erased_events <= applied,
                "erased.events",
                format!("erased.events {erased_events} > applied {applied}"),
            );
            if cp_walk.complete {
                let offsets: i128 = checkpoints.values().map(|c| c.offset as i128 + 1).sum();
                equation(
                    events_in as i128 == offsets,
                    "events_in",
                    format!(
                        "events_in {events_in} ≠ Σ (checkpoint + 1) {offsets}: the checkpoints cover \
                         other offsets than the store committed"
                    ),
                );
            }
        }
        checked.push(
            "counters: events_in = accepted + rejected + suppressed = Σ (checkpoint + 1); \
             accepted = applied + duplicates + skipped; rejected = Σ rejected.<reason>",
        );

        // the large trees
        let mut sum_events: u128 = 0;
        let mut undecoded_profiles: u64 = 0;
        let mut reject_count: u64 = 0;
        let profiles = self.walk(&self.profiles, "profiles", Some(depth), &mut f, |f, k, v| {
            match self.check_profile(f, k, v) {
                Some(p) => sum_events += p.counters.events as u128,
                None => undecoded_profiles += 1,
            }
            Ok(())
        })?;
        let fold = self.walk(&self.fold_state, "fold_state", Some(depth), &mut f, |f, k, v| {
            self.check_fold_state(f, partitions, k, v)
        })?;
        let rejects = self.walk(&self.rejects, "rejects", Some(depth), &mut f, |f, k, v| {
            reject_count += 1;
            self.check_reject(f, partitions, &checkpoints, k, v)
        })?;
        let index = self.walk(
            &self.rejects_by_identity,
            "rejects_by_identity",
            Some(depth),
            &mut f,
            |f, k, v| self.check_index(f, k, v),
        )?;
        let mut link_conflicts: u128 = 0;
        let links = self.walk(&self.links, "links", Some(depth), &mut f, |f, k, v| {
            link_conflicts += self.check_link(f, k, v)? as u128;
            Ok(())
        })?;
        let claims = self.walk(&self.link_claims, "link_claims", Some(depth), &mut f, |f, k, v| {
            self.check_claim(f, k, v)
        })?;
        let meta = self.walk(&self.meta, "meta", None, &mut f, |_, _, _| Ok(()))?;
        match depth {
            Depth::Quick => checked.push(
                "profiles, fold_state, rejects, rejects_by_identity: first and last entry \
                 (key shape, value decodes, references exist)",
            ),
            Depth::Full => {
                for (tree, w) in [
                    ("profiles", &profiles),
                    ("fold_state", &fold),
                    ("rejects", &rejects),
                    ("rejects_by_identity", &index),
                    ("links", &links),
                    ("link_claims", &claims),
                    ("meta", &meta),
                ] {
                    entries.insert(tree, w.entries);
                }
                checked.push("profiles: every value decodes, key = user_id");
                checked.push(
                    "fold_state: every key is (partition < partitions, user with a profile), every value decodes",
                );
                checked.push("rejects: every key is (partition < partitions, 0 ≤ offset ≤ checkpoint), every value decodes, indexed by its identity");
                checked.push("rejects_by_identity: every entry names an existing reject with that identity");
                checked.push(
                    "links: claims decode, sorted, one per user, each indexed in link_claims; link_claims: each entry is a kept claim",
                );
                if counter_walk.complete && links.complete {
                    let expected = counter(&counters, "link_conflicts")
                        .saturating_sub(counter(&counters, "erased.link_conflicts"));
                    if link_conflicts != expected {
                        f.add(
                            ProblemKind::CounterMismatch,
                            "links",
                            String::new(),
                            format!(
                                "Σ conflicts over links is {link_conflicts}, expected link_conflicts − erased.link_conflicts = {expected}"
                            ),
                        );
                    }
                }
                checked.push("links: Σ conflicts = link_conflicts − erased.link_conflicts");
                if counter_walk.complete && rejects.complete {
                    let expected = counter(&counters, "rejected").saturating_sub(counter(&counters, "erased.rejects"));
                    if reject_count as u128 != expected {
                        f.add(
                            ProblemKind::CounterMismatch,
                            "rejects",
                            String::new(),
                            format!(
                                "{reject_count} entries, expected rejected − erased.rejects = {expected}: \
                                 rejects were lost or added outside a commit"
                            ),
                        );
                    }
                }
                checked.push("rejects: entries = rejected − erased.rejects");
                // A profile that does not decode is reported already; its events are unknown.
                if counter_walk.complete && profiles.complete && undecoded_profiles == 0 {
                    let expected = counter(&counters, "applied").saturating_sub(counter(&counters, "erased.events"));
                    if sum_events != expected {
                        f.add(
                            ProblemKind::CounterMismatch,
                            "profiles",
                            String::new(),
                            format!(
                                "Σ profile counters.events is {sum_events}, expected applied − erased.events = {expected}"
                            ),
                        );
                    }
                }
                checked.push("profiles: Σ counters.events = applied − erased.events");
            }
        }

        Ok(CheckReport {
            store: self.path.clone(),
            depth: match depth {
                Depth::Quick => "quick",
                Depth::Full => "full",
            },
            healthy: f.total == 0,
            store_version,
            partitions,
            chain_params,
            entries,
            checkpoints,
            counters,
            checked,
            problem_count: f.total,
            problems_by_kind: f.by_kind,
            problems: f.examples,
        })
    }

    /// Calls `each` on the entries of `tree`: all of them, or with `Some(Depth::Quick)` the
    /// first and the last. A sled corruption or panic is a problem and ends the walk; other
    /// sled errors are returned.
    fn walk(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        depth: Option<Depth>,
        f: &mut Findings,
        mut each: impl FnMut(&mut Findings, &[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<Walked, StoreError> {
        let mut walked = Walked {
            entries: 0,
            complete: true,
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<Result<(), sled::Error>, StoreError> {
            if depth == Some(Depth::Quick) {
                let first = match tree.first() {
                    Ok(e) => e,
                    Err(e) => return Ok(Err(e)),
                };
                let last = match tree.last() {
                    Ok(e) => e,
                    Err(e) => return Ok(Err(e)),
                };
                let last = last.filter(|(k, _)| first.as_ref().is_none_or(|(fk, _)| fk != k));
                for (k, v) in first.into_iter().chain(last) {
                    walked.entries += 1;
                    each(f, &k, &v)?;
                }
                return Ok(Ok(()));
            }
            for item in tree.iter() {
                match item {
                    Ok((k, v)) => {
                        walked.entries += 1;
                        each(f, &k, &v)?;
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Ok(()))
        }));
        let read_error = match outcome {
            Ok(Ok(Ok(()))) => return Ok(walked),
            // A lookup made while checking an entry (a profile, a reject) hit corruption.
            Ok(Err(StoreError::Corrupt { message, .. })) => message,
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Err(e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_))))) => e.to_string(),
            Ok(Ok(Err(e))) => return Err(self.sled(e)),
            Err(panic) => format!("sled panicked: {}", panic_text(panic)),
        };
        walked.complete = false;
        f.add(
            ProblemKind::Unreadable,
            name,
            format!("after {} entries", walked.entries),
            format!("reading the tree failed ({read_error}); the rest of it was not checked"),
        );
        Ok(walked)
    }

    fn check_profile(&self, f: &mut Findings, k: &[u8], v: &[u8]) -> Option<Profile> {
        let key = show_key("profiles", k);
        match serde_json::from_slice::<Profile>(v) {
            Ok(p) if p.user_id.as_bytes() == k => Some(p),
            Ok(p) => {
                f.add(
                    ProblemKind::KeyMismatch,
                    "profiles",
                    key,
                    format!("the profile's user_id is `{}`, expected the key", p.user_id),
                );
                None
            }
            Err(e) => {
                f.add(ProblemKind::BadValue, "profiles", key, format!("not a profile: {e}"));
                None
            }
        }
    }

    fn check_fold_state(
        &self,
        f: &mut Findings,
        partitions: Option<u32>,
        k: &[u8],
        v: &[u8],
    ) -> Result<(), StoreError> {
        let key = show_key("fold_state", k);
        if k.len() < 4 {
            f.add(
                ProblemKind::BadKey,
                "fold_state",
                key,
                format!("expected a 4-byte partition and a user id, found {} bytes", k.len()),
            );
            return Ok(());
        }
        let p = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
        if let Some(n) = partitions.filter(|n| p >= *n) {
            f.add(
                ProblemKind::OrphanFoldState,
                "fold_state",
                key.clone(),
                format!("partition {p} is not below the store's partition count {n}"),
            );
        }
        if std::str::from_utf8(&k[4..]).is_err() {
            f.add(
                ProblemKind::BadKey,
                "fold_state",
                key.clone(),
                "the user id is not UTF-8".into(),
            );
        } else if !self.profiles.contains_key(&k[4..]).map_err(|e| self.sled(e))? {
            f.add(
                ProblemKind::OrphanFoldState,
                "fold_state",
                key.clone(),
                "fold state of a user without a profile".into(),
            );
        }
        if let Err(e) = serde_json::from_slice::<UserFoldState>(v) {
            f.add(
                ProblemKind::BadValue,
                "fold_state",
                key,
                format!("not a user's fold state: {e}"),
            );
        }
        Ok(())
    }

    fn check_reject(
        &self,
        f: &mut Findings,
        partitions: Option<u32>,
        checkpoints: &BTreeMap<u32, Checkpoint>,
        k: &[u8],
        v: &[u8],
    ) -> Result<(), StoreError> {
        let key = show_key("rejects", k);
        if k.len() != 12 {
            f.add(
                ProblemKind::BadKey,
                "rejects",
                key,
                format!(
                    "expected a 4-byte partition and an 8-byte offset, found {} bytes",
                    k.len()
                ),
            );
            return Ok(());
        }
        let p = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
        let offset = reject_offset(k);
        if let Some(n) = partitions.filter(|n| p >= *n) {
            f.add(
                ProblemKind::RejectOutOfRange,
                "rejects",
                key.clone(),
                format!("partition {p} is not below the store's partition count {n}"),
            );
        } else {
            let checkpoint = checkpoints.get(&p).map_or(-1, |c| c.offset);
            if offset < 0 || offset > checkpoint {
                f.add(
                    ProblemKind::RejectOutOfRange,
                    "rejects",
                    key.clone(),
                    format!("offset {offset} is not in 0..={checkpoint}, the offsets partition {p} committed"),
                );
            }
        }
        let rejected: RejectedEvent = match serde_json::from_slice(v) {
            Ok(r) => r,
            Err(e) => {
                f.add(
                    ProblemKind::BadValue,
                    "rejects",
                    key,
                    format!("not a rejected event: {e}"),
                );
                return Ok(());
            }
        };
        if let Some(id) = rejected.identity.as_deref().filter(|id| !id.is_empty()) {
            let mut index = identity_prefix(id);
            index.extend_from_slice(k);
            if !self
                .rejects_by_identity
                .contains_key(&index)
                .map_err(|e| self.sled(e))?
            {
                f.add(
                    ProblemKind::MissingIndex,
                    "rejects",
                    key,
                    format!("identity `{id}` has no rejects_by_identity entry for this reject (erasure would miss it)"),
                );
            }
        }
        Ok(())
    }

    fn check_index(&self, f: &mut Findings, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
        let key = show_key("rejects_by_identity", k);
        let Some((identity, reject_key)) = split_index_key(k) else {
            f.add(
                ProblemKind::BadKey,
                "rejects_by_identity",
                key,
                "expected identity length (4 bytes) ++ identity ++ a 12-byte rejects key".into(),
            );
            return Ok(());
        };
        if !v.is_empty() {
            f.add(
                ProblemKind::BadValue,
                "rejects_by_identity",
                key.clone(),
                format!("expected an empty value, found {} bytes", v.len()),
            );
        }
        let Ok(identity) = std::str::from_utf8(identity) else {
            f.add(
                ProblemKind::BadKey,
                "rejects_by_identity",
                key,
                "the identity is not UTF-8".into(),
            );
            return Ok(());
        };
        match self.rejects.get(reject_key).map_err(|e| self.sled(e))? {
            None => f.add(
                ProblemKind::DanglingIndex,
                "rejects_by_identity",
                key,
                format!(
                    "points at reject {} which does not exist",
                    show_key("rejects", reject_key)
                ),
            ),
            Some(value) => match serde_json::from_slice::<RejectedEvent>(&value) {
                // An undecodable reject is reported when the rejects tree is walked.
                Err(_) => {}
                Ok(r) if r.identity.as_deref() == Some(identity) => {}
                Ok(r) => f.add(
                    ProblemKind::DanglingIndex,
                    "rejects_by_identity",
                    key,
                    format!(
                        "indexes identity `{identity}`, but the reject's identity is {}",
                        r.identity.map_or("none".into(), |i| format!("`{i}`"))
                    ),
                ),
            },
        }
        Ok(())
    }
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "sled panicked".into())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;

    use crate::store::StoreError;

    /// Proves sled's I/O errors map to what they are: ENOSPC (by OS code, and by kind as
    /// sled's clone of an error keeps it) to DiskFull, sled's lock error to InUse, any
    /// other to Io — none of them saying the store is damaged.
    #[test]
    fn io_errors_are_not_called_damage() {
        let path = Path::new("/data/store");
        let map = |e: io::Error| StoreError::from_sled(path, sled::Error::Io(e));
        let raw = map(io::Error::from_raw_os_error(28));
        assert!(matches!(raw, StoreError::DiskFull { .. }), "{raw:?}");
        let cloned = sled::Error::Io(io::Error::from_raw_os_error(28)).clone();
        let cloned = StoreError::from_sled(path, cloned);
        assert!(matches!(cloned, StoreError::DiskFull { .. }), "{cloned:?}");
        let message = cloned.to_string();
        assert!(
            message.contains("the disk holding store /data/store is full")
                && message.contains("The store is intact")
                && message.contains("Free space"),
            "{message}"
        );
        let locked = map(io::Error::other(
            "could not acquire lock on \"/data/store/db\": WouldBlock",
        ));
        assert!(matches!(locked, StoreError::InUse { .. }), "{locked:?}");
        let denied = map(io::Error::from_raw_os_error(13));
        assert!(matches!(denied, StoreError::Io { .. }), "{denied:?}");
        for e in [raw, locked, denied] {
            let text = e.to_string();
            assert!(!text.contains("is damaged"), "{text}");
        }
    }
}
