//! The sled store: profiles, per-partition checkpoints, fold state for restarts, reject
//! records, counters, and metadata — written exactly once per batch.
//!
//! # Trees
//! | tree | key | value |
//! |---|---|---|
//! | `profiles` | user id | `Profile` JSON |
//! | `fold_state` | partition (u32 BE) ++ user id | `UserFoldState` JSON: what that partition's aggregate holds for the user (restart snapshot material) |
//! | `checkpoints` | partition (u32 BE) | [`Checkpoint`] JSON |
//! | `rejects` | partition (u32 BE) ++ offset (i64 BE) | `RejectedEvent` JSON (dead letters, never dropped) |
//! | `rejects_by_identity` | identity length (u32 BE) ++ identity ++ the `rejects` key | empty (index for erasure) |
//! | `counters` | name | u64 BE (events in, accepted, rejected.<reason>, duplicates, skipped; erased.profiles, erased.events, erased.rejects) |
//! | `links` | anonymous id | [`Link`] JSON: each claiming user's smallest (event time, partition, offset), smallest first; the first owns the id |
//! | `link_claims` | user id length (u32 BE) ++ user id ++ anonymous id | empty (index of `links` by user) |
//! | `suppressions` | HMAC-SHA-256 of an erased id (32 bytes), and `!` once any exists | empty |
//! | `skew` | partition (u32 BE) | [`skew::PartitionSkew`] JSON: the partition's events and heaviest keys |
//! | `meta` | name | schema version, partition count, chain params, source, input segment, funnel steps, audience rules, watermark-ignored partitions, fetch sizes that got past a stall |
//! | `audience_queue`, `settled_*`, `person_audiences`, `audience_members`, `outbox`, `outbox_by_person` | see [`audience`] | audiences, timers and transitions |
//!
//! # Exactly once (ARCHITECTURE.md, "The fold rules")
//! [`Store::commit`] applies a batch's updates with `Profile::apply`, records its rejects
//! and counters, and moves the partition's checkpoint to the batch's last offset, all in
//! one sled transaction: either all of it is durable or none of it is. A run resumes each
//! partition at checkpoint + 1, so no record is applied twice or skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use onramp_schemas::{
    Hints, Outcome, PartitionClock, Profile, ProfileUpdate, RejectReason, RejectedEvent, RestartSnapshot, SkipKind,
    UserFoldState,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use staged::Staged;

pub mod audience;
mod check;
mod erase;
mod identity;
mod staged;
mod suppress;

mod report;
pub mod skew;
mod witness;

pub use check::{EXAMPLES_PER_KIND, REBUILD_HELP};
pub use erase::Erased;
pub use identity::{person_id_in, person_in, Claim, IdentityView, Link, LinkConflict, Person, MAX_CLAIMS};
pub use report::{CheckReport, Problem, ProblemKind};
pub use suppress::{SuppressionList, SUPPRESSIONS_VERSION};
pub use witness::{Witness, WITNESS_FILE};

/// The store layout version this build reads and writes.
pub const STORE_VERSION: u32 = 2;

/// Where a partition's consumption stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Last offset consumed (applied or dropped); the next run starts at `offset + 1`.
    pub offset: i64,
    /// The partition's watermark, ms: its robust event-time clock
    /// ([`onramp_schemas::clock`]), the same the profile aggregate judges expiry by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_time_ms: Option<i64>,
    /// The partition's clock at the checkpoint (recent event times and watermark), kept
    /// exactly as the aggregate keeps it, for its restart snapshot.
    #[serde(default)]
    pub clock: PartitionClock,
    /// Embedded runs: where in its input the checkpoint's record was (the source's
    /// identity, checked when a run resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputPosition>,
}

/// A position in an embedded run's input, with a fingerprint of everything before it, so
/// a resumed run can tell whether it is fed the same input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPosition {
    /// Which input of the store ([`InputSegment::id`]).
    pub segment: u32,
    /// Line number in that input, from 0.
    pub line: u64,
    /// Fingerprint of lines `0..=line` of that input (a chained 128-bit SipHash, hex).
    pub fingerprint: String,
}

/// The input an embedded store is consuming. A store consumes one input, or, with
/// `onramp run --append`, several one after another: each later input's records get the
/// offsets after everything consumed before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSegment {
    /// 0 for the first input, then one more per `--append`.
    pub id: u32,
    /// Per partition, the offset of this input's first record there.
    pub base: Vec<i64>,
    /// The input was read to its end (a later `--append` starts a new input).
    pub complete: bool,
    /// Fingerprint of this input's first line, once read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_line: Option<String>,
    /// The `first_line` of every earlier input, oldest first: an appended input that starts
    /// exactly like one of them is the same input fed again, and is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_first_lines: Vec<String>,
    /// Stores written before `earlier_first_lines` kept only the previous input's.
    #[serde(default, rename = "previous_first_line", skip_serializing)]
    pub legacy_previous_first_line: Option<String>,
}

impl InputSegment {
    /// The first-line fingerprints of every input consumed before this one.
    pub fn earlier_first_lines(&self) -> impl Iterator<Item = &str> {
        self.legacy_previous_first_line
            .iter()
            .chain(&self.earlier_first_lines)
            .map(String::as_str)
    }
}

/// What a run expects of the store it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Number of partitions.
    pub partitions: u32,
    /// The chain params, rendered as text; a store written with other params would not
    /// continue deterministically, so a mismatch is refused.
    pub chain_params: String,
}

/// Store errors. Each message says what was found and what to do. Only [`StoreError::Corrupt`],
/// [`StoreError::Decode`] and [`StoreError::Damaged`] say the store is damaged; an I/O error
/// or a full disk leaves every committed batch intact.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk holding the store is full (ENOSPC).
    #[error("the disk holding store {path} is full (no space left on device). The store is intact: the batch being written was not committed and the next run does it again. Free space on that disk, then run the same command again")]
    DiskFull {
        /// Store directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Another process holds the store (sled allows one at a time).
    #[error("store {path} is in use by another process ({error}); sled lets one process open a store at a time. Stop the other `onramp run` or `onramp serve` first (a running `onramp run` serves the read API itself)")]
    InUse {
        /// Store directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Reading or writing the store's files failed; this says nothing about its contents.
    #[error("I/O error on store {path}: {error}. The error says nothing against the store's contents: every batch is committed whole or not at all, and the next run resumes after the last one committed. Fix the cause (disk, permissions, mount) and run again; `onramp check --store {path}` tells whether the store is healthy")]
    Io {
        /// Store directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// sled failed in another way than I/O or corruption (unsupported use, a sled bug).
    #[error(
        "store {path}: sled failed: {error}. Run `onramp check --store {path}` to see whether the store is healthy"
    )]
    Sled {
        /// Store directory.
        path: PathBuf,
        /// sled's error.
        error: sled::Error,
    },
    /// sled found corruption in the store's files (or panicked opening them).
    #[error("store {path} is damaged: sled cannot read it ({message}). Run `onramp check --store {path}` for a report; rebuild the store from its input (`onramp check --help` says how)")]
    Corrupt {
        /// Store directory.
        path: PathBuf,
        /// What sled said.
        message: String,
    },
    /// The quick check on open found the store's entries inconsistent.
    #[error("store {path} is damaged: {found}. Nothing was committed to it. Run `onramp check --store {path}` for every problem; rebuild the store from its input into a new --store and swap the directories (`onramp check --help` says how)")]
    Damaged {
        /// Store directory.
        path: PathBuf,
        /// The first problems found.
        found: String,
    },
    /// The store was written by another layout version.
    #[error("store {path} has layout version {found}; this onramp reads version {STORE_VERSION}. Use the onramp release that wrote it, or export and re-import")]
    Version {
        /// Store directory.
        path: PathBuf,
        /// Version found.
        found: String,
    },
    /// Opened with another partition count or chain params than it was written with.
    #[error("store {path} was written with {what} `{found}`, this run has `{expected}`. Use the same settings, or a new --store")]
    Settings {
        /// Store directory.
        path: PathBuf,
        /// Which setting.
        what: &'static str,
        /// Stored value.
        found: String,
        /// This run's value.
        expected: String,
    },
    /// A stored value does not decode.
    #[error("store {path}: {tree} entry {key} does not decode ({reason}); the store is damaged. Run `onramp check --store {path}` for every problem; rebuild the store from its input (`onramp check --help` says how)")]
    Decode {
        /// Store directory.
        path: PathBuf,
        /// Tree.
        tree: &'static str,
        /// Key, lossy text.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// No store at the path (read-only commands).
    #[error("no onramp store at {0}; run `onramp run` (or `onramp demo`) first, or pass --store")]
    Missing(PathBuf),
}

impl StoreError {
    /// Maps a sled error on the store at `path`: a full disk to [`StoreError::DiskFull`], a
    /// held lock to [`StoreError::InUse`], other I/O to [`StoreError::Io`] (none of them
    /// damage), corruption to [`StoreError::Corrupt`].
    pub fn from_sled(path: &Path, source: sled::Error) -> StoreError {
        let path = path.to_path_buf();
        match source {
            sled::Error::Io(error) if is_disk_full(&error) => StoreError::DiskFull { path, error },
            // sled's own lock error (config.rs `try_lock`): ErrorKind::Other with this text.
            sled::Error::Io(error) if error.to_string().starts_with("could not acquire lock") => {
                StoreError::InUse { path, error }
            }
            sled::Error::Io(error) => StoreError::Io { path, error },
            e @ sled::Error::Corruption { .. } => StoreError::Corrupt {
                path,
                message: e.to_string(),
            },
            error => StoreError::Sled { path, error },
        }
    }
}

/// Removes the `snap.*.generating` files in a store directory: snapshots sled began and never
/// finished (it writes one, then renames it; a full disk can stop it between the two). sled
/// would read such a file as corruption. Called only after sled refused the store as
/// corrupt, so no process holds it (sled checks its lock first). True if any was removed.
fn remove_unfinished_snapshots(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") && std::fs::remove_file(entry.path()).is_ok() {
            tracing::warn!(file = %name, "removed an unfinished sled snapshot (left by a write that failed, e.g. on a full disk)");
            removed = true;
        }
    }
    removed
}

/// True for "no space left on device". sled keeps the error kind when it clones an I/O
/// error (not the OS code), so the kind decides; the OS code covers a kind not mapped.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || (cfg!(unix) && e.raw_os_error() == Some(28))
}

/// One batch's results, committed atomically.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Partition.
    pub partition: u32,
    /// Last offset of the input batch (the new checkpoint).
    pub last_offset: i64,
    /// Records read.
    pub events_in: u64,
    /// The chain's profile updates.
    pub updates: Vec<ProfileUpdate>,
    /// Records the validate module rejected, with their offsets.
    pub rejects: Vec<(i64, RejectedEvent)>,
    /// Embedded runs: the input position of the batch's last record.
    pub input: Option<InputPosition>,
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// Updates applied.
    pub applied: u64,
    /// Duplicate updates (changed nothing).
    pub duplicates: u64,
    /// Skipped updates.
    pub skipped: u64,
    /// Distinct profiles written.
    pub profiles_touched: u64,
    /// Events the aggregate quarantined as too far ahead in time, stored as
    /// `timestamp_out_of_range` rejects (not counted in `skipped`).
    pub quarantined: u64,
    /// Live users the aggregate evicted to stay within `max_users`.
    pub evicted: u64,
    /// Records rejected, by reason: the batch's rejects and the quarantined updates.
    pub rejected: BTreeMap<String, u64>,
    /// The hints of each written profile after the batch, judged at the partition's
    /// watermark (for the update stream's `hint` filter).
    pub hints: BTreeMap<String, Hints>,
    /// Records dropped because they belong to an erased id (updates and rejects).
    pub suppressed: u64,
    /// The erased ids whose updates were dropped (the update stream must not publish them).
    pub suppressed_users: std::collections::BTreeSet<String>,
    /// Erased anonymous ids removed from other users' updates (the update stream must strip
    /// them too).
    pub stripped_anonymous_ids: std::collections::BTreeSet<String>,
    /// Link conflicts the batch added: claims on an anonymous id another user already
    /// claimed (see `store::identity`).
    pub link_conflicts: u64,
    /// Audience transitions the commit's drain wrote (see [`audience`]).
    pub transitions: Vec<audience::Transition>,
}

impl Committed {
    /// Updates the aggregate accepted: applied, duplicate or skipped.
    pub fn accepted(&self) -> u64 {
        self.applied + self.duplicates + self.skipped
    }
}

/// sled's page cache. Its default (1 GB) holds every page a run writes until it is full, so
/// a run's memory grew with the store up to that; 256 MiB holds the hot profiles and fold
/// state of a run with room to spare (BENCHMARKS.md, "Memory of a long run").
pub const SLED_CACHE_BYTES: u64 = 256 << 20;

/// The store.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    profiles: sled::Tree,
    fold_state: sled::Tree,
    checkpoints: sled::Tree,
    rejects: sled::Tree,
    /// Index of `rejects` by the rejected record's identity, for erasure.
    rejects_by_identity: sled::Tree,
    counters: sled::Tree,
    meta: sled::Tree,
    /// Per anonymous id, the users that claimed it ([`Link`]).
    links: sled::Tree,
    /// Index of `links` by claiming user, for a person's ids and for erasure.
    link_claims: sled::Tree,
    /// Keyed hashes of erased ids (see `suppress`).
    suppressions: sled::Tree,
    /// Audiences (see [`audience`]).
    audience_queue: sled::Tree,
    settled_profiles: sled::Tree,
    settled_links: sled::Tree,
    settled_ids: sled::Tree,
    person_audiences: sled::Tree,
    audience_members: sled::Tree,
    outbox: sled::Tree,
    outbox_by_person: sled::Tree,
    /// Events and heaviest keys per partition (see [`skew`]).
    skew: sled::Tree,
    /// The rules evaluated (from the store's meta, else the built-in ones).
    rules: std::sync::Arc<std::sync::RwLock<std::sync::Arc<crate::audience::Rules>>>,
    /// Partitions left out of the audience frontier.
    watermark_ignore: std::sync::Arc<std::sync::RwLock<std::collections::BTreeSet<u32>>>,
    /// The store's one writer at a time ([`Store::write_lock`]).
    writer: std::sync::Arc<std::sync::Mutex<()>>,
    /// When the counts of the last [`Witness`] this process wrote were taken (a witness is
    /// rewritten at most once a second, and never by one counted earlier).
    witnessed: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// A witness counted before a flush that made its counts durable, not yet written
/// ([`Store::flush_durable`]).
#[must_use = "a flushed commit's witness is written with Store::write_witness"]
pub struct UnwrittenWitness {
    witness: Witness,
    counted_at: std::time::Instant,
}

/// How often a flush also rewrites the witness, at most.
const WITNESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

const META_VERSION: &[u8] = b"store_version";
const META_PARTITIONS: &[u8] = b"partitions";
const META_PARAMS: &[u8] = b"chain_params";
const META_SOURCE: &[u8] = b"source";
const META_INPUT_SEGMENT: &[u8] = b"input_segment";
const META_FUNNEL_STEPS: &[u8] = b"funnel_steps";
const META_RULES: &[u8] = b"audience_rules";
const META_WATERMARK_IGNORE: &[u8] = b"watermark_ignore";
const META_FETCH_SIZES: &[u8] = b"fetch_sizes";

impl Store {
    /// Opens (or creates) the store for a run, refusing one written with another layout
    /// version, partition count or chain params.
    pub fn open(path: &Path, settings: &StoreSettings) -> Result<Store, StoreError> {
        let store = Store::open_any(path)?;
        // The quick check before any write: a damaged store gets no meta written into it.
        store.check_version(false)?;
        store.quick_check()?;
        store.check_version(true)?;
        for (key, what, expected) in [
            (META_PARTITIONS, "partition count", settings.partitions.to_string()),
            (META_PARAMS, "chain params", settings.chain_params.clone()),
        ] {
            match store.meta.get(key).map_err(|e| store.sled(e))? {
                Some(found) if found.as_ref() != expected.as_bytes() => {
                    return Err(StoreError::Settings {
                        path: path.to_path_buf(),
                        what,
                        found: String::from_utf8_lossy(&found).into_owned(),
                        expected,
                    })
                }
                Some(_) => {}
                None => {
                    store.meta.insert(key, expected.as_bytes()).map_err(|e| store.sled(e))?;
                }
            }
        }
        // Every store a run writes has its suppression key from the start, so a commit and
        // an erasure always agree on it.
        store.suppression_key_or_new()?;
        // From here on the store has a witness, so it can no longer pass for a new one.
        store.close()?;
        Ok(store)
    }

    /// Opens an existing store for reading (profile lookups, stats, export).
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.join("conf").exists() && !path.join("db").exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let store = Store::open_any(path)?;
        store.check_version(false)?;
        store.quick_check()?;
        Ok(store)
    }

    fn open_any(path: &Path) -> Result<Store, StoreError> {
        match Store::open_sled(path) {
            Err(StoreError::Corrupt { .. }) if remove_unfinished_snapshots(path) => Store::open_sled(path),
            other => other,
        }
    }

    fn open_sled(path: &Path) -> Result<Store, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(500))
            .cache_capacity(SLED_CACHE_BYTES);
        // sled panics on some damaged files (an index out of bounds while it reads its
        // segments): caught below and reported as damage, so its panic message is not printed.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        std::panic::set_hook(hook);
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(source)) => return Err(StoreError::from_sled(path, source)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled panicked".into());
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    message,
                });
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|source| StoreError::from_sled(path, source));
        let store = Store {
            path: path.to_path_buf(),
            profiles: tree("profiles")?,
            fold_state: tree("fold_state")?,
            checkpoints: tree("checkpoints")?,
            rejects: tree("rejects")?,
            rejects_by_identity: tree("rejects_by_identity")?,
            counters: tree("counters")?,
            meta: tree("meta")?,
            links: tree("links")?,
            link_claims: tree("link_claims")?,
            suppressions: tree("suppressions")?,
            audience_queue: tree("audience_queue")?,
            settled_profiles: tree("settled_profiles")?,
            settled_links: tree("settled_links")?,
            settled_ids: tree("settled_ids")?,
            person_audiences: tree("person_audiences")?,
            audience_members: tree("audience_members")?,
            outbox: tree("outbox")?,
            outbox_by_person: tree("outbox_by_person")?,
            skew: tree("skew")?,
            rules: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
                crate::audience::Rules::builtin(),
            ))),
            watermark_ignore: Default::default(),
            writer: Default::default(),
            db,
            witnessed: Default::default(),
        };
        store.load_rules()?;
        Ok(store)
    }

    /// Takes the rules recorded in the store's meta (a run's `--rules`), if any.
    fn load_rules(&self) -> Result<(), StoreError> {
        if let Some(text) = self.meta.get(META_RULES).map_err(|e| self.sled(e))? {
            let text = String::from_utf8_lossy(&text).into_owned();
            let rules = crate::audience::Rules::parse(&text, "(recorded in the store)", None).map_err(|e| {
                StoreError::Decode {
                    path: self.path.clone(),
                    tree: "meta",
                    key: String::from_utf8_lossy(META_RULES).into_owned(),
                    reason: e.to_string(),
                }
            })?;
            *self.rules.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(rules);
        }
        if let Some(v) = self.meta.get(META_WATERMARK_IGNORE).map_err(|e| self.sled(e))? {
            let ignore = self.decode("meta", META_WATERMARK_IGNORE, &v)?;
            *self.watermark_ignore.write().unwrap_or_else(|e| e.into_inner()) = ignore;
        }
        Ok(())
    }

    /// Refuses a store of another layout version. A new store (nothing committed, no
    /// witness) has none: `create` writes this build's (a run); a read-only open writes
    /// nothing.
    fn check_version(&self, create: bool) -> Result<(), StoreError> {
        match self.meta.get(META_VERSION).map_err(|e| self.sled(e))? {
            None if self.profiles.is_empty() && self.checkpoints.is_empty() && !Witness::path(&self.path).exists() => {
                if create {
                    self.meta
                        .insert(META_VERSION, STORE_VERSION.to_string().as_bytes())
                        .map_err(|e| self.sled(e))?;
                }
                Ok(())
            }
            None => Err(StoreError::Version {
                path: self.path.clone(),
                found: "none".into(),
            }),
            Some(v) if v.as_ref() == STORE_VERSION.to_string().as_bytes() => Ok(()),
            Some(v) => Err(StoreError::Version {
                path: self.path.clone(),
                found: String::from_utf8_lossy(&v).into_owned(),
            }),
        }
    }

    fn sled(&self, source: sled::Error) -> StoreError {
        StoreError::from_sled(&self.path, source)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        tree: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            tree,
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The partition count the store was written with, if any run wrote it.
    pub fn partitions(&self) -> Result<Option<u32>, StoreError> {
        Ok(self
            .meta
            .get(META_PARTITIONS)
            .map_err(|e| self.sled(e))?
            .and_then(|v| String::from_utf8_lossy(&v).parse().ok()))
    }

    /// Cluster runs: per partition, the `max_bytes` that last got its streams past a stall
    /// (a later stall grows straight to it; see `cluster::consume`).
    pub fn fetch_sizes(&self) -> Result<BTreeMap<u32, i32>, StoreError> {
        match self.meta.get(META_FETCH_SIZES).map_err(|e| self.sled(e))? {
            Some(v) => self.decode("meta", META_FETCH_SIZES, &v),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Records that fetches of `bytes` got `partition`'s streams past a stall.
    pub fn record_fetch_size(&self, partition: u32, bytes: i32) -> Result<(), StoreError> {
        let mut sizes = self.fetch_sizes()?;
        sizes.insert(partition, bytes);
        let value = serde_json::to_vec(&sizes).unwrap_or_default();
        self.meta.insert(META_FETCH_SIZES, value).map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// Takes from `old`, a store this one is rebuilt in place of (`--rebalance`), what the
    /// topic cannot give back: its suppressions (so erased ids stay erased), its recorded
    /// rules unless this store already has some, and its fetch sizes. Returns how many
    /// suppressions were taken.
    pub fn carry_over_from(&self, old: &Store) -> Result<u64, String> {
        let list = old.export_suppressions().map_err(|e| e.to_string())?;
        let taken = self.import_suppressions(&list)?;
        let text = |e: StoreError| e.to_string();
        let has_rules = |s: &Store| s.meta.contains_key(META_RULES).map_err(|e| text(s.sled(e)));
        if has_rules(old)? && !has_rules(self)? {
            self.set_rules(old.rules().as_ref().clone()).map_err(text)?;
        }
        for (partition, bytes) in old.fetch_sizes().map_err(text)? {
            self.record_fetch_size(partition, bytes).map_err(text)?;
        }
        Ok(taken)
    }

    /// The source that feeds the store, as [`Store::claim_source`] recorded it (`None`
    /// before the first run).
    pub fn source(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(META_SOURCE)
            .map_err(|e| self.sled(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records which source feeds the store (`embedded, keyed by …` or `fluvio topic <topic>`), and
    /// refuses another: offsets of a file and of a topic are not the same sequence.
    pub fn claim_source(&self, source: &str) -> Result<(), StoreError> {
        match self.meta.get(META_SOURCE).map_err(|e| self.sled(e))? {
            Some(found) if found.as_ref() != source.as_bytes() => Err(StoreError::Settings {
                path: self.path.clone(),
                what: "source",
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: source.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.meta
                    .insert(META_SOURCE, source.as_bytes())
                    .map_err(|e| self.sled(e))?;
                self.flush()
            }
        }
    }

    /// The funnel steps of the enrich params the store is written with (JSON list), so
    /// `onramp serve` and `onramp stats` use the same funnel as the run; `None` for a store
    /// no run has recorded them in.
    pub fn funnel_steps(&self) -> Result<Option<Vec<String>>, StoreError> {
        match self.meta.get(META_FUNNEL_STEPS).map_err(|e| self.sled(e))? {
            Some(v) => Ok(Some(self.decode("meta", META_FUNNEL_STEPS, &v)?)),
            None => Ok(None),
        }
    }

    /// The chain params the store was written with, as recorded (`defaults`, or
    /// `module.key=value` pairs joined by commas), if any run recorded them.
    pub fn chain_params(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(META_PARAMS)
            .map_err(|e| self.sled(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records the run's funnel steps (a store refuses other chain params, so they never
    /// change once recorded).
    pub fn record_funnel_steps(&self, steps: &[String]) -> Result<(), StoreError> {
        let value = serde_json::to_vec(steps).unwrap_or_default();
        self.meta.insert(META_FUNNEL_STEPS, value).map_err(|e| self.sled(e))?;
        Ok(())
    }

    /// The input an embedded store is consuming, if any run started one.
    pub fn input_segment(&self) -> Result<Option<InputSegment>, StoreError> {
        match self.meta.get(META_INPUT_SEGMENT).map_err(|e| self.sled(e))? {
            Some(v) => Ok(Some(self.decode("meta", META_INPUT_SEGMENT, &v)?)),
            None => Ok(None),
        }
    }

    /// Records the input being consumed (durably, before its first commit).
    pub fn set_input_segment(&self, segment: &InputSegment) -> Result<(), StoreError> {
        let value = serde_json::to_vec(segment).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            tree: "meta",
            key: "input_segment".into(),
            reason: e.to_string(),
        })?;
        self.meta.insert(META_INPUT_SEGMENT, value).map_err(|e| self.sled(e))?;
        self.flush()
    }

    /// The partition's checkpoint, if it has one.
    pub fn checkpoint(&self, partition: u32) -> Result<Option<Checkpoint>, StoreError> {
        let key = partition.to_be_bytes();
        match self.checkpoints.get(key).map_err(|e| self.sled(e))? {
            Some(v) => Ok(Some(self.decode("checkpoints", &key, &v)?)),
            None => Ok(None),
        }
    }

    /// Every partition's checkpoint.
    pub fn checkpoints(&self) -> Result<BTreeMap<u32, Checkpoint>, StoreError> {
        self.per_partition(&self.checkpoints, "checkpoints")
    }

    /// Per partition, its events and heaviest keys (see [`skew`]).
    pub fn skew(&self) -> Result<BTreeMap<u32, skew::PartitionSkew>, StoreError> {
        self.per_partition(&self.skew, "skew")
    }

    /// Every value of a tree keyed by partition (u32 BE), decoded.
    fn per_partition<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
    ) -> Result<BTreeMap<u32, T>, StoreError> {
        let mut out = BTreeMap::new();
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let p = u32::from_be_bytes(k.as_ref().try_into().unwrap_or_default());
            out.insert(p, self.decode(name, &k, &v)?);
        }
        Ok(out)
    }

    /// The restart snapshot for a partition at its checkpoint: its clock and the fold state
    /// of its users live within `state_ttl_ms` of its watermark.
    pub fn snapshot(&self, partition: u32, state_ttl_ms: i64) -> Result<RestartSnapshot, StoreError> {
        let clock = self.checkpoint(partition)?.map(|c| c.clock).unwrap_or_default();
        let mut users: Vec<(String, UserFoldState)> = Vec::new();
        for item in self.fold_state.scan_prefix(partition.to_be_bytes()) {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let user = String::from_utf8_lossy(&k[4..]).into_owned();
            users.push((user, self.decode("fold_state", &k, &v)?));
        }
        Ok(RestartSnapshot::at_checkpoint(
            &clock,
            state_ttl_ms,
            users.iter().map(|(u, s)| (u.as_str(), s)),
        ))
    }

    /// Commits one batch in one transaction (see the module docs).
    pub fn commit(&self, batch: &Batch) -> Result<Committed, StoreError> {
        let writer = self.write_lock();
        let suppression_key = self.suppression_key()?;
        let rules = self.rules();
        let audiences_on = !rules.audiences.is_empty();
        // Read under the writer lock: no other partition's checkpoint moves meanwhile.
        let frontier_inputs = if audiences_on {
            Some(self.frontier_inputs()?)
        } else {
            None
        };
        let (profiles, fold_state, checkpoints, rejects, rejects_by_identity) = (
            &Staged::new(&self.profiles),
            &Staged::new(&self.fold_state),
            &Staged::new(&self.checkpoints),
            &Staged::new(&self.rejects),
            &Staged::new(&self.rejects_by_identity),
        );
        let (counters, links, link_claims, suppressions, audience_queue, skew_tree) = (
            &Staged::new(&self.counters),
            &Staged::new(&self.links),
            &Staged::new(&self.link_claims),
            &Staged::new(&self.suppressions),
            &Staged::new(&self.audience_queue),
            &Staged::new(&self.skew),
        );
        // The audience drain's first chunk runs in this transaction (see below).
        let drain = audience::DrainTrees::new(self, audience_queue, suppressions);
        let mut all = vec![
            profiles,
            fold_state,
            checkpoints,
            rejects,
            rejects_by_identity,
            counters,
            links,
            link_claims,
            suppressions,
            audience_queue,
            skew_tree,
        ];
        if audiences_on {
            all.extend(drain.own());
        }
        let drained_all = std::cell::Cell::new(false);
        let result = staged::run(&writer, &all, || {
            let mut committed = Committed::default();
            // Read under the writer lock, so an erasure is either wholly before this
            // batch (and its ids are dropped here) or wholly after it.
            let mut erased = suppress::Check::new(suppressions, suppression_key.as_deref())?;
            let part = batch.partition.to_be_bytes();
            let mut touched: BTreeMap<&str, Profile> = BTreeMap::new();
            // The aggregate's state per (partition, user): what this partition's stream
            // saw of the user, whatever other partitions saw (a user spread over several).
            let mut folds: BTreeMap<&str, UserFoldState> = BTreeMap::new();
            let mut checkpoint: Checkpoint = match checkpoints.get(part)? {
                Some(v) => serde_json::from_slice(&v).map_err(abort)?,
                None => Checkpoint {
                    offset: -1,
                    max_event_time_ms: None,
                    clock: PartitionClock::default(),
                    input: None,
                },
            };
            if batch.input.is_some() {
                checkpoint.input = batch.input.clone();
            }
            let mut skew: skew::PartitionSkew = match skew_tree.get(part)? {
                Some(v) => serde_json::from_slice(&v).map_err(abort)?,
                None => skew::PartitionSkew::default(),
            };
            let mut quarantined = Vec::new();
            let mut claims = Vec::new();
            // The records the skew sketch counts, by offset: updates and rejects interleave
            // in the partition, and the sketch takes them in that order.
            let mut keyed: Vec<(i64, Option<&str>)> = Vec::with_capacity(batch.updates.len() + batch.rejects.len());
            for original in &batch.updates {
                committed.evicted += u64::from(original.evicted_users);
                if erased.holds(&original.user_id)? {
                    // The aggregate's clock saw it all the same.
                    if original.outcome != Outcome::Skipped || original.skip_kind == Some(SkipKind::EventTimeAhead) {
                        checkpoint.clock.observe(original.event_time_ms);
                    }
                    committed.suppressed += 1;
                    committed.suppressed_users.insert(original.user_id.clone());
                    continue;
                }
                keyed.push((original.offset, Some(original.user_id.as_str())));
                let anonymous_id = original.changes.as_ref().and_then(|c| c.anonymous_id.as_deref());
                let stripped;
                let u = match anonymous_id {
                    Some(a) if erased.holds(a)? => {
                        // Another user's event naming an erased anonymous id: kept, without it.
                        let mut copy = original.clone();
                        if let Some(c) = copy.changes.as_mut() {
                            c.anonymous_id = None;
                        }
                        committed.stripped_anonymous_ids.insert(a.to_string());
                        stripped = copy;
                        &stripped
                    }
                    _ => original,
                };
                match (u.outcome, u.skip_kind) {
                    (Outcome::Applied, _) => {
                        committed.applied += 1;
                        if audiences_on {
                            // Judged once the store's frontier passes it (see `audience`).
                            let k = checkpoint
                                .clock
                                .watermark_ms
                                .map_or(u.event_time_ms, |w| w.max(u.event_time_ms));
                            audience_queue.insert(
                                audience::update_key(k, batch.partition, u.offset),
                                serde_json::to_vec(u).map_err(abort)?,
                            )?;
                        }
                        checkpoint.clock.observe(u.event_time_ms);
                    }
                    (Outcome::Duplicate, _) => {
                        committed.duplicates += 1;
                        checkpoint.clock.observe(u.event_time_ms);
                        continue;
                    }
                    (Outcome::Skipped, Some(SkipKind::EventTimeAhead)) => {
                        // The aggregate's clock saw it; it is a reject, not an update.
                        checkpoint.clock.observe(u.event_time_ms);
                        quarantined.push((u.offset, quarantined_reject(u)));
                        continue;
                    }
                    (Outcome::Skipped, _) => {
                        committed.skipped += 1;
                        continue;
                    }
                }
                if !touched.contains_key(u.user_id.as_str()) {
                    let profile = match profiles.get(u.user_id.as_bytes())? {
                        Some(v) => serde_json::from_slice(&v).map_err(abort)?,
                        None => Profile::new(&u.user_id),
                    };
                    touched.insert(&original.user_id, profile);
                    let fold = match fold_state.get(fold_key(batch.partition, &u.user_id))? {
                        Some(v) => serde_json::from_slice(&v).map_err(abort)?,
                        None => UserFoldState::default(),
                    };
                    folds.insert(&original.user_id, fold);
                }
                if let Some(p) = touched.get_mut(u.user_id.as_str()) {
                    p.apply(u);
                }
                if let Some(a) = u.changes.as_ref().and_then(|c| c.anonymous_id.as_deref()) {
                    claims.push(identity::ClaimSeen {
                        user: &original.user_id,
                        anonymous_id: a.to_string(),
                        at_ms: u.event_time_ms,
                        offset: u.offset,
                    });
                }
                if let Some(f) = folds.get_mut(u.user_id.as_str()) {
                    if u.changes.as_ref().is_some_and(|c| c.state_reset) {
                        *f = UserFoldState::default();
                    }
                    f.observe(&u.event_id, u.event_time_ms);
                }
            }
            checkpoint.max_event_time_ms = checkpoint.clock.watermark_ms;
            committed.link_conflicts = identity::record_claims(links, link_claims, counters, batch.partition, &claims)?;
            for (user, profile) in &touched {
                profiles.insert(user.as_bytes(), serde_json::to_vec(profile).map_err(abort)?)?;
            }
            for (user, fold) in &folds {
                fold_state.insert(
                    fold_key(batch.partition, user),
                    serde_json::to_vec(fold).map_err(abort)?,
                )?;
            }
            committed.quarantined = quarantined.len() as u64;
            for (offset, rejected) in &batch.rejects {
                let identity = rejected.identity.as_deref();
                if !matches!(identity, Some(id) if erased.holds(id)?) {
                    keyed.push((*offset, identity));
                }
            }
            keyed.sort_by_key(|(offset, _)| *offset);
            for (_, key) in keyed {
                skew.observe(key);
            }
            skew_tree.insert(part, serde_json::to_vec(&skew).map_err(abort)?)?;
            let mut rejects_kept = 0u64;
            for (offset, rejected) in batch.rejects.iter().chain(&quarantined) {
                if let Some(id) = rejected.identity.as_deref() {
                    if erased.holds(id)? {
                        committed.suppressed += 1;
                        continue;
                    }
                }
                rejects_kept += 1;
                let key = reject_key(batch.partition, *offset);
                rejects.insert(key.as_slice(), serde_json::to_vec(rejected).map_err(abort)?)?;
                if let Some(id) = rejected.identity.as_deref().filter(|id| !id.is_empty()) {
                    let mut index = identity_prefix(id);
                    index.extend_from_slice(&key);
                    rejects_by_identity.insert(index, &[])?;
                }
                *committed.rejected.entry(rejected.reason.to_string()).or_default() += 1;
            }
            checkpoint.offset = checkpoint.offset.max(batch.last_offset);
            checkpoints.insert(part, serde_json::to_vec(&checkpoint).map_err(abort)?)?;
            if let Some(inputs) = &frontier_inputs {
                // Drained here, most of this batch's queue entries are written and consumed
                // in one transaction, so they never reach the tree; what one chunk leaves
                // is drained after the commit.
                match inputs.frontier(Some((batch.partition, checkpoint.max_event_time_ms))) {
                    Some(frontier) => {
                        let keys = audience_queue.keys_before(&audience::time_key(frontier), audience::DRAIN_CHUNK)?;
                        drained_all.set(keys.len() < audience::DRAIN_CHUNK);
                        committed.transitions = drain.drain_chunk(&keys, frontier, &rules, &mut erased)?;
                    }
                    None => drained_all.set(true), // nothing is below a frontier yet
                }
            }
            add(counters, "events_in", batch.events_in)?;
            add(counters, "accepted", committed.accepted())?;
            add(counters, "applied", committed.applied)?;
            add(counters, "duplicates", committed.duplicates)?;
            add(counters, "skipped", committed.skipped)?;
            add(counters, "rejected", rejects_kept)?;
            add(counters, "suppressed", committed.suppressed)?;
            add(counters, "fold_evictions", committed.evicted)?;
            for (reason, n) in &committed.rejected {
                add(counters, &format!("rejected.{reason}"), *n)?;
            }
            committed.profiles_touched = touched.len() as u64;
            let reference = checkpoint.max_event_time_ms.unwrap_or(i64::MIN);
            committed.hints = touched
                .iter()
                .map(|(u, p)| (u.to_string(), p.hints(reference)))
                .collect();
            Ok(committed)
        });
        drop(writer);
        match result {
            Ok(mut committed) => {
                if !drained_all.get() {
                    committed.transitions.extend(self.drain_audiences()?);
                }
                Ok(committed)
            }
            Err(TransactionError::Abort(reason)) => Err(StoreError::Decode {
                path: self.path.clone(),
                tree: "profiles",
                key: String::new(),
                reason,
            }),
            Err(TransactionError::Storage(e)) => Err(self.sled(e)),
        }
    }

    /// Held by whatever writes the store's trees (a commit, a drain, an erasure) from its
    /// first read to its last write: the work is staged outside sled's transaction lock
    /// (see `staged`), which is only safe with one writer at a time.
    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes everything committed so far durable (fsync), and rewrites the store's
    /// [`Witness`] when the last one is a second old or more.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flush_and_witness(false)
    }

    /// Makes everything committed so far durable and always rewrites the witness: the end of
    /// a run.
    pub fn close(&self) -> Result<(), StoreError> {
        self.flush_and_witness(true)
    }

    /// Flushes, and rewrites the witness when `always` or when the last one is a second old.
    /// Witness writes are serialised by one lock held across the write (one temporary file,
    /// so two writers — an erasure and a commit — never race on it).
    fn flush_and_witness(&self, always: bool) -> Result<(), StoreError> {
        let mut last = self.witnessed.lock().unwrap_or_else(|e| e.into_inner());
        let due = always || last.is_none_or(|t| t.elapsed() >= WITNESS_EVERY);
        if !due {
            drop(last);
            return self.db.flush().map(|_| ()).map_err(|e| self.sled(e));
        }
        // Counted before the flush, so the witness never claims more than the flush made
        // durable, whatever commits while it runs.
        let counted_at = std::time::Instant::now();
        let witness = self.witness_now()?;
        self.db.flush().map_err(|e| self.sled(e))?;
        witness.write(&self.path).map_err(|error| self.io(error))?;
        *last = Some(counted_at);
        Ok(())
    }

    /// Makes everything committed so far durable (fsync) and returns the witness of it,
    /// unwritten: a durable commit reports its batches right after the flush and writes the
    /// witness after that ([`Store::write_witness`]), so what is reported waits for one
    /// fsync, not three (the witness file's and its directory's).
    pub fn flush_durable(&self) -> Result<UnwrittenWitness, StoreError> {
        let counted_at = std::time::Instant::now();
        let witness = self.witness_now()?;
        self.db.flush().map_err(|e| self.sled(e))?;
        Ok(UnwrittenWitness { witness, counted_at })
    }

    /// Writes a witness [`Store::flush_durable`] returned, unless one counted later is
    /// already written (an erasure's, meanwhile): a witness never goes back.
    pub fn write_witness(&self, unwritten: UnwrittenWitness) -> Result<(), StoreError> {
        let mut last = self.witnessed.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t > unwritten.counted_at) {
            return Ok(());
        }
        unwritten.witness.write(&self.path).map_err(|error| self.io(error))?;
        *last = Some(unwritten.counted_at);
        Ok(())
    }

    /// Flushes and rewrites the witness if the last one is a second old or more; otherwise
    /// nothing (a relaxed run's periodic witness: sled flushes on its own every 500 ms).
    pub fn witness_if_due(&self) -> Result<(), StoreError> {
        let due = self
            .witnessed
            .lock()
            .map(|last| last.is_none_or(|t| t.elapsed() >= WITNESS_EVERY))
            .unwrap_or(true);
        if due {
            self.flush_and_witness(true)
        } else {
            Ok(())
        }
    }

    fn witness_now(&self) -> Result<Witness, StoreError> {
        let events_in = self
            .counters
            .get("events_in")
            .map_err(|e| self.sled(e))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let checkpoints = self.checkpoints()?.into_iter().map(|(p, c)| (p, c.offset)).collect();
        Ok(Witness {
            events_in,
            checkpoints,
            written_at: now_rfc3339(),
        })
    }

    fn io(&self, error: std::io::Error) -> StoreError {
        if is_disk_full(&error) {
            StoreError::DiskFull {
                path: self.path.clone(),
                error,
            }
        } else {
            StoreError::Io {
                path: self.path.clone(),
                error,
            }
        }
    }

    /// One profile.
    pub fn profile(&self, user: &str) -> Result<Option<Profile>, StoreError> {
        match self.profiles.get(user.as_bytes()).map_err(|e| self.sled(e))? {
            Some(v) => Ok(Some(self.decode("profiles", user.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Profiles in user-id order, starting after `after` (exclusive) when given.
    pub fn profiles_after(&self, after: Option<&str>) -> impl Iterator<Item = Result<Profile, StoreError>> + '_ {
        let iter = match after {
            Some(a) => {
                let mut start = a.as_bytes().to_vec();
                start.push(0);
                self.profiles.range(start..)
            }
            None => self.profiles.iter(),
        };
        iter.map(move |item| {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            self.decode("profiles", &k, &v)
        })
    }

    /// Number of profiles.
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Counters (events in, accepted, rejected.<reason>, duplicates, …).
    pub fn counters(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.counters.iter() {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let n = u64::from_be_bytes(v.as_ref().try_into().unwrap_or_default());
            out.insert(String::from_utf8_lossy(&k).into_owned(), n);
        }
        Ok(out)
    }

    /// Rejected records of a partition, in offset order.
    pub fn rejects(&self, partition: u32) -> impl Iterator<Item = Result<(i64, RejectedEvent), StoreError>> + '_ {
        self.rejects.scan_prefix(partition.to_be_bytes()).map(move |item| {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let offset = i64::from_be_bytes(k[4..].try_into().unwrap_or_default());
            Ok((offset, self.decode("rejects", &k, &v)?))
        })
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// The reject stored for an update the aggregate quarantined as too far ahead in time. The
/// aggregate does not see the raw record, so the payload describes the event.
fn quarantined_reject(u: &ProfileUpdate) -> RejectedEvent {
    let payload = serde_json::json!({
        "event_id": u.event_id,
        "type": u.event_type,
        "identity": u.user_id,
        "event_time_ms": u.event_time_ms,
    })
    .to_string();
    RejectedEvent {
        reason: RejectReason::TimestampOutOfRange,
        detail: u.skip_reason.clone().unwrap_or_default(),
        payload_bytes: payload.len() as u64,
        payload,
        payload_sha256: String::new(),
        identity: Some(u.user_id.clone()).filter(|id| !id.is_empty()),
        offset: Some(u.offset),
    }
}

/// `fold_state` key: partition (u32 BE) ++ user id.
fn fold_key(partition: u32, user: &str) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(user.as_bytes());
    key
}

/// `rejects` key: partition (u32 BE) ++ offset (i64 BE).
fn reject_key(partition: u32, offset: i64) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// `rejects_by_identity` key prefix: identity length (u32 BE) ++ identity; the reject's
/// own key follows it.
fn identity_prefix(identity: &str) -> Vec<u8> {
    let mut key = (identity.len() as u32).to_be_bytes().to_vec();
    key.extend_from_slice(identity.as_bytes());
    key
}

fn abort(e: serde_json::Error) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

/// The wall clock as RFC 3339 (for messages).
fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn add(tree: &Staged<'_>, name: &str, n: u64) -> Result<(), ConflictableTransactionError<String>> {
    if n == 0 {
        return Ok(());
    }
    let cur = tree
        .get(name.as_bytes())?
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or_default()))
        .unwrap_or(0);
    tree.insert(name.as_bytes(), &(cur + n).to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use onramp_schemas::{Changes, Counters};

    pub(crate) fn applied(user: &str, id: &str, offset: i64, t: i64) -> ProfileUpdate {
        ProfileUpdate::applied(
            user,
            offset,
            id,
            "page_view",
            t,
            Some(Changes {
                counters: Counters {
                    events: 1,
                    ..Counters::default()
                },
                ..Changes::default()
            }),
        )
    }

    pub(crate) fn reject(identity: &str) -> RejectedEvent {
        RejectedEvent {
            reason: RejectReason::Bot,
            detail: String::new(),
            payload: "{}".into(),
            payload_bytes: 2,
            payload_sha256: String::new(),
            identity: Some(identity.into()),
            offset: None,
        }
    }

    pub(crate) fn open(dir: &Path) -> Store {
        Store::open(
            dir,
            &StoreSettings {
                partitions: 2,
                chain_params: "defaults".into(),
            },
        )
        .unwrap()
    }

    pub(crate) fn batches() -> [Batch; 2] {
        [
            Batch {
                partition: 0,
                last_offset: 2,
                events_in: 3,
                updates: vec![applied("u", "e1", 0, 1_000), applied("u", "e2", 1, 2_000)],
                rejects: vec![(2, reject("u"))],
                input: None,
            },
            Batch {
                partition: 1,
                last_offset: 1,
                events_in: 2,
                updates: vec![applied("u", "e3", 0, 1_500), applied("v", "e4", 1, 1_600)],
                rejects: Vec::new(),
                input: None,
            },
        ]
    }

    /// Proves a witness written after its batches were reported never replaces one counted
    /// later: the witness on disk is the latest counted, whatever order the writes ran in.
    #[test]
    fn a_witness_counted_earlier_never_replaces_a_later_one() {
        let [b0, b1] = batches();
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.commit(&b0).unwrap();
        let earlier = store.flush_durable().unwrap();
        store.commit(&b1).unwrap();
        let later = store.flush_durable().unwrap();
        store.write_witness(later).unwrap();
        store.write_witness(earlier).unwrap();
        let on_disk = Witness::read(dir.path()).unwrap().expect("a witness");
        assert_eq!(on_disk.events_in, 5, "the later witness counts both batches");
        assert_eq!(on_disk.checkpoints, BTreeMap::from([(0, 2), (1, 1)]));
    }

    /// Proves a user whose records reach two partitions gets, on each, the fold state of
    /// that partition's own events (what its aggregate holds), and that the store ends the
    /// same whichever partition commits first.
    #[test]
    fn a_user_on_two_partitions_has_fold_state_per_partition() {
        let [b0, b1] = batches();
        let (x, y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (first, second) = (open(x.path()), open(y.path()));
        for b in [&b0, &b1] {
            first.commit(b).unwrap();
        }
        for b in [&b1, &b0] {
            second.commit(b).unwrap();
        }
        assert_eq!(first.profile("u").unwrap(), second.profile("u").unwrap());
        assert_eq!(first.profile("u").unwrap().unwrap().counters.events, 3);
        let ids = |s: &Store, p| s.snapshot(p, i64::MAX).unwrap().users["u"].recent_ids.clone();
        assert_eq!(ids(&first, 0), ["e1", "e2"]);
        assert_eq!(ids(&first, 1), ["e3"]);
        assert_eq!(ids(&second, 0), ids(&first, 0));
        assert_eq!(ids(&second, 1), ids(&first, 1));
    }

    /// Proves an update the aggregate quarantined becomes a `timestamp_out_of_range`
    /// reject, feeds the partition's clock like the aggregate's, and is not a skip.
    #[test]
    fn quarantined_updates_become_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut ahead = applied("u", "far", 3, 4_070_908_800_000);
        ahead.outcome = Outcome::Skipped;
        ahead.skip_kind = Some(SkipKind::EventTimeAhead);
        ahead.skip_reason = Some("ahead".into());
        ahead.changes = None;
        let committed = store
            .commit(&Batch {
                partition: 0,
                last_offset: 3,
                events_in: 4,
                updates: vec![
                    applied("u", "a", 0, 1_000),
                    applied("u", "b", 1, 2_000),
                    applied("u", "c", 2, 3_000),
                    ahead,
                ],
                rejects: Vec::new(),
                input: None,
            })
            .unwrap();
        assert_eq!((committed.quarantined, committed.skipped), (1, 0));
        let rejects: Vec<_> = store.rejects(0).map(Result::unwrap).collect();
        assert_eq!(rejects.len(), 1);
        assert_eq!(
            (rejects[0].0, rejects[0].1.reason),
            (3, RejectReason::TimestampOutOfRange)
        );
        let checkpoint = store.checkpoint(0).unwrap().unwrap();
        assert_eq!(checkpoint.clock.recent_ms.len(), 4);
        assert_eq!(
            checkpoint.max_event_time_ms,
            Some(2_000),
            "the outlier moved no watermark"
        );
        let counters = store.counters().unwrap();
        assert_eq!(counters["rejected.timestamp_out_of_range"], 1);
        assert_eq!(counters["events_in"], counters["accepted"] + counters["rejected"]);
    }
}
