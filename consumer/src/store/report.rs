//! What `onramp check` reports: the kinds of problem, each problem with its tree and key,
//! and the report with its text rendering ([`super::check`] fills it in).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::Checkpoint;

/// What kind of problem a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// sled could not read the tree (corruption, or it panicked): the rest of it was not walked.
    Unreadable,
    /// A key without the tree's key shape.
    BadKey,
    /// A value that does not decode.
    BadValue,
    /// A profile stored under another key than its `user_id`.
    KeyMismatch,
    /// `meta` lacks an entry or holds a wrong one.
    Meta,
    /// A checkpoint for a partition ≥ N, or below -1.
    CheckpointOutOfRange,
    /// A reject of a partition ≥ N or at an offset its partition's checkpoint does not cover.
    RejectOutOfRange,
    /// The counters disagree with each other, the checkpoints or the entries.
    CounterMismatch,
    /// Fold state of a partition ≥ N or of a user without a profile.
    OrphanFoldState,
    /// A `rejects_by_identity` entry whose reject is missing or has another identity.
    DanglingIndex,
    /// A reject with an identity but no `rejects_by_identity` entry (erasure would miss it).
    MissingIndex,
    /// The store holds fewer events or earlier checkpoints than its witness recorded at a
    /// flush: sled dropped committed records (see `store::witness`).
    LostCommits,
}

impl ProblemKind {
    /// The snake_case code, as in the JSON report.
    pub fn code(self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::BadKey => "bad_key",
            ProblemKind::BadValue => "bad_value",
            ProblemKind::KeyMismatch => "key_mismatch",
            ProblemKind::Meta => "meta",
            ProblemKind::CheckpointOutOfRange => "checkpoint_out_of_range",
            ProblemKind::RejectOutOfRange => "reject_out_of_range",
            ProblemKind::CounterMismatch => "counter_mismatch",
            ProblemKind::OrphanFoldState => "orphan_fold_state",
            ProblemKind::DanglingIndex => "dangling_index",
            ProblemKind::MissingIndex => "missing_index",
            ProblemKind::LostCommits => "lost_commits",
        }
    }
}

/// One problem: where and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Kind.
    pub kind: ProblemKind,
    /// Tree.
    pub tree: &'static str,
    /// The key, readable (`p2/u_42` for a partition-prefixed key, hex when it is not text).
    pub key: String,
    /// What is wrong, with the expected and the found value.
    pub what: String,
}

/// What a check looked at and found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Store directory.
    pub store: PathBuf,
    /// `full` (every entry) or `quick` (meta, checkpoints, counters, first and last entries).
    pub depth: &'static str,
    /// True when no problem was found.
    pub healthy: bool,
    /// The layout version recorded in `meta`.
    pub store_version: Option<String>,
    /// The partition count recorded in `meta`.
    pub partitions: Option<u32>,
    /// The chain params recorded in `meta`.
    pub chain_params: Option<String>,
    /// Entries walked per tree (full check: every entry; quick check: the small trees only).
    pub entries: BTreeMap<&'static str, u64>,
    /// Checkpoints, by partition.
    pub checkpoints: BTreeMap<u32, Checkpoint>,
    /// Counters.
    pub counters: BTreeMap<String, u64>,
    /// The invariants checked.
    pub checked: Vec<&'static str>,
    /// Problems found, all kinds together.
    pub problem_count: u64,
    /// Problems found, by kind.
    pub problems_by_kind: BTreeMap<ProblemKind, u64>,
    /// Examples: at most [`super::EXAMPLES_PER_KIND`] per kind, in the order found.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// The report as text: what was checked, then every problem kept.
    pub fn render(&self) -> String {
        let mut out = format!("store {}\n", self.store.display());
        // Nothing was read when sled could not open the store.
        if !self.entries.is_empty() {
            out += &self.render_contents();
        }
        out += &format!("  checked ({} check):\n", self.depth);
        for c in &self.checked {
            out += &format!("    - {c}\n");
        }
        if self.healthy {
            out += "healthy: no problems found\n";
            return out;
        }
        let kinds: Vec<String> = self
            .problems_by_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.code()))
            .collect();
        out += &format!(
            "DAMAGED: {} problem{} ({})\n",
            self.problem_count,
            if self.problem_count == 1 { "" } else { "s" },
            kinds.join(", ")
        );
        for p in &self.problems {
            let at = if p.key.is_empty() {
                p.tree.to_string()
            } else {
                format!("{} {}", p.tree, p.key)
            };
            out += &format!("  [{}] {at}: {}\n", p.kind.code(), p.what);
        }
        for (kind, n) in &self.problems_by_kind {
            let shown = self.problems.iter().filter(|p| p.kind == *kind).count() as u64;
            if *n > shown {
                out += &format!("  … and {} more {} problems\n", n - shown, kind.code());
            }
        }
        out
    }

    /// Meta, entries per tree, checkpoints and counters, one line each.
    fn render_contents(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "  meta: layout version {}, {} partitions, chain params {}\n",
            self.store_version.as_deref().unwrap_or("(missing)"),
            self.partitions.map_or("(missing)".into(), |n| n.to_string()),
            self.chain_params
                .as_deref()
                .map_or("(missing)".into(), |p| format!("`{p}`")),
        );
        let entries: Vec<String> = self.entries.iter().map(|(t, n)| format!("{t} {n}")).collect();
        out += &format!("  entries: {}\n", entries.join(", "));
        if self.checkpoints.is_empty() {
            out += "  checkpoints: none (nothing committed yet)\n";
        } else {
            let cps: Vec<String> = self
                .checkpoints
                .iter()
                .map(|(p, c)| format!("partition {p} at offset {}", c.offset))
                .collect();
            out += &format!("  checkpoints: {}\n", cps.join(", "));
        }
        let counters: Vec<String> = self.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!("  counters: {}\n", counters.join(" "));
        out
    }

    /// The first problems in one line (for error messages).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .problems
            .iter()
            .take(3)
            .map(|p| match p.key.as_str() {
                "" => format!("{}: {}", p.tree, p.what),
                key => format!("{} {key}: {}", p.tree, p.what),
            })
            .collect();
        if self.problem_count > parts.len() as u64 {
            parts.push(format!("{} more", self.problem_count - parts.len() as u64));
        }
        parts.join("; ")
    }
}
